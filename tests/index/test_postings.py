"""Segment postings and BM25 with global statistics: scores must equal those of one bm25s index (method lucene,
k1 1.5, b 0.75, the same stopwords and stemmer) over exactly the live passages, to the bit."""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from semsearch.index.analysis import analyse, stemmer, stopwords
from semsearch.index.bm25 import GlobalBM25
from semsearch.index.postings import SegmentPostings, merge_postings, write_postings

from ..conftest import SAMPLE_CORPUS

LONG = "k0123456789abc89"  # 16 bytes, left alone by the stemmer
EDGE_TEXTS = [
    "",
    "The and of to a it is was",  # only stopwords: a row of length 0
    "İstanbul İstanbul ferry timetable",  # "İ" lower-cases to two characters
    "Quokka sighting quokka quokka",  # a term whose only rows get deleted below
    # Terms sharing their first 16 bytes (the vocabulary's search key), of 15, 16 and more bytes.
    f"{LONG}1 {LONG}2 {LONG} {LONG[:15]} {LONG}12",
    "Ünïcödé naïve café résumé",
]


def _paragraphs() -> list[str]:
    texts = []
    for path in sorted(SAMPLE_CORPUS.rglob("*.txt")):
        texts += [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    return texts


PARAGRAPHS = _paragraphs()
# Every passage also holds "dispatch", so its document frequency is N (the smallest IDF).
TEXTS = [p + " Dispatch." for p in PARAGRAPHS] + EDGE_TEXTS
QUOKKA_ROWS = [i for i, t in enumerate(TEXTS) if "quokka" in t.lower()]

QUERIES = [
    "central bank interest rates",
    "bridge opened traffic",
    "coral reef divers restoration",
    "dispatch",  # in every passage
    "quokka dispatch",  # quokka only in deleted rows (in the tests that delete them)
    "istanbul ferry",
    "bank bank rates rates rates",  # repeated terms count again in bm25s
    "zzzunknownzzz bank",  # an unknown term is ignored
    "zzzunknownzzz",
    "the of and",  # no terms at all
    f"{LONG}1 {LONG} café",
]


def _bm25s_scores(texts: Sequence[str], query: str) -> np.ndarray:
    """The reference: one bm25s index over ``texts``, queried the way semsearch's keyword index does."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    tokens = bm25s.tokenize(list(texts), stopwords=list(stopwords()), stemmer=stemmer(), show_progress=False)
    model = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    model.index(tokens, show_progress=False)
    terms = [t for t in analyse(query) if t in model.vocab_dict]
    if not terms:
        return np.zeros(len(texts), dtype=np.float32)
    return np.asarray(model.get_scores(terms), dtype=np.float32)


def _segments(tmp_path: Path, texts: Sequence[str], bounds: Sequence[int]) -> list[SegmentPostings]:
    """Write ``texts`` as segments cut at ``bounds``."""
    cuts = [0, *bounds, len(texts)]
    out = []
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        write_postings(texts[a:b], tmp_path / f"seg{i}")
        out.append(SegmentPostings(tmp_path / f"seg{i}"))
    return out


def _masks(deleted: np.ndarray, segments: Sequence[SegmentPostings]) -> list[np.ndarray]:
    cuts = np.cumsum([0] + [s.n_docs for s in segments])
    return [deleted[a:b] for a, b in itertools.pairwise(cuts)]


def _deleted_rows() -> np.ndarray:
    """Every 7th passage, the quokka rows (the rarest query term lives only there), and the empty text."""
    deleted = np.zeros(len(TEXTS), dtype=bool)
    deleted[::7] = True
    deleted[QUOKKA_ROWS] = True
    deleted[TEXTS.index("")] = True
    return deleted


@pytest.fixture(scope="module")
def one_segment(tmp_path_factory: pytest.TempPathFactory) -> SegmentPostings:
    return _segments(tmp_path_factory.mktemp("one"), TEXTS, [])[0]


@pytest.fixture(scope="module")
def three_segments(tmp_path_factory: pytest.TempPathFactory) -> list[SegmentPostings]:
    n = len(TEXTS)
    return _segments(tmp_path_factory.mktemp("three"), TEXTS, [n // 3, 2 * n // 3])


def test_postings_hold_exactly_the_analysed_terms(one_segment: SegmentPostings) -> None:
    counts: list[Counter[str]] = [Counter() for _ in TEXTS]
    for tid in range(one_segment.n_terms):
        term = one_segment.term(tid).decode("utf-8")
        assert one_segment.lookup(term) == tid
        rows, tf = one_segment.postings(tid)
        assert np.all(np.diff(rows) > 0)
        for row, n in zip(rows.tolist(), tf.tolist(), strict=True):
            counts[row][term] = n
    assert counts == [Counter(analyse(t)) for t in TEXTS]
    assert one_segment.doc_len.tolist() == [len(analyse(t)) for t in TEXTS]
    assert one_segment.lookup("zzzunknownzzz") is None
    for term in (LONG, LONG[:15], f"{LONG}1", f"{LONG}12"):
        assert one_segment.lookup(term) is not None, term
    for term in (LONG[:14], f"{LONG}3", f"{LONG}0", f"{LONG}123", "k0", "zzzz", "a"):
        assert one_segment.lookup(term) is None, term
    assert one_segment.info["total_len"] == int(one_segment.doc_len.sum())


def test_files_are_memory_mapped_read_only(one_segment: SegmentPostings) -> None:
    for array in (one_segment.rows, one_segment.tf, one_segment.indptr, one_segment.doc_len):
        assert isinstance(array.base, np.memmap)
        assert not array.flags.writeable
    assert one_segment.tf.dtype == np.uint8


@pytest.mark.parametrize("query", QUERIES)
def test_one_segment_scores_equal_bm25s(one_segment: SegmentPostings, query: str) -> None:
    [ours] = GlobalBM25([(one_segment, None)]).scores(analyse(query))
    np.testing.assert_array_equal(ours, _bm25s_scores(TEXTS, query))


@pytest.mark.parametrize("query", QUERIES)
def test_split_segments_score_as_one_index(three_segments: list[SegmentPostings], query: str) -> None:
    ours = GlobalBM25([(s, None) for s in three_segments]).scores(analyse(query))
    np.testing.assert_array_equal(np.concatenate(ours), _bm25s_scores(TEXTS, query))


def test_per_segment_statistics_would_not_match(three_segments: list[SegmentPostings]) -> None:
    """The equality above is discriminating: scoring each segment with its own N and avgdl differs."""
    query = analyse("central bank interest rates dispatch")
    local = np.concatenate([GlobalBM25([(s, None)]).scores(query)[0] for s in three_segments])
    assert not np.allclose(local, _bm25s_scores(TEXTS, "central bank interest rates dispatch"))


@pytest.mark.parametrize("cache", [False, True])
@pytest.mark.parametrize("query", QUERIES)
def test_deleted_rows_are_left_out_of_the_statistics(
    three_segments: list[SegmentPostings], query: str, cache: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GlobalBM25, "contribution_cache_min_postings", 0 if cache else 10**12)
    deleted = _deleted_rows()
    live_texts = [t for t, d in zip(TEXTS, deleted.tolist(), strict=True) if not d]
    index = GlobalBM25(list(zip(three_segments, _masks(deleted, three_segments), strict=True)))
    for _ in range(2):  # the second time from the cache, when kept there
        ours = np.concatenate(index.scores(analyse(query)))
        assert not ours[deleted].any()
        np.testing.assert_array_equal(ours[~deleted], _bm25s_scores(live_texts, query))
    assert index.n_docs == len(live_texts)


def test_idf_uses_live_statistics(three_segments: list[SegmentPostings]) -> None:
    deleted = _deleted_rows()
    index = GlobalBM25(list(zip(three_segments, _masks(deleted, three_segments), strict=True)))
    live = [analyse(t) for t, d in zip(TEXTS, deleted.tolist(), strict=True) if not d]
    weights = index.idf(analyse("quokka dispatch bank zzzunknownzzz"))
    assert set(weights) == {"dispatch", "bank"}  # quokka: only in deleted rows; the unknown term: nowhere
    n = len(live)
    for term, weight in weights.items():
        df = sum(term in terms for terms in live)
        assert weight == pytest.approx(math.log(1 + (n - df + 0.5) / (df + 0.5)), rel=1e-12)
    assert index.unseen_idf() == pytest.approx(math.log(1 + (n + 0.5) / 0.5))


@pytest.mark.parametrize("query", QUERIES)
def test_merged_segment_scores_as_the_unmerged_ones(
    three_segments: list[SegmentPostings], tmp_path: Path, query: str
) -> None:
    deleted = _deleted_rows()
    masks = _masks(deleted, three_segments)
    # Rows given as a boolean mask for one part and as integer rows for the others.
    keeps = [~masks[0], np.flatnonzero(~masks[1]), np.flatnonzero(~masks[2])]
    merge_postings(list(zip(three_segments, keeps, strict=True)), tmp_path / "merged")
    merged = SegmentPostings(tmp_path / "merged")
    unmerged = np.concatenate(GlobalBM25(list(zip(three_segments, masks, strict=True))).scores(analyse(query)))
    [ours] = GlobalBM25([(merged, None)]).scores(analyse(query))
    np.testing.assert_array_equal(ours, unmerged[~deleted])
    live_texts = [t for t, d in zip(TEXTS, deleted.tolist(), strict=True) if not d]
    np.testing.assert_array_equal(ours, _bm25s_scores(live_texts, query))


def test_merge_writes_what_a_fresh_build_of_the_kept_rows_writes(
    three_segments: list[SegmentPostings], tmp_path: Path
) -> None:
    deleted = _deleted_rows()
    masks = _masks(deleted, three_segments)
    merge_postings([(s, ~m) for s, m in zip(three_segments, masks, strict=True)], tmp_path / "merged")
    write_postings([t for t, d in zip(TEXTS, deleted.tolist(), strict=True) if not d], tmp_path / "fresh")
    for name in ("vocab.npy", "vocab_offsets.npy", "vocab_keys.npy", "indptr.npy", "rows.npy", "tf.npy"):
        assert (tmp_path / "merged" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name
    assert (tmp_path / "merged" / "doc_len.npy").read_bytes() == (tmp_path / "fresh" / "doc_len.npy").read_bytes()


def test_merge_renumbers_rows_in_the_given_order(three_segments: list[SegmentPostings], tmp_path: Path) -> None:
    seg = three_segments[0]
    keep = np.array([5, 2, 9])
    merge_postings([(seg, keep)], tmp_path / "m")
    merged = SegmentPostings(tmp_path / "m")
    full = GlobalBM25([(seg, None)])
    for tid in range(merged.n_terms):
        rows, tf = merged.postings(tid)
        old_rows, old_tf = seg.postings(seg.lookup(merged.term(tid).decode()))
        expected = {
            int(np.flatnonzero(keep == r)[0]): int(f) for r, f in zip(old_rows, old_tf, strict=True) if r in keep
        }
        assert dict(zip(rows.tolist(), tf.tolist(), strict=True)) == expected
        assert np.all(np.diff(rows) > 0)
    assert merged.doc_len.tolist() == seg.doc_len[keep].tolist()
    assert full.n_docs == seg.n_docs


def _sorted_reference(scores: list[np.ndarray], k: int) -> list[tuple[int, int, float]]:
    """Best first, ties by segment then row: a stable sort of the concatenated scores."""
    flat = np.concatenate(scores)
    seg = np.concatenate([np.full(len(s), i) for i, s in enumerate(scores)])
    row = np.concatenate([np.arange(len(s)) for s in scores])
    order = np.argsort(-flat, kind="stable")
    order = order[flat[order] > 0][:k]
    return list(zip(seg[order].tolist(), row[order].tolist(), flat[order].tolist(), strict=True))


TOP_QUERIES = [
    "central bank interest rates",
    "dispatch",
    "quokka dispatch bank",
    "the",
    "dispatch said bank bank year",  # frequent terms, a repeated one
    "said percent dispatch coral",
]


@pytest.mark.parametrize("prune", [True, False])
@pytest.mark.parametrize("query", TOP_QUERIES)
@pytest.mark.parametrize("k", [1, 5, 40, 1000])
def test_top_is_the_head_of_the_sorted_scores(
    three_segments: list[SegmentPostings], query: str, k: int, prune: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sample corpus is small: prune from the first posting on (or never), to test both ways.
    monkeypatch.setattr(GlobalBM25, "prune_min_postings", 0 if prune else 10**12)
    deleted = _deleted_rows()
    index = GlobalBM25(list(zip(three_segments, _masks(deleted, three_segments), strict=True)))
    terms = analyse(query)
    assert index.top(terms, k) == _sorted_reference(index.scores(terms), k)


@pytest.mark.parametrize("search_ratio", [0, 10**9])  # never / always binary-search the postings for rows
@pytest.mark.parametrize("form", ["few rows", "many rows", "mask"])
def test_top_within_allowed_rows(
    three_segments: list[SegmentPostings], form: str, search_ratio: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GlobalBM25, "search_ratio", search_ratio)
    monkeypatch.setattr(GlobalBM25, "prune_min_postings", 0)
    deleted = _deleted_rows()
    index = GlobalBM25(list(zip(three_segments, _masks(deleted, three_segments), strict=True)))
    terms = analyse("dispatch bank rates")  # "dispatch" matches every live row
    scores = index.scores(terms)
    rng = np.random.default_rng(7)
    allowed: list[np.ndarray | None] = []
    for s in three_segments:
        size = 3 if form == "few rows" else s.n_docs // 2
        rows = np.sort(rng.choice(s.n_docs, size=size, replace=False))
        if form == "mask":
            mask = np.zeros(s.n_docs, dtype=bool)
            mask[rows] = True
            allowed.append(mask)
        else:
            allowed.append(rows)
    allowed[1] = None  # no restriction in the middle segment
    restricted = []
    for s, only in zip(scores, allowed, strict=True):
        if only is None:
            restricted.append(s)
        else:
            mask = np.zeros(len(s), dtype=bool)
            mask[only] = True
            restricted.append(np.where(mask, s, 0))
    matching = sum(int(np.count_nonzero(r)) for r in restricted)
    for k in (1, 4, matching, matching + 10):
        got = index.top(terms, k, allowed)
        assert got == _sorted_reference(restricted, k)
        assert len(got) == min(k, matching)


def test_only_deleted_or_empty_segments(tmp_path: Path) -> None:
    write_postings([], tmp_path / "empty")
    write_postings(["the of and", ""], tmp_path / "stop")
    write_postings(["quokka"], tmp_path / "gone")
    empty, stop, gone = (SegmentPostings(tmp_path / n) for n in ("empty", "stop", "gone"))
    assert empty.n_docs == 0 and empty.n_terms == 0 and stop.n_terms == 0
    index = GlobalBM25([(empty, None), (stop, None), (gone, np.array([True]))])
    assert index.n_docs == 2 and index.avgdl == 0.0
    assert [s.tolist() for s in index.scores(["quokka"])] == [[], [0.0, 0.0], [0.0]]
    assert index.top(["quokka"], 10) == [] and index.idf(["quokka"]) == {}
    assert GlobalBM25([]).top(["quokka"], 10) == []


@pytest.mark.parametrize("cache", [False, True])
def test_pruned_top_on_a_larger_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: bool) -> None:
    """Pruning on passages recombined from the sample sentences (frequent terms, long postings): the pruned
    ``top`` is the head of the full sorted scores for random queries, with and without a filter (and with every
    term's contributions kept in the version's cache, or none)."""
    monkeypatch.setattr(GlobalBM25, "contribution_cache_min_postings", 0 if cache else 10**12)
    rng = np.random.default_rng(11)
    sentences = [s for p in PARAGRAPHS for s in p.split(". ") if len(s) > 20]
    texts = [". ".join(rng.choice(sentences, size=int(rng.integers(2, 6)))) for _ in range(3000)]
    segments = _segments(tmp_path, texts, [2000, 2600])
    deleted = rng.random(len(texts)) < 0.05
    index = GlobalBM25(list(zip(segments, _masks(deleted, segments), strict=True)))
    monkeypatch.setattr(GlobalBM25, "prune_min_postings", 0)
    allowed = [rng.random(s.n_docs) < 0.3 for s in segments]
    pruned = 0
    for _ in range(40):
        words = texts[int(rng.integers(len(texts)))].split()
        start = int(rng.integers(max(1, len(words) - 8)))
        terms = analyse(" ".join(words[start : start + int(rng.integers(2, 9))]))
        scores = index.scores(terms)
        restricted = [np.where(a, s, 0) for a, s in zip(allowed, scores, strict=True)]
        for k in (10, 100):
            assert index.top(terms, k) == _sorted_reference(scores, k)
            assert index.top(terms, k, allowed) == _sorted_reference(restricted, k)
        pruned += len(terms) > 1
    assert pruned > 20
