"""The HTTP API: a Flask app factory and one blueprint of thin views over the library.

Every error is JSON ``{"error": {"code": ..., "message": ...}}`` with a 4xx/5xx status; no user input produces a
500 or a traceback.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from ..config import Settings
from ..errors import IndexNotFoundError, InvalidRequestError, SemsearchError
from ..models.embedding import Embedder
from ..retrieve.filters import SearchFilters
from ..retrieve.searcher import Searcher
from ..retrieve.validation import DEFAULT_MODE, validate_k, validate_mode, validate_query
from .metrics import Metrics
from .openapi import openapi_spec

log = logging.getLogger("semsearch.http")

HTTP_MAX_K = 100
MAX_CONTEXT_TOKENS = 32_768
MAX_BATCH = 64

bp = Blueprint("semsearch", __name__)


class SearchService:
    """Per-app state: the one :class:`Searcher` of this process, opened on first need and kept.

    When no index exists yet the service stays up (``/readyz`` says 503) and opens the index as soon as one is
    published. Once open, the searcher follows newly published versions (checked at most once a second).
    """

    def __init__(self, settings: Settings, searcher: Searcher | None = None, embedder: Embedder | None = None):
        self.settings = settings
        self._searcher = searcher
        self._embedder = embedder
        self._lock = threading.Lock()
        self._last_attempt = 0.0
        self._last_error: str | None = None

    def searcher(self) -> Searcher:
        searcher = self._searcher
        if searcher is not None:
            searcher.maybe_reload(wait=False)  # a new version is loaded off the request path
            return searcher
        with self._lock:
            if self._searcher is None:
                now = time.monotonic()
                if now - self._last_attempt < self.settings.reload_check_seconds and self._last_error:
                    raise IndexNotFoundError(self._last_error)
                self._last_attempt = now
                try:
                    self._searcher = Searcher.open(self.settings.index_dir, self.settings, embedder=self._embedder)
                    self._last_error = None
                except SemsearchError as exc:
                    self._last_error = exc.message
                    raise IndexNotFoundError(exc.message) from exc
            return self._searcher

    def loaded(self) -> Searcher | None:
        return self._searcher

    def release_index(self) -> None:
        """Close the index but keep the model (the gunicorn master, once it has checked the index: it serves no
        request, and a version it kept open would pin that version's files, disk space included, after merges
        and pruning replaced them). The next :meth:`searcher` call opens the current version again."""
        with self._lock:
            if self._searcher is not None:
                self._embedder = self._searcher.embedder
                self._searcher.close()
                self._searcher = None

    def close(self) -> None:
        if self._searcher is not None:
            self._searcher.close()


def service_of(app: Flask) -> SearchService:
    return app.extensions["semsearch"]  # type: ignore[no-any-return]


def service() -> SearchService:
    return service_of(current_app)  # type: ignore[arg-type]


def create_app(
    settings: Settings | None = None, *, searcher: Searcher | None = None, embedder: Embedder | None = None
) -> Flask:
    """The semsearch HTTP app. ``settings`` default to :meth:`Settings.from_env`; pass an open ``searcher`` or an
    ``embedder`` to share them with other code in the process."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # No redirects with an HTML body: "/articles//x" names the article "/x" (a 404 in JSON when there is none)
    # instead of redirecting to "/articles/x".
    app.url_map.merge_slashes = False
    app.extensions["semsearch"] = SearchService(settings, searcher=searcher, embedder=embedder)
    app.extensions["semsearch_metrics"] = Metrics()
    app.register_blueprint(bp)

    @app.errorhandler(SemsearchError)
    def _semsearch_error(exc: SemsearchError) -> tuple[Response, int]:
        return jsonify(exc.to_dict()), exc.http_status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        code = (exc.name or "error").lower().replace(" ", "_")
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = f"request body is larger than {settings.max_body_bytes} bytes"
        response = jsonify({"error": {"code": code, "message": message}})
        valid_methods = getattr(exc, "valid_methods", None)
        if status == 405 and valid_methods:
            response.headers["Allow"] = ", ".join(valid_methods)
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify({"error": {"code": "internal_error", "message": "internal server error"}}), 500

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        app.extensions["semsearch_metrics"].observe(route, request.method, response.status_code, elapsed)
        # One line per request; the path only, never the query string or body (queries can be personal data).
        log.info("%s %s %d %.1fms", request.method, request.path, response.status_code, elapsed * 1000)
        _cors(response, settings)
        return response

    return app


