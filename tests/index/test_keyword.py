from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from semsearch.index.analysis import analyse
from semsearch.index.keyword import KeywordIndex, build_keyword_index

TEXTS = [
    "Volcano erupts near the harbour town",
    "The harbour reopens after the storm",
    "Council approves the new library budget",
    "Library opening hours extended for exams",
]


@pytest.fixture
def keyword_index(tmp_path: Path) -> KeywordIndex:
    build_keyword_index(np.arange(10, 10 + len(TEXTS)), TEXTS, tmp_path / "kw")
    return KeywordIndex(tmp_path / "kw")


def _idf(df: int, n: int = len(TEXTS)) -> float:
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def test_term_weights_are_bm25_idf(keyword_index: KeywordIndex) -> None:
    weights = keyword_index.term_weights("volcano harbour")
    assert weights == pytest.approx({"volcano": _idf(1), "harbour": _idf(2)})


def test_coverage_is_the_best_score_over_the_querys_idf_mass(keyword_index: KeywordIndex) -> None:
    query = "volcano harbour"
    best = float(keyword_index.scores(query).max())
    expected = best / (_idf(1) + _idf(2))
    assert keyword_index.coverage(query, best) == pytest.approx(expected)
    assert 0.0 < expected < 1.0


def test_coverage_counts_unseen_terms_at_the_highest_idf(keyword_index: KeywordIndex) -> None:
    # A word no passage uses can never be matched: it lowers coverage (the paraphrase case).
    query = "volcano harbour magma"
    assert "magma" in analyse(query)
    best = float(keyword_index.scores(query).max())
    assert best == pytest.approx(float(keyword_index.scores("volcano harbour").max()))
    expected = best / (_idf(1) + _idf(2) + _idf(0))
    assert keyword_index.coverage(query, best) == pytest.approx(expected)
    assert keyword_index.coverage(query, best) < keyword_index.coverage("volcano harbour", best)


def test_coverage_is_zero_without_terms_or_matches(keyword_index: KeywordIndex) -> None:
    assert keyword_index.coverage("the of and", 1.0) == 0.0  # stopwords only
    assert keyword_index.coverage("volcano", 0.0) == 0.0


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


def test_scores_for_and_rows_for_follow_passage_ids_in_any_order(tmp_path: Path) -> None:
    ids = np.array([42, 7, 19, 3])  # not sorted: rows are in the order the ids were indexed
    build_keyword_index(ids, ["alpha volcano", "beta glacier", "gamma volcano lava", "delta"], tmp_path / "kw")
    index = KeywordIndex(tmp_path / "kw")
    scores = index.scores("volcano")
    assert list(index.rows_for(np.array([19, 42, 3]))) == [2, 0, 3]
    assert list(index.rows_for(np.array([5, 7, 1000]))) == [1]  # ids it does not hold are left out
    picked = index.scores_for(scores, np.array([3, 19, 5, 42]))
    assert picked.dtype == np.float32
    assert list(picked) == [scores[3], scores[2], 0.0, scores[0]]  # aligned with the ids; 0 for an unknown id
    assert picked[1] > 0 and picked[3] > 0 and picked[0] == 0
    assert index.scores_for(scores, np.zeros(0, dtype=np.int64)).shape == (0,)


def test_articles_are_stored_per_row_and_looked_up_by_passage_id(tmp_path: Path) -> None:
    ids = np.array([42, 7, 19, 3])
    texts = ["alpha volcano", "beta glacier", "gamma volcano lava", "delta"]
    build_keyword_index(ids, texts, tmp_path / "kw", articles=np.array([5, 6, 5, 8]))
    index = KeywordIndex(tmp_path / "kw")
    assert index.articles.tolist() == [5, 6, 5, 8]
    assert index.articles_for(np.array([19, 42, 3])).tolist() == [5, 5, 8]
    unknown = index.articles_for(np.array([19, 1000, 1001]))
    assert unknown[0] == 5 and unknown[1] < 0 and unknown[2] < 0 and unknown[1] != unknown[2]
    # Without article numbers, every passage is an article of its own.
    build_keyword_index(ids, texts, tmp_path / "plain")
    assert len(set(KeywordIndex(tmp_path / "plain").articles.tolist())) == 4
    with pytest.raises(ValueError, match="one entry per passage"):
        build_keyword_index(ids, texts, tmp_path / "bad", articles=np.array([1, 2]))


def test_article_numbers_join_passages_of_one_article_and_articles_with_one_title() -> None:
    from semsearch.index.keyword import article_numbers

    numbers = article_numbers(
        [("a", "Harbour works"), ("a", "Harbour works"), ("b", "Harbour works "), ("c", ""), ("c", " "), ("d", "")]
    ).tolist()
    # One article; an article with the same title (a corpus cut into passages before indexing); untitled
    # articles only by their id.
    assert numbers[0] == numbers[1] == numbers[2]
    assert numbers[3] == numbers[4] != numbers[5] and numbers[3] != numbers[0]


def test_a_corpus_without_a_single_term_indexes_and_matches_nothing(tmp_path: Path) -> None:
    # Every word a stopword or a single letter: bm25s has no vocabulary to index.
    build_keyword_index(np.array([3, 4]), ["a b c", "the and of"], tmp_path / "kw")
    index = KeywordIndex(tmp_path / "kw")
    assert len(index) == 2 and index.info["terms"] == 0
    scores = index.scores("the volcano")
    assert index.top(scores, 5)[1].size == 0
    assert list(index.scores_for(scores, np.array([3, 4]))) == [0.0, 0.0]
    assert index.coverage("the volcano", 0.0) == 0.0
