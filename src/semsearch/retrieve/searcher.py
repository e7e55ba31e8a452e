"""The searcher of an index directory: opens its current version and follows newly published ones.

Searching itself is :class:`~semsearch.retrieve.version_searcher.VersionSearcher` (one version); this module owns
the lifecycle: opening, checking the model, warming, and switching versions (in the foreground or on a
background loader) without a search ever seeing a partial version.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import CursorExpiredError, IndexMismatchError, InvalidRequestError, SemsearchError
from ..index.layout import IndexLayout
from ..index.manifest import IndexManifest
from ..index.reader import IndexVersion, StoredArticle, open_current
from ..models.embedding import Embedder, load_embedder
from ..models.reranker import PairScorer, load_reranker
from .filters import SearchFilters
from .fusion import FUSIONS
from .paging import MAX_PAGED_RESULTS, Cursor, SearchPage, fingerprint
from .recency import Recency
from .related import related_articles
from .results import FACETS, ArticleHit, Context, Facets, SearchHit
from .validation import DEFAULT_MODE
from .version_searcher import VersionSearcher

log = logging.getLogger(__name__)


class Searcher:
    """Search one index directory. Open once, share between threads, ``close()`` when done (or ``with``).

    The searcher follows the index directory: :meth:`reload` (or :meth:`maybe_reload`, rate-limited) switches to
    a newly published version. The switch is one reference assignment, so a search that is running keeps the
    version it started with and every result comes from exactly one complete version.
    """

    def __init__(
        self,
        layout: IndexLayout,
        version: IndexVersion,
        embedder: Embedder,
        settings: Settings,
        fusion: str,
        fusion_weight: float | None = None,
        reranker: PairScorer | None = None,
    ) -> None:
        self._layout = layout
        self._reranker = reranker
        self._embedder = embedder
        self._settings = settings
        self._fusion = fusion
        self._fusion_weight = fusion_weight
        self._current = self._version_searcher(version)
        self._reload_lock = threading.Lock()
        self._last_check = time.monotonic()
        self._loader_lock = threading.Lock()  # never held while loading: requests must not wait on it
        self._loader: threading.Thread | None = None
        self._failed_version: str | None = None
        self.last_reload_error: str | None = None
        """Why the newest published version could not be switched to (None: no error); the current one serves on."""

    @classmethod
    def open(
        cls,
        index_dir: str | Path | None = None,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        fusion: str = "adaptive",
        fusion_weight: float | None = None,
        reranker: PairScorer | None = None,
    ) -> Searcher:
        """Open the current version of the index at ``index_dir`` (default ``settings.index_dir``).

        Fails with :class:`IndexMismatchError` when the index was built with another model or dimension than
        the embedder (by default, the one ``settings`` names), rather than returning meaningless results.
        ``fusion`` picks the hybrid fusion; ``fusion_weight`` overrides its keyword weight (the cap for
        ``adaptive``, the fixed weight for ``zscore``). ``reranker`` (default: the ``settings.rerank_model``
        cross-encoder, if any) reorders the best ``settings.rerank_depth`` candidates of every search.
        """
        if fusion not in FUSIONS:
            raise InvalidRequestError(f"fusion must be one of {', '.join(FUSIONS)}")
        settings = settings or Settings()
        layout = IndexLayout(index_dir if index_dir is not None else settings.index_dir)
        version = open_current(layout)
        if embedder is None:
            # No model named: use the one the index was built with. A named model must match it.
            if settings.model is not None:
                _check_model_name(version.manifest, settings.model)
            embedder = load_embedder(settings.with_(model=settings.model or version.manifest.model_id))
        _check_compatible(version.manifest, embedder)
        if reranker is None and settings.rerank_model:
            reranker = load_reranker(settings)
        return cls(layout, version, embedder, settings, fusion, fusion_weight, reranker)

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def manifest(self) -> IndexManifest:
        return self._current.version.manifest

    @property
    def version(self) -> IndexVersion:
        """The current version. Pass it to ``search(..., version=...)`` to pin several calls to one version."""
        return self._current.version

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def reranker(self) -> PairScorer | None:
        """The rerank stage's model, or None when there is none."""
        return self._reranker

    @property
    def index_dir(self) -> Path:
        return self._layout.root

    def close(self) -> None:
        self._current.version.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def warm(self) -> None:
        """Load everything the first search would otherwise load (BM25 index, vector pages, the query model's
        session on this process), so no request pays for it. The server calls it before forking its workers
        and in each worker; :meth:`reload` warms a new version before switching to it."""
        self._current.version.warm()
        self._embedder.embed_queries(["warm-up"])

    def reload(self) -> bool:
        """Switch to the published version if it changed; returns True when it did. The new version is opened,
        checked and warmed before the switch, so searches never wait for it; searches in flight finish on the
        old one."""
        with self._reload_lock:
            self._last_check = time.monotonic()
            try:
                current = self._layout.current_version()
            except SemsearchError as exc:  # a damaged CURRENT: the version in use is still whole
                self._reload_failed(None, exc)
                raise
            if current is None or current == self._current.version.version_id:
                return False
            old = self._current.version
            try:
                # Segments the versions share are reused as opened (their pages are mapped already); new ones
                # are verified against their checksums as they open.
                version = IndexVersion(self._layout.version_path(current), segments=old.segment_map())
                try:
                    _check_compatible(version.manifest, self._embedder)
                    version.warm()
                except BaseException:
                    version.close()
                    raise
            except Exception as exc:
                self._reload_failed(current, exc)
                raise
            version.adopt(old)
            # The old version is not closed: searches in flight still use it; it is freed when they finish.
            self._current = self._version_searcher(version)
            self._failed_version = self.last_reload_error = None
            return True

    def maybe_reload(self, *, wait: bool = True) -> bool:
        """:meth:`reload` at most once per ``settings.reload_check_seconds``.

        ``wait=False`` (what the HTTP service uses): when a new version has been published, open and warm it on
        a background thread and switch when it is ready. The call returns at once (False), so no request waits
        for a load, however large the index. A version that fails to load is logged, kept in
        :attr:`last_reload_error` and not retried until another version is published; searching goes on with
        the current one.
        """
        if time.monotonic() - self._last_check < self._settings.reload_check_seconds:
            return False
        if wait:
            return self.reload()
        self._last_check = time.monotonic()
        try:
            current = self._layout.current_version()
        except SemsearchError as exc:  # never fail a request over a version it does not use
            self._reload_failed(None, exc)
            return False
        if current is None or current == self._current.version.version_id or current == self._failed_version:
            return False
        with self._loader_lock:
            if self._loader is not None and self._loader.is_alive():
                return False
            self._loader = threading.Thread(target=self._reload_in_background, name="semsearch-reload", daemon=True)
            self._loader.start()
        return False

    def _reload_in_background(self) -> None:
        # Keep serving the current version: reload() recorded why the new one was not taken.
        with contextlib.suppress(Exception):
            self.reload()

    def _reload_failed(self, version: str | None, exc: BaseException) -> None:
        """Keep serving the current version; record and log why ``version`` (None: an unreadable pointer) was not
        switched to. A failed version is not retried until another one is published."""
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        error = f"version {version}: {message}" if version else message
        repeated = error == self.last_reload_error  # a damaged pointer fails every check: log it once
        self._failed_version, self.last_reload_error = version, error
        if repeated:
            return
        log.error(
            "not switching to index version %s, still serving %s: %s",
            version or "(unknown)",
            self._current.version.version_id,
            message,
        )

    # -- search --------------------------------------------------------------------------------------

    def _version_searcher(self, version: IndexVersion) -> VersionSearcher:
        return VersionSearcher(version, self._embedder, self._fusion, self._fusion_weight, self._reranker,
                               self._settings.rerank_depth)  # fmt: skip

    def _at(self, version: IndexVersion | None) -> VersionSearcher:
        current = self._current
        if version is None or version is current.version:
            return current
        return self._version_searcher(version)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        mode: str = DEFAULT_MODE,
        filters: SearchFilters | None = None,
        highlights: bool = True,
        recency: Recency | None = None,
        explain: bool = False,
        version: IndexVersion | None = None,
    ) -> list[SearchHit]:
        """The ``k`` best passages for ``query``, best first, near-duplicates removed.

        ``recency`` decays scores by article age (:class:`~semsearch.retrieve.recency.Recency`; off by default).
        ``explain`` attaches to each hit how it was scored (:class:`~semsearch.retrieve.results.Explanation`).
        ``version`` pins the index version (take it from :attr:`version` when the caller must know which version
        answered); by default the current one.
        """
        return self._at(version).search(
            query, k, mode=mode, filters=filters, highlights=highlights, recency=recency, explain=explain
        )

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        mode: str = DEFAULT_MODE,
        filters: SearchFilters | None = None,
        highlights: bool = True,
        recency: Recency | None = None,
        explain: bool = False,
        version: IndexVersion | None = None,
    ) -> list[list[SearchHit]]:
        """Several queries; their embeddings are computed in one batch."""
        return self._at(version).search_batch(
            queries, k, mode=mode, filters=filters, highlights=highlights, recency=recency, explain=explain
        )

    def search_articles(
        self,
        query: str,
        k: int = 10,
        *,
        per_article: int = 3,
        mode: str = DEFAULT_MODE,
        filters: SearchFilters | None = None,
        highlights: bool = True,
        recency: Recency | None = None,
        explain: bool = False,
        version: IndexVersion | None = None,
    ) -> list[ArticleHit]:
        """The ``k`` best articles, each once, with up to ``per_article`` of its best passages."""
        return self._at(version).search_articles(
            query,
            k,
            per_article=per_article,
            mode=mode,
            filters=filters,
            highlights=highlights,
            recency=recency,
            explain=explain,
        )

    def context(
        self,
        query: str,
        *,
        max_tokens: int = 512,
        k: int = 8,
        mode: str = DEFAULT_MODE,
        filters: SearchFilters | None = None,
        tokenizer: Any = None,
        recency: Recency | None = None,
        version: IndexVersion | None = None,
    ) -> Context:
        """A prompt-ready, numbered and cited block of the best passages for ``query``, within ``max_tokens``.

        ``tokenizer`` counts tokens as the consuming LLM does: a callable ``text -> int``, or any object with
        ``encode`` (a Hugging Face tokenizer, tiktoken). Default: this index's embedding model's tokenizer.
        """
        return self._at(version).context(
            query, max_tokens=max_tokens, k=k, mode=mode, filters=filters, tokenizer=tokenizer, recency=recency
        )

    def article(self, article_id: str, *, version: IndexVersion | None = None) -> StoredArticle:
        return self._at(version).article(article_id)

    def search_page(
        self,
        query: str,
        k: int = 10,
        *,
        cursor: str | None = None,
        group_by: str = "passage",
        per_article: int = 3,
        mode: str = DEFAULT_MODE,
        filters: SearchFilters | None = None,
        highlights: bool = True,
        recency: Recency | None = None,
        explain: bool = False,
    ) -> SearchPage:
        """One page of ``k`` results; pass the returned ``next_cursor`` (with the same query and options) for the
        next one. Every page comes from the version the first one used, even after a new version is published (an
        older version is opened for the call while it is still kept on disk), and no hit comes twice
        (:mod:`.paging`)."""
        if group_by not in ("passage", "article"):
            raise InvalidRequestError("group_by must be passage or article")
        key = fingerprint(query=query, group_by=group_by, per_article=per_article, mode=mode,
                             filters=filters.to_dict() if filters else None,
                             recency=recency.to_dict() if recency else None)  # fmt: skip
        if cursor is None:
            state = Cursor(self.version.version_id, max(4 * k, 100), (), key)
        else:
            state = Cursor.decode(cursor, key)
        total = min(len(state.seen) + k, MAX_PAGED_RESULTS)
        with self._version_named(state.version) as version:
            at = self._at(version)
            seen = set(state.seen)
            if group_by == "passage":
                hits = at.search(query, total, mode=mode, filters=filters, highlights=highlights, recency=recency,
                                 explain=explain, depth=state.depth)  # fmt: skip
                fresh_hits = [h for h in hits if h.passage_id not in seen][:k]
                page = tuple(replace(h, rank=len(seen) + i) for i, h in enumerate(fresh_hits, start=1))
                keys: list[int | str] = [h.passage_id for h in page]
                articles: tuple[ArticleHit, ...] = ()
            else:
                found = at.search_articles(query, total, per_article=per_article, mode=mode, filters=filters,
                                           highlights=highlights, recency=recency, explain=explain,
                                           depth=state.depth)  # fmt: skip
                fresh = [a for a in found if a.article_id not in seen][:k]
                articles = tuple(replace(a, rank=len(seen) + i) for i, a in enumerate(fresh, start=1))
                keys, page = [a.article_id for a in articles], ()
        more = len(keys) == k and len(seen) + len(keys) < MAX_PAGED_RESULTS
        following = Cursor(state.version, state.depth, (*state.seen, *keys), key).encode() if more else None
        return SearchPage(page, articles, following, state.version)

    def facets(
        self,
        query: str,
        names: Sequence[str] = FACETS,
        *,
        mode: str = DEFAULT_MODE,
        filters: SearchFilters | None = None,
        depth: int = 100,
        version: IndexVersion | None = None,
    ) -> Facets:
        """How many of the query's candidate articles have each source, tag and publication month (``YYYY-MM``):
        the articles of the passages each retriever returns at ``depth`` (100, the depth a page of 10 to 25
        results ranks; hybrid counts the union of both retrievers), after ``filters``, each article once."""
        return self._at(version).facet_counts(query, names, mode=mode, filters=filters, depth=depth)

    @contextlib.contextmanager
    def _version_named(self, version_id: str) -> Iterator[IndexVersion]:
        """The current version, or an older one still on disk, opened beside it (sharing its segments) for one
        call."""
        current = self.version
        if version_id == current.version_id:
            yield current
            return
        path = self._layout.version_path(version_id)
        if not (path / "manifest.json").is_file():
            raise CursorExpiredError(
                f"index version {version_id} of this cursor is no longer kept; start the search again"
            )
        older = IndexVersion(path, segments=current.segment_map())
        try:
            yield older
        finally:
            older.close()

    def related(
        self,
        article_id: str,
        *,
        k: int = 10,
        per_article: int = 1,
        filters: SearchFilters | None = None,
        version: IndexVersion | None = None,
    ) -> list[ArticleHit]:
        """The ``k`` articles closest to ``article_id`` by their stored passage vectors (nothing is embedded),
        itself and near-duplicate copies left out; each with its ``per_article`` passages closest to the article.
        ``score`` is the cosine between the two articles' mean passage vectors (:mod:`.related`)."""
        return related_articles(self._at(version).version, article_id, k, per_article=per_article, filters=filters)


def _check_model_name(manifest: IndexManifest, model: str) -> None:
    from ..models.embedding import resolve_model

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
