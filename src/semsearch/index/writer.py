"""Writing one new index version: a segment of the new and changed passages, tombstones for the replaced and
removed ones, and a manifest naming the segments (see :mod:`semsearch.index.layout`).

An update writes only what changed: one segment (nothing at all when it only deletes) and a small version
directory, whatever the size of the index. Use under :meth:`IndexLayout.writer_lock`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..ingest.articles import Article
from ..ingest.chunking import Passage
from .integrity import FILES, file_records, seal_json
from .layout import DELETED, MANIFEST, IndexLayout, fsync_tree, new_version_id
from .manifest import FORMAT_VERSION, IndexManifest
from .reader import IndexVersion
from .segment import Segment, SegmentWriter
from .vectors import DEFAULT_ANN_MIN_ROWS


def write_version(
    layout: IndexLayout,
    version_id: str,
    segments: Sequence[Segment],
    deleted: np.ndarray,
    fields: dict[str, Any],
) -> IndexManifest:
    """Write ``versions/<version_id>`` naming ``segments`` less the ``deleted`` passage ids, through staging.
    Segments whose every row is deleted are left out (and their ids with them). Does not publish it."""
    deleted = np.unique(np.asarray(deleted, dtype=np.int64))
    kept: list[Segment] = []
    kept_deleted: list[np.ndarray] = []
    for segment in segments:
        inside = deleted[
            np.searchsorted(deleted, segment.min_id) : np.searchsorted(deleted, segment.max_id, side="right")
        ]
        _, found = segment.rows_of(inside)
        mine = inside[found]
        if len(mine) == segment.rows:
            continue  # nothing live left: the version no longer needs the segment
        kept.append(segment)
        kept_deleted.append(mine)
    deleted = np.unique(np.concatenate(kept_deleted)) if kept_deleted else np.zeros(0, dtype=np.int64)
    manifest = IndexManifest(
        format_version=FORMAT_VERSION,
        version_id=version_id,
        segments=tuple(s.segment_id for s in kept),
        deleted=len(deleted),
        passages=sum(s.rows for s in kept) - len(deleted),
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        **fields,
    )
    staging = layout.staging_dir / f"version-{version_id}"
    staging.mkdir(parents=True)
    try:
        np.save(staging / DELETED, deleted, allow_pickle=False)
        data = seal_json({**manifest.to_dict(), FILES: file_records(staging, [DELETED])})
        (staging / MANIFEST).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        fsync_tree(staging)
        layout.versions_dir.mkdir(parents=True, exist_ok=True)
        os.rename(staging, layout.version_path(version_id))
        fsync_tree(layout.versions_dir, recursive=False)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


class VersionWriter:
    """Writes one new version and moves it into ``versions/`` (publishing is the caller's). Use under
    :meth:`IndexLayout.writer_lock`.

    Start empty (a full build: the new version has only the new segment) or from a base version (incremental:
    it keeps the base's segments and deletions), then delete and add articles. ``first_id``: where an empty
    start numbers its passages (above the ids of the index it replaces, so ids are never reused)."""

    def __init__(
        self,
        layout: IndexLayout,
        dim: int,
        base: IndexVersion | None = None,
        *,
        first_id: int = 0,
        ann_min_rows: int = DEFAULT_ANN_MIN_ROWS,
    ) -> None:
        self.layout = layout
        self.dim = dim
        self.base = base
        self.version_id = new_version_id()
        self._segment = SegmentWriter(layout, dim, ann_min_rows=ann_min_rows)
        self._deleted: list[np.ndarray] = []
        self._next_id = base.manifest.next_passage_id if base is not None else first_id
        self._articles = base.manifest.articles if base is not None else 0

    def delete_articles(self, article_ids: Iterable[str]) -> int:
        """Delete articles of the base version; returns the number of passages deleted."""
        wanted = list(article_ids)
        if self.base is None or not wanted:
            return 0
        ids = self.base.article_passage_ids(wanted)
        self._articles -= len(self.base.article_hashes(wanted))
        self._deleted.append(ids)
        return len(ids)

    def add_article(self, article: Article, passages: Sequence[Passage], vectors: np.ndarray) -> list[int]:
        """Add an article with its passages and their vectors; returns the new passage ids."""
        ids = list(range(self._next_id, self._next_id + len(passages)))
        self._segment.add_article(article, passages, ids, vectors)
        self._next_id += len(passages)
        self._articles += 1 if passages else 0
        return ids

    def commit(self, manifest_fields: dict[str, Any]) -> IndexManifest:
        """Finish the segment and the version and move them into place. Does not publish the version."""
        segment_id = self._segment.finish()
        segments = list(self.base.segments) if self.base is not None else []
        if segment_id is not None:
            segments.append(Segment(self.layout.segment_path(segment_id)))
        deleted = [self.base.deleted_ids] if self.base is not None else []
        try:
            return write_version(
                self.layout,
                self.version_id,
                segments,
                np.concatenate(deleted + self._deleted) if deleted + self._deleted else np.zeros(0, np.int64),
                {
                    **manifest_fields,
                    "dim": self.dim,
                    "articles": self._articles,
                    "next_passage_id": self._next_id,
                    "parent_version": self.base.version_id if self.base is not None else None,
                },
            )
        finally:
            if segment_id is not None:
                segments[-1].close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._segment.abort()
        shutil.rmtree(self.layout.staging_dir / f"version-{self.version_id}", ignore_errors=True)
