"""Segment vectors (flat and IVF-SQ8): exactness of scores, deletions, ``allowed`` filters, recall recorded at build,
reopening, sharing with a forked child. Small clustered data (64-d); the ANN index is forced by a low ``ann_min_rows``."""

from __future__ import annotations

import json
import os
import pickle
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from semsearch.errors import IndexCorruptError
from semsearch.index import vectors as vec
from semsearch.index.vectors import SegmentVectors, write_vectors

N, DIM, CLUSTERS, K = 3000, 64, 15, 10


def _clustered(n: int = N, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, CLUSTERS, n)] + rng.standard_normal((n, DIM)).astype(np.float32) * np.float32(0.8 / 8)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _queries(x: np.ndarray, m: int, noise: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.choice(x.shape[0], m, replace=False)
    q = x[src] + rng.standard_normal((m, DIM)).astype(np.float32) * np.float32(noise / 8)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32), src


def _exact(q: np.ndarray, x: np.ndarray, k: int, live: np.ndarray) -> np.ndarray:
    """Exact top-k rows among ``live`` rows (padded with -1)."""
    s = q @ x[live].T
    out = np.full((q.shape[0], k), -1, dtype=np.int64)
    for i in range(q.shape[0]):
        order = np.argsort(-s[i], kind="stable")[:k]
        out[i, : order.size] = live[order]
    return out


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return _clustered()


@pytest.fixture(scope="module")
def segments(data: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("segments")
    flat = write_vectors(data, root / "flat")
    ann = write_vectors(data, root / "ann", ann_min_rows=500)
    return {"flat": (root / "flat", flat), "ann": (root / "ann", ann)}


@pytest.fixture(scope="module", params=["flat", "ann"])
def seg(request: pytest.FixtureRequest, segments: dict[str, tuple[Path, dict]]) -> SegmentVectors:
    path, info = segments[request.param]
    s = SegmentVectors(path, info)
    yield s
    s.close()


def test_kinds_and_manifest_entry(segments: dict[str, tuple[Path, dict]]) -> None:
    flat, ann = segments["flat"][1], segments["ann"][1]
    assert flat["kind"] == "flat" and flat["recall_at_10"] == 1.0  # 3000 rows < the default threshold
    assert ann["kind"] == "ivf-pq4fs" and 1 <= ann["params"]["nprobe"] <= ann["params"]["nlist"]
    assert json.loads(json.dumps(ann)) == ann  # goes into the manifest as is
    assert ann["recall_sample"] == vec.CALIBRATION_QUERIES and ann["recall_met"]
    assert ann["recall_at_10"] >= ann["calibration_target"] == vec.CALIBRATION_TARGET > ann["recall_target"]
    assert ann["recall_method"] == "leave-one-out"


def test_recorded_recall_holds_on_fresh_queries(segments: dict[str, tuple[Path, dict]], data: np.ndarray) -> None:
    path, info = segments["ann"]
    s = SegmentVectors(path, info)
    q, _ = _queries(data, 200, 0.5, seed=42)
    _, rows = s.search(q, K)
    truth = _exact(q, data, K, np.arange(N))
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(rows.tolist(), truth.tolist(), strict=True)])
    assert recall >= info["recall_target"] - 0.02  # another sample of the same query model


def test_recorded_leave_one_out_recall_holds_on_other_rows(
    segments: dict[str, tuple[Path, dict]], data: np.ndarray
) -> None:
    path, info = segments["ann"]
    s = SegmentVectors(path, info)
    rng = np.random.default_rng(7)
    src = rng.choice(N, 200, replace=False)
    _, rows = s.search(data[src], K + 1)
    hits = 0
    for i, own in enumerate(src.tolist()):
        others = np.setdiff1d(np.arange(N), [own])
        truth = set(_exact(data[own : own + 1], data, K, others)[0].tolist())
        found = [r for r in rows[i].tolist() if r != own][:K]
        hits += len(truth & set(found))
    assert hits / (200 * K) >= info["calibration_target"] - 0.03  # another sample of the calibration's queries


def test_flat_and_ann_agree_on_top1_of_easy_queries(segments: dict[str, tuple[Path, dict]], data: np.ndarray) -> None:
    q, src = _queries(data, 50, 0.05)
    tops = [SegmentVectors(*segments[kind]).search(q, K)[1][:, 0] for kind in ("flat", "ann")]
    assert np.array_equal(tops[0], src)
    assert np.array_equal(tops[1], src)


