"""Child process for the crash-safety tests: runs a reindex with the fake embedder and, at a named stage, writes
a marker file and sleeps so the parent can SIGKILL it exactly there.

    python -m tests.crash_child INDEX_DIR CORPUS_DIR STAGE MARKER
    STAGE: embedding | writing | before-switch | none
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from semsearch import Settings, indexing, layout, reindex

from .conftest import FakeEmbedder


def pause(marker: Path) -> None:
    marker.write_text("reached")
    time.sleep(120)


def main() -> None:
    index_dir, corpus, stage, marker = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    embedder = FakeEmbedder()
    if stage == "embedding":
        original = embedder.embed_documents

        def slow_embed(texts, *, progress=False):  # type: ignore[no-untyped-def]
            pause(marker)
            return original(texts, progress=progress)

        embedder.embed_documents = slow_embed  # type: ignore[method-assign]
    elif stage == "writing":
        # Half the files of the new version are on disk (metadata), the rest (keyword index, vectors) are not.
        original_build = indexing.build_keyword_index

        def slow_build(ids, texts, out_dir, articles=None):  # type: ignore[no-untyped-def]
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "partial.npy").write_bytes(b"\x93NUMPY partial")
            pause(marker)
            return original_build(ids, texts, out_dir, articles)

        indexing.build_keyword_index = slow_build
    elif stage == "before-switch":
        # The new version is complete and renamed into versions/, but CURRENT still names the old one.
        original_publish = layout.IndexLayout.publish

        def slow_publish(self, version_id, action="publish"):  # type: ignore[no-untyped-def]
            pause(marker)
            return original_publish(self, version_id, action)

        layout.IndexLayout.publish = slow_publish  # type: ignore[method-assign]
    marker.with_suffix(".started").write_text("started")
    reindex([corpus], index_dir, Settings(precision="fp32"), embedder=embedder)


if __name__ == "__main__":
    main()
