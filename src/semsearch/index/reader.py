"""Reading a published index version: its segments less its deleted passages, as one index.

A version is a manifest naming segments plus ``deleted.npy`` (see :mod:`semsearch.index.layout`). Opening one
opens its segments (memory-mapped: server workers share the pages, after a hot reload too) and turns the deleted
passage ids into one boolean mask per segment. Every search and lookup then leaves deleted passages out, so a
version reads exactly as the index of its live passages.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexCorruptError, SemsearchError
from ..ingest.articles import Article
from .integrity import FILES, verify_files
from .keyword import VersionKeyword
from .layout import DELETED, MANIFEST, IndexLayout
from .manifest import IndexManifest, read_manifest_data
from .segment import Segment

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


_PASSAGE_SELECT = """
SELECT p.id, p.article_id, p.ordinal, p.paragraph, p.last_paragraph, p.start, p."end", p.text,
       a.title, a.url, a.published, a.source, a.tags
FROM passages p JOIN articles a ON a.id = p.article_id
"""


def _passage_from_row(row: Any) -> PassageRecord:
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


def _article_from_row(row: Any) -> Article:
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


def _chunks(values: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for lo in range(0, len(values), size):
        yield values[lo : lo + size]


class IndexVersion:
    """A published version opened for reading. Safe to share between threads; immutable.

    ``segments``: already opened segments to reuse by id (a reload shares the segments the old version had
    open with the new one, instead of opening them again)."""

    def __init__(self, path: Path, segments: dict[str, Segment] | None = None) -> None:
        self.path = Path(path)
        self._owned: list[Segment] = []
        try:
            self._open(segments or {})
        except SemsearchError:
            self.close()
            raise
        except (OSError, ValueError, EOFError, KeyError, TypeError, IndexError, RuntimeError, sqlite3.Error) as exc:
            # What the checks above did not foresee is still a damaged index, never a crash of the caller.
            self.close()
            raise IndexCorruptError(f"cannot open index version {self.path}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        self._keyword: VersionKeyword | None = None
        self._keyword_lock = threading.Lock()

    def _open(self, reuse: dict[str, Segment]) -> None:
        data = read_manifest_data(self.path)
        self.manifest = IndexManifest.from_dict(data, self.path)
        root = self.path.parent.parent
        self.segments: list[Segment] = []
        for segment_id in self.manifest.segments:
            if segment_id in reuse:
                self.segments.append(reuse[segment_id])  # verified when it was first opened
                continue
            segment = Segment(root / "segments" / segment_id)
            self.segments.append(segment)
            self._owned.append(segment)
        if FILES in data:
            verify_files(self.path, data[FILES], self.path / MANIFEST)
        deleted_path = self.path / DELETED
        try:
            self.deleted_ids = np.load(deleted_path, allow_pickle=False).astype(np.int64, copy=False)
        except (OSError, ValueError, EOFError) as exc:
            raise IndexCorruptError(f"cannot read {deleted_path}: {exc}") from exc
        if self.deleted_ids.ndim != 1 or len(self.deleted_ids) != self.manifest.deleted:
            raise IndexCorruptError(f"{deleted_path} disagrees with the manifest's {self.manifest.deleted} deletions")
        self.masks: list[np.ndarray | None] = []
        live = 0
        for segment in self.segments:
            if segment.vectors.dim != self.manifest.dim:
                raise IndexCorruptError(
                    f"{segment.path} holds vectors of dimension {segment.vectors.dim}, manifest says {self.manifest.dim}"
                )
            inside = self.deleted_ids[
                np.searchsorted(self.deleted_ids, segment.min_id) : np.searchsorted(
                    self.deleted_ids, segment.max_id, side="right"
                )
            ]
            rows, found = segment.rows_of(inside)
            if found.any():
                mask = np.zeros(segment.rows, dtype=bool)
                mask[rows[found]] = True
                self.masks.append(mask)
                live += segment.rows - int(found.sum())
            else:
                self.masks.append(None)
                live += segment.rows
        if live != self.manifest.passages:
            raise IndexCorruptError(
                f"{self.path}: the segments hold {live} live vectors of dimension {self.manifest.dim}, "
                f"manifest says {self.manifest.passages} passages"
            )

    @property
    def version_id(self) -> str:
        return self.manifest.version_id

    def segment_map(self) -> dict[str, Segment]:
        return {s.segment_id: s for s in self.segments}

    def close(self) -> None:
        """Close the segments this version opened (not those it shares with the version it was opened beside)."""
        for segment in self._owned:
            segment.close()
        self._owned = []

    def adopt(self, older: IndexVersion) -> None:
        """Take over closing the segments this version shares with ``older``, which it opened (so closing the
        newest version closes them; ``older`` may still serve searches in flight and is left to the garbage
        collector, which releases the segments only it held)."""
        mine = {id(s) for s in self.segments}
        self._owned += [s for s in older._owned if id(s) in mine]
        older._owned = [s for s in older._owned if id(s) not in mine]

    @property
    def keyword(self) -> VersionKeyword:
        """The version's BM25 search, built on first use (reads the rows' lengths and the deletion masks)."""
        if self._keyword is None:
            with self._keyword_lock:
                if self._keyword is None:
                    self._keyword = VersionKeyword(
                        [(s.postings, s.ids, s.article_keys, m) for s, m in zip(self.segments, self.masks, strict=True)]
                    )
        return self._keyword

    def warm(self) -> None:
        """Load what every search touches (the keyword statistics; every vector page, by reading them), so the
        first query on this version pays no loading. Raises :class:`IndexCorruptError` for an unreadable part."""
        try:
            self.keyword.warm()
            for segment in self.segments:
                segment.vectors.warm()
        except SemsearchError:
            raise
        except (OSError, ValueError, EOFError, KeyError, IndexError, RuntimeError) as exc:
            raise IndexCorruptError(f"cannot read index version {self.path}: {type(exc).__name__}: {exc}") from exc

    # -- vectors -------------------------------------------------------------------------------------

    def _segment_rows(self, passage_ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per segment: (positions in ``passage_ids``, rows) of the ids it holds."""
        out = []
        for segment in self.segments:
            rows, found = segment.rows_of(passage_ids)
            out.append((np.flatnonzero(found), rows[found]))
        return out

    def search_vectors(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` live passage ids and exact inner-product scores per query, best first; ids are -1 where fewer
        exist. ``allowed_ids`` restricts the search to those passages exactly, so ``k`` results come back whenever
        ``k`` allowed live passages exist."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        nq = queries.shape[0]
        k = max(1, min(k, max(self.manifest.passages, 1)))
        all_scores = [np.full((nq, k), -np.inf, dtype=np.float32)]
        all_ids = [np.full((nq, k), -1, dtype=np.int64)]
        allowed_sorted = None if allowed_ids is None else np.unique(np.asarray(allowed_ids, dtype=np.int64))
        for segment, mask in zip(self.segments, self.masks, strict=True):
            allowed_rows = None
            if allowed_sorted is not None:
                rows, found = segment.rows_of(allowed_sorted)
                allowed_rows = rows[found]
                if not allowed_rows.size:
                    continue
            scores, rows = segment.vectors.search(queries, min(k, segment.rows), deleted=mask, allowed=allowed_rows)
            all_scores.append(scores)
            all_ids.append(np.where(rows >= 0, segment.ids[np.maximum(rows, 0)], -1))
        if len(all_scores) == 2:
            scores, ids = all_scores[1], all_ids[1]
            if scores.shape[1] < k:
                scores = np.concatenate([scores, all_scores[0][:, : k - scores.shape[1]]], axis=1)
                ids = np.concatenate([ids, all_ids[0][:, : k - ids.shape[1]]], axis=1)
            return scores, ids
        scores = np.concatenate(all_scores, axis=1)
        ids = np.concatenate(all_ids, axis=1)
        # Best first; equal scores by passage id, so the order does not depend on the segments' order.
        order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max), -scores), axis=1)[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)

    def vectors_for(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Stored vectors of the given passage ids (live or deleted, as long as a segment of this version holds
        them: for reuse on reindex)."""
        pids = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.zeros((len(pids), self.manifest.dim), dtype=np.float32)
        seen = np.zeros(len(pids), dtype=bool)
        for segment, (positions, rows) in zip(self.segments, self._segment_rows(pids), strict=True):
            if positions.size:
                out[positions] = segment.vectors.vectors(rows)
                seen[positions] = True
        if not seen.all():
            raise KeyError(f"passage ids not in version {self.version_id}: {pids[~seen][:5].tolist()}")
        return out

    def live(self, passage_ids: np.ndarray) -> np.ndarray:
        """True for each id that is not deleted in this version."""
        pids = np.asarray(passage_ids, dtype=np.int64)
        if not len(self.deleted_ids):
            return np.ones(pids.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(self.deleted_ids, pids), len(self.deleted_ids) - 1)
        return self.deleted_ids[pos] != pids

    # -- metadata ------------------------------------------------------------------------------------

    def _live_rows(self, rows: list[Any], key: str = "id") -> list[Any]:
        if not rows or not len(self.deleted_ids):
            return rows
        keep = self.live(np.array([r[key] for r in rows], dtype=np.int64))
        return [r for r, k in zip(rows, keep.tolist(), strict=True) if k]

    def passages(self, ids: Sequence[int]) -> dict[int, PassageRecord]:
        if not len(ids):
            return {}
        wanted = np.asarray(ids, dtype=np.int64)
        out: dict[int, PassageRecord] = {}
        for segment, (positions, _) in zip(self.segments, self._segment_rows(wanted), strict=True):
            mine = [int(i) for i in wanted[positions]]
            for chunk in _chunks(mine):
                rows = segment.query(f"{_PASSAGE_SELECT} WHERE p.id IN ({','.join('?' * len(chunk))})", chunk)
                for row in self._live_rows(rows):
                    out[row["id"]] = _passage_from_row(row)
        return out

    def article(self, article_id: str) -> StoredArticle | None:
        for segment in reversed(self.segments):  # an article updated lately is in a late segment
            rows = self._live_rows(
                segment.query("SELECT * FROM articles WHERE id = ?", [article_id]), key="first_passage"
            )
            if not rows:
                continue
            passages = segment.query(f"{_PASSAGE_SELECT} WHERE p.article_id = ? ORDER BY p.ordinal", [article_id])
            return StoredArticle(
                article=_article_from_row(rows[0]),
                content_hash=rows[0]["content_hash"],
                passages=tuple(_passage_from_row(r) for r in passages),
            )
        return None

    def article_hashes(self, article_ids: Iterable[str] | None = None) -> dict[str, str]:
        """Content hash of each live article (of those in ``article_ids``, when given)."""
        out: dict[str, str] = {}
        wanted = None if article_ids is None else list(dict.fromkeys(article_ids))
        for segment in self.segments:
            if wanted is None:
                rows = segment.query("SELECT id, content_hash, first_passage FROM articles")
            else:
                rows = []
                for chunk in _chunks(wanted):
                    rows += segment.query(
                        f"SELECT id, content_hash, first_passage FROM articles WHERE id IN ({','.join('?' * len(chunk))})",
                        chunk,
                    )
            out.update((r["id"], r["content_hash"]) for r in self._live_rows(rows, key="first_passage"))
        return out

    def article_ids_from(self, locations: Iterable[str]) -> set[str]:
        """Live articles read from these files (records: ``file:line``) or from under these directories."""
        found: set[str] = set()
        for location in dict.fromkeys(locations):
            for segment in self.segments:
                rows = segment.query(
                    "SELECT id, first_passage FROM articles WHERE path = ? OR substr(path, 1, ?) IN (?, ?)",
                    (location, len(location) + 1, location + ":", location.rstrip("/") + "/"),
                )
                found.update(r["id"] for r in self._live_rows(rows, key="first_passage"))
        return found

    def article_passage_ids(self, article_ids: Iterable[str]) -> np.ndarray:
        """Live passage ids of the given articles (for deleting them)."""
        wanted = list(dict.fromkeys(article_ids))
        found: list[int] = []
        for segment in self.segments:
            for chunk in _chunks(wanted):
                rows = segment.query(
                    f"SELECT id FROM passages WHERE article_id IN ({','.join('?' * len(chunk))})", chunk
                )
                found += [r["id"] for r in self._live_rows(rows)]
        return np.unique(np.array(found, dtype=np.int64))

    def embed_hash_ids(self, hashes: Iterable[str]) -> dict[str, int]:
        """For each embed hash present in this version's segments, one passage id holding that vector."""
        wanted = list(set(hashes))
        found: dict[str, int] = {}
        for segment in self.segments:
            missing = [h for h in wanted if h not in found]
            for chunk in _chunks(missing):
                for row in segment.query(
                    f"SELECT embed_hash, min(id) AS id FROM passages WHERE embed_hash IN ({','.join('?' * len(chunk))})"
                    " GROUP BY embed_hash",
                    chunk,
                ):
                    found.setdefault(row["embed_hash"], row["id"])
        return found

    def filter_passage_ids(self, where: str, params: Sequence[Any]) -> np.ndarray:
        """Ids of live passages whose article matches a SQL condition on ``a`` (articles) built by the searcher."""
        parts = []
        for segment in self.segments:
            rows = segment.query(
                f"SELECT p.id FROM passages p JOIN articles a ON a.id = p.article_id WHERE {where}", params
            )
            parts.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return ids[self.live(ids)]

    def stats(self) -> dict[str, Any]:
        """Segments, their kinds and measured recall, deletions: for ``semsearch info`` and ``/stats``."""
        segments = []
        for segment, mask in zip(self.segments, self.masks, strict=True):
            vectors = segment.info["vectors"]
            segments.append(
                {
                    "id": segment.segment_id,
                    "rows": segment.rows,
                    "deleted": 0 if mask is None else int(mask.sum()),
                    "vector_index": vectors["kind"],
                    "params": vectors.get("params", {}),
                    "recall_at_10": vectors.get("recall_at_10"),
                }
            )
        recalls = [(s["recall_at_10"], s["rows"]) for s in segments if s["recall_at_10"] is not None]
        return {
            "segments": segments,
            "deleted": int(self.manifest.deleted),
            "dense_recall_at_10": min((r for r, _ in recalls), default=1.0),
        }


def open_current(layout: IndexLayout) -> IndexVersion:
    """Open the published version. Without the writer lock, a merge may publish and prune the version being
    opened (a merge keeps only the newest version of a content): that is retried on the new current version,
    not reported as damage."""
    while True:
        version_id = layout.current_version()
        try:
            return IndexVersion(layout.current_path())
        except IndexCorruptError:
            if layout.current_version() == version_id:
                raise
            log.info("index version %s was replaced while it was being opened; opening the new one", version_id)
