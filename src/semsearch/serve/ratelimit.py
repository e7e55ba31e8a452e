"""A per-client rate limit shared by every worker process of a server: token buckets in shared memory.

The table is created before gunicorn forks its workers, so they all count against the same buckets; a client cannot
get N times its rate by landing on N workers. Clients hash into a fixed number of slots; two clients that share a
slot reset each other's bucket, which can only make the limit more lenient, never refuse a client that is within
its rate.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import time
from dataclasses import dataclass

_SLOTS = 4096
_FIELDS = 3  # key hash, tokens, last refill (monotonic seconds)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int
    """Whole seconds until one request would be allowed (0 when allowed)."""


class RateLimiter:
    """``rate`` requests per second per client, with bursts of up to ``burst`` requests."""

    def __init__(self, rate: float, burst: int | None = None) -> None:
        self.rate = rate
        self.burst = burst or max(1, math.ceil(2 * rate))
        # Shared memory plus one lock (a POSIX semaphore): both survive fork.
        self._table = multiprocessing.get_context("fork").Array("d", _SLOTS * _FIELDS, lock=True)

    def acquire(self, client: str, now: float | None = None) -> Decision:
        now = time.monotonic() if now is None else now
        key = _key(client)
        slot = (int(key) % _SLOTS) * _FIELDS
        with self._table.get_lock():
            table = self._table.get_obj()
            if table[slot] != key:
                table[slot], table[slot + 1], table[slot + 2] = key, float(self.burst), now
            tokens = min(float(self.burst), table[slot + 1] + (now - table[slot + 2]) * self.rate)
            table[slot + 2] = now
            if tokens >= 1.0:
                table[slot + 1] = tokens - 1.0
                return Decision(True, 0)
            table[slot + 1] = tokens
        return Decision(False, max(1, math.ceil((1.0 - tokens) / self.rate)))


def _key(client: str) -> float:
    """A non-zero 52-bit hash, exact as a float (an empty slot holds 0)."""
    digest = int.from_bytes(hashlib.blake2b(client.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
    return float((digest >> 12) | 1)
