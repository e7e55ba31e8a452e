from __future__ import annotations

import numpy as np
import pytest

from semsearch.retrieve.fusion import (
    ADAPTIVE_MAX_KEYWORD_WEIGHT,
    COVERAGE_FLOOR,
    COVERAGE_FULL,
    KEYWORD_COVERAGE_MIN,
    KEYWORD_COVERAGE_TRUSTED,
    RRF_K,
    adaptive_keyword_weight,
    article_best,
    coverage_gate,
    fuse,
    own_share,
    peakedness,
    standardise,
)


def test_standardise_has_zero_mean_unit_std_and_handles_constants() -> None:
    z = standardise(np.array([1.0, 2.0, 3.0, 6.0]))
    assert z.mean() == pytest.approx(0.0) and z.std() == pytest.approx(1.0)
    assert standardise(np.array([5.0, 5.0, 5.0])).tolist() == [0.0, 0.0, 0.0]
    assert standardise(np.array([])).size == 0


def test_rrf_by_hand() -> None:
    dense = np.array([0.9, 0.8, 0.1])  # ranks 1, 2, 3
    keyword = np.array([0.0, 5.0, 9.0])  # ranks 3, 2, 1
    fused = fuse(dense, keyword, "rrf")
    expected = [1 / (RRF_K + 1) + 1 / (RRF_K + 3), 2 / (RRF_K + 2), 1 / (RRF_K + 3) + 1 / (RRF_K + 1)]
    np.testing.assert_allclose(fused.scores, expected)
    # 0 and 2 tie on RRF; the tie goes to the better dense score.
    assert fused.order.tolist() == [0, 2, 1]


def test_zscore_fusion_by_hand() -> None:
    dense = np.array([0.5, 0.4, 0.3])
    keyword = np.array([1.0, 3.0, 2.0])
    fused = fuse(dense, keyword, "zscore", weight=0.5)
    expected = 0.5 * standardise(dense) + 0.5 * standardise(keyword)
    np.testing.assert_allclose(fused.scores, expected)
    assert fused.order[0] == int(np.argmax(expected))


def test_zscore_weight_zero_is_dense_order_and_one_is_keyword_order() -> None:
    dense = np.array([0.2, 0.9, 0.5, 0.1])
    keyword = np.array([4.0, 0.5, 1.0, 9.0])
    assert fuse(dense, keyword, "zscore", weight=0.0).order.tolist() == [1, 2, 0, 3]
    assert fuse(dense, keyword, "zscore", weight=1.0).order.tolist() == [3, 0, 2, 1]


def test_adaptive_weight_follows_peakedness() -> None:
    flat_keyword = np.array([2.0, 2.1, 1.9, 2.0, 2.05, 1.95, 2.0, 2.0])
    peaked_keyword = np.array([9.0, 1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0])
    peaked_dense = np.array([0.9, 0.3, 0.31, 0.29, 0.3, 0.3, 0.32, 0.28])
    flat_dense = np.array([0.5, 0.49, 0.51, 0.5, 0.5, 0.49, 0.51, 0.5])
    low = adaptive_keyword_weight(peaked_dense, flat_keyword)
    high = adaptive_keyword_weight(flat_dense, peaked_keyword)
    assert 0 <= low < ADAPTIVE_MAX_KEYWORD_WEIGHT / 2 < high <= ADAPTIVE_MAX_KEYWORD_WEIGHT
    equal = adaptive_keyword_weight(peaked_dense, peaked_dense * 10)
    assert equal == pytest.approx(ADAPTIVE_MAX_KEYWORD_WEIGHT / 2)


def test_adaptive_weight_is_zero_without_keyword_matches() -> None:
    assert adaptive_keyword_weight(np.array([0.9, 0.1]), np.array([0.0, 0.0])) == 0.0
    fused = fuse(np.array([0.1, 0.9, 0.5]), np.array([0.0, 0.0, 0.0]), "adaptive")
    assert fused.keyword_weight == 0.0 and fused.order.tolist() == [1, 2, 0]


def test_peakedness() -> None:
    assert peakedness(np.array([1.0, 1.0, 1.0])) == 0.0
    assert peakedness(np.array([10.0, 0.0, 0.0, 0.0])) == pytest.approx(np.sqrt(3))


