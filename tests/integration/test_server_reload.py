"""Hot reload in the production setup: a real ``semsearch serve`` (gunicorn master, two forked ``gthread``
workers) follows a version published by ``reindex`` while clients keep it busy.

Which worker answered a request is found from the kernel, not from the app (no response names a pid): the
server's end of a keep-alive TCP connection is an fd of exactly one process, the worker that accepted it. The
workers are the children of the server process (the gunicorn master). ``_owner`` maps a client connection's
local port to that worker through ``/proc/net/tcp`` (socket inode) and ``/proc/<pid>/fd``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from semsearch import Settings, build_index
from semsearch.index.build import reindex
from semsearch.models.embedding import SentenceTransformerEmbedder

from ..conftest import SAMPLE_CORPUS
from .servers import Server, running_server

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc to identify workers")

NEW_ARTICLE_ID = "local/quillmere-otter-census.txt"
NEW_ARTICLE = (
    "Quillmere lighthouse keeper Ottoline Varga-Pemberton counts 311 river otters\n\n"
    "Ottoline Varga-Pemberton, the keeper of the Quillmere lighthouse, counted 311 river otters on the "
    "Quillmere estuary during her annual dawn census, the highest number since records began in 1958.\n\n"
    "Varga-Pemberton said the otters had returned after the estuary's eelgrass meadows were replanted."
)
FACT_QUERY = "How many otters did Ottoline Varga-Pemberton count at the Quillmere lighthouse?"
OTHER_QUERIES = (
    "Which architect was behind the new river bridge in Aldermouth?",
    "How much is the cereal maker offering per share for the yogurt company?",
    "How much stone was dumped on the seabed to stop the reef from shifting?",
)
ADMIN_TOKEN = "reload-test-token"
WORKERS = 2


@contextlib.contextmanager
def _serve(index_dir: Path, work: Path, model_cache: Path, env: dict[str, str]) -> Iterator[Server]:
    """``semsearch serve`` with 2 workers, ready and with both workers forked; on exit, no version failed to
    load."""
    with running_server(index_dir, work, model_cache, env, workers=WORKERS) as server:
        yield server
    assert "not switching to index version" not in server.log.read_text()


def _owner(server: Server, conn: http.client.HTTPConnection, workers: set[int]) -> int:
    """The worker process holding the server end of ``conn`` (an open keep-alive connection)."""
    assert conn.sock is not None
    client_port = conn.sock.getsockname()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        remote_port = int(fields[2].rsplit(":", 1)[1], 16)
        if local_port == server.port and remote_port == client_port and fields[3] == "01":  # ESTABLISHED
            inode = fields[9]
    assert inode is not None and inode != "0", f"no server socket for client port {client_port}"
    target = f"socket:[{inode}]"
    owners = set()
    for pid in workers:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        owners.add(pid)
    assert len(owners) == 1, f"connection from port {client_port} held by {owners}, workers {workers}"
    return owners.pop()


def _call(conn: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, (response.status, body[:500])
    assert response.getheader("Connection", "").lower() != "close"  # the worker keeps the connection: _owner works
    return json.loads(body)


def _search_path(query: str) -> str:
    return "/search?" + urlencode({"q": query, "k": 5})


def _probe(server: Server, workers: set[int]) -> tuple[int, dict[str, Any]]:
    """The fact query on a new connection: (the worker that answered, the response)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        data = _call(conn, "GET", _search_path(FACT_QUERY))
        return _owner(server, conn, workers), data
    finally:
        conn.close()


def _connection_to(server: Server, worker: int, workers: set[int], deadline: float) -> http.client.HTTPConnection:
    """An open keep-alive connection served by ``worker`` (new connections go to whichever worker accepts)."""
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        _call(conn, "GET", "/healthz")
        if _owner(server, conn, workers) == worker:
            return conn
        conn.close()
    pytest.fail(f"no connection reached worker {worker}")


def _check_fact(data: dict[str, Any], old: str, new: str) -> None:
    """A fact-query response is consistent with the version it names."""
    ids = [h["article_id"] for h in data["hits"]]
    assert data["version"] in (old, new), data["version"]
    if data["version"] == new:
        assert ids[0] == NEW_ARTICLE_ID, ids
    else:
        assert NEW_ARTICLE_ID not in ids, ids


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "articles"
    shutil.copytree(SAMPLE_CORPUS, corpus)
    return corpus


def _publish_new_article(corpus: Path, index_dir: Path, embedder: SentenceTransformerEmbedder) -> str:
    (corpus / NEW_ARTICLE_ID).write_text(NEW_ARTICLE, encoding="utf-8")
    report = reindex([corpus], index_dir, Settings(), embedder=embedder)
    assert report.version_id is not None
    return report.version_id


