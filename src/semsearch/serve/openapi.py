"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json``.

It is the one definition of what a request may hold: the app validates every request body and query against these
schemas (:mod:`semsearch.serve.requests`), so the spec and the validation cannot disagree, and tests check real
responses against the response schemas.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..config import Settings
from ..retrieve.validation import MAX_QUERY_CHARS, NON_BLANK_PATTERN

_NULLABLE_STR = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Invalid request (missing/empty/over-long query, k out of range, wrong types, malformed JSON, "
        "wrong content type, unknown fields)",
        401: "Missing or wrong bearer token",
        404: "Not found",
        405: "Method not allowed",
        413: "Request body too large",
        429: "Too many requests from this client; retry after the Retry-After header's seconds",
        503: "No index is loaded",
    }
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


_HIT = {
    "type": "object",
    "required": ["rank", "score", "dense_score", "keyword_score", "passage_id", "article_id", "title", "url",
                 "paragraph", "last_paragraph", "start", "end", "text", "highlights", "published", "source", "tags"],
    "properties": {
        "rank": {"type": "integer", "minimum": 1},
        "score": {"type": "number", "description": "ranking score of the mode (hybrid: fused, per query)"},
        "dense_score": {"type": ["number", "null"], "description": "cosine similarity"},
        "keyword_score": {"type": ["number", "null"], "description": "BM25 score"},
        "highlights": {
            "type": "array",
            "description": "best-matching sentences; offsets are into this passage's text",
            "items": {
                "type": "object",
                "required": ["start", "end", "text", "score"],
                "properties": {
                    "start": {"type": "integer"},
                    "end": {"type": "integer"},
                    "text": {"type": "string"},
                    "score": {"type": "number"},
                },
            },
        },
        "passage_id": {"type": "integer"},
        "article_id": {"type": "string"},
        "title": {"type": "string"},
        "url": _NULLABLE_STR,
        "paragraph": {"type": "integer", "minimum": 1, "description": "1-based number of the first paragraph"},
        "last_paragraph": {"type": "integer", "minimum": 1},
        "start": {"type": "integer", "minimum": 0, "description": "character offset into the article body"},
        "end": {"type": "integer", "minimum": 0},
        "text": {"type": "string"},
        "published": _NULLABLE_STR,
        "source": _NULLABLE_STR,
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}  # fmt: skip

# Bounded so that the largest valid GET request fits the server's request line (gunicorn: 1 MiB) and the largest
# valid body fits Settings.max_body_bytes.
_FILTER_VALUE = {"type": "string", "minLength": 1, "maxLength": 256}
_FILTER_VALUES = {"type": "array", "items": _FILTER_VALUE, "maxItems": 20}
_DATE = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
# A query must hold something other than white space.
_QUERY = {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS, "pattern": NON_BLANK_PATTERN}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "SearchHit": _HIT,
    "Filters": {
        "type": "object",
        "additionalProperties": False,
        "description": "All conditions must hold; within a list any value matches. Dates are inclusive.",
        "properties": {
            "source": {"oneOf": [_FILTER_VALUE, _FILTER_VALUES]},
            "tags": {"oneOf": [_FILTER_VALUE, _FILTER_VALUES]},
            "article_ids": {"oneOf": [_FILTER_VALUE, _FILTER_VALUES]},
            "published_after": {**_DATE, "description": "ISO date or datetime, inclusive"},
            "published_before": {**_DATE, "description": "ISO date or datetime, inclusive"},
        },
    },
    "SearchRequest": {
        "type": "object",
        "required": ["query"],
        "additionalProperties": False,
        "properties": {
            "query": _QUERY,
            "k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
            "mode": {"enum": ["hybrid", "dense", "keyword"], "default": "hybrid"},
            "group_by": {"enum": ["passage", "article"], "default": "passage"},
            "per_article": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
            "highlights": {"type": "boolean", "default": True},
            "filters": _ref("Filters"),
        },
    },
    "ArticleHit": {
        "type": "object",
        "required": ["rank", "score", "article_id", "title", "url", "published", "source", "passages"],
        "properties": {
            "rank": {"type": "integer", "minimum": 1},
            "score": {"type": "number"},
            "article_id": {"type": "string"},
            "title": {"type": "string"},
            "url": _NULLABLE_STR,
            "published": _NULLABLE_STR,
            "source": _NULLABLE_STR,
            "passages": {"type": "array", "items": _ref("SearchHit")},
        },
    },
    "SearchResponse": {
        "type": "object",
        "required": ["query", "k", "mode", "group_by", "took_ms", "version"],
        "properties": {
            "query": {"type": "string"},
            "k": {"type": "integer"},
            "mode": {"type": "string"},
            "group_by": {"enum": ["passage", "article"]},
            "took_ms": {"type": "number"},
            "version": {"type": "string", "description": "index version that answered"},
            "hits": {"type": "array", "items": _ref("SearchHit"), "description": "group_by=passage"},
            "articles": {"type": "array", "items": _ref("ArticleHit"), "description": "group_by=article"},
        },
    },
    "BatchRequest": {
        "type": "object",
        "required": ["queries"],
        "additionalProperties": False,
        "properties": {
            "queries": {
                "type": "array",
                "minItems": 1,
                "maxItems": 64,
                "items": _QUERY,
            },
            "k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
            "mode": {"enum": ["hybrid", "dense", "keyword"], "default": "hybrid"},
            "highlights": {"type": "boolean", "default": True},
            "filters": _ref("Filters"),
        },
    },
    "BatchResponse": {
        "type": "object",
        "required": ["k", "mode", "took_ms", "version", "results"],
        "properties": {
            "k": {"type": "integer"},
            "mode": {"type": "string"},
            "took_ms": {"type": "number"},
            "version": {"type": "string"},
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["query", "hits"],
                    "properties": {
                        "query": {"type": "string"},
                        "hits": {"type": "array", "items": _ref("SearchHit")},
                    },
                },
            },
        },
    },
    "Article": {
        "type": "object",
        "required": ["id", "title", "url", "published", "source", "tags", "metadata", "passages"],
        "properties": {
            "id": {"type": "string"},
            "title": {"type": "string"},
            "url": _NULLABLE_STR,
            "published": _NULLABLE_STR,
            "source": _NULLABLE_STR,
            "tags": {"type": "array", "items": {"type": "string"}},
            "metadata": {"type": "object"},
            "passages": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["passage_id", "ordinal", "paragraph", "last_paragraph", "start", "end", "text"],
                    "properties": {
                        "passage_id": {"type": "integer"},
                        "ordinal": {"type": "integer"},
                        "paragraph": {"type": "integer"},
                        "last_paragraph": {"type": "integer"},
                        "start": {"type": "integer"},
                        "end": {"type": "integer"},
                        "text": {"type": "string"},
                    },
                },
            },
        },
    },
    "ContextRequest": {
        "type": "object",
        "required": ["query"],
        "additionalProperties": False,
        "properties": {
            "query": _QUERY,
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 32768, "default": 512},
            "k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 8},
            "mode": {"enum": ["hybrid", "dense", "keyword"], "default": "hybrid"},
            "filters": _ref("Filters"),
        },
    },
    "Context": {
        "type": "object",
        "required": ["query", "text", "citations", "token_count", "max_tokens", "version", "took_ms"],
        "properties": {
            "query": {"type": "string"},
            "text": {"type": "string", "description": "numbered passages: [n] Title (url): text"},
            "citations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": [
                        "number",
                        "article_id",
                        "title",
                        "url",
                        "paragraph",
                        "last_paragraph",
                        "start",
                        "end",
                        "passage_ids",
                    ],
                    "properties": {
                        "number": {"type": "integer", "minimum": 1},
                        "article_id": {"type": "string"},
                        "title": {"type": "string"},
                        "url": _NULLABLE_STR,
                        "paragraph": {"type": "integer"},
                        "last_paragraph": {"type": "integer"},
                        "start": {"type": "integer"},
                        "end": {"type": "integer"},
                        "passage_ids": {"type": "array", "items": {"type": "integer"}},
                    },
                },
            },
            "token_count": {"type": "integer", "minimum": 0},
            "max_tokens": {"type": "integer"},
            "version": _NULLABLE_STR,
            "took_ms": {"type": "number"},
        },
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    "Ready": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"enum": ["ready", "unavailable"]}, "version": {"type": "string"}, "error": {}},
    },
    "Stats": {
        "type": "object",
        "required": [
            "model",
            "dim",
            "precision",
            "query_backend",
            "articles",
            "passages",
            "index_version",
            "index_format",
            "built_at",
            "reload_error",
            "segments",
            "deleted",
            "dense_recall_at_10",
        ],
        "properties": {
            "model": {"type": "string"},
            "dim": {"type": "integer"},
            "precision": {"type": "string"},
            "query_backend": {"enum": ["torch", "onnx-fp32", "onnx-int8"]},
            "articles": {"type": "integer"},
            "passages": {"type": "integer"},
            "index_version": {"type": "string"},
            "index_format": {"type": "integer"},
            "built_at": {"type": "string"},
            "deleted": {"type": "integer", "description": "Deleted passages still held by segments (until merged)."},
            "dense_recall_at_10": {
                "type": "number",
                "description": "The lowest recall@10 against exact search measured when a segment's vector index was "
                "built (1.0 when every segment is searched exactly).",
            },
            "segments": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "rows", "deleted", "vector_index", "params", "recall_at_10"],
                    "properties": {
                        "id": {"type": "string"},
                        "rows": {"type": "integer"},
                        "deleted": {"type": "integer"},
                        "vector_index": {"enum": ["flat", "ivf-pq4fs", "ivf-sq8"]},
                        "params": {"type": "object"},
                        "recall_at_10": {"type": "number"},
                    },
                },
            },
            "reload_error": {
                "type": ["string", "null"],
                "description": "Why the newest published version is not being served (it failed to load); null "
                "when the served version is the newest or is being switched to.",
            },
        },
    },
    "Reload": {
        "type": "object",
        "required": ["reloaded", "version"],
        "properties": {"reloaded": {"type": "boolean"}, "version": {"type": "string"}},
    },
}

