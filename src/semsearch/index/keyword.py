"""Keyword (BM25) search over the segments of one version, with the statistics of all its live passages.

The scoring is :class:`semsearch.index.bm25.GlobalBM25` (equal to one bm25s index over the live passages:
method "lucene", k1 1.5, b 0.75, Lucene's English stopwords, Snowball stemming; see that module); this module
puts it in passage ids and query text for the searcher.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .analysis import STEMMER, analyse
from .bm25 import GlobalBM25
from .postings import SegmentPostings
from .segment import rows_of

K1 = 1.5
B = 0.75


def keyword_record() -> dict[str, object]:
    """The manifest's description of the keyword scoring."""
    return {"kind": "segment-postings", "method": "lucene", "k1": K1, "b": B, "stopwords": "en", "stemmer": STEMMER}


class VersionKeyword:
    """BM25 over one version's segments. ``segments``: (postings, passage ids of its rows, article keys of its rows,
    deleted mask or None). Read-only and safe to share between threads."""

    def __init__(self, segments: Sequence[tuple[SegmentPostings, np.ndarray, np.ndarray, np.ndarray | None]]) -> None:
        self._bm25 = GlobalBM25([(postings, deleted) for postings, _, _, deleted in segments], k1=K1, b=B)
        self._ids = [ids for _, ids, _, _ in segments]
        self._keys = [keys for _, _, keys, _ in segments]
        self._offsets = self._bm25.offsets

    def __len__(self) -> int:
        """Live passages."""
        return self._bm25.n_docs

    def term_weights(self, query: str) -> dict[str, float]:
        """IDF of each analysed query term some live passage holds (for highlighting)."""
        return self._bm25.idf(analyse(query))

    def coverage(self, query: str, best_score: float) -> float:
        """How much of ``query`` a passage scoring ``best_score`` covers: that score as a share of the query's
        attainable maximum, the sum of its analysed terms' IDF (the BM25 term score tends to the IDF as the term
        frequency grows). A term no live passage holds counts at the highest IDF (a document frequency of 0):
        no passage can match it, which is what makes keyword matching weak on a paraphrase. 0 for a query with
        no analysed terms."""
        if len(self) == 0 or best_score <= 0:
            return 0.0
        terms = analyse(query)
        weights = self._bm25.idf(terms)
        unseen = self._bm25.unseen_idf()
        total = sum(weights.get(t, unseen) for t in terms)
        return float(min(best_score / total, 1.0)) if total > 0 else 0.0

    def _locate(self, passage_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(segment, row) of each passage id; segment -1 for an id no segment holds (ids are unique across a
        version's segments)."""
        pids = np.asarray(passage_ids, dtype=np.int64)
        segs = np.full(pids.shape, -1, dtype=np.int64)
        rows = np.zeros(pids.shape, dtype=np.int64)
        for s, ids in enumerate(self._ids):
            local, found = rows_of(ids, pids)
            segs[found], rows[found] = s, local[found]
        return segs, rows

    def _ids_of(self, segs: Sequence[int], rows: Sequence[int]) -> np.ndarray:
        return np.array([int(self._ids[s][r]) for s, r in zip(segs, rows, strict=True)], dtype=np.int64)

    def top(self, query: str, k: int, allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best (scores, passage ids) with a positive score, best first, within ``allowed_ids`` (exact,
        so ``k`` come back whenever ``k`` allowed passages match at all)."""
        allowed = None
        if allowed_ids is not None:
            allowed = [rows[found] for rows, found in (rows_of(ids, allowed_ids) for ids in self._ids)]
        best = self._bm25.top(analyse(query), k, allowed)
        if not best:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        segs, rows, scores = zip(*best, strict=True)
        return np.array(scores, dtype=np.float32), self._ids_of(segs, rows)

    def scores_for(self, query: str, passage_ids: np.ndarray) -> np.ndarray:
        """The exact BM25 score of each passage id (0 for an id this version does not hold, or a deleted one)."""
        segs, local = self._locate(passage_ids)
        found = segs >= 0
        rows = local + self._offsets[np.maximum(segs, 0)]  # in the version's row space
        out = np.zeros(len(rows), dtype=np.float32)
        if not found.any():
            return out
        wanted = np.unique(rows[found])
        scores = self._bm25.scores_of(analyse(query), wanted)
        out[found] = scores[np.searchsorted(wanted, rows[found])]
        return out

    def articles_for(self, passage_ids: np.ndarray) -> np.ndarray:
        """The article key of each passage id (equal for one article's passages; see
        :func:`semsearch.index.segment.article_key`); an id this version does not hold gets a key of its own."""
        segs, rows = self._locate(passage_ids)
        out = np.zeros(segs.shape, dtype=np.int64)
        for s, keys in enumerate(self._keys):
            mine = segs == s
            out[mine] = keys[rows[mine]]
        found = segs >= 0
        if not found.all():
            # Negative numbers are keys too, but 2**63 of them: a collision with -1 - i is not a practical concern.
            out[~found] = -1 - np.flatnonzero(~found)
        return out

    def warm(self) -> None:
        """Touch what every query reads: the length normalisation is built already; map the vocabularies."""
        for postings in self._bm25.segments:
            postings.lookup_many(["warm"])
