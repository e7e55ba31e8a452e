"""``semsearch mcp`` on the real model and the sample index, driven by the official MCP SDK's own client: started
over stdio as a chat client starts it, and over streamable HTTP. The expected error messages come from the HTTP
API (Flask's test client), which the MCP tools must match word for word."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import pytest
from flask.testing import FlaskClient
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from semsearch import Settings
from semsearch.models.embedding import SentenceTransformerEmbedder
from semsearch.serve.app import create_app
from semsearch.serve.schemas import SCHEMAS

from .servers import free_port

ARTICLE = "local/aldermouth-tessel-crossing-opens.txt"
QUESTION = "Which architect was behind the new river bridge in Aldermouth?"
ANSWER = "designed by architect Saoirse Delaney"
MISSING = "local/no-such-article.txt"

TOOL_REQUESTS = {
    "search": "SearchRequest",
    "get_article": "ArticleRequest",
    "related_articles": "RelatedRequest",
    "context": "ContextRequest",
}

SEARCH = {"query": QUESTION, "k": 5}
SEARCH_EVERY_FIELD = {
    "query": "new public services opening", "k": 4, "mode": "hybrid", "group_by": "article", "per_article": 2,
    "highlights": False, "filters": {"published_after": "2020-01-01"},
    "recency": {"half_life_days": 30, "as_of": "2026-12-31"}, "explain": True, "facets": ["source", "published_month"],
}  # fmt: skip
CONTEXT_EVERY_FIELD = {
    "query": "new public services opening", "max_tokens": 150, "k": 4, "mode": "dense",
    "filters": {"source": ["Example Wire"]}, "recency": {"half_life_days": 30, "as_of": "2026-12-31"},
}  # fmt: skip

# Calls and the HTTP request that asks the same: (tool, arguments, method, path, body or query string).
CALLS: dict[str, tuple[str, dict[str, Any], str, str, dict[str, Any]]] = {
    "search": ("search", SEARCH, "POST", "/search", SEARCH),
    "search_articles": ("search", {"query": QUESTION, "k": 3, "group_by": "article", "per_article": 2}, "POST",
                        "/search", {"query": QUESTION, "k": 3, "group_by": "article", "per_article": 2}),
    "search_every_field": ("search", SEARCH_EVERY_FIELD, "POST", "/search", SEARCH_EVERY_FIELD),
    "search_passages_every_field": ("search", {**SEARCH_EVERY_FIELD, "group_by": "passage"}, "POST", "/search",
                                    {**SEARCH_EVERY_FIELD, "group_by": "passage"}),
    "article": ("get_article", {"article_id": ARTICLE}, "GET", f"/articles/{ARTICLE}", {}),
    "related": ("related_articles", {"article_id": ARTICLE, "k": 5}, "GET", f"/articles/{ARTICLE}/related",
                {"k": 5}),
    "related_every_field": ("related_articles", {"article_id": ARTICLE, "k": 3, "per_article": 3,
                            "filters": {"published_after": "2020-01-01"}}, "GET", f"/articles/{ARTICLE}/related",
                            {"k": 3, "per_article": 3, "published_after": "2020-01-01"}),
    "context": ("context", {"query": QUESTION, "max_tokens": 200}, "POST", "/context",
                {"query": QUESTION, "max_tokens": 200}),
    "context_every_field": ("context", CONTEXT_EVERY_FIELD, "POST", "/context", CONTEXT_EVERY_FIELD),
}  # fmt: skip

# Invalid calls, the same way.
INVALID: dict[str, tuple[str, dict[str, Any], str, str, dict[str, Any]]] = {
    "k_zero": ("search", {"query": "bridge", "k": 0}, "POST", "/search", {"query": "bridge", "k": 0}),
    "blank_query": ("search", {"query": "  \t"}, "POST", "/search", {"query": "  \t"}),
    "no_query": ("search", {}, "POST", "/search", {}),
    "unknown_field": ("search", {"query": "bridge", "limit": 3}, "POST", "/search", {"query": "bridge", "limit": 3}),
    "bad_mode": ("search", {"query": "bridge", "mode": "fuzzy"}, "POST", "/search", {"query": "bridge", "mode": "fuzzy"}),
    "bad_date": ("search", {"query": "bridge", "filters": {"published_after": "soon"}}, "POST", "/search",
                 {"query": "bridge", "filters": {"published_after": "soon"}}),
    "unknown_filter": ("search", {"query": "bridge", "filters": {"author": "x"}}, "POST", "/search",
                       {"query": "bridge", "filters": {"author": "x"}}),
    "context_budget": ("context", {"query": "bridge", "max_tokens": 0}, "POST", "/context",
                       {"query": "bridge", "max_tokens": 0}),
    "article_missing": ("get_article", {"article_id": MISSING}, "GET", f"/articles/{MISSING}", {}),
    "article_id_too_long": ("get_article", {"article_id": "x" * 1025}, "GET", "/articles/" + "x" * 1025, {}),
    "related_k_zero": ("related_articles", {"article_id": ARTICLE, "k": 0}, "GET", f"/articles/{ARTICLE}/related",
                       {"k": "0"}),
    "related_missing": ("related_articles", {"article_id": MISSING}, "GET", f"/articles/{MISSING}/related", {}),
}  # fmt: skip


def server_environ(model_cache: Path) -> dict[str, str]:
    """The test's environment without its SEMSEARCH_* settings; the session's model cache; offline."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SEMSEARCH_")}
    environ.update(SEMSEARCH_CACHE_DIR=str(model_cache), HF_HUB_OFFLINE="1")
    return environ


