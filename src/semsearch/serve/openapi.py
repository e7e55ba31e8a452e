"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json``: the routes of a server run with given
settings, over the wire shapes of :mod:`.schemas`.

The spec is the one definition of what a request may hold: the app validates every request body and search query
string against its schemas (:mod:`.requests`), so the spec and the validation cannot disagree.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..config import Settings
from .schemas import MAX_ARTICLE_ID, SCHEMAS, ref


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Invalid request (missing/empty/over-long query, k out of range, wrong types, malformed JSON, "
        "wrong content type, unknown fields)",
        401: "Missing or wrong bearer token",
        404: "Not found (an article; a paging cursor this server did not issue)",
        405: "Method not allowed",
        409: "A paging cursor used with another search than the one that issued it",
        413: "Request body too large",
        429: "Too many requests from this client; retry after the Retry-After header's seconds",
        410: "The index version of this paging cursor is no longer kept; start the search again",
        503: "No index is loaded",
    }
    return {str(s): _json(ref("Error"), text[s]) for s in statuses}


# GET /search: each query parameter and where it goes in a SearchRequest body. The parameters' schemas are the body
# fields' schemas, and the app turns a query string into a body and validates that (one definition for both).
GET_SEARCH_PARAMS: dict[str, tuple[str, ...]] = {
    "q": ("query",),
    "k": ("k",),
    "mode": ("mode",),
    "group_by": ("group_by",),
    "per_article": ("per_article",),
    "highlights": ("highlights",),
    "source": ("filters", "source"),
    "tag": ("filters", "tags"),
    "article_id": ("filters", "article_ids"),
    "published_after": ("filters", "published_after"),
    "published_before": ("filters", "published_before"),
    "explain": ("explain",),
    "cursor": ("cursor",),
    "facet": ("facets",),
    "recency_half_life_days": ("recency", "half_life_days"),
    "recency_as_of": ("recency", "as_of"),
}


# GET /articles/{article_id}/related: the same, for a RelatedRequest (the article id comes from the path).
GET_RELATED_PARAMS: dict[str, tuple[str, ...]] = {
    "k": ("k",),
    "per_article": ("per_article",),
    "source": ("filters", "source"),
    "tag": ("filters", "tags"),
    "published_after": ("filters", "published_after"),
    "published_before": ("filters", "published_before"),
}


def query_parameters(table: dict[str, tuple[str, ...]], body_schema: str,
                     required: tuple[str, ...] = ()) -> list[dict[str, Any]]:  # fmt: skip
    """The query parameters standing for fields of ``body_schema``, with those fields' schemas."""
    params = []
    for name, path in table.items():
        if path[0] in ("filters", "recency"):
            schema = SCHEMAS[path[0].title()]["properties"][path[1]]
            # Repeatable in a query string: the list form.
            schema = next((s for s in schema.get("oneOf", ()) if s.get("type") == "array"), schema)
            description = "repeatable" if schema.get("type") == "array" else schema.get("description", "")
        else:
            schema = SCHEMAS[body_schema]["properties"][path[0]]
            description = ""
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": schema}
        if schema.get("type") == "array":
            param.update(style="form", explode=True)
        if description:
            param["description"] = description
        params.append(param)
    return params


def openapi_spec(settings: Settings | None = None) -> dict[str, Any]:
    """The spec of a server run with ``settings``: the admin route exists only with an admin token, search routes
    need a bearer key when API keys are set, and answer 429 when a rate limit is set."""
    settings = settings or Settings()
    keyed = bool(settings.api_keys)
    limited = settings.rate_limit is not None

    def search_op(op: dict[str, Any], *statuses: int) -> dict[str, Any]:
        """An operation on the index: API keys and the rate limit apply."""
        extra = (401,) * keyed + (429,) * limited
        op["responses"].update(_errors(*statuses, *extra))
        if keyed:
            op["security"] = [{"bearer": []}]
        return op

    def body(schema: str) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": ref(schema)}}}

    search_ok = _json(ref("SearchResponse"), "Top passages, best first")
    paths: dict[str, Any] = {
        "/search": {
            "get": search_op(
                {"summary": "Search passages", "operationId": "searchGet",
                 "parameters": query_parameters(GET_SEARCH_PARAMS, "SearchRequest", ("q",)),
                 "responses": {"200": search_ok}},
                400, 404, 409, 410, 503,
            ),
            "post": search_op(
                {"summary": "Search passages (JSON body)", "operationId": "searchPost",
                 "requestBody": body("SearchRequest"), "responses": {"200": search_ok}},
                400, 404, 409, 410, 413, 503,
            ),
        },
        "/search/batch": {
            "post": search_op(
                {"summary": "Up to 64 queries, embedded in one batch", "operationId": "searchBatch",
                 "requestBody": body("BatchRequest"),
                 "responses": {"200": _json(ref("BatchResponse"), "One result list per query")}},
                400, 413, 503,
            )
        },
        "/context": {
            "post": search_op(
                {"summary": "Retrieval for RAG: numbered, cited passages within a token budget",
                 "operationId": "context", "requestBody": body("ContextRequest"),
                 "responses": {"200": _json(ref("Context"), "The context block")}},
                400, 413, 503,
            )
        },
        "/articles/{article_id}": {
            "get": search_op(
                {"summary": "An article's metadata and passages", "operationId": "getArticle",
                 "parameters": [{"name": "article_id", "in": "path", "required": True,
                                 "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ARTICLE_ID}}],
                 "responses": {"200": _json(ref("Article"), "The article")}},
                400, 404, 503,
            )
        },
        "/articles/{article_id}/related": {
            "get": search_op(
                {"summary": "The articles closest to this one (its stored passage vectors; itself and copies left out)",
                 "operationId": "relatedArticles",
                 "parameters": [{"name": "article_id", "in": "path", "required": True,
                                 "schema": SCHEMAS["RelatedRequest"]["properties"]["article_id"]},
                                *query_parameters(GET_RELATED_PARAMS, "RelatedRequest")],
                 "responses": {"200": _json(ref("RelatedResponse"), "Related articles, closest first")}},
                400, 404, 503,
            )
        },
        "/healthz": {
            "get": {
                "summary": "The process is alive",
                "operationId": "healthz",
                "responses": {"200": _json(ref("Health"), "Alive")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "An index is loaded and queryable",
                "operationId": "readyz",
                "responses": {"200": _json(ref("Ready"), "Ready"), "503": _json(ref("Ready"), "Not ready")},
            }
        },
        "/stats": {
            "get": search_op(
                {"summary": "Model, counts, index version and build time", "operationId": "stats",
                 "responses": {"200": _json(ref("Stats"), "Index statistics")}},
                503,
            )
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }  # fmt: skip
    if settings.admin_token:
        paths["/admin/reload"] = {
            "post": {
                "summary": "Switch to the newest published index version now",
                "operationId": "adminReload",
                "description": "Exists only when SEMSEARCH_ADMIN_TOKEN is set.",
                "security": [{"bearer": []}],
                "responses": {"200": _json(ref("Reload"), "Reload result"), **_errors(401, 503)},
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "semsearch", "version": __version__, "description": "Semantic search over article passages."},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
