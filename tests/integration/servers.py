"""A real ``semsearch serve`` for integration tests: started on a free loopback port, waited for until ready with
all its workers forked, and stopped with the checks every test wants (a prompt shutdown, no traceback, no
worker dying of an abort on its way out)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    base: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def workers(self) -> set[int]:
        """The pids of the server process's children: gunicorn's workers."""
        children = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # exited meanwhile
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])  # the name in (...) may contain spaces
            if ppid == self.proc.pid:
                children.add(int(entry.name))
        return children


def start_server(index_dir: Path, work: Path, model_cache: Path, env: Mapping[str, str] = {},
                 workers: int = 2) -> Server:  # fmt: skip
    """Start ``semsearch serve`` (not waiting for it). Inherited SEMSEARCH_* variables are dropped, so only
    ``env`` configures it; the model cache is the test session's."""
    work.mkdir(parents=True, exist_ok=True)
    metrics = work / "metrics"
    metrics.mkdir(exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SEMSEARCH_")}
    environ.update(SEMSEARCH_CACHE_DIR=str(model_cache), PROMETHEUS_MULTIPROC_DIR=str(metrics), **env)
    port = free_port()
    log = work / "server.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "semsearch.cli", "serve", "--index-dir", str(index_dir), "--port", str(port),
             "--workers", str(workers), "--threads", "4"],
            stdout=log_file, stderr=subprocess.STDOUT, env=environ,
        )  # fmt: skip
    return Server(f"http://127.0.0.1:{port}", port, proc, log)


def assert_clean_exit(log: str) -> None:
    """No worker died of an abort on its way out (C++ destructors joining threads that only the master had)."""
    assert "SIGABRT" not in log and "terminate called" not in log, log


@contextlib.contextmanager
def running_server(index_dir: Path, work: Path, model_cache: Path, env: Mapping[str, str] = {},
                   workers: int = 2) -> Iterator[Server]:  # fmt: skip
    server = start_server(index_dir, work, model_cache, env, workers)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert server.proc.poll() is None, server.log.read_text()
            with contextlib.suppress(requests.ConnectionError):
                ready = requests.get(f"{server.base}/readyz", timeout=2).status_code == 200
                if ready and len(server.workers()) == workers:
                    break
            time.sleep(0.25)
        else:
            pytest.fail("server did not become ready:\n" + server.log.read_text())
        yield server
    finally:
        stopping = time.monotonic()
        server.proc.terminate()
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)
    assert time.monotonic() - stopping < 15, "shutdown waited for the graceful timeout"
    text = server.log.read_text()
    assert "Traceback" not in text, text
    assert_clean_exit(text)
