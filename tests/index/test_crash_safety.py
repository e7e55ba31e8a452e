"""SIGKILL a reindex at several points: the published version stays intact and servable, and the next run
cleans up and succeeds. Two reindexers at once: the second is refused with a clear message."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from semsearch import Searcher, Settings, build_index, reindex
from semsearch.index.layout import IndexLayout

from ..conftest import ROOT

STAGES = ["embedding", "writing", "before-switch"]


def start_child(index_dir: Path, corpus: Path, stage: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    marker = tmp_path / f"marker-{stage}-{time.monotonic_ns()}"
    with open(tmp_path / f"{marker.name}.stderr", "wb") as stderr:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.index.crash_child", str(index_dir), str(corpus), stage, str(marker)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    return proc, marker


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child exited early: {path.with_name(path.name + '.stderr')}")
        if time.monotonic() > deadline:
            raise AssertionError("child never reached the stage")
        time.sleep(0.02)


def assert_serves_old_version(settings: Settings, version: str, fake_embedder) -> None:
    layout = IndexLayout(settings.index_dir)
    assert layout.current_version() == version
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
        hits = searcher.search("who designed the bridge architect", k=3)
        assert hits[0].article_id == "bridge.txt"
        assert searcher.search("volcano erupted lava", k=10)[0].article_id != "volcano.txt"


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_at_each_stage_keeps_the_current_version(
    stage: str, built_index, corpus_dir: Path, settings: Settings, fake_embedder, tmp_path: Path
) -> None:
    before = IndexLayout(settings.index_dir).current_version()
    (corpus_dir / "volcano.txt").write_text("Volcano erupts\n\nThe volcano erupted and lava flowed.", encoding="utf-8")
    (corpus_dir / "bank.txt").unlink()
    proc, marker = start_child(settings.index_dir, corpus_dir, stage, tmp_path)
    wait_for(marker, proc)
    if stage == "embedding":
        assert marker.read_text() == "embedding 1 passages"  # incremental: only the new article's passage
    else:
        assert marker.with_suffix(".plan").read_text() == "incremental"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not marker.with_suffix(".finished").exists()

    assert_serves_old_version(settings, before, fake_embedder)
    layout = IndexLayout(settings.index_dir)
    leftovers = list(layout.staging_dir.iterdir()) if layout.staging_dir.exists() else []
    if stage == "embedding":
        assert leftovers == []  # nothing is written before the vectors exist
    elif stage == "writing":
        assert len(leftovers) == 1  # the partial version is left behind...
    else:
        assert len(layout.all_version_dirs()) == 2  # complete but never published

    report = reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)  # ...and the rerun
    assert report.published and report.added == 1 and report.removed == 1 and not report.full_rebuild
    assert not layout.staging_dir.exists() or not any(layout.staging_dir.iterdir())
    assert layout.all_version_dirs() == sorted([before, report.version_id])  # the orphan is gone
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
        assert searcher.search("volcano erupted lava", k=1)[0].article_id == "volcano.txt"
        assert all(h.article_id != "bank.txt" for h in searcher.search("central bank interest rate", k=20))


def test_sigkill_at_random_points_of_an_incremental_build_never_breaks_the_index(
    built_index, corpus_dir: Path, settings: Settings, fake_embedder, tmp_path: Path
) -> None:
    """Each kill lands just before a random step of writing and publishing the new version (a distinct call site
    in semsearch, or a call from it into C: a write, an fsync, a rename), one drawn from each sixth of the run's
    steps, so every kill is verifiably mid-build and the kills spread over the whole write path."""
    rehearsal = tmp_path / "rehearsal"
    shutil.copytree(settings.index_dir, rehearsal / "index")
    shutil.copytree(corpus_dir, rehearsal / "articles")
    (rehearsal / "articles" / "extra-0.txt").write_text("Extra 0\n\nAn extra article number 0.", encoding="utf-8")
    proc, counted = start_child(rehearsal / "index", rehearsal / "articles", "count", tmp_path)
    assert proc.wait(timeout=120) == 0, counted.with_name(counted.name + ".stderr").read_text()
    total = int(counted.read_text())  # steps of one incremental reindex that adds one article

    rng = random.Random(1234)
    kills = 6
    published = {IndexLayout(settings.index_dir).current_version()}
    stopped_at: list[str] = []
    for i in range(kills):
        (corpus_dir / f"extra-{i}.txt").write_text(f"Extra {i}\n\nAn extra article number {i}.", encoding="utf-8")
        call = rng.randint(1 + i * int(0.9 * total) // kills, (i + 1) * int(0.9 * total) // kills)
        proc, marker = start_child(settings.index_dir, corpus_dir, f"call:{call}", tmp_path)
        wait_for(marker, proc)  # paused just before that call
        stopped_at.append(marker.read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert not marker.with_suffix(".finished").exists(), f"kill {i} came after the build: {stopped_at[-1]}"
        plan = marker.with_suffix(".plan")
        assert not plan.exists() or plan.read_text() == "incremental"
        layout = IndexLayout(settings.index_dir)
        current = layout.current_version()
        with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
            assert searcher.search("bridge architect", k=1)[0].article_id == "bridge.txt"
            assert searcher.manifest.version_id == current
            # Either the version before the kill or, killed after the switch, the complete new one.
            assert current in published or searcher.manifest.articles == 4 + i
        published.add(current)
    assert len({where.split(":")[0] for where in stopped_at}) >= 3, stopped_at  # spread over several modules
    report = reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    assert report.articles == 9 and not report.full_rebuild


def test_sigkill_at_random_points_of_a_merge_never_breaks_the_index(
    built_index, corpus_dir: Path, settings: Settings, fake_embedder, tmp_path: Path
) -> None:
    """A merge killed anywhere (reading, writing the merged segment outside the lock, installing and publishing it
    under the lock, pruning) leaves the index serving the same passages, and the next merge and writer succeed and
    leave nothing behind."""
    settings = settings.with_(auto_merge=False)
    for i in range(3):  # four segments to merge
        (corpus_dir / f"extra-{i}.txt").write_text(f"Extra {i}\n\nAn extra article number {i}.", encoding="utf-8")
        reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    (corpus_dir / "bank.txt").unlink()
    reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)  # and a deletion to purge
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
        assert len(searcher.version.segments) == 4 and searcher.manifest.deleted > 0
        expected = [(h.passage_id, round(h.score, 5)) for h in searcher.search("extra article bridge reef", k=20)]
    rehearsal = tmp_path / "rehearsal"
    shutil.copytree(settings.index_dir, rehearsal / "index")
    proc, counted = start_child(rehearsal / "index", corpus_dir, "merge-count", tmp_path)
    assert proc.wait(timeout=120) == 0, counted.with_name(counted.name + ".stderr").read_text()
    total = int(counted.read_text())

    rng = random.Random(99)
    kills = 5
    stopped_at: list[str] = []
    for i in range(kills):
        call = rng.randint(1 + i * total // kills, (i + 1) * total // kills - 1)
        proc, marker = start_child(settings.index_dir, corpus_dir, f"merge-call:{call}", tmp_path)
        wait_for(marker, proc)
        stopped_at.append(marker.read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not marker.with_suffix(".finished").exists(), f"kill {i} came after the merge: {stopped_at[-1]}"
        with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
            got = [(h.passage_id, round(h.score, 5)) for h in searcher.search("extra article bridge reef", k=20)]
            assert got == expected, stopped_at[-1]  # merged or not, the same passages and scores
    assert len({where.split(":")[0] for where in stopped_at}) >= 3, stopped_at
    from semsearch.index.merge import optimize

    optimize(settings.index_dir, settings)
    reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder, full=True)  # a writer cleans up
    layout = IndexLayout(settings.index_dir)
    assert {p.name for p in layout.segments_dir.iterdir()} == layout.referenced_segments()
    assert list(layout.staging_dir.iterdir()) == []
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
        assert [(h.passage_id, round(h.score, 5)) for h in searcher.search("extra article bridge reef", k=20)] != []


def test_second_reindexer_is_refused_with_a_clear_message(
    built_index, corpus_dir: Path, settings: Settings, tmp_path: Path
) -> None:
    (corpus_dir / "volcano.txt").write_text("Volcano erupts\n\nThe volcano erupted.", encoding="utf-8")
    first, marker = start_child(settings.index_dir, corpus_dir, "embedding", tmp_path)
    try:
        wait_for(marker, first)
        second = subprocess.run(
            [sys.executable, "-m", "semsearch.cli", "reindex", str(corpus_dir), "--index-dir", str(settings.index_dir)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert second.returncode == 2
        assert f"is being written by pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()


def test_waiting_reindexer_runs_after_the_first(built_index, corpus_dir: Path, settings: Settings, fake_embedder):
    import threading

    layout = IndexLayout(settings.index_dir)
    holder_ready = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with layout.writer_lock():
            holder_ready.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holder_ready.wait()
    (corpus_dir / "volcano.txt").write_text("Volcano erupts\n\nThe volcano erupted.", encoding="utf-8")
    threading.Timer(0.3, release.set).start()
    started = time.monotonic()
    report = reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder, wait_for_lock=True)
    assert time.monotonic() - started >= 0.25 and report.added == 1
    holder.join()


def test_lock_is_released_when_the_holder_dies(built_index, corpus_dir: Path, settings: Settings, fake_embedder,
                                                tmp_path: Path) -> None:  # fmt: skip
    proc, marker = start_child(settings.index_dir, corpus_dir, "embedding", tmp_path)
    (corpus_dir / "volcano.txt").write_text("Volcano erupts\n\nThe volcano erupted.", encoding="utf-8")
    wait_for(marker, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert reindex([corpus_dir], settings.index_dir, settings, embedder=fake_embedder).added == 1


def test_build_index_alone_needs_no_lock_holder(tmp_path: Path, corpus_dir: Path, fake_embedder) -> None:
    settings = Settings(index_dir=tmp_path / "fresh")
    assert build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder).published
