"""Merging segments: the tiered policy, and a merge that publishes without blocking writers.

Every update adds a segment, so without merging a chatbot backend that upserts one article at a time would
search thousands of tiny segments. The policy is Lucene's tiered one, simplified:

* a segment's tier is the order of magnitude of its live rows (``MERGE_FACTOR`` = 10: 1-9 rows, 10-99, ...);
  when a tier holds ``MERGE_FACTOR`` segments, they are merged into one (which lands in the next tier), so a
  version holds at most ``MERGE_FACTOR - 1`` segments per tier: O(log n) segments in all, and each row is
  rewritten O(log n) times over its life;
* a segment with more than ``DELETED_REWRITE`` of its rows deleted is rewritten without them (deleted rows cost
  search time and disk, and skew nothing: BM25 statistics leave them out anyway);
* ``semsearch optimize`` (:func:`optimize`) merges everything into one segment.

A merge reads immutable segments and writes the merged one in ``staging/`` outside the writer lock; it takes the
lock only to install the segment and publish a version that replaces the merged segments by the new one. Passage
ids survive a merge, so deletions made by writers while it ran are carried over as tombstones on the new segment.
A version published by a merge holds the same passages as the one it was merged from (``content_version``), so
rollback and pruning treat the two as one content.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Settings
from .layout import IndexLayout, new_version_id
from .reader import IndexVersion, open_current
from .segment import Segment, install_segment, merge_segments
from .writer import write_version

log = logging.getLogger(__name__)

MERGE_FACTOR = 10
DELETED_REWRITE = 0.3


@dataclass(frozen=True)
class MergeReport:
    """What one merge did."""

    version_id: str | None
    """The version published (None when the merge was abandoned, see ``reason``)."""
    merged: tuple[str, ...]
    segment_id: str | None
    rows: int
    """Rows of the new segment."""
    purged: int
    """Deleted rows dropped for good."""
    seconds: float
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version_id": self.version_id,
            "merged": list(self.merged),
            "segment_id": self.segment_id,
            "rows": self.rows,
            "purged": self.purged,
            "seconds": round(self.seconds, 3),
            "reason": self.reason,
        }


def tier(live_rows: int, factor: int = MERGE_FACTOR) -> int:
    return int(math.log(max(live_rows, 1), factor) + 1e-9)


def plan_merge(
    segments: Sequence[tuple[str, int, int]], factor: int = MERGE_FACTOR, deleted_rewrite: float = DELETED_REWRITE
) -> list[str]:
    """The next merge the policy wants for segments given as (id, rows, deleted rows): the ids to merge into one,
    or ``[]``. A full tier first (lowest tier first: smallest merges are cheapest and cut the segment count
    most), else the most-deleted segment over the threshold."""
    tiers: dict[int, list[str]] = {}
    for segment_id, rows, deleted in segments:
        tiers.setdefault(tier(rows - deleted, factor), []).append(segment_id)
    for level in sorted(tiers):
        if len(tiers[level]) >= factor:
            return tiers[level][:factor]
    worst = max(
        (
            (deleted / rows, segment_id)
            for segment_id, rows, deleted in segments
            if rows and deleted / rows > deleted_rewrite
        ),
        default=None,
    )
    return [worst[1]] if worst else []


def _segment_counts(version: IndexVersion) -> list[tuple[str, int, int]]:
    return [
        (s.segment_id, s.rows, 0 if m is None else int(m.sum()))
        for s, m in zip(version.segments, version.masks, strict=True)
    ]


def merge(
    index_dir: str | Path,
    segment_ids: Sequence[str] | None,
    settings: Settings,
    *,
    reason: str = "merge",
    planned_on: str | None = None,
) -> MergeReport:
    """Merge ``segment_ids`` of the current version (None: all of them) into one segment and publish the result.

    Runs outside the writer lock until it publishes, so writers go on meanwhile. Abandoned (``version_id`` None)
    when the current version no longer holds every merged segment by then (a full rebuild or a rollback), or
    already when it starts if the segments were chosen from version ``planned_on`` and another merge took them
    since."""
    started = time.perf_counter()
    layout = IndexLayout(index_dir)
    with layout.writing("merging segments"):
        return _merge(layout, segment_ids, settings, reason, planned_on, started)


def _merge(
    layout: IndexLayout,
    segment_ids: Sequence[str] | None,
    settings: Settings,
    reason: str,
    planned_on: str | None,
    started: float,
) -> MergeReport:
    base = open_current(layout)
    try:
        wanted = list(base.manifest.segments if segment_ids is None else segment_ids)
        missing = set(wanted) - set(base.manifest.segments)
        if missing and planned_on is not None and planned_on != base.version_id:
            return MergeReport(None, tuple(wanted), None, 0, 0, time.perf_counter() - started,
                               "the current version changed under the merge")  # fmt: skip
        if missing:
            raise ValueError(f"segments not in the current version: {sorted(missing)}")
        segment_id = new_version_id()
        with layout.staging_claim(f"merge-{segment_id}", pins=wanted) as staging:
            by_id = base.segment_map()
            masks = dict(zip(base.manifest.segments, base.masks, strict=True))
            parts = [(by_id[s], masks[s]) for s in wanted]
            purged = sum(0 if m is None else int(m.sum()) for _, m in parts)
            if purged == sum(seg.rows for seg, _ in parts):
                info: dict[str, Any] | None = None  # every row deleted: the segments just leave the version
            else:
                info = merge_segments(parts, staging, segment_id, ann_min_rows=settings.ann_min_rows)
            with layout.writer_lock(wait=True):
                current = IndexVersion(layout.current_path(), segments=by_id)
                version_id = new_version_id()
                try:
                    if not set(wanted) <= set(current.manifest.segments):
                        return MergeReport(None, tuple(wanted), None, 0, 0, time.perf_counter() - started,
                                           "the current version changed under the merge")  # fmt: skip
                    segments: list[Segment] = []
                    new_segment = None
                    if info is not None:
                        new_segment = Segment(install_segment(layout, staging, segment_id))
                    for s in current.segments:
                        if s.segment_id not in wanted:
                            segments.append(s)
                        elif new_segment is not None and new_segment not in segments:
                            segments.append(new_segment)
                    m = current.manifest
                    manifest = write_version(
                        layout,
                        version_id,
                        segments,
                        current.deleted_ids,  # ids the merge dropped are in no segment now, and are left out
                        {
                            "model_id": m.model_id,
                            "dim": m.dim,
                            "precision": m.precision,
                            "chunking": m.chunking,
                            "articles": m.articles,
                            "next_passage_id": m.next_passage_id,
                            "keyword": m.keyword,
                            "build_seconds": round(time.perf_counter() - started, 3),
                            "parent_version": m.version_id,
                            "extra": {
                                "content_version": layout.content_of(m.version_id),
                                "merged": wanted,
                                "reason": reason,
                            },
                        },
                    )
                    if new_segment is not None:
                        new_segment.close()
                    layout.publish(manifest.version_id, action="merge")
                    layout.unpin(f"merge-{segment_id}")
                    layout.prune(settings.keep_versions)
                except BaseException:
                    layout.discard_unpublished(version_id)  # and the merged segment, if it was installed
                    raise
                finally:
                    current.close()
            return MergeReport(
                manifest.version_id, tuple(wanted), segment_id if info is not None else None,
                int(info["rows"]) if info is not None else 0, purged, time.perf_counter() - started,
            )  # fmt: skip
    finally:
        base.close()


def maybe_merge(index_dir: str | Path, settings: Settings, *, limit: int = 100) -> list[MergeReport]:
    """Run the merges the tiered policy asks for on the current version, one after another (a merge can fill
    the next tier). Returns what was done."""
    layout = IndexLayout(index_dir)
    done: list[MergeReport] = []
    for _ in range(limit):
        if layout.current_version() is None:
            break
        version = open_current(layout)
        try:
            wanted = plan_merge(_segment_counts(version), settings.merge_factor)
        finally:
            version.close()
        if not wanted:
            break
        report = merge(index_dir, wanted, settings, reason="tiered", planned_on=version.version_id)
        done.append(report)
        log.info("merged %d segments into %s in %.2f s", len(wanted), report.segment_id, report.seconds)
        if report.version_id is None:
            break
    return done


def optimize(index_dir: str | Path, settings: Settings) -> MergeReport | None:
    """Merge every segment of the current version into one, dropping deleted passages for good. None when there
    is nothing to do (one segment and no deletions)."""
    layout = IndexLayout(index_dir)
    version = open_current(layout)
    try:
        if len(version.segments) <= 1 and not version.manifest.deleted:
            return None
    finally:
        version.close()
    return merge(index_dir, None, settings, reason="optimize")
