"""Benchmark segment vector search (``semsearch.index.vectors``): flat vs IVF-SQ8 (a couple of nlist) vs HNSW-SQ8.

Data: clustered synthetic 384-d unit vectors (two-level Gaussian clusters: topics, then clusters around them, with
varied spread and Zipf-like sizes, so neighbours are neither trivial nor uniform noise). Queries are stored rows
plus noise of norm ``--query-noise`` (1.0 by default: cosine ~0.7 to the source row); recall is also reported for
other noises. (The build-time calibration is leave-one-out: see ``CALIBRATION_TARGET`` in the module.)
For each size: build seconds, recall@10 against exact search at the chosen parameters, single-query p50/p99 latency
on one thread (wall and thread CPU: the machine may be shared), filtered searches (deleted rows, ``allowed`` of
several selectivities: latency, recall, whether k came back; exact scoring vs IVF for selective filters), row reads,
and memory from ``/proc/self/smaps_rollup`` in a fresh process after opening and after 1,000 queries, then in a
forked child (inherited segment) and after the child opens the segment again (a worker after a hot reload).

    python scripts/bench_vectors.py --sizes 100000,1000000 --out bench_vectors.json
    python scripts/bench_vectors.py --segment DIR --out report.json   # a written segment (DIR/info.json), no build
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from semsearch.index import vectors as vec
from semsearch.index.vectors import RERANK_FACTOR, SegmentVectors, write_vectors

DIM = 384
K = 10


# -- data ----------------------------------------------------------------------------------------------------------


def clustered(n: int, *, clusters: int, dim: int = DIM, seed: int = 0, out: Path | None = None) -> np.ndarray:
    """``n`` unit vectors in ``clusters`` Gaussian clusters grouped under ~sqrt(clusters) topics.

    Spread per cluster is drawn so that a row's cosine to its cluster centre is ~0.55-0.8 and two rows of a cluster
    have cosine ~0.3-0.6, like related passages of a sentence-embedding model; cluster sizes follow a Zipf-like law.
    Written in chunks into ``out`` (a memory-mapped .npy) when given, so 1M rows need no second copy.
    """
    rng = np.random.default_rng(seed)
    topics = max(2, round(math.sqrt(clusters)))
    tc = rng.standard_normal((topics, dim)).astype(np.float32)
    tc /= np.linalg.norm(tc, axis=1, keepdims=True)
    centres = tc[rng.integers(0, topics, clusters)] + rng.standard_normal((clusters, dim)).astype(
        np.float32
    ) * np.float32(1.0 / math.sqrt(dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.7
    weights /= weights.sum()
    spread = rng.uniform(0.75, 1.25, clusters).astype(np.float32)
    x = (
        np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n, dim))
        if out
        else np.empty((n, dim), np.float32)
    )
    for lo in range(0, n, 100_000):
        m = min(100_000, n - lo)
        lab = rng.choice(clusters, m, p=weights)
        block = centres[lab] + rng.standard_normal((m, dim), dtype=np.float32) * (
            spread[lab, None] / np.float32(math.sqrt(dim))
        )
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[lo : lo + m] = block
    if out:
        x.flush()
    return x


def perturbed(x: np.ndarray, m: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    src = rng.choice(x.shape[0], m, replace=False)
    q = np.asarray(x[np.sort(src)], dtype=np.float32) + rng.standard_normal(
        (m, x.shape[1]), dtype=np.float32
    ) * np.float32(noise / math.sqrt(x.shape[1]))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q


def exact_topk(q: np.ndarray, x: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Exact top-k rows (over ``rows`` only when given), batched."""
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    if rows is None:
        return faiss.knn(q, np.asarray(x), k, faiss.METRIC_INNER_PRODUCT)[1]
    _, idx = faiss.knn(q, np.ascontiguousarray(x[rows]), k, faiss.METRIC_INNER_PRODUCT)
    return np.where(idx >= 0, rows[np.maximum(idx, 0)], -1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) for f, t in zip(found, truth, strict=True))
    return round(hits / max(1, int((truth >= 0).sum())), 4)


