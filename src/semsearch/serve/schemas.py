"""The wire shapes of the HTTP API as JSON Schema: requests and responses, defined once. :mod:`.openapi` puts them
in the served spec; :mod:`.requests` validates requests against them; tests validate responses against them."""

from __future__ import annotations

from typing import Any

from ..retrieve.validation import MAX_QUERY_CHARS, NON_BLANK_PATTERN

MAX_ARTICLE_ID = 1024

_NULLABLE_STR = {"type": ["string", "null"]}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


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
        "explanation": {
            "type": "object",
            "description": "with explain=true: how the hit was scored. Hybrid: score = (1 - keyword_weight) * "
            "dense_normalised + keyword_weight * keyword_normalised (rrf: their sum); with a rerank model, the best "
            "rerank_depth candidates take rerank_score instead; then decayed by recency_factor",
            "required": ["retrievers", "fusion", "dense_score", "keyword_score", "dense_normalised",
                         "keyword_normalised", "keyword_weight", "keyword_coverage", "recency_factor",
                         "rerank_score"],
            "properties": {
                "retrievers": {"type": "array", "items": {"enum": ["dense", "keyword"]},
                               "description": "the retrievers whose top candidates held this passage"},
                "fusion": {"enum": ["adaptive", "zscore", "rrf", None]},
                "dense_score": {"type": ["number", "null"], "description": "raw cosine similarity"},
                "keyword_score": {"type": ["number", "null"], "description": "raw BM25 score"},
                "dense_normalised": {"type": ["number", "null"], "description": "the dense term fused"},
                "keyword_normalised": {"type": ["number", "null"], "description": "the keyword term fused"},
                "keyword_weight": {"type": ["number", "null"], "description": "this query's keyword weight"},
                "keyword_coverage": {"type": ["number", "null"],
                                     "description": "share of the query's attainable BM25 the best match reaches"},
                "recency_factor": {"type": ["number", "null"], "description": "null when recency is off"},
                "rerank_score": {"type": ["number", "null"],
                                 "description": "the rerank model's score, which replaced the fused one (null: no "
                                 "rerank model, or the hit was below rerank_depth)"},
            },
        },
    },
}  # fmt: skip

# Bounded so that the largest valid GET request fits the server's request line (gunicorn: 1 MiB) and the largest
# valid body fits Settings.max_body_bytes.
_FILTER_VALUE = {"type": "string", "minLength": 1, "maxLength": 256}
_FILTER_VALUES = {"type": "array", "items": _FILTER_VALUE, "maxItems": 20}
_DATE = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
# A query must hold something other than white space.
_QUERY = {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS, "pattern": NON_BLANK_PATTERN}

SCHEMAS: dict[str, Any] = {
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
    "Recency": {
        "type": "object",
        "additionalProperties": False,
        "description": "Decay each hit's score by its article's age: factor 0.5 ** (age_days / half_life_days), "
        "age counted back from as_of (default: now); a score s >= 0 becomes s * factor, a negative one s / factor. "
        "Undated articles get the median factor of the query's dated candidates. Without half_life_days there is "
        "no decay (GET parameters are independent: recency_as_of alone changes nothing).",
        "properties": {
            "half_life_days": {"type": "number", "exclusiveMinimum": 0, "maximum": 36500},
            "as_of": {**_DATE, "description": "ISO date or datetime the ages are counted back from"},
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
            "filters": ref("Filters"),
            "recency": ref("Recency"),
            "explain": {"type": "boolean", "default": False, "description": "attach an explanation to each hit"},
            "cursor": {
                "type": "string",
                "minLength": 1,
                "maxLength": 16384,
                "description": "next_cursor of the previous page (same query and options)",
            },
            "facets": {
                "type": "array",
                "items": {"enum": ["source", "tag", "published_month"]},
                "uniqueItems": True,
                "description": "count the query's candidate articles by these fields (see Facets)",
            },
        },
    },
    "Facets": {
        "type": "object",
        "required": ["articles", "counts"],
        "description": "Article counts among the query's candidates: the passages each retriever returns at the "
        "first page's depth (max(4k, 100); hybrid: the union of both), after filters, each article once.",
        "properties": {
            "articles": {"type": "integer", "minimum": 0, "description": "candidate articles counted"},
            "counts": {
                "type": "object",
                "additionalProperties": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["value", "count"],
                        "properties": {"value": {"type": "string"}, "count": {"type": "integer", "minimum": 1}},
                    },
                },
            },
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
            "passages": {"type": "array", "items": ref("SearchHit")},
        },
    },
    "SearchResponse": {
        "type": "object",
        "required": ["query", "k", "mode", "group_by", "took_ms", "version", "next_cursor"],
        "properties": {
            "query": {"type": "string"},
            "k": {"type": "integer"},
            "mode": {"type": "string"},
            "group_by": {"enum": ["passage", "article"]},
            "took_ms": {"type": "number"},
            "version": {"type": "string", "description": "index version that answered"},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "pass as cursor for the next page; null: the "
                "last page. Pages stay on the first page's version and never repeat a hit.",
            },
            "hits": {"type": "array", "items": ref("SearchHit"), "description": "group_by=passage"},
            "facets": ref("Facets"),
            "articles": {"type": "array", "items": ref("ArticleHit"), "description": "group_by=article"},
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
            "filters": ref("Filters"),
            "recency": ref("Recency"),
            "explain": {"type": "boolean", "default": False, "description": "attach an explanation to each hit"},
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
                        "hits": {"type": "array", "items": ref("SearchHit")},
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
    # The arguments of the MCP tool get_article (HTTP takes the id from the path, with the same bound).
    "ArticleRequest": {
        "type": "object",
        "required": ["article_id"],
        "additionalProperties": False,
        "properties": {"article_id": {"type": "string", "minLength": 1, "maxLength": MAX_ARTICLE_ID}},
    },
    "RelatedRequest": {
        "type": "object",
        "required": ["article_id"],
        "additionalProperties": False,
        "properties": {
            "article_id": {"type": "string", "minLength": 1, "maxLength": MAX_ARTICLE_ID},
            "k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
            "per_article": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
            "filters": ref("Filters"),
        },
    },
    "RelatedResponse": {
        "type": "object",
        "required": ["article_id", "version", "articles"],
        "properties": {
            "article_id": {"type": "string"},
            "version": {"type": "string", "description": "index version that answered"},
            "articles": {
                "type": "array",
                "items": ref("ArticleHit"),
                "description": "closest articles first; score: cosine between the articles' mean passage vectors",
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
            "filters": ref("Filters"),
            "recency": ref("Recency"),
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
            "rerank_model",
        ],
        "properties": {
            "model": {"type": "string"},
            "rerank_model": {"type": ["string", "null"], "description": "the rerank stage's model; null: none"},
            "rerank_depth": {"type": "integer", "description": "candidates the rerank model reads"},
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
