"""The MCP server (``semsearch mcp``): the search API as tools for MCP clients such as chat assistants, over stdio
or streamable HTTP, on the official ``mcp`` SDK.

It uses the SDK's low-level server, which publishes each tool's JSON Schema as given: the input schemas are the
HTTP API's request schemas (:mod:`.schemas`) and arguments are checked by the HTTP API's own validation
(:func:`.requests.validate`), so a call the HTTP API rejects is rejected here with the same message. A result
carries the HTTP response body as structured content and a short text rendering for the model to read. Like the
HTTP service, the server opens the index once (or as soon as one is published) and follows new versions.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import anyio
from mcp import types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from .. import __version__
from ..config import Settings
from ..errors import SemsearchError
from ..retrieve.searcher import Searcher
from . import responses
from .app import SearchService
from .requests import validate
from .schemas import SCHEMAS

log = logging.getLogger("semsearch.mcp")

INSTRUCTIONS = (
    "Search an index of news articles. To answer a question from the articles, call `context` and cite its [n] "
    "markers; `search` lists matching passages (or articles with group_by=article); `get_article` reads a whole "
    "article by the article_id a result names; `related_articles` finds other articles on the same story."
)


@dataclass(frozen=True)
class Tool:
    """One tool: its request and response schemas (names in :data:`.schemas.SCHEMAS`), what it does with validated
    arguments, and how its result reads as text."""

    name: str
    description: str
    request: str
    response: str
    run: Callable[[Searcher, dict[str, Any]], dict[str, Any]]
    render: Callable[[dict[str, Any]], str]

    def describe(self) -> types.Tool:
        return types.Tool(
            name=self.name,
            description=self.description,
            input_schema=_inline(SCHEMAS[self.request]),
            output_schema=_inline(SCHEMAS[self.response]),
            annotations=types.ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
        )

    def call(self, service: SearchService, arguments: dict[str, Any]) -> dict[str, Any]:
        # Validated before the index is touched, as the HTTP API does: a bad call fails the same way with or
        # without an index.
        body = validate(arguments, self.request)
        return self.run(service.searcher(), body)


def _inline(schema: Any) -> Any:
    """``schema`` with its ``$ref``s to other component schemas replaced by those schemas: a tool's schema must
    stand alone (clients resolve no references outside it, and some resolve none)."""
    if isinstance(schema, dict):
        target = schema.get("$ref")
        if isinstance(target, str) and target.startswith("#/components/schemas/"):
            return _inline(SCHEMAS[target.rpartition("/")[2]])
        return {key: _inline(value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inline(value) for value in schema]
    return schema


# -- tools: the same bodies as the HTTP routes --------------------------------------------------------------


def _search(searcher: Searcher, body: dict[str, Any]) -> dict[str, Any]:
    return responses.search(searcher, body, time.perf_counter())


def _context(searcher: Searcher, body: dict[str, Any]) -> dict[str, Any]:
    return responses.context(searcher, body, time.perf_counter())


def _article(searcher: Searcher, body: dict[str, Any]) -> dict[str, Any]:
    return responses.article(searcher, body["article_id"])


def _related(searcher: Searcher, body: dict[str, Any]) -> dict[str, Any]:
    return responses.related(searcher, body)


# -- text renderings: what a model reads ---------------------------------------------------------------------


def _flat(text: str, limit: int | None = None) -> str:
    text = " ".join(text.split())
    return text if limit is None or len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _heading(rank: int, item: dict[str, Any]) -> str:
    about = ", ".join(x for x in ((item.get("published") or "")[:10], item.get("source")) if x)
    lines = [f"{rank}. {item['title']}" + (f" ({about})" if about else "") + f" [article_id: {item['article_id']}]"]
    if item.get("url"):
        lines.append(f"   {item['url']}")
    return "\n".join(lines)


def _paragraphs(passage: dict[str, Any]) -> str:
    first, last = passage["paragraph"], passage["last_paragraph"]
    return f"¶{first}" if first == last else f"¶{first}-{last}"


def _render_search(result: dict[str, Any]) -> str:
    if "articles" in result:
        blocks = [
            "\n".join([_heading(a["rank"], a), *(f"   {_paragraphs(p)}: {_flat(p['text'])}" for p in a["passages"])])
            for a in result["articles"]
        ]
    else:
        blocks = [f"{_heading(h['rank'], h)}\n   {_paragraphs(h)}: {_flat(h['text'])}" for h in result["hits"]]
    if result.get("next_cursor"):
        blocks.append(f"More results: call search again with the same arguments and cursor={result['next_cursor']!r}.")
    return "\n\n".join(blocks) or "No passages matched."


def _render_context(result: dict[str, Any]) -> str:
    return result["text"] or "No passages matched."


def _render_article(result: dict[str, Any]) -> str:
    about = ", ".join(x for x in ((result.get("published") or "")[:10], result.get("source"), result.get("url")) if x)
    head = [result["title"], *([about] if about else []), f"article_id: {result['id']}"]
    return "\n".join(head) + "\n\n" + "\n\n".join(f"{_paragraphs(p)}: {p['text']}" for p in result["passages"])


def _render_related(result: dict[str, Any]) -> str:
    blocks = [
        "\n".join([_heading(a["rank"], a), *(f"   {_flat(p['text'], 300)}" for p in a["passages"][:1])])
        for a in result["articles"]
    ]
    return "\n\n".join(blocks) or "No related articles."


TOOLS: tuple[Tool, ...] = (
    Tool("search", "Search the news articles for passages matching a query (hybrid semantic and keyword search by "
         "default). Returns ranked passages with their article's title, date, source, url and article_id; "
         "group_by=article returns each article once with its best passages.",
         "SearchRequest", "SearchResponse", _search, _render_search),
    Tool("get_article", "One article by its article_id (as a search result names it): title, date, source, url "
         "and its full text as numbered passages.", "ArticleRequest", "Article", _article, _render_article),
    Tool("related_articles", "The articles most similar to the given article (other reports of the same story or "
         "subject), closest first; the article itself and duplicate copies are left out.",
         "RelatedRequest", "RelatedResponse", _related, _render_related),
    Tool("context", "Retrieval for answering a question: the best passages for the query as one numbered block "
         "('[n] Title (url): text') within max_tokens, with citations resolving each [n] to its article.",
         "ContextRequest", "Context", _context, _render_context),
)  # fmt: skip


# -- the server ----------------------------------------------------------------------------------------------


def _error_result(code: str, message: str) -> types.CallToolResult:
    """A tool error the model can read: the HTTP API's message, and its error body as structured content."""
    return types.CallToolResult(
        content=[types.TextContent(text=message)],
        structured_content={"error": {"code": code, "message": message}},
        is_error=True,
    )


