from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from semsearch.workers import ModelWorker


@pytest.fixture
def worker():
    w = ModelWorker(name="test-worker")
    yield w
    w.close()


def test_call_runs_on_the_worker_thread(worker: ModelWorker) -> None:
    assert worker.call(lambda: threading.current_thread().name) == "test-worker"
    assert worker.call(lambda a, b: a + b, 2, 3) == 5


def test_nested_calls_on_the_worker_thread_run_inline(worker: ModelWorker) -> None:
    assert worker.call(lambda: worker.call(lambda: threading.current_thread().name)) == "test-worker"


def test_concurrent_batched_calls_are_coalesced(worker: ModelWorker) -> None:
    gate = threading.Event()
    sizes: list[int] = []

    def embed(items: list[int]) -> np.ndarray:
        sizes.append(len(items))
        return np.array([[i * 10] for i in items])

    blocker = threading.Thread(target=worker.call, args=(gate.wait,))
    blocker.start()
    time.sleep(0.05)  # the worker is now busy, so the calls below queue up
    results: dict[int, np.ndarray] = {}

    def caller(i: int) -> None:
        results[i] = worker.batched(embed, [i, i + 100])

    callers = [threading.Thread(target=caller, args=(i,)) for i in range(6)]
    for t in callers:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in [*callers, blocker]:
        t.join()
    assert sizes == [12]  # six callers, one model call
    for i in range(6):
        assert results[i].tolist() == [[i * 10], [(i + 100) * 10]]


def test_batches_respect_max_batch() -> None:
    worker = ModelWorker(max_batch=4)
    gate = threading.Event()
    sizes: list[int] = []
    threading.Thread(target=worker.call, args=(gate.wait,)).start()
    time.sleep(0.05)
    callers = [
        threading.Thread(
            target=worker.batched, args=(lambda xs: (sizes.append(len(xs)), np.zeros((len(xs), 1)))[1], [i, i])
        )
        for i in range(5)
    ]
    for t in callers:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in callers:
        t.join()
    assert sum(sizes) == 10 and max(sizes) <= 4
    worker.close()


def test_errors_reach_every_caller(worker: ModelWorker) -> None:
    def boom(items: list[str]) -> np.ndarray:
        raise ValueError("model failed")

    with pytest.raises(ValueError, match="model failed"):
        worker.batched(boom, ["a"])
    assert worker.call(lambda: "still alive") == "still alive"


def test_closed_worker_refuses_work() -> None:
    worker = ModelWorker()
    worker.call(lambda: None)
    worker.close()
    with pytest.raises(RuntimeError, match="closed"):
        worker.call(lambda: None)
