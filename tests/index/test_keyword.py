"""Keyword search over a version's segments (passage ids, deletions, article keys) and the text analysis."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from semsearch.index.analysis import analyse
from semsearch.index.keyword import VersionKeyword
from semsearch.index.postings import SegmentPostings, write_postings
from semsearch.index.segment import article_key

TEXTS = [
    "Volcano erupts near the harbour town",
    "The harbour reopens after the storm",
    "Council approves the new library budget",
    "Library opening hours extended for exams",
]


def _segment(tmp_path: Path, name: str, texts: list[str]) -> SegmentPostings:
    write_postings(texts, tmp_path / name)
    return SegmentPostings(tmp_path / name)


def _keyword(
    tmp_path: Path, parts: list[tuple[list[str], list[int], list[int] | None, list[bool] | None]]
) -> VersionKeyword:
    """parts: (texts, passage ids, article keys or None for one article per passage, deleted flags or None)."""
    segments = []
    for i, (texts, ids, keys, deleted) in enumerate(parts):
        segments.append(
            (
                _segment(tmp_path, f"s{i}", texts),
                np.array(ids, dtype=np.int64),
                np.array(keys if keys is not None else ids, dtype=np.int64),
                None if deleted is None else np.array(deleted, dtype=bool),
            )
        )
    return VersionKeyword(segments)


@pytest.fixture
def keyword_index(tmp_path: Path) -> VersionKeyword:
    # Two segments: statistics are the version's, not a segment's.
    return _keyword(tmp_path, [(TEXTS[:1], [10], None, None), (TEXTS[1:], [11, 12, 13], None, None)])


def _idf(df: int, n: int = len(TEXTS)) -> float:
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def test_term_weights_are_bm25_idf(keyword_index: VersionKeyword) -> None:
    weights = keyword_index.term_weights("volcano harbour")
    assert weights == pytest.approx({"volcano": _idf(1), "harbour": _idf(2)})


def test_term_weights_leave_deleted_passages_out(tmp_path: Path) -> None:
    kw = _keyword(tmp_path, [(TEXTS[:1], [10], None, [True]), (TEXTS[1:], [11, 12, 13], None, None)])
    assert kw.term_weights("volcano harbour") == pytest.approx({"harbour": _idf(1, 3)})
    assert len(kw) == 3


def test_coverage_is_the_best_score_over_the_querys_idf_mass(keyword_index: VersionKeyword) -> None:
    query = "volcano harbour"
    best = float(keyword_index.top(query, 1)[0][0])
    expected = best / (_idf(1) + _idf(2))
    assert keyword_index.coverage(query, best) == pytest.approx(expected)
    assert 0.0 < expected < 1.0


def test_coverage_counts_unseen_terms_at_the_highest_idf(keyword_index: VersionKeyword) -> None:
    # A word no passage uses can never be matched: it lowers coverage (the paraphrase case).
    query = "volcano harbour magma"
    assert "magma" in analyse(query)
    best = float(keyword_index.top(query, 1)[0][0])
    assert best == pytest.approx(float(keyword_index.top("volcano harbour", 1)[0][0]))
    expected = best / (_idf(1) + _idf(2) + _idf(0))
    assert keyword_index.coverage(query, best) == pytest.approx(expected)
    assert keyword_index.coverage(query, best) < keyword_index.coverage("volcano harbour", best)


def test_coverage_is_zero_without_terms_or_matches(keyword_index: VersionKeyword) -> None:
    assert keyword_index.coverage("the of and", 1.0) == 0.0  # stopwords only
    assert keyword_index.coverage("volcano", 0.0) == 0.0


def test_top_and_scores_for_equal_one_bm25s_index_over_the_live_passages(tmp_path: Path) -> None:
    import bm25s
    import Stemmer
    from bm25s.stopwords import STOPWORDS_EN

    texts = [*TEXTS, "Harbour library volcano museum", "Storm over the volcano harbour"]
    # Segment 1 holds ids 3, 8, 20; segment 0 holds 1, 2, 5 with id 2 deleted.
    kw = _keyword(
        tmp_path,
        [(texts[:3], [1, 2, 5], None, [False, True, False]), (texts[3:], [3, 8, 20], None, None)],
    )
    live_ids = [1, 5, 3, 8, 20]
    live_texts = [texts[0], texts[2], texts[3], texts[4], texts[5]]
    stemmer = Stemmer.Stemmer("english")
    model = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    model.index(
        bm25s.tokenize(live_texts, stopwords=STOPWORDS_EN, stemmer=stemmer, show_progress=False), show_progress=False
    )
    query = "volcano harbour library storm"
    expected = model.get_scores(analyse(query)).astype(np.float32)
    by_id = dict(zip(live_ids, expected.tolist(), strict=True))
    scores, ids = kw.top(query, 10)
    assert sorted(ids.tolist()) == sorted(i for i in live_ids if by_id[i] > 0)
    assert scores.tolist() == [by_id[i] for i in ids.tolist()]  # exact, best first
    assert scores.tolist() == sorted(scores.tolist(), reverse=True)
    picked = kw.scores_for(query, np.array([20, 2, 1, 999, 5]))
    assert picked.dtype == np.float32
    assert picked.tolist() == [by_id[20], 0.0, by_id[1], 0.0, by_id[5]]  # a deleted or unknown id scores 0
    assert kw.scores_for(query, np.zeros(0, dtype=np.int64)).shape == (0,)
    # Restricted to allowed ids, exactly.
    scores, ids = kw.top(query, 10, allowed_ids=np.array([20, 2, 1]))
    assert set(ids.tolist()) == {i for i in (20, 1) if by_id[i] > 0}


def test_articles_are_looked_up_by_passage_id_across_segments(tmp_path: Path) -> None:
    kw = _keyword(
        tmp_path,
        [
            (["alpha volcano", "beta glacier"], [3, 7], [5, 6], None),
            (["gamma volcano lava", "delta"], [19, 42], [5, 8], None),
        ],
    )
    assert kw.articles_for(np.array([19, 3, 42, 7])).tolist() == [5, 5, 8, 6]
    unknown = kw.articles_for(np.array([19, 1000, 1001]))
    assert unknown[0] == 5 and unknown[1] < 0 and unknown[2] < 0 and unknown[1] != unknown[2]


def test_article_keys_join_passages_of_one_article_and_articles_with_one_title() -> None:
    keys = [
        article_key(a, t)
        for a, t in [
            ("a", "Harbour works"),
            ("a", "Harbour works"),
            ("b", "Harbour works "),
            ("c", ""),
            ("c", " "),
            ("d", ""),
        ]
    ]
    # One article; an article with the same title (a corpus cut into passages before indexing); untitled
    # articles only by their id.
    assert keys[0] == keys[1] == keys[2]
    assert keys[3] == keys[4] != keys[5] and keys[3] != keys[0]


def test_a_corpus_without_a_single_term_indexes_and_matches_nothing(tmp_path: Path) -> None:
    # Every word a stopword or a single letter: no vocabulary at all.
    kw = _keyword(tmp_path, [(["a b c", "the and of"], [3, 4], None, None)])
    assert len(kw) == 2
    assert kw.top("the volcano", 5)[1].size == 0
    assert kw.scores_for("the volcano", np.array([3, 4])).tolist() == [0.0, 0.0]
    assert kw.coverage("the volcano", 0.0) == 0.0


def test_analyse_matches_the_bm25s_analysis_of_indexed_passages() -> None:
    import bm25s
    import Stemmer
    from bm25s.stopwords import STOPWORDS_EN

    from ..conftest import SAMPLE_CORPUS

    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(SAMPLE_CORPUS.rglob("*.txt"))]
    texts += ["Ünïcode café, naïve façades — 3.5% of $1,000", "It's the state-of-the-art U.S. plan; don't"]
    assert len(texts) > 10
    stemmer = Stemmer.Stemmer("english")
    expected = bm25s.tokenize(texts, stopwords=STOPWORDS_EN, stemmer=stemmer, return_ids=False, show_progress=False)
    assert [analyse(t) for t in texts] == expected


def test_analyse_with_offsets_gives_the_same_terms_at_their_words() -> None:
    from semsearch.index.analysis import analyse_with_offsets

    text = "The Volcano erupted. Lava flowed into the harbour; volcanoes are rare here."
    pairs = analyse_with_offsets(text)
    assert [t for _, t in pairs] == analyse(text)
    for pos, term in pairs:
        word = text[pos:].split()[0].strip(".;,").lower()
        assert analyse(word) == [term]
    assert analyse_with_offsets("the and of") == []


@pytest.mark.parametrize(
    "text",
    [
        "The Volcano erupted. Lava flowed into the harbour; volcanoes are rare here. VOLCANO!",
        "snake_case words, volcano_lava and volcano2 are one token each; 2volcano too. volcano.",
        "Ünïcode café, naïve façades — café-au-lait at the Café; İstanbul volcano",  # İ lower-cases to 2 chars
        "",
        "the and of",
    ],
)
def test_analyse_with_offsets_on_odd_texts_from_a_cold_and_a_warm_stem_cache(text: str) -> None:
    from semsearch.index import analysis

    analysis._local.stems = {}  # cold
    pairs = analysis.analyse_with_offsets(text)
    assert [t for _, t in pairs] == analyse(text)
    for pos, term in pairs:
        assert analyse(text[pos:])[0] == term  # the offset is where the term's word starts
    assert analysis.analyse_with_offsets(text) == pairs  # warm


def test_analyse_with_offsets_on_the_sample_corpus() -> None:
    from semsearch.index.analysis import analyse_with_offsets

    from ..conftest import SAMPLE_CORPUS

    for path in sorted(SAMPLE_CORPUS.rglob("*.txt")):
        text = path.read_text(encoding="utf-8")
        assert [t for _, t in analyse_with_offsets(text)] == analyse(text)