def build_server(service: SearchService, tools: tuple[Tool, ...] = TOOLS) -> Server[Any]:
    """The MCP server of ``service``'s index: ``tools`` listed with their schemas and called on its searcher."""
    by_name = {tool.name: tool for tool in tools}
    listing = types.ListToolsResult(tools=[tool.describe() for tool in tools])

    async def list_tools(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        return listing

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> Any:
        tool = by_name.get(params.name)
        if tool is None:  # a protocol error, not a tool error (the MCP spec's choice)
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {params.name!r} (tools: {', '.join(by_name)})")
        try:
            # Searching embeds the query on the CPU: off the event loop, which keeps serving other requests.
            result = await anyio.to_thread.run_sync(tool.call, service, params.arguments or {})
        except SemsearchError as exc:
            return _error_result(exc.code, exc.message)
        except Exception:
            log.exception("unhandled error in tool %s", tool.name)
            return _error_result("internal_error", "internal server error")
        return types.CallToolResult(content=[types.TextContent(text=tool.render(result))], structured_content=result)

    return Server(
        "semsearch", version=__version__, instructions=INSTRUCTIONS, on_list_tools=list_tools, on_call_tool=call_tool
    )


def _service(settings: Settings) -> SearchService:
    # API keys and the rate limit guard the HTTP API only: an MCP server answers its one client (stdio) or its
    # loopback callers (HTTP).
    return SearchService(replace(settings, rate_limit=None))


def _open_in_background(service: SearchService) -> None:
    """Load the model and the index while the client connects, so the first call does not wait for all of it.
    Without an index, the server starts anyway and each call says so until one is published."""

    def open_index() -> None:
        try:
            service.searcher().warm()
        except SemsearchError as exc:
            log.warning("no index to serve yet: %s", exc.message)

    threading.Thread(target=open_index, name="semsearch-open", daemon=True).start()


def serve_stdio(settings: Settings) -> None:
    """Serve over stdin/stdout until the client closes stdin. Stdout carries the protocol: log to stderr only."""

    async def run() -> None:
        server = build_server(service)
        # The SDK points file descriptor 1 at stderr while it serves, so the model loading started here cannot
        # write stray output into the protocol stream.
        async with stdio_server() as (read_stream, write_stream):
            _open_in_background(service)
            await server.run(read_stream, write_stream, server.create_initialization_options())

    service = _service(settings)
    try:
        anyio.run(run)
    finally:
        service.close()


def _exit_normally(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def serve_http(settings: Settings, *, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve streamable HTTP at ``http://host:port/mcp`` until interrupted. On a loopback host the SDK refuses
    requests whose Host or Origin header is not loopback (DNS rebinding)."""
    import uvicorn

    service = _service(settings)
    app = build_server(service).streamable_http_app(host=host)
    _open_in_background(service)
    # uvicorn stops gracefully on SIGTERM, then raises it again for the handler it found: make that a normal exit
    # (status 0, the index closed), not death by the signal.
    signal.signal(signal.SIGTERM, _exit_normally)
    try:
        # log_config=None: uvicorn logs through the CLI's logging setup (stderr), not its own.
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)).run()
    finally:
        service.close()
