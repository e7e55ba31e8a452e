#!/usr/bin/env python
"""HTTP benchmark: a real ``semsearch serve`` on loopback, closed-loop clients at several concurrency levels.

Starts the server on a free 127.0.0.1 port over an index (default: bbc-news, built into bench-results/ if
missing), runs each concurrency level for a bounded time and request count with unique queries (no repeats, so
nothing is served from any cache), and prints a JSON report: QPS, p50/p95/p99 latency and errors per level, the
in-process ``Searcher.search`` latency measured in the same run, and the HTTP overhead as a ratio.
With ``--reindex-during`` an incremental reindex (a few edited articles) is published in the middle of the
8-client run; the report counts any failed request and the index versions seen.

    python scripts/bench_http.py [--levels 1,8,32] [--seconds 15] [--reindex-during]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

from _report import emit

ROOT = Path(__file__).resolve().parent.parent
BBC = ROOT.parent / "shared" / "datasets" / "bbc-news"
RESULTS = ROOT / "bench-results"
SEMSEARCH = [sys.executable, "-m", "semsearch.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_queries(corpus: Path, n: int) -> list[str]:
    """Unique natural-language queries from the corpus headlines (several phrasings each)."""
    from semsearch.ingest.articles import load_articles

    titles = [a.title for a in load_articles([corpus]).articles if a.title]
    templates = ["{}", "what happened with {}", "news about {}", "{} latest", "why {}", "who said {}"]
    queries = []
    for template in templates:
        for title in titles:
            queries.append(template.format(title.lower()))
            if len(queries) >= n:
                return queries
    return queries


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) if values else float("nan")


def process_tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` and its children (Linux /proc); None where unavailable."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        total = 0
        for p in [pid, *map(int, children)]:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_level(
    port: int,
    clients: int,
    queries: list[str],
    seconds: float,
    max_requests: int,
    server_pid: int | None = None,
    until: threading.Event | None = None,
) -> dict[str, object]:
    """Closed-loop clients for ``seconds`` (or, with ``until``, until that event is set, within ``seconds``)."""
    lock = threading.Lock()
    cursor = [0]
    latencies: list[float] = []
    errors: list[str] = []
    versions: set[str] = set()
    deadline = time.perf_counter() + seconds

    def next_query() -> str | None:
        with lock:
            if cursor[0] >= max_requests:
                return None
            cursor[0] += 1
            return queries[(cursor[0] - 1) % len(queries)]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.perf_counter() < deadline and not (until is not None and until.is_set()):
            query = next_query()
            if query is None:
                break
            path = "/search?" + urllib.parse.urlencode({"q": query, "k": 10})
            started = time.perf_counter()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                elapsed = time.perf_counter() - started
                if response.status != 200:
                    with lock:
                        errors.append(f"HTTP {response.status}: {body[:200]!r}")
                    continue
                version = json.loads(body)["version"]
                with lock:
                    latencies.append(elapsed)
                    versions.add(version)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    server_cpu = process_tree_cpu_seconds(server_pid) if server_pid else None
    client_cpu = time.process_time()
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    client_cpu = time.process_time() - client_cpu
    server_end = process_tree_cpu_seconds(server_pid) if server_pid else None
    ms = [x * 1000 for x in latencies]
    n = max(len(latencies) + len(errors), 1)
    return {
        "clients": clients,
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "error_samples": errors[:5],
        "seconds": round(wall, 2),
        "qps": round(len(latencies) / wall, 1),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2) if ms else None,
        "versions_seen": sorted(versions),
        # Where the two cores went: the server's CPU time (all workers) and this load generator's, per request.
        "server_cpu_ms_per_request": None
        if server_cpu is None or server_end is None
        else round((server_end - server_cpu) * 1000 / n, 2),
        "client_cpu_ms_per_request": round(client_cpu * 1000 / n, 2),
    }


def reindex_in_background(
    corpus_copy: Path, index_dir: Path, delay: float, settle: float, done: threading.Event
) -> tuple[threading.Thread, dict[str, object]]:
    """After ``delay`` seconds, edit a few articles of the copy and publish an incremental reindex; set ``done``
    ``settle`` seconds after it has published (so the servers are seen answering from the new version)."""
    result: dict[str, object] = {}

    def work() -> None:
        time.sleep(delay)
        edited = sorted(corpus_copy.rglob("*.txt"))[:5]
        for path in edited:
            path.write_text(path.read_text(encoding="latin-1") + "\n\nEditor's note: updated for the benchmark.\n")
        started = time.perf_counter()
        proc = subprocess.run(
            [*SEMSEARCH, "reindex", str(corpus_copy), "--index-dir", str(index_dir), "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        result["seconds"] = round(time.perf_counter() - started, 2)
        result["returncode"] = proc.returncode
        if proc.returncode == 0:
            report = json.loads(proc.stdout)
            result["version"] = report["version_id"]
            result["passages_embedded"] = report["passages_embedded"]
        else:
            result["stderr"] = proc.stderr[-500:]
        time.sleep(settle)
        done.set()

    thread = threading.Thread(target=work)
    thread.start()
    return thread, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=BBC)
    parser.add_argument("--index-dir", type=Path, default=RESULTS / "bbc-index")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=15.0, help="time limit per level")
    parser.add_argument("--max-requests", type=int, default=4000, help="request limit per level")
    parser.add_argument("--workers", type=int, default=None, help="default: semsearch serve's (one per core)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--reindex-during", action="store_true", help="publish a reindex during the 8-client run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not args.corpus.exists():
        print(f"error: corpus not found: {args.corpus}", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)

    index_dir = args.index_dir
    corpus_copy = None
    if args.reindex_during:
        # Serve an index of a private copy of the corpus, so the reindex can edit files.
        corpus_copy = RESULTS / "bbc-copy"
        shutil.rmtree(corpus_copy, ignore_errors=True)
        shutil.copytree(args.corpus, corpus_copy)
        index_dir = RESULTS / "bbc-copy-index"
        shutil.rmtree(index_dir, ignore_errors=True)
        if args.index_dir.exists():
            shutil.copytree(args.index_dir, index_dir)  # same articles: reindex reuses every vector
        subprocess.run(
            [*SEMSEARCH, "reindex", str(corpus_copy), "--index-dir", str(index_dir)], check=True, stdout=sys.stderr
        )
    elif not (index_dir / "CURRENT").exists():
        subprocess.run(
            [*SEMSEARCH, "index", str(args.corpus), "--index-dir", str(index_dir)], check=True, stdout=sys.stderr
        )

    from semsearch.serve.gunicorn import default_workers

    args.workers = args.workers or default_workers()
    levels = [int(x) for x in args.levels.split(",")]
    queries = make_queries(args.corpus, args.max_requests * len(levels) + 600)
    port = free_port()
    log_file = open(RESULTS / "bench_http_server.log", "w")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen(
        [*SEMSEARCH, "serve", "--index-dir", str(index_dir), "--port", str(port),
         "--workers", str(args.workers), "--threads", str(args.threads)],
        stdout=subprocess.DEVNULL,
        stderr=log_file,  # a file, not a pipe nobody reads: one log line per request would fill it and block
        env={**os.environ, "SEMSEARCH_RELOAD_CHECK_SECONDS": "0.5"},
    )  # fmt: skip
    report: dict[str, object] = {"index_dir": str(index_dir), "workers": args.workers, "threads": args.threads}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise RuntimeError("server did not become ready")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/stats")
        stats = json.loads(conn.getresponse().read())
        report["query_backend"], report["precision"] = stats["query_backend"], stats["precision"]
        run_level(port, 2, queries[:50], 10, 50)  # warm-up (not reported)
        offset = 200
        results = []
        for clients in levels:
            chunk = queries[offset : offset + args.max_requests]
            offset += args.max_requests
            results.append(run_level(port, clients, chunk, args.seconds, args.max_requests, server.pid))
        if args.reindex_during and corpus_copy is not None:
            # A separate phase: 8 clients run from 3 s before the reindex starts until 5 s after it published
            # (at most 300 s; the reindex competes with the servers for the cores).
            done = threading.Event()
            reindex = reindex_in_background(corpus_copy, index_dir, delay=3.0, settle=5.0, done=done)
            chunk = queries[offset:] + queries[:offset]
            level = run_level(port, 8, chunk, 300.0, 10**9, server.pid, until=done)
            reindex[0].join()
            level["phase"] = "8 clients while a reindex is published"
            level["reindex"] = reindex[1]
            report["reindex_during_load"] = level
        report["levels"] = results
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log_file.close()

    # In-process latency on the same index, same machine, same run (after the server has stopped).
    from semsearch import Searcher

    with Searcher.open(index_dir) as searcher:
        for q in queries[:20]:
            searcher.search(q, k=10)
        times = []
        for q in queries[offset : offset + 300]:
            started = time.perf_counter()
            searcher.search(q, k=10)
            times.append((time.perf_counter() - started) * 1000)
    inproc = statistics.median(times)
    report["in_process_p50_ms"] = round(inproc, 2)
    report["in_process_p99_ms"] = round(percentile(times, 99), 2)
    one = next((r for r in results if r["clients"] == 1), None)
    if one is not None:
        report["http_overhead_ratio_p50_1_client"] = round(float(one["p50_ms"]) / inproc, 2)  # type: ignore[arg-type]
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
