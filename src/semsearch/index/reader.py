"""Reading a published index version (vectors, metadata, keyword index) and its records. With
:mod:`semsearch.index.writer`, the only modules that import faiss. The directory layout is :mod:`semsearch.index.layout`."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..errors import IndexCorruptError, IndexNotFoundError
from ..ingest.articles import Article
from .keyword import KeywordIndex, article_numbers
from .layout import KEYWORD_DIR, META_DB, VECTORS
from .manifest import read_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassageRecord:
    """A stored passage joined with its article's fields."""

    id: int
    article_id: str
    ordinal: int
    paragraph: int
    last_paragraph: int
    start: int
    end: int
    text: str
    title: str
    url: str | None
    published: str | None
    source: str | None
    tags: tuple[str, ...]


@dataclass(frozen=True)
class StoredArticle:
    article: Article
    content_hash: str
    passages: tuple[PassageRecord, ...]


def connect_db(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        # immutable=1: a published version never changes, so SQLite needs no locks (safe across fork too).
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, check_same_thread=False)
        conn.execute("PRAGMA foreign_keys = ON")
    conn.row_factory = sqlite3.Row
    return conn


_PASSAGE_SELECT = """
SELECT p.id, p.article_id, p.ordinal, p.paragraph, p.last_paragraph, p.start, p."end", p.text,
       a.title, a.url, a.published, a.source, a.tags
FROM passages p JOIN articles a ON a.id = p.article_id
"""


def _passage_from_row(row: sqlite3.Row) -> PassageRecord:
    return PassageRecord(
        id=row["id"],
        article_id=row["article_id"],
        ordinal=row["ordinal"],
        paragraph=row["paragraph"],
        last_paragraph=row["last_paragraph"],
        start=row["start"],
        end=row["end"],
        text=row["text"],
        title=row["title"],
        url=row["url"],
        published=row["published"],
        source=row["source"],
        tags=tuple(json.loads(row["tags"])),
    )


def _article_from_row(row: sqlite3.Row) -> Article:
    return Article(
        id=row["id"],
        title=row["title"],
        text=row["text"],
        url=row["url"],
        published=row["published"],
        source=row["source"],
        tags=tuple(json.loads(row["tags"])),
        metadata=json.loads(row["metadata"]),
        path=row["path"],
    )


