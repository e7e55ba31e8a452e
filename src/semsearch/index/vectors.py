"""The vectors of one immutable segment: fp32 rows in a plain ``.npy`` file and, for large segments, an IVF index.

Why this shape (figures from ``scripts/bench_vectors.py``: clustered 384-d unit vectors, one thread per query, on a
shared 2-core AVX-512 machine; "cpu" is the query thread's CPU time, wall time was up to 2x that under load):

* Exact search streams every fp32 row per query: 0.7 ms at 10k rows, 2 ms at 20k (30 MB no longer stays in
  cache), 17 ms at 100k, 170 ms (cpu; 380 ms wall) at 1M, and the whole 1.5 GB would have to be resident. So
  segments below ``DEFAULT_ANN_MIN_ROWS`` stay flat and larger ones get an ANN index.
* The ANN index is IVF with compressed codes: 4-bit product quantisation scanned with SIMD lookup tables (96 bytes
  a 384-d row: 96 MB at 1M rows), or 8-bit scalar quantisation for an odd dimension (see ``PQ_KIND``). It returns a
  shortlist re-ranked exactly from the fp32 rows, reading only those rows; every returned score is therefore an
  exact inner product, and results from segments of either kind merge by score. HNSW-SQ8 (M=16, efConstruction=40) was
  measured too and rejected: 0.95 needed efSearch 192 at 100k, at 1M it did not pass 0.50 even at efSearch 512,
  its file is 0.5 GB, and under a filter keeping 0.1% of rows it returned 1-2.5 of 10 results.
* ``nprobe`` is chosen at build time by measuring recall@10 against exact search on a sample of the segment's own
  rows, leave-one-out (see ``CALIBRATION_TARGET``); it is recorded with the measured recall in the returned manifest
  entry.
* Everything is memory-mapped read-only, so the page cache holds one copy shared by every server worker, whether a
  worker inherited the opened segment across ``fork`` or opened it itself after a hot reload: the IVF file is read
  with ``IO_FLAG_MMAP_IFC`` (codes and ids stay in the file mapping; only the coarse centroids, nlist x d floats, are
  private: a second worker adds ~2.5 MB at 1M rows, under 1% of the index), the flat rows with
  ``np.load(mmap_mode="r")``. The fp32 rows of an ANN segment are never kept mapped (see ``_read_rows``): a
  long-lived mapping would grow towards the whole 1.5 GB in the resident set as queries touch rows.

Rows are ``0..n-1``; the caller maps rows to passage ids. Deletions are a boolean mask over rows passed at search
time (tombstones change between versions without rewriting the segment); ``allowed`` restricts a search to given
rows exactly, and ``k`` results come back whenever ``k`` rows are both allowed and not deleted.
"""

from __future__ import annotations

import math
import os
import time
import weakref
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..errors import IndexCorruptError

FORMAT = 1
ROWS_FILE = "vectors.npy"
ANN_FILE = "ann.faiss"

