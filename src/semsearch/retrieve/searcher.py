"""Searching a published index: :class:`Searcher`, its :class:`SearchHit` and :class:`ArticleHit` results.

Modes: ``dense`` (embeddings), ``keyword`` (BM25) and ``hybrid`` (both, fused; see :mod:`semsearch.retrieve.fusion`).
Filters are exact in every mode; near-duplicate passages are suppressed; hits name their best sentences.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings
from ..errors import IndexMismatchError, InvalidRequestError, NotFoundError
from ..index.layout import IndexLayout
from ..index.manifest import IndexManifest
from ..index.reader import IndexVersion, PassageRecord, StoredArticle
from ..models.embedding import Embedder, load_embedder
from .context import assemble
from .filters import SearchFilters
from .fusion import FUSIONS, fuse
from .highlight import highlight
from .results import ArticleHit, Context, SearchHit

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 2000
MAX_K = 1000
MODES = ("hybrid", "dense", "keyword")
DEFAULT_MODE = "hybrid"
DEDUPE_COSINE = 0.97
"""Passages at least this similar to a better-ranked hit are near-duplicates and dropped."""


@dataclass(frozen=True)
class _Candidate:
    passage_id: int
    score: float
    dense: float | None
    keyword: float | None


def validate_query(query: object) -> str:
    if not isinstance(query, str):
        raise InvalidRequestError("query must be a string")
    if not query.strip():
        raise InvalidRequestError("query must not be empty")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidRequestError(f"query is longer than {MAX_QUERY_CHARS} characters")
    return query


def validate_k(k: object, max_k: int = MAX_K, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise InvalidRequestError(f"{name} must be an integer")
    if not 1 <= k <= max_k:
        raise InvalidRequestError(f"{name} must be between 1 and {max_k}")
    return k


def validate_mode(mode: object) -> str:
    if mode not in MODES:
        raise InvalidRequestError(f"mode must be one of {', '.join(MODES)}")
    return str(mode)


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
    ) -> None:
        self._layout = layout
        self._version = version
        self._embedder = embedder
        self._settings = settings
        self._fusion = fusion
        self._fusion_weight = fusion_weight
        self._reload_lock = threading.Lock()
        self._last_check = time.monotonic()
        self._loader_lock = threading.Lock()  # never held while loading: requests must not wait on it
        self._loader: threading.Thread | None = None
        self._failed_version: str | None = None
        self._attempted: str | None = None
        self.last_reload_error: str | None = None
        """Why the newest published version could not be switched to by a background reload (None: no error)."""

    @classmethod
    def open(
        cls,
        index_dir: str | Path | None = None,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        fusion: str = "adaptive",
        fusion_weight: float | None = None,
    ) -> Searcher:
        """Open the current version of the index at ``index_dir`` (default ``settings.index_dir``).

        Fails with :class:`IndexMismatchError` when the index was built with another model or dimension than
        the embedder (by default, the one ``settings`` names), rather than returning meaningless results.
        ``fusion`` picks the hybrid fusion; ``fusion_weight`` overrides its keyword weight (the cap for
        ``adaptive``, the fixed weight for ``zscore``).
        """
        if fusion not in FUSIONS:
            raise InvalidRequestError(f"fusion must be one of {', '.join(FUSIONS)}")
        settings = settings or Settings()
        layout = IndexLayout(index_dir if index_dir is not None else settings.index_dir)
        version = IndexVersion(layout.current_path())
        if embedder is None:
            # No model named: use the one the index was built with. A named model must match it.
            if settings.model is not None:
                _check_model_name(version.manifest, settings.model)
            embedder = load_embedder(settings.with_(model=settings.model or version.manifest.model_id))
        _check_compatible(version.manifest, embedder)
        return cls(layout, version, embedder, settings, fusion, fusion_weight)

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def manifest(self) -> IndexManifest:
        return self._version.manifest

    @property
    def version(self) -> IndexVersion:
        """The current version. Pass it to ``search(..., version=...)`` to pin several calls to one version."""
        return self._version

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def index_dir(self) -> Path:
        return self._layout.root

    def close(self) -> None:
        self._version.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def warm(self) -> None:
        """Load everything the first search would otherwise load (BM25 index, vector pages, the query model's
        session on this process), so no request pays for it. The server calls it before forking its workers
        and in each worker; :meth:`reload` warms a new version before switching to it."""
        self._version.warm()
        self._embedder.embed_queries(["warm-up"])

    def reload(self) -> bool:
        """Switch to the published version if it changed; returns True when it did. The new version is opened,
        checked and warmed before the switch, so searches never wait for it; searches in flight finish on the
        old one."""
        with self._reload_lock:
            self._last_check = time.monotonic()
            current = self._layout.current_version()
            if current is None or current == self._version.version_id:
                return False
            self._attempted = current
            version = IndexVersion(self._layout.version_path(current))
            try:
                _check_compatible(version.manifest, self._embedder)
                version.warm()
            except BaseException:
                version.close()
                raise
            # The old version is not closed: searches in flight still use it; it is freed when they finish.
            self._version = version
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
        current = self._layout.current_version()
        if current is None or current == self._version.version_id or current == self._failed_version:
            return False
        with self._loader_lock:
            if self._loader is not None and self._loader.is_alive():
                return False
            self._loader = threading.Thread(target=self._reload_in_background, name="semsearch-reload", daemon=True)
            self._loader.start()
        return False

    def _reload_in_background(self) -> None:
        try:
            self.reload()
        except Exception as exc:  # keep serving the current version; say why the new one was not taken
            failed = self._attempted
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            self._failed_version, self.last_reload_error = failed, f"version {failed}: {message}"
            log.error(
                "not switching to index version %s, still serving %s: %s", failed, self._version.version_id, message
            )

    # -- search --------------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        mode: str = DEFAULT_MODE,
        filters: SearchFilters | None = None,
        highlights: bool = True,
        version: IndexVersion | None = None,
    ) -> list[SearchHit]:
        """The ``k`` best passages for ``query``, best first, near-duplicates removed.

        ``version`` pins the index version (take it from :attr:`version` when the caller must know which version
        answered); by default the current one.
        """
        return self.search_batch([query], k, mode=mode, filters=filters, highlights=highlights, version=version)[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        mode: str = DEFAULT_MODE,
        filters: SearchFilters | None = None,
        highlights: bool = True,
        version: IndexVersion | None = None,
    ) -> list[list[SearchHit]]:
        """Several queries; their embeddings are computed in one batch."""
        version = version or self._version
        window = _dedupe_window(k)
        ranked = self._ranked(version, queries, k, mode, filters, depth=max(4 * k, 100), limit=window)
        out = []
        for query, candidates in zip(queries, ranked, strict=True):
            kept = self._dedupe(version, candidates, k)
            records = version.passages([c.passage_id for c in kept])
            weights = version.keyword.term_weights(query) if highlights else {}
            out.append(
                [
                    _hit(rank, c, records[c.passage_id], weights if highlights else None)
                    for rank, c in enumerate(kept, start=1)
                ]
            )
        return out

    def search_articles(
        self,
        query: str,
        k: int = 10,
        *,
        per_article: int = 3,
        mode: str = DEFAULT_MODE,
        filters: SearchFilters | None = None,
        highlights: bool = True,
        version: IndexVersion | None = None,
    ) -> list[ArticleHit]:
        """The ``k`` best articles, each once, with up to ``per_article`` of its best passages."""
        validate_k(per_article, 50, "per_article")
        version = version or self._version
        (candidates,) = self._ranked(version, [query], k, mode, filters, depth=max(3 * k * per_article, 200))
        groups: dict[str, list[_Candidate]] = {}
        records = version.passages([c.passage_id for c in candidates])
        for c in candidates:
            article_id = records[c.passage_id].article_id
            if article_id not in groups and len(groups) >= k:
                continue
            group = groups.setdefault(article_id, [])
            if len(group) < per_article:
                group.append(c)
        weights = version.keyword.term_weights(query) if highlights else None
        out = []
        for rank, (_article_id, group) in enumerate(groups.items(), start=1):
            hits = tuple(_hit(i, c, records[c.passage_id], weights) for i, c in enumerate(group, start=1))
            first = hits[0]
            out.append(
                ArticleHit(rank, group[0].score, first.article_id, first.title, first.url, first.published,
                           first.source, hits)
            )  # fmt: skip
        return out

    def _ranked(
        self,
        version: IndexVersion,
        queries: Sequence[str],
        k: int,
        mode: str,
        filters: SearchFilters | None,
        depth: int,
        limit: int | None = None,
    ) -> list[list[_Candidate]]:
        """Each query's candidates, best first: ``depth`` from each retriever, fused; the first ``limit`` kept."""
        for q in queries:
            validate_query(q)
        validate_k(k)
        validate_mode(mode)
        allowed = None
        if filters is not None and not filters.empty:
            where, params = filters.sql()
            allowed = version.filter_passage_ids(where, params)
        depth = min(depth, max(version.manifest.passages, 1))
        vectors = self._embedder.embed_queries(list(queries)) if mode != "keyword" else None
        dense_scores, dense_ids = (
            version.search_vectors(vectors, depth, allowed) if vectors is not None else (None, None)
        )
        out = []
        for i, query in enumerate(queries):
            if mode == "dense":
                assert dense_scores is not None and dense_ids is not None
                out.append(
                    [
                        _Candidate(int(p), float(s), float(s), None)
                        for s, p in zip(dense_scores[i][:limit], dense_ids[i][:limit], strict=True)
                        if p >= 0
                    ]
                )
                continue
            keyword = version.keyword
            all_scores = keyword.scores(query)
            kw_scores, kw_ids = keyword.top(all_scores, depth, allowed)
            if mode == "keyword":
                out.append(
                    [
                        _Candidate(int(p), float(s), None, float(s))
                        for s, p in zip(kw_scores[:limit], kw_ids[:limit], strict=True)
                    ]
                )
                continue
            assert vectors is not None and dense_ids is not None and dense_scores is not None
            ids = np.unique(np.concatenate([dense_ids[i][dense_ids[i] >= 0], kw_ids]))
            if ids.size == 0:
                out.append([])
                continue
            dense_exact = version.vectors_for(ids) @ vectors[i]
            keyword_exact = keyword.scores_for(all_scores, ids)
            coverage = keyword.coverage(query, float(keyword_exact.max()))
            fused = fuse(
                dense_exact.astype(np.float64),
                keyword_exact.astype(np.float64),
                self._fusion,
                self._fusion_weight,
                coverage,
                keyword.articles_for(ids) if self._fusion == "adaptive" else None,  # only adaptive uses them
            )
            out.append(
                [
                    _Candidate(int(ids[j]), float(fused.scores[j]), float(dense_exact[j]), float(keyword_exact[j]))
                    for j in fused.order[:limit]
                ]
            )
        return out

    def _dedupe(self, version: IndexVersion, candidates: list[_Candidate], k: int) -> list[_Candidate]:
        """The first ``k`` candidates that are not near-duplicates (cosine >= DEDUPE_COSINE) of a kept one."""
        window = candidates[: _dedupe_window(k)]
        if not window:
            return []
        vectors = version.vectors_for([c.passage_id for c in window])
        duplicate = (vectors @ vectors.T) >= DEDUPE_COSINE  # all pairs of the window at once
        kept: list[int] = []
        for i in range(len(window)):
            if kept and duplicate[i, kept].any():
                continue
            kept.append(i)
            if len(kept) == k:
                break
        return [window[i] for i in kept]

    def context(
        self,
        query: str,
        *,
        max_tokens: int = 512,
        k: int = 8,
        mode: str = DEFAULT_MODE,
        filters: SearchFilters | None = None,
        tokenizer: Any = None,
        version: IndexVersion | None = None,
    ) -> Context:
        """A prompt-ready, numbered and cited block of the best passages for ``query``, within ``max_tokens``.

        ``tokenizer`` counts tokens as the consuming LLM does: a callable ``text -> int``, or any object with
        ``encode`` (a Hugging Face tokenizer, tiktoken). Default: this index's embedding model's tokenizer.
        """
        validate_k(max_tokens, 100_000, "max_tokens")
        version = version or self._version
        hits = self.search(query, k=k, mode=mode, filters=filters, highlights=False, version=version)
        texts: dict[str, str] = {}

        def article_text(article_id: str) -> str:
            if article_id not in texts:
                texts[article_id] = self.article(article_id, version=version).article.text
            return texts[article_id]

        return assemble(query, hits, article_text, _token_counter(tokenizer, self._embedder), max_tokens,
                        version.version_id)  # fmt: skip

    def article(self, article_id: str, *, version: IndexVersion | None = None) -> StoredArticle:
        stored = (version or self._version).article(article_id)
        if stored is None:
            raise NotFoundError(f"no article with id {article_id!r}")
        return stored


