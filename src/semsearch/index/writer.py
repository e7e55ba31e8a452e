"""Writing one new index version in ``staging/`` and publishing it (see :mod:`semsearch.index.layout`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..ingest.articles import Article, normalise_date
from ..ingest.chunking import Passage, embed_hash
from .layout import KEYWORD_DIR, MANIFEST, META_DB, VECTORS, IndexLayout, fsync_dir, new_version_id
from .manifest import FORMAT_VERSION, IndexManifest
from .reader import IndexVersion, connect_db

_SCHEMA = """
CREATE TABLE articles (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    url TEXT,
    published TEXT,
    source TEXT,
    tags TEXT NOT NULL,
    metadata TEXT NOT NULL,
    path TEXT,
    content_hash TEXT NOT NULL
);
CREATE TABLE passages (
    id INTEGER PRIMARY KEY,
    article_id TEXT NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    paragraph INTEGER NOT NULL,
    last_paragraph INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    text TEXT NOT NULL,
    embed_text TEXT NOT NULL,
    embed_hash TEXT NOT NULL
);
CREATE INDEX passages_by_article ON passages(article_id, ordinal);
CREATE INDEX passages_by_embed_hash ON passages(embed_hash);
CREATE TABLE article_tags (
    article_id TEXT NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    tag TEXT NOT NULL
);
CREATE INDEX article_tags_by_tag ON article_tags(tag);
CREATE INDEX articles_by_source ON articles(source);
CREATE INDEX articles_by_published ON articles(published);
"""


class VersionWriter:
    """Writes one new version in ``staging/`` and publishes it. Use under :meth:`IndexLayout.writer_lock`.

    Start empty (full build) or from a base version (incremental): the base's metadata database is copied and
    its vectors are carried over, then articles are deleted and added.
    """

    def __init__(self, layout: IndexLayout, dim: int, base: IndexVersion | None = None) -> None:
        self.layout = layout
        self.dim = dim
        self.version_id = new_version_id()
        self.path = layout.staging_dir / self.version_id
        self.path.mkdir(parents=True)
        self.base = base
        db = self.path / META_DB
        if base is not None:
            shutil.copyfile(base.path / META_DB, db)
            self._conn = connect_db(db, readonly=False)
            base_ids, base_vectors = base.all_vectors()
            self._ids = [base_ids]
            self._vectors = [np.array(base_vectors, dtype=np.float32)]
        else:
            self._conn = connect_db(db, readonly=False)
            self._conn.executescript(_SCHEMA)
            self._ids = []
            self._vectors = []
        self._removed: set[int] = set()
        row = self._conn.execute("SELECT coalesce(max(id), -1) FROM passages").fetchone()
        self._next_id = int(row[0]) + 1

    @property
    def db(self) -> sqlite3.Connection:
        return self._conn

    def delete_articles(self, article_ids: Iterable[str]) -> int:
        """Remove articles and their passages; returns the number of passages removed."""
        removed = 0
        for article_id in article_ids:
            ids = [r[0] for r in self._conn.execute("SELECT id FROM passages WHERE article_id = ?", [article_id])]
            self._removed.update(ids)
            removed += len(ids)
            self._conn.execute("DELETE FROM passages WHERE article_id = ?", [article_id])
            self._conn.execute("DELETE FROM article_tags WHERE article_id = ?", [article_id])
            self._conn.execute("DELETE FROM articles WHERE id = ?", [article_id])
        return removed

    def add_article(self, article: Article, passages: Sequence[Passage], vectors: np.ndarray) -> list[int]:
        """Insert an article with its passages and their vectors; returns the new passage ids."""
        if vectors.shape != (len(passages), self.dim):
            raise ValueError(f"expected vectors of shape {(len(passages), self.dim)}, got {vectors.shape}")
        self._conn.execute(
            "INSERT INTO articles (id, title, text, url, published, source, tags, metadata, path, content_hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                article.id,
                article.title,
                article.text,
                article.url,
                normalise_date(article.published) or article.published,  # comparable by filters
                article.source,
                json.dumps(list(article.tags), ensure_ascii=False),
                json.dumps(dict(article.metadata), ensure_ascii=False, default=str),
                article.path,
                article.content_hash,
            ],
        )
        self._conn.executemany(
            "INSERT INTO article_tags (article_id, tag) VALUES (?, ?)",
            [(article.id, t) for t in article.tags],
        )
        ids = list(range(self._next_id, self._next_id + len(passages)))
        self._next_id += len(passages)
        self._conn.executemany(
            'INSERT INTO passages (id, article_id, ordinal, paragraph, last_paragraph, start, "end", text,'
            " embed_text, embed_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (pid, article.id, p.ordinal, p.paragraph, p.last_paragraph, p.start, p.end, p.text, p.embed_text,
                 embed_hash(p.embed_text))
                for pid, p in zip(ids, passages, strict=True)
            ],
        )  # fmt: skip
        if passages:
            self._ids.append(np.array(ids, dtype=np.int64))
            self._vectors.append(np.ascontiguousarray(vectors, dtype=np.float32))
        return ids

    def counts(self) -> tuple[int, int]:
        articles = self._conn.execute("SELECT count(*) FROM articles").fetchone()[0]
        passages = self._conn.execute("SELECT count(*) FROM passages").fetchone()[0]
        return int(articles), int(passages)

    def passage_texts(self) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
        """Ids, embedded texts (title context included) and (article id, title) of every passage, for the keyword
        index."""
        rows = self._conn.execute(
            "SELECT p.id, p.embed_text, p.article_id, a.title FROM passages p JOIN articles a ON a.id = p.article_id"
            " ORDER BY p.id"
        ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows], [(r[2], r[3]) for r in rows]

    @property
    def keyword_dir(self) -> Path:
        return self.path / KEYWORD_DIR

    def _write_vectors(self) -> None:
        ids = np.concatenate(self._ids) if self._ids else np.zeros(0, dtype=np.int64)
        vectors = np.concatenate(self._vectors) if self._vectors else np.zeros((0, self.dim), dtype=np.float32)
        if self._removed:
            keep = ~np.isin(ids, np.fromiter(self._removed, dtype=np.int64))
            ids, vectors = ids[keep], vectors[keep]
        order = np.argsort(ids, kind="stable")
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if len(ids):
            index.add_with_ids(np.ascontiguousarray(vectors[order]), np.ascontiguousarray(ids[order]))
        faiss.write_index(index, str(self.path / VECTORS))

    def commit(self, manifest_fields: dict[str, Any]) -> IndexManifest:
        """Finish the files in staging and move the version into ``versions/``. Does not publish it."""
        self._conn.commit()
        articles, passages = self.counts()
        self._conn.execute("PRAGMA journal_mode = DELETE")
        self._conn.close()
        self._write_vectors()
        manifest = IndexManifest(
            format_version=FORMAT_VERSION,
            version_id=self.version_id,
            dim=self.dim,
            articles=articles,
            passages=passages,
            built_at=datetime.now(UTC).isoformat(timespec="seconds"),
            parent_version=self.base.version_id if self.base is not None else None,
            **manifest_fields,
        )
        (self.path / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8")
        for item in self.path.rglob("*"):
            if item.is_file():
                with open(item, "rb") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(self.path)
        self.layout.versions_dir.mkdir(parents=True, exist_ok=True)
        final = self.layout.version_path(self.version_id)
        os.rename(self.path, final)
        fsync_dir(self.layout.versions_dir)
        self.path = final
        return manifest

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
        shutil.rmtree(self.path, ignore_errors=True)
