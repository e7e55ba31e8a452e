"""The segmented format: updates write what changed, versions share segments, deletions are tombstones that every
search honours, keyword statistics are the live passages', and merges keep results while purging deletions."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from semsearch import Article, Index, Searcher, Settings
from semsearch.errors import IndexCorruptError
from semsearch.index import merge as merge_module
from semsearch.index.layout import IndexLayout
from semsearch.index.merge import merge, plan_merge
from semsearch.index.reader import IndexVersion
from semsearch.retrieve.filters import SearchFilters

from ..conftest import FakeEmbedder

WORDS = [
    "harbour",
    "ferry",
    "council",
    "budget",
    "volcano",
    "lava",
    "library",
    "school",
    "storm",
    "bridge",
    "reef",
    "coral",
    "glacier",
    "museum",
    "railway",
    "tram",
    "market",
    "farmer",
    "drought",
    "flood",
    "election",
    "court",
    "hospital",
    "nurse",
    "wildfire",
    "orchestra",
    "stadium",
    "festival",
]


def _article(i: int, version: int = 0) -> Article:
    rng = np.random.default_rng(i * 1000 + version)
    paragraphs = [
        " ".join(rng.choice(WORDS, size=12).tolist()) + f" story{i} edition{version} part{p}." for p in range(3)
    ]
    return Article(
        id=f"a{i}",
        title=f"Story {i} {WORDS[i % len(WORDS)]}",
        text="\n\n".join(paragraphs),
        source="wire" if i % 2 else "desk",
        tags=("odd",) if i % 2 else ("even",),
        published=f"2026-01-{1 + i % 28:02d}",
    )


def _settings(tmp_path: Path, name: str = "ix", **changes: object) -> Settings:
    from semsearch.config import ChunkSettings

    base = Settings(index_dir=tmp_path / name, chunking=ChunkSettings(max_tokens=40), auto_merge=False)
    return base.with_(**changes)


def _results(searcher: Searcher, query: str, mode: str, k: int = 20, filters: SearchFilters | None = None) -> list:
    return [
        (h.passage_id, h.article_id, h.paragraph, round(h.score, 5), h.dense_score, h.keyword_score)
        for h in searcher.search(query, k=k, mode=mode, filters=filters, highlights=False)
    ]


QUERIES = ["harbour ferry storm", "volcano lava school", "council budget election court", "story3 part1", "reef"]


def test_an_upsert_writes_one_small_segment_and_shares_the_rest(tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    settings = _settings(tmp_path)
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    index.upsert([_article(i) for i in range(60)])
    layout = IndexLayout(settings.index_dir)
    first = IndexVersion(layout.current_path())
    (big,) = first.manifest.segments
    big_files = {p: p.stat().st_mtime_ns for p in layout.segment_path(big).rglob("*")}
    before = sum(layout.segment_bytes().values())
    report = index.upsert([_article(3, version=1)])  # an update of one article
    assert (report.added, report.updated) == (0, 1)
    version = IndexVersion(layout.current_path())
    assert version.manifest.segments[0] == big and len(version.manifest.segments) == 2
    assert {p: p.stat().st_mtime_ns for p in layout.segment_path(big).rglob("*")} == big_files  # untouched
    written = sum(layout.segment_bytes().values()) - before
    new_segment = version.segments[1]
    assert new_segment.rows == len(version.article("a3").passages)  # only the changed article's passages
    assert 0 < written < before / 4  # (mostly SQLite's fixed pages at this size; bench_scale measures 1M)
    old_ids = [p.id for p in first.article("a3").passages]
    assert version.manifest.deleted == len(old_ids) and version.deleted_ids.tolist() == sorted(old_ids)
    assert version.manifest.passages == first.manifest.passages  # same paragraph count
    stored = version.article("a3")
    assert stored is not None and "edition1" in stored.article.text
    assert min(p.id for p in stored.passages) >= first.manifest.next_passage_id  # ids are never reused
    first.close()
    version.close()


def test_deleted_and_replaced_passages_never_come_back_in_any_mode(tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    settings = _settings(tmp_path)
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    index.upsert([_article(i) for i in range(30)])
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        old3 = {p.id for p in s.article("a3").passages}
        old4 = {p.id for p in s.article("a4").passages}
    index.upsert([_article(3, version=1)])
    report = index.delete(["a4", "missing"])
    assert report.removed == 1
    layout = IndexLayout(settings.index_dir)
    assert len(IndexVersion(layout.current_path()).manifest.segments) == 2  # a delete writes no segment
    assert list(layout.staging_dir.iterdir()) == []  # nor leaves one half-made
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        gone = old3 | old4
        for query in ["story3", "story4", "edition0 story3", *QUERIES]:
            for mode in ("dense", "keyword", "hybrid"):
                hits = s.search(query, k=200, mode=mode)
                assert not gone & {h.passage_id for h in hits}, (query, mode)
                assert "a4" not in {h.article_id for h in hits}
        for filters in (SearchFilters(tags=("even",)), SearchFilters(source=("wire",))):
            hits = s.search("story3 story4 edition0", k=200, mode="hybrid", filters=filters)
            assert not gone & {h.passage_id for h in hits}
        assert s.search("story3 edition1", k=1, mode="keyword")[0].article_id == "a3"
        assert s.version.article("a4") is None
        assert s.manifest.articles == 29
        assert len(s.search("anything", k=500, mode="dense")) == s.manifest.passages


def test_updates_search_exactly_as_a_fresh_build_of_the_same_articles(
    tmp_path: Path, fake_embedder: FakeEmbedder
) -> None:
    """Keyword scores use the statistics of the live passages (deleted ones excluded, IDF and length taken across
    segments), so a version made of many segments and tombstones scores exactly as one fresh segment would."""
    settings = _settings(tmp_path)
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    index.upsert([_article(i) for i in range(40)])
    for i in range(0, 40, 7):
        index.upsert([_article(i, version=1)])
    index.delete(["a5", "a11", "a12"])
    index.upsert([_article(i) for i in range(40, 46)])
    final = {a.id: a for a in [_article(i) for i in range(46)]}
    for i in range(0, 40, 7):
        final[f"a{i}"] = _article(i, version=1)
    for gone in ("a5", "a11", "a12"):
        del final[gone]
    fresh = _settings(tmp_path, "fresh")
    Index(fresh.index_dir, fresh, embedder=fake_embedder).upsert(list(final.values()))
    with (
        Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as updated,
        Searcher.open(fresh.index_dir, fresh, embedder=fake_embedder) as built,
    ):
        assert len(updated.version.segments) > 5 and len(built.version.segments) == 1
        assert updated.manifest.passages == built.manifest.passages
        k = updated.manifest.passages  # everything: equal scores may rank in another order (passage ids differ)
        for query in QUERIES:
            for mode in ("keyword", "dense", "hybrid"):
                a = sorted((-sc, aid, par, d, kw) for _, aid, par, sc, d, kw in _results(updated, query, mode, k))
                b = sorted((-sc, aid, par, d, kw) for _, aid, par, sc, d, kw in _results(built, query, mode, k))
                assert a == b, (query, mode)


def test_optimize_merges_into_one_segment_purges_deletions_and_keeps_every_result(
    tmp_path: Path, fake_embedder: FakeEmbedder
) -> None:
    settings = _settings(tmp_path)
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    index.upsert([_article(i) for i in range(20)])
    for i in range(5):
        index.upsert([_article(i, version=1), _article(20 + i)])
    index.delete(["a7"])
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        before = {(q, m): _results(s, q, m) for q in QUERIES for m in ("dense", "keyword", "hybrid")}
        deleted_before = s.manifest.deleted
        segments_before = len(s.version.segments)
    assert deleted_before > 0 and segments_before == 6
    report = index.optimize()
    assert report is not None and report.version_id is not None
    assert report.purged == deleted_before and len(report.merged) == segments_before
    assert report.rows == report.to_dict()["rows"] > 0
    layout = IndexLayout(settings.index_dir)
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        assert len(s.version.segments) == 1 and s.manifest.deleted == 0
        after = {(q, m): _results(s, q, m) for q in QUERIES for m in ("dense", "keyword", "hybrid")}
        segment = s.version.segments[0]
        assert np.all(np.diff(segment.ids) > 0)  # rows stay in passage id order
    assert after == before  # passage ids, scores and order unchanged
    assert index.optimize() is None  # nothing left to do
    # The merged version holds the same content: rollback goes to the version before the delete.
    history = layout.history()
    assert layout.previous_version() == history[-3]


def test_rollback_after_a_merge_skips_the_same_content(tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    settings = _settings(tmp_path)
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    v1 = index.upsert([_article(i) for i in range(10)]).version_id
    v2 = index.upsert([_article(10)]).version_id
    merged = index.optimize()
    assert merged is not None and merged.version_id not in (v1, v2)
    assert index.rollback() == v1
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        assert s.manifest.articles == 10


def test_tiered_merging_bounds_the_segment_count(tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    settings = _settings(tmp_path, auto_merge=True, merge_factor=3)
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    index.upsert([_article(i) for i in range(30)])
    merges = 0
    for i in range(30, 57):
        merges += len(index.upsert([_article(i)]).merges)
    version = IndexVersion(IndexLayout(settings.index_dir).current_path())
    rows = sorted(s.rows for s in version.segments)
    tiers = [merge_module.tier(r, 3) for r in rows]
    assert merges > 0
    assert all(tiers.count(t) < 3 for t in set(tiers)), rows  # no tier full
    assert len(rows) <= 2 * 4  # O(log n) segments
    assert version.manifest.articles == 57
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        assert s.search("story44 part2", k=1, mode="keyword")[0].article_id == "a44"
    version.close()


def test_plan_merge_picks_a_full_tier_then_a_mostly_deleted_segment() -> None:
    assert plan_merge([("a", 5, 0), ("b", 7, 0), ("c", 500, 0)], factor=3) == []
    assert plan_merge([("a", 5, 0), ("b", 7, 0), ("c", 3, 0), ("d", 500, 0)], factor=3) == ["a", "b", "c"]
    # Tiers count live rows: 40 rows with 34 deleted is a 6-row segment (tier 1 with factor 3: 3 to 8 rows).
    assert plan_merge([("a", 5, 0), ("b", 40, 34), ("c", 4, 0)], factor=3) == ["a", "b", "c"]
    assert plan_merge([("a", 5, 0), ("b", 40, 34)], factor=3) == ["b"]  # no full tier: the mostly deleted one
    assert plan_merge([("a", 100, 31), ("b", 100, 29)], factor=10) == ["a"]
    assert plan_merge([("a", 100, 30)], factor=10) == []


def test_a_merge_carries_over_deletions_made_while_it_ran(
    tmp_path: Path, fake_embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    index.upsert([_article(i) for i in range(10)])
    index.upsert([_article(10)])
    layout = IndexLayout(settings.index_dir)
    original = merge_module.merge_segments
    during: list[str | None] = []

    def merge_while_a_writer_works(*args, **kwargs):  # type: ignore[no-untyped-def]
        info = original(*args, **kwargs)
        # The merge holds no writer lock while it works: a writer deletes an article and updates another.
        during.append(index.delete(["a2"]).version_id)
        during.append(index.upsert([_article(4, version=1)]).version_id)
        return info

    monkeypatch.setattr(merge_module, "merge_segments", merge_while_a_writer_works)
    report = merge(settings.index_dir, None, settings)
    assert report.version_id is not None and all(during)
    version = IndexVersion(layout.current_path())
    assert version.manifest.version_id == report.version_id
    assert len(version.segments) == 2  # the merged one, and the update's
    assert version.article("a2") is None
    stored = version.article("a4")
    assert stored is not None and "edition1" in stored.article.text
    assert version.manifest.articles == 11 - 1
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        hits = s.search("story2 story4 edition0", k=100, mode="keyword")
        assert "a2" not in {h.article_id for h in hits}
        assert all("edition1" in h.text for h in hits if h.article_id == "a4")
    version.close()


def test_a_merge_is_abandoned_when_a_full_rebuild_replaced_its_segments(
    tmp_path: Path, fake_embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch, corpus_dir: Path
) -> None:
    from semsearch import build_index

    settings = _settings(tmp_path)
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    index.upsert([_article(i) for i in range(5)])
    index.upsert([_article(5)])
    original = merge_module.merge_segments

    def rebuild_meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        info = original(*args, **kwargs)
        build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
        return info

    monkeypatch.setattr(merge_module, "merge_segments", rebuild_meanwhile)
    layout = IndexLayout(settings.index_dir)
    report = merge(settings.index_dir, None, settings)
    assert report.version_id is None and "changed" in (report.reason or "")
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        assert s.manifest.articles == 3  # the rebuild's corpus, not the merge
    named = layout.referenced_segments()
    assert {p.name for p in layout.segments_dir.iterdir()} <= named  # the merged segment was not left behind
    assert not [p for p in layout.staging_dir.iterdir()] if layout.staging_dir.exists() else True


def test_old_segments_go_when_no_kept_version_names_them(tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    settings = _settings(tmp_path, keep_versions=2)
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    index.upsert([_article(i) for i in range(10)])
    for i in range(4):
        index.upsert([_article(i, version=1)])
    layout = IndexLayout(settings.index_dir)
    index.optimize()
    # Kept: the optimized version and the content before it (which it merged) plus the one before that.
    named = layout.referenced_segments()
    on_disk = {p.name for p in layout.segments_dir.iterdir()}
    assert on_disk == named
    for version in layout.all_version_dirs():
        IndexVersion(layout.version_path(version)).close()  # every kept version opens: its segments are there
    index.upsert([_article(20)])
    index.upsert([_article(21)])
    # Three more contents later, the pre-merge segments are no longer named by any kept version.
    assert {p.name for p in layout.segments_dir.iterdir()} == layout.referenced_segments()
    assert len(list(layout.segments_dir.iterdir())) == 3  # the merged one and the two upserts'


def test_a_running_merge_keeps_its_staging_and_its_segments(tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    settings = _settings(tmp_path, keep_versions=1)
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    index.upsert([_article(i) for i in range(5)])
    layout = IndexLayout(settings.index_dir)
    pinned = IndexVersion(layout.current_path()).manifest.segments
    with layout.staging_claim("merge-test", pins=pinned) as staging:
        staging.mkdir()
        (staging / "half-written").write_text("x")
        index.upsert([_article(i, version=1) for i in range(5)])  # replaces every article: old segment unnamed
        assert staging.is_dir() and (staging / "half-written").exists()  # not cleaned by the writer
        assert all(layout.segment_path(s).is_dir() for s in pinned)  # pinned, so not pruned
    assert not staging.exists()
    # A merge that died (its lock no longer held) is cleaned by the next writer, with its pins.
    (layout.staging_dir / "merge-dead").mkdir()
    (layout.staging_dir / "merge-dead.lock").write_text("")
    (layout.staging_dir / "merge-dead.pins").write_text("\n".join(pinned))
    index.upsert([_article(9)])
    assert sorted(p.name for p in layout.staging_dir.iterdir()) == []
    assert not any(layout.segment_path(s).exists() for s in pinned)


def test_ann_segments_in_an_index_filter_exactly_and_report_recall(tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    settings = _settings(tmp_path, ann_min_rows=300)
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    index.upsert([_article(i) for i in range(200)])  # 600 passages: one IVF segment
    index.upsert([_article(200)])  # and a small flat one
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        stats = s.version.stats()
        kinds = [seg["vector_index"] for seg in stats["segments"]]
        assert kinds == ["ivf-pq4fs", "flat"]
        assert stats["segments"][0]["recall_at_10"] >= 0.95 and stats["dense_recall_at_10"] >= 0.95
        # A filter keeping 4 articles (12 passages): k results whenever k match, none outside the filter.
        filters = SearchFilters(published_after="2026-01-05", published_before="2026-01-05")
        expected = {f"a{i}" for i in range(201) if 1 + i % 28 == 5}
        for mode in ("dense", "hybrid", "keyword"):
            hits = s.search("harbour ferry", k=10, mode=mode, filters=filters)
            assert {h.article_id for h in hits} <= expected
            if mode != "keyword":
                assert len(hits) == 10
        exact = s.version.search_vectors(fake_embedder.embed_queries(["harbour ferry storm"]), 10)
        everything = (
            np.concatenate([seg.vectors.vectors(np.arange(seg.rows)) for seg in s.version.segments])
            @ fake_embedder.embed_queries(["harbour ferry storm"])[0]
        )
        best = np.sort(everything)[::-1][:10]
        assert (
            np.allclose(np.sort(exact[0][0])[::-1], best, atol=1e-5)
            or len(set(np.round(exact[0][0], 5)) & set(np.round(best, 5))) >= 9
        )


def test_format_1_indexes_fail_with_the_upgrade_command_and_upgrade_keeps_every_vector(
    tmp_path: Path, fake_embedder: FakeEmbedder
) -> None:
    from semsearch.index.upgrade import upgrade

    from ..conftest import ROOT

    source = ROOT / "tests" / "data" / "format1-index"
    index_dir = tmp_path / "old"
    shutil.copytree(source, index_dir)
    settings = Settings(index_dir=index_dir)
    with pytest.raises(IndexCorruptError, match=f"semsearch upgrade --index-dir {index_dir}"):
        Searcher.open(index_dir, settings, embedder=fake_embedder)
    report = upgrade(index_dir)
    assert report.from_format == 1 and report.removed_versions
    with Searcher.open(index_dir, settings, embedder=fake_embedder) as s:
        assert s.manifest.format_version == 2 and s.manifest.articles == report.articles > 0
        hits = s.search("who designed the bridge architect", k=3)
        assert hits[0].article_id == "bridge.txt"
        old_vectors = json.loads((source / "vectors.json").read_text())
        ids = [int(i) for i in old_vectors]
        np.testing.assert_allclose(s.version.vectors_for(ids), np.array(list(old_vectors.values())), atol=1e-6)
    # And the next update is incremental (nothing re-embedded for unchanged articles).
    report = Index(index_dir, settings, embedder=fake_embedder).upsert([_article(1)])
    assert not report.full_rebuild and report.passages_reused == 0 and report.articles == 4


def test_concurrent_upserts_from_threads_all_land(tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    settings = _settings(tmp_path, auto_merge=True, merge_factor=4)
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    index.upsert([_article(i) for i in range(5)])
    errors: list[BaseException] = []

    def work(start: int) -> None:
        try:
            for i in range(start, start + 6):
                index.upsert([_article(i)])
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(100 + 10 * t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        assert s.manifest.articles == 5 + 18
        for t in range(3):
            for i in range(100 + 10 * t, 106 + 10 * t):
                assert s.search(f"story{i} part0", k=1, mode="keyword")[0].article_id == f"a{i}"
    assert os.listdir(IndexLayout(settings.index_dir).staging_dir) == []


def test_a_filter_that_only_a_small_segment_meets_still_returns_k_rows_of_padding(
    tmp_path: Path, fake_embedder: FakeEmbedder
) -> None:
    settings = _settings(tmp_path)
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    index.upsert([_article(i) for i in range(20)])
    index.upsert([_article(100)])  # a second, 3-row segment
    version = IndexVersion(IndexLayout(settings.index_dir).current_path())
    small = version.segments[1]
    query = fake_embedder.embed_queries(["story100"])
    scores, ids = version.search_vectors(query, 10, allowed_ids=small.ids)
    assert ids.shape == scores.shape == (1, 10)  # k columns, padded
    assert sorted(ids[0][ids[0] >= 0].tolist()) == sorted(small.ids.tolist())
    assert (ids[0][small.rows :] == -1).all() and np.isneginf(scores[0][small.rows :]).all()
    version.close()
