from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from semsearch import Article, Index, Searcher, Settings, reindex, rollback
from semsearch.cli import main
from semsearch.config import ChunkSettings
from semsearch.errors import IndexLockedError, IndexMismatchError, InvalidRequestError
from semsearch.index.layout import IndexLayout

from ..conftest import FakeEmbedder


def search_ids(settings: Settings, embedder, query: str, k: int = 10) -> list[str]:
    with Searcher.open(settings.index_dir, settings, embedder=embedder) as searcher:
        return [h.article_id for h in searcher.search(query, k=k)]


def test_unchanged_corpus_embeds_nothing_and_publishes_nothing(built_index, corpus_dir, settings, fake_embedder):
    before = fake_embedder.documents_embedded
    report = reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    assert report.passages_embedded == 0 and report.passages_reused == 0
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 0, 0, 3)
    assert not report.published and report.version_id == built_index.version_id
    assert fake_embedder.documents_embedded == before


def test_one_edited_paragraph_embeds_exactly_that_passage(built_index, corpus_dir, settings, fake_embedder):
    path = corpus_dir / "bank.txt"
    path.write_text(path.read_text().replace("analysts said.", "analysts said on Tuesday."), encoding="utf-8")
    before = fake_embedder.documents_embedded
    report = reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 1, 0, 2)
    assert report.passages_embedded == 1 and report.passages_reused == 2
    assert fake_embedder.documents_embedded - before == 1
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
        hit = searcher.search("analysts said on Tuesday mortgage lenders", k=1)[0]
    assert hit.text.endswith("analysts said on Tuesday.")


def test_title_change_reembeds_every_passage_of_the_article(built_index, corpus_dir, settings, fake_embedder):
    path = corpus_dir / "reef.txt"
    path.write_text(path.read_text().replace("Reef restoration reaches milestone", "Reef project hits goal", 1))
    report = reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    assert report.updated == 1 and report.passages_embedded == 3 and report.passages_reused == 0


def test_deleted_file_disappears_from_search(built_index, corpus_dir, settings, fake_embedder):
    assert "reef.txt" in search_ids(settings, fake_embedder, "limestone boulders coral reef")
    (corpus_dir / "reef.txt").unlink()
    report = reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    assert report.removed == 1 and report.articles == 2
    assert "reef.txt" not in search_ids(settings, fake_embedder, "limestone boulders coral reef", k=50)


def test_dry_run_writes_nothing(built_index, corpus_dir, settings, fake_embedder):
    (corpus_dir / "new.txt").write_text("New\n\nA new article about glaciers.", encoding="utf-8")
    (corpus_dir / "bank.txt").unlink()
    report = reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder, dry_run=True)
    assert report.dry_run and not report.published
    assert (report.added, report.removed, report.articles, report.passages_embedded) == (1, 1, 3, 1)
    assert IndexLayout(settings.index_dir).current_version() == built_index.version_id


def test_rollback_returns_to_the_previous_version(built_index, corpus_dir, settings, fake_embedder):
    (corpus_dir / "reef.txt").unlink()
    second = reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    app_searcher = Searcher.open(settings.index_dir, settings.with_(reload_check_seconds=0), embedder=fake_embedder)
    assert app_searcher.manifest.articles == 2
    assert rollback(settings.index_dir) == built_index.version_id
    assert app_searcher.maybe_reload() and app_searcher.manifest.articles == 3  # a running reader follows
    assert "reef.txt" in search_ids(settings, fake_embedder, "limestone boulders coral reef")
    # Rolling back again returns to the version published before the current one in the history.
    assert rollback(settings.index_dir) == second.version_id
    app_searcher.close()


def test_rollback_walks_the_publish_history(built_index, corpus_dir, settings, fake_embedder):
    """The rollback target is the version published just before the current one's last publish, skipping
    versions no longer on disk, and a current version missing from the history (a crash between the pointer and
    the history) still has the last recorded one as its target."""
    v1 = built_index.version_id
    versions = [v1]
    for name in ("glacier", "volcano", "tsunami"):
        (corpus_dir / f"{name}.txt").write_text(f"{name.title()}\n\nAn article about a {name}.", encoding="utf-8")
        versions.append(reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder).version_id)
    _, v2, v3, v4 = versions
    layout = IndexLayout(settings.index_dir)
    assert layout.previous_version() == v3
    assert rollback(settings.index_dir) == v3  # history: v1 v2 v3 v4 v3
    assert layout.current_version() == v3 and layout.previous_version() == v4
    assert rollback(settings.index_dir) == v4  # undoes the rollback
    shutil.rmtree(layout.version_path(v3))  # as if pruned
    assert layout.previous_version() == v2
    # A writer killed between replacing CURRENT and appending to HISTORY: the current version is not in it.
    layout.current_file.write_text("20991231T000000000000Z-ffffff\n")
    assert layout.previous_version() == v4
    layout.current_file.write_text(v1 + "\n")  # the first version has nothing before it
    assert layout.previous_version() is None


def test_rollback_without_history_is_a_clear_error(built_index, settings):
    with pytest.raises(InvalidRequestError, match="no earlier index version"):
        rollback(settings.index_dir)