def test_both_workers_follow_a_reindex_under_load(
    corpus: Path, tmp_path: Path, real_embedder: SentenceTransformerEmbedder, model_cache: Path
) -> None:
    """With the default reload interval (1 s), a version published while 8 clients query the server is served by
    both workers within a bounded time, and no request fails or mixes versions."""
    index_dir = tmp_path / "index"
    old = build_index([corpus], index_dir, Settings(), embedder=real_embedder).version_id
    assert old is not None
    with _serve(index_dir, tmp_path, model_cache, {}) as server:
        workers = server.workers()
        assert len(workers) == WORKERS
        # Before publishing: both workers are reachable and identified, and answer from the old version.
        seen_before: set[int] = set()
        deadline = time.monotonic() + 20
        while seen_before != workers and time.monotonic() < deadline:
            pid, data = _probe(server, workers)
            assert data["version"] == old
            assert NEW_ARTICLE_ID not in [h["article_id"] for h in data["hits"]]
            seen_before.add(pid)
        assert seen_before == workers

        stop = threading.Event()
        lock = threading.Lock()
        failures: list[str] = []
        # (client, started at, version, query, article ids)
        responses: list[tuple[int, float, str, str, list[str]]] = []
        switched_at: list[float] = []  # when both workers were seen answering from the new version

        def client(i: int) -> None:
            after_switch = 0
            with requests.Session() as session:
                for n in range(3000):
                    if stop.is_set():
                        return
                    query = FACT_QUERY if n % 2 else OTHER_QUERIES[(i + n) % len(OTHER_QUERIES)]
                    started = time.monotonic()
                    try:
                        response = session.get(f"{server.base}/search", params={"q": query, "k": 5}, timeout=30)
                    except requests.RequestException as exc:
                        with lock:
                            failures.append(f"client {i}: {exc!r}")
                        continue
                    if response.status_code != 200:
                        with lock:
                            failures.append(f"client {i}: {response.status_code} {response.text[:200]}")
                        continue
                    data = response.json()
                    with lock:
                        responses.append((i, started, data["version"], query, [h["article_id"] for h in data["hits"]]))
                        after_switch += bool(switched_at) and started > switched_at[0]
                    if after_switch >= 4:  # this connection has answered from the new version (asserted below)
                        return

        clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
        for t in clients:
            t.start()
        probes: list[tuple[int, dict[str, Any]]] = []
        try:
            time.sleep(1.0)  # under load before publishing
            new = _publish_new_article(corpus, index_dir, real_embedder)
            published = time.monotonic()
            assert new != old
            switched: set[int] = set()
            deadline = published + 30
            while switched != workers and time.monotonic() < deadline:
                pid, data = _probe(server, workers)
                probes.append((pid, data))
                if data["version"] == new:
                    switched.add(pid)
                else:
                    time.sleep(0.1)
            took = time.monotonic() - published
            with lock:
                switched_at.append(time.monotonic())
            assert switched == workers, f"after {took:.1f}s only workers {switched} of {workers} serve {new}"
            join_deadline = time.monotonic() + 30
            for t in clients:
                t.join(timeout=max(0.0, join_deadline - time.monotonic()))
            assert not any(t.is_alive() for t in clients), "clients did not finish"
        finally:
            stop.set()
            join_deadline = time.monotonic() + 30
            for t in clients:
                t.join(timeout=max(0.0, join_deadline - time.monotonic()))

        assert server.workers() == workers  # the same two processes throughout: none was restarted
        assert failures == []
        assert {v for _, _, v, _, _ in responses} == {old, new}  # clients saw both versions: the switch was live
        for _i, _started, version, query, ids in responses:
            if query == FACT_QUERY:
                _check_fact({"version": version, "hits": [{"article_id": a} for a in ids]}, old, new)
            else:
                assert version in (old, new) and ids
        for _pid, data in probes:
            _check_fact(data, old, new)
        # Once both workers were seen on the new version, every request, on every client connection, answers
        # from it (each client went on for 4 requests after that).
        after = [r for r in responses if r[1] > switched_at[0]]
        assert {r[0] for r in after} == set(range(8))
        assert {r[2] for r in after} == {new}
        assert all(ids[0] == NEW_ARTICLE_ID for _, _, _, query, ids in after if query == FACT_QUERY)
        # Both workers also report the new version in /stats, with no reload error.
        for worker in workers:
            conn = _connection_to(server, worker, workers, time.monotonic() + 20)
            try:
                stats = _call(conn, "GET", "/stats")
            finally:
                conn.close()
            assert stats["index_version"] == new and stats["reload_error"] is None


