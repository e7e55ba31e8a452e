from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from semsearch import Settings, build_index
from semsearch.errors import IndexCorruptError
from semsearch.index.reader import IndexVersion
from semsearch.serve.app import create_app
from semsearch.serve.openapi import openapi_spec

SPEC = openapi_spec(Settings(admin_token="s3cret-token"))  # the spec of the app in the fixture below


@pytest.fixture
def app(built_index, settings: Settings, fake_embedder) -> Iterator[Flask]:
    app = create_app(settings.with_(admin_token="s3cret-token"), embedder=fake_embedder)
    app.config["TESTING"] = True
    yield app
    app.extensions["semsearch"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def conforms(path: str, method: str, response: Any) -> Any:
    """Check a real response against the OpenAPI spec's schema for that path, method and status."""
    operation = SPEC["paths"][path][method]
    spec_response = operation["responses"][str(response.status_code)]
    if response.mimetype == "application/json":
        schema = dict(spec_response["content"]["application/json"]["schema"])
        schema["components"] = SPEC["components"]
        resolver_schema = {"$defs": {}, **schema}
        jsonschema.validate(response.get_json(), resolver_schema, cls=jsonschema.Draft202012Validator)
    return response.get_json() if response.is_json else response.get_data(as_text=True)


def test_openapi_spec_is_valid() -> None:
    validate(SPEC)


def test_openapi_served(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.get_json() == json.loads(json.dumps(SPEC))


def test_get_search(client: FlaskClient) -> None:
    response = client.get("/search?q=who+designed+the+bridge+architect&k=2")
    assert response.status_code == 200
    data = conforms("/search", "get", response)
    assert data["query"] == "who designed the bridge architect" and data["k"] == 2
    assert len(data["hits"]) == 2 and data["took_ms"] >= 0
    assert data["hits"][0]["article_id"] == "bridge.txt"
    assert "Saoirse Delaney" in data["hits"][0]["text"]


def test_post_search_matches_get(client: FlaskClient) -> None:
    response = client.post("/search", json={"query": "limestone boulders reef", "k": 3})
    data = conforms("/search", "post", response)
    get = client.get("/search?q=limestone boulders reef&k=3").get_json()
    assert [h["passage_id"] for h in data["hits"]] == [h["passage_id"] for h in get["hits"]]
    assert data["hits"][0]["article_id"] == "reef.txt"


def test_batch_search_embeds_all_queries_in_one_batch(
    client: FlaskClient, fake_embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    embed = fake_embedder.embed_queries

    def recording(texts):  # type: ignore[no-untyped-def]
        calls.append(list(texts))
        return embed(texts)

    monkeypatch.setattr(fake_embedder, "embed_queries", recording)
    queries = ["bridge architect", "interest rate cut", "coral reef divers", "mortgage lenders", "river crossing"]
    for mode in ("hybrid", "dense"):
        calls.clear()
        response = client.post("/search/batch", json={"queries": queries, "k": 1, "mode": mode})
        data = conforms("/search/batch", "post", response)
        assert calls == [queries]  # one model call for the whole batch
        assert [r["query"] for r in data["results"]] == queries
        expected = ["bridge.txt", "bank.txt", "reef.txt", "bank.txt", "bridge.txt"]
        assert [r["hits"][0]["article_id"] for r in data["results"]] == expected
        singles = [client.get(f"/search?q={q}&k=1&mode={mode}").get_json()["hits"][0]["passage_id"] for q in queries]
        assert [r["hits"][0]["passage_id"] for r in data["results"]] == singles


def test_article(client: FlaskClient) -> None:
    data = conforms("/articles/{article_id}", "get", client.get("/articles/reef.txt"))
    assert data["title"] == "Reef restoration reaches milestone"
    assert [p["ordinal"] for p in data["passages"]] == list(range(len(data["passages"])))
    assert "path" not in data


def test_article_ids_with_slashes(tmp_path: Path, fake_embedder) -> None:
    src = tmp_path / "src" / "world"
    src.mkdir(parents=True)
    (src / "a.txt").write_text("Nested\n\nAn article in a folder.", encoding="utf-8")
    settings = Settings(index_dir=tmp_path / "ix")
    build_index([tmp_path / "src"], settings.index_dir, settings, embedder=fake_embedder)
    client = create_app(settings, embedder=fake_embedder).test_client()
    assert client.get("/articles/world/a.txt").get_json()["title"] == "Nested"
    # A doubled slash is part of the id, not redirected (a redirect's body would be HTML): JSON 404.
    missing = client.get("/articles//world/a.txt")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"


def test_health_ready_stats(client: FlaskClient, fake_embedder) -> None:
    assert conforms("/healthz", "get", client.get("/healthz")) == {"status": "ok"}
    ready = conforms("/readyz", "get", client.get("/readyz"))
    assert ready["status"] == "ready"
    stats = conforms("/stats", "get", client.get("/stats"))
    assert stats["model"] == fake_embedder.model_id and stats["articles"] == 3
    assert stats["index_version"] == ready["version"]
    (segment,) = stats["segments"]  # the fixture's index: one flat segment, exact search
    assert segment["vector_index"] == "flat" and segment["rows"] == stats["passages"]
    assert stats["dense_recall_at_10"] == 1.0 and stats["deleted"] == 0


def test_metrics_count_requests_by_route_and_status(client: FlaskClient) -> None:
    client.get("/search?q=reef")
    client.get("/search?q=")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'semsearch_http_requests_total{method="GET",route="/search",status="200"} 1.0' in text
    assert 'semsearch_http_requests_total{method="GET",route="/search",status="400"} 1.0' in text
    assert "semsearch_http_request_duration_seconds_bucket" in text
    assert "semsearch_index_passages" in text and "semsearch_index_info{" in text


def test_home_page(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert 'id="search-form"' in response.get_data(as_text=True)


LONG = "x" * 2001


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "message"),
    [
        ("get", "/search", {}, 400, "q is required"),
        ("get", "/search?q=", {}, 400, "must not be empty"),
        ("get", "/search?q=%20%20", {}, 400, "must not be empty"),
        ("get", f"/search?q={LONG}", {}, 400, "longer than 2000"),
        ("get", "/search?q=a&k=0", {}, 400, "between 1 and 100"),
        ("get", "/search?q=a&k=101", {}, 400, "between 1 and 100"),
        ("get", "/search?q=a&k=ten", {}, 400, "k must be an integer"),
        ("get", "/search?q=a&k=1.5", {}, 400, "k must be an integer"),
        ("post", "/search", {"json": {}}, 400, "query is required"),
        ("post", "/search", {"json": {"query": ""}}, 400, "must not be empty"),
        ("post", "/search", {"json": {"query": LONG}}, 400, "longer than 2000"),
        ("post", "/search", {"json": {"query": 42}}, 400, "query must be a string"),
        ("post", "/search", {"json": {"query": None}}, 400, "query must be a string"),
        ("post", "/search", {"json": {"query": "a", "k": "5"}}, 400, "k must be an integer"),
        ("post", "/search", {"json": {"query": "a", "k": True}}, 400, "k must be an integer"),
        ("post", "/search", {"json": {"query": "a", "k": 2.5}}, 400, "k must be an integer"),
        ("post", "/search", {"json": {"query": "a", "filters": None}}, 400, "filters must be an object"),
        ("post", "/search", {"json": {"query": "a", "filters": {"published_after": "soon"}}}, 400, "ISO date"),
        ("post", "/search", {"json": {"query": "a", "filters": {"source": ""}}}, 400, "filters.source must not be empty"),
        ("post", "/context", {"json": {"query": "a", "max_tokens": 0}}, 400, "max_tokens must be between 1 and"),
        ("post", "/search", {"json": {"query": "a", "k": 0}}, 400, "between 1 and 100"),
        ("post", "/search", {"json": {"qeury": "a"}}, 400, "unknown field(s): qeury"),
        ("post", "/search", {"json": ["a"]}, 400, "must be an object"),
        ("post", "/search", {"data": "{bad json", "content_type": "application/json"}, 400, "malformed JSON"),
        ("post", "/search", {"data": b"\xff\xfe", "content_type": "application/json"}, 400, "malformed JSON"),
        ("post", "/search", {"data": "query=a", "content_type": "application/x-www-form-urlencoded"}, 400,
         "Content-Type must be application/json"),
        ("post", "/search", {"data": '{"query": "a"}'}, 400, "Content-Type must be application/json"),
        ("post", "/search/batch", {"json": {"queries": []}}, 400, "non-empty list"),
        ("post", "/search/batch", {"json": {"queries": "a"}}, 400, "non-empty list"),
        ("post", "/search/batch", {"json": {"queries": ["a"] * 65}}, 400, "at most 64"),
        ("post", "/search/batch", {"json": {"queries": ["a", ""]}}, 400, "queries[1] must not be empty"),
        ("post", "/search/batch", {"json": {"queries": ["a", 3]}}, 400, "queries[1] must be a string"),
        ("post", "/search", {"data": "x" * 3_000_000, "content_type": "application/json"}, 413, "larger than"),
        ("get", "/nope", {}, 404, "not found"),
        ("get", "/articles/missing.txt", {}, 404, "no article with id"),
        ("delete", "/search", {}, 405, "not allowed"),
        ("put", "/search/batch", {}, 405, "not allowed"),
        ("get", "/search/batch", {}, 405, "not allowed"),
    ],
)  # fmt: skip
def test_bad_requests_get_json_errors(
    client: FlaskClient, method: str, path: str, kwargs: dict[str, Any], status: int, message: str
) -> None:
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    assert response.is_json
    error = response.get_json()["error"]
    assert set(error) == {"code", "message"}
    assert message.lower() in error["message"].lower()
    jsonschema.validate(response.get_json(), SPEC["components"]["schemas"]["Error"])


def test_405_lists_allowed_methods(client: FlaskClient) -> None:
    assert "POST" in client.delete("/search/batch").headers["Allow"]


def test_no_index_means_503_not_500(tmp_path: Path, fake_embedder) -> None:
    client = create_app(Settings(index_dir=tmp_path / "empty"), embedder=fake_embedder).test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["status"] == "unavailable"
    for response in (client.get("/search?q=a"), client.post("/search", json={"query": "a"}), client.get("/stats")):
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "index_not_found"


def test_service_becomes_ready_when_an_index_is_published(tmp_path: Path, corpus_dir: Path, fake_embedder) -> None:
    settings = Settings(index_dir=tmp_path / "later", reload_check_seconds=0)
    client = create_app(settings, embedder=fake_embedder).test_client()
    assert client.get("/readyz").status_code == 503
    build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    assert client.get("/readyz").status_code == 200
    assert client.get("/search?q=reef").status_code == 200


def test_hot_reload_follows_a_new_version(
    tmp_path: Path, corpus_dir: Path, settings: Settings, built_index, fake_embedder, monkeypatch
) -> None:
    import semsearch.index.reader

    loads: list[tuple[int, str]] = []

    class RecordingKeyword(semsearch.index.reader.VersionKeyword):
        def __init__(self, segments: Any) -> None:
            loads.append((len(segments), threading.current_thread().name))
            super().__init__(segments)

    monkeypatch.setattr(semsearch.index.reader, "VersionKeyword", RecordingKeyword)
    app = create_app(settings.with_(reload_check_seconds=0), embedder=fake_embedder)
    client = app.test_client()
    before = client.get("/stats").get_json()
    (corpus_dir / "volcano.txt").write_text("Volcano erupts\n\nThe volcano erupted at dawn.", encoding="utf-8")
    new = build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder).version_id
    after = wait_for_new_version(client, before["index_version"])
    assert after["articles"] == 4 and after["reload_error"] is None and after["index_version"] == new
    # The new version's BM25 index was loaded once, on the background loader, before the switch (/stats does
    # not search), so no request paid for it.
    assert [thread for _, thread in loads] == ["semsearch-reload"]
    assert client.get("/search?q=volcano+erupted&k=1").get_json()["hits"][0]["article_id"] == "volcano.txt"
    assert len(loads) == 1


def wait_for_new_version(client: FlaskClient, old: str, timeout: float = 20.0) -> dict[str, Any]:
    """Query /stats (each request may start the background reload) until it names a version other than ``old``."""
    deadline = time.monotonic() + timeout
    while True:
        stats = client.get("/stats").get_json()
        if stats["index_version"] != old:
            return stats  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"still serving {old} after {timeout} s: {stats}"
        time.sleep(0.02)


@pytest.fixture
def following(built_index, settings: Settings, fake_embedder) -> Iterator[tuple[FlaskClient, str]]:
    """A test client of an app that checks for new versions on every request, and the version it serves."""
    app = create_app(settings.with_(reload_check_seconds=0), embedder=fake_embedder)
    client = app.test_client()
    yield client, client.get("/stats").get_json()["index_version"]
    app.extensions["semsearch"].close()


def test_a_new_version_loads_off_the_request_path(
    following: tuple[FlaskClient, str], corpus_dir: Path, settings: Settings, fake_embedder, monkeypatch
) -> None:
    """While a published version is still loading, requests are answered at once from the current one."""
    client, old = following
    loading, release = threading.Event(), threading.Event()
    warm = IndexVersion.warm

    def slow_warm(self: IndexVersion) -> None:
        loading.set()
        assert release.wait(30)
        warm(self)

    monkeypatch.setattr(IndexVersion, "warm", slow_warm)
    (corpus_dir / "volcano.txt").write_text("Volcano erupts\n\nThe volcano erupted at dawn.", encoding="utf-8")
    build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    try:
        first = client.get("/search?q=volcano+erupted&k=3")
        assert loading.wait(10), "publishing did not start a background load"
        started = time.monotonic()
        for _ in range(5):  # the load is blocked: every request is served, from the old version
            response = client.get("/search?q=volcano+erupted&k=3")
            assert response.status_code == 200 and response.get_json()["version"] == old
        assert time.monotonic() - started < 10, "requests waited for the load"
        assert first.status_code == 200 and first.get_json()["version"] == old
    finally:
        release.set()
    assert wait_for_new_version(client, old)["articles"] == 4


def test_a_version_that_fails_to_load_is_reported_and_the_current_one_kept(
    following: tuple[FlaskClient, str], corpus_dir: Path, settings: Settings, fake_embedder, monkeypatch
) -> None:
    client, old = following
    attempts: list[str] = []
    warm = IndexVersion.warm

    def broken_warm(self: IndexVersion) -> None:
        attempts.append(self.version_id)
        raise IndexCorruptError(f"{self.path}/keyword: truncated")

    monkeypatch.setattr(IndexVersion, "warm", broken_warm)
    (corpus_dir / "volcano.txt").write_text("Volcano erupts\n\nThe volcano erupted at dawn.", encoding="utf-8")
    bad = build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder).version_id
    deadline = time.monotonic() + 20
    while True:
        stats = conforms("/stats", "get", client.get("/stats"))
        assert stats["index_version"] == old  # never switched, never failed
        if stats["reload_error"] is not None:
            break
        assert time.monotonic() < deadline, "the failed load was not reported"
        time.sleep(0.02)
    assert bad in stats["reload_error"] and "truncated" in stats["reload_error"]
    for _ in range(10):
        assert client.get("/search?q=bridge&k=2").status_code == 200
    time.sleep(0.2)
    assert attempts == [bad]  # not retried until another version is published
    # The operator publishes a fixed version: it is taken and the error cleared.
    monkeypatch.setattr(IndexVersion, "warm", warm)
    (corpus_dir / "volcano.txt").write_text("Volcano erupts\n\nThe volcano erupted at noon.", encoding="utf-8")
    build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    after = wait_for_new_version(client, old)
    assert after["reload_error"] is None and after["index_version"] != bad


