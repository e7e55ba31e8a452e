"""Searching one published index version: modes, exact filters, fusion, near-duplicate removal, highlights and
RAG context. Stateless apart from the version it reads; :class:`~semsearch.retrieve.searcher.Searcher` follows
newly published versions and hands each search the version it should read."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import InvalidRequestError, NotFoundError
from ..index.reader import IndexVersion, PassageRecord, StoredArticle
from ..models.embedding import Embedder
from ..models.reranker import PairScorer
from .context import assemble
from .filters import SearchFilters
from .fusion import fuse
from .highlight import highlight
from .recency import Recency
from .recency import apply as apply_recency
from .results import FACETS, ArticleHit, Context, Explanation, Facets, SearchHit
from .validation import DEFAULT_MODE, validate_k, validate_mode, validate_query

DEDUPE_COSINE = 0.97
"""Passages at least this similar to a better-ranked hit are near-duplicates and dropped."""


@dataclass(frozen=True)
class _Candidate:
    passage_id: int
    score: float
    dense: float | None
    keyword: float | None
    recency: float | None = None
    rerank: float | None = None
    why: Explanation | None = None
    """How the retrievers and the fusion scored it (only when asked to explain)."""


class VersionSearcher:
    """Search one :class:`IndexVersion` with one embedder. Thread-safe; cheap to create."""

    def __init__(self, version: IndexVersion, embedder: Embedder, fusion: str, fusion_weight: float | None,
                 reranker: PairScorer | None = None, rerank_depth: int = 30) -> None:  # fmt: skip
        self.version = version
        self.embedder = embedder
        self.fusion = fusion
        self.fusion_weight = fusion_weight
        self.reranker = reranker
        self.rerank_depth = rerank_depth

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
        depth: int | None = None,
    ) -> list[SearchHit]:
        """The ``k`` best passages for ``query``, best first, near-duplicates removed."""
        return self.search_batch(
            [query], k, mode=mode, filters=filters, highlights=highlights, recency=recency, explain=explain,
            depth=depth,
        )[0]  # fmt: skip

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
        depth: int | None = None,
    ) -> list[list[SearchHit]]:
        """Several queries; their embeddings are computed in one batch. ``recency``: decay scores by article age
        (:mod:`.recency`)."""
        version = self.version
        window = _dedupe_window(k)
        # With recency every retrieved candidate is decayed before the window is cut: an older hit may fall below
        # a newer one from further down.
        # ``depth`` fixed by the caller (paging): every candidate at that depth is ranked, whatever ``k``, so pages
        # asking for more results see the same ranking.
        if self.reranker is not None:
            window = max(window, self.rerank_depth)  # the rerank model reads the best rerank_depth, whatever k
        ranked = self._ranked(version, queries, k, mode, filters, depth=depth or max(4 * k, 100),
                              limit=None if recency or depth else window, explain=explain)  # fmt: skip
        ranked = [self._rerank(version, q, candidates) for q, candidates in zip(queries, ranked, strict=True)]
        if recency is not None:
            ranked = [_decay(version, candidates, recency)[:window] for candidates in ranked]
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
        recency: Recency | None = None,
        explain: bool = False,
        depth: int | None = None,
    ) -> list[ArticleHit]:
        """The ``k`` best articles, each once, with up to ``per_article`` of its best passages."""
        validate_k(per_article, 50, "per_article")
        version = self.version
        (candidates,) = self._ranked(version, [query], k, mode, filters,
                                     depth=depth or max(3 * k * per_article, 200), explain=explain)  # fmt: skip
        candidates = self._rerank(version, query, candidates)
        if recency is not None:
            candidates = _decay(version, candidates, recency)
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

    def facet_counts(
        self,
        query: str,
        names: Sequence[str],
        *,
        mode: str = DEFAULT_MODE,
        filters: SearchFilters | None = None,
        depth: int = 100,
    ) -> Facets:
        """Counts of articles per source, tag and publication month among this query's candidates: the passages
        the retrievers return at ``depth`` (hybrid: the union of both), after ``filters``, each article once."""
        unknown = sorted(set(names) - set(FACETS))
        if unknown:
            raise InvalidRequestError(f"unknown facet(s): {', '.join(unknown)} (allowed: {', '.join(FACETS)})")
        (candidates,) = self._ranked(self.version, [query], 10, mode, filters, depth=depth)
        records = self.version.passages([c.passage_id for c in candidates])
        articles = {r.article_id: r for r in records.values()}
        counts: dict[str, Counter[str]] = {name: Counter() for name in names}
        for record in articles.values():
            if "source" in counts and record.source:
                counts["source"][record.source] += 1
            if "tag" in counts:
                counts["tag"].update(set(record.tags))
            if "published_month" in counts and record.published:
                counts["published_month"][record.published[:7]] += 1
        return Facets(
            {name: tuple(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))) for name, c in counts.items()},
            len(articles),
        )

    def _ranked(
        self,
        version: IndexVersion,
        queries: Sequence[str],
        k: int,
        mode: str,
        filters: SearchFilters | None,
        depth: int,
        limit: int | None = None,
        explain: bool = False,
    ) -> list[list[_Candidate]]:
        """Each query's candidates, best first: ``depth`` from each retriever, fused; the first ``limit`` kept.
        ``explain``: each candidate carries how it was scored."""
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
                        _Candidate(int(p), float(s), float(s), None,
                                   why=Explanation(("dense",), dense_score=float(s)) if explain else None)
                        for s, p in zip(dense_scores[i][:limit], dense_ids[i][:limit], strict=True)
                        if p >= 0
                    ]
                )  # fmt: skip
                continue
            keyword = version.keyword
            kw_scores, kw_ids = keyword.top(query, depth, allowed)
            if mode == "keyword":
                coverage = keyword.coverage(query, float(kw_scores[0])) if explain and len(kw_scores) else None
                out.append(
                    [
                        _Candidate(int(p), float(s), None, float(s),
                                   why=Explanation(("keyword",), keyword_score=float(s), keyword_coverage=coverage)
                                   if explain else None)
                        for s, p in zip(kw_scores[:limit], kw_ids[:limit], strict=True)
                    ]
                )  # fmt: skip
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
            whys: list[Explanation | None] = [None] * len(ids)
            if explain:
                from_dense = set(dense_ids[i][dense_ids[i] >= 0].tolist())
                from_keyword = set(kw_ids.tolist())
                for j in fused.order[:limit]:
                    p = int(ids[j])
                    whys[j] = Explanation(
                        tuple(n for n, held in (("dense", p in from_dense), ("keyword", p in from_keyword)) if held),
                        self.fusion, float(dense_exact[j]), float(keyword_exact[j]),
                        _term(fused.dense_terms, j), _term(fused.keyword_terms, j), float(fused.keyword_weight),
                        coverage,
                    )  # fmt: skip
            out.append(
                [
                    _Candidate(int(ids[j]), float(fused.scores[j]), float(dense_exact[j]), float(keyword_exact[j]),
                               why=whys[j])
                    for j in fused.order[:limit]
                ]
            )  # fmt: skip
        return out

    def _rerank(self, version: IndexVersion, query: str, candidates: list[_Candidate]) -> list[_Candidate]:
        """The best ``rerank_depth`` candidates reordered by the rerank model's score, which becomes their score;
        the rest follow in their order, their scores shifted to stay below the last reranked one (differences
        kept), so that scores still fall with the rank."""
        if self.reranker is None or not candidates:
            return candidates
        head, tail = candidates[: self.rerank_depth], candidates[self.rerank_depth :]
        records = version.passages([c.passage_id for c in head])
        # The title gives the passage its context, as it does for the embedding (ChunkSettings.title_context).
        texts = [f"{r.title}\n{r.text}" if r.title else r.text for r in (records[c.passage_id] for c in head)]
        scores = self.reranker.score(query, texts)
        order = np.argsort(-scores, kind="stable")
        out = [replace(head[i], score=float(scores[i]), rerank=float(scores[i])) for i in order]
        if tail:
            shift = float(scores.min()) - 1.0 - tail[0].score
            out += [replace(c, score=c.score + shift) for c in tail]
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
        recency: Recency | None = None,
    ) -> Context:
        """A prompt-ready, numbered and cited block of the best passages for ``query``, within ``max_tokens``.

        ``tokenizer`` counts tokens as the consuming LLM does: a callable ``text -> int``, or any object with
        ``encode`` (a Hugging Face tokenizer, tiktoken). Default: this index's embedding model's tokenizer.
        """
        validate_k(max_tokens, 100_000, "max_tokens")
        hits = self.search(query, k=k, mode=mode, filters=filters, highlights=False, recency=recency)
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


def _decay(version: IndexVersion, candidates: list[_Candidate], recency: Recency) -> list[_Candidate]:
    """The candidates rescored by their articles' age, best first (ties keep their order)."""
    if not candidates:
        return candidates
    records = version.passages([c.passage_id for c in candidates])
    factors = recency.factors([records[c.passage_id].published for c in candidates])
    scores = apply_recency(np.array([c.score for c in candidates]), factors)
    order = np.argsort(-scores, kind="stable")
    return [replace(candidates[i], score=float(scores[i]), recency=float(factors[i])) for i in order]


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
        explanation=replace(c.why, recency_factor=c.recency, rerank_score=c.rerank) if c.why is not None else None,
    )


def _term(terms: np.ndarray | None, j: int) -> float | None:
    return None if terms is None else float(terms[j])
