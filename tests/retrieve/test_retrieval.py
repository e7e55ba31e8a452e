"""Modes, filters, grouping, near-duplicates and highlights on a small corpus with the fake embedder."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from semsearch import Article, ChunkSettings, Index, Searcher, Settings, build_index
from semsearch.errors import InvalidRequestError
from semsearch.retrieve import fusion
from semsearch.retrieve.filters import SearchFilters

from ..conftest import FakeEmbedder

MODES = ["dense", "keyword", "hybrid"]


def _articles() -> list[Article]:
    out = []
    sources = ["Wire A", "Wire B", "Wire C"]
    for i in range(30):
        out.append(
            Article(
                id=f"a{i:02d}",
                title=f"Council budget story {i}",
                # Two words of its own per article, so no two articles are near-duplicates of each other.
                text=f"The council discussed the budget and local roads of ward{i} in meeting {i}.\n\n"
                f"Residents asked about parking, schools and the library of precinct{i} during session {i}.",
                source=sources[i % 3],
                tags=("local",) if i % 2 == 0 else ("politics", "budget"),
                published=f"2026-{(i % 12) + 1:02d}-15",
            )
        )
    return out


@pytest.fixture
def index_dir(tmp_path: Path, fake_embedder: FakeEmbedder) -> Path:
    settings = Settings(index_dir=tmp_path / "ix")
    Index(settings.index_dir, settings, embedder=fake_embedder).upsert(_articles())
    return settings.index_dir


@pytest.fixture
def searcher(index_dir: Path, fake_embedder: FakeEmbedder):
    with Searcher.open(index_dir, Settings(), embedder=fake_embedder) as s:
        yield s


# Each filter with the condition it means, written out by hand over the articles' fields (not derived from the
# SQL the code builds). Date bounds are inclusive, and articles fall exactly on some of the bounds.
FILTERS = [
    (SearchFilters(source=("Wire B",)), lambda a: a.source == "Wire B"),
    (SearchFilters(tags=("budget",)), lambda a: "budget" in a.tags),
    (SearchFilters(source=("Wire A", "Wire C"), tags=("local",)), lambda a: a.source in ("Wire A", "Wire C") and "local" in a.tags),
    (SearchFilters(published_after="2026-06-01", published_before="2026-08-15"), lambda a: a.published[5:7] in ("06", "07", "08")),
    (SearchFilters(published_after="2026-08-15"), lambda a: a.published[5:7] in ("08", "09", "10", "11", "12")),
    (SearchFilters(published_before="2026-03-15"), lambda a: a.published[5:7] in ("01", "02", "03")),
    (SearchFilters(published_after="2026-03-16", published_before="2026-04-14"), lambda a: False),
    (SearchFilters(published_after="2026-03-15T00:00:00", published_before="2026-03-15T23:59:59"), lambda a: False),
    (SearchFilters(article_ids=("a03", "a17")), lambda a: a.id in ("a03", "a17")),
]  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("filters", "means"), FILTERS)
def test_filters_are_exact_and_return_k_when_possible(searcher: Searcher, mode, filters, means) -> None:
    articles = {a.id: a for a in _articles()}
    expected = {a.id for a in articles.values() if means(a)}
    passages = sum(len(searcher.article(a).passages) for a in expected)
    query = "council budget roads parking library"
    hits = searcher.search(query, k=6, mode=mode, filters=filters)
    assert all(means(articles[h.article_id]) for h in hits)
    assert len(hits) == min(6, passages)
    everything = searcher.search(query, k=200, mode=mode, filters=filters)
    assert {h.article_id for h in everything} == expected


@pytest.mark.parametrize("mode", MODES)
def test_a_filter_matching_few_passages_still_finds_them_all(searcher: Searcher, mode) -> None:
    # The query matches the unfiltered corpus far better elsewhere: a post-filter would come back empty.
    hits = searcher.search("council budget meeting 5", k=10, mode=mode, filters=SearchFilters(article_ids=("a29",)))
    stored = searcher.article("a29")
    assert {h.article_id for h in hits} == {"a29"} and len(hits) == len(stored.passages)


def test_datetime_filters_compare_instants_across_time_zones(tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    settings = Settings(index_dir=tmp_path / "ix")
    published = {
        "berlin-morning": "2026-03-15T10:00:00+02:00",  # 08:00 UTC
        "new-york-night": "2026-03-14T23:30:00-05:00",  # 04:30 UTC on the 15th
        "utc-noon": "2026-03-15T12:00:00Z",
        "plain-date": "2026-03-15",
        "next-day": "2026-03-16",
        "undated": None,
    }
    articles = [Article(id=i, title=f"Ferry story {i}", text=f"The ferry story {i} about harbour fares.", published=p)
                for i, p in published.items()]  # fmt: skip
    Index(settings.index_dir, settings, embedder=fake_embedder).upsert(articles)
    cases = [
        # A plain date is midnight UTC against a datetime bound.
        (SearchFilters(published_after="2026-03-15T09:00:00Z"), {"utc-noon", "next-day"}),
        (SearchFilters(published_after="2026-03-15T07:59:59+00:00", published_before="2026-03-15T08:00:00Z"),
         {"berlin-morning"}),
        (SearchFilters(published_before="2026-03-15T05:00:00+00:00"), {"new-york-night", "plain-date"}),
        (SearchFilters(published_after="2026-03-15T05:30:00+01:00", published_before="2026-03-15T11:00:00+02:00"),
         {"berlin-morning", "new-york-night"}),  # 04:30-09:00 UTC, both bounds inclusive
        (SearchFilters(published_after="2026-03-15", published_before="2026-03-15"),
         {"berlin-morning", "new-york-night", "utc-noon", "plain-date"}),  # the whole UTC day
        (SearchFilters(published_after="2026-03-16"), {"next-day"}),
        (SearchFilters(published_after="2026-03-15T10:00:00"), {"utc-noon", "next-day"}),  # no zone: UTC
    ]  # fmt: skip
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
        for filters, expected in cases:
            for mode in MODES:
                hits = searcher.search("ferry story harbour fares", k=20, mode=mode, filters=filters)
                assert {h.article_id for h in hits} == expected, (filters, mode)
        assert searcher.article("berlin-morning").article.published == "2026-03-15T08:00:00+00:00"


def test_filters_round_trip_through_their_json_form() -> None:
    filters = SearchFilters(source=("Wire A",), tags=("local", "budget"), published_after="2026-03-15",
                            published_before="2026-03-15T10:00:00+02:00", article_ids=("a01",))  # fmt: skip
    assert SearchFilters.from_dict(filters.to_dict()) == filters
    assert filters.to_dict()["published_before"] == "2026-03-15T08:00:00+00:00"


def test_filters_from_nothing_are_the_empty_filter() -> None:
    assert SearchFilters.from_dict(None) == SearchFilters.from_dict({}) == SearchFilters()
    assert SearchFilters().empty and not SearchFilters(tags=("x",)).empty
    assert not SearchFilters(published_before="2026-01-01").empty and not SearchFilters(article_ids=("a",)).empty
    assert SearchFilters.from_dict({"published_after": "2026-03-15T10:00:00+02:00"}).published_after == (
        "2026-03-15T08:00:00+00:00"
    )


def test_filter_validation() -> None:
    with pytest.raises(InvalidRequestError, match="ISO date"):
        SearchFilters(published_after="last week")
    with pytest.raises(InvalidRequestError, match="unknown filter"):
        SearchFilters.from_dict({"sources": ["x"]})
    with pytest.raises(InvalidRequestError, match="list of non-empty strings"):
        SearchFilters.from_dict({"tags": [1]})
    assert SearchFilters.from_dict({"source": "Wire A"}).source == ("Wire A",)


@pytest.mark.parametrize("mode", MODES)
def test_group_by_article_returns_each_article_once(searcher: Searcher, mode) -> None:
    groups = searcher.search_articles("council budget residents parking", k=5, per_article=2, mode=mode)
    assert len(groups) == 5
    assert len({g.article_id for g in groups}) == 5
    for g in groups:
        assert 1 <= len(g.passages) <= 2
        assert all(p.article_id == g.article_id for p in g.passages)
        assert g.score == g.passages[0].score
    assert [g.score for g in groups] == sorted((g.score for g in groups), reverse=True)


def test_keyword_mode_scores_are_bm25_and_dense_scores_are_cosine(searcher: Searcher) -> None:
    kw = searcher.search("library parking", k=3, mode="keyword")
    assert all(h.keyword_score == h.score and h.dense_score is None for h in kw)
    dense = searcher.search("library parking", k=3, mode="dense")
    assert all(h.dense_score == h.score and -1.0 <= h.score <= 1.0 for h in dense)
    hybrid = searcher.search("library parking", k=3, mode="hybrid")
    assert all(h.dense_score is not None and h.keyword_score is not None for h in hybrid)


def test_invalid_mode_is_rejected(searcher: Searcher) -> None:
    with pytest.raises(InvalidRequestError, match="mode must be one of"):
        searcher.search("x", mode="semantic")


class VocabularyFake(FakeEmbedder):
    """A 'model' that only knows common words: rare names and numbers contribute nothing to its vectors."""

    KNOWN = frozenset({"the", "reef", "coral", "divers", "project", "restoration", "scientist", "led", "by", "marine", "who",
             "leads", "work", "team", "boulders", "placed", "fragments", "survival"})  # fmt: skip

    def _vector(self, text: str):  # type: ignore[no-untyped-def]
        return super()._vector(" ".join(w for w in re.findall(r"\w+", text.lower()) if w in self.KNOWN) or "none")


def test_hybrid_finds_an_exact_rare_name_that_dense_misses(tmp_path: Path) -> None:
    embedder = VocabularyFake()
    settings = Settings(index_dir=tmp_path / "ix")
    extra = ["divers", "coral", "boulders", "fragments", "survival", "team", "work", "placed"]
    articles = [
        # Reef fillers with a realistic spread of dense scores; the best of them beat the target on dense.
        Article(id=f"reef{i}", title="Reef", text="Reef " + " ".join(extra[: i % 8 + 1]) + " reef coral" * (i % 3 + 1))
        for i in range(12)
    ] + [
        Article(id="target", title="Reef",
                text="Reef coral reef restoration reef, led by marine scientist Amara Okonkwo-Radavic."),
    ]  # fmt: skip
    Index(settings.index_dir, settings, embedder=embedder).upsert(articles)
    with Searcher.open(settings.index_dir, settings, embedder=embedder) as s:
        query = "Okonkwo-Radavic reef"
        dense = [h.article_id for h in s.search(query, k=3, mode="dense")]
        hybrid = [h.article_id for h in s.search(query, k=3, mode="hybrid")]
    assert dense[0] != "target"  # the model does not know the name: another reef story ranks first
    assert hybrid[0] == "target"  # the exact rare name, found by the keyword side, wins in hybrid


def test_weak_keyword_evidence_picks_the_article_and_dense_the_passage(
    tmp_path: Path, fake_embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paraphrased question shares one word with its article (a place name in the lede) and only function words
    with the paragraph that answers it. Keyword matching then knows the article but not the passage."""
    settings = Settings(index_dir=tmp_path / "ix", chunking=ChunkSettings(max_tokens=32))  # a passage per paragraph
    harbour = Article(id="harbour", title="Harbour works", text=(
        "Marrow harbour works will begin on Monday and it will be a big job, the port authority said.\n\n"
        "Once it is over, the pontoons will be lifted out and the cafe will be at the end of the quay.\n\n"
        "Divers inspected the seabed last year."))  # fmt: skip
    others = [Article(id=f"o{i}", title=f"Other story {i}",
                      text=f"The library budget rose in year {i}.\n\nSchool buses run late on route {i}.")
              for i in range(20)]  # fmt: skip
    Index(settings.index_dir, settings, embedder=fake_embedder).upsert([harbour, *others])
    query = "what happens at marrow"
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        keyword = s.version.keyword
        coverage = keyword.coverage(query, float(keyword.top(query, 1)[0][0]))
        assert fusion.KEYWORD_COVERAGE_MIN < coverage < fusion.COVERAGE_FLOOR  # weak, but counted
        assert [h.paragraph for h in s.search(query, k=1, mode="keyword")] == [1]  # the lede
        assert [h.paragraph for h in s.search(query, k=1, mode="dense")] == [2]  # the answer
        hybrid = s.search(query, k=3, mode="hybrid")
        assert [(h.article_id, h.paragraph) for h in hybrid[:2]] == [("harbour", 2), ("harbour", 1)]
        # Keyword evidence passage by passage would put the lede first.
        monkeypatch.setattr(fusion, "own_share", lambda coverage: 1.0)
        assert s.search(query, k=1, mode="hybrid")[0].paragraph == 1


