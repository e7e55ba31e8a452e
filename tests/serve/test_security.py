"""API keys, the per-client rate limit, path traversal and what the logs may hold (Flask test client, fake model;
tests/integration/test_api_fuzz_server.py runs the same rules on a real server)."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from semsearch import Settings
from semsearch.serve.app import create_app
from semsearch.serve.openapi import openapi_spec
from semsearch.serve.ratelimit import RateLimiter

KEYS = ("key-one-s3cret", "key-two-s3cret")
ADMIN = "adm1n-s3cret"
GUARDED = [
    ("get", "/search?q=bridge", {}),
    ("post", "/search", {"json": {"query": "bridge"}}),
    ("post", "/search/batch", {"json": {"queries": ["bridge"]}}),
    ("post", "/context", {"json": {"query": "bridge"}}),
    ("get", "/articles/bridge.txt", {}),
    ("get", "/stats", {}),
]
OPEN = ["/healthz", "/readyz", "/openapi.json", "/metrics", "/"]


def _app(settings: Settings, fake_embedder, **changes) -> Iterator[Flask]:
    app = create_app(settings.with_(**changes), embedder=fake_embedder)
    app.config["TESTING"] = True
    yield app
    app.extensions["semsearch"].close()


@pytest.fixture
def client(built_index, settings: Settings, fake_embedder) -> Iterator[FlaskClient]:
    for app in _app(settings, fake_embedder):
        yield app.test_client()


@pytest.fixture
def keyed(built_index, settings: Settings, fake_embedder) -> Iterator[FlaskClient]:
    for app in _app(settings, fake_embedder, api_keys=KEYS, admin_token=ADMIN):
        yield app.test_client()


@pytest.mark.parametrize(("method", "path", "kwargs"), GUARDED)
def test_with_api_keys_every_index_route_needs_one(keyed: FlaskClient, method: str, path: str, kwargs) -> None:
    call = getattr(keyed, method)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEYS[0]},
                    {"Authorization": f"Basic {KEYS[0]}"}, {"Authorization": f"Bearer {ADMIN}"}):  # fmt: skip
        response = call(path, headers=headers, **kwargs)
        assert response.status_code == 401, headers
        assert response.get_json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    for key in KEYS:
        assert call(path, headers={"Authorization": f"Bearer {key}"}, **kwargs).status_code == 200
        assert call(path, headers={"Authorization": f"bearer  {key}"}, **kwargs).status_code == 200


@pytest.mark.parametrize("path", OPEN)
def test_probes_spec_metrics_and_page_need_no_key(keyed: FlaskClient, path: str) -> None:
    assert keyed.get(path).status_code == 200


def test_without_api_keys_the_index_routes_are_open(client: FlaskClient) -> None:
    for method, path, kwargs in GUARDED:
        assert getattr(client, method)(path, **kwargs).status_code == 200, path


def test_the_served_spec_says_which_routes_need_a_key(keyed: FlaskClient, client: FlaskClient) -> None:
    spec = keyed.get("/openapi.json").get_json()
    assert spec == openapi_spec(Settings(api_keys=KEYS, admin_token=ADMIN))
    for method, path, _ in GUARDED:
        template = "/articles/{article_id}" if path.startswith("/articles/") else path.split("?")[0]
        operation = spec["paths"][template][method]
        assert operation["security"] == [{"bearer": []}] and "401" in operation["responses"], path
    assert "security" not in spec["paths"]["/healthz"]["get"]
    plain = client.get("/openapi.json").get_json()
    assert "security" not in plain["paths"]["/search"]["get"] and "401" not in plain["paths"]["/search"]["get"]


def test_the_admin_route_is_in_the_spec_only_with_a_token(settings: Settings) -> None:
    assert "/admin/reload" not in openapi_spec(settings)["paths"]
    assert "/admin/reload" in openapi_spec(settings.with_(admin_token=ADMIN))["paths"]


@pytest.fixture
def limited(built_index, settings: Settings, fake_embedder) -> Iterator[FlaskClient]:
    for app in _app(settings, fake_embedder, rate_limit=0.5, rate_burst=3):
        yield app.test_client()


def test_a_client_over_its_rate_gets_429_with_retry_after(limited: FlaskClient) -> None:
    here = {"REMOTE_ADDR": "10.0.0.1"}
    statuses = [limited.get("/search?q=bridge", environ_base=here).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]  # the burst
    response = limited.post("/search", json={"query": "bridge"}, environ_base=here)
    assert response.status_code == 429
    assert response.get_json()["error"]["code"] == "too_many_requests"
    # One token comes back every 2 s at 0.5 requests/s.
    assert response.headers["Retry-After"] == "2"
    # Another client has its own bucket; probes are never limited.
    assert limited.get("/search?q=bridge", environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code == 200
    assert limited.get("/healthz", environ_base=here).status_code == 200
    assert "429" in limited.get("/openapi.json").get_json()["paths"]["/search"]["get"]["responses"]


def test_the_rate_limit_refills_at_the_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=2)
    assert [limiter.acquire("c", now=100.0).allowed for _ in range(3)] == [True, True, False]
    assert limiter.acquire("c", now=100.2).allowed is False  # 0.4 token
    assert limiter.acquire("c", now=100.5).allowed is True  # 1.0 token
    assert limiter.acquire("c", now=100.5).retry_after == 1
    assert [limiter.acquire("c", now=200.0).allowed for _ in range(3)] == [True, True, False]  # capped at the burst


def _spend(limiter: RateLimiter, n: int, out) -> None:
    out.put([limiter.acquire("shared-client", now=50.0).allowed for _ in range(n)])


def test_workers_forked_from_one_server_share_the_limit() -> None:
    """gunicorn forks its workers after the app (and the limiter) exists: a client landing on another worker
    finds its bucket already spent there."""
    limiter = RateLimiter(rate=1.0, burst=4)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_spend, args=(limiter, 3, out))
    child.start()
    child.join(10)
    assert out.get(timeout=5) == [True, True, True]
    assert [limiter.acquire("shared-client", now=50.0).allowed for _ in range(2)] == [True, False]


@pytest.mark.parametrize(
    "path",
    ["/articles/../../etc/passwd", "/articles/%2e%2e/%2e%2e/etc/passwd", "/articles/..%2F..%2Fetc%2Fpasswd",
     "/articles//etc/passwd", "/articles/%2Fetc%2Fpasswd"],
)  # fmt: skip
def test_article_ids_never_reach_the_file_system(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    assert "root:" not in response.get_data(as_text=True)


def test_info_logs_hold_no_secrets_and_no_query_text(keyed: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        keyed.get("/search?q=my+private+question", headers={"Authorization": f"Bearer {KEYS[0]}"})
        keyed.post("/context", json={"query": "private context"}, headers={"Authorization": f"Bearer {KEYS[1]}"})
        keyed.post("/search", json={"query": "private"}, headers={"Authorization": "Bearer guessed-key"})
        keyed.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"})
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert "GET /search 200" in text and "POST /search 401" in text
    for secret in (*KEYS, ADMIN, "guessed-key", "private"):
        assert secret not in text
