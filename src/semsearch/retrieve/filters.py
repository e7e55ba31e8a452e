"""Metadata filters on search: source, tags, published date range, article ids.

Filters are applied exactly inside each retriever (a FAISS ID selector for dense, a mask for keyword), never as a
post-filter, so a search returns ``k`` passages whenever ``k`` matching passages exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequestError
from ..ingest.dates import normalise_date

_FIELDS = ("source", "tags", "published_after", "published_before", "article_ids")


@dataclass(frozen=True)
class SearchFilters:
    """All given conditions must hold; within ``source``, ``tags`` and ``article_ids``, any value matches."""

    source: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    published_after: str | None = None
    """Inclusive ISO date or datetime (compared in UTC; a datetime without a zone is UTC). Articles without a
    published date never match a date filter."""
    published_before: str | None = None
    """Inclusive: a plain date includes that whole day (UTC). Against a datetime bound, an article published on a
    plain date counts as midnight UTC of that day."""
    article_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("published_after", "published_before"):
            value = getattr(self, name)
            if value is not None:
                normalised = normalise_date(value)
                if normalised is None:
                    raise InvalidRequestError(f"{name} must be an ISO date such as 2026-10-03, not {value!r}")
                object.__setattr__(self, name, normalised)

    @property
    def empty(self) -> bool:
        return not (self.source or self.tags or self.published_after or self.published_before or self.article_ids)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SearchFilters:
        """From JSON-like input (HTTP, config): strings or lists of strings; unknown keys are an error."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidRequestError("filters must be an object")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise InvalidRequestError(f"unknown filter(s): {', '.join(unknown)} (allowed: {', '.join(_FIELDS)})")

        def strings(name: str) -> tuple[str, ...]:
            value = data.get(name)
            if value is None:
                return ()
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
                raise InvalidRequestError(f"filter {name} must be a string or a list of non-empty strings")
            return tuple(value)

        def date(name: str) -> str | None:
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                raise InvalidRequestError(f"filter {name} must be a string")
            return value

        return cls(
            source=strings("source"),
            tags=strings("tags"),
            published_after=date("published_after"),
            published_before=date("published_before"),
            article_ids=strings("article_ids"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": list(self.source),
            "tags": list(self.tags),
            "published_after": self.published_after,
            "published_before": self.published_before,
            "article_ids": list(self.article_ids),
        }

    def sql(self) -> tuple[str, list[Any]]:
        """A condition on ``a`` (the articles table) and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.source:
            clauses.append(f"a.source IN ({','.join('?' * len(self.source))})")
            params.extend(self.source)
        if self.article_ids:
            clauses.append(f"a.id IN ({','.join('?' * len(self.article_ids))})")
            params.extend(self.article_ids)
        if self.tags:
            marks = ",".join("?" * len(self.tags))
            clauses.append(f"a.id IN (SELECT article_id FROM article_tags WHERE tag IN ({marks}))")
            params.extend(self.tags)
        for value, op in ((self.published_after, ">="), (self.published_before, "<=")):
            if value is None:
                continue
            if len(value) == 10:  # a date: compare the date part, so "before 2026-10-03" includes that day
                clauses.append(f"a.published IS NOT NULL AND substr(a.published, 1, 10) {op} ?")
            else:
                clauses.append(f"a.published IS NOT NULL AND a.published {op} ?")
            params.append(value)
        return (" AND ".join(clauses) or "1"), params