MAX_ARTICLE_ID = 1024

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
}


def _get_search_parameters() -> list[dict[str, Any]]:
    params = []
    for name, path in GET_SEARCH_PARAMS.items():
        if path[0] == "filters":
            schema = _SCHEMAS["Filters"]["properties"][path[1]]
            # Repeatable in a query string: the list form.
            schema = next((s for s in schema.get("oneOf", ()) if s.get("type") == "array"), schema)
            description = "repeatable" if schema.get("type") == "array" else schema.get("description", "")
        else:
            schema = _SCHEMAS["SearchRequest"]["properties"][path[0]]
            description = ""
        param: dict[str, Any] = {"name": name, "in": "query", "required": name == "q", "schema": schema}
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
        return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}

    search_ok = _json(_ref("SearchResponse"), "Top passages, best first")
    paths: dict[str, Any] = {
        "/search": {
            "get": search_op(
                {"summary": "Search passages", "operationId": "searchGet", "parameters": _get_search_parameters(),
                 "responses": {"200": search_ok}},
                400, 503,
            ),
            "post": search_op(
                {"summary": "Search passages (JSON body)", "operationId": "searchPost",
                 "requestBody": body("SearchRequest"), "responses": {"200": search_ok}},
                400, 413, 503,
            ),
        },
        "/search/batch": {
            "post": search_op(
                {"summary": "Up to 64 queries, embedded in one batch", "operationId": "searchBatch",
                 "requestBody": body("BatchRequest"),
                 "responses": {"200": _json(_ref("BatchResponse"), "One result list per query")}},
                400, 413, 503,
            )
        },
        "/context": {
            "post": search_op(
                {"summary": "Retrieval for RAG: numbered, cited passages within a token budget",
                 "operationId": "context", "requestBody": body("ContextRequest"),
                 "responses": {"200": _json(_ref("Context"), "The context block")}},
                400, 413, 503,
            )
        },
        "/articles/{article_id}": {
            "get": search_op(
                {"summary": "An article's metadata and passages", "operationId": "getArticle",
                 "parameters": [{"name": "article_id", "in": "path", "required": True,
                                 "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ARTICLE_ID}}],
                 "responses": {"200": _json(_ref("Article"), "The article")}},
                400, 404, 503,
            )
        },
        "/healthz": {
            "get": {
                "summary": "The process is alive",
                "operationId": "healthz",
                "responses": {"200": _json(_ref("Health"), "Alive")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "An index is loaded and queryable",
                "operationId": "readyz",
                "responses": {"200": _json(_ref("Ready"), "Ready"), "503": _json(_ref("Ready"), "Not ready")},
            }
        },
        "/stats": {
            "get": search_op(
                {"summary": "Model, counts, index version and build time", "operationId": "stats",
                 "responses": {"200": _json(_ref("Stats"), "Index statistics")}},
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
                "responses": {"200": _json(_ref("Reload"), "Reload result"), **_errors(401, 503)},
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "semsearch", "version": __version__, "description": "Semantic search over article passages."},
        "paths": paths,
        "components": {"schemas": _SCHEMAS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