def test_fuse_rejects_mismatched_inputs_and_unknown_methods() -> None:
    with pytest.raises(ValueError, match="same candidates"):
        fuse(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse(np.zeros(2), np.zeros(2), "max")
    assert fuse(np.zeros(0), np.zeros(0)).order.size == 0


@pytest.mark.parametrize(
    ("ramp", "low", "high"),
    [(coverage_gate, KEYWORD_COVERAGE_MIN, KEYWORD_COVERAGE_TRUSTED), (own_share, COVERAGE_FLOOR, COVERAGE_FULL)],
)
def test_coverage_ramps_are_zero_below_their_floor_one_above_and_linear_between(ramp, low, high) -> None:  # type: ignore[no-untyped-def]
    assert ramp(None) == 1.0
    assert ramp(0.0) == 0.0 and ramp(low) == 0.0
    assert ramp(high) == 1.0 and ramp(0.99) == 1.0
    assert ramp((low + high) / 2) == pytest.approx(0.5)


def test_adaptive_keyword_weight_is_scaled_by_the_coverage_gate() -> None:
    dense = np.array([0.50, 0.55, 0.30, 0.20, 0.25])
    keyword = np.array([8.0, 1.0, 0.5, 0.0, 0.2])  # keyword is sure of candidate 0; dense prefers 1
    peaked_only = adaptive_keyword_weight(dense, keyword)
    assert peaked_only > 0.3
    full = fuse(dense, keyword, "adaptive", coverage=0.9)
    assert full.keyword_weight == pytest.approx(peaked_only) and full.order[0] == 0
    half = fuse(dense, keyword, "adaptive", coverage=(KEYWORD_COVERAGE_MIN + KEYWORD_COVERAGE_TRUSTED) / 2)
    assert half.keyword_weight == pytest.approx(peaked_only / 2)
    # A keyword match that covers almost none of the query: dense order, untouched.
    low = fuse(dense, keyword, "adaptive", coverage=KEYWORD_COVERAGE_MIN / 2)
    assert low.keyword_weight == 0.0 and low.order.tolist() == [1, 0, 2, 4, 3]
    # Fixed-weight fusions ignore coverage.
    assert fuse(dense, keyword, "zscore", 0.3, coverage=0.0).keyword_weight == 0.3


def test_article_best_gives_each_candidate_its_articles_best_score() -> None:
    scores = np.array([1.0, 5.0, 2.0, 0.0, 3.0])
    articles = np.array([7, 7, 3, 9, 3])
    assert article_best(scores, articles).tolist() == [5.0, 5.0, 3.0, 0.0, 3.0]
    assert article_best(scores, np.arange(5)).tolist() == scores.tolist()


# Article A has a lede (0) that repeats the question's incidental words and the answer paragraph (1), which
# dense similarity prefers; article B (2, 3) is off topic. Other candidates fill the distribution.
_DENSE = np.array([0.52, 0.60, 0.40, 0.35, 0.30, 0.28, 0.25, 0.20])
_KEYWORD = np.array([6.0, 0.5, 1.0, 0.0, 0.0, 0.3, 0.0, 0.0])
_ARTICLES = np.array([0, 0, 1, 1, 2, 3, 4, 5])


def test_weak_keyword_evidence_picks_the_article_and_dense_the_passage() -> None:
    weak = KEYWORD_COVERAGE_TRUSTED  # full keyword weight, but keyword evidence at the article level
    assert weak <= COVERAGE_FLOOR
    # Passage by passage, the lede's keyword peak outranks the answer ...
    assert fuse(_DENSE, _KEYWORD, "adaptive", coverage=weak).order[0] == 0
    # ... pooled by article, both passages of A get its keyword evidence and dense picks the answer, A stays
    # above B, and the keyword weight is as large as before.
    pooled = fuse(_DENSE, _KEYWORD, "adaptive", coverage=weak, articles=_ARTICLES)
    assert pooled.order[:2].tolist() == [1, 0]
    assert pooled.keyword_weight > 0.3
    # A query the keyword match covers well keeps passage-level evidence: the lede (which matches it) first.
    assert fuse(_DENSE, _KEYWORD, "adaptive", coverage=0.9, articles=_ARTICLES).order[0] == 0


def test_articles_of_one_passage_each_change_nothing_and_fixed_fusions_ignore_articles() -> None:
    for coverage in (0.0, 0.1, 0.2, 0.9):
        alone = fuse(_DENSE, _KEYWORD, "adaptive", coverage=coverage)
        separate = fuse(_DENSE, _KEYWORD, "adaptive", coverage=coverage, articles=np.arange(8))
        assert separate.order.tolist() == alone.order.tolist()
        assert np.allclose(separate.scores, alone.scores)
    for method in ("zscore", "rrf"):
        plain = fuse(_DENSE, _KEYWORD, method, coverage=0.1)
        pooled = fuse(_DENSE, _KEYWORD, method, coverage=0.1, articles=_ARTICLES)
        assert np.allclose(plain.scores, pooled.scores)
    with pytest.raises(ValueError, match="one article per candidate"):
        fuse(_DENSE, _KEYWORD, "adaptive", articles=_ARTICLES[:3])