class IndexVersion:
    """A published version opened for reading. Safe to share between threads; immutable."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        try:
            # Memory-mapped: pages are shared between server workers and loaded on demand.
            index = faiss.read_index(str(self.path / VECTORS), faiss.IO_FLAG_MMAP_IFC)
        except RuntimeError as exc:
            raise IndexCorruptError(f"cannot read {self.path / VECTORS}: {exc}") from exc
        if index.d != self.manifest.dim or index.ntotal != self.manifest.passages:
            raise IndexCorruptError(
                f"{self.path / VECTORS} holds {index.ntotal} vectors of dimension {index.d}, "
                f"manifest says {self.manifest.passages} of {self.manifest.dim}"
            )
        self._index = index
        db = self.path / META_DB
        if not db.is_file():
            raise IndexCorruptError(f"{db} is missing")
        self._db_lock = threading.Lock()
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = connect_db(db, readonly=True)
        self._keyword: KeywordIndex | None = None
        self._keyword_lock = threading.Lock()
        if not (self.path / KEYWORD_DIR).is_dir():
            raise IndexCorruptError(f"{self.path / KEYWORD_DIR} is missing")

    @property
    def keyword(self) -> KeywordIndex:
        """The version's BM25 index, loaded on first use."""
        if self._keyword is None:
            with self._keyword_lock:
                if self._keyword is None:
                    try:
                        self._keyword = KeywordIndex(self.path / KEYWORD_DIR, self._article_numbers)
                    except (OSError, ValueError, KeyError) as exc:
                        raise IndexCorruptError(f"cannot read {self.path / KEYWORD_DIR}: {exc}") from exc
        return self._keyword

    def _article_numbers(self, passage_ids: np.ndarray) -> np.ndarray:
        """Article numbers of ``passage_ids`` from the metadata database (for a format-1 keyword index)."""
        rows = self._query("SELECT p.id, p.article_id, a.title FROM passages p JOIN articles a ON a.id = p.article_id")
        article_of = {r[0]: (r[1], r[2]) for r in rows}
        return article_numbers([article_of.get(int(p), (f"missing:{int(p)}", "")) for p in passage_ids])

    def warm(self) -> None:
        """Load what every search touches (the BM25 index; the memory-mapped vectors, by one search), so the
        first query on this version pays no loading. Raises :class:`IndexCorruptError` for an unreadable part."""
        _ = self.keyword
        if self._index.ntotal:
            self.search_vectors(np.zeros((1, self.manifest.dim), dtype=np.float32), 1)

    @property
    def version_id(self) -> str:
        return self.manifest.version_id

    def close(self) -> None:
        with self._db_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._db_lock:
            if self._conn is None:
                raise IndexNotFoundError("index version is closed")
            if os.getpid() != self._pid:  # forked (e.g. a preloaded gunicorn worker): own connection
                self._conn = connect_db(self.path / META_DB, readonly=True)
                self._pid = os.getpid()
            return self._conn.execute(sql, params).fetchall()

    # -- vectors -------------------------------------------------------------------------------------

    def search_vectors(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` passage ids and inner-product scores per query; ids are -1 where fewer exist.

        ``allowed_ids`` restricts the search to those passages exactly (a FAISS ID selector, not a
        post-filter), so ``k`` results come back whenever ``k`` allowed passages exist.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(k, max(self._index.ntotal, 1)))
        if queries.shape[0] < 20:
            # OpenMP settings are per calling thread. A few queries over a flat index take well under a
            # millisecond on one core; a thread team per request thread would spin and steal the model's CPU
            # (measured: 14.3 ms vs 6.7 ms per search).
            faiss.omp_set_num_threads(1)
        if allowed_ids is None:
            scores, ids = self._index.search(queries, k)
        else:
            allowed = np.ascontiguousarray(allowed_ids, dtype=np.int64)
            if allowed.size == 0:
                n = queries.shape[0]
                return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
            scores, ids = self._index.search(queries, k, params=params)
        return scores, ids

    def vectors_for(self, ids: Sequence[int]) -> np.ndarray:
        """Stored vectors of the given passage ids (for reuse on reindex)."""
        if len(ids) == 0:
            return np.zeros((0, self.manifest.dim), dtype=np.float32)
        return self._index.reconstruct_batch(np.asarray(ids, dtype=np.int64))

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` of every stored passage, in index order."""
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        flat = faiss.downcast_index(self._index.index)
        vectors = faiss.vector_to_array(flat.codes).view(np.float32).reshape(-1, self.manifest.dim)
        return ids, vectors

    # -- metadata ------------------------------------------------------------------------------------

    def passages(self, ids: Sequence[int]) -> dict[int, PassageRecord]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._query(f"{_PASSAGE_SELECT} WHERE p.id IN ({marks})", [int(i) for i in ids])
        return {row["id"]: _passage_from_row(row) for row in rows}

    def article(self, article_id: str) -> StoredArticle | None:
        rows = self._query("SELECT * FROM articles WHERE id = ?", [article_id])
        if not rows:
            return None
        passages = self._query(f"{_PASSAGE_SELECT} WHERE p.article_id = ? ORDER BY p.ordinal", [article_id])
        return StoredArticle(
            article=_article_from_row(rows[0]),
            content_hash=rows[0]["content_hash"],
            passages=tuple(_passage_from_row(r) for r in passages),
        )

    def article_hashes(self) -> dict[str, str]:
        return {row["id"]: row["content_hash"] for row in self._query("SELECT id, content_hash FROM articles")}

    def embed_hash_ids(self, hashes: Iterable[str]) -> dict[str, int]:
        """For each embed hash present in this version, one passage id holding that vector."""
        wanted = list(set(hashes))
        found: dict[str, int] = {}
        for lo in range(0, len(wanted), 500):
            chunk = wanted[lo : lo + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._query(
                f"SELECT embed_hash, min(id) AS id FROM passages WHERE embed_hash IN ({marks}) GROUP BY embed_hash",
                chunk,
            ):
                found[row["embed_hash"]] = row["id"]
        return found

    def filter_passage_ids(self, where: str, params: Sequence[Any]) -> np.ndarray:
        """Ids of passages whose article matches a SQL condition on ``a`` (articles) built by the searcher."""
        rows = self._query(f"SELECT p.id FROM passages p JOIN articles a ON a.id = p.article_id WHERE {where}", params)
        return np.array([r[0] for r in rows], dtype=np.int64)
