"""The HTTP client's retries against a real HTTP server that answers each request as a script says: which
failures are retried (502, 503, 504, timeouts, dropped connections), how often, and that others are not."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from semsearch.client import SearchClient, SearchHTTPError, SearchTimeout, SearchUnavailable

OK = {"query": "q", "k": 10, "mode": "hybrid", "group_by": "passage", "hits": [], "took_ms": 0.1, "version": "v"}


class ScriptedServer(ThreadingHTTPServer):
    """Answers the n-th request with ``script[n]`` (the last entry repeats): an HTTP status, ``"drop"`` (close the
    connection without an answer), or ``("slow", seconds)`` (answer 200 that late)."""

    daemon_threads = True

    def __init__(self, script: list[int | str | tuple[str, float]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.requests: list[float] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_action(self) -> int | str | tuple[str, float]:
        with self.lock:
            self.requests.append(time.monotonic())
            return self.script[min(len(self.requests), len(self.script)) - 1]


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        action = self.server.next_action()
        if action == "drop":
            # RST instead of an answer: the client sees a reset or a remote disconnect.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        status = 200
        if isinstance(action, tuple):
            time.sleep(action[1])
        elif isinstance(action, int):
            status = action
        body = OK if status == 200 else {"error": {"code": f"status_{status}", "message": f"scripted {status}"}}
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up on a slow answer
            pass


@pytest.fixture
def scripted() -> Iterator[type[ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: list[int | str | tuple[str, float]]) -> ScriptedServer:
        server = ScriptedServer(script)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "script",
    [[502, 200], [504, 200], [503, 503, 200], [502, 504, 200], ["drop", 200], ["drop", 502, 200]],
)
def test_retryable_failures_are_retried_until_an_answer(scripted, script) -> None:
    server = scripted(script)
    client = SearchClient(server.url, timeout=5, retries=3, backoff=0.01)
    assert client.search("q") == []
    assert len(server.requests) == len(script)


def test_backoff_doubles_between_retries(scripted) -> None:
    server = scripted([502, 502, 502, 200])
    SearchClient(server.url, timeout=5, retries=3, backoff=0.1).search("q")
    gaps = [b - a for a, b in zip(server.requests, server.requests[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4


@pytest.mark.parametrize(("status", "retries"), [(502, 2), (504, 1), (503, 0)])
def test_retries_are_bounded_then_the_error_is_raised(scripted, status: int, retries: int) -> None:
    server = scripted([status])
    client = SearchClient(server.url, timeout=5, retries=retries, backoff=0.01)
    with pytest.raises(SearchHTTPError) as info:
        client.search("q")
    assert info.value.status == status and info.value.code == f"status_{status}"
    assert len(server.requests) == retries + 1


@pytest.mark.parametrize("status", [400, 404, 413, 500])
def test_other_errors_are_never_retried(scripted, status: int) -> None:
    server = scripted([status, 200])
    with pytest.raises(SearchHTTPError) as info:
        SearchClient(server.url, timeout=5, retries=3, backoff=0.01).search("q")
    assert info.value.status == status and info.value.server_message == f"scripted {status}"
    assert len(server.requests) == 1


def test_a_timeout_is_retried_and_a_late_server_answers_the_retry(scripted) -> None:
    server = scripted([("slow", 2.0), 200])
    client = SearchClient(server.url, timeout=0.5, retries=1, backoff=0.01)
    started = time.monotonic()
    assert client.search("q") == []
    assert len(server.requests) == 2 and time.monotonic() - started < 1.9  # did not wait for the slow answer


def test_timeouts_past_the_retries_raise_search_timeout(scripted) -> None:
    server = scripted([("slow", 2.0)])
    with pytest.raises(SearchTimeout, match=r"within 0\.3 s"):
        SearchClient(server.url, timeout=0.3, retries=2, backoff=0.01).search("q")
    assert len(server.requests) == 3


def test_dropped_connections_past_the_retries_raise_search_unavailable(scripted) -> None:
    server = scripted(["drop"])
    with pytest.raises(SearchUnavailable, match="cannot reach"):
        SearchClient(server.url, timeout=5, retries=2, backoff=0.01).search("q")
    assert len(server.requests) == 3
