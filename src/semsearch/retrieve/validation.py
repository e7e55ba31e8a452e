"""Validation of search requests, shared by the library, the HTTP API and the CLI."""

from __future__ import annotations

from ..errors import InvalidRequestError

MAX_QUERY_CHARS = 2000
MAX_K = 1000
MODES = ("hybrid", "dense", "keyword")
DEFAULT_MODE = "hybrid"


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
