"""A real server started on an index with a damaged file: a clear error in its log, /readyz 503 naming the file,
searches 503 (never wrong results), and a clean stop."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import requests

from .servers import assert_clean_exit, start_server


def test_a_server_on_a_damaged_index_says_why_and_is_not_ready(sample_index: Path, model_cache: Path,
                                                               tmp_path: Path) -> None:  # fmt: skip
    index_dir = tmp_path / "index"
    shutil.copytree(sample_index, index_dir)
    current = (index_dir / "CURRENT").read_text().strip()
    (segment,) = json.loads((index_dir / "versions" / current / "manifest.json").read_text())["segments"]
    vectors = index_dir / "segments" / segment / "vectors.npy"
    data = bytearray(vectors.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in one vector
    vectors.write_bytes(bytes(data))

    server = start_server(index_dir, tmp_path / "srv", model_cache)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert time.monotonic() < deadline and server.proc.poll() is None, server.log.read_text()
            try:
                ready = requests.get(f"{server.base}/readyz", timeout=2)
                if len(server.workers()) == 2:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.25)
        assert ready.status_code == 503
        error = ready.json()["error"]
        assert error["code"] == "index_corrupt" and "vectors.npy is damaged" in error["message"], error
        search = requests.get(f"{server.base}/search", params={"q": "rate cut"}, timeout=10)
        assert search.status_code == 503 and search.json()["error"]["code"] == "index_corrupt"
    finally:
        server.proc.terminate()
        status = server.proc.wait(timeout=30)
    log = server.log.read_text()
    assert status == 0, log
    assert "starting without an index" in log and "vectors.npy is damaged" in log, log
    assert "Traceback" not in log
    assert_clean_exit(log)