def test_admin_reload_needs_the_token(client: FlaskClient) -> None:
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/admin/reload", headers={"Authorization": "s3cret-token"}).status_code == 401
    response = client.post("/admin/reload", headers={"Authorization": "Bearer s3cret-token"})
    data = conforms("/admin/reload", "post", response)
    assert data["reloaded"] is False  # nothing new was published


def test_admin_reload_switches_to_a_newly_published_version(
    built_index, corpus_dir: Path, settings: Settings, fake_embedder
) -> None:
    # Hours between background checks: only the admin call can make the switch.
    app = create_app(settings.with_(admin_token="s3cret-token", reload_check_seconds=3600), embedder=fake_embedder)
    client = app.test_client()
    old = client.get("/stats").get_json()["index_version"]
    (corpus_dir / "volcano.txt").write_text("Volcano erupts\n\nThe volcano erupted at dawn.", encoding="utf-8")
    new = build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder).version_id
    assert new != old and client.get("/stats").get_json()["index_version"] == old
    response = client.post("/admin/reload", headers={"Authorization": "Bearer s3cret-token"})
    assert conforms("/admin/reload", "post", response) == {"reloaded": True, "version": new}
    assert client.get("/stats").get_json()["index_version"] == new
    hit = client.get("/search?q=volcano+erupted&k=1").get_json()
    assert hit["version"] == new and hit["hits"][0]["article_id"] == "volcano.txt"
    again = client.post("/admin/reload", headers={"Authorization": "Bearer s3cret-token"})
    assert again.get_json() == {"reloaded": False, "version": new}
    app.extensions["semsearch"].close()


