"""The index on disk. The only module that imports faiss.

Layout of an index directory::

    index/
      CURRENT                 the published version id (replaced atomically with os.replace)
      HISTORY                 one line per publish or rollback: time, action, version id
      .lock                   writer lock (flock); readers never take it
      versions/<version-id>/  one complete, immutable version:
          manifest.json       format version, model id, dimension, chunking settings, counts, build time
          vectors.faiss       IndexIDMap2(IndexFlatIP): int64 passage ids, inner product on unit vectors
          meta.sqlite         articles and passages (text, offsets, metadata)
          keyword/            the keyword (BM25) index, when built
      staging/<version-id>/   a version being written; never read; removed by the next writer if left over

A version is built entirely in ``staging/``, fsynced, renamed into ``versions/`` and only then named in
``CURRENT``, so a reader sees either the old complete version or the new complete one, and a crash at any point
leaves the published version untouched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .articles import Article
from .chunking import Passage
from .errors import IndexCorruptError, IndexLockedError, IndexNotFoundError
from .keyword import KeywordIndex

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_HISTORY_LINES = 1000
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
META_DB = "meta.sqlite"
KEYWORD_DIR = "keyword"

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


@dataclass(frozen=True)
class IndexManifest:
    """What a version holds and how it was built. ``format_version`` guards against reading a foreign layout."""

    format_version: int
    version_id: str
    model_id: str
    dim: int
    precision: str
    chunking: dict[str, Any]
    articles: int
    passages: int
    built_at: str
    build_seconds: float
    parent_version: str | None = None
    keyword: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexManifest:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexCorruptError(
                f"index format version {version!r} is not supported (this semsearch reads {FORMAT_VERSION}); "
                "rebuild the index with 'semsearch index --full'"
            )
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError as exc:
            raise IndexCorruptError(f"manifest is incomplete: {exc}") from exc


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


def new_version_id() -> str:
    """Sortable by creation time, unique across concurrent writers."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class IndexLayout:
    """Paths and pointer operations of one index directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.staging_dir = self.root / "staging"
        self.current_file = self.root / "CURRENT"
        self.lock_file = self.root / ".lock"
        self.history_file = self.root / "HISTORY"

    def current_version(self) -> str | None:
        try:
            value = self.current_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return value or None

    def version_path(self, version_id: str) -> Path:
        return self.versions_dir / version_id

    def versions(self) -> list[str]:
        """Published versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if (p / MANIFEST).is_file())

    def current_path(self) -> Path:
        version = self.current_version()
        if version is None:
            raise IndexNotFoundError(
                f"no index at {self.root} (build one with 'semsearch index SOURCE --index-dir {self.root}')"
            )
        path = self.version_path(version)
        if not (path / MANIFEST).is_file():
            raise IndexCorruptError(f"{self.current_file} names version {version!r}, which is missing")
        return path

    def history(self) -> list[str]:
        """Published version ids, oldest first (a version appears again when rolled back to)."""
        try:
            lines = self.history_file.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [line.split()[-1] for line in lines if line.strip()]

    def publish(self, version_id: str, action: str = "publish") -> None:
        """Make ``version_id`` current: one atomic rename of the pointer file, then record it in the history.

        A crash between the two leaves a current version missing from the history; :meth:`prune` never removes
        the current version, so nothing is lost.
        """
        atomic_write_text(self.current_file, version_id + "\n")
        entries = self.history_file.read_text(encoding="utf-8").splitlines() if self.history_file.exists() else []
        entries.append(f"{datetime.now(UTC).isoformat(timespec='seconds')} {action} {version_id}")
        atomic_write_text(self.history_file, "\n".join(entries[-_HISTORY_LINES:]) + "\n")

    def previous_version(self) -> str | None:
        """The version published before the current one that still exists on disk (the rollback target)."""
        current = self.current_version()
        history = self.history()
        if current in history:
            history = history[: len(history) - 1 - history[::-1].index(current)]
        for version in reversed(history):
            if version != current and (self.version_path(version) / MANIFEST).is_file():
                return version
        return None

    def prune(self, keep: int) -> list[str]:
        """Keep the current version and the last ``keep`` published ones; delete the rest, including versions
        that were written but never published (a writer killed before the switch). Call with the lock held."""
        current = self.current_version()
        recent: list[str] = []
        for version in reversed(self.history()):
            if version not in recent:
                recent.append(version)
            if len(recent) >= keep:
                break
        wanted = set(recent) | ({current} if current else set())
        doomed = [v for v in self.all_version_dirs() if v not in wanted]
        for version in doomed:
            shutil.rmtree(self.version_path(version), ignore_errors=True)
        return doomed

    def all_version_dirs(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if p.is_dir())

    def clean_staging(self) -> list[str]:
        """Remove versions left half-written by a crashed writer. Call with the lock held."""
        if not self.staging_dir.is_dir():
            return []
        removed = []
        for path in self.staging_dir.iterdir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
        return removed

    @contextlib.contextmanager
    def writer_lock(self, wait: bool = False, timeout: float | None = None) -> Iterator[None]:
        """Exclusive lock for writers. ``wait=False`` fails at once with :class:`IndexLockedError`."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if not wait or (deadline is not None and time.monotonic() >= deadline):
                        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                        raise IndexLockedError(
                            f"index {self.root} is being written by {holder}; try again when it finishes"
                        ) from None
                    time.sleep(0.1)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the flock


def read_manifest(version_path: Path) -> IndexManifest:
    try:
        data = json.loads((version_path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise IndexCorruptError(f"{version_path} has no {MANIFEST}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{version_path / MANIFEST} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise IndexCorruptError(f"{version_path / MANIFEST} is not a JSON object")
    return IndexManifest.from_dict(data)


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
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
        self._conn: sqlite3.Connection | None = _connect(db, readonly=True)
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
                        self._keyword = KeywordIndex(self.path / KEYWORD_DIR)
                    except (OSError, ValueError, KeyError) as exc:
                        raise IndexCorruptError(f"cannot read {self.path / KEYWORD_DIR}: {exc}") from exc
        return self._keyword

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
                self._conn = _connect(self.path / META_DB, readonly=True)
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
            self._conn = _connect(db, readonly=False)
            base_ids, base_vectors = base.all_vectors()
            self._ids = [base_ids]
            self._vectors = [np.array(base_vectors, dtype=np.float32)]
        else:
            self._conn = _connect(db, readonly=False)
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
                article.published,
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

    def passage_texts(self) -> tuple[np.ndarray, list[str]]:
        """Ids and embedded texts (title context included) of every passage, for the keyword index."""
        rows = self._conn.execute("SELECT id, embed_text FROM passages ORDER BY id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

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
        _fsync_dir(self.path)
        self.layout.versions_dir.mkdir(parents=True, exist_ok=True)
        final = self.layout.version_path(self.version_id)
        os.rename(self.path, final)
        _fsync_dir(self.layout.versions_dir)
        self.path = final
        return manifest

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
        shutil.rmtree(self.path, ignore_errors=True)


def embed_hash(text: str) -> str:
    import hashlib

    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()
