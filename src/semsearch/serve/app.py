"""The HTTP API: a Flask app factory and one blueprint of thin views over the library.

Every error is JSON ``{"error": {"code": ..., "message": ...}}`` with a 4xx/5xx status; no user input produces a
500 or a traceback.
"""

from __future__ import annotations

import functools
import hmac
import logging
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from ..config import Settings
from ..errors import IndexCorruptError, IndexNotFoundError, InvalidRequestError, SemsearchError
from ..models.embedding import Embedder
from ..retrieve.searcher import Searcher
from . import responses
from .metrics import Metrics
from .openapi import GET_RELATED_PARAMS, GET_SEARCH_PARAMS, openapi_spec
from .ratelimit import RateLimiter
from .requests import parse_json_body, query_to_body
from .requests import validate as validate_body
from .schemas import MAX_ARTICLE_ID

log = logging.getLogger("semsearch.http")

# Longest request URL read (gunicorn itself stops at 1 MiB); the spec bounds every parameter so that a valid
# request stays well below it.
MAX_URL_BYTES = 512 * 1024

bp = Blueprint("semsearch", __name__)
V = TypeVar("V", bound=Callable[..., Any])


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
        self._last_error: SemsearchError | None = None
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst) if settings.rate_limit else None

    def searcher(self) -> Searcher:
        searcher = self._searcher
        if searcher is not None:
            searcher.maybe_reload(wait=False)  # a new version is loaded off the request path
            return searcher
        with self._lock:
            if self._searcher is None:
                now = time.monotonic()
                if now - self._last_attempt < self.settings.reload_check_seconds and self._last_error:
                    raise self._last_error  # the same answer until the next check, without touching the disk
                self._last_attempt = now
                try:
                    self._searcher = Searcher.open(self.settings.index_dir, self.settings, embedder=self._embedder)
                    self._last_error = None
                except (IndexNotFoundError, IndexCorruptError) as exc:
                    self._last_error = exc
                    raise
                except SemsearchError as exc:
                    self._last_error = IndexNotFoundError(exc.message)
                    raise self._last_error from exc
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
    app.extensions["semsearch_openapi"] = openapi_spec(settings)
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
        if len(request.full_path.encode("utf-8", "surrogateescape")) > MAX_URL_BYTES:
            return _error(414, "uri_too_long", f"the request URL is longer than {MAX_URL_BYTES} bytes")
        return None

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


def json_body(schema_name: str) -> dict[str, Any]:
    """The request's JSON body, validated against the spec's ``schema_name`` schema."""
    return parse_json_body(request.get_data(cache=True), request.mimetype, schema_name)


def _error(status: int, code: str, message: str, **headers: str) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    response.headers.update(headers)
    return response


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def _matches_any(given: str, secrets: tuple[str, ...]) -> bool:
    """Constant time: every key is compared in full, whichever matches."""
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(given.encode("utf-8", "surrogatepass"), secret.encode("utf-8"))
    return found


def guarded(view: V) -> V:
    """A route over the index: it needs an API key when keys are configured and counts against the client's rate
    limit (the client is its key, else its address)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        svc = service()
        keys = svc.settings.api_keys
        given = _bearer()
        if keys and not _matches_any(given, keys):
            message = "a valid API key is required (Authorization: Bearer KEY)"
            return _error(401, "unauthorized", message, **{"WWW-Authenticate": 'Bearer realm="semsearch"'})
        if svc.limiter is not None:
            client = f"key:{given}" if keys else f"addr:{request.remote_addr}"
            decision = svc.limiter.acquire(client)
            if not decision.allowed:
                message = f"rate limit of {svc.settings.rate_limit:g} requests/s exceeded; retry later"
                return _error(429, "too_many_requests", message, **{"Retry-After": str(decision.retry_after)})
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# -- views --------------------------------------------------------------------------------------------


@bp.get("/search")
@guarded
def search_get() -> Response:
    started = time.perf_counter()
    body = query_to_body(request.args, GET_SEARCH_PARAMS, "SearchRequest", required=("q",))
    return jsonify(responses.search(service().searcher(), validate_body(body, "SearchRequest"), started))


@bp.post("/search")
@guarded
def search_post() -> Response:
    started = time.perf_counter()
    return jsonify(responses.search(service().searcher(), json_body("SearchRequest"), started))


@bp.post("/search/batch")
@guarded
def search_batch() -> Response:
    started = time.perf_counter()
    return jsonify(responses.batch(service().searcher(), json_body("BatchRequest"), started))


@bp.post("/context")
@guarded
def context() -> Response:
    """Retrieval for RAG: a numbered, cited block of passages within a token budget."""
    started = time.perf_counter()
    return jsonify(responses.context(service().searcher(), json_body("ContextRequest"), started))


@bp.get("/articles/<path:article_id>")
@guarded
def article(article_id: str) -> Response:
    if len(article_id) > MAX_ARTICLE_ID:
        raise InvalidRequestError(f"article_id is longer than {MAX_ARTICLE_ID} characters")
    return jsonify(responses.article(service().searcher(), article_id))


@bp.get("/articles/<path:article_id>/related")
@guarded
def related(article_id: str) -> Response:
    """The articles closest to this one. (An article whose own id ends in "/related" is served by the route
    above only for its related articles; ``GET /articles/<id>`` of such an id is not reachable.)"""
    body = validate_body(
        {"article_id": article_id, **query_to_body(request.args, GET_RELATED_PARAMS, "RelatedRequest")},
        "RelatedRequest",
    )
    return jsonify(responses.related(service().searcher(), body))


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
@guarded
def stats() -> Response:
    searcher = service().searcher()
    m = searcher.manifest
    embedder = searcher.embedder
    return jsonify(
        {
            "model": m.model_id,
            "rerank_model": searcher.reranker.name if searcher.reranker is not None else None,
            "rerank_depth": service().settings.rerank_depth,
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
    return jsonify(current_app.extensions["semsearch_openapi"])


@bp.get("/")
def home() -> Response:
    page = resources.files("semsearch.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    response = Response(page, content_type="text/html; charset=utf-8")
    # The page's script and styles are files of this server (static/): nothing inline, nothing from elsewhere.
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
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
    if not _matches_any(_bearer(), (token,)):
        return _error(401, "unauthorized", "a valid admin token is required (Authorization: Bearer TOKEN)",
                      **{"WWW-Authenticate": 'Bearer realm="semsearch-admin"'}), 401  # fmt: skip
    searcher = service().searcher()
    changed = searcher.reload()
    return jsonify({"reloaded": changed, "version": searcher.manifest.version_id}), 200