def test_admin_routes_do_not_exist_without_a_token(built_index, settings: Settings, fake_embedder) -> None:
    client = create_app(settings, embedder=fake_embedder).test_client()
    response = client.post("/admin/reload", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 404


def test_cors_off_by_default_and_on_when_configured(built_index, settings: Settings, fake_embedder) -> None:
    off = create_app(settings, embedder=fake_embedder).test_client()
    assert "Access-Control-Allow-Origin" not in off.get("/healthz", headers={"Origin": "https://a.example"}).headers
    on = create_app(settings.with_(cors_origins=("https://a.example",)), embedder=fake_embedder).test_client()
    assert on.get("/healthz", headers={"Origin": "https://a.example"}).headers["Access-Control-Allow-Origin"] == (
        "https://a.example"
    )
    assert "Access-Control-Allow-Origin" not in on.get("/healthz", headers={"Origin": "https://b.example"}).headers


def test_request_log_has_no_query_text(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="semsearch.http"):
        client.get("/search?q=my+private+medical+question")
        client.post("/search", json={"query": "another private thing"})
    lines = [r.getMessage() for r in caplog.records if r.name == "semsearch.http"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /search 200 ") and lines[0].endswith("ms")
    assert not any("private" in line for line in lines)


def test_search_modes_filters_and_grouping_over_http(client: FlaskClient) -> None:
    for mode in ("dense", "keyword", "hybrid"):
        data = conforms("/search", "get", client.get(f"/search?q=limestone+boulders+reef&k=2&mode={mode}"))
        assert data["mode"] == mode and data["hits"][0]["article_id"] == "reef.txt"
    grouped = conforms(
        "/search", "post", client.post("/search", json={"query": "reef bank bridge", "group_by": "article", "k": 3})
    )
    assert grouped["group_by"] == "article" and len({a["article_id"] for a in grouped["articles"]}) == 3
    filtered = client.get("/search?q=reef+bank+bridge&article_id=bank.txt&article_id=bridge.txt").get_json()
    assert {h["article_id"] for h in filtered["hits"]} <= {"bank.txt", "bridge.txt"}
    posted = client.post("/search", json={"query": "reef", "filters": {"article_ids": ["bank.txt"]}}).get_json()
    assert {h["article_id"] for h in posted["hits"]} == {"bank.txt"}
    hit = client.get("/search?q=architect+designed&k=1").get_json()["hits"][0]
    (h,) = hit["highlights"]
    assert hit["text"][h["start"] : h["end"]] == h["text"] and "architect" in h["text"]
    assert client.get("/search?q=architect&highlights=false").get_json()["hits"][0]["highlights"] == []


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "message"),
    [
        ("get", "/search?q=a&mode=fuzzy", {}, "mode must be one of"),
        ("get", "/search?q=a&group_by=site", {}, "group_by must be"),
        ("get", "/search?q=a&per_article=0", {}, "per_article must be between"),
        ("get", "/search?q=a&published_after=yesterday", {}, "ISO date"),
        ("get", "/search?q=a&highlights=maybe", {}, "highlights must be"),
        ("get", "/search?q=a&colour=red", {}, "unknown parameter(s): colour"),
        ("post", "/search", {"json": {"query": "a", "filters": {"sources": ["x"]}}}, "unknown filter(s): sources"),
        ("post", "/search", {"json": {"query": "a", "filters": ["x"]}}, "filters must be an object"),
        ("post", "/search", {"json": {"query": "a", "filters": {"tags": [3]}}}, "filters.tags[0] must be a string"),
        ("post", "/search", {"json": {"query": "a", "highlights": "yes"}}, "highlights must be"),
        ("post", "/search/batch", {"json": {"queries": ["a"], "mode": "x"}}, "mode must be one of"),
    ],
)
def test_bad_search_options_get_400(client: FlaskClient, method, path, kwargs, message) -> None:
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == 400
    assert message in response.get_json()["error"]["message"]


def test_the_spec_and_validate_query_agree_on_blank_queries() -> None:
    """The spec's query pattern (what clients and fuzzers are told) and the library's rule are the same set."""
    import re
    import sys

    from semsearch.errors import InvalidRequestError
    from semsearch.retrieve.validation import validate_query

    pattern = re.compile(SPEC["components"]["schemas"]["SearchRequest"]["properties"]["query"]["pattern"])
    for char in map(chr, range(sys.maxunicode + 1)):
        try:
            validate_query(char)
            accepted = True
        except InvalidRequestError:
            accepted = False
        assert accepted == bool(pattern.search(char)), hex(ord(char))