def test_article_keys_group_the_passages_of_each_article_across_segments(
    tmp_path: Path, fake_embedder: FakeEmbedder
) -> None:
    settings = Settings(index_dir=tmp_path / "ix", chunking=ChunkSettings(max_tokens=30), auto_merge=False)
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    index.upsert(_articles()[:3])
    index.upsert(_articles()[3:5])  # a second segment
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        assert len(s.version.segments) == 2
        ids = np.array(sorted(s.version.passages(list(range(100)))), dtype=np.int64)
        records = s.version.passages(ids.tolist())
        keys = s.version.keyword.articles_for(ids)
    article_of = np.array([records[int(p)].article_id for p in ids])
    assert len(set(article_of)) == 5 and len(article_of) == 10  # 2 passages each
    assert (np.equal.outer(keys, keys) == np.equal.outer(article_of, article_of)).all()


def test_near_duplicate_passages_do_not_flood_the_results(tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    settings = Settings(index_dir=tmp_path / "ix")
    text = "The harbour ferry will run three extra night sailings from October, the operator said."
    syndicated = [Article(id=f"copy{i}", title="Ferry adds sailings", text=text) for i in range(5)]
    other = [Article(id=f"other{i}", title="Ferry news", text=f"Ferry fares and night timetable update number {i}.")
             for i in range(5)]  # fmt: skip
    Index(settings.index_dir, settings, embedder=fake_embedder).upsert(syndicated + other)
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        hits = s.search("ferry night sailings October", k=5, mode="dense")
    copies = [h for h in hits if h.article_id.startswith("copy")]
    assert len(copies) == 1 and len(hits) == 5


def test_highlight_offsets_point_at_the_matching_sentence(tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    settings = Settings(index_dir=tmp_path / "ix")
    body = ("The bridge opened on Saturday after four years of work. It was designed by architect Saoirse Delaney. "
            "Traffic was light on the first morning.")  # fmt: skip
    Index(settings.index_dir, settings, embedder=fake_embedder).upsert([Article(id="b", title="Bridge", text=body)])
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        (hit,) = s.search("which architect designed it", k=1)
        (plain,) = s.search("which architect designed it", k=1, highlights=False)
    (h,) = hit.highlights
    assert hit.text[h.start : h.end] == h.text == "It was designed by architect Saoirse Delaney."
    assert h.score > 0 and plain.highlights == ()


def test_build_index_keeps_keyword_index_in_sync(corpus_dir: Path, settings: Settings, fake_embedder) -> None:
    build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    (corpus_dir / "volcano.txt").write_text("Volcano\n\nThe Krakatoa volcano erupted at dawn.", encoding="utf-8")
    build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        assert s.search("Krakatoa", k=1, mode="keyword")[0].article_id == "volcano.txt"
        (corpus_dir / "volcano.txt").unlink()
    build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        assert s.search("Krakatoa", k=1, mode="keyword") == []


def test_searching_leaves_no_objects_for_the_garbage_collector(built_index, settings, fake_embedder) -> None:
    """A server worker freezes its heap after warming up; whatever searches keep alive afterwards is scanned by
    every full collection (PyStemmer's own cache kept two tracked lists per distinct word: 50-100 ms stalls)."""
    import gc

    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
        searcher.warm()
        words = [f"{w}{i}" for i in range(300) for w in ("harbour", "erupting", "budgets")]
        gc.collect()
        gc.freeze()
        try:
            for i in range(0, len(words), 3):
                searcher.search(" ".join(words[i : i + 3]) + " coral reef bridge", k=5)
            gc.collect()
            left = len(gc.get_objects())
        finally:
            gc.unfreeze()
    assert left < 300, left
