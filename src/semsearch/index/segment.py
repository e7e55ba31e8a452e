"""One immutable segment: the vectors, keyword postings and metadata of passages written together.

A segment is written once (by an update, or by a merge of other segments) into ``staging/``, fsynced and renamed
into ``segments/<segment-id>/``; from then on it never changes, and every version that names it shares it::

    segments/<segment-id>/
        segment.json        rows, passage id range, the vectors' and postings' manifest entries, build seconds
        ids.npy             passage id of each row (int64, ascending)
        article_keys.npy    per row, a 64-bit key equal for the passages of one article (see :func:`article_keys`)
        vectors.npy         fp32 rows; ann.faiss for a large segment (:mod:`semsearch.index.vectors`)
        postings/           BM25 postings (:mod:`semsearch.index.postings`)
        meta.sqlite         the segment's articles and passages (text, offsets, metadata)

Rows are ``0 .. rows - 1`` in passage id order, so a passage id is found by binary search of ``ids.npy``. Which
rows are deleted is not the segment's business: a version lists deleted passage ids, and searches take the
resulting masks (:mod:`semsearch.index.reader`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexCorruptError
from ..ingest.articles import Article
from ..ingest.chunking import Passage, embed_hash
from ..ingest.dates import normalise_date
from .integrity import FILES, file_records, is_sealed, seal_json, verify_files
from .layout import IndexLayout, fsync_tree, new_version_id
from .postings import SegmentPostings, merge_postings, write_postings
from .vectors import DEFAULT_ANN_MIN_ROWS, SegmentVectors, write_vectors

SEGMENT_FORMAT = 1
SEGMENT_FILE = "segment.json"
IDS_FILE = "ids.npy"
KEYS_FILE = "article_keys.npy"
POSTINGS_DIR = "postings"
META_DB = "meta.sqlite"

SCHEMA = """
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
    content_hash TEXT NOT NULL,
    first_passage INTEGER NOT NULL
);
CREATE TABLE passages (
    id INTEGER PRIMARY KEY,
    article_id TEXT NOT NULL REFERENCES articles(id),
    ordinal INTEGER NOT NULL,
    paragraph INTEGER NOT NULL,
    last_paragraph INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    text TEXT NOT NULL,
    embed_text TEXT NOT NULL,
    embed_hash TEXT NOT NULL
);
CREATE TABLE article_tags (
    article_id TEXT NOT NULL REFERENCES articles(id),
    tag TEXT NOT NULL
);
"""
# Built after the rows are in (faster than maintaining them row by row).
INDEXES = """
CREATE INDEX passages_by_article ON passages(article_id, ordinal);
CREATE INDEX passages_by_embed_hash ON passages(embed_hash);
CREATE INDEX article_tags_by_tag ON article_tags(tag);
CREATE INDEX articles_by_source ON articles(source);
CREATE INDEX articles_by_published ON articles(published);
"""


def article_key(article_id: str, title: str) -> int:
    """A 64-bit key equal for the passages of one article and for articles with the same non-empty title: those
    are the parts of one document in a corpus cut into passages before indexing (BEIR-style corpora of Wikipedia
    passages, or one record per paragraph), which fusion treats as the one article they are
    (:mod:`semsearch.retrieve.fusion`). A hash rather than a counter, so segments written apart agree."""
    key = f"t:{title.strip()}" if title.strip() else f"a:{article_id}"
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def connect_db(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        # immutable=1: a segment never changes once named, so SQLite needs no locks (safe across fork too).
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = OFF")  # a staging file: a crash discards it whole
        conn.execute("PRAGMA synchronous = OFF")  # fsynced once, before the rename that publishes it
    conn.row_factory = sqlite3.Row
    return conn


# ------------------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class NewPassage:
    """A passage to write: its id, its article and its chunk."""

    id: int
    article: Article
    passage: Passage


class SegmentWriter:
    """Writes one new segment in ``staging/`` from articles and their passages (an update), and renames it into
    ``segments/`` on :meth:`finish`. Use under the writer lock."""

    def __init__(self, layout: IndexLayout, dim: int, *, ann_min_rows: int = DEFAULT_ANN_MIN_ROWS) -> None:
        self.layout = layout
        self.dim = dim
        self.ann_min_rows = ann_min_rows
        self.segment_id = new_version_id()
        self.path = layout.staging_dir / f"segment-{self.segment_id}"
        self.path.mkdir(parents=True)
        self._conn = connect_db(self.path / META_DB, readonly=False)
        self._conn.executescript(SCHEMA)
        self._ids: list[int] = []
        self._keys: list[int] = []
        self._texts: list[str] = []
        self._vectors: list[np.ndarray] = []
        self.articles = 0

    @property
    def rows(self) -> int:
        return len(self._ids)

    def add_article(
        self, article: Article, passages: Sequence[Passage], ids: Sequence[int], vectors: np.ndarray
    ) -> None:
        """One article with its passages (ids ascending, above every id already written) and their vectors."""
        if vectors.shape != (len(passages), self.dim):
            raise ValueError(f"expected vectors of shape {(len(passages), self.dim)}, got {vectors.shape}")
        if not passages:
            return
        if self._ids and ids[0] <= self._ids[-1]:
            raise ValueError("passage ids must ascend across a segment")
        self._conn.execute(
            "INSERT INTO articles (id, title, text, url, published, source, tags, metadata, path, content_hash,"
            " first_passage) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                int(ids[0]),
            ],
        )
        self._conn.executemany(
            "INSERT INTO article_tags (article_id, tag) VALUES (?, ?)", [(article.id, t) for t in article.tags]
        )
        self._conn.executemany(
            'INSERT INTO passages (id, article_id, ordinal, paragraph, last_paragraph, start, "end", text,'
            " embed_text, embed_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (int(pid), article.id, p.ordinal, p.paragraph, p.last_paragraph, p.start, p.end, p.text, p.embed_text,
                 embed_hash(p.embed_text))
                for pid, p in zip(ids, passages, strict=True)
            ],
        )  # fmt: skip
        key = article_key(article.id, article.title)
        self._ids.extend(int(i) for i in ids)
        self._keys.extend([key] * len(passages))
        self._texts.extend(p.embed_text for p in passages)
        self._vectors.append(np.ascontiguousarray(vectors, dtype=np.float32))
        self.articles += 1

    def finish(self, started: float | None = None) -> str | None:
        """Write the vectors and postings, fsync, and rename the segment into ``segments/``; returns its id, or
        None (and removes it) when no passage was added."""
        started = time.perf_counter() if started is None else started
        if not self._ids:
            self.abort()
            return None
        self._conn.executescript(INDEXES)
        self._conn.commit()
        self._conn.close()
        ids = np.array(self._ids, dtype=np.int64)
        vectors = np.concatenate(self._vectors)
        info = _write_arrays(self.path, ids, np.array(self._keys, dtype=np.int64), vectors, self.ann_min_rows)
        info["postings"] = write_postings(self._texts, self.path / POSTINGS_DIR)
        info["articles"] = self.articles
        return _publish_segment(self.layout, self.path, self.segment_id, info, started, source="write")

    def abort(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        shutil.rmtree(self.path, ignore_errors=True)


def _write_arrays(
    path: Path, ids: np.ndarray, keys: np.ndarray, vectors: np.ndarray, ann_min_rows: int
) -> dict[str, Any]:
    np.save(path / IDS_FILE, ids, allow_pickle=False)
    np.save(path / KEYS_FILE, keys, allow_pickle=False)
    return {"vectors": write_vectors(vectors, path, ann_min_rows=ann_min_rows)}


def _seal_segment(staging: Path, segment_id: str, info: dict[str, Any], started: float, source: str) -> None:
    """Write ``segment.json`` and fsync the whole segment, still in staging."""
    ids = np.load(staging / IDS_FILE, mmap_mode="r")
    info.update(
        format=SEGMENT_FORMAT,
        segment_id=segment_id,
        rows=len(ids),
        min_id=int(ids[0]),
        max_id=int(ids[-1]),
        source=source,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        build_seconds=round(time.perf_counter() - started, 3),
    )
    del ids
    names = [p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file() and p.name != SEGMENT_FILE]
    info[FILES] = file_records(staging, names)
    sealed = seal_json(info)
    (staging / SEGMENT_FILE).write_text(json.dumps(sealed, indent=2) + "\n", encoding="utf-8")
    info.update(sealed)
    fsync_tree(staging)


def install_segment(layout: IndexLayout, staging: Path, segment_id: str) -> Path:
    """Rename a sealed segment into ``segments/``. Call with the writer lock held, just before writing the
    version that names it (an unnamed segment in ``segments/`` is garbage to the next prune)."""
    layout.segments_dir.mkdir(parents=True, exist_ok=True)
    final = layout.segment_path(segment_id)
    os.rename(staging, final)
    fsync_tree(layout.segments_dir, recursive=False)
    return final


def _publish_segment(
    layout: IndexLayout, staging: Path, segment_id: str, info: dict[str, Any], started: float, source: str
) -> str:
    _seal_segment(staging, segment_id, info, started, source)
    install_segment(layout, staging, segment_id)
    return segment_id


def merge_segments(
    parts: Sequence[tuple[Segment, np.ndarray | None]],
    staging: Path,
    segment_id: str,
    *,
    ann_min_rows: int = DEFAULT_ANN_MIN_ROWS,
) -> dict[str, Any]:
    """Write and seal, in ``staging``, one segment holding the live rows of ``parts`` ((segment, deleted mask or
    None)); :func:`install_segment` moves it into place. Nothing is re-analysed or re-embedded: postings are merged
    as arrays, vectors copied, metadata rows copied by SQL. Parts are taken in passage id order, so the new rows
    ascend. Returns the segment's manifest entry."""
    started = time.perf_counter()
    parts = sorted(parts, key=lambda part: part[0].min_id)
    keeps = [np.flatnonzero(~mask) if mask is not None else np.arange(seg.rows) for seg, mask in parts]
    staging.mkdir(parents=True, exist_ok=True)
    ids = np.concatenate([seg.ids[keep] for (seg, _), keep in zip(parts, keeps, strict=True)])
    if len(ids) == 0:
        raise ValueError("nothing to merge: every row is deleted")
    keys = np.concatenate([seg.article_keys[keep] for (seg, _), keep in zip(parts, keeps, strict=True)])
    vectors = np.concatenate([seg.vectors.mapped()[keep] for (seg, _), keep in zip(parts, keeps, strict=True)])
    info = _write_arrays(staging, ids, keys, vectors, ann_min_rows)
    del vectors
    info["postings"] = merge_postings(
        [(seg.postings, keep) for (seg, _), keep in zip(parts, keeps, strict=True)], staging / POSTINGS_DIR
    )
    conn = connect_db(staging / META_DB, readonly=False)
    try:
        conn.executescript(SCHEMA)
        # Deletions remove whole articles, so an article is dropped exactly when its first passage is.
        conn.execute("CREATE TEMP TABLE dead (id INTEGER PRIMARY KEY)")
        for seg, mask in parts:
            conn.execute("ATTACH DATABASE ? AS src", [str(seg.path / META_DB)])
            conn.execute("DELETE FROM dead")
            if mask is not None:
                conn.executemany("INSERT INTO dead (id) VALUES (?)", ((int(i),) for i in seg.ids[mask]))
            conn.execute("INSERT INTO passages SELECT * FROM src.passages WHERE id NOT IN (SELECT id FROM dead)")
            conn.execute(
                "INSERT INTO articles SELECT * FROM src.articles WHERE first_passage NOT IN (SELECT id FROM dead)"
            )
            conn.execute(
                "INSERT INTO article_tags SELECT t.* FROM src.article_tags t JOIN src.articles a ON a.id = t.article_id"
                " WHERE a.first_passage NOT IN (SELECT id FROM dead)"
            )
            conn.commit()
            conn.execute("DETACH DATABASE src")
        conn.executescript(INDEXES)
        info["articles"] = int(conn.execute("SELECT count(*) FROM articles").fetchone()[0])
        conn.commit()
    finally:
        conn.close()
    _seal_segment(staging, segment_id, info, started, source="merge")
    return info


