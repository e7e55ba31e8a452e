"""BM25 over the segments of one version, with the statistics of all its live passages.

A segment's postings (:mod:`semsearch.index.postings`) hold only term frequencies and document lengths; here the
statistics of the whole version (live documents, their average length, live document frequencies) are applied at
query time. The result equals, to the bit, the score bm25s (method "lucene", k1 1.5, b 0.75) gives to one index
over exactly the live passages:

    idf(t)   = float32(ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5)))        N, df: live documents (all segments)
    tfc(t,d) = tf / (k1 * ((1 - b) + b * len(d) / avgdl) + tf)            float64, avgdl over live documents
    score(d) = sum over query terms, in query order and with repeats, of float32(idf * tfc), summed in float32

``len(d)`` counts the document's analysed terms with repeats (stopwords removed), as bm25s does. bm25s keeps a
repeated query term twice, so it counts twice here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .postings import SegmentPostings


def _idf(df: int, n: int) -> float:
    """BM25 IDF as bm25s's "lucene" method computes it (in float64; scoring rounds it to float32 as bm25s stores
    it)."""
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


class _Term(NamedTuple):
    df: int
    """Live documents holding the term, across the segments."""
    tids: tuple[int | None, ...]
    """The term's id in each segment (None where absent)."""
    postings: int
    """Its postings across the segments, deleted rows included (the cost of reading them whole)."""


