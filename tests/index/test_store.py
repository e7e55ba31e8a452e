from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from semsearch import Article, Index, Searcher, Settings, build_index
from semsearch.errors import IndexCorruptError, IndexMismatchError, IndexNotFoundError
from semsearch.index.integrity import seal_json
from semsearch.index.layout import IndexLayout, atomic_write_text
from semsearch.index.manifest import FORMAT_VERSION
from semsearch.index.reader import IndexVersion

from ..conftest import FakeEmbedder


def test_round_trip_articles_passages_and_vectors(built_index, settings: Settings, fake_embedder) -> None:
    layout = IndexLayout(settings.index_dir)
    version = IndexVersion(layout.current_path())
    m = version.manifest
    assert (m.format_version, m.model_id, m.dim) == (FORMAT_VERSION, fake_embedder.model_id, fake_embedder.dim)
    assert (m.articles, m.passages) == (3, built_index.passages)
    assert m.chunking["title_context"] is True and m.chunking["model_max_tokens"] == fake_embedder.max_tokens
    stored = version.article("reef.txt")
    assert stored is not None
    assert stored.article.title == "Reef restoration reaches milestone"
    for p in stored.passages:
        assert stored.article.text[p.start : p.end] == p.text
    # The stored vector of a passage is the embedding of its embedded text.
    ids = [p.id for p in stored.passages]
    texts = [f"{stored.article.title}\n{' '.join(p.text.split())}" for p in stored.passages]
    np.testing.assert_allclose(version.vectors_for(ids), fake_embedder.embed_documents(texts), atol=1e-6)
    version.close()


def test_search_finds_the_right_paragraph(built_index, settings: Settings, fake_embedder) -> None:
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
        hits = searcher.search("who designed the bridge architect", k=3)
    assert hits[0].article_id == "bridge.txt"
    assert "Saoirse Delaney" in hits[0].text
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert hits[0].title == "New bridge opens in Harlow Bay"


def test_k_larger_than_the_index_returns_everything(built_index, settings: Settings, fake_embedder) -> None:
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
        hits = searcher.search("anything", k=500)
    assert len(hits) == built_index.passages
    assert len({h.passage_id for h in hits}) == len(hits)


def test_missing_index_is_a_clear_error(tmp_path: Path, fake_embedder) -> None:
    with pytest.raises(IndexNotFoundError, match="no index at"):
        Searcher.open(tmp_path / "nothing", embedder=fake_embedder)


def test_other_model_or_dimension_fails_clearly(built_index, settings: Settings) -> None:
    with pytest.raises(IndexMismatchError, match="test/fake-bag-of-words"):
        Searcher.open(settings.index_dir, settings, embedder=FakeEmbedder(model_id="other/model"))
    with pytest.raises(IndexMismatchError, match="dimension"):
        Searcher.open(settings.index_dir, settings, embedder=FakeEmbedder(dim=128))


def test_named_model_must_match_the_index(built_index, settings: Settings, use_fake_embedder) -> None:
    with pytest.raises(IndexMismatchError, match="not 'some/other-model'"):
        Searcher.open(settings.index_dir, settings.with_(model="some/other-model"))
    # No model named: the index's own model is used.
    with Searcher.open(settings.index_dir, settings) as searcher:
        assert searcher.embedder is use_fake_embedder


def test_unknown_format_version_is_refused(built_index, settings: Settings, fake_embedder) -> None:
    path = IndexLayout(settings.index_dir).current_path()
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(seal_json(manifest)))  # resealed: a deliberate edit, not damage
    with pytest.raises(IndexCorruptError, match="format version 99"):
        Searcher.open(settings.index_dir, settings, embedder=fake_embedder)


def _only_segment(settings: Settings) -> Path:
    layout = IndexLayout(settings.index_dir)
    (segment,) = json.loads((layout.current_path() / "manifest.json").read_text())["segments"]
    return layout.segment_path(segment)


def test_truncated_vector_file_is_refused(built_index, settings: Settings, fake_embedder) -> None:
    path = _only_segment(settings) / "vectors.npy"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IndexCorruptError, match=r"vectors\.npy"):
        Searcher.open(settings.index_dir, settings, embedder=fake_embedder)


def test_a_missing_segment_is_refused_clearly(built_index, settings: Settings, fake_embedder) -> None:
    import shutil

    shutil.rmtree(_only_segment(settings))
    with pytest.raises(IndexCorruptError, match=r"segment .* is missing"):
        Searcher.open(settings.index_dir, settings, embedder=fake_embedder)


def test_failed_build_leaves_the_published_index_untouched(
    built_index, corpus_dir: Path, settings: Settings, fake_embedder
) -> None:
    layout = IndexLayout(settings.index_dir)
    before = layout.current_version()
    (corpus_dir / "new.txt").write_text("Brand new\n\nA new article about volcanoes.", encoding="utf-8")
    fake_embedder.fail_after = fake_embedder.documents_embedded  # the next embedding call fails
    with pytest.raises(RuntimeError, match="embedding failed"):
        build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    assert layout.current_version() == before
    assert not any(layout.staging_dir.iterdir()) if layout.staging_dir.exists() else True
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
        assert searcher.manifest.articles == 3
    fake_embedder.fail_after = None
    report = build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    assert report.articles == 4 and layout.current_version() != before


def test_build_writes_into_staging_then_renames(built_index, settings: Settings) -> None:
    layout = IndexLayout(settings.index_dir)
    version = layout.current_version()
    assert version is not None and layout.version_path(version).is_dir()
    assert sorted(p.name for p in layout.version_path(version).iterdir()) == ["deleted.npy", "manifest.json"]
    assert sorted(p.name for p in _only_segment(settings).iterdir()) == [
        "article_keys.npy",
        "ids.npy",
        "meta.sqlite",
        "postings",
        "segment.json",
        "vectors.npy",
    ]
    assert not layout.staging_dir.exists() or not any(layout.staging_dir.iterdir())


def test_atomic_write_text_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "CURRENT"
    atomic_write_text(target, "one\n")
    atomic_write_text(target, "two\n")
    assert target.read_text() == "two\n"
    assert [p.name for p in tmp_path.iterdir()] == ["CURRENT"]


def resident_bytes(path: Path) -> int:
    """Bytes of ``path`` mapped into this process whose pages are resident (touched), from /proc/self/smaps."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")
def test_warm_loads_the_keyword_index_and_every_vector_page_before_any_search(
    tmp_path: Path, fake_embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import semsearch.index.reader

    settings = Settings(index_dir=tmp_path / "ix")
    articles = [Article(id=f"a{i}", title=f"Story {i}", text=f"Item {i} about harbour ferries and fares.")
                for i in range(3000)]  # fmt: skip
    Index(settings.index_dir, settings, embedder=fake_embedder).upsert(articles)  # 3 MB of vectors: many pages
    loads: list[int] = []

    class CountingKeyword(semsearch.index.reader.VersionKeyword):
        def __init__(self, *args: object) -> None:
            loads.append(1)
            super().__init__(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(semsearch.index.reader, "VersionKeyword", CountingKeyword)
    version = IndexVersion(IndexLayout(settings.index_dir).current_path())
    (segment,) = version.segments
    vectors = (segment.path / "vectors.npy").resolve()
    size = vectors.stat().st_size
    assert loads == [] and resident_bytes(vectors) < size / 4  # opening maps the file but reads little of it
    version.warm()
    assert len(loads) == 1
    assert resident_bytes(vectors) >= 0.9 * size
    with Searcher(IndexLayout(settings.index_dir), version, fake_embedder, settings, "adaptive") as searcher:
        assert searcher.search("harbour ferries item 7", k=3)[0].article_id == "a7"
    assert len(loads) == 1  # the search found everything loaded


@pytest.mark.parametrize("field", ["passages", "dim"])
def test_a_vector_file_that_disagrees_with_the_manifest_is_refused(built_index, settings: Settings, fake_embedder,
                                                                   field: str) -> None:  # fmt: skip
    path = IndexLayout(settings.index_dir).current_path() / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest[field] += 1  # only this one disagrees
    path.write_text(json.dumps(seal_json(manifest)))  # resealed: a deliberate edit, not damage
    with pytest.raises(IndexCorruptError, match="vectors of dimension"):
        IndexVersion(path.parent)  # refused, whichever of the two disagrees


def test_an_empty_corpus_builds_an_empty_index_that_answers(tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    (tmp_path / "empty").mkdir()
    settings = Settings(index_dir=tmp_path / "ix")
    report = build_index([tmp_path / "empty"], settings.index_dir, settings, embedder=fake_embedder)
    assert report.published and (report.articles, report.passages) == (0, 0)
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
        for mode in ("dense", "keyword", "hybrid"):
            assert searcher.search("anything at all", k=5, mode=mode) == []
