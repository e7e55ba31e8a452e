from __future__ import annotations

import numpy as np
import pytest

from semsearch.fusion import (
    ADAPTIVE_MAX_KEYWORD_WEIGHT,
    COVERAGE_FLOOR,
    COVERAGE_FULL,
    RRF_K,
    adaptive_keyword_weight,
    coverage_gate,
    fuse,
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


def test_coverage_gate_is_zero_below_the_floor_one_above_full_and_linear_between() -> None:
    assert coverage_gate(None) == 1.0
    assert coverage_gate(0.0) == 0.0 and coverage_gate(COVERAGE_FLOOR) == 0.0
    assert coverage_gate(COVERAGE_FULL) == 1.0 and coverage_gate(0.99) == 1.0
    middle = (COVERAGE_FLOOR + COVERAGE_FULL) / 2
    assert coverage_gate(middle) == pytest.approx(0.5)


def test_adaptive_keyword_weight_is_scaled_by_the_coverage_gate() -> None:
    dense = np.array([0.50, 0.55, 0.30, 0.20, 0.25])
    keyword = np.array([8.0, 1.0, 0.5, 0.0, 0.2])  # keyword is sure of candidate 0; dense prefers 1
    peaked_only = adaptive_keyword_weight(dense, keyword)
    assert peaked_only > 0.3
    full = fuse(dense, keyword, "adaptive", coverage=0.9)
    assert full.keyword_weight == pytest.approx(peaked_only) and full.order[0] == 0
    half = fuse(dense, keyword, "adaptive", coverage=(COVERAGE_FLOOR + COVERAGE_FULL) / 2)
    assert half.keyword_weight == pytest.approx(peaked_only / 2)
    # A keyword match that covers little of the query (a paraphrase): dense order, untouched.
    low = fuse(dense, keyword, "adaptive", coverage=COVERAGE_FLOOR / 2)
    assert low.keyword_weight == 0.0 and low.order.tolist() == [1, 0, 2, 4, 3]
    # Fixed-weight fusions ignore coverage.
    assert fuse(dense, keyword, "zscore", 0.3, coverage=0.0).keyword_weight == 0.3