def _cors(response: Response, settings: Settings) -> None:
    origin = request.headers.get("Origin")
    if not origin or not settings.cors_origins:
        return
    if "*" in settings.cors_origins or origin in settings.cors_origins:
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in settings.cors_origins else origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"


# -- request parsing ---------------------------------------------------------------------------------


def json_body(allowed: set[str]) -> dict[str, Any]:
    """The request's JSON object, strictly: right content type, valid JSON, an object, no unknown fields."""
    if request.mimetype != "application/json":
        raise InvalidRequestError("Content-Type must be application/json")
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"malformed JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("JSON body must be an object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidRequestError(f"unknown field(s): {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    return body


def query_int(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequestError(f"{name} must be an integer") from None


@dataclass(frozen=True)
class SearchParams:
    """A validated search request (the same rules for GET, POST and batch)."""

    query: str
    k: int = 10
    mode: str = DEFAULT_MODE
    group_by: str = "passage"
    per_article: int = 3
    highlights: bool = True
    filters: SearchFilters = field(default_factory=SearchFilters)

    FIELDS = frozenset({"query", "k", "mode", "group_by", "per_article", "highlights", "filters"})

    @classmethod
    def parse(cls, data: dict[str, Any]) -> SearchParams:
        if "query" not in data:
            raise InvalidRequestError("query is required")
        group_by = data.get("group_by", "passage")
        if group_by not in ("passage", "article"):
            raise InvalidRequestError("group_by must be passage or article")
        highlights = data.get("highlights", True)
        if not isinstance(highlights, bool):
            raise InvalidRequestError("highlights must be true or false")
        return cls(
            query=validate_query(data["query"]),
            k=validate_k(data.get("k", 10), HTTP_MAX_K),
            mode=validate_mode(data.get("mode", DEFAULT_MODE)),
            group_by=group_by,
            per_article=validate_k(data.get("per_article", 3), 10, "per_article"),
            highlights=highlights,
            filters=SearchFilters.from_dict(data.get("filters")),
        )


def _query_args() -> dict[str, Any]:
    """GET /search parameters as the JSON body would carry them (repeatable source/tag/article_id)."""
    args = request.args
    known = {"q", "k", "mode", "group_by", "per_article", "highlights", "source", "tag", "article_id",
             "published_after", "published_before"}  # fmt: skip
    unknown = sorted(set(args) - known)
    if unknown:
        raise InvalidRequestError(f"unknown parameter(s): {', '.join(unknown)}")
    if "q" not in args:
        raise InvalidRequestError("query parameter q is required")
    data: dict[str, Any] = {"query": args["q"], "k": query_int("k", 10), "per_article": query_int("per_article", 3)}
    for name in ("mode", "group_by"):
        if name in args:
            data[name] = args[name]
    if "highlights" in args:
        value = args["highlights"].lower()
        if value not in ("true", "false", "1", "0"):
            raise InvalidRequestError("highlights must be true or false")
        data["highlights"] = value in ("true", "1")
    filters: dict[str, Any] = {}
    for arg, key in (("source", "source"), ("tag", "tags"), ("article_id", "article_ids")):
        if arg in args:
            filters[key] = args.getlist(arg)
    for key in ("published_after", "published_before"):
        if key in args:
            filters[key] = args[key]
    if filters:
        data["filters"] = filters
    return data


def _search_response(params: SearchParams, started: float) -> dict[str, Any]:
    searcher = service().searcher()
    version = searcher.version  # pinned: the response names the version that actually answered
    body: dict[str, Any] = {"query": params.query, "k": params.k, "mode": params.mode, "group_by": params.group_by}
    if params.group_by == "article":
        articles = searcher.search_articles(
            params.query, k=params.k, per_article=params.per_article, mode=params.mode, filters=params.filters,
            highlights=params.highlights, version=version,
        )  # fmt: skip
        body["articles"] = [a.to_dict() for a in articles]
    else:
        hits = searcher.search(
            params.query, k=params.k, mode=params.mode, filters=params.filters, highlights=params.highlights,
            version=version,
        )  # fmt: skip
        body["hits"] = [h.to_dict() for h in hits]
    body["took_ms"] = round((time.perf_counter() - started) * 1000, 2)
    body["version"] = version.version_id
    return body


# -- views --------------------------------------------------------------------------------------------


@bp.get("/search")
def search_get() -> Response:
    started = time.perf_counter()
    return jsonify(_search_response(SearchParams.parse(_query_args()), started))


@bp.post("/search")
def search_post() -> Response:
    started = time.perf_counter()
    return jsonify(_search_response(SearchParams.parse(json_body(set(SearchParams.FIELDS))), started))


@bp.post("/search/batch")
def search_batch() -> Response:
    started = time.perf_counter()
    body = json_body({"queries", "k", "mode", "filters", "highlights"})
    queries = body.get("queries")
    if not isinstance(queries, list) or not queries:
        raise InvalidRequestError("queries must be a non-empty list of strings")
    if len(queries) > MAX_BATCH:
        raise InvalidRequestError(f"at most {MAX_BATCH} queries per batch")
    for i, q in enumerate(queries):
        try:
            validate_query(q)
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"queries[{i}]: {exc.message}") from None
    params = SearchParams.parse({**{k: v for k, v in body.items() if k != "queries"}, "query": queries[0]})
    searcher = service().searcher()
    version = searcher.version
    results = searcher.search_batch(
        queries, k=params.k, mode=params.mode, filters=params.filters, highlights=params.highlights, version=version
    )
    return jsonify(
        {
            "k": params.k,
            "mode": params.mode,
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
            "version": version.version_id,
            "results": [
                {"query": q, "hits": [h.to_dict() for h in hits]} for q, hits in zip(queries, results, strict=True)
            ],
        }
    )


@bp.post("/context")
def context() -> Response:
    """Retrieval for RAG: a numbered, cited block of passages within a token budget."""
    started = time.perf_counter()
    body = json_body({"query", "max_tokens", "k", "mode", "filters"})
    if "query" not in body:
        raise InvalidRequestError("query is required")
    query = validate_query(body["query"])
    max_tokens = validate_k(body.get("max_tokens", 512), MAX_CONTEXT_TOKENS, "max_tokens")
    k = validate_k(body.get("k", 8), 50)
    mode = validate_mode(body.get("mode", DEFAULT_MODE))
    filters = SearchFilters.from_dict(body.get("filters"))
    searcher = service().searcher()
    ctx = searcher.context(query, max_tokens=max_tokens, k=k, mode=mode, filters=filters, version=searcher.version)
    return jsonify({**ctx.to_dict(), "took_ms": round((time.perf_counter() - started) * 1000, 2)})


@bp.get("/articles/<path:article_id>")
def article(article_id: str) -> Response:
    stored = service().searcher().article(article_id)
    data = stored.article.to_dict()
    data.pop("path", None)
    data["passages"] = [
        {
            "passage_id": p.id,
            "ordinal": p.ordinal,
            "paragraph": p.paragraph,
            "last_paragraph": p.last_paragraph,
            "start": p.start,
            "end": p.end,
            "text": p.text,
        }
        for p in stored.passages
    ]
    return jsonify(data)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    try:
        searcher = service().searcher()
    except SemsearchError as exc:
        return jsonify({"status": "unavailable", "error": {"code": exc.code, "message": exc.message}}), 503
    return jsonify({"status": "ready", "version": searcher.manifest.version_id}), 200


@bp.get("/stats")
def stats() -> Response:
    searcher = service().searcher()
    m = searcher.manifest
    embedder = searcher.embedder
    return jsonify(
        {
            "model": m.model_id,
            "dim": m.dim,
            "precision": getattr(embedder, "precision", m.precision),
            "query_backend": getattr(getattr(embedder, "info", None), "query_backend", "torch"),
            "articles": m.articles,
            "passages": m.passages,
            "index_version": m.version_id,
            "index_format": m.format_version,
            "built_at": m.built_at,
            **searcher.version.stats(),
            "reload_error": searcher.last_reload_error,
        }
    )


@bp.get("/metrics")
def metrics() -> Response:
    searcher = service().loaded()
    body, content_type = current_app.extensions["semsearch_metrics"].render(
        searcher.manifest if searcher is not None else None
    )
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_spec())


@bp.get("/")
def home() -> Response:
    page = resources.files("semsearch.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    response = Response(page, content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"
    )
    return response


@bp.post("/admin/reload")
def admin_reload() -> tuple[Response, int]:
    token = service().settings.admin_token
    if not token:
        # Admin routes do not exist unless a token is configured.
        return jsonify(
            {"error": {"code": "not_found", "message": "The requested URL was not found on the server."}}
        ), 404
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        return jsonify({"error": {"code": "unauthorized", "message": "a valid bearer token is required"}}), 401
    searcher = service().searcher()
    changed = searcher.reload()
    return jsonify({"reloaded": changed, "version": searcher.manifest.version_id}), 200
