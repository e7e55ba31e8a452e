"""Searching a published index: :class:`Searcher` and its :class:`SearchHit` results."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import Settings
from .embedding import Embedder, load_embedder
from .errors import IndexMismatchError, InvalidRequestError, NotFoundError
from .store import IndexLayout, IndexManifest, IndexVersion, PassageRecord, StoredArticle

MAX_QUERY_CHARS = 2000
MAX_K = 1000


@dataclass(frozen=True)
class SearchHit:
    """One matching passage. ``start``/``end`` are character offsets into the article body."""

    rank: int
    score: float
    passage_id: int
    article_id: str
    title: str
    url: str | None
    paragraph: int
    last_paragraph: int
    start: int
    end: int
    text: str
    published: str | None = None
    source: str | None = None
    tags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "score": round(float(self.score), 6),
            "passage_id": self.passage_id,
            "article_id": self.article_id,
            "title": self.title,
            "url": self.url,
            "paragraph": self.paragraph,
            "last_paragraph": self.last_paragraph,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "published": self.published,
            "source": self.source,
            "tags": list(self.tags),
        }


def validate_query(query: object) -> str:
    if not isinstance(query, str):
        raise InvalidRequestError("query must be a string")
    if not query.strip():
        raise InvalidRequestError("query must not be empty")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidRequestError(f"query is longer than {MAX_QUERY_CHARS} characters")
    return query


def validate_k(k: object, max_k: int = MAX_K) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise InvalidRequestError("k must be an integer")
    if not 1 <= k <= max_k:
        raise InvalidRequestError(f"k must be between 1 and {max_k}")
    return k


def _hit(rank: int, score: float, rec: PassageRecord) -> SearchHit:
    return SearchHit(
        rank=rank,
        score=float(score),
        passage_id=rec.id,
        article_id=rec.article_id,
        title=rec.title,
        url=rec.url,
        paragraph=rec.paragraph,
        last_paragraph=rec.last_paragraph,
        start=rec.start,
        end=rec.end,
        text=rec.text,
        published=rec.published,
        source=rec.source,
        tags=rec.tags,
    )


class Searcher:
    """Search one index directory. Open once, share between threads, ``close()`` when done.

    The searcher follows the index directory: :meth:`reload` (or :meth:`maybe_reload`, rate-limited) switches to
    a newly published version. The switch is one reference assignment, so a search that is running keeps the
    version it started with and every result comes from exactly one complete version.
    """

    def __init__(self, layout: IndexLayout, version: IndexVersion, embedder: Embedder, settings: Settings) -> None:
        self._layout = layout
        self._version = version
        self._embedder = embedder
        self._settings = settings
        self._reload_lock = threading.Lock()
        self._last_check = time.monotonic()
        self._closed = False

    @classmethod
    def open(
        cls,
        index_dir: str | Path | None = None,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
    ) -> Searcher:
        """Open the current version of the index at ``index_dir`` (default ``settings.index_dir``).

        Fails with :class:`IndexMismatchError` when the index was built with another model or dimension than
        the embedder (by default, the one ``settings`` names), rather than returning meaningless results.
        """
        settings = settings or Settings()
        layout = IndexLayout(index_dir if index_dir is not None else settings.index_dir)
        version = IndexVersion(layout.current_path())
        if embedder is None:
            # No model named: use the one the index was built with. A named model must match it.
            if settings.model is not None:
                _check_model_name(version.manifest, settings.model)
            embedder = load_embedder(settings.with_(model=settings.model or version.manifest.model_id))
        _check_compatible(version.manifest, embedder)
        return cls(layout, version, embedder, settings)

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def manifest(self) -> IndexManifest:
        return self._version.manifest

    @property
    def version(self) -> IndexVersion:
        return self._version

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def index_dir(self) -> Path:
        return self._layout.root

    def close(self) -> None:
        self._closed = True
        self._version.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reload(self) -> bool:
        """Switch to the published version if it changed; returns True when it did."""
        with self._reload_lock:
            self._last_check = time.monotonic()
            current = self._layout.current_version()
            if current is None or current == self._version.version_id:
                return False
            version = IndexVersion(self._layout.current_path())
            _check_compatible(version.manifest, self._embedder)
            # The old version is not closed: searches in flight still use it; it is freed when they finish.
            self._version = version
            return True

    def maybe_reload(self) -> bool:
        """:meth:`reload` at most once per ``settings.reload_check_seconds``."""
        if time.monotonic() - self._last_check < self._settings.reload_check_seconds:
            return False
        return self.reload()

    # -- search --------------------------------------------------------------------------------------

    def search(self, query: str, k: int = 10, *, version: IndexVersion | None = None) -> list[SearchHit]:
        """The ``k`` passages that best match ``query``, best first.

        ``version`` pins the index version (take it from :attr:`version` first when the caller must know which
        version answered, e.g. to report it); by default the current one.
        """
        return self.search_batch([query], k, version=version)[0]

    def search_batch(
        self, queries: Sequence[str], k: int = 10, *, version: IndexVersion | None = None
    ) -> list[list[SearchHit]]:
        """Several queries, embedded in one batch."""
        for q in queries:
            validate_query(q)
        validate_k(k)
        version = version or self._version
        # Thread-safe: concurrent searches share the embedder (whose model calls are coalesced).
        vectors = self._embedder.embed_queries(list(queries))
        scores, ids = version.search_vectors(vectors, k)
        return [self._hits(version, s, i) for s, i in zip(scores, ids, strict=True)]

    def _hits(self, version: IndexVersion, scores: np.ndarray, ids: np.ndarray) -> list[SearchHit]:
        keep = [(float(s), int(i)) for s, i in zip(scores, ids, strict=True) if i >= 0]
        records = version.passages([i for _, i in keep])
        return [_hit(rank, s, records[i]) for rank, (s, i) in enumerate(keep, start=1) if i in records]

    def article(self, article_id: str) -> StoredArticle:
        stored = self._version.article(article_id)
        if stored is None:
            raise NotFoundError(f"no article with id {article_id!r}")
        return stored


def _check_model_name(manifest: IndexManifest, model: str) -> None:
    from .embedding import resolve_model

    if resolve_model(model)[0] != manifest.model_id:
        raise IndexMismatchError(
            f"index was built with model {manifest.model_id!r}, not {model!r}; rebuild the index with "
            f"'semsearch reindex --full' to change models, or leave the model setting unset"
        )


def _check_compatible(manifest: IndexManifest, embedder: Embedder) -> None:
    if manifest.model_id != embedder.model_id or manifest.dim != embedder.dim:
        raise IndexMismatchError(
            f"index was built with model {manifest.model_id!r} (dimension {manifest.dim}) but the embedder is "
            f"{embedder.model_id!r} (dimension {embedder.dim}); rebuild the index or use the same model"
        )
