"""Coalescing concurrent query embeddings into one model call.

A transformer forward pass over one short query wastes most of the CPU on per-call overhead and tiny matrix
products; eight queries in one pass cost little more than one. :class:`QueryBatcher` gives every calling thread a
blocking ``embed_queries`` while one background thread drains whatever is waiting into a single batch ("natural"
batching: no timer, so a lone query is never delayed).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .embedding import Embedder


@dataclass
class _Request:
    texts: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


class QueryBatcher:
    """Thread-safe ``embed_queries`` over an :class:`Embedder`, batching concurrent callers."""

    def __init__(self, embedder: Embedder, max_batch: int = 64) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0
        self.queries = 0

    def _ensure_worker(self) -> None:
        # Threads do not survive fork: a preloaded server worker starts its own on first use.
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._queue = queue.SimpleQueue()
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="semsearch-query-batcher", daemon=True)
            self._thread.start()

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        if self._closed:
            raise RuntimeError("query batcher is closed")
        if not texts:
            return self.embedder.embed_queries([])
        self._ensure_worker()
        request = _Request(list(texts))
        self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _run(self) -> None:
        q = self._queue
        while True:
            first = q.get()
            if first is None:
                return
            batch = [first]
            size = len(first.texts)
            while size < self.max_batch:
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    q.put(None)  # finish this batch, then stop
                    break
                batch.append(nxt)
                size += len(nxt.texts)
            texts = [t for r in batch for t in r.texts]
            try:
                vectors = self.embedder.embed_queries(texts)
            except BaseException as exc:  # delivered to every waiting caller
                for r in batch:
                    r.error = exc
                    r.done.set()
                continue
            self.batches += 1
            self.queries += len(texts)
            row = 0
            for r in batch:
                r.result = vectors[row : row + len(r.texts)]
                row += len(r.texts)
                r.done.set()

    def close(self) -> None:
        self._closed = True
        if self._thread is not None and self._pid == os.getpid():
            self._queue.put(None)
            self._thread.join(timeout=5)
