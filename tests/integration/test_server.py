"""A real ``semsearch serve`` (gunicorn, preloaded, forked worker) on a free loopback port, queried over HTTP.
The search page in a real browser: ``test_search_page.py``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .servers import assert_clean_exit, running_server, start_server


@pytest.fixture(scope="module")
def server(sample_index: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"SEMSEARCH_ADMIN_TOKEN": "integration-token"}
    with running_server(sample_index, tmp_path_factory.mktemp("server"), model_cache, env) as running:
        yield running.base
    assert "my secret question" not in running.log.read_text()  # queries are never logged


def test_sigterm_while_workers_warm_up_stops_the_server_at_once(sample_index: Path, model_cache: Path,
                                                                tmp_path: Path) -> None:  # fmt: skip
    server = start_server(sample_index, tmp_path, model_cache)
    try:
        deadline = time.monotonic() + 90
        while "Booting worker" not in server.log.read_text():  # a worker was forked and is warming up
            assert server.proc.poll() is None and time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.01)
        stopping = time.monotonic()
        server.proc.terminate()
        server.proc.wait(timeout=30)
        assert time.monotonic() - stopping < 10, server.log.read_text()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
    assert "Traceback" not in server.log.read_text()
    assert_clean_exit(server.log.read_text())


def test_search_over_real_http(server: str) -> None:
    response = requests.get(f"{server}/search", params={"q": "Who declined to engage with US defense officials?"})
    assert response.status_code == 200
    top = response.json()["hits"][0]
    assert top["article_id"] == "world/russia-military-outreach.txt" and "declined to engage" in top["text"]
    post = requests.post(f"{server}/search", json={"query": "my secret question about reef boulders", "k": 3})
    assert post.status_code == 200 and len(post.json()["hits"]) == 3


def test_stats_names_the_query_backend_measured_at_load(server: str, real_embedder) -> None:
    stats = requests.get(f"{server}/stats").json()
    assert stats["query_backend"] in ("onnx-int8", "onnx-fp32")  # onnxruntime is a dependency
    assert stats["query_backend"] == real_embedder.info.query_backend  # the same measurement, in this process
    assert stats["precision"] == real_embedder.info.precision


def test_concurrent_requests_across_workers(server: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    expected = {
        "Which architect was behind the new river bridge in Aldermouth?": "local/aldermouth-tessel-crossing-opens.txt",
        "How much is the cereal maker offering per share for the yogurt company?":
            "business/calder-finch-buys-brightmeadow.txt",
    }  # fmt: skip
    questions = list(expected) * 20
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda q: requests.get(f"{server}/search", params={"q": q, "k": 5}), questions))
    assert all(r.status_code == 200 for r in responses)
    for question, response in zip(questions, responses, strict=True):
        assert response.json()["hits"][0]["article_id"] == expected[question]


def test_errors_over_real_http(server: str) -> None:
    assert requests.get(f"{server}/search", params={"q": ""}).status_code == 400
    assert (
        requests.post(f"{server}/search", data="{oops", headers={"Content-Type": "application/json"}).json()["error"][
            "code"
        ]
        == "invalid_request"
    )
    assert requests.get(f"{server}/nowhere").status_code == 404
    big = requests.post(f"{server}/search", data=b"x" * 3_000_000, headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_entity_too_large"


def test_metrics_and_admin_over_real_http(server: str) -> None:
    requests.get(f"{server}/search", params={"q": "bridge"})
    text = requests.get(f"{server}/metrics").text
    assert "semsearch_http_requests_total" in text and "semsearch_index_passages" in text
    assert requests.post(f"{server}/admin/reload").status_code == 401
    ok = requests.post(f"{server}/admin/reload", headers={"Authorization": "Bearer integration-token"})
    assert ok.status_code == 200 and ok.json()["reloaded"] is False
