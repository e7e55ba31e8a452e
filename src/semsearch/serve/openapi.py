"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json``. Tests check real responses against it."""

from __future__ import annotations

from typing import Any

from .. import __version__

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
            "source": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "tags": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "article_ids": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "published_after": {"type": "string", "description": "ISO date or datetime"},
            "published_before": {"type": "string", "description": "ISO date or datetime"},
        },
    },
    "SearchRequest": {
        "type": "object",
        "required": ["query"],
        "additionalProperties": False,
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 2000},
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
                "items": {"type": "string", "minLength": 1, "maxLength": 2000},
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
            "query": {"type": "string", "minLength": 1, "maxLength": 2000},
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

_K_PARAM = {
    "name": "k",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
}


def _param(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        param["description"] = description
    return param


def openapi_spec() -> dict[str, Any]:
    search_ok = _json(_ref("SearchResponse"), "Top passages, best first")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "semsearch",
            "version": __version__,
            "description": "Semantic search over article passages.",
        },
        "paths": {
            "/search": {
                "get": {
                    "summary": "Search passages",
                    "operationId": "searchGet",
                    "parameters": [
                        {
                            "name": "q",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 2000},
                        },
                        _K_PARAM,
                        _param("mode", {"enum": ["hybrid", "dense", "keyword"], "default": "hybrid"}),
                        _param("group_by", {"enum": ["passage", "article"], "default": "passage"}),
                        _param("per_article", {"type": "integer", "minimum": 1, "maximum": 10, "default": 3}),
                        _param("highlights", {"type": "boolean", "default": True}),
                        _param("source", {"type": "array", "items": {"type": "string"}}, "repeatable"),
                        _param("tag", {"type": "array", "items": {"type": "string"}}, "repeatable"),
                        _param("article_id", {"type": "array", "items": {"type": "string"}}, "repeatable"),
                        _param("published_after", {"type": "string"}, "ISO date, inclusive"),
                        _param("published_before", {"type": "string"}, "ISO date, inclusive"),
                    ],
                    "responses": {"200": search_ok, **_errors(400, 503)},
                },
                "post": {
                    "summary": "Search passages (JSON body)",
                    "operationId": "searchPost",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("SearchRequest")}},
                    },
                    "responses": {"200": search_ok, **_errors(400, 413, 503)},
                },
            },
            "/search/batch": {
                "post": {
                    "summary": "Up to 64 queries, embedded in one batch",
                    "operationId": "searchBatch",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("BatchRequest")}},
                    },
                    "responses": {
                        "200": _json(_ref("BatchResponse"), "One result list per query"),
                        **_errors(400, 413, 503),
                    },
                }
            },
            "/context": {
                "post": {
                    "summary": "Retrieval for RAG: numbered, cited passages within a token budget",
                    "operationId": "context",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ContextRequest")}},
                    },
                    "responses": {"200": _json(_ref("Context"), "The context block"), **_errors(400, 413, 503)},
                }
            },
            "/articles/{article_id}": {
                "get": {
                    "summary": "An article's metadata and passages",
                    "operationId": "getArticle",
                    "parameters": [
                        {"name": "article_id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {"200": _json(_ref("Article"), "The article"), **_errors(404, 503)},
                }
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
                    "responses": {
                        "200": _json(_ref("Ready"), "Ready"),
                        "503": _json(_ref("Ready"), "Not ready"),
                    },
                }
            },
            "/stats": {
                "get": {
                    "summary": "Model, counts, index version and build time",
                    "operationId": "stats",
                    "responses": {"200": _json(_ref("Stats"), "Index statistics"), **_errors(503)},
                }
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
            "/admin/reload": {
                "post": {
                    "summary": "Switch to the newest published index version now",
                    "operationId": "adminReload",
                    "description": "Exists only when SEMSEARCH_ADMIN_TOKEN is set.",
                    "security": [{"bearer": []}],
                    "responses": {"200": _json(_ref("Reload"), "Reload result"), **_errors(401, 404, 503)},
                }
            },
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
