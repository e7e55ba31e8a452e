"""Searching one published index version: modes, exact filters, fusion, near-duplicate removal, highlights and
RAG context. Stateless apart from the version it reads; :class:`~semsearch.retrieve.searcher.Searcher` follows
newly published versions and hands each search the version it should read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidRequestError, NotFoundError
from ..index.reader import IndexVersion, PassageRecord, StoredArticle
from ..models.embedding import Embedder
from .context import assemble
from .filters import SearchFilters
from .fusion import fuse
from .highlight import highlight
from .results import ArticleHit, Context, SearchHit
from .validation import DEFAULT_MODE, validate_k, validate_mode, validate_query

DEDUPE_COSINE = 0.97
"""Passages at least this similar to a better-ranked hit are near-duplicates and dropped."""


@dataclass(frozen=True)
class _Candidate:
    passage_id: int
    score: float
    dense: float | None
    keyword: float | None


class VersionSearcher:
    """Search one :class:`IndexVersion` with one embedder. Thread-safe; cheap to create."""

    def __init__(self, version: IndexVersion, embedder: Embedder, fusion: str, fusion_weight: float | None) -> None:
        self.version = version
        self.embedder = embedder
        self.fusion = fusion
        self.fusion_weight = fusion_weight

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        mode: str = DEFAULT_MODE,
        filters: SearchFilters | None = None,
        highlights: bool = True,
    ) -> list[SearchHit]:
        """The ``k`` best passages for ``query``, best first, near-duplicates removed."""
        return self.search_batch([query], k, mode=mode, filters=filters, highlights=highlights)[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        mode: str = DEFAULT_MODE,
        filters: SearchFilters | None = None,
        highlights: bool = True,
    ) -> list[list[SearchHit]]:
        """Several queries; their embeddings are computed in one batch."""
        version = self.version
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
    ) -> list[ArticleHit]:
        """The ``k`` best articles, each once, with up to ``per_article`` of its best passages."""
        validate_k(per_article, 50, "per_article")
        version = self.version
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
        vectors = self.embedder.embed_queries(list(queries)) if mode != "keyword" else None
        # A single mode keeps only its first ``limit`` candidates: asking for more would only cost (an ANN search
        # probes more lists for a deeper list; BM25's pruning is weaker the more results it must keep).
        if mode != "hybrid" and limit is not None:
            depth = min(depth, limit)
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
            kw_scores, kw_ids = keyword.top(query, depth, allowed)
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
            keyword_exact = keyword.scores_for(query, ids)
            coverage = keyword.coverage(query, float(keyword_exact.max()))
            fused = fuse(
                dense_exact.astype(np.float64),
                keyword_exact.astype(np.float64),
                self.fusion,
                self.fusion_weight,
                coverage,
                keyword.articles_for(ids) if self.fusion == "adaptive" else None,  # only adaptive uses them
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
    ) -> Context:
        """A prompt-ready, numbered and cited block of the best passages for ``query``, within ``max_tokens``.

        ``tokenizer`` counts tokens as the consuming LLM does: a callable ``text -> int``, or any object with
        ``encode`` (a Hugging Face tokenizer, tiktoken). Default: this index's embedding model's tokenizer.
        """
        validate_k(max_tokens, 100_000, "max_tokens")
        hits = self.search(query, k=k, mode=mode, filters=filters, highlights=False)
        texts: dict[str, str] = {}

        def article_text(article_id: str) -> str:
            if article_id not in texts:
                texts[article_id] = self.article(article_id).article.text
            return texts[article_id]

        count = _token_counter(tokenizer, self.embedder)
        return assemble(query, hits, article_text, count, max_tokens, self.version.version_id)

    def article(self, article_id: str) -> StoredArticle:
        stored = self.version.article(article_id)
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