def test_cli_rollback_and_reindex(built_index, corpus_dir, settings, use_fake_embedder, monkeypatch):
    monkeypatch.setenv("SEMSEARCH_INDEX_DIR", str(settings.index_dir))
    monkeypatch.setenv("SEMSEARCH_CHUNK_MIN_CHARS", str(settings.chunking.min_chars))  # as the index was built
    runner = CliRunner()
    (corpus_dir / "new.txt").write_text("New\n\nA new article about glaciers.", encoding="utf-8")
    result = runner.invoke(main, ["reindex", str(corpus_dir), "--dry-run"])
    assert result.exit_code == 0 and "dry run" in result.output and "added 1" in result.output
    result = runner.invoke(main, ["reindex", str(corpus_dir)])
    assert result.exit_code == 0 and "passages embedded 1, reused 0" in result.output
    result = runner.invoke(main, ["rollback"])
    assert result.exit_code == 0 and built_index.version_id in result.output


def test_model_change_forces_a_full_rebuild(built_index, corpus_dir, settings):
    other = FakeEmbedder(model_id="test/other-model")
    report = reindex([corpus_dir], settings.index_dir, settings, embedder=other)
    assert report.full_rebuild and "model changed" in (report.full_rebuild_reason or "")
    assert report.passages_embedded == built_index.passages and report.passages_reused == 0


def test_chunking_change_forces_a_full_rebuild_but_reuses_identical_passages(
    built_index, corpus_dir, settings, fake_embedder
):
    changed = settings.with_(chunking=ChunkSettings(min_chars=20, title_context=False))
    report = reindex([corpus_dir], settings.index_dir, changed, embedder=fake_embedder)
    assert report.full_rebuild and report.full_rebuild_reason == "the chunking settings changed"
    assert report.passages_embedded == built_index.passages  # no title in the embedded text now: all new


def test_full_rebuild_reuses_vectors_of_the_same_model(built_index, corpus_dir, settings, fake_embedder):
    report = reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder, full=True)
    assert report.published and report.full_rebuild
    assert report.passages_embedded == 0 and report.passages_reused == built_index.passages


def test_old_versions_are_pruned(built_index, corpus_dir, settings, fake_embedder):
    settings = settings.with_(keep_versions=2)
    for i in range(4):
        (corpus_dir / f"n{i}.txt").write_text(f"N{i}\n\nArticle {i}.", encoding="utf-8")
        last = reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    layout = IndexLayout(settings.index_dir)
    assert len(layout.all_version_dirs()) == 2 and layout.current_version() == last.version_id


def test_index_upsert_and_delete(built_index, settings, fake_embedder):
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    report = index.upsert(
        [
            Article(id="live-1", title="Glacier retreats", text="The glacier retreated 40 metres this year."),
            Article(id="bank.txt", title="Central bank cuts interest rates", text="A rewritten bank story."),
        ]
    )
    assert (report.added, report.updated, report.removed, report.articles) == (1, 1, 0, 4)
    assert search_ids(settings, fake_embedder, "glacier retreated metres", k=1) == ["live-1"]
    report = index.delete(["live-1", "no-such-id"])
    assert report.removed == 1 and report.articles == 3
    assert "live-1" not in search_ids(settings, fake_embedder, "glacier retreated metres", k=20)
    assert index.current_version == report.version_id


@pytest.mark.parametrize(
    ("articles", "message"),
    [
        ([{"id": "x", "title": "t", "text": "x"}], "takes Article records"),
        ([Article(id="x", title="t", text="  ")], "has no text"),
        ([Article(id="x", title="t", text="a"), Article(id="x", title="u", text="b")], "duplicate article ids"),
    ],
)
def test_upsert_rejects_bad_input_without_touching_the_index(built_index, settings, fake_embedder, articles, message):
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    with pytest.raises(InvalidRequestError, match=message):
        index.upsert(articles)
    assert index.current_version == built_index.version_id


def test_lock_held_means_a_clear_error(built_index, corpus_dir, settings, fake_embedder):
    with IndexLayout(settings.index_dir).writer_lock(), pytest.raises(IndexLockedError, match="being written by pid"):
        reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)


def test_unchanged_reindex_does_not_load_the_model(built_index, corpus_dir, settings, monkeypatch):
    import semsearch.index.build

    def no_model(settings: Settings):
        raise AssertionError("the model must not be loaded when nothing changed")

    monkeypatch.setattr(semsearch.index.build, "load_embedder", no_model)
    assert reindex([corpus_dir], settings.index_dir, settings).unchanged == 3


def test_reindex_of_an_empty_directory_removes_everything(built_index, tmp_path: Path, settings, fake_embedder):
    empty = tmp_path / "empty"
    empty.mkdir()
    report = reindex([empty], settings.index_dir, settings, embedder=fake_embedder)
    assert report.removed == 3 and report.articles == 0
    assert search_ids(settings, fake_embedder, "bridge") == []


def test_a_version_built_with_another_model_is_never_switched_to(built_index, corpus_dir, settings, fake_embedder):
    searcher = Searcher.open(settings.index_dir, settings, embedder=fake_embedder)
    before = searcher.version.version_id
    other = FakeEmbedder(model_id="test/other-model")
    reindex([corpus_dir], settings.index_dir, settings.with_(model="test/other-model"), embedder=other, full=True)
    with pytest.raises(IndexMismatchError, match="other-model"):
        searcher.reload()
    assert searcher.version.version_id == before and searcher.search("bridge architect", k=1)
    searcher.close()


def test_reload_checks_are_rate_limited(built_index, corpus_dir, settings, fake_embedder):
    searcher = Searcher.open(settings.index_dir, settings.with_(reload_check_seconds=3600), embedder=fake_embedder)
    (corpus_dir / "volcano.txt").write_text("Volcano erupts\n\nThe volcano erupted.", encoding="utf-8")
    reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    assert searcher.maybe_reload() is False and searcher.manifest.articles == 3  # not checked for an hour
    assert searcher.reload() is True and searcher.manifest.articles == 4  # an explicit reload always checks
    searcher.close()