# ------------------------------------------------------------------------------------------------------- reading


def rows_of(ids: np.ndarray, passage_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, found) of each passage id in a segment's ascending ``ids``; ``row`` is meaningless where ``found`` is
    False."""
    pids = np.asarray(passage_ids, dtype=np.int64)
    if not len(ids) or not pids.size:
        return np.zeros(pids.shape, dtype=np.int64), np.zeros(pids.shape, dtype=bool)
    rows = np.minimum(np.searchsorted(ids, pids), len(ids) - 1)
    return rows, ids[rows] == pids


def _close_in(conn: sqlite3.Connection, pid: int) -> None:
    if os.getpid() == pid:  # never a connection a forked child inherited
        with contextlib.suppress(sqlite3.Error):
            conn.close()


def _check_sqlite_header(path: Path) -> None:
    """The cheap checks of a metadata database (its checksum is in ``segment.json`` for segments that have one):
    it exists, starts with SQLite's header, and is as long as its header says."""
    try:
        with open(path, "rb") as fh:
            header = fh.read(100)
            size = os.fstat(fh.fileno()).st_size
    except FileNotFoundError:
        raise IndexCorruptError(f"{path} is missing") from None
    except OSError as exc:
        raise IndexCorruptError(f"cannot read {path}: {exc}") from exc
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        raise IndexCorruptError(f"{path} is damaged: not an SQLite database ({size} bytes)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count in the header is valid when its "version valid for" matches the change counter.
    if header[92:96] == header[24:28] and pages * page_size != size:
        raise IndexCorruptError(f"{path} is damaged: {size} bytes where its header says {pages * page_size}")


class Segment:
    """A published segment opened for reading. Everything large is memory-mapped read-only (shared by server
    workers through the page cache); the metadata database is opened per process on first use."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        info_path = self.path / SEGMENT_FILE
        try:
            self.info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise IndexCorruptError(f"segment {self.path} is missing") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IndexCorruptError(f"{info_path} is not valid JSON: {exc}") from exc
        except OSError as exc:
            raise IndexCorruptError(f"cannot read {info_path}: {exc}") from exc
        if not isinstance(self.info, dict):
            raise IndexCorruptError(f"{info_path} is not a JSON object")
        # Before any file is parsed: a damaged file must not reach numpy, faiss or SQLite.
        if is_sealed(self.info, info_path):
            verify_files(self.path, self.info[FILES], info_path)
        if self.info.get("format") != SEGMENT_FORMAT:
            raise IndexCorruptError(f"{self.path}: unknown segment format {self.info.get('format')!r}")
        try:
            self.segment_id: str = str(self.info["segment_id"])
            self.rows: int = int(self.info["rows"])
            self.min_id: int = int(self.info["min_id"])
            self.max_id: int = int(self.info["max_id"])
            vectors_info = dict(self.info["vectors"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexCorruptError(f"{info_path} is damaged: bad or missing {exc}") from exc
        if self.segment_id != self.path.name:
            raise IndexCorruptError(f"{info_path} describes segment {self.segment_id!r}, not {self.path.name!r}")
        try:
            self.ids = np.asarray(np.load(self.path / IDS_FILE, mmap_mode="r", allow_pickle=False))
            self.article_keys = np.asarray(np.load(self.path / KEYS_FILE, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError, EOFError) as exc:
            raise IndexCorruptError(f"cannot read {self.path}: {exc}") from exc
        if self.ids.shape != (self.rows,) or self.article_keys.shape != (self.rows,):
            raise IndexCorruptError(f"{self.path}: ids or article keys disagree with {SEGMENT_FILE}")
        _check_sqlite_header(self.path / META_DB)
        self.vectors = SegmentVectors(self.path, vectors_info)
        if self.vectors.rows != self.rows:
            raise IndexCorruptError(
                f"{self.path} holds {self.vectors.rows} vectors of dimension {self.vectors.dim}, "
                f"its manifest says {self.rows}"
            )
        self._postings: SegmentPostings | None = None
        self._db_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()

    @property
    def postings(self) -> SegmentPostings:
        if self._postings is None:
            try:
                self._postings = SegmentPostings(self.path / POSTINGS_DIR)
            except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
                raise IndexCorruptError(f"cannot read {self.path / POSTINGS_DIR}: {exc}") from exc
            if self._postings.n_docs != self.rows:
                raise IndexCorruptError(
                    f"{self.path / POSTINGS_DIR} holds {self._postings.n_docs} rows, not {self.rows}"
                )
        return self._postings

    def rows_of(self, passage_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, found) for each passage id; ``row`` is meaningless where ``found`` is False."""
        return rows_of(self.ids, passage_ids)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._db_lock:
            if self._conn is None or os.getpid() != self._pid:  # a forked worker opens its own connection
                self._conn = connect_db(self.path / META_DB, readonly=True)
                self._pid = os.getpid()
                # A connection is freed by the cyclic garbage collector only (it is part of a reference cycle),
                # which in a server worker may not run for a long time: close it as soon as the segment is
                # dropped, so a replaced segment's file is not held open.
                weakref.finalize(self, _close_in, self._conn, self._pid)
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.ProgrammingError:
                raise  # a bug in the caller's SQL, not the file
            except sqlite3.DatabaseError as exc:  # "database disk image is malformed", "file is not a database"
                raise IndexCorruptError(f"{self.path / META_DB} is damaged: {exc}") from exc

    def close(self) -> None:
        with self._db_lock:
            if self._conn is not None and os.getpid() == self._pid:
                self._conn.close()
            self._conn = None
        self.vectors.close()
