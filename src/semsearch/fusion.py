"""Pure functions that fuse a dense and a keyword ranking into one.

All take, for one query, the union of both retrievers' candidates with *exact* scores from both (a candidate only
one retriever returned is scored by the other too), so no method has to guess a missing score.

- ``rrf``: reciprocal-rank fusion, ``1/(60 + rank_dense) + 1/(60 + rank_keyword)``.
- ``zscore``: each retriever's scores standardised over the candidates, then ``(1 - w) * dense + w * keyword``
  with a fixed ``w``.
- ``adaptive`` (default): ``zscore`` with ``w`` chosen per query from two signals:

  1. how *peaked* each retriever's top result is (its z-score among the candidates): a retriever whose best
     match stands far above the rest (a rare name, an exact phrase) is trusted more than one whose scores are
     flat;
  2. how much of the query the best keyword match *covers*: its BM25 score as a share of the query's attainable
     maximum (the sum of its terms' IDF, a term the index has never seen counted at the highest IDF). A
     paraphrased question shares few words with its answer, so its best keyword match covers little of it
     (median 0.14 on the sample questions) and ranks whatever repeats the question's incidental words; a claim
     or headline that names its subject is covered far more (SciFact median 0.35, bbc headlines 0.39). Below
     ``COVERAGE_FLOOR`` the keyword weight is 0 (dense alone); above ``COVERAGE_FULL`` signal 1 applies in full;
     linear between.

  Peakedness alone is not enough: on a small corpus, or among the passages of one article, BM25 is peaked on
  incidental words, and the keyword weight it gives cost 20 points of nDCG@10 on paraphrased questions at
  passage level (docs/quality.md). The coverage gate keeps hybrid at the dense result there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FUSIONS = ("adaptive", "zscore", "rrf")
RRF_K = 60.0
ZSCORE_KEYWORD_WEIGHT = 0.3
"""Fixed keyword weight of the ``zscore`` method (documented in docs/quality.md)."""
ADAPTIVE_MAX_KEYWORD_WEIGHT = 0.7
"""Cap on the adaptive keyword weight: dense stays at least an equal partner."""
COVERAGE_FLOOR = 0.15
"""Keyword coverage below which the adaptive keyword weight is 0 (see the module docstring)."""
COVERAGE_FULL = 0.4
"""Keyword coverage from which the adaptive keyword weight is not reduced."""


@dataclass(frozen=True)
class Fused:
    order: np.ndarray
    """Candidate indices, best first."""
    scores: np.ndarray
    """Fused score of each candidate (same indexing as the inputs)."""
    keyword_weight: float
    """The keyword weight used for this query (RRF: 0.5)."""


def standardise(scores: np.ndarray) -> np.ndarray:
    """z-scores over the candidates; all zeros when the scores do not vary."""
    if scores.size == 0:
        return scores.astype(np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    centred = scores - scores.mean()
    std = math.sqrt(float(np.dot(centred, centred)) / scores.size)
    if std < 1e-9:
        return np.zeros_like(scores)
    centred /= std
    return centred


def peakedness(scores: np.ndarray, z: np.ndarray | None = None) -> float:
    """How far the best score stands above the candidates' distribution, in standard deviations (>= 0).
    ``z``: the scores already standardised, if at hand."""
    z = standardise(scores) if z is None else z
    return max(float(z.max()) if z.size else 0.0, 0.0)


def adaptive_keyword_weight(
    dense: np.ndarray,
    keyword: np.ndarray,
    cap: float = ADAPTIVE_MAX_KEYWORD_WEIGHT,
    z_dense: np.ndarray | None = None,
    z_keyword: np.ndarray | None = None,
) -> float:
    """``cap`` times the keyword retriever's share of the total peakedness: 0 for a flat keyword ranking or no
    keyword match, ``cap / 2`` when both are equally peaked, up to ``cap`` when only keyword matching is.
    ``z_dense``/``z_keyword``: the scores already standardised, if at hand."""
    if keyword.size == 0 or float(np.max(keyword)) <= 0.0:
        return 0.0
    p_dense, p_keyword = peakedness(dense, z_dense), peakedness(keyword, z_keyword)
    if p_dense + p_keyword <= 0:
        return 0.0
    return cap * p_keyword / (p_dense + p_keyword)


def coverage_gate(coverage: float | None) -> float:
    """The factor in [0, 1] that the keyword coverage applies to the adaptive keyword weight (1 when unknown)."""
    if coverage is None:
        return 1.0
    return float(np.clip((coverage - COVERAGE_FLOOR) / (COVERAGE_FULL - COVERAGE_FLOOR), 0.0, 1.0))


def fuse(
    dense: np.ndarray,
    keyword: np.ndarray,
    method: str = "adaptive",
    weight: float | None = None,
    coverage: float | None = None,
) -> Fused:
    """Fuse exact dense and keyword scores of the same candidates. ``weight``: the fixed keyword weight
    (``zscore``) or its cap (``adaptive``); None for the documented defaults. ``coverage``: the query's keyword
    coverage (:meth:`semsearch.keyword.KeywordIndex.coverage`), used by ``adaptive``; None skips that gate."""
    if dense.shape != keyword.shape:
        raise ValueError("dense and keyword scores must describe the same candidates")
    if dense.size == 0:
        return Fused(np.zeros(0, dtype=np.int64), np.zeros(0), 0.0)
    if method == "rrf":
        scores = 1.0 / (RRF_K + _ranks(dense)) + 1.0 / (RRF_K + _ranks(keyword))
        weight = 0.5
    elif method in ("zscore", "adaptive"):
        z_dense, z_keyword = standardise(dense), standardise(keyword)
        if method == "zscore":
            w = ZSCORE_KEYWORD_WEIGHT if weight is None else weight
        else:
            cap = ADAPTIVE_MAX_KEYWORD_WEIGHT if weight is None else weight
            w = adaptive_keyword_weight(dense, keyword, cap, z_dense, z_keyword) * coverage_gate(coverage)
        scores = (1.0 - w) * z_dense + w * z_keyword
        weight = w
    else:
        raise ValueError(f"unknown fusion {method!r} (choose from {', '.join(FUSIONS)})")
    order = np.lexsort((-dense, -scores))  # ties broken by the dense score
    return Fused(order, scores, weight)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each candidate under ``scores`` (best = 1)."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks
