"""A disk that fills up during a reindex: one clear error naming the index directory, the published version intact
(same pointer, same results, every file verifies), nothing half-written left behind, and the next run succeeds
once there is space. The real thing on a small tmpfs (root only), and injected failures at each write (anywhere)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from semsearch import Searcher, Settings, build_index, reindex
from semsearch.errors import IndexWriteError
from semsearch.index import integrity, layout, segment, vectors
from semsearch.index.layout import IndexLayout
from semsearch.index.reader import IndexVersion

from ..conftest import ROOT, FakeEmbedder, fixture_settings

QUERIES = ["who designed the bridge architect", "interest rates cut", "coral reef divers"]


def _add_stories(corpus: Path, count: int) -> None:
    for i in range(count):
        (corpus / f"story{i}.txt").write_text(
            f"Story {i}\n\n"
            + "\n\n".join(
                f"Paragraph {j} of story {i}: " + " ".join(f"w{i}x{j}x{k}" for k in range(60)) for j in range(4)
            ),
            encoding="utf-8",
        )


def _snapshot(index_dir: Path, settings: Settings) -> tuple[str | None, list[list[tuple[int, str]]]]:
    with Searcher.open(index_dir, settings, embedder=FakeEmbedder()) as searcher:
        results = [[(h.passage_id, h.text) for h in searcher.search(q, k=5, mode="hybrid")] for q in QUERIES]
    return IndexLayout(index_dir).current_version(), results


def _assert_intact(index_dir: Path, settings: Settings, before: tuple[str | None, list[list[tuple[int, str]]]]) -> None:
    assert _snapshot(index_dir, settings) == before
    layout = IndexLayout(index_dir)
    integrity._verified.clear()  # read every file again
    IndexVersion(layout.current_path()).close()
    assert not layout.staging_dir.exists() or os.listdir(layout.staging_dir) == []
    assert layout.all_version_dirs() == [before[0]]  # no unpublished version left
    assert layout.prune_segments() == []  # no segment that no version names


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs; skipped unless this process may mount one."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _grow(mount: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


@pytest.mark.parametrize("stories", [40, 200])
def test_a_reindex_that_fills_the_disk_fails_cleanly_and_the_next_one_succeeds(
    small_disk: Path, corpus_dir: Path, stories: int
) -> None:
    index_dir = small_disk / "index"
    settings = fixture_settings(index_dir)
    build_index([corpus_dir], index_dir, settings, embedder=FakeEmbedder())
    before = _snapshot(index_dir, settings)
    _add_stories(corpus_dir, stories)

    with pytest.raises(IndexWriteError) as info:
        reindex([corpus_dir], index_dir, settings, embedder=FakeEmbedder())
    assert "no space left on device" in info.value.message and str(index_dir) in info.value.message
    assert before[0] in info.value.message  # says what is still published
    _assert_intact(index_dir, settings, before)

    _grow(small_disk, "64m")
    report = reindex([corpus_dir], index_dir, settings, embedder=FakeEmbedder())
    assert report.published and report.added == stories
    with Searcher.open(index_dir, settings, embedder=FakeEmbedder()) as searcher:
        assert searcher.search("w7x1x3", k=1, mode="keyword")[0].article_id == "story7.txt"


def test_the_cli_says_so_in_one_line_and_exits_non_zero(small_disk: Path, corpus_dir: Path) -> None:
    index_dir = small_disk / "index"
    build_index([corpus_dir], index_dir, Settings(index_dir=index_dir), embedder=FakeEmbedder())  # as the CLI's
    _add_stories(corpus_dir, 200)
    env = {**os.environ, "SEMSEARCH_INDEX_DIR": str(index_dir), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _CLI_WITH_FAKE_MODEL, "reindex", str(corpus_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write index ")
    assert "no space left on device" in lines[0] and str(index_dir) in lines[0]


# The CLI with every model load answered by the fake embedder (as tests/conftest.py's use_fake_embedder does).
_CLI_WITH_FAKE_MODEL = """
import sys
import semsearch.index.build, semsearch.models.embedding, semsearch.retrieve.searcher
from tests.conftest import FakeEmbedder
fake = FakeEmbedder()
for module in (semsearch.models.embedding, semsearch.index.build, semsearch.retrieve.searcher):
    module.load_embedder = lambda settings: fake
from semsearch.cli import main
sys.argv[0] = "semsearch"
main()
"""


def _enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize(
    "where",
    ["segment rows", "ann index", "segment metadata", "segment json", "version", "pointer"],
)
def test_a_full_disk_at_each_write_leaves_the_published_version_as_it_was(
    where: str, corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index_dir = tmp_path / "index"
    settings = fixture_settings(index_dir).with_(ann_min_rows=60)
    build_index([corpus_dir], index_dir, settings, embedder=FakeEmbedder())
    before = _snapshot(index_dir, settings)
    _add_stories(corpus_dir, 30)

    if where == "segment rows":
        monkeypatch.setattr(segment.np, "save", _short_write)
    elif where == "ann index":
        monkeypatch.setattr(vectors.faiss, "write_index", _faiss_full)
    elif where == "segment metadata":
        monkeypatch.setattr(segment, "INDEXES", _FULL_SQL)
    elif where == "segment json":
        monkeypatch.setattr(segment, "fsync_tree", _enospc)
    elif where == "version":
        monkeypatch.setattr("semsearch.index.writer.fsync_tree", _enospc)
    else:
        real = layout.atomic_write_text
        monkeypatch.setattr(
            layout, "atomic_write_text", lambda path, text: _enospc() if path.name == "CURRENT" else real(path, text)
        )
    with pytest.raises(IndexWriteError, match="no space left on device"):
        reindex([corpus_dir], index_dir, settings, embedder=FakeEmbedder())
    monkeypatch.undo()
    _assert_intact(index_dir, settings, before)
    assert reindex([corpus_dir], index_dir, settings, embedder=FakeEmbedder()).published


def _short_write(*args: object, **kwargs: object) -> None:
    raise OSError("1000 requested and 212 written")  # what numpy's tofile raises on a full disk


def _faiss_full(*args: object, **kwargs: object) -> None:
    raise RuntimeError(
        "Error in faiss::write_index: write error in ann.faiss: 4051 != 5120000 (No space left on device)"
    )


# SQLite's own "database or disk is full": a table grown past max_page_count.
_FULL_SQL = "PRAGMA max_page_count = 1; CREATE TABLE filler (x); INSERT INTO filler VALUES (zeroblob(100000));"


def test_a_merge_that_finds_the_disk_full_leaves_the_update_published(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index_dir = tmp_path / "index"
    settings = fixture_settings(index_dir).with_(merge_factor=2)
    build_index([corpus_dir], index_dir, settings, embedder=FakeEmbedder())
    _add_stories(corpus_dir, 3)
    monkeypatch.setattr("semsearch.index.segment.fsync_tree", _fail_merges_only(segment.fsync_tree))
    report = reindex([corpus_dir], index_dir, settings, embedder=FakeEmbedder())
    assert report.published and report.merges == ()
    assert any("segments not merged" in w and "no space left on device" in w for w in report.warnings)
    assert IndexLayout(index_dir).current_version() == report.version_id
    assert not any(p.name.startswith("merge-") for p in IndexLayout(index_dir).staging_dir.iterdir())


def _fail_merges_only(real):  # type: ignore[no-untyped-def]
    def fsync_tree(path: Path, *, recursive: bool = True) -> None:
        if path.name.startswith("merge-"):
            _enospc()
        real(path, recursive=recursive)

    return fsync_tree