class GlobalBM25:
    """BM25 over the segments of one version, with the statistics of all its live passages (see the module
    docstring for the formula). Built at every reload of a version: construction reads only the rows' lengths
    and the deletion masks; per query, the work is proportional to the postings read.

    The segments' rows form one row space (segment 0's rows, then segment 1's...), so a query accumulates into
    one array and selects its best rows once, whatever the number of segments.

    ``segments``: (segment, ``deleted``) pairs, ``deleted`` a boolean mask over the segment's rows (None: none
    deleted). Safe to share between threads (the only mutable state is a cache of term statistics)."""

    search_ratio = 8
    """Scoring given rows (candidates, or an allowed set), a term's postings are binary-searched for them when the
    rows number fewer than the postings over this ratio, and read whole otherwise."""
    prune_min_postings = 20_000
    """:meth:`top` reads every posting of the query when they are fewer than this (pruning would not pay)."""
    cache_size = 50_000
    """Terms whose statistics (live df, ids per segment) are kept for this version: counting a term's deleted
    postings reads them all, which a frequent term (the expensive kind) need not repeat at every query."""

    contribution_cache_bytes = 64 << 20
    """Per version (so per worker), the float32 contributions of frequent terms are kept, with their rows, up to
    this many bytes: they depend only on the version's statistics, and recomputing them (a float64 division per
    posting) was most of the time of a query with frequent terms. First come, first kept (frequent terms come
    first); 0 disables it."""
    contribution_cache_min_postings = 50_000
    """Only terms with at least this many postings are kept (shorter ones are cheap to recompute)."""

    def __init__(
        self, segments: Sequence[tuple[SegmentPostings, np.ndarray | None]], k1: float = 1.5, b: float = 0.75
    ) -> None:
        self.k1 = k1
        self.b = b
        self.segments = [segment for segment, _ in segments]
        self.deleted: list[np.ndarray | None] = []
        n_live = 0
        total = 0
        for segment, deleted in segments:
            mask = None if deleted is None else np.asarray(deleted, dtype=bool)
            if mask is not None and mask.shape != (segment.n_docs,):
                raise ValueError(f"deleted mask of {mask.shape} for a segment of {segment.n_docs} rows")
            if mask is not None and not mask.any():
                mask = None
            self.deleted.append(mask)
            n_live += segment.n_docs - (0 if mask is None else int(np.count_nonzero(mask)))
            total += segment.total_len - (0 if mask is None else int(segment.doc_len[mask].sum(dtype=np.int64)))
        self.n_docs = n_live
        """Live passages across the segments (BM25's N)."""
        self.avgdl = total / n_live if n_live else 0.0
        """Mean length of the live passages (exactly numpy's mean of the integer lengths, as bm25s takes it)."""
        # Where each segment's rows start in the version's row space (the last entry: all rows).
        self.offsets = np.zeros(len(self.segments) + 1, dtype=np.int64)
        np.cumsum([s.n_docs for s in self.segments], out=self.offsets[1:])
        # Per row: k1 * ((1 - b) + b * len / avgdl), the length normalisation under this version's avgdl, in the
        # float64 operations bm25s performs; infinite for a deleted row, which makes its contribution exactly 0.
        self._norm = np.empty(int(self.offsets[-1]), dtype=np.float64)
        for s, (segment, mask) in enumerate(zip(self.segments, self.deleted, strict=True)):
            norm = self._norm[self.offsets[s] : self.offsets[s + 1]]
            np.multiply(segment.doc_len, b, out=norm)
            norm /= self.avgdl or 1.0
            norm += 1 - b
            norm *= k1
            if mask is not None:
                norm[mask] = np.inf
        self._cache: dict[str, tuple[int, int, np.ndarray]] = {}
        self._contribution_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._contribution_bytes = 0

    # ----------------------------------------------------------------------------------- term statistics

    def _terms(self, terms: Sequence[str]) -> dict[str, _Term]:
        """The distinct terms with live documents, with their statistics (from the cache when possible)."""
        distinct = list(dict.fromkeys(terms))
        found: dict[str, _Term] = {}
        missing = []
        for term in distinct:
            cached = self._cache.get(term)
            if cached is None:
                missing.append(term)
            else:
                df, postings, tids = cached
                found[term] = _Term(df, tuple(None if t < 0 else t for t in tids.tolist()), postings)
        if missing:
            ids = [segment.lookup_many(missing) for segment in self.segments]
            if len(self._cache) + len(missing) > self.cache_size:
                self._cache = {}  # replaced, not cleared: a concurrent reader keeps the old dict
            for i, term in enumerate(missing):
                tids = tuple(seg_ids[i] for seg_ids in ids)
                df = postings = 0
                for segment, mask, tid in zip(self.segments, self.deleted, tids, strict=True):
                    if tid is not None:
                        rows, _ = segment.postings(tid)
                        postings += len(rows)
                        df += len(rows) - (0 if mask is None else int(np.count_nonzero(mask[rows])))
                found[term] = _Term(df, tids, postings)
                # Kept as a plain tuple of ints and an array, which the garbage collector stops tracking: a
                # server worker freezes its heap after warming up, and tens of thousands of tracked entries
                # would be scanned by every full collection.
                self._cache[term] = (df, postings, np.array([-1 if t is None else t for t in tids], dtype=np.int64))
        return {term: found[term] for term in distinct if found[term].df}

    def idf(self, terms: Sequence[str]) -> dict[str, float]:
        """IDF of each term with live documents (the others are left out), by the formula scores use (unrounded):
        for highlights and query coverage."""
        return {term: _idf(t.df, self.n_docs) for term, t in self._terms(terms).items()}

    def unseen_idf(self) -> float:
        """The IDF a term no live passage holds would have (df 0): the most a query term can weigh."""
        return _idf(0, self.n_docs) if self.n_docs else 0.0

    def _idf32(self, found: dict[str, _Term]) -> dict[str, np.float64]:
        # bm25s stores the IDF in a float32 array; the float64 product uses that rounded value.
        return {term: np.float64(np.float32(_idf(t.df, self.n_docs))) for term, t in found.items()}

    # ----------------------------------------------------------------------------------- accumulation

    def _gather(self, term: _Term) -> tuple[np.ndarray, np.ndarray]:
        """(rows, tf) of all postings of a term, rows in the version's row space (ascending: the segments' rows
        follow each other). One array for all segments, so the arithmetic runs once per term, not per segment;
        int64 rows, which numpy indexes with (int32 would be converted at every use)."""
        rows: list[np.ndarray] = []
        tfs: list[np.ndarray] = []
        offsets: list[int] = []
        for s, tid in enumerate(term.tids):
            if tid is not None:
                segment = self.segments[s]
                a, b = int(segment.indptr[tid]), int(segment.indptr[tid + 1])
                rows.append(segment.rows[a:b])
                tfs.append(segment.tf[a:b])
                offsets.append(int(self.offsets[s]))
        all_rows = np.concatenate(rows, dtype=np.int64)
        if len(rows) > 1:
            all_rows += np.repeat(offsets, [len(r) for r in rows])
        elif offsets[0]:
            all_rows += offsets[0]
        return all_rows, np.concatenate(tfs) if len(tfs) > 1 else tfs[0]

    def _contributions(self, rows: np.ndarray, tf: np.ndarray, idf32: np.float64) -> np.ndarray:
        """The float32 contributions of postings (rows in the version's row space): float32(idf * tf / (norm +
        tf)) computed in float64 as bm25s does (0 for deleted rows, whose norm is infinite)."""
        tf64 = tf.astype(np.float64)
        denom = self._norm[rows]
        np.add(denom, tf64, out=denom)
        np.divide(tf64, denom, out=tf64)
        tf64 *= idf32
        return tf64.astype(np.float32)

    def _term_contributions(
        self, term: str, found: dict[str, _Term], idf32: dict[str, np.float64]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, float32 contributions) of all postings of ``term``, from the version's cache when kept there."""
        cached = self._contribution_cache.get(term)
        if cached is not None:
            return cached
        rows, tf = self._gather(found[term])
        contrib = self._contributions(rows, tf, idf32[term])
        size = rows.nbytes + contrib.nbytes
        if (
            len(rows) >= self.contribution_cache_min_postings
            and self._contribution_bytes + size <= self.contribution_cache_bytes
        ):
            rows.flags.writeable = contrib.flags.writeable = False
            self._contribution_cache[term] = (rows, contrib)
            self._contribution_bytes += size  # racing threads may both add a term: a bound, not an exact count
        return rows, contrib

    def _accumulate_all(
        self, occurrences: list[str], found: dict[str, _Term], idf32: dict[str, np.float64]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of every row with a positive score (rows in the version's row space), reading every
        posting. Contributions are added term by term in query order in float32 (bm25s's additions, so the sums
        are the same to the bit). A row joins the candidates when it first gets a contribution, so no sort or
        unique over the postings is needed; deleted rows stay at 0 and are dropped."""
        acc = np.zeros(int(self.offsets[-1]), dtype=np.float32)
        new: list[np.ndarray] = []
        for term in occurrences:
            rows, contrib = self._term_contributions(term, found, idf32)
            before = acc[rows]
            new.append(rows[before == 0])
            acc[rows] = before + contrib
        cand = np.concatenate(new) if new else np.zeros(0, dtype=np.int64)
        scores = acc[cand]
        positive = scores > 0
        return cand[positive], scores[positive]

    def _accumulate_rows(
        self, occurrences: list[str], found: dict[str, _Term], idf32: dict[str, np.float64], rows: np.ndarray
    ) -> np.ndarray:
        """The exact scores of the given rows (sorted, unique, in the version's row space), in the same order of
        float32 additions. Per term and segment, the postings are binary-searched for the rows when those are
        few (``search_ratio``), and read whole otherwise."""
        acc = np.zeros(int(self.offsets[-1]), dtype=np.float32)
        bounds = np.searchsorted(rows, self.offsets).tolist()
        local: dict[int, np.ndarray] = {}  # per segment, its rows as segment rows (int32, as the postings)
        for term in occurrences:
            if term in self._contribution_cache or len(rows) * self.search_ratio >= found[term].postings:
                p_rows, contrib = self._term_contributions(term, found, idf32)
                acc[p_rows] += contrib
                continue
            for s, tid in enumerate(found[term].tids):
                a, b = bounds[s], bounds[s + 1]
                if tid is None or a == b:
                    continue
                segment = self.segments[s]
                start, end = int(segment.indptr[tid]), int(segment.indptr[tid + 1])
                if (b - a) * self.search_ratio < end - start:
                    if s not in local:
                        local[s] = (rows[a:b] - self.offsets[s]).astype(np.int32)
                    wanted = local[s]
                    p_rows = segment.rows[start:end]
                    pos = np.searchsorted(p_rows, wanted)
                    np.minimum(pos, end - start - 1, out=pos)
                    hit = p_rows[pos] == wanted
                    hit_rows = wanted[hit]
                    tf64 = segment.tf[start:end][pos[hit]].astype(np.float64)
                    hit_rows = hit_rows.astype(np.int64) + self.offsets[s]
                    acc[hit_rows] += self._contributions(hit_rows, tf64, idf32[term])
                else:
                    p_rows, p_tf = segment.postings(tid)
                    p_rows = p_rows.astype(np.int64) + self.offsets[s]
                    acc[p_rows] += self._contributions(p_rows, p_tf, idf32[term])
        return acc[rows]

    def _union(self, terms: Sequence[str], found: dict[str, _Term]) -> np.ndarray:
        """The sorted rows (version row space) holding any of ``terms``: by sorting their postings when those are
        few, else by marking a flag per row (linear in the rows, with no sort)."""
        pairs = [(s, tid) for term in terms for s, tid in enumerate(found[term].tids) if tid is not None]
        if sum(int(self.segments[s].indptr[tid + 1] - self.segments[s].indptr[tid]) for s, tid in pairs) * 16 < len(
            self._norm
        ):
            parts = [self.segments[s].postings(tid)[0] + self.offsets[s] for s, tid in pairs]
            if not parts:
                return np.zeros(0, dtype=np.int64)
            rows = np.concatenate(parts)
            rows.sort()
            return rows[np.concatenate(([True], rows[1:] != rows[:-1]))]
        mark = np.zeros(len(self._norm), dtype=bool)
        for s, tid in pairs:
            mark[self.offsets[s] : self.offsets[s + 1]][self.segments[s].postings(tid)[0]] = True
        return np.flatnonzero(mark)

    # ----------------------------------------------------------------------------------- queries

    def scores(self, terms: Sequence[str]) -> list[np.ndarray]:
        """BM25 score of every row of every segment (one float32 array per segment); 0 for deleted and
        non-matching rows. ``terms`` are analysed terms; a repeated term counts again, as in bm25s."""
        acc = np.zeros(int(self.offsets[-1]), dtype=np.float32)
        found = self._terms(terms)
        idf32 = self._idf32(found)
        for term in (t for t in terms if t in found):
            rows, contrib = self._term_contributions(term, found, idf32)
            acc[rows] += contrib  # rows are distinct within a term: exact
        return [acc[a:b] for a, b in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist(), strict=True)]

    def scores_of(self, terms: Sequence[str], rows: np.ndarray) -> np.ndarray:
        """The exact scores of the given rows (sorted and unique, in the version's row space: segment ``s``'s row
        ``r`` is ``offsets[s] + r``), as :meth:`scores` gives them."""
        rows = np.asarray(rows, dtype=np.int64)
        found = self._terms(terms)
        if not found or not rows.size:
            return np.zeros(len(rows), dtype=np.float32)
        return self._accumulate_rows([t for t in terms if t in found], found, self._idf32(found), rows)

    def _allowed_rows(self, allowed: Sequence[np.ndarray | None]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``allowed`` in the version's row space: (sorted rows, None) when every segment gives rows, else
        (None, boolean mask)."""
        if len(allowed) != len(self.segments):
            raise ValueError(f"allowed has {len(allowed)} entries for {len(self.segments)} segments")
        if all(a is not None and np.asarray(a).dtype != bool for a in allowed):
            parts = [
                np.asarray(a, dtype=np.int64) + off for a, off in zip(allowed, self.offsets.tolist(), strict=False)
            ]
            return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64), None
        mask = np.ones(int(self.offsets[-1]), dtype=bool)
        for s, a in enumerate(allowed):
            if a is not None:
                view = mask[self.offsets[s] : self.offsets[s + 1]]
                if np.asarray(a).dtype == bool:
                    view[:] = a
                else:
                    view[:] = False
                    view[np.asarray(a, dtype=np.int64)] = True
        return None, mask

    def top(
        self, terms: Sequence[str], k: int, allowed: Sequence[np.ndarray | None] | None = None
    ) -> list[tuple[int, int, float]]:
        """The ``k`` best (segment index, row, score) with a positive score, best first (ties: segment, then row
        ascending). ``allowed``: per segment, the rows that may be returned (an integer row array or a boolean
        mask; None: every row of that segment); exact, so ``k`` come back whenever ``k`` allowed rows match.

        Exact, with pruning (MaxScore): a term adds at most its float32 IDF per occurrence, so once ``k`` rows
        are known to score at least ``theta``, the rows holding only terms whose bounds add up to less than
        ``theta`` cannot enter the result, and the postings of those (frequent) terms are only searched for the
        candidates instead of being read whole."""
        found = self._terms(terms)
        if k <= 0 or not found:
            return []
        idf32 = self._idf32(found)
        occurrences = [t for t in terms if t in found]
        total = sum(t.postings for t in found.values())
        only_rows, only_mask = (None, None) if allowed is None else self._allowed_rows(allowed)
        if only_rows is not None and len(only_rows) * self.search_ratio < total:
            scores = self._accumulate_rows(occurrences, found, idf32, only_rows)
            rows = only_rows[scores > 0]
            scores = scores[scores > 0]
        else:
            if only_rows is not None:
                only_mask = np.zeros(int(self.offsets[-1]), dtype=bool)
                only_mask[only_rows] = True
            rows, scores = self._top_candidates(occurrences, found, idf32, k, only_mask)
            if only_mask is not None:
                keep = only_mask[rows]
                rows, scores = rows[keep], scores[keep]
        order = _best_order(scores, k, rows)
        rows = rows[order]
        segs = np.searchsorted(self.offsets, rows, side="right") - 1
        local = rows - self.offsets[segs]
        return list(zip(segs.tolist(), local.tolist(), scores[order].tolist(), strict=True))

    def _top_candidates(
        self,
        occurrences: list[str],
        found: dict[str, _Term],
        idf32: dict[str, np.float64],
        k: int,
        mask: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, exact scores) including every allowed row that can be among the ``k`` best.

        1. Score the rows of the rarest terms with those terms only: the k-th best partial score is ``theta``, a
           lower bound of the k-th best score.
        2. The frequent terms whose bounds (float32 IDF x occurrences) add up to less than ``theta`` are
           non-essential: a row holding only them scores less than ``theta``. The candidates are the rows of the
           other (essential) terms, scored exactly, the non-essential postings only binary-searched."""
        total = sum(t.postings for t in found.values())
        if len(found) == 1 or total < self.prune_min_postings:
            return self._accumulate_all(occurrences, found, idf32)
        count = {term: occurrences.count(term) for term in found}
        bound = {term: count[term] * float(idf32[term]) for term in found}
        # 1. A lower bound of the k-th best score: the k-th best partial score over the rarest terms (cheap to read
        # whole). Adding non-negative float32 terms never lowers a float32 sum, so a row's score is at least its
        # partial score, whatever terms are left out.
        first: list[str] = []
        df = postings = 0
        for term in sorted(found, key=lambda term: found[term].df):
            if df >= k and postings + found[term].postings > total // 8:
                break
            first.append(term)
            df += found[term].df
            postings += found[term].postings
        if len(first) == len(found):
            return self._accumulate_all(occurrences, found, idf32)
        rows, scores = self._accumulate_all([t for t in occurrences if t in first], found, idf32)
        if mask is not None:
            scores = scores[mask[rows]]
        if len(scores) < k:
            return self._accumulate_all(occurrences, found, idf32)
        theta = float(np.partition(scores, len(scores) - k)[len(scores) - k])
        # 2. Non-essential terms: the frequent ones whose bounds add up to less than theta. Float32 sums of values
        # each at most their bound exceed the float64 sum of the bounds by less than ``slack``.
        slack = 1 + (len(occurrences) + 1) * 2.0**-23
        non_essential: set[str] = set()
        cumulative = 0.0
        for term in sorted(found, key=lambda term: bound[term]):
            if (cumulative + bound[term]) * slack >= theta:
                break
            cumulative += bound[term]
            non_essential.add(term)
        if not non_essential:
            return self._accumulate_all(occurrences, found, idf32)
        rows = self._union([term for term in found if term not in non_essential], found)
        if mask is not None:
            rows = rows[mask[rows]]
        return rows, self._accumulate_rows(occurrences, found, idf32, rows)


def _best_order(scores: np.ndarray, k: int, rows: np.ndarray) -> np.ndarray:
    """Indices of the ``k`` best positive scores, best first; equal scores by row ascending. Every entry tied with
    the k-th is considered, so the choice among ties does not depend on the partition."""
    idx = np.flatnonzero(scores > 0)
    if len(idx) > k:
        kth = np.partition(scores[idx], len(idx) - k)[len(idx) - k]
        idx = idx[scores[idx] >= kth]
    order = np.lexsort((rows[idx], -scores[idx]))
    return idx[order[:k]]