#: Segments with at least this many rows get an ANN index. Measured p50 (one thread, warm cache), flat vs IVF-SQ8:
#: 0.32 vs 0.10 ms at 5k rows, 0.66 vs 0.18 at 10k, 1.28 vs 0.14 at 20k, 3.6 vs 0.27 at 50k, 15 vs 0.43 at 100k. Below
#: 10k exact search costs well under a millisecond, needs no build (IVF: 1.6 s at 10k, calibration included) and
#: has recall 1.0; above it flat falls behind linearly.
DEFAULT_ANN_MIN_ROWS = 10_000
#: An ``allowed`` filter with at most ``max(EXACT_ALLOWED_MIN, rows // EXACT_ALLOWED_DIVISOR)`` live rows is answered
#: by scoring those rows exactly (one pread a row, ~2 µs); above it by the IVF search with a selector. A selective
#: filter makes that search probe every list (see ``_ann``), testing each row's bit: ~8 ms at 1M rows whatever the
#: filter, ~1 ms at 100k. Measured crossover: ~5k allowed rows at 1M (11.1 vs 10.3 ms; 1k: 1.7 vs 8.6 ms; 20k: 46 vs
#: 5.2 ms), ~1k at 100k (1.15 vs 1.03 ms), ~500 at 20k.
EXACT_ALLOWED_MIN = 500
EXACT_ALLOWED_DIVISOR = 200
#: The ANN index of a segment: IVF with 4-bit product-quantised codes scanned by SIMD lookup tables ("fast scan",
#: d/4 bytes a row: 96 MB at 1M 384-d rows) for an even dimension, else IVF-SQ8 (d bytes a row). Measured at 1M rows
#: of bench_scale's clustered vectors, one thread, leave-one-out recall@10 after the exact re-rank: SQ8 needed 183 of
#: 2,005 lists for 0.98 and 15 ms per query (it reads 35 MB of codes); PQ fast scan with 2-dimensional sub-vectors
#: reached 0.980 at 128 lists with a 200-row shortlist in 1.3 ms (0.967 at 64 lists, 0.5 ms). Sub-vectors of 4
#: dimensions (half the bytes) stopped at 0.89 whatever the lists and shortlist.
PQ_KIND = "ivf-pq4fs"
SQ_KIND = "ivf-sq8"
_ANN_CLASSES = {PQ_KIND: faiss.IndexIVFPQFastScan, SQ_KIND: faiss.IndexIVFScalarQuantizer}
#: The ANN shortlist is ``max(MIN_SHORTLIST, RERANK_FACTOR * k)`` rows, re-ranked exactly from the fp32 rows (one
#: pread a row, ~2 us). SQ8 scores are close to exact: at 100k rows recall@10 was 0.954 with a shortlist of k, 0.968
#: with 2k, no better with 4k or 8k. 4-bit PQ scores are coarse: 80 rows gave 0.967 where 200 gave 0.980 (1M rows, 128
#: lists).
RERANK_FACTOR = 2
MIN_SHORTLIST = {PQ_KIND: 200, SQ_KIND: 20}
#: A query whose probed lists held fewer than k allowed rows is searched again over every list with a shortlist this
#: many times as long (a filter far from the query).
FALLBACK_WIDEN = 4
#: nprobe is calibrated leave-one-out: sampled rows of the segment are the queries, and the truth is each one's exact
#: top 10 among the *other* rows (the row itself is dropped from the results). That is a recall the manifest can state
#: without assuming a query model. Real queries are harder than rows, though: measured on 19,627 passages of bbc-news
#: and SciFact embedded with all-MiniLM-L6-v2 (``scripts/bench_calibration.py``), at the nprobe where leave-one-out
#: recall@10 is 0.95, real queries got 0.93 (bbc headlines), 0.95 (questions about bbc articles) and 0.88 (SciFact
#: claims); at leave-one-out 0.98 they got 0.977, 0.983 and 0.956. Hence the calibration target: the smallest nprobe
#: whose leave-one-out recall@10 reaches ``CALIBRATION_TARGET``. (Rows plus isotropic noise, tried before, was no
#: better a model of real queries: 0.908 on SciFact at a noise calibrated to 0.96.)
CALIBRATION_TARGET = 0.98
CALIBRATION_QUERIES = 300
RECALL_K = 10
#: Reads of at least this many fp32 rows announce them all to the kernel first (see ``_read_rows``).
PREFETCH_MIN_ROWS = 32
#: Batches smaller than this run on the calling thread only (see ``_one_thread``).
_SMALL_BATCH = 20


