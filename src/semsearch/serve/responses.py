"""The bodies of the API's answers, built from validated requests: one definition shared by the HTTP views
(:mod:`.app`) and the MCP tools (:mod:`.mcp`), so the two always answer alike. Flask-free."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..retrieve.filters import SearchFilters
from ..retrieve.recency import Recency
from ..retrieve.searcher import Searcher
from ..retrieve.validation import DEFAULT_MODE


@dataclass(frozen=True)
class SearchParams:
    """A search request, validated against the spec's SearchRequest schema (the same for GET, POST, batch and the
    MCP tool)."""

    query: str
    k: int = 10
    mode: str = DEFAULT_MODE
    group_by: str = "passage"
    per_article: int = 3
    highlights: bool = True
    filters: SearchFilters = field(default_factory=SearchFilters)
    recency: Recency | None = None
    explain: bool = False
    cursor: str | None = None
    facets: tuple[str, ...] = ()

    @classmethod
    def from_body(cls, data: dict[str, Any]) -> SearchParams:
        """From a body the schema has accepted; dates are parsed here (the schema only names their format)."""
        return cls(
            query=data["query"],
            k=data.get("k", 10),
            mode=data.get("mode", DEFAULT_MODE),
            group_by=data.get("group_by", "passage"),
            per_article=data.get("per_article", 3),
            highlights=data.get("highlights", True),
            filters=SearchFilters.from_dict(data.get("filters")),
            recency=recency_of(data),
            explain=data.get("explain", False),
            cursor=data.get("cursor"),
            facets=tuple(data.get("facets", ())),
        )


def recency_of(data: dict[str, Any]) -> Recency | None:
    recency = data.get("recency") or {}
    return Recency(recency["half_life_days"], recency.get("as_of")) if "half_life_days" in recency else None


def _took(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def search(searcher: Searcher, body: dict[str, Any], started: float) -> dict[str, Any]:
    """A SearchResponse for a SearchRequest body."""
    params = SearchParams.from_body(body)
    page = searcher.search_page(
        params.query, params.k, cursor=params.cursor, group_by=params.group_by, per_article=params.per_article,
        mode=params.mode, filters=params.filters, highlights=params.highlights, recency=params.recency,
        explain=params.explain,
    )  # fmt: skip
    out: dict[str, Any] = {"query": params.query, "k": params.k, "mode": params.mode, "group_by": params.group_by}
    if params.group_by == "article":
        out["articles"] = [a.to_dict() for a in page.articles]
    else:
        out["hits"] = [h.to_dict() for h in page.hits]
    out["next_cursor"] = page.next_cursor
    if params.facets:
        facets = searcher.facets(
            params.query, params.facets, mode=params.mode, filters=params.filters, depth=max(4 * params.k, 100)
        )
        out["facets"] = facets.to_dict()
    out["took_ms"] = _took(started)
    out["version"] = page.version  # the version that answered: the one the first page used
    return out


def batch(searcher: Searcher, body: dict[str, Any], started: float) -> dict[str, Any]:
    """A BatchResponse for a BatchRequest body."""
    queries = body["queries"]
    params = SearchParams.from_body({**{k: v for k, v in body.items() if k != "queries"}, "query": queries[0]})
    version = searcher.version
    results = searcher.search_batch(
        queries, k=params.k, mode=params.mode, filters=params.filters, highlights=params.highlights,
        recency=params.recency, explain=params.explain, version=version,
    )  # fmt: skip
    return {
        "k": params.k,
        "mode": params.mode,
        "took_ms": _took(started),
        "version": version.version_id,
        "results": [
            {"query": q, "hits": [h.to_dict() for h in hits]} for q, hits in zip(queries, results, strict=True)
        ],
    }


def context(searcher: Searcher, body: dict[str, Any], started: float) -> dict[str, Any]:
    """A Context for a ContextRequest body."""
    ctx = searcher.context(
        body["query"], max_tokens=body.get("max_tokens", 512), k=body.get("k", 8),
        mode=body.get("mode", DEFAULT_MODE), filters=SearchFilters.from_dict(body.get("filters")),
        recency=recency_of(body), version=searcher.version,
    )  # fmt: skip
    return {**ctx.to_dict(), "took_ms": _took(started)}


def article(searcher: Searcher, article_id: str) -> dict[str, Any]:
    """An Article: metadata and passages (not where it was read from: that is the server's business)."""
    stored = searcher.article(article_id)
    data = stored.article.to_dict()
    data.pop("path", None)
    data["passages"] = [
        {"passage_id": p.id, "ordinal": p.ordinal, "paragraph": p.paragraph, "last_paragraph": p.last_paragraph,
         "start": p.start, "end": p.end, "text": p.text}
        for p in stored.passages
    ]  # fmt: skip
    return data


def related(searcher: Searcher, body: dict[str, Any]) -> dict[str, Any]:
    """A RelatedResponse for a RelatedRequest body."""
    version = searcher.version
    articles = searcher.related(
        body["article_id"], k=body.get("k", 10), per_article=body.get("per_article", 1),
        filters=SearchFilters.from_dict(body.get("filters")), version=version,
    )  # fmt: skip
    return {
        "article_id": body["article_id"],
        "version": version.version_id,
        "articles": [a.to_dict() for a in articles],
    }