def test_scores_are_exact_inner_products_best_first(seg: SegmentVectors, data: np.ndarray) -> None:
    q, _ = _queries(data, 20, 0.5)
    scores, rows = seg.search(q, K)
    assert (rows >= 0).all() and scores.dtype == np.float32
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", q, data[rows]), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_deep_k_and_k_beyond_the_segment(seg: SegmentVectors, data: np.ndarray) -> None:
    q, _ = _queries(data, 5, 0.5)
    _, rows = seg.search(q, 100)
    truth = _exact(q, data, 100, np.arange(N))
    assert all(len(set(r)) == 100 for r in rows.tolist())
    assert np.mean([len(set(a) & set(b)) for a, b in zip(rows.tolist(), truth.tolist(), strict=True)]) >= 90
    scores, rows = seg.search(q[:1], N + 5)
    assert sorted(rows[0, :N].tolist()) == list(range(N)) and (rows[0, N:] == -1).all()
    assert np.isneginf(scores[0, N:]).all()


def test_deleted_rows_never_returned_and_k_still_come_back(seg: SegmentVectors, data: np.ndarray) -> None:
    q, _ = _queries(data, 30, 0.3)
    _, before = seg.search(q, K)
    rng = np.random.default_rng(3)
    deleted = rng.random(N) < 0.3
    deleted[before[:, :5].ravel()] = True  # every query's best rows are gone
    _, rows = seg.search(q, K, deleted=deleted)
    assert (rows >= 0).all(), "k live rows exist, so k must come back"
    assert not deleted[rows].any()
    truth = _exact(q, data, K, np.flatnonzero(~deleted))
    assert np.mean([len(set(a) & set(b)) for a, b in zip(rows.tolist(), truth.tolist(), strict=True)]) >= 0.9 * K


