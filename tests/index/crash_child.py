"""Child process for the crash-safety tests: runs a reindex with the fake embedder and the fixture index's
settings (so the run is incremental, as an operator's usually is) and stops where the parent wants to SIGKILL it.

    python -m tests.index.crash_child INDEX_DIR CORPUS_DIR STAGE MARKER

STAGE:
- ``embedding`` | ``writing`` | ``before-switch``: pause at that stage;
- ``count``: run to the end and write to MARKER how many calls the reindex made (see ``count_calls``);
- ``call:N``: pause just before the N-th of those calls, i.e. at a chosen point of the build;
- ``merge-count`` / ``merge-call:N``: the same for ``optimize`` (a merge of every segment) instead of a reindex.

At a pause the child writes MARKER (with where it stopped) and sleeps. Beside MARKER it writes ``.started``
before the reindex, ``.plan`` (``incremental`` or ``full``) when the new version's writer is created, and
``.finished`` when the reindex has returned: a child killed mid-build has no ``.finished``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import semsearch
from semsearch import reindex
from semsearch.index import build, layout, segment

from ..conftest import FakeEmbedder, fixture_settings


def pause(marker: Path, where: str = "") -> None:
    marker.write_text(where or "reached")
    time.sleep(120)


def count_calls(calls: list[int], stop_at: int | None, marker: Path) -> None:
    """Count the distinct call sites this thread reaches from now on: calls into semsearch's functions, and from
    them into C (writes, fsync, rename, SQLite, FAISS). At the ``stop_at``-th, pause just before that call.
    Each site counts once, so the steps of the build weigh alike, however often a loop repeats one; library
    internals (imports, regex compiling) are not counted. ``calls[0]`` is the count."""
    package = str(Path(semsearch.__file__).parent)
    seen: set[tuple[str, int, str]] = set()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event not in ("call", "c_call") or not frame.f_code.co_filename.startswith(package):
            return
        name = getattr(arg, "__qualname__", "?") if event == "c_call" else frame.f_code.co_qualname
        site = (frame.f_code.co_filename, frame.f_lineno, name)
        if site in seen:
            return
        seen.add(site)
        calls[0] += 1
        if calls[0] == stop_at:
            sys.setprofile(None)
            pause(marker, f"{site[0].rsplit('/', 1)[-1]}:{site[1]} {event} {name}")

    sys.setprofile(profile)


def main() -> None:
    index_dir, corpus, stage, marker = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    embedder = FakeEmbedder()
    if stage == "embedding":
        original = embedder.embed_documents

        def slow_embed(texts, *, progress=False):  # type: ignore[no-untyped-def]
            pause(marker, f"embedding {len(texts)} passages")
            return original(texts, progress=progress)

        embedder.embed_documents = slow_embed  # type: ignore[method-assign]
    elif stage == "writing":
        # Half the files of the new segment are on disk (metadata, vectors), the rest (postings) are not.
        original_write = segment.write_postings

        def slow_write(texts, out_dir):  # type: ignore[no-untyped-def]
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "partial.npy").write_bytes(b"\x93NUMPY partial")
            pause(marker)
            return original_write(texts, out_dir)

        segment.write_postings = slow_write
    elif stage == "before-switch":
        # The new version is complete and renamed into versions/, but CURRENT still names the old one.
        original_publish = layout.IndexLayout.publish

        def slow_publish(self, version_id, action="publish"):  # type: ignore[no-untyped-def]
            pause(marker)
            return original_publish(self, version_id, action)

        layout.IndexLayout.publish = slow_publish  # type: ignore[method-assign]

    calls = [0]
    if stage == "merge-count" or stage.startswith("merge-call:"):
        # An optimize (a merge of every segment) instead of a reindex: kill points spread over reading the
        # segments, writing the merged one outside the lock, installing it and publishing under the lock, pruning.
        from semsearch.index.merge import optimize

        marker.with_suffix(".started").write_text("started")
        stop = None if stage == "merge-count" else int(stage.removeprefix("merge-call:"))
        count_calls(calls, stop, marker)
        optimize(index_dir, fixture_settings(index_dir))
        sys.setprofile(None)
        if stop is None:
            marker.write_text(str(calls[0]))
        marker.with_suffix(".finished").write_text("finished")
        return

    class RecordingWriter(build.VersionWriter):
        def __init__(self, layout_: layout.IndexLayout, dim: int, base: Any = None, **options: Any) -> None:
            marker.with_suffix(".plan").write_text("incremental" if base is not None else "full")
            # Kill points are drawn from here on: writing the new version, committing, publishing, pruning.
            # (Before this nothing is written; the stage tests cover embedding.)
            if stage == "count" or stage.startswith("call:"):
                count_calls(calls, None if stage == "count" else int(stage.removeprefix("call:")), marker)
            super().__init__(layout_, dim, base=base, **options)

    build.VersionWriter = RecordingWriter  # type: ignore[misc]
    marker.with_suffix(".started").write_text("started")
    reindex([corpus], index_dir, fixture_settings(index_dir), embedder=embedder)
    sys.setprofile(None)
    if stage == "count":
        marker.write_text(str(calls[0]))
    marker.with_suffix(".finished").write_text("finished")


if __name__ == "__main__":
    main()