def _dedupe_window(k: int) -> int:
    """How many of the best candidates near-duplicate removal looks at to find ``k`` distinct passages."""
    return max(2 * k, k + 20)


def _token_counter(tokenizer: Any, embedder: Embedder) -> Callable[[str], int]:
    if tokenizer is None:
        overhead = embedder.count_tokens([""])[0]  # the model's special tokens are not part of a prompt
        return lambda text: embedder.count_tokens([text])[0] - overhead
    if callable(tokenizer) and not hasattr(tokenizer, "encode"):
        return tokenizer  # type: ignore[no-any-return]
    if hasattr(tokenizer, "encode"):

        def count(text: str) -> int:
            try:
                return len(tokenizer.encode(text, add_special_tokens=False))
            except TypeError:  # tiktoken-style encode(text)
                return len(tokenizer.encode(text))

        return count
    raise InvalidRequestError("tokenizer must be a callable text -> int or have an encode() method")


def _hit(rank: int, c: _Candidate, rec: PassageRecord, term_weights: dict[str, float] | None) -> SearchHit:
    return SearchHit(
        rank=rank,
        score=c.score,
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
        dense_score=c.dense,
        keyword_score=c.keyword,
        highlights=highlight(rec.text, term_weights) if term_weights is not None else (),
    )


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
