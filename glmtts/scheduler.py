"""One scheduler for device work, shared by the UI, the HTTP API and batch jobs.

Work runs in the caller's thread while it holds the single device slot. Waiters are served by
priority (interactive before batch), then in arrival order; the number of waiters is bounded, so a
full queue answers at once (HTTP 429) instead of hanging.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

INTERACTIVE = 0
BATCH = 1
DEFAULT_MAX_WAITING = 16
DEFAULT_WAIT_S = 300.0


class QueueFull(RuntimeError):
    """Too many requests are already waiting for the device."""

    def __init__(self, waiting: int, retry_after_s: int):
        super().__init__(f"The server is busy ({waiting} requests waiting); retry in {retry_after_s} s.")
        self.retry_after_s = retry_after_s


class QueueTimeout(RuntimeError):
    """A request waited longer than its limit for the device."""


class DeviceScheduler:
    """A priority-ordered, bounded waiting line in front of one device slot."""

    def __init__(self, max_waiting: int = DEFAULT_MAX_WAITING):
        self.max_waiting = max_waiting
        self._condition = threading.Condition()
        self._waiting: list[tuple[int, int]] = []  # heap of (priority, arrival)
        self._arrivals = itertools.count()
        self._owner: int | None = None  # thread id holding the slot
        self._depth = 0  # re-entry count of the owner
        self.last_work_s = 1.0  # duration of the last slot use, for Retry-After

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextmanager
    def slot(self, priority: int = INTERACTIVE, wait_s: float = DEFAULT_WAIT_S) -> Iterator[None]:
        me = threading.get_ident()
        with self._condition:
            if self._owner == me:  # nested use by the same request
                self._depth += 1
                reentered = True
            else:
                reentered = False
                self._wait_for_turn(me, priority, wait_s)
        started = time.perf_counter()
        try:
            yield
        finally:
            with self._condition:
                if reentered:
                    self._depth -= 1
                else:
                    self._owner = None
                    self.last_work_s = time.perf_counter() - started
                    self._condition.notify_all()

    def _wait_for_turn(self, me: int, priority: int, wait_s: float) -> None:
        if self._owner is not None and len(self._waiting) >= self.max_waiting:
            raise QueueFull(len(self._waiting), max(1, round(self.last_work_s * (len(self._waiting) + 1))))
        ticket = (priority, next(self._arrivals))
        heapq.heappush(self._waiting, ticket)
        deadline = time.monotonic() + wait_s
        while self._owner is not None or self._waiting[0] != ticket:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._waiting.remove(ticket)
                heapq.heapify(self._waiting)
                self._condition.notify_all()
                raise QueueTimeout(f"Waited {wait_s:.0f} s for the device; try again later.")
            self._condition.wait(remaining)
        heapq.heappop(self._waiting)
        self._owner = me