# -- memory and latency ---------------------------------------------------------------------------------------------


def smaps() -> dict[str, int]:
    """MiB figures of this process from /proc/self/smaps_rollup."""
    keep = ("Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty", "Anonymous")
    out = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            key = parts[0].rstrip(":")
            if key in keep:
                out[key] = round(int(parts[1]) / 1024, 1)
    out["USS"] = round(out["Private_Clean"] + out["Private_Dirty"], 1)
    return out


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 1) for k in after}


def timed_queries(search, queries: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Single-query latency on one thread: wall and thread-CPU p50/p99 in ms, and the rows found."""
    faiss.omp_set_num_threads(1)
    wall, cpu, found = [], [], []
    for i in range(queries.shape[0]):
        t0, c0 = time.perf_counter(), time.thread_time()
        _, rows = search(queries[i : i + 1])
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        found.append(rows[0])
    w, c = np.array(wall) * 1e3, np.array(cpu) * 1e3
    stats = {
        "p50_ms": round(float(np.percentile(w, 50)), 3),
        "p99_ms": round(float(np.percentile(w, 99)), 3),
        "cpu_p50_ms": round(float(np.percentile(c, 50)), 3),
        "cpu_p99_ms": round(float(np.percentile(c, 99)), 3),
    }
    return stats, np.array(found)


def measure_process(seg_dir: Path, queries_path: Path) -> dict[str, Any]:
    """Run in a fresh interpreter (``--measure``): memory after open, after the queries, then in a forked child."""
    info = json.loads((seg_dir / "info.json").read_text())
    queries = np.load(queries_path)
    report: dict[str, Any] = {"baseline": smaps()}
    seg = SegmentVectors(seg_dir, info)
    report["after_open"] = delta(smaps(), report["baseline"])
    lat, found = timed_queries(lambda q: seg.search(q, K), queries)
    report["latency"] = lat
    report["after_queries"] = delta(smaps(), report["baseline"])
    report["after_queries_abs"] = smaps()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a worker forked from a preloaded master, then after a hot reload
        os.close(read)
        child: dict[str, Any] = {}
        try:
            start = smaps()
            _, found_child = timed_queries(lambda q: seg.search(q, K), queries)
            child["same_results"] = bool(np.array_equal(found_child, found))
            child["inherited_after_queries"] = smaps()
            mid = smaps()
            again = SegmentVectors(seg_dir, info)
            lat2, found2 = timed_queries(lambda q: again.search(q, K), queries)
            child["reopened_same_results"] = bool(np.array_equal(found2, found))
            child["reopened_latency"] = lat2
            child["reopened_added"] = delta(smaps(), mid)
            child["inherited_added"] = delta(mid, start)
            child["abs_end"] = smaps()
        except Exception as exc:  # reported, not raised: the child must exit
            child["error"] = repr(exc)
        os.write(write, json.dumps(child).encode())
        os.close(write)
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    report["child"] = json.loads(b"".join(chunks))
    report["parent_while_child"] = smaps()
    return report


def run_measure(seg_dir: Path, queries_path: Path) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, __file__, "--measure", str(seg_dir), str(queries_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode:
        return {"error": out.stderr[-2000:]}
    return json.loads(out.stdout)


def dir_mb(path: Path) -> dict[str, float]:
    return {p.name: round(p.stat().st_size / 2**20, 1) for p in sorted(path.iterdir()) if p.is_file()}


# -- configurations -------------------------------------------------------------------------------------------------


def bench_segment(
    x: np.ndarray, q: np.ndarray, truth: np.ndarray, seg_dir: Path, info: dict[str, Any], work: Path
) -> dict[str, Any]:
    (seg_dir / "info.json").write_text(json.dumps(info))
    for f in seg_dir.iterdir():  # as the caller does on publish; freshly written pages would count as dirty
        fd = os.open(f, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    qpath = work / "queries.npy"
    np.save(qpath, q)
    res: dict[str, Any] = {"info": info, "files_mb": dir_mb(seg_dir)}
    mem = run_measure(seg_dir, qpath)
    res["process"] = mem
    seg = SegmentVectors(seg_dir, info)
    _, found = timed_queries(lambda qq: seg.search(qq, K), q[:300])
    res["recall_at_10"] = recall(found, truth[:300])
    # Hybrid fusion asks for more candidates: k=100 with the same parameters.
    truth100 = exact_topk(q[:200], x, 100)
    lat100, found100 = timed_queries(lambda qq: seg.search(qq, 100), q[:200])
    res["k100"] = {**lat100, "recall_at_100": recall(found100, truth100)}
    res["filters"] = bench_filters(seg, x, q[:100])
    res["exact_cutoff"] = bench_exact_cutoff(seg, x, q[:100])
    picks = np.random.default_rng(5).integers(0, seg.rows, (100, 150))
    t0 = time.perf_counter()
    for rows in picks:  # hybrid fusion / near-duplicate removal read ~100-200 rows a query
        seg.vectors(rows)
    res["vectors_150_rows_ms"] = round((time.perf_counter() - t0) * 10, 3)
    seg.close()
    return res


def bench_filters(seg: SegmentVectors, x: np.ndarray, q: np.ndarray) -> list[dict[str, Any]]:
    n = seg.rows
    rng = np.random.default_rng(7)
    deleted = rng.random(n) < 0.01
    out = []
    cases: list[tuple[str, np.ndarray | None, np.ndarray | None]] = [("deleted 1%", deleted, None)]
    for frac in (0.0001, 0.001, 0.005, 0.02, 0.1, 0.5):
        m = max(1, int(n * frac))
        cases.append((f"allowed {frac:g} ({m} rows) + deleted 1%", deleted, np.sort(rng.choice(n, m, replace=False))))
    for name, dele, allowed in cases:
        live = np.flatnonzero(~dele) if allowed is None else allowed[~dele[allowed]]
        truth = exact_topk(q, x, K, live)
        lat, found = timed_queries(lambda qq, d=dele, a=allowed: seg.search(qq, K, deleted=d, allowed=a), q)
        want = min(K, live.size)
        out.append(
            {
                "case": name,
                **lat,
                "recall_at_10": recall(found, truth),
                "always_k": bool(((found >= 0).sum(axis=1) >= want).all()),
                "only_live": bool(np.isin(found[found >= 0], live).all()),
            }
        )
    return out


def bench_exact_cutoff(seg: SegmentVectors, x: np.ndarray, q: np.ndarray) -> list[dict[str, Any]]:
    """Selective ``allowed`` filters answered both ways (exact scoring of the allowed rows vs the IVF search with a
    selector), to place ``EXACT_ALLOWED_MIN`` / ``EXACT_ALLOWED_DIVISOR``."""
    if seg.kind == "flat":
        return []
    rng = np.random.default_rng(11)
    out = []
    saved = vec.EXACT_ALLOWED_MIN, vec.EXACT_ALLOWED_DIVISOR
    try:
        for m in (250, 500, 1000, 2000, 5000, 20000):
            allowed = np.sort(rng.choice(seg.rows, m, replace=False))
            row: dict[str, Any] = {"allowed_rows": m}
            for way, cutoff in (("exact", seg.rows), ("ivf", 0)):
                vec.EXACT_ALLOWED_MIN, vec.EXACT_ALLOWED_DIVISOR = cutoff, 1 if cutoff else 10**9
                lat, found = timed_queries(lambda qq, a=allowed: seg.search(qq, K, allowed=a), q)
                row[way] = {**lat, "recall_at_10": recall(found, exact_topk(q, x, K, allowed))}
            out.append(row)
    finally:
        vec.EXACT_ALLOWED_MIN, vec.EXACT_ALLOWED_DIVISOR = saved
    return out


def bench_hnsw(x: np.ndarray, q: np.ndarray, truth: np.ndarray, work: Path, m: int = 16) -> dict[str, Any]:
    """HNSW-SQ8 (bench-only): shortlist of RERANK_FACTOR*k by efSearch, exact re-rank from the fp32 rows."""
    n = x.shape[0]
    t0 = time.perf_counter()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index = faiss.IndexHNSWSQ(DIM, faiss.ScalarQuantizer.QT_8bit, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    index.train(np.asarray(x[np.random.default_rng(0).choice(n, min(n, 100_000), replace=False)]))
    for lo in range(0, n, 100_000):
        index.add(np.ascontiguousarray(x[lo : lo + 100_000]))
    build = time.perf_counter() - t0
    path = work / "hnsw.faiss"
    faiss.write_index(index, str(path))
    del index
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    shortlist = max(40, RERANK_FACTOR * K)

    def search(qq: np.ndarray, ef: int) -> tuple[np.ndarray, np.ndarray]:
        _, cand = index.search(qq, shortlist, params=faiss.SearchParametersHNSW(efSearch=ef))
        c = cand[0][cand[0] >= 0]
        s = np.asarray(x[np.sort(c)]) @ qq[0]
        order = np.argsort(-s)[:K]
        return s[order][None], np.sort(c)[order][None]

    curve = []
    chosen = None
    for ef in (16, 32, 48, 64, 96, 128, 192, 256, 384, 512):
        lat, found = timed_queries(lambda qq, e=ef: search(qq, e), q[:300])
        r = recall(found, truth[:300])
        curve.append({"efSearch": ef, "recall_at_10": r, **lat})
        if r >= 0.95:
            chosen = ef
            break
    res = {
        "M": m,
        "efConstruction": 40,
        "build_seconds": round(build, 1),
        "file_mb": round(path.stat().st_size / 2**20, 1),
    }
    res["curve"] = curve
    res["chosen_efSearch"] = chosen
    sel = faiss.IDSelectorBitmap(np.packbits(np.random.default_rng(1).random(n) < 0.001, bitorder="little"))
    got = index.search(q[:100], K, params=faiss.SearchParametersHNSW(efSearch=chosen or 512, sel=sel))[1]
    res["selective_filter_0.001_mean_results"] = float((got >= 0).sum(axis=1).mean())
    path.unlink()
    return res


def query_models(x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """300 queries and their exact top 10 for each query model: unperturbed rows, rows plus noise of norm 0.5 and
    1.0 (cosine ~0.9 and ~0.7 to the source row), to see how the recorded recall depends on the model."""
    out = {}
    for i, noise in enumerate((0.0, 0.5, 1.0)):
        mq = perturbed(x, 300, noise, seed=97 - i)
        out[f"noise {noise}"] = (mq, exact_topk(mq, x, K))
    return out


def bench_size(n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    clusters = args.clusters or max(200, min(4000, round(2 * math.sqrt(n))))
    t0 = time.perf_counter()
    x = clustered(n, clusters=clusters, out=work / f"data_{n}.npy")
    report: dict[str, Any] = {"rows": n, "clusters": clusters, "generate_seconds": round(time.perf_counter() - t0, 1)}
    q = perturbed(x, args.queries, args.query_noise, seed=99)
    t0 = time.perf_counter()
    truth = exact_topk(q, x, K)
    report["exact_truth_seconds"] = round(time.perf_counter() - t0, 1)
    models = query_models(x)
    configs: dict[str, Any] = {}
    if "flat" in args.kinds:
        d = work / f"flat_{n}"
        info = write_vectors(x, d, ann_min_rows=n + 1)
        configs["flat"] = bench_segment(x, q[: args.flat_queries], truth[: args.flat_queries], d, info, work)
        shutil.rmtree(d)
    for mult in args.nlist_mult:
        d = work / f"ivf_{n}_{mult}"
        nlist = min(round(mult * math.sqrt(n)), n // 39)
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        info = write_vectors(x, d, ann_min_rows=1, nlist=nlist)
        res = bench_segment(x, q, truth, d, info, work)
        seg = SegmentVectors(d, info)
        res["recall_query_model"] = {name: recall(seg.search(mq, K)[1], mt) for name, (mq, mt) in models.items()}
        seg.close()
        configs[f"ivf-sq8 nlist={nlist} ({mult}*sqrt(n))"] = res
        shutil.rmtree(d)
    if "hnsw" in args.kinds and n <= args.hnsw_max:
        configs["hnsw-sq8"] = bench_hnsw(x, q, truth, work)
    report["configs"] = configs
    return report


def bench_threshold(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Flat vs IVF-SQ8 single-query latency on small segments, to place the flat/ANN threshold."""
    out = []
    for n in args.threshold_sizes:
        x = clustered(n, clusters=max(50, round(2 * math.sqrt(n))), seed=3)
        q = perturbed(x, 300, args.query_noise, seed=5)
        row: dict[str, Any] = {"rows": n}
        for kind in ("flat", "ivf-sq8"):
            d = work / f"th_{kind}_{n}"
            info = write_vectors(x, d, ann_min_rows=(n + 1) if kind == "flat" else 1)
            seg = SegmentVectors(d, info)
            lat, _ = timed_queries(lambda qq, s=seg: s.search(qq, K), q)
            row[kind] = {
                **lat,
                "build_seconds": info["build_seconds"],
                "params": info["params"],
                "recall_at_10": info["recall_at_10"],
            }
            seg.close()
            shutil.rmtree(d)
        out.append(row)
    return out


def bench_existing(seg_dir: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Measure a segment already written (its own rows are the data): no build, same figures as ``bench_size``."""
    info = json.loads((seg_dir / "info.json").read_text())
    x = np.load(seg_dir / info["rows_file"], mmap_mode="r")
    q = perturbed(x, args.queries, args.query_noise, seed=99)
    truth = exact_topk(q, x, K)
    res = bench_segment(x, q, truth, seg_dir, info, work)
    seg = SegmentVectors(seg_dir, info)
    res["recall_query_model"] = {name: recall(seg.search(mq, K)[1], mt) for name, (mq, mt) in query_models(x).items()}
    seg.close()
    return {"rows": int(x.shape[0]), "segment": str(seg_dir), "configs": {info["kind"]: res}}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        print(json.dumps(measure_process(Path(sys.argv[2]), Path(sys.argv[3]))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--kinds", default="flat,ivf,hnsw")
    ap.add_argument("--nlist-mult", default="2,4", help="nlist = mult * sqrt(n), comma-separated")
    ap.add_argument("--clusters", type=int, default=0, help="0: 2*sqrt(n), within 200..4000")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--query-noise", type=float, default=1.0, help="norm of the noise added to query rows")
    ap.add_argument("--flat-queries", type=int, default=200, help="flat is slow at 1M")
    ap.add_argument("--hnsw-max", type=int, default=100_000, help="largest size to build HNSW at (slow build)")
    ap.add_argument("--threshold-sizes", default="5000,10000,20000,50000", help="empty to skip")
    ap.add_argument("--segment", default="", help="measure this written segment (with info.json) instead of building")
    ap.add_argument("--workdir", default="")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    args.kinds = args.kinds.split(",")
    args.nlist_mult = [float(m) for m in args.nlist_mult.split(",") if m]
    args.threshold_sizes = [int(s) for s in args.threshold_sizes.split(",") if s]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_vectors_"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "faiss": faiss.__version__},
        "dim": DIM,
        "k": K,
    }

    def save() -> None:
        text = json.dumps(report, indent=1)
        if args.out:
            Path(args.out).write_text(text)
        else:
            print(text)

    if args.segment:
        report["existing"] = bench_existing(Path(args.segment), args, work)
        save()
        return
    if args.threshold_sizes:
        report["threshold"] = bench_threshold(args, work)
        save()
    for n in (int(s) for s in args.sizes.split(",") if s):
        report[f"n={n}"] = bench_size(n, args, work)
        (work / f"data_{n}.npy").unlink(missing_ok=True)
        save()
    report["machine"]["loadavg_end"] = os.getloadavg()
    save()
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