@dataclass
class Conversation:
    tools: list[types.Tool]
    results: dict[str, types.CallToolResult]
    log: str = ""
    faults: list[Exception] = field(default_factory=list)
    """What the client could not read (a line on stdout that is not a protocol message, say)."""


async def _converse(
    session: ClientSession, calls: dict[str, tuple[str, dict[str, Any], Any, Any, Any]]
) -> Conversation:
    await session.initialize()
    listing = await session.list_tools()
    results = {label: await session.call_tool(tool, arguments) for label, (tool, arguments, *_) in calls.items()}
    return Conversation(listing.tools, results)


@pytest.fixture(scope="module")
def stdio(sample_index: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Conversation:
    """One stdio session (one model load): the tools listed, every call of CALLS and INVALID made."""
    log = tmp_path_factory.mktemp("mcp-stdio") / "stderr.log"
    calls = {**CALLS, **INVALID}
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "semsearch.cli", "mcp", "--index-dir", str(sample_index)],
        env=server_environ(model_cache),
    )

    faults: list[Exception] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):
            faults.append(message)

    async def run() -> Conversation:
        with anyio.fail_after(180), open(log, "w") as errlog:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write, message_handler=on_message) as session,
            ):
                conversation = await _converse(session, calls)
                # The second page of a search: the cursor comes from the first.
                cursor = conversation.results["search"].structured_content["next_cursor"]
                conversation.results["search_page_2"] = await session.call_tool("search", {**SEARCH, "cursor": cursor})
                return conversation

    conversation = anyio.run(run)
    conversation.log, conversation.faults = log.read_text(), faults
    return conversation


@pytest.fixture(scope="module")
def http_client(sample_index: Path, real_embedder: SentenceTransformerEmbedder) -> FlaskClient:
    """The HTTP API on the same index: the reference for results and error messages."""
    return create_app(Settings(index_dir=sample_index), embedder=real_embedder).test_client()