def test_admin_reload_switches_the_worker_that_served_it(
    corpus: Path, tmp_path: Path, real_embedder: SentenceTransformerEmbedder, model_cache: Path
) -> None:
    """``POST /admin/reload`` with a reload interval of an hour, so no background check can switch a worker.

    What the code guarantees (``admin_reload`` in api.py calls ``reload()`` on the searcher of the process that
    serves the request): the admin reload switches exactly the worker that served it, at once, and that worker's
    next request answers from the new version. It does NOT reach the other gunicorn workers: they keep serving
    the old version until their own interval check (here: an hour) or an admin reload that they serve. So with
    several workers an operator must either rely on the interval or reload every worker.
    """
    index_dir = tmp_path / "index"
    old = build_index([corpus], index_dir, Settings(), embedder=real_embedder).version_id
    env = {"SEMSEARCH_ADMIN_TOKEN": ADMIN_TOKEN, "SEMSEARCH_RELOAD_CHECK_SECONDS": "3600"}
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with _serve(index_dir, tmp_path, model_cache, env) as server:
        workers = server.workers()
        assert len(workers) == WORKERS
        new = _publish_new_article(corpus, index_dir, real_embedder)
        assert new != old
        published = time.monotonic()
        # Both workers still answer from the old version well past the default 1 s interval.
        seen: set[int] = set()
        deadline = time.monotonic() + 20
        while (seen != workers or time.monotonic() < published + 2.5) and time.monotonic() < deadline:
            pid, data = _probe(server, workers)
            assert data["version"] == old, "a worker switched without an admin reload"
            seen.add(pid)
            time.sleep(0.1)
        assert seen == workers

        first, second = sorted(workers)
        conn = _connection_to(server, first, workers, time.monotonic() + 20)
        try:
            assert _call(conn, "POST", "/admin/reload", auth) == {"reloaded": True, "version": new}
            data = _call(conn, "GET", _search_path(FACT_QUERY))
            assert _owner(server, conn, workers) == first  # the same worker answered
            assert data["version"] == new and data["hits"][0]["article_id"] == NEW_ARTICLE_ID
            assert _call(conn, "GET", "/stats")["index_version"] == new
            # Reloading again is a no-op.
            assert _call(conn, "POST", "/admin/reload", auth) == {"reloaded": False, "version": new}
        finally:
            conn.close()

        # The other worker was not switched by it ...
        other = _connection_to(server, second, workers, time.monotonic() + 20)
        try:
            data = _call(other, "GET", _search_path(FACT_QUERY))
            assert data["version"] == old and NEW_ARTICLE_ID not in [h["article_id"] for h in data["hits"]]
            # ... until it serves an admin reload itself.
            assert _call(other, "POST", "/admin/reload", auth) == {"reloaded": True, "version": new}
            data = _call(other, "GET", _search_path(FACT_QUERY))
            assert _owner(server, other, workers) == second
            assert data["version"] == new and data["hits"][0]["article_id"] == NEW_ARTICLE_ID
        finally:
            other.close()
        # Now every connection, whichever worker takes it, answers from the new version.
        for _ in range(6):
            _pid, data = _probe(server, workers)
            assert data["version"] == new and data["hits"][0]["article_id"] == NEW_ARTICLE_ID


def _index_mappings(pid: int, index_dir: Path) -> tuple[set[str], set[str]]:
    """(files under ``index_dir`` that ``pid`` maps or holds open, those of them already deleted)."""
    root = str(index_dir.resolve())
    files: set[str] = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith(root):
            files.add(parts[5])
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith(root):
                files.add(target)
    return files, {f for f in files if f.endswith(" (deleted)")}


def test_no_server_process_keeps_the_files_of_replaced_segments(
    corpus: Path, tmp_path: Path, real_embedder: SentenceTransformerEmbedder, model_cache: Path
) -> None:
    """After ``optimize`` replaces every segment and pruning deletes the old ones, no server process (master or
    worker) still maps or holds them: their disk space and page-cache pages are given back while serving goes
    on."""
    from semsearch.index.merge import optimize

    index_dir = tmp_path / "index"
    settings = Settings(keep_versions=1)
    build_index([corpus], index_dir, settings, embedder=real_embedder)
    _publish_new_article(corpus, index_dir, real_embedder)  # a second segment
    with _serve(index_dir, tmp_path, model_cache, {}) as server:
        workers = server.workers()
        for worker in workers:  # each worker has opened the index; the master keeps none of it
            conn = _connection_to(server, worker, workers, time.monotonic() + 20)
            try:
                _call(conn, "GET", _search_path(FACT_QUERY))
            finally:
                conn.close()
            assert any(f.endswith("vectors.npy") for f in _index_mappings(worker, index_dir)[0])
        assert _index_mappings(server.proc.pid, index_dir)[0] == set()
        report = optimize(index_dir, settings)
        assert report is not None and report.version_id is not None
        old_segments = set(report.merged)
        assert not any((index_dir / "segments" / s).exists() for s in old_segments)  # pruned
        deadline = time.monotonic() + 30
        for worker in workers:
            while True:
                conn = _connection_to(server, worker, workers, deadline)
                try:
                    stats = _call(conn, "GET", "/stats")
                    if stats["index_version"] == report.version_id:
                        _call(conn, "GET", _search_path(FACT_QUERY))  # and it answers from the merged segment
                        break
                finally:
                    conn.close()
                assert time.monotonic() < deadline, f"worker {worker} still serves {stats['index_version']}"
                time.sleep(0.2)
        for pid in [server.proc.pid, *workers]:
            files, deleted = _index_mappings(pid, index_dir)
            assert deleted == set(), (pid, sorted(deleted)[:5])
            assert not any(s in f for f in files for s in old_segments), pid
