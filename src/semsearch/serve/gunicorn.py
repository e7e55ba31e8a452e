"""Running the HTTP service: gunicorn (production) or Flask's development server.

Gunicorn preloads the app in the master (model and index loaded once, then forked, so workers share the
memory-mapped index and the model's pages), runs ``gthread`` workers, and lets concurrent requests in a worker
share one model forward pass through the searcher's query batcher.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import tempfile
from typing import Any

from ..config import Settings
from ..models.embedding import Embedder

log = logging.getLogger(__name__)

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _configure_logging() -> None:
    logging.getLogger("semsearch.http").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _freeze_heap() -> None:
    """Move every object alive now (the model, tokenizers, libraries: about 500,000 objects) out of the garbage
    collector's reach. A full collection over them takes about 240 ms, and under load it stalled every request
    of a worker by 400 ms; after freezing, collections scan only what requests allocate. Before the fork it
    also keeps the collector from writing to (and so un-sharing) the pages the workers inherit."""
    gc.collect()
    gc.freeze()


def default_workers() -> int:
    """One worker process per CPU core (at most 8). Queries are embedded on the request thread (ONNX Runtime,
    one core each) and the rest of a request is Python, so processes, not threads, use the cores: at 8 clients
    on 2 cores, 2 workers served 235 requests/s against 150 for one (scripts/bench_http.py)."""
    return max(1, min(8, os.cpu_count() or 1))


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    threads: int = 8,
    dev: bool = False,
    embedder: Embedder | None = None,
) -> None:
    """Serve the index in ``settings.index_dir`` until interrupted. ``embedder``: your own model object (any
    :class:`~semsearch.models.embedding.Embedder`) instead of the sentence-transformers model the index names."""
    _configure_logging()
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Must be set before prometheus_client is imported, so every worker writes its samples to shared files.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="semsearch-metrics-")
    from .app import create_app, service_of

    threads_per_worker = settings.threads or max(1, (os.cpu_count() or 1) // workers)
    if not dev:
        # The master loads the model single-threaded: once PyTorch has run a multi-threaded (OpenMP) op in a
        # process, its forked children run the model ~70% slower (measured 9.4 ms vs 5.5 ms per query). Each
        # worker raises its thread count after the fork (post_fork below).
        settings = settings.with_(threads=1)
    app = create_app(settings, embedder=embedder)
    svc = service_of(app)
    try:
        # Load model and index now: fail fast, and share the model with the forked workers.
        svc.searcher().warm()
    except Exception as exc:  # the service still starts; /readyz reports why it is not ready
        log.warning("starting without an index: %s", exc)
    if dev:
        # SIGTERM is how service managers stop a process: leave like Ctrl-C does, with status 0.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        app.run(host=host, port=port, threaded=True, use_reloader=False)
        return
    # Each worker opens the current version itself (post_fork): the index is memory-mapped, so its pages are
    # shared through the page cache all the same, and a worker forked later (one replacing a dead worker) starts on
    # the current version, not on the one the master saw at startup. The master then keeps no index files open.
    svc.release_index()
    _freeze_heap()

    from gunicorn.app.base import BaseApplication

    class _Gunicorn(BaseApplication):  # type: ignore[misc]
        def __init__(self, options: dict[str, Any]) -> None:
            self.options = options
            super().__init__()

        def load_config(self) -> None:
            for key, value in self.options.items():
                self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:
                # gunicorn >= 24 listens on one control socket per user ($HOME/.gunicorn/gunicorn.ctl), which a
                # second server on the machine would take over; semsearch does not use it.
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Any:
            return app

    def post_fork(server: Any, worker: Any) -> None:
        # Until the worker installs its own handlers (after this hook), the master's handlers, inherited by the
        # fork, would swallow a SIGTERM sent while the worker warms up, and shutdown would wait out the graceful
        # timeout. A worker that has served nothing can simply die: the stop signals were blocked across the fork
        # (see below), so one sent since is pending, and it is delivered now with the default action.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        # Split the cores between workers. (The model thread is restarted in the child on first use.)
        try:
            searcher: Any = svc.searcher()  # opens the current version, before any request
        except Exception as exc:  # no index yet: /readyz says why; requests open it once it is published
            log.warning("worker starting without an index: %s", exc)
            searcher = None
        set_threads = getattr(searcher.embedder, "set_threads", None) if searcher is not None else None
        if set_threads is not None:
            set_threads(threads_per_worker)
        if searcher is not None:
            # Open this process's query session (ONNX Runtime sessions are per process) before the first
            # request, so no client pays for it.
            searcher.warm()
        _freeze_heap()

    def worker_exit(server: Any, worker: Any) -> None:
        if os.getpid() != worker.pid:
            return  # gunicorn also calls this hook in the master, for a worker that is already gone
        # The worker has finished its requests. Leave without running C++ static destructors: libraries that
        # started threads in the master before the fork try to join them in the child, where they do not exist,
        # and abort (SIGABRT, a core dump, and a shutdown that can take longer than the graceful timeout).
        # gunicorn calls this hook while the worker's SystemExit is propagating: keep its status, which tells the
        # master a worker that failed to boot (3) from one that stopped (0).
        exc = sys.exc_info()[1]
        status = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1 if exc else 0
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    # Block the stop signals while gunicorn forks a worker: in the child they stay blocked (pending) until
    # post_fork has replaced the master's handlers, so a stop sent in between is never swallowed.
    os.register_at_fork(
        before=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS),
        after_in_parent=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS),
    )
    _Gunicorn(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "preload_app": True,
            "timeout": 60,
            "graceful_timeout": 30,
            "keepalive": 5,
            # Valid GET requests (a 2,000-character query, percent-encoded) can be longer than gunicorn's
            # 4,094-byte default; 0 lets gunicorn read up to its 1 MiB ceiling and the app answers 414 in JSON
            # above MAX_URL_BYTES.
            "limit_request_line": 0,
            "accesslog": None,  # the app logs one line per request itself (without query strings)
            "errorlog": "-",
            "loglevel": "info",
            "post_fork": post_fork,
            "worker_exit": worker_exit,
            "proc_name": "semsearch",
        }
    ).run()
