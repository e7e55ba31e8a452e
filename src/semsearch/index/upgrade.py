"""Converting an index written in format 1 (one complete copy per version) to the segmented format 2.

Every stored vector and passage id is kept: the current format-1 version becomes one segment, nothing is embedded
again, and the keyword postings are built from the stored embedded texts. The format-1 versions are then removed
(this semsearch cannot read them, so they are no rollback target).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..errors import InvalidRequestError
from ..ingest.articles import Article
from ..ingest.chunking import Passage
from .keyword import keyword_record
from .layout import IndexLayout, new_version_id
from .manifest import FORMAT_VERSION, UPGRADABLE_FORMATS, read_manifest_data
from .segment import Segment, SegmentWriter
from .vectors import DEFAULT_ANN_MIN_ROWS
from .writer import write_version


@dataclass(frozen=True)
class UpgradeReport:
    from_format: int
    version_id: str
    articles: int
    passages: int
    removed_versions: tuple[str, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_format": self.from_format,
            "version_id": self.version_id,
            "articles": self.articles,
            "passages": self.passages,
            "removed_versions": list(self.removed_versions),
            "seconds": round(self.seconds, 3),
        }


def upgrade(
    index_dir: str | Path, *, ann_min_rows: int = DEFAULT_ANN_MIN_ROWS, wait_for_lock: bool = False
) -> UpgradeReport:
    """Convert the current version of ``index_dir`` to format 2 and publish it."""
    started = time.perf_counter()
    layout = IndexLayout(index_dir)
    with layout.writer_lock(wait=wait_for_lock):
        layout.clean_staging()
        path = layout.current_path()
        old = read_manifest_data(path)
        fmt = old.get("format_version")
        if fmt == FORMAT_VERSION:
            raise InvalidRequestError(f"index {layout.root} is already in format {FORMAT_VERSION}")
        if fmt not in UPGRADABLE_FORMATS:
            raise InvalidRequestError(
                f"index format {fmt!r} cannot be upgraded; rebuild it with 'semsearch index --full'"
            )
        dim = int(old["dim"])
        vectors = faiss.read_index(str(path / "vectors.faiss"))
        conn = sqlite3.connect(f"file:{path / 'meta.sqlite'}?mode=ro&immutable=1", uri=True)
        conn.row_factory = sqlite3.Row
        writer = SegmentWriter(layout, dim, ann_min_rows=ann_min_rows)
        try:
            articles = conn.execute(
                "SELECT a.*, min(p.id) AS first FROM articles a JOIN passages p ON p.article_id = a.id"
                " GROUP BY a.id ORDER BY first"
            ).fetchall()
            next_id = 0
            for row in articles:
                article = Article(
                    id=row["id"], title=row["title"], text=row["text"], url=row["url"], published=row["published"],
                    source=row["source"], tags=tuple(json.loads(row["tags"])), metadata=json.loads(row["metadata"]),
                    path=row["path"],
                )  # fmt: skip
                rows = conn.execute("SELECT * FROM passages WHERE article_id = ? ORDER BY id", [row["id"]]).fetchall()
                ids = [r["id"] for r in rows]
                passages = [
                    Passage(row["id"], r["ordinal"], r["paragraph"], r["last_paragraph"], r["start"], r["end"], r["text"],
                            r["embed_text"])
                    for r in rows
                ]  # fmt: skip
                writer.add_article(article, passages, ids, vectors.reconstruct_batch(np.array(ids, dtype=np.int64)))
                next_id = max(next_id, ids[-1] + 1)
            segment_id = writer.finish()
        except BaseException:
            writer.abort()
            raise
        finally:
            conn.close()
        segments = [Segment(layout.segment_path(segment_id))] if segment_id is not None else []
        manifest = write_version(
            layout,
            new_version_id(),
            segments,
            np.zeros(0, dtype=np.int64),
            {
                "model_id": old["model_id"],
                "dim": dim,
                "precision": old.get("precision", "fp32"),
                "chunking": old.get("chunking", {}),
                "articles": len(articles),
                "next_passage_id": next_id,
                "keyword": keyword_record(),
                "build_seconds": round(time.perf_counter() - started, 3),
                "parent_version": old.get("version_id"),
                "extra": {"upgraded_from_format": fmt},
            },
        )
        for segment in segments:
            segment.close()
        layout.publish(manifest.version_id, action="upgrade")
        removed = []
        for version in layout.all_version_dirs():
            try:
                data = read_manifest_data(layout.version_path(version))
            except Exception:  # an unreadable leftover: not ours to judge here
                continue
            if data.get("format_version") in UPGRADABLE_FORMATS:
                shutil.rmtree(layout.version_path(version), ignore_errors=True)
                removed.append(version)
        return UpgradeReport(fmt, manifest.version_id, manifest.articles, manifest.passages, tuple(removed),
                             time.perf_counter() - started)  # fmt: skip
