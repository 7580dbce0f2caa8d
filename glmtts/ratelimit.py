"""Per-client rate limits: a token bucket per client, in this process or (glmtts.cluster.ratelimit) in Redis.

The service builds the one limiter (with its own Redis client when replicas share state) and hands it
to the HTTP layer's middleware (glmtts.http.security), which decides what counts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

MAX_TRACKED_CLIENTS = 10_000  # buckets kept before idle (full) ones are dropped
SECONDS_PER_MINUTE = 60.0


class Limiter(Protocol):
    """What the middleware needs of a rate limiter; `shared` ones make a network call in `acquire`."""

    per_minute: int
    shared: bool

    def acquire(self, client: str) -> float: ...


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per client: `per_minute` requests a minute, in bursts of up to `per_minute`."""

    shared = False

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self._rate = per_minute / SECONDS_PER_MINUTE  # tokens per second
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, client: str) -> float:
        """Take one token for `client`: 0.0 when allowed, else the seconds until a token is due."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                if len(self._buckets) >= MAX_TRACKED_CLIENTS:
                    self._drop_idle(now)
                bucket = self._buckets[client] = _Bucket(float(self.per_minute), now)
            bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self._rate

    def _drop_idle(self, now: float) -> None:
        full_after_s = self.per_minute / self._rate
        for client in [c for c, b in self._buckets.items() if now - b.updated >= full_after_s]:
            del self._buckets[client]
