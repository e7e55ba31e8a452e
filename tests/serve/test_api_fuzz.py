"""Property-based checks of the HTTP API: whatever a client sends, the answer is a 2xx/4xx with JSON, never a 500,
and every error has the documented shape. (The fixed list of malformed requests is in test_api.py.)"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semsearch import ChunkSettings, Settings, build_index
from semsearch.serve.app import create_app

from ..conftest import SAMPLE_CORPUS, FakeEmbedder

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


queries = st.sampled_from(["bridge architect", "Harlow Bay", "who won the cup final", "x"]) | st.text(
    min_size=1, max_size=80
).filter(str.strip)
filters = st.fixed_dictionaries(
    {},
    optional={
        "source": st.lists(st.sampled_from(["example-news", "bbc"]), max_size=2),
        "tags": st.lists(st.text(max_size=12), max_size=2),
        "article_ids": st.lists(st.text(max_size=20), max_size=2),
        "published_after": st.sampled_from(["2026-01-01", "2025-12-31T23:00:00", "1999-01-01"]),
        "published_before": st.sampled_from(["2027-01-01", "2026-06-01T12:00:00Z", "2026-03-01"]),
    },
)
k_values = st.integers(1, 100)
modes = st.sampled_from(["hybrid", "dense", "keyword"])
# Valid bodies; the test then replaces at most one field by any JSON value, so requests reach every check, and
# the search itself, with one odd value at a time.
bodies = {
    "/search": st.fixed_dictionaries(
        {"query": queries},
        optional={
            "k": k_values,
            "mode": modes,
            "group_by": st.sampled_from(["passage", "article"]),
            "per_article": st.integers(1, 10),
            "highlights": st.booleans(),
            "filters": filters,
        },
    ),
    "/search/batch": st.fixed_dictionaries(
        {"queries": st.lists(queries, min_size=1, max_size=64)},
        optional={"k": k_values, "mode": modes, "highlights": st.booleans(), "filters": filters},
    ),
    "/context": st.fixed_dictionaries(
        {"query": queries},
        optional={"max_tokens": st.integers(1, 32_768), "k": st.integers(1, 50), "mode": modes, "filters": filters},
    ),
}
FIELDS = {
    "/search": ["query", "k", "mode", "group_by", "per_article", "highlights", "filters", "unknown"],
    "/search/batch": ["queries", "k", "mode", "highlights", "filters", "unknown"],
    "/context": ["query", "max_tokens", "k", "mode", "filters", "unknown"],
}
get_params = st.fixed_dictionaries(
    {"q": queries},
    optional={
        "k": st.integers(1, 100).map(str),
        "mode": modes,
        "group_by": st.sampled_from(["passage", "article"]),
        "per_article": st.integers(1, 10).map(str),
        "highlights": st.sampled_from(["true", "false", "1", "0"]),
        "source": st.text(max_size=12),
        "tag": st.text(max_size=12),
        "article_id": st.text(max_size=20),
        "published_after": st.sampled_from(["2026-01-01", "2025-12-31T23:00:00"]),
        "published_before": st.sampled_from(["2027-01-01", "2026-03-01"]),
    },
)
GET_NAMES = ["q", "k", "mode", "group_by", "per_article", "highlights", "source", "tag", "article_id",
             "published_after", "published_before", "unknown"]  # fmt: skip


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    root = tmp_path_factory.mktemp("fuzz")
    settings_ = Settings(index_dir=root / "index", precision="fp32", chunking=ChunkSettings(min_chars=20))
    embedder = FakeEmbedder()
    build_index([SAMPLE_CORPUS], settings_.index_dir, settings_, embedder=embedder)
    app = create_app(settings_.with_(max_body_bytes=4096), embedder=embedder)
    yield app.test_client()
    app.extensions["semsearch"].close()


def _check(response: Any) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    body = response.get_json()
    if response.status_code >= 400:
        assert set(body) == {"error"}
        assert isinstance(body["error"]["code"], str) and body["error"]["code"]
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    else:
        assert response.status_code == 200


@FUZZ
@given(data=st.data(), params=get_params)
def test_get_search_never_fails_on_any_query_string(
    client: FlaskClient, data: st.DataObject, params: dict[str, str]
) -> None:
    if data.draw(st.booleans()):  # one parameter set to (or added with) any text
        params[data.draw(st.sampled_from(GET_NAMES))] = data.draw(st.text(max_size=30))
    response = client.get("/search?" + urllib.parse.urlencode(params))
    _check(response)
    if response.status_code == 200:
        body = response.get_json()
        assert len(body.get("hits", body.get("articles", []))) <= body["k"]


@FUZZ
@given(data=st.data(), path=st.sampled_from(sorted(bodies)))
def test_post_endpoints_never_fail_on_any_json(client: FlaskClient, data: st.DataObject, path: str) -> None:
    body: Any = data.draw(bodies[path])
    if data.draw(st.booleans()):
        body[data.draw(st.sampled_from(FIELDS[path]))] = data.draw(json_values)
    if data.draw(st.sampled_from([False] * 9 + [True])):
        body = data.draw(json_values)  # not even an object, sometimes
    _check(client.post(path, data=json.dumps(body), content_type="application/json"))


@FUZZ
@given(
    path=st.sampled_from(["/search", "/search/batch", "/context", "/admin/reload"]),
    raw=st.binary(max_size=300) | st.binary(min_size=4097, max_size=6000),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]),
)
def test_post_endpoints_never_fail_on_any_bytes(client: FlaskClient, path: str, raw: bytes, content_type: str) -> None:
    response = client.post(path, data=raw, content_type=content_type or None)
    _check(response)
    if len(raw) > 4096 and content_type == "application/json" and path != "/admin/reload":
        assert response.status_code == 413  # a JSON body is read, and refused, past the limit


@FUZZ
@given(article_id=st.text(min_size=1, max_size=80))
def test_article_lookup_never_fails(client: FlaskClient, article_id: str) -> None:
    response = client.get("/articles/" + urllib.parse.quote(article_id, safe=""))
    _check(response)