def _default_nlist(n: int) -> int:
    """About ``2 * sqrt(n)`` lists, but never fewer than 39 training rows per centroid (faiss's k-means minimum).

    Measured against ``4 * sqrt(n)``: p50 0.43 vs 0.40 ms at 100k rows, 1.5 vs 1.2 ms (cpu) at 1M, while the build
    (k-means and assigning every row, both linear in nlist) takes about half as long: 17 vs 28 s at 100k, 463 vs
    888 s at 1M on the loaded machine (the 2 * sqrt(n) build took 135-250 s at 1M when it was quieter). Merges
    rebuild segments, so build time counts."""
    return max(1, min(round(2 * math.sqrt(n)), n // 39))


def _one_thread(nq: int) -> None:
    """Run a small batch on the calling thread: OpenMP settings are per thread, and a thread team per request thread
    would spin and steal the model's CPU (see ``IndexVersion.search_vectors``); one or a few queries are not worth
    splitting anyway. Large batches (calibration) keep faiss's default team."""
    if nq < _SMALL_BATCH:
        faiss.omp_set_num_threads(1)


def _npy_layout(path: Path) -> tuple[tuple[int, ...], int]:
    """Shape and data offset of a C-ordered little-endian float32 ``.npy`` file (for mmap and pread)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    if fortran or dtype != np.dtype("<f4") or len(shape) != 2:
        raise IndexCorruptError(f"{path}: expected a C-ordered float32 matrix, found {dtype} {shape}")
    return shape, offset


def _topk(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of ``scores`` (1-D, aligned with ``rows``), best first, ties by row; padded with -inf/-1."""
    out_s = np.full(k, -np.inf, dtype=np.float32)
    out_r = np.full(k, -1, dtype=np.int64)
    m = scores.shape[0]
    if m == 0:
        return out_s, out_r
    if m > k:
        part = np.argpartition(-scores, k - 1)[:k]
        scores, rows = scores[part], rows[part]
    order = np.lexsort((rows, -scores))
    take = min(k, order.size)
    out_s[:take] = scores[order[:take]]
    out_r[:take] = rows[order[:take]]
    return out_s, out_r


def _inner_products(query: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Exact inner products of one query with every row of ``block``, on the calling thread (faiss's SIMD kernel;
    a BLAS gemv could start its own thread team)."""
    out = np.empty(block.shape[0], dtype=np.float32)
    if block.shape[0]:
        block = np.ascontiguousarray(block, dtype=np.float32)
        faiss.fvec_inner_products_ny(
            faiss.swig_ptr(out), faiss.swig_ptr(query), faiss.swig_ptr(block), block.shape[1], block.shape[0]
        )
    return out


def _bitmap_selector(mask: np.ndarray) -> tuple[faiss.IDSelector, np.ndarray]:
    """A faiss selector of the rows where ``mask`` is true. O(1) per test, cheap to build (1M rows: ~0.1 ms) unlike
    ``IDSelectorBatch`` (a hash set: ~70 ms for 100k ids). The packed bits are returned so the caller keeps them
    alive for as long as faiss may read them."""
    bits = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(bits), bits


# -- writing -------------------------------------------------------------------------------------------------------


def write_vectors(
    vectors: np.ndarray,
    out_dir: Path,
    *,
    ann_min_rows: int = DEFAULT_ANN_MIN_ROWS,
    target_recall: float = 0.95,
    seed: int = 0,
    nlist: int | None = None,
    calibration_queries: int = CALIBRATION_QUERIES,
    calibration_target: float = CALIBRATION_TARGET,
) -> dict[str, Any]:
    """Write a segment's rows (and an ANN index when it has at least ``ann_min_rows`` rows) into ``out_dir``.

    Returns the JSON-able manifest entry that :class:`SegmentVectors` needs to open the segment: kind, rows, dim,
    parameters, the recall@10 measured against exact search on ``calibration_queries`` perturbed rows of this
    segment, and build seconds. ``nprobe`` is the smallest that reaches ``target_recall`` on that sample; the
    search path measured is the served one (shortlist, exact re-rank). The caller fsyncs and renames the directory.
    """
    started = time.perf_counter()
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"vectors must be a non-empty (n, d) matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinite values")
    n, d = x.shape
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / ROWS_FILE, x, allow_pickle=False)
    info: dict[str, Any] = {"format": FORMAT, "kind": "flat", "rows": n, "dim": d, "rows_file": ROWS_FILE}
    if n < max(ann_min_rows, 1):
        info.update(
            params={},
            recall_at_10=1.0,  # exact search
            recall_target=target_recall,
            recall_met=True,
            recall_sample=0,
            build_seconds=round(time.perf_counter() - started, 3),
        )
        return info

    nlist = nlist or _default_nlist(n)
    rng = np.random.default_rng(seed)
    quantizer = faiss.IndexFlatIP(d)
    kind = PQ_KIND if d % 2 == 0 else SQ_KIND
    if kind == PQ_KIND:
        # 4-bit product quantisation of 2-dimensional sub-vectors, scanned with SIMD lookup tables ("fast scan").
        index = faiss.IndexIVFPQFastScan(quantizer, d, nlist, d // 2, 4, faiss.METRIC_INNER_PRODUCT)
    else:
        # by_residual=False: the codes quantise the rows themselves, so a query's distance table is computed once,
        # not once per probed list; the exact re-rank absorbs the small loss of code precision.
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT, False
        )
    index.cp.seed = seed
    # 10 k-means iterations, not 25: training is most of the build time, and the lists only need to be good enough
    # for the calibrated nprobe to reach the recall target.
    index.cp.niter = 10
    train_rows = min(n, 50 * nlist)
    sample = x[np.sort(rng.choice(n, train_rows, replace=False))] if train_rows < n else x
    index.train(sample)
    index.add(x)
    faiss.write_index(index, str(out_dir / ANN_FILE))
    del index, quantizer, sample
    index_seconds = time.perf_counter() - started  # rows and index written; the rest is calibration

    info.update(
        kind=kind,
        ann_file=ANN_FILE,
        params={"nlist": nlist, "nprobe": nlist, "rerank_factor": RERANK_FACTOR, "min_shortlist": MIN_SHORTLIST[kind]},
    )
    m = min(calibration_queries, n)
    src = np.sort(rng.choice(n, m, replace=False))
    queries = np.ascontiguousarray(x[src])
    k = min(RECALL_K, n - 1)
    _, nearest = faiss.knn(queries, x, k + 1, faiss.METRIC_INNER_PRODUCT)
    truth = _leave_out(nearest, src, k)
    seg = SegmentVectors(out_dir, info)
    try:
        nprobe, recall, curve = _calibrate(seg, queries, src, truth, nlist, calibration_target)
    finally:
        seg.close()
    info["params"]["nprobe"] = nprobe
    info.update(
        recall_at_10=round(recall, 4),
        recall_method="leave-one-out",
        recall_target=target_recall,
        calibration_target=calibration_target,
        recall_met=recall >= target_recall,
        recall_sample=m,
        recall_curve=curve,
        index_seconds=round(index_seconds, 3),
        build_seconds=round(time.perf_counter() - started, 3),
    )
    return info


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) for f, t in zip(found, truth, strict=True))
    return hits / max(1, int((truth >= 0).sum()))


def _leave_out(found: np.ndarray, src: np.ndarray, k: int) -> np.ndarray:
    """Each row of ``found`` without the query's own row ``src[i]``, cut to ``k`` (a row's exact search may rank an
    identical row first, so "itself" is dropped by id, not by position)."""
    out = np.full((len(src), k), -1, dtype=np.int64)
    for i, (row, own) in enumerate(zip(found.tolist(), src.tolist(), strict=True)):
        kept = [r for r in row if r != own and r >= 0][:k]
        out[i, : len(kept)] = kept
    return out


def _calibrate(
    seg: SegmentVectors, queries: np.ndarray, src: np.ndarray, truth: np.ndarray, nlist: int, target: float
) -> tuple[int, float, list[list[float]]]:
    """Smallest nprobe whose leave-one-out recall@10 reaches ``target``: doubling, then bisection (recall grows with
    nprobe)."""
    k = truth.shape[1]
    measured: dict[int, float] = {}

    def recall_at(p: int) -> float:
        if p not in measured:
            found = seg._search(queries, k + 1, None, None, nprobe=p)[1]
            measured[p] = _recall(_leave_out(found, src, k), truth)
        return measured[p]

    lo, hi = 0, 1  # recall_at(lo) < target (0 means "not measured"), recall_at(hi) is the candidate
    while hi < nlist and recall_at(hi) < target:
        lo, hi = hi, min(nlist, hi * 2)
    if recall_at(hi) >= target:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if recall_at(mid) >= target:
                hi = mid
            else:
                lo = mid
    curve = [[p, round(r, 4)] for p, r in sorted(measured.items())]
    return hi, recall_at(hi), curve


# -- reading -------------------------------------------------------------------------------------------------------


class SegmentVectors:
    """A written segment opened for reading; ``info`` is the dict :func:`write_vectors` returned.

    Thread-safe: searches share only read-only state (the faiss index is searched with per-call parameters, never
    by mutating ``nprobe``; row reads use their own mapping). Safe to use in a forked child (everything is a
    read-only file mapping or a file descriptor read with positional reads).
    """

    def __init__(self, out_dir: Path, info: dict[str, Any]) -> None:
        self.path = Path(out_dir)
        if info.get("format") != FORMAT:
            raise IndexCorruptError(f"{self.path}: unknown vectors format {info.get('format')!r}")
        self.kind: str = info["kind"]
        self.rows: int = int(info["rows"])
        self.dim: int = int(info["dim"])
        self.params: dict[str, Any] = dict(info.get("params", {}))
        rows_path = self._rows_path = self.path / info.get("rows_file", ROWS_FILE)
        try:
            shape, self._offset = _npy_layout(rows_path)
        except (OSError, ValueError) as exc:
            raise IndexCorruptError(f"cannot read {rows_path}: {exc}") from exc
        if shape != (self.rows, self.dim):
            raise IndexCorruptError(f"{rows_path} holds {shape}, manifest says ({self.rows}, {self.dim})")
        self._fd: int | None = os.open(rows_path, os.O_RDONLY)
        self._close_fd = weakref.finalize(self, os.close, self._fd)  # also when dropped without close()
        self._flat: np.ndarray | None = None
        self._index: faiss.IndexIVF | None = None
        if self.kind == "flat":
            # Small by construction: kept mapped, shared through the page cache.
            self._flat = np.load(rows_path, mmap_mode="r") if self.rows else np.zeros((0, self.dim), np.float32)
        elif self.kind in _ANN_CLASSES:
            ann_path = self.path / info.get("ann_file", ANN_FILE)
            try:
                index = faiss.read_index(str(ann_path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
            except RuntimeError as exc:
                raise IndexCorruptError(f"cannot read {ann_path}: {exc}") from exc
            if not isinstance(index, _ANN_CLASSES[self.kind]):
                raise IndexCorruptError(f"{ann_path} holds a {type(index).__name__}, not a {self.kind} index")
            if index.ntotal != self.rows or index.d != self.dim:
                raise IndexCorruptError(
                    f"{ann_path} holds {index.ntotal} x {index.d}, manifest says {self.rows} x {self.dim}"
                )
            self._index = index
            self._nlist = int(index.nlist)
            self._nprobe = int(self.params["nprobe"])
            self._rerank = int(self.params.get("rerank_factor", RERANK_FACTOR))
            self._min_shortlist = int(self.params.get("min_shortlist", MIN_SHORTLIST[self.kind]))
        else:
            raise IndexCorruptError(f"{self.path}: unknown vectors kind {self.kind!r}")

    def close(self) -> None:
        """Release the file descriptor and mappings (searches after this fail)."""
        if self._fd is not None:
            self._close_fd()
            self._fd = None
        self._flat = None
        self._index = None

    def warm(self) -> None:
        """Bring every page a search reads into this process's mappings (the flat rows, or the IVF codes), so the
        first query pays no page faults. The fp32 rows of an ANN segment are read per query and not touched."""
        if self._flat is not None and self.rows:
            float(np.asarray(self._flat).sum(dtype=np.float64))
        elif self._index is not None and self.rows:
            self._index.search(
                np.zeros((1, self.dim), dtype=np.float32), 1, params=faiss.SearchParametersIVF(nprobe=self._nlist)
            )

    # -- rows ------------------------------------------------------------------------------------------------------

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The exact fp32 rows, in the order given, reading only those rows."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.rows):
            raise ValueError(f"rows out of range 0..{self.rows - 1}")
        if self._flat is not None:
            return np.asarray(self._flat[rows], dtype=np.float32)
        return self._read_rows(rows)

    def mapped(self) -> np.ndarray:
        """All fp32 rows as a read-only memory map, for reading many rows in order (a merge): the caller drops it
        when done, so its pages leave this process's resident set."""
        if self._flat is not None:
            return self._flat
        return np.load(self._rows_path, mmap_mode="r")

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Read rows of the fp32 file with one ``pread`` each, so they never enter the resident set (the file's pages
        stay in the shared page cache). Measured at 1M rows: ~1.2-2 µs a row (150 rows: 0.3 ms) when cached,
        whatever the state of the page cache; a row that is not cached costs a disk read. Copying out of a transient mapping cost 0.6 µs a row when the file's pages came in by
        readahead but 3-4 µs a row when they were written by this machine's ``write`` (the segment just built), plus
        ~0.1 ms to map and unmap; a persistent mapping would accumulate the touched rows in every worker's RSS."""
        if self._fd is None:
            raise ValueError("segment is closed")
        out = np.empty((rows.size, self.dim), dtype=np.float32)
        if rows.size == 0:
            return out
        buf = memoryview(out).cast("B")
        size = self.dim * 4
        row_list = rows.tolist()
        if len(row_list) >= PREFETCH_MIN_ROWS:
            # Ask for every row first, so the rows not in the page cache are read from disk in parallel rather than
            # one after another. Measured at 1M rows on a VM whose proactive reclaim keeps evicting the fp32 file:
            # 200 shortlisted rows 8.8-9.2 ms without, 3.8-5.6 ms with; 0.44 vs 0.50 ms when all are cached.
            for r in row_list:
                os.posix_fadvise(self._fd, self._offset + r * size, size, os.POSIX_FADV_WILLNEED)
        for i, r in enumerate(row_list):
            if os.preadv(self._fd, [buf[i * size : (i + 1) * size]], self._offset + r * size) != size:
                raise IndexCorruptError(f"{self.path}: short read of row {r}")
        return out

    # -- search ----------------------------------------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        deleted: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows per query by exact inner product, best first: ``(scores, rows)`` of shape ``(nq, k)``,
        padded with ``-inf``/``-1`` where fewer live rows exist.

        ``deleted`` (bool, one per row) rows are never returned. ``allowed`` (row indices, ideally sorted) restricts
        the search exactly: only those rows are returned, and ``k`` of them whenever ``k`` allowed live rows exist.
        """
        return self._search(queries, k, deleted, allowed)

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        deleted: np.ndarray | None,
        allowed: np.ndarray | None,
        *,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._fd is None:
            raise ValueError("segment is closed")
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (nq, {self.dim}), got {q.shape}")
        if k < 1:
            raise ValueError("k must be at least 1")
        nq = q.shape[0]
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        rows = np.full((nq, k), -1, dtype=np.int64)
        if nq == 0:
            return scores, rows
        _one_thread(nq)

        deleted, live_rows = self._check_filters(deleted, allowed)
        if live_rows is not None:
            n_live = live_rows.size
        else:
            n_live = self.rows - (int(np.count_nonzero(deleted)) if deleted is not None else 0)
        if n_live == 0:
            return scores, rows
        if live_rows is not None and n_live <= self._exact_allowed_max():
            # A selective filter: score exactly the few allowed rows, reading only those.
            block = self.vectors(live_rows)
            for i in range(nq):
                scores[i], rows[i] = _topk(_inner_products(q[i], block), live_rows, k)
            return scores, rows
        live: np.ndarray | None = None
        if live_rows is not None:
            live = np.zeros(self.rows, dtype=bool)
            live[live_rows] = True
        elif deleted is not None:
            live = ~deleted
        if self._index is None:
            return self._flat_scan(q, k, live, scores, rows)
        return self._ann(q, k, live, n_live, nprobe or self._nprobe, scores, rows)

    def _exact_allowed_max(self) -> int:
        """Most live allowed rows scored exactly rather than searched. A flat segment: up to half its rows (gathering
        m mapped rows beats streaming all n while m is well below n). An ANN segment: see ``EXACT_ALLOWED_MIN``."""
        if self._index is None:
            return self.rows // 2
        return min(self.rows // 2, max(EXACT_ALLOWED_MIN, self.rows // EXACT_ALLOWED_DIVISOR))

    def _check_filters(
        self, deleted: np.ndarray | None, allowed: np.ndarray | None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Validated ``(deleted mask, live allowed rows)``; the rows are None when there is no ``allowed`` filter."""
        if deleted is not None:
            deleted = np.asarray(deleted, dtype=bool)
            if deleted.shape != (self.rows,):
                raise ValueError(f"deleted must be a boolean mask of {self.rows} rows, got shape {deleted.shape}")
        if allowed is None:
            return deleted, None
        allowed = np.asarray(allowed, dtype=np.int64).reshape(-1)
        if allowed.size > 1 and not (allowed[1:] > allowed[:-1]).all():
            allowed = np.unique(allowed)
        if allowed.size and (allowed[0] < 0 or allowed[-1] >= self.rows):
            raise ValueError(f"allowed rows out of range 0..{self.rows - 1}")
        if deleted is not None:
            allowed = allowed[~deleted[allowed]]
        return deleted, allowed

    def _flat_scan(
        self, q: np.ndarray, k: int, live: np.ndarray | None, scores: np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search of every row (small segments): one streaming pass of the mapped rows per query."""
        assert self._flat is not None
        all_rows = np.arange(self.rows, dtype=np.int64)
        for i in range(q.shape[0]):
            s = _inner_products(q[i], self._flat)
            if live is None:
                scores[i], rows[i] = _topk(s, all_rows, k)
            else:
                scores[i], rows[i] = _topk(s[live], all_rows[live], k)
        return scores, rows

    def _ann(
        self,
        q: np.ndarray,
        k: int,
        live: np.ndarray | None,
        n_live: int,
        nprobe: int,
        scores: np.ndarray,
        rows: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """IVF shortlist (restricted by a selector), exact re-rank; queries that still lack results are
        searched again over every list, which visits every live row's code and so guarantees them."""
        assert self._index is not None
        shortlist = min(n_live, max(self._min_shortlist, self._rerank * k))
        if k > RECALL_K:
            # nprobe was calibrated for the top 10; deeper lists need more probes. Measured on the real passages
            # above with real queries, at the calibrated nprobe (leave-one-out 0.98): recall@100 0.91-0.94 as is,
            # 0.966-0.97 at (k/10)^0.25 = 1.78x for k=100, 0.99 at sqrt(k/10) = 3.2x, which costs 3.2x the time
            # of the search. The deep list only feeds hybrid fusion's candidates.
            nprobe = math.ceil(nprobe * (k / RECALL_K) ** 0.25)
        nprobe = min(self._nlist, nprobe)
        if live is not None:
            # A filter keeping a fraction s of the rows leaves about s of each probed list: probe 1/s times as many
            # lists to see as many candidates as an unfiltered search would (testing a bit costs far less than
            # scoring a code, so the widening is cheap).
            nprobe = min(self._nlist, math.ceil(nprobe * self.rows / n_live))
        selector, bits = _bitmap_selector(live) if live is not None else (None, None)
        params = (
            faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)
            if selector is not None
            else faiss.SearchParametersIVF(nprobe=nprobe)
        )
        _, cand = self._index.search(q, shortlist, params=params)
        want = min(k, n_live)
        short = [i for i in range(q.shape[0]) if int((cand[i] >= 0).sum()) < want]
        if short and nprobe < self._nlist:
            # Every list, and a wider shortlist: the allowed rows are far from the query, where compressed scores
            # separate rows worst.
            params.nprobe = self._nlist
            _, again = self._index.search(q[short], min(n_live, FALLBACK_WIDEN * shortlist), params=params)
            found_s, found_r = scores[short], rows[short]
            self._rerank_exact(q[short], again, k, found_s, found_r)
            scores[short], rows[short] = found_s, found_r
            rest = np.setdiff1d(np.arange(q.shape[0]), short)
            if rest.size:
                found_s, found_r = scores[rest], rows[rest]
                self._rerank_exact(q[rest], cand[rest], k, found_s, found_r)
                scores[rest], rows[rest] = found_s, found_r
            del bits
            return scores, rows
        del bits  # faiss no longer reads the bitmap
        self._rerank_exact(q, cand, k, scores, rows)
        return scores, rows

    def _rerank_exact(self, q: np.ndarray, cand: np.ndarray, k: int, scores: np.ndarray, rows: np.ndarray) -> None:
        """Replace the shortlists' approximate scores by exact ones from fp32 rows (read once for the whole batch)."""
        uniq, inverse = np.unique(cand, return_inverse=True)
        inverse = inverse.reshape(cand.shape)
        valid = uniq >= 0
        block = np.zeros((uniq.size, self.dim), dtype=np.float32)
        block[valid] = self._read_rows(uniq[valid])
        for i in range(q.shape[0]):
            ok = cand[i] >= 0
            idx = inverse[i][ok]
            scores[i], rows[i] = _topk(_inner_products(q[i], block[idx]), cand[i][ok], k)