def _http(client: FlaskClient, method: str, path: str, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = client.post(path, json=data) if method == "POST" else client.get(quote(path), query_string=data)
    return response.status_code, response.get_json()


def _text(result: types.CallToolResult) -> str:
    assert len(result.content) == 1 and isinstance(result.content[0], types.TextContent)
    return result.content[0].text


# -- stdio ---------------------------------------------------------------------------------------------------


def test_the_four_tools_are_listed_with_the_http_request_schemas(stdio: Conversation) -> None:
    tools = {tool.name: tool for tool in stdio.tools}
    assert set(tools) == set(TOOL_REQUESTS)
    for name, request in TOOL_REQUESTS.items():
        schema, http = tools[name].input_schema, SCHEMAS[request]
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        assert schema["required"] == http["required"] and schema["properties"].keys() == http["properties"].keys()
        # Self-contained: the filters' schema is inlined, not a reference into the OpenAPI spec.
        assert "$ref" not in json.dumps(schema)
        if "filters" in schema["properties"]:
            assert schema["properties"]["filters"]["properties"].keys() == SCHEMAS["Filters"]["properties"].keys()
        assert tools[name].output_schema is not None and tools[name].description
        assert tools[name].annotations is not None and tools[name].annotations.read_only_hint


def _approx(value: Any) -> Any:
    """``value`` without the timings, its scores compared to 1e-3 (they come from another process)."""
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items() if k != "took_ms"}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    return pytest.approx(value, rel=1e-3, abs=1e-5) if isinstance(value, float) else value


@pytest.mark.parametrize("label", list(CALLS))
def test_each_call_answers_what_the_http_api_answers(stdio: Conversation, http_client: FlaskClient, label: str) -> None:
    """Every argument is honoured as HTTP honours it."""
    _, _, method, path, data = CALLS[label]
    status, http = _http(http_client, method, path, data)
    result = stdio.results[label]
    assert status == 200 and not result.is_error, (http, result)
    assert {k: v for k, v in result.structured_content.items() if k != "took_ms"} == _approx(http)


