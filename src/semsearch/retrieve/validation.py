"""Validation of search requests, shared by the library, the HTTP API and the CLI."""

from __future__ import annotations

from ..errors import InvalidRequestError

MAX_QUERY_CHARS = 2000
MAX_K = 1000
MODES = ("hybrid", "dense", "keyword")
DEFAULT_MODE = "hybrid"

# A query must hold a character that is not white space, as Python's str.isspace() defines it. Spelt out as a
# character class (not \\S, whose meaning differs between regular-expression engines), so that the OpenAPI spec
# states exactly the rule validate_query applies.
NON_BLANK_PATTERN = "[^\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"


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
