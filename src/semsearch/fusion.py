"""Pure functions that fuse a dense and a keyword ranking into one.

All take, for one query, the union of both retrievers' candidates with *exact* scores from both (a candidate only
one retriever returned is scored by the other too), so no method has to guess a missing score.

- ``rrf``: reciprocal-rank fusion, ``1/(60 + rank_dense) + 1/(60 + rank_keyword)``.
- ``zscore``: each retriever's scores standardised over the candidates, then ``(1 - w) * dense + w * keyword``
  with a fixed ``w``.
- ``adaptive`` (default): ``zscore`` with ``w`` chosen per query from how *peaked* each retriever's top result is
  (its z-score among the candidates). A retriever whose best match stands far above the rest (a rare name, an
  exact phrase) is trusted more; one whose scores are flat (generic words, paraphrase) is trusted less. On
  collections where keyword matching is weak, the keyword weight falls towards zero per query, so hybrid
  does not drag dense results down; where exact terms matter, it rises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FUSIONS = ("adaptive", "zscore", "rrf")
RRF_K = 60.0
ZSCORE_KEYWORD_WEIGHT = 0.3
"""Fixed keyword weight of the ``zscore`` method (documented in docs/quality.md)."""
ADAPTIVE_MAX_KEYWORD_WEIGHT = 0.7
"""Cap on the adaptive keyword weight: dense stays at least an equal partner."""


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
    std = float(np.std(scores))
    if std < 1e-9:
        return np.zeros_like(scores, dtype=np.float64)
    return (scores - float(np.mean(scores))) / std


def peakedness(scores: np.ndarray) -> float:
    """How far the best score stands above the candidates' distribution, in standard deviations (>= 0)."""
    z = standardise(scores)
    return max(float(z.max()) if z.size else 0.0, 0.0)


def adaptive_keyword_weight(dense: np.ndarray, keyword: np.ndarray, cap: float = ADAPTIVE_MAX_KEYWORD_WEIGHT) -> float:
    """``cap`` times the keyword retriever's share of the total peakedness: 0 for a flat keyword ranking or no
    keyword match, ``cap / 2`` when both are equally peaked, up to ``cap`` when only keyword matching is."""
    if keyword.size == 0 or float(np.max(keyword)) <= 0.0:
        return 0.0
    p_dense, p_keyword = peakedness(dense), peakedness(keyword)
    if p_dense + p_keyword <= 0:
        return 0.0
    return cap * p_keyword / (p_dense + p_keyword)


def fuse(dense: np.ndarray, keyword: np.ndarray, method: str = "adaptive", weight: float | None = None) -> Fused:
    """Fuse exact dense and keyword scores of the same candidates. ``weight``: the fixed keyword weight
    (``zscore``) or its cap (``adaptive``); None for the documented defaults."""
    if dense.shape != keyword.shape:
        raise ValueError("dense and keyword scores must describe the same candidates")
    if dense.size == 0:
        return Fused(np.zeros(0, dtype=np.int64), np.zeros(0), 0.0)
    if method == "rrf":
        scores = 1.0 / (RRF_K + _ranks(dense)) + 1.0 / (RRF_K + _ranks(keyword))
        weight = 0.5
    elif method in ("zscore", "adaptive"):
        if method == "zscore":
            w = ZSCORE_KEYWORD_WEIGHT if weight is None else weight
        else:
            w = adaptive_keyword_weight(dense, keyword, ADAPTIVE_MAX_KEYWORD_WEIGHT if weight is None else weight)
        scores = (1.0 - w) * standardise(dense) + w * standardise(keyword)
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