def test_search_finds_the_answer_like_the_http_api(stdio: Conversation, http_client: FlaskClient) -> None:
    result = stdio.results["search"]
    assert not result.is_error
    hits = result.structured_content["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0]["article_id"] == ARTICLE and any(ANSWER in h["text"] for h in hits)
    status, http = _http(http_client, "POST", "/search", CALLS["search"][1])
    assert status == 200 and hits[0]["passage_id"] == http["hits"][0]["passage_id"]
    assert result.structured_content.keys() == http.keys()
    text = _text(result)
    assert text.startswith(f"1. {hits[0]['title']}") and f"[article_id: {ARTICLE}]" in text and ANSWER in text


def test_search_pages_like_the_http_api(stdio: Conversation, http_client: FlaskClient) -> None:
    first, second = stdio.results["search"].structured_content, stdio.results["search_page_2"].structured_content
    assert first["next_cursor"] and second["hits"]
    assert not {h["passage_id"] for h in first["hits"]} & {h["passage_id"] for h in second["hits"]}
    status, http = _http(http_client, "POST", "/search", {**SEARCH, "cursor": first["next_cursor"]})
    assert status == 200 and {k: v for k, v in second.items() if k != "took_ms"} == _approx(http)
    assert "cursor=" in _text(stdio.results["search"])


def test_the_parity_calls_use_every_request_field() -> None:
    """A field added to a request schema is offered by the MCP tool at once (the schemas are shared), so the tool
    must pass it on: extend these calls, and the tool if this suite then fails."""
    assert set(SEARCH_EVERY_FIELD) | {"cursor"} == SCHEMAS["SearchRequest"]["properties"].keys()
    assert set(CONTEXT_EVERY_FIELD) == SCHEMAS["ContextRequest"]["properties"].keys()
    assert set(CALLS["related_every_field"][1]) == SCHEMAS["RelatedRequest"]["properties"].keys()


def test_search_by_article_groups_passages(stdio: Conversation) -> None:
    result = stdio.results["search_articles"]
    articles = result.structured_content["articles"]
    assert not result.is_error and "hits" not in result.structured_content
    assert articles[0]["article_id"] == ARTICLE and 1 <= len(articles[0]["passages"]) <= 2
    assert len({a["article_id"] for a in articles}) == len(articles)
    assert _text(result).startswith(f"1. {articles[0]['title']}")


def test_get_article_returns_its_passages_as_http_does(stdio: Conversation, http_client: FlaskClient) -> None:
    result = stdio.results["article"]
    assert not result.is_error
    status, http = _http(http_client, "GET", f"/articles/{ARTICLE}", {})
    assert status == 200 and result.structured_content == http
    passages = result.structured_content["passages"]
    assert [p["ordinal"] for p in passages] == list(range(len(passages))) and len(passages) > 1
    text = _text(result)
    assert text.startswith(http["title"]) and all(p["text"] in text for p in passages)


def test_related_articles_are_other_articles(stdio: Conversation, http_client: FlaskClient) -> None:
    result = stdio.results["related"]
    assert not result.is_error
    articles = result.structured_content["articles"]
    ids = [a["article_id"] for a in articles]
    assert ids and ARTICLE not in ids and len(set(ids)) == len(ids)
    status, http = _http(http_client, "GET", f"/articles/{ARTICLE}/related", {"k": 5})
    assert status == 200 and ids == [a["article_id"] for a in http["articles"]]
    assert _text(result).startswith(f"1. {articles[0]['title']}")


def test_context_is_numbered_and_cited(stdio: Conversation) -> None:
    result = stdio.results["context"]
    assert not result.is_error
    ctx = result.structured_content
    assert ctx["text"].startswith("[1] ") and ANSWER in ctx["text"]
    assert [c["number"] for c in ctx["citations"]] == list(range(1, len(ctx["citations"]) + 1))
    assert all(f"[{c['number']}]" in ctx["text"] for c in ctx["citations"])
    assert ctx["citations"][0]["article_id"] == ARTICLE and 0 < ctx["token_count"] <= 200
    assert _text(result) == ctx["text"]


@pytest.mark.parametrize("label", list(INVALID))
def test_invalid_calls_fail_with_the_http_message(stdio: Conversation, http_client: FlaskClient, label: str) -> None:
    _, _, method, path, data = INVALID[label]
    status, http = _http(http_client, method, path, data)
    assert status in (400, 404), http
    result = stdio.results[label]
    assert result.is_error
    assert _text(result) == http["error"]["message"]
    assert result.structured_content == {"error": http["error"]}


def test_error_messages_say_what_is_wrong(stdio: Conversation) -> None:
    """The shared messages themselves, independently of both front ends."""
    assert _text(stdio.results["k_zero"]) == "k must be between 1 and 100"
    assert _text(stdio.results["related_k_zero"]) == "k must be between 1 and 100"
    assert _text(stdio.results["no_query"]) == "query is required"
    assert _text(stdio.results["unknown_field"]).startswith("unknown field(s): limit (allowed: ")
    assert stdio.results["article_missing"].structured_content["error"]["code"] == "not_found"
    assert stdio.results["related_missing"].structured_content["error"]["code"] == "not_found"


def test_stdio_carries_only_protocol_messages_and_logs_no_traceback(stdio: Conversation) -> None:
    assert not stdio.faults, stdio.faults
    assert "Traceback" not in stdio.log, stdio.log


# -- streamable HTTP -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def mcp_http_server(index_dir: Path, model_cache: Path, log: Path) -> Iterator[str]:
    """``semsearch mcp --http`` on a free loopback port; yields its endpoint URL once it accepts connections."""
    port = free_port()
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "semsearch.cli", "mcp", "--http", "--port", str(port), "--index-dir", str(index_dir)],
            stdout=log_file, stderr=subprocess.STDOUT, env=server_environ(model_cache),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, "the MCP server did not listen:\n" + log.read_text()
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stopping = time.monotonic()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0 and time.monotonic() - stopping < 15, log.read_text()


def test_streamable_http_lists_and_calls_tools(sample_index: Path, model_cache: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"

    async def run(url: str) -> Conversation:
        with anyio.fail_after(180):
            async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
                return await _converse(session, {"search": CALLS["search"], "k_zero": INVALID["k_zero"]})

    with mcp_http_server(sample_index, model_cache, log) as url:
        conversation = anyio.run(run, url)
    assert {tool.name for tool in conversation.tools} == set(TOOL_REQUESTS)
    hits = conversation.results["search"].structured_content["hits"]
    assert hits[0]["article_id"] == ARTICLE and any(ANSWER in h["text"] for h in hits)
    assert conversation.results["k_zero"].is_error
    assert _text(conversation.results["k_zero"]) == "k must be between 1 and 100"
    text = log.read_text()
    assert "Traceback" not in text and "/mcp" in text, text