def test_fewer_live_rows_than_k_pads(seg: SegmentVectors, data: np.ndarray) -> None:
    deleted = np.ones(N, dtype=bool)
    deleted[[7, 1500, 2999]] = False
    q, _ = _queries(data, 3, 0.3)
    scores, rows = seg.search(q, K, deleted=deleted)
    assert sorted(rows[0, :3].tolist()) == [7, 1500, 2999]
    assert (rows[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    _, none = seg.search(q, K, deleted=np.ones(N, dtype=bool))
    assert (none == -1).all()


@pytest.mark.parametrize("exact_min", [vec.EXACT_ALLOWED_MIN, 0], ids=["default-cutoff", "always-ann"])
@pytest.mark.parametrize("size", [4, 25, 400, 2000])
def test_allowed_restricts_exactly_and_returns_k(
    seg: SegmentVectors, data: np.ndarray, size: int, exact_min: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Very selective to broad filters; with the cut-off at 0 every filter takes the ANN path with its selector
    (and, when probed lists hold too few allowed rows, the widening and fallback)."""
    monkeypatch.setattr(vec, "EXACT_ALLOWED_MIN", exact_min)
    monkeypatch.setattr(vec, "EXACT_ALLOWED_DIVISOR", 10**9 if exact_min == 0 else vec.EXACT_ALLOWED_DIVISOR)
    rng = np.random.default_rng(size)
    allowed = np.sort(rng.choice(N, size, replace=False))
    deleted = np.zeros(N, dtype=bool)
    deleted[allowed[::7]] = True
    live = allowed[~deleted[allowed]]
    q, _ = _queries(data, 20, 0.3)
    scores, rows = seg.search(q, K, deleted=deleted, allowed=allowed)
    want = min(K, live.size)
    assert ((rows >= 0).sum(axis=1) == want).all()
    assert np.isin(rows[:, :want], live).all() and (rows[:, want:] == -1).all()
    np.testing.assert_allclose(scores[:, :want], np.einsum("qd,qkd->qk", q, data[rows[:, :want]]), atol=1e-5)
    truth = _exact(q, data, K, live)
    if size <= 25 or seg.kind == "flat":
        assert np.array_equal(rows, truth)
    else:
        overlap = np.mean([len(set(a) & set(b)) for a, b in zip(rows.tolist(), truth.tolist(), strict=True)])
        assert overlap >= 0.9 * K


def test_allowed_far_from_the_query_still_returns_k(segments: dict[str, tuple[Path, dict]], data: np.ndarray) -> None:
    """A broad filter that excludes the query's whole neighbourhood: the probed lists hold no allowed row, so only
    the fallback over every list finds them."""
    s = SegmentVectors(*segments["ann"])
    q, _ = _queries(data, 1, 0.1)
    near = np.argsort(-(data @ q[0]))[: N // 3]
    allowed = np.setdiff1d(np.arange(N), near)
    _, rows = s.search(q, K, allowed=allowed)
    assert (rows >= 0).all() and np.isin(rows, allowed).all()
    # Far from the query, compressed scores barely separate the rows: most, not all, of the exact top 10.
    assert len(set(rows[0].tolist()) & set(_exact(q, data, K, allowed)[0].tolist())) >= 0.9 * K


def test_vectors_reads_exact_rows_in_order(seg: SegmentVectors, data: np.ndarray) -> None:
    rows = np.array([2999, 0, 17, 17, 1234])
    assert np.array_equal(seg.vectors(rows), data[rows])
    many = np.arange(N - 1, 0, -7)
    assert np.array_equal(seg.vectors(many), data[many])
    assert seg.vectors(np.array([], dtype=np.int64)).shape == (0, DIM)
    with pytest.raises(ValueError):
        seg.vectors(np.array([N]))


def test_reopen_after_write(segments: dict[str, tuple[Path, dict]], data: np.ndarray) -> None:
    q, _ = _queries(data, 10, 0.4)
    for path, info in segments.values():
        first = SegmentVectors(path, info).search(q, K)
        reopened = SegmentVectors(path, json.loads(json.dumps(info)))
        second = reopened.search(q, K)
        assert np.array_equal(first[1], second[1]) and np.array_equal(first[0], second[0])
        reopened.close()
        with pytest.raises(ValueError):
            reopened.search(q, K)


def test_open_rejects_a_mismatched_manifest(segments: dict[str, tuple[Path, dict]]) -> None:
    path, info = segments["ann"]
    with pytest.raises(IndexCorruptError):
        SegmentVectors(path, {**info, "rows": N + 1})
    with pytest.raises(IndexCorruptError):
        SegmentVectors(path, {**info, "format": 99})


def test_forked_child_searches_the_same(segments: dict[str, tuple[Path, dict]], data: np.ndarray) -> None:
    """A preloaded server forks its workers: the inherited segment and one the child opens itself (a hot reload)
    answer as in the parent."""
    path, info = segments["ann"]
    s = SegmentVectors(path, info)
    q, _ = _queries(data, 10, 0.4)
    deleted = np.zeros(N, dtype=bool)
    deleted[::5] = True
    expected = s.search(q, K, deleted=deleted)
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded process, fork() may deadlock"
        pid = os.fork()
    if pid == 0:
        try:
            inherited = s.search(q, K, deleted=deleted)
            fresh = SegmentVectors(path, info).search(q, K, deleted=deleted)
            os.write(write, pickle.dumps((inherited, fresh)))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        payload = f.read()
    os.waitpid(pid, 0)
    inherited, fresh = pickle.loads(payload)
    for got in (inherited, fresh):
        assert np.array_equal(got[1], expected[1]) and np.array_equal(got[0], expected[0])


def test_concurrent_searches_from_threads(seg: SegmentVectors, data: np.ndarray) -> None:
    q, _ = _queries(data, 40, 0.4)
    expected = [seg.search(q[i : i + 1], K)[1] for i in range(q.shape[0])]
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for j in range(q.shape[0]):
                i = (j + offset) % q.shape[0]
                assert np.array_equal(seg.search(q[i : i + 1], K)[1], expected[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t * 10,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_bad_input(seg: SegmentVectors, tmp_path: Path) -> None:
    q = np.zeros((1, DIM), dtype=np.float32)
    with pytest.raises(ValueError):
        seg.search(q, 0)
    with pytest.raises(ValueError):
        seg.search(np.zeros((1, DIM + 1), dtype=np.float32), K)
    with pytest.raises(ValueError):
        seg.search(q, K, deleted=np.zeros(N - 1, dtype=bool))
    with pytest.raises(ValueError):
        seg.search(q, K, allowed=np.array([N]))
    with pytest.raises(ValueError):
        write_vectors(np.full((3, 4), np.nan, dtype=np.float32), tmp_path / "nan")
    unsorted = seg.search(q, K, allowed=np.array([9, 3, 3, 5]))[1]
    assert sorted(unsorted[0, :3].tolist()) == [3, 5, 9] and (unsorted[0, 3:] == -1).all()
