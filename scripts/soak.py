#!/usr/bin/env python
"""Soak test with faults: a real ``semsearch serve`` (2 gunicorn workers) on loopback under 8 locust users for
``--seconds`` (60), with a reindex published at about a third of the run and one worker SIGKILLed at half-time;
then the master is sent SIGTERM while requests are in flight. Prints a JSON report and exits 1 if a target is
missed.

    python scripts/soak.py [--seconds 60] [--users 8] [--out docs/bench/soak.json]
    python scripts/soak.py --url http://127.0.0.1:8000 --server-pid PID --index-dir DIR   # a running server

The server serves an index of a private copy of ``examples/articles`` (built by the writer process, or copied
from ``--from-index``). The writer (``python scripts/soak.py _indexer ...``) is a separate process like a cron job
running ``semsearch reindex``, and makes the same library call, with the model loaded before the run: loading it
is most of what ``semsearch reindex`` does on this corpus (15 s of CPU idle, 80 s under this load on 2 cores, which
published after the end of the run). At a third of the run it edits one article of the copy, adds one, and
publishes an incremental reindex into the served index dir.

Locust runs as a library in a subprocess of this script (``python scripts/soak.py _locust ...``), so gevent's
monkey-patching never reaches this process or a test runner; that subprocess records every request (start, end,
status, error, the local port of the connection it was sent on when that was already open, the index version
that answered) and writes them to a JSON file when it is stopped.

Targets:
- ``failed_other == 0``: a request may fail only if it was in flight on the killed worker: it started before that
  worker had exited (its sockets are closed when it exits, so a later request cannot reach it), failed with a
  dropped connection after the SIGKILL was sent, and was sent on one of the connections the worker held at the
  kill (by client port, from /proc/net/tcp) or on a connection opened for it (port unknown). That count is
  bounded by the worker's threads and by those connections (HTTP/1.1: one request in flight per connection).
- the killed worker is replaced, and the replacement serves requests (counted in its own prometheus file);
- both index versions answer, with no failure during the switch, and every request started 5 s after the
  reindex published names the new version (old-version responses never cite the added article);
- memory drift of the surviving worker's RSS, and of master + surviving worker, at most 5%: median of the last
  10 s minus median of the first 10 s after a 5 s warm-up, over the first. The last window comes after the
  reindex, so drift includes the new version's pages: the report splits it into index-file pages and anonymous
  memory. PSS is reported too but not targeted: it jumps when the sibling dies and its shared pages are divided
  among fewer processes.
- a clean shutdown: exit status 0, no worker that died of a signal or a non-zero status (other than the one
  killed on purpose), no ``terminate called``, core dump or traceback in the log. Requests still running at the
  SIGTERM are reported there (completed, or failed and how), not counted among the soak's failures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _report import emit

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = ROOT / "examples" / "articles"
SEMSEARCH = [sys.executable, "-m", "semsearch.cli"]

EDITED_ARTICLE = "science/kestrel-point-stellarator-record.txt"
NEW_ARTICLE_ID = "local/quillmere-otter-census.txt"
NEW_ARTICLE = (
    "Quillmere lighthouse keeper Ottoline Varga-Pemberton counts 311 river otters\n\n"
    "Ottoline Varga-Pemberton, the keeper of the Quillmere lighthouse, counted 311 river otters on the "
    "Quillmere estuary during her annual dawn census, the highest number since records began in 1958.\n\n"
    "Varga-Pemberton said the otters had returned after the estuary's eelgrass meadows were replanted."
)
FACT_QUERY = "How many otters did Ottoline Varga-Pemberton count at the Quillmere lighthouse?"
TEMPLATES = ("{}", "what happened with {}", "news about {}", "{} latest")
RECONNECT_EVERY = 20  # requests per connection: clients come and go, so new connections reach every worker
SETTLE_SECONDS = 5.0  # after a publish, every worker must answer from the new version (reload check: 1 s)
DRIFT_LIMIT = 0.05


# -- the load generator (runs in its own process: locust monkey-patches everything with gevent) -----------------


def run_locust(url: str, users: int, seconds: float, queries: list[str], records_path: Path) -> None:
    """Closed-loop users, no wait: GET /search 50%, POST /search 30% (a third grouped by article), POST /context
    20%; every fifth query is the fact only the reindex adds. Each user opens a new connection every
    ``RECONNECT_EVERY`` requests: with keep-alive and no churn, the connections would stay with the surviving
    worker after the kill and its replacement would never be sent a request. Stops on SIGTERM or after
    ``seconds``; prints ``READY <epoch>`` once every user runs."""
    import gevent
    from locust import HttpUser, constant, task
    from locust.env import Environment

    records: list[dict[str, Any]] = []
    counter = iter(range(10**9))

    def next_query() -> str:
        n = next(counter)
        return FACT_QUERY if n % 5 == 4 else queries[n % len(queries)]

    def on_request(name: str, response: Any, exception: BaseException | None, start_time: float,
                   context: dict[str, Any], **_: Any) -> None:  # fmt: skip
        record = {"route": name, "start": start_time, "end": time.time(), "status": response.status_code,
                  "port": context.get("port"), "error": None, "version": None, "cites_new": None, "top_new": None,
                  "fact": context.get("query") == FACT_QUERY}  # fmt: skip
        if exception is not None:
            record["error"] = f"{type(exception).__name__}: {exception}"[:300]
        elif response.status_code == 200:
            body = response.json()
            record["version"] = body["version"]
            items = body.get("hits") or body.get("articles") or body.get("citations") or []
            ids = [item["article_id"] for item in items]
            record["cites_new"] = NEW_ARTICLE_ID in ids
            record["top_new"] = bool(ids) and ids[0] == NEW_ARTICLE_ID
        records.append(record)

    class SoakUser(HttpUser):
        wait_time = constant(0)
        host = url
        sent = 0

        def query(self) -> tuple[str, dict[str, Any]]:
            """The next query, and the request context: the query and the connection's port."""
            self.sent += 1
            if self.sent % RECONNECT_EVERY == 0:
                self.client.close()  # the next request opens a new connection
            q = next_query()
            return q, {"query": q, "port": self.local_port()}

        def local_port(self) -> int | None:
            """The client port of the kept-alive connection the next request will be sent on (urllib3 takes the
            last one put back in its pool); None when it will open a new one."""
            pools = self.client.get_adapter(url).poolmanager.pools
            for key in pools.keys():  # noqa: SIM118 - urllib3's RecentlyUsedContainer cannot be iterated
                queue = pools[key].pool.queue
                sock = getattr(queue[-1], "sock", None) if queue else None
                if sock is not None:
                    return int(sock.getsockname()[1])
            return None

        @task(5)
        def get_search(self) -> None:
            q, context = self.query()
            self.client.get("/search", params={"q": q, "k": 10}, name="GET /search", context=context)

        @task(3)
        def post_search(self) -> None:
            q, context = self.query()
            body = {"query": q, "k": 10, "group_by": "article" if len(q) % 3 == 0 else "passage"}
            self.client.post("/search", json=body, name="POST /search", context=context)

        @task(2)
        def post_context(self) -> None:
            q, context = self.query()
            self.client.post("/context", json={"query": q, "max_tokens": 512}, name="POST /context", context=context)

    env = Environment(user_classes=[SoakUser], host=url)
    env.events.request.add_listener(on_request)
    runner = env.create_local_runner()
    gevent.signal_handler(signal.SIGTERM, runner.quit)
    runner.start(users, spawn_rate=users, wait=True)
    print(f"READY {time.time()}", flush=True)
    gevent.spawn_later(seconds, runner.quit)
    runner.greenlet.join()
    records_path.write_text(json.dumps(records), encoding="utf-8")


# -- /proc: processes, memory, connections ------------------------------------------------------------------------


def children(pid: int) -> set[int]:
    """The live children of ``pid`` (a gunicorn master's workers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rpartition(")")[2].split()  # the name may contain spaces
                if int(fields[1]) == pid and fields[0] != "Z":
                    found.add(int(entry.name))
    return found


def exited(pid: int) -> bool:
    """Whether ``pid`` has exited (gone, or a zombie: its files, sockets included, are closed by then)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


def memory_kb(pid: int) -> dict[str, int] | None:
    """Rss, Pss and Anonymous (kB) from ``/proc/PID/smaps_rollup``; None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    values = dict(re.findall(r"^(Rss|Pss|Anonymous):\s+(\d+) kB", text, re.MULTILINE))
    return {key.lower(): int(value) for key, value in values.items()}


def mapped_rss_kb(pid: int, prefix: Path) -> int | None:
    """Resident kB of the file mappings under ``prefix`` (the index's memory-mapped segments)."""
    total, inside, prefix_text = 0, False, str(prefix.resolve())
    try:
        with open(f"/proc/{pid}/smaps") as smaps:
            for line in smaps:
                if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    fields = line.split(maxsplit=5)
                    inside = len(fields) == 6 and fields[5].strip().startswith(prefix_text)
                elif inside and line.startswith("Rss:"):
                    total += int(line.split()[1])
    except OSError:
        return None
    return total


def client_ports(pids: set[int], port: int) -> dict[int, list[int]]:
    """For each of ``pids``, the client ports of the established connections to ``port`` it holds the server end
    of (an open file of exactly one process: the worker that accepted it)."""
    clients = {}  # socket inode -> client port
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # ESTABLISHED
                    clients[f"socket:[{fields[9]}]"] = int(fields[2].rsplit(":", 1)[1], 16)
    held: dict[int, list[int]] = {pid: [] for pid in pids}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target in clients:
                        held[pid].append(clients[target])
    return held


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def served_by(metrics_dir: Path | None, pid: int) -> int | None:
    """Search and context requests counted in ``pid``'s own prometheus file (multiprocess mode)."""
    path = metrics_dir / f"counter_{pid}.db" if metrics_dir else None
    if path is None or not path.exists():
        return None if metrics_dir is None else 0
    from prometheus_client.multiprocess import MultiProcessCollector

    return int(sum(sample.value for metric in MultiProcessCollector.merge([str(path)]) for sample in metric.samples
                   if sample.name == "semsearch_http_requests_total"
                   and sample.labels.get("route") in ("/search", "/context")))  # fmt: skip


class MemorySampler(threading.Thread):
    """Once a second: Rss/Pss/Anonymous of the master and of each of its live workers (and every 5 s, the resident
    pages of their index file mappings)."""

    def __init__(self, master: int, index_dir: Path | None) -> None:
        super().__init__(daemon=True)
        self.master = master
        self.index_dir = index_dir
        self.ticks: list[tuple[float, dict[int, dict[str, int]]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            tick = {}
            for pid in {self.master, *children(self.master)}:
                sample = memory_kb(pid)
                if sample is not None and self.index_dir is not None and len(self.ticks) % 5 == 0:
                    index = mapped_rss_kb(pid, self.index_dir)  # a full smaps read: only every 5 s
                    if index is not None:
                        sample["index"] = index
                if sample is not None:
                    tick[pid] = sample
            self.ticks.append((now, tick))
            self.stop.wait(max(0.0, 1.0 - (time.time() - now)))


# -- helpers ------------------------------------------------------------------------------------------------------


def corpus_queries(corpus: Path) -> list[str]:
    """The sample questions (QUESTIONS.md) and the article headlines, in a few phrasings."""
    questions = re.findall(r"^- (.+\?)\s*$", (corpus / "QUESTIONS.md").read_text(encoding="utf-8"), re.MULTILINE)
    titles = []
    for path in sorted(corpus.rglob("*")):
        if path.suffix in (".txt", ".md") and path.parent != corpus:
            titles.append(path.read_text(encoding="utf-8").lstrip("# ").splitlines()[0].strip())
        elif path.suffix == ".jsonl":
            titles += [json.loads(line)["title"] for line in path.read_text(encoding="utf-8").splitlines() if line]
    return questions + [t.format(title.lower()) for t in TEMPLATES for title in titles if title]


_STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"soak: {time.monotonic() - _STARTED:6.1f} s  {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(server: Server, workers: int, timeout: float) -> str:
    """Wait for /readyz and every worker forked; return the served version."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(f"server exited with status {server.proc.returncode}")
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"{server.url}/readyz", timeout=2) as response:
                version = json.loads(response.read())["version"]
            if len(children(server.master)) >= workers:
                return str(version)
        time.sleep(0.25)
    raise RuntimeError(f"server not ready within {timeout:.0f} s")


def median_in(ticks: list[tuple[float, float]], start: float, end: float) -> float | None:
    values = [v for t, v in ticks if start <= t < end]
    return statistics.median(values) if values else None


def drift(series: list[tuple[float, float]], base: tuple[float, float], last: tuple[float, float]) -> dict[str, Any]:
    first, final = median_in(series, *base), median_in(series, *last)
    return {
        "baseline_mb": None if first is None else round(first / 1024, 1),
        "final_mb": None if final is None else round(final / 1024, 1),
        "drift": None if not first or final is None else round((final - first) / first, 4),
    }


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 2)


def latency(records: list[dict[str, Any]]) -> dict[str, Any]:
    ms = [(r["end"] - r["start"]) * 1000 for r in records if r["status"] == 200 and r["error"] is None]
    return {"requests": len(records), "failed": len(records) - len(ms), "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99), "max_ms": percentile(ms, 100)}  # fmt: skip


def log_findings(log: str, killed: int | None) -> dict[str, Any]:
    """Worker deaths and aborts in the server log, apart from the SIGKILL sent on purpose."""
    signalled = re.findall(r"Worker \(pid:(\d+)\) was sent (\w+)", log)
    codes = re.findall(r"Worker \(pid:(\d+)\) exited with code (\d+)", log)
    aborted = [{"pid": int(p), "signal": s} for p, s in signalled if not (int(p) == killed and s == "SIGKILL")]
    aborted += [{"pid": int(p), "exit_code": int(c)} for p, c in codes]
    return {
        "aborted_workers": aborted,
        "terminate_called": "terminate called" in log,
        "sigabrt": "SIGABRT" in log,
        "core_dumped": bool(re.search(r"core dumped", log, re.IGNORECASE)),
        "traceback": "Traceback" in log,
        "killed_worker_logged": killed is not None and f"Worker (pid:{killed}) was sent SIGKILL" in log,
    }


# -- the writer (its own process, like a cron job running `semsearch reindex`) -----------------------------------


def run_indexer(corpus: Path, index_dir: Path, build: bool) -> None:
    """Load the model, build the index of ``corpus`` (with ``build``), print ``READY``; then, for each line read,
    apply the corpus to the index incrementally and print the JSON report. The same library call as
    ``semsearch reindex --json``; the model is loaded before the run, because loading it is most of what the CLI
    does here (15 s of CPU on an idle machine, over 80 s under this load on 2 cores: the publish landed after
    the end of a 60 s run)."""
    from semsearch import Settings, build_index
    from semsearch.index.build import reindex
    from semsearch.models.embedding import load_embedder

    settings = Settings.from_env()
    embedder = load_embedder(settings)
    if build:
        build_index([corpus], index_dir, settings, embedder=embedder)
    print("READY", flush=True)
    for _ in sys.stdin:
        print(json.dumps(reindex([corpus], index_dir, settings, embedder=embedder).to_dict()), flush=True)


class Indexer:
    """The writer subprocess (``run_indexer``)."""

    def __init__(self, corpus: Path, index_dir: Path, build: bool, env: dict[str, str], log: Path) -> None:
        self.corpus = corpus
        with open(log, "w") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "_indexer", str(corpus), str(index_dir), str(int(build))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, env=env, text=True,
            )  # fmt: skip
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout, self.log = self.proc.stdin, self.proc.stdout, log

    def wait_ready(self) -> None:
        if self.stdout.readline().strip() != "READY":
            raise RuntimeError("the indexer failed: " + self.log.read_text()[-2000:])

    def publish(self) -> dict[str, Any]:
        """Edit one article and add one in the corpus copy, then reindex; when and what was published."""
        edited = self.corpus / EDITED_ARTICLE
        edited.write_text(edited.read_text(encoding="utf-8") + "\n\nThe laboratory said a second campaign would "
                          "begin in March, with the stellarator at twice the heating power.\n", encoding="utf-8")  # fmt: skip
        (self.corpus / NEW_ARTICLE_ID).write_text(NEW_ARTICLE, encoding="utf-8")
        started = time.time()
        self.stdin.write("reindex\n")
        self.stdin.flush()
        line = self.stdout.readline()
        result: dict[str, Any] = {"started": started, "published": time.time(), "ok": bool(line)}
        if line:
            report = json.loads(line)
            result.update(version=report["version_id"], updated=report["updated"], added=report["added"],
                          passages_embedded=report["passages_embedded"])  # fmt: skip
        return result

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the run ------------------------------------------------------------------------------------------------------


@dataclass
class Server:
    """The server under test: started by this script (``proc``) or attached to."""

    url: str
    master: int
    index_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    metrics_dir: Path | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@dataclass
class Run:
    """What happened, times in seconds since the epoch (the report shows them relative to ``t0``)."""

    t0: float
    old_version: str
    initial: set[int]
    reindex: dict[str, Any] = field(default_factory=dict)
    victim: int = 0
    survivor: int | None = None
    replacement: int | None = None
    held: dict[int, list[int]] = field(default_factory=dict)  # client ports per worker at the kill
    os_threads: int = 0
    killed_at: float = 0.0
    gone_at: float = 0.0
    replaced_at: float | None = None
    served: dict[int, int | None] = field(default_factory=dict)
    sigterm_at: float = 0.0
    stopped_at: float = 0.0
    exit_status: int | None = None
    load_cpu: float | None = None
    log: str = ""


def start_server(args: argparse.Namespace, work: Path, index_dir: Path, env: dict[str, str]) -> Server:
    metrics_dir = work / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir()
    port = free_port()
    log = work / "server.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [*SEMSEARCH, "serve", "--index-dir", str(index_dir), "--port", str(port),
             "--workers", str(args.workers), "--threads", str(args.threads)],
            stdout=log_file, stderr=subprocess.STDOUT, env={**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        )  # fmt: skip
    return Server(f"http://127.0.0.1:{port}", proc.pid, index_dir, proc, log, metrics_dir)


def start_load(args: argparse.Namespace, work: Path, url: str, corpus: Path) -> tuple[subprocess.Popen[str], float]:
    """Start the locust subprocess; return it and the moment every user was running."""
    with open(work / "locust.log", "w") as log_file:
        load = subprocess.Popen(
            [sys.executable, __file__, "_locust", url, str(args.users), str(args.seconds + 60),
             str(work / "requests.json")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, text=True,
        )  # fmt: skip
    assert load.stdin is not None and load.stdout is not None
    load.stdin.write(json.dumps(corpus_queries(corpus)))
    load.stdin.close()
    line = load.stdout.readline()
    if not line.startswith("READY"):
        raise RuntimeError("locust did not start: " + (work / "locust.log").read_text()[-2000:])
    return load, float(line.split()[1])


def soak(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work or tempfile.mkdtemp(prefix="semsearch-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    shutil.copytree(args.corpus, corpus)
    (corpus / NEW_ARTICLE_ID).unlink(missing_ok=True)
    (work / "requests.json").unlink(missing_ok=True)
    env = dict(os.environ)
    if args.cache_dir:
        env["SEMSEARCH_CACHE_DIR"] = str(args.cache_dir)
    index_dir = args.index_dir or work / "index"
    if not args.url:
        shutil.rmtree(index_dir, ignore_errors=True)
        if args.from_index:
            shutil.copytree(args.from_index, index_dir)
    build = not args.url and not args.from_index
    indexer = Indexer(corpus, index_dir, build, env, work / "indexer.log")
    server: Server | None = None
    load: subprocess.Popen[str] | None = None
    try:
        if build:
            indexer.wait_ready()  # the index exists once it is
            progress("index built")
        if args.url:
            server = Server(args.url.rstrip("/"), args.server_pid, index_dir, log=args.server_log)
        else:
            server = start_server(args, work, index_dir, env)
        if not build:
            indexer.wait_ready()  # loading the model while the server starts
        progress(f"indexer ready; waiting for the server at {server.url}")
        old_version = wait_ready(server, args.workers, timeout=180)
        progress(f"server ready; {args.users} users for {args.seconds:.0f} s")
        sampler = MemorySampler(server.master, index_dir)
        sampler.start()
        initial = children(server.master)
        load, t0 = start_load(args, work, server.url, corpus)
        run = Run(t0, old_version, initial)
        exercise(args, server, indexer, load, sampler, run)
        records = json.loads((work / "requests.json").read_text(encoding="utf-8"))
        return analyse(args, server, run, records, sampler.ticks)
    finally:
        for proc in (load, server.proc if server else None):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        indexer.close()


def exercise(args: argparse.Namespace, server: Server, indexer: Indexer, load: subprocess.Popen[str],
             sampler: MemorySampler, run: Run) -> None:  # fmt: skip
    """The faults, on a schedule: publish at a third, SIGKILL a worker at half-time (after the publish), SIGTERM
    the master at the end, all while the users keep sending."""
    T = args.seconds

    def at(moment: float) -> None:
        time.sleep(max(0.0, run.t0 + moment - time.time()))

    at(T / 3)
    run.reindex = indexer.publish()
    progress(f"published {run.reindex.get('version')}")
    at(max(T / 2, run.reindex["published"] - run.t0 + 3))
    # Kill the worker holding the most client connections: the most requests in flight.
    workers = children(server.master)
    busiest = client_ports(workers, server.port)
    run.victim = max(workers, key=lambda pid: (len(busiest[pid]), pid))
    run.survivor = next(iter(workers - {run.victim}), None)
    run.os_threads = len(os.listdir(f"/proc/{run.victim}/task"))
    # Frozen first, so that the connections it holds are read exactly: a stopped worker accepts nothing more
    # between this reading and the kill (new connections wait in the shared listen queue for the other worker).
    os.kill(run.victim, signal.SIGSTOP)
    run.held = client_ports(workers, server.port)
    run.killed_at = time.time()
    os.kill(run.victim, signal.SIGKILL)
    progress(f"SIGKILL sent to worker {run.victim}")
    while not exited(run.victim):
        time.sleep(0.001)
    run.gone_at = time.time()
    while time.time() < run.killed_at + 30 and run.replacement is None:
        new = children(server.master) - workers
        if new:
            run.replacement, run.replaced_at = min(new), time.time()
        time.sleep(0.05)
    at(T)
    run.served = {pid: served_by(server.metrics_dir, pid) for pid in run.initial | {run.replacement} if pid}
    # Clean shutdown: SIGTERM to the master while the users keep sending.
    sampler.stop.set()
    run.sigterm_at = time.time()
    os.kill(server.master, signal.SIGTERM)
    progress("SIGTERM sent to the master")
    if server.proc is not None:
        try:
            run.exit_status = server.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            run.exit_status = server.proc.wait()
    else:
        while not exited(server.master) and time.time() < run.sigterm_at + 60:
            time.sleep(0.05)
    run.stopped_at = time.time()
    run.load_cpu = cpu_seconds(load.pid)
    load.terminate()  # locust writes its records on the way out
    load.wait(timeout=60)
    sampler.join()
    run.log = server.log.read_text(errors="replace") if server.log else ""


def classify_failures(soaked: list[dict[str, Any]], run: Run) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The failed requests that were in flight on the killed worker, and the others. In flight: started before
    the worker had exited (a request started later cannot reach it: its sockets closed when it exited, and the
    client then opens a new connection), failed with a dropped connection (no status) after the SIGKILL, and
    sent on a connection the worker held (or a new one, which it may have accepted)."""
    victim_ports = set(run.held.get(run.victim, []))
    # A request still running at the SIGTERM belongs to the shutdown check (reported there).
    failed = [r for r in soaked if not (r["status"] == 200 and r["error"] is None) and r["end"] < run.sigterm_at]
    in_flight = [r for r in failed if r["status"] == 0 and r["start"] < run.gone_at and r["end"] >= run.killed_at
                 and (r["port"] is None or r["port"] in victim_ports)]  # fmt: skip
    return in_flight, [r for r in failed if r not in in_flight]


def version_checks(ok: list[dict[str, Any]], run: Run) -> dict[str, Any]:
    new, published = run.reindex.get("version"), run.reindex.get("published")
    seen: dict[str, int] = {}
    for r in ok:
        seen[r["version"]] = seen.get(r["version"], 0) + 1
    settled = [r for r in ok if published is not None and r["start"] >= published + SETTLE_SECONDS]
    fact_new = [r for r in ok if r["version"] == new and r["fact"] and r["route"] != "POST /search"]
    new_starts = [r["start"] for r in ok if r["version"] == new]
    return {
        "old": run.old_version,
        "new": new,
        "seen": seen,
        "reindex": {k: v for k, v in run.reindex.items() if k not in ("started", "published")},
        "first_new_version_response": min(new_starts) - run.t0 if new_starts else None,
        "responses_after_switch": len(settled),
        "stale_after_switch": sum(r["version"] != new for r in settled),
        "old_version_citing_new_article": sum(r["version"] != new and r["cites_new"] for r in ok),
        "fact_query_on_new_version": len(fact_new),
        "fact_query_new_article_not_first": sum(not r["top_new"] for r in fact_new),
    }


def memory_report(args: argparse.Namespace, run: Run, ticks: list[tuple[float, dict[int, dict[str, int]]]],
                  master: int) -> dict[str, Any]:  # fmt: skip
    """Drift per process against two fixed windows: after the warm-up, and the end of the run."""
    T, t0 = args.seconds, run.t0
    window, warmup = min(10.0, T / 5), min(5.0, T / 12)
    base, last = (t0 + warmup, t0 + warmup + window), (t0 + T - window, t0 + T)

    def series(pids: list[int], key: str) -> list[tuple[float, float]]:
        return [(t, sum(tick[p][key] for p in pids)) for t, tick in ticks
                if all(p in tick and key in tick[p] for p in pids)]  # fmt: skip

    def drifts(pids: list[int]) -> dict[str, Any]:
        return {key: drift(series(pids, key), base, last) for key in ("rss", "pss", "anonymous")}

    survivor = [run.survivor] if run.survivor is not None else []
    report: dict[str, Any] = {"samples": len(ticks), "baseline_window_s": [warmup, warmup + window],
                              "final_window_s": [T - window, T], "master": drifts([master]),
                              "surviving_worker": drifts(survivor),
                              "master_plus_surviving": drifts([master, *survivor])}  # fmt: skip
    surv = report["surviving_worker"]
    surv["index_files"] = drift(series(survivor, "index"), base, last)  # sampled every 5 s
    parts = {name: surv[name] for name in ("rss", "anonymous", "index_files")}
    if all(part["baseline_mb"] is not None and part["final_mb"] is not None for part in parts.values()):
        # Where the growth went: anonymous memory (heap, allocator arenas) or the mapped pages of index files.
        surv["growth_mb"] = {name: round(part["final_mb"] - part["baseline_mb"], 1) for name, part in parts.items()}
    if run.replacement is not None and run.replaced_at is not None:
        own = (run.replaced_at + 5, run.replaced_at + 5 + window)
        report["replacement_worker"] = {"rss": drift(series([run.replacement], "rss"), own, last),
                                        "baseline": "its own, from 5 s after it was forked"}  # fmt: skip
    # All live server processes: PSS counts each shared page once in the sum.
    report["server_total_pss"] = drift([(t, sum(s["pss"] for s in tick.values())) for t, tick in ticks], base, last)
    report["series_rss_mb"] = {role: [round(v / 1024, 1) for _, v in series(pids, "rss")]
                               for role, pids in (("master", [master]), ("surviving_worker", survivor))}  # fmt: skip
    return report


def analyse(args: argparse.Namespace, server: Server, run: Run, records: list[dict[str, Any]],
            ticks: list[tuple[float, dict[int, dict[str, int]]]]) -> dict[str, Any]:  # fmt: skip
    t0 = run.t0

    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - t0, 3)

    soaked = [r for r in records if r["start"] < run.sigterm_at]  # the shutdown is reported on its own
    ok = [r for r in soaked if r["status"] == 200 and r["error"] is None]
    in_flight, other = classify_failures(soaked, run)
    versions = version_checks(ok, run)
    memory = memory_report(args, run, ticks, server.master)
    shutdown = log_findings(run.log, run.victim)
    at_sigterm = [r for r in records if r["start"] < run.sigterm_at <= r["end"]]
    after = [r for r in records if r["start"] >= run.sigterm_at]
    published = run.reindex.get("published")
    # The requests by phase: while the reindex runs it takes a share of the 2 cores.
    edges = [t0, run.reindex.get("started", t0), published or run.sigterm_at, run.sigterm_at]
    phases = ("before_reindex", "reindex_running", "after_publish")
    rss = memory["surviving_worker"]["rss"]["drift"], memory["master_plus_surviving"]["rss"]["drift"]
    targets = {
        "failed_other_is_zero": not other,
        "in_flight_failures_within_threads": len(in_flight) <= args.threads,
        "in_flight_failures_within_connections_held": len(in_flight) <= len(run.held.get(run.victim, [])),
        "killed_worker_replaced": run.replacement is not None,
        "replacement_served_requests": bool(run.served.get(run.replacement or 0)),
        "surviving_worker_served_throughout": run.survivor is not None and bool(run.served.get(run.survivor))
        and all(run.survivor in tick for t, tick in ticks if t < run.sigterm_at - 1),
        # A new version with the edited article and the added one (an index that already had them publishes nothing new).
        "reindex_published": versions["new"] not in (None, run.old_version)
        and (run.reindex.get("updated"), run.reindex.get("added")) == (1, 1),
        "both_versions_answered": run.old_version in versions["seen"] and versions["new"] in versions["seen"],
        "only_new_version_after_switch": versions["responses_after_switch"] > 0 and not versions["stale_after_switch"],
        "versions_consistent": not versions["old_version_citing_new_article"]
        and not versions["fact_query_new_article_not_first"],
        "surviving_worker_rss_drift_within_5pct": rss[0] is not None and rss[0] <= DRIFT_LIMIT,
        "master_plus_surviving_rss_drift_within_5pct": rss[1] is not None and rss[1] <= DRIFT_LIMIT,
        "clean_shutdown": run.exit_status in (0, None) and not shutdown["aborted_workers"]
        and not any(shutdown[k] for k in ("terminate_called", "sigabrt", "core_dumped", "traceback")),
    }  # fmt: skip
    return {
        "config": {"seconds": args.seconds, "users": args.users, "workers": args.workers, "threads": args.threads,
                   "url": server.url, "index_dir": str(server.index_dir),
                   "load_generator": f"locust {_locust_version()} (HttpUser, no wait, new connection every "
                                     f"{RECONNECT_EVERY} requests)"},
        "timeline_s": {"reindex_started": rel(run.reindex.get("started")), "reindex_published": rel(published),
                       "first_new_version_response": versions.pop("first_new_version_response"),
                       "kill_sent": rel(run.killed_at), "killed_worker_exited": rel(run.gone_at),
                       "replacement_forked": rel(run.replaced_at), "sigterm_sent": rel(run.sigterm_at),
                       "server_exited": rel(run.stopped_at)},
        "requests": {**latency(soaked), "ok": len(ok), "rps": round(len(ok) / (run.sigterm_at - t0), 1),
                     "by_route": {route: latency([r for r in soaked if r["route"] == route])
                                  for route in sorted({r["route"] for r in soaked})},
                     "by_phase": {name: latency([r for r in soaked if start <= r["start"] < end])
                                  for name, start, end in zip(phases, edges[:-1], edges[1:], strict=True)},
                     "load_generator_cpu_s": run.load_cpu},
        "failures": {
            "failed_total": len(in_flight) + len(other),
            "failed_in_flight_at_kill": len(in_flight),
            "failed_other": len(other),
            "killed_worker_threads": args.threads,
            "killed_worker_os_threads": run.os_threads,
            "killed_worker_connections_at_kill": len(run.held.get(run.victim, [])),
            "in_flight_on_a_connection_it_held": sum(r["port"] is not None for r in in_flight),
            "in_flight_on_a_new_connection": sum(r["port"] is None for r in in_flight),
            "in_flight_samples": [f'{r["route"]}: {r["error"]}' for r in in_flight[:5]],
            "other_samples": [f'{rel(r["start"])} s {r["route"]} {r["status"]}: {r["error"]}' for r in other[:10]],
        },
        "versions": versions,
        "workers": {"master": server.master, "initial": sorted(run.initial), "killed": run.victim,
                    "surviving": run.survivor, "replacement": run.replacement,
                    "connections_at_kill": {str(p): len(ports) for p, ports in run.held.items()},
                    "search_requests_served": {str(p): n for p, n in run.served.items()}},
        "memory": memory,
        "shutdown": {"shutdown_exit_status": run.exit_status,
                     "shutdown_seconds": round(run.stopped_at - run.sigterm_at, 2),
                     "requests_in_flight_at_sigterm": len(at_sigterm),
                     "in_flight_at_sigterm_completed": sum(r["status"] == 200 for r in at_sigterm),
                     "in_flight_at_sigterm_failed": [
                         f'{rel(r["start"])} s to {rel(r["end"])} s {r["route"]} on '
                         f'{"a new" if r["port"] is None else "a kept-alive"} connection: {r["error"]}'
                         for r in at_sigterm if r["status"] != 200
                     ],
                     # The users keep sending until the server has exited: refused or closed, as they should be.
                     "started_after_sigterm": len(after),
                     "started_after_sigterm_answered": sum(r["status"] == 200 for r in after),
                     **shutdown},
        "targets": targets,
        "passed": all(targets.values()),
    }  # fmt: skip


def _locust_version() -> str:
    from importlib.metadata import version

    return version("locust")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_locust":  # the load generator subprocess (start_load)
        url, users, seconds, records = sys.argv[2:6]
        run_locust(url, int(users), float(seconds), json.loads(sys.stdin.read()), Path(records))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_indexer":  # the writer subprocess (Indexer)
        corpus, index_dir, build = sys.argv[2:5]
        run_indexer(Path(corpus), Path(index_dir), build == "1")
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="threads per worker (semsearch serve's default)")
    parser.add_argument("--corpus", type=Path, default=SAMPLE_CORPUS, help="copied; the copy is edited")
    parser.add_argument(
        "--from-index", type=Path, default=None, help="an index of --corpus to copy instead of building one"
    )
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a new temporary one)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="SEMSEARCH_CACHE_DIR for the server and reindex")
    parser.add_argument("--url", default=None, help="attach to this running server instead of starting one")
    parser.add_argument("--server-pid", type=int, default=None, help="with --url: the gunicorn master's pid")
    parser.add_argument("--index-dir", type=Path, default=None, help="with --url: the index it serves")
    parser.add_argument("--server-log", type=Path, default=None, help="with --url: its log, for the shutdown check")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.url and (args.server_pid is None or args.index_dir is None):
        parser.error("--url needs --server-pid and --index-dir")
    if args.url and args.from_index:
        parser.error("--from-index starts a server: not with --url")
    if not Path("/proc/self/smaps_rollup").exists():
        parser.error("needs Linux /proc (smaps_rollup) to find workers and measure memory")
    report = soak(args)
    emit(report, args.out)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
