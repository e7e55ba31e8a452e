from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from semsearch.models.model_thread import ModelThread


@pytest.fixture
def worker():
    w = ModelThread(name="test-worker")
    yield w
    w.close()


def test_call_runs_on_the_worker_thread(worker: ModelThread) -> None:
    assert worker.call(lambda: threading.current_thread().name) == "test-worker"
    assert worker.call(lambda a, b: a + b, 2, 3) == 5


def test_nested_calls_on_the_worker_thread_run_inline(worker: ModelThread) -> None:
    assert worker.call(lambda: worker.call(lambda: threading.current_thread().name)) == "test-worker"


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


def occupy(worker: ModelThread) -> tuple[threading.Thread, threading.Event]:
    """Keep the worker thread busy until the returned gate is set; returns once it really is busy."""
    busy, gate = threading.Event(), threading.Event()

    def hold() -> None:
        busy.set()
        assert gate.wait(30)

    blocker = threading.Thread(target=worker.call, args=(hold,))
    blocker.start()
    assert busy.wait(10)
    return blocker, gate


def test_concurrent_batched_calls_are_coalesced(worker: ModelThread) -> None:
    sizes: list[int] = []

    def embed(items: list[int]) -> np.ndarray:
        sizes.append(len(items))
        return np.array([[i * 10] for i in items])

    blocker, gate = occupy(worker)
    results: dict[int, np.ndarray] = {}

    def caller(i: int) -> None:
        results[i] = worker.batched(embed, [i, i + 100])

    callers = [threading.Thread(target=caller, args=(i,)) for i in range(6)]
    for t in callers:
        t.start()
    wait_until(lambda: worker.queued == 6)  # all six wait while the worker is busy
    gate.set()
    for t in [*callers, blocker]:
        t.join()
    assert sizes == [12]  # six callers, one model call
    for i in range(6):
        assert results[i].tolist() == [[i * 10], [(i + 100) * 10]]


def test_batches_respect_max_batch() -> None:
    worker = ModelThread(max_batch=4)
    sizes: list[int] = []
    blocker, gate = occupy(worker)

    def embed(items: list[int]) -> np.ndarray:
        sizes.append(len(items))
        return np.zeros((len(items), 1))

    callers = [threading.Thread(target=worker.batched, args=(embed, [i, i])) for i in range(5)]
    for t in callers:
        t.start()
    wait_until(lambda: worker.queued == 5)
    gate.set()
    for t in [*callers, blocker]:
        t.join()
    assert sorted(sizes) == [2, 4, 4]  # ten items queued at once: full batches of four, then the rest
    worker.close()


def test_errors_reach_every_caller(worker: ModelThread) -> None:
    def boom(items: list[str]) -> np.ndarray:
        raise ValueError("model failed")

    with pytest.raises(ValueError, match="model failed"):
        worker.batched(boom, ["a"])
    assert worker.call(lambda: "still alive") == "still alive"


def test_closed_worker_refuses_work() -> None:
    worker = ModelThread()
    worker.call(lambda: None)
    worker.close()
    with pytest.raises(RuntimeError, match="closed"):
        worker.call(lambda: None)
