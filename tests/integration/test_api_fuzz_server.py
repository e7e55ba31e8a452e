"""The real server against its own spec, with schemathesis (every operation, every check, a bounded run), and the
security settings and clean shutdown on a real gunicorn server."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .servers import assert_clean_exit, running_server, start_server

KEY = "fuzz-api-key-0123456789"
ADMIN = "fuzz-admin-token-0123456789"
# Bounded: about a minute for both runs on 2 cores. A fixed seed makes a failure reproducible with the same command.
MAX_EXAMPLES = int(os.environ.get("SEMSEARCH_FUZZ_EXAMPLES", "30"))
SEED = "20261202"


def _schemathesis(base: str, token: str, *selection: str, report: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    assert exe, "schemathesis is a test dependency (pyproject.toml [test])"
    return subprocess.run(
        [exe, "run", f"{base}/openapi.json", "--checks", "all", "--max-examples", str(MAX_EXAMPLES),
         "--seed", SEED, "--generation-database", "none", "--header", f"Authorization: Bearer {token}",
         "--report", "junit", "--report-junit-path", str(report), *selection],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_schemathesis_finds_no_failure_on_the_served_spec(sample_index: Path, model_cache: Path,
                                                        tmp_path: Path) -> None:  # fmt: skip
    """Zero 5xx, zero responses that break the spec, zero requests the spec allows but the server refuses (and the
    reverse), with API keys and the admin route on: schemathesis also checks that a missing or wrong key is
    refused."""
    env = {"SEMSEARCH_API_KEYS": KEY, "SEMSEARCH_ADMIN_TOKEN": ADMIN}
    with running_server(sample_index, tmp_path / "srv", model_cache, env) as server:
        api = _schemathesis(server.base, KEY, "--exclude-operation-id", "adminReload", report=tmp_path / "api.xml")
        admin = _schemathesis(server.base, ADMIN, "--include-operation-id", "adminReload",
                              report=tmp_path / "admin.xml")  # fmt: skip
    for run in (api, admin):
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert "No issues found" in run.stdout, run.stdout[-3000:]
    assert "Tested: 10" in api.stdout and "Tested: 1" in admin.stdout  # every operation but the admin one
    log = server.log.read_text()
    assert KEY not in log and ADMIN not in log


def test_the_rate_limit_holds_across_workers(sample_index: Path, model_cache: Path, tmp_path: Path) -> None:
    """A client's requests spread over both workers (a new connection each) and still get ``burst`` answers, then
    429s with Retry-After."""
    env = {"SEMSEARCH_RATE_LIMIT": "0.2", "SEMSEARCH_RATE_BURST": "6"}
    with running_server(sample_index, tmp_path / "srv", model_cache, env) as server:
        statuses = []
        for _ in range(16):
            with requests.Session() as session:  # one connection per request: gunicorn spreads them
                response = session.get(f"{server.base}/search", params={"q": "rate cut"}, timeout=30)
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["Retry-After"]) >= 1
                assert response.json()["error"]["code"] == "too_many_requests"
        assert requests.get(f"{server.base}/healthz", timeout=10).status_code == 200
    # At 0.2 requests/s, at most one token comes back while the 16 requests run.
    assert statuses[:6] == [200] * 6
    assert statuses.count(200) <= 7 and statuses[-1] == 429, statuses


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_sigterm_finishes_requests_in_flight_and_exits_0(sample_index: Path, model_cache: Path, tmp_path: Path,
                                                        backend: str) -> None:  # fmt: skip
    """Each query path (ONNX Runtime on the request thread; PyTorch on the model thread) stops cleanly: the
    requests being served when SIGTERM arrives are answered, the master exits 0, no worker aborts."""
    env = {"SEMSEARCH_QUERY_BACKEND": backend}
    server = start_server(sample_index, tmp_path / "srv", model_cache, env)
    try:
        deadline = time.monotonic() + 90
        while len(server.workers()) < 2 or not _ready(server.base):
            assert time.monotonic() < deadline and server.proc.poll() is None, server.log.read_text()
            time.sleep(0.25)
        batch = {"queries": [f"interest rates and inflation {i}" for i in range(64)], "k": 100}
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(requests.post, f"{server.base}/search/batch", json=batch, timeout=60)
                       for _ in range(8)]  # fmt: skip
            time.sleep(0.3)  # the batches are being served (each takes well over a second on 2 cores)
            assert not all(f.done() for f in futures)
            server.proc.send_signal(signal.SIGTERM)
            statuses = [f.result().status_code for f in futures]
        status = server.proc.wait(timeout=40)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    log = server.log.read_text()
    assert statuses == [200] * 8, log
    assert status == 0, log
    assert "Handling signal: term" in log and "Shutting down: Master" in log
    assert "Traceback" not in log and "was sent SIGKILL" not in log and "core dumped" not in log
    assert_clean_exit(log)


def _ready(base: str) -> bool:
    try:
        return requests.get(f"{base}/readyz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False
