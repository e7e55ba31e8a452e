"""Pure functions that fuse a dense and a keyword ranking into one.

All take, for one query, the union of both retrievers' candidates with *exact* scores from both (a candidate only
one retriever returned is scored by the other too), so no method has to guess a missing score.

- ``rrf``: reciprocal-rank fusion, ``1/(60 + rank_dense) + 1/(60 + rank_keyword)``.
- ``zscore``: each retriever's scores standardised over the candidates, then ``(1 - w) * dense + w * keyword``
  with a fixed ``w``.
- ``adaptive`` (default): ``zscore`` with ``w`` chosen per query, and the keyword evidence taken at the article
  level when the keyword match is weak. Three signals:

  1. how *peaked* each retriever's top result is (its z-score among the candidates): a retriever whose best
     match stands far above the rest (a rare name, an exact phrase) is trusted more than one whose scores are
     flat. ``w`` is ``cap`` times the keyword retriever's share of the total peakedness.
  2. how much of the query the best keyword match *covers*: its BM25 score as a share of the query's attainable
     maximum (the sum of its terms' IDF, a term the index has never seen counted at the highest IDF). A claim or
     headline that names its subject is well covered (median 0.35 on SciFact claims, 0.39 on bbc headlines); a
     paraphrased question is not (0.14 on the sample questions), and its best keyword matches are the passages
     that repeat its incidental words.
  3. the *article* each candidate belongs to. Coverage sets the granularity of the keyword evidence: below
     ``COVERAGE_FLOOR`` each passage gets its article's best keyword score among the candidates, above
     ``COVERAGE_FULL`` its own, linearly mixed between. A weak keyword match still says which *article* the query
     is about (a name, a number, a title word), while the passages of that article all share those words; so
     keyword evidence picks the article and dense similarity the passage in it. Articles with the same title
     count as one (:func:`semsearch.index.segment.article_key`: a corpus cut into passages before indexing).
     Where each article is a single passage this changes nothing.

  Coverage also scales ``w`` itself, but only at the very bottom: from 0 at ``KEYWORD_COVERAGE_MIN`` to full at
  ``KEYWORD_COVERAGE_TRUSTED``, so a query whose best keyword match covers almost none of it is ranked by dense
  similarity alone.

  Measured in docs/quality.md: with the keyword score of every passage taken as its own and the weight gated at
  coverage 0.15-0.4 (the session-2 default), paraphrased questions at passage level kept the dense result but
  SciFact stayed at 0.719; without any gate, SciFact reached 0.738 but the answer passages of paraphrased
  questions lost 20 points of nDCG@10 to their articles' ledes. Article-level evidence does both.
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
"""Keyword coverage up to which a passage's keyword evidence is its article's best score (module docstring)."""
COVERAGE_FULL = 0.4
"""Keyword coverage from which a passage's keyword evidence is its own score."""
KEYWORD_COVERAGE_MIN = 0.05
"""Keyword coverage up to which the adaptive keyword weight is 0."""
KEYWORD_COVERAGE_TRUSTED = 0.15
"""Keyword coverage from which the adaptive keyword weight is not reduced."""


@dataclass(frozen=True)
class Fused:
    order: np.ndarray
    """Candidate indices, best first."""
    scores: np.ndarray
    """Fused score of each candidate (same indexing as the inputs)."""
    keyword_weight: float
    """The keyword weight used for this query (RRF: 0.5)."""
    dense_terms: np.ndarray | None = None
    """What was fused of each retriever's score: z-scores (zscore, adaptive) or reciprocal ranks (rrf)."""
    keyword_terms: np.ndarray | None = None


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


def ramp(value: float | None, low: float, high: float) -> float:
    """0 at or below ``low``, 1 at or above ``high``, linear between; 1 when ``value`` is unknown."""
    if value is None:
        return 1.0
    return float(np.clip((value - low) / (high - low), 0.0, 1.0))


def coverage_gate(coverage: float | None) -> float:
    """The factor in [0, 1] that the keyword coverage applies to the adaptive keyword weight (1 when unknown)."""
    return ramp(coverage, KEYWORD_COVERAGE_MIN, KEYWORD_COVERAGE_TRUSTED)


def own_share(coverage: float | None) -> float:
    """How much of a passage's keyword evidence is its own score rather than its article's best (1 when the
    coverage is unknown)."""
    return ramp(coverage, COVERAGE_FLOOR, COVERAGE_FULL)


def article_best(scores: np.ndarray, articles: np.ndarray) -> np.ndarray:
    """Each candidate's article's best score among the candidates (``articles``: one number per candidate)."""
    numbers, inverse = np.unique(articles, return_inverse=True)
    if len(numbers) == len(articles):
        return np.asarray(scores, dtype=np.float64)
    best = np.full(len(numbers), -np.inf)
    np.maximum.at(best, inverse, scores)
    return best[inverse]


def fuse(
    dense: np.ndarray,
    keyword: np.ndarray,
    method: str = "adaptive",
    weight: float | None = None,
    coverage: float | None = None,
    articles: np.ndarray | None = None,
) -> Fused:
    """Fuse exact dense and keyword scores of the same candidates. ``weight``: the fixed keyword weight
    (``zscore``) or its cap (``adaptive``); None for the documented defaults. ``coverage``: the query's keyword
    coverage (:meth:`semsearch.index.keyword.VersionKeyword.coverage`), used by ``adaptive``; None skips its effects.
    ``articles``: which article each candidate belongs to (one number each), used by ``adaptive``; None treats
    every candidate as an article of its own."""
    if dense.shape != keyword.shape:
        raise ValueError("dense and keyword scores must describe the same candidates")
    if articles is not None and np.shape(articles) != dense.shape:
        raise ValueError("articles must name one article per candidate")
    if dense.size == 0:
        return Fused(np.zeros(0, dtype=np.int64), np.zeros(0), 0.0)
    if method == "rrf":
        terms = 1.0 / (RRF_K + _ranks(dense)), 1.0 / (RRF_K + _ranks(keyword))
        scores = terms[0] + terms[1]
        weight = 0.5
    elif method in ("zscore", "adaptive"):
        if method == "adaptive" and articles is not None:
            own = own_share(coverage)
            if own < 1.0:
                keyword = own * keyword + (1.0 - own) * article_best(keyword, articles)
        z_dense, z_keyword = standardise(dense), standardise(keyword)
        if method == "zscore":
            w = ZSCORE_KEYWORD_WEIGHT if weight is None else weight
        else:
            cap = ADAPTIVE_MAX_KEYWORD_WEIGHT if weight is None else weight
            w = adaptive_keyword_weight(dense, keyword, cap, z_dense, z_keyword) * coverage_gate(coverage)
        scores = (1.0 - w) * z_dense + w * z_keyword
        terms = z_dense, z_keyword
        weight = w
    else:
        raise ValueError(f"unknown fusion {method!r} (choose from {', '.join(FUSIONS)})")
    order = np.lexsort((-dense, -scores))  # ties broken by the dense score
    return Fused(order, scores, weight, terms[0], terms[1])


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each candidate under ``scores`` (best = 1)."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks
