"""A small HTTP client for a semsearch server (standard library only).

    from semsearch.client import SearchClient

    client = SearchClient("http://127.0.0.1:8000", timeout=5, retries=2)
    hits = client.search("interest rate decision", k=5)
    context = client.context("Who designed the bridge?", max_tokens=400)

Errors: :class:`SearchHTTPError` for an error response (with the server's ``code`` and ``message``),
:class:`SearchTimeout` when the server does not answer in time, :class:`SearchUnavailable` when it cannot be
reached. Every semsearch request is a read, so retrying is safe; the client retries only failures that a retry
can fix (connection refused or reset, timeouts, 502/503/504), with exponential backoff, never a 4xx.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .errors import SemsearchError
from .retrieve.paging import SearchPage
from .retrieve.results import ArticleHit, Context, Explanation, Highlight, SearchHit

_RETRY_STATUSES = {502, 503, 504}


class SearchClientError(SemsearchError):
    code = "client_error"


class SearchHTTPError(SearchClientError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.server_message = message


class SearchTimeout(SearchClientError):
    code = "timeout"


class SearchUnavailable(SearchClientError):
    code = "unavailable"


def hit_from_dict(data: dict[str, Any]) -> SearchHit:
    fields = {k: v for k, v in data.items() if k in SearchHit.__dataclass_fields__}
    fields["tags"] = tuple(data.get("tags", ()))
    fields["highlights"] = tuple(
        Highlight(h["start"], h["end"], h["text"], h["score"]) for h in data.get("highlights", ())
    )
    if data.get("explanation") is not None:
        fields["explanation"] = Explanation.from_dict(data["explanation"])
    return SearchHit(**fields)


def article_hit_from_dict(data: dict[str, Any]) -> ArticleHit:
    return ArticleHit(
        data["rank"], data["score"], data["article_id"], data["title"], data.get("url"), data.get("published"),
        data.get("source"), tuple(hit_from_dict(h) for h in data["passages"]),
    )  # fmt: skip


class SearchClient:
    """``api_key``: sent as ``Authorization: Bearer`` (servers with ``SEMSEARCH_API_KEYS``)."""

    def __init__(self, base_url: str, timeout: float = 10.0, retries: int = 2, backoff: float = 0.2,
                 api_key: str | None = None) -> None:  # fmt: skip
        parsed = urllib.parse.urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def search(
        self, query: str, k: int = 10, *, mode: str = "hybrid", filters: dict[str, Any] | None = None,
        recency: dict[str, Any] | None = None, explain: bool = False,
    ) -> list[SearchHit]:  # fmt: skip
        """``recency``: ``{"half_life_days": 30, "as_of": "2026-10-03"}`` (``as_of`` optional) decays scores by age."""
        body: dict[str, Any] = {"query": query, "k": k, "mode": mode}
        if filters:
            body["filters"] = filters
        if recency:
            body["recency"] = recency
        if explain:
            body["explain"] = True
        return [hit_from_dict(h) for h in self._post("/search", body)["hits"]]

    def search_page(
        self, query: str, k: int = 10, *, cursor: str | None = None, group_by: str = "passage", mode: str = "hybrid",
        filters: dict[str, Any] | None = None,
    ) -> SearchPage:  # fmt: skip
        """One page of results; pass ``page.next_cursor`` back (same query and options) for the next one."""
        body: dict[str, Any] = {"query": query, "k": k, "mode": mode, "group_by": group_by}
        if filters:
            body["filters"] = filters
        if cursor:
            body["cursor"] = cursor
        data = self._post("/search", body)
        return SearchPage(
            tuple(hit_from_dict(h) for h in data.get("hits", ())),
            tuple(article_hit_from_dict(a) for a in data.get("articles", ())),
            data["next_cursor"], data["version"],
        )  # fmt: skip

    def search_batch(self, queries: list[str], k: int = 10, *, mode: str = "hybrid") -> list[list[SearchHit]]:
        data = self._post("/search/batch", {"queries": queries, "k": k, "mode": mode})
        return [[hit_from_dict(h) for h in result["hits"]] for result in data["results"]]

    def context(
        self, query: str, *, max_tokens: int = 512, k: int = 8, mode: str = "hybrid",
        filters: dict[str, Any] | None = None,
    ) -> Context:  # fmt: skip
        body: dict[str, Any] = {"query": query, "max_tokens": max_tokens, "k": k, "mode": mode}
        if filters:
            body["filters"] = filters
        data = self._post("/context", body)
        data.pop("took_ms", None)
        return Context.from_dict(data)

    def related(self, article_id: str, k: int = 10, *, per_article: int = 1) -> list[ArticleHit]:
        """The articles closest to ``article_id`` (``GET /articles/<id>/related``)."""
        query = urllib.parse.urlencode({"k": k, "per_article": per_article})
        data = self._request(f"/articles/{urllib.parse.quote(article_id)}/related?{query}")
        return [article_hit_from_dict(a) for a in data["articles"]]

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request(path, body)

    def _request(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET without a body, POST with one."""
        payload = None if body is None else json.dumps(body).encode("utf-8")
        headers = {**self._headers, **({"Content-Type": "application/json"} if payload is not None else {})}
        attempt = 0
        while True:
            request = urllib.request.Request(
                self.base_url + path, data=payload, method="GET" if payload is None else "POST", headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())  # type: ignore[no-any-return]
            except urllib.error.HTTPError as exc:
                error = _error_body(exc)
                if exc.code in _RETRY_STATUSES and attempt < self.retries:
                    attempt = self._sleep(attempt)
                    continue
                raise SearchHTTPError(
                    exc.code, error.get("code", "http_error"), error.get("message", exc.reason)
                ) from None
            except TimeoutError as exc:
                if attempt < self.retries:
                    attempt = self._sleep(attempt)
                    continue
                raise SearchTimeout(f"no answer from {self.base_url}{path} within {self.timeout} s") from exc
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, TimeoutError | socket.timeout):
                    if attempt < self.retries:
                        attempt = self._sleep(attempt)
                        continue
                    raise SearchTimeout(f"no answer from {self.base_url}{path} within {self.timeout} s") from exc
                if attempt < self.retries:
                    attempt = self._sleep(attempt)
                    continue
                raise SearchUnavailable(f"cannot reach {self.base_url}: {exc.reason}") from exc
            except ConnectionError as exc:
                if attempt < self.retries:
                    attempt = self._sleep(attempt)
                    continue
                raise SearchUnavailable(f"cannot reach {self.base_url}: {exc}") from exc

    def _sleep(self, attempt: int) -> int:
        time.sleep(self.backoff * (2**attempt))
        return attempt + 1


def _error_body(exc: urllib.error.HTTPError) -> dict[str, str]:
    try:
        data = json.loads(exc.read())
        error = data.get("error", {})
        return {"code": str(error.get("code", "http_error")), "message": str(error.get("message", exc.reason))}
    except (ValueError, AttributeError):
        return {"code": "http_error", "message": str(exc.reason)}
