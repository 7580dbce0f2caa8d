"""One scheduler for device work, shared by the UI, the HTTP API and batch jobs.

Work runs in the caller's thread while it holds a device slot. Up to `capacity` threads hold a slot
at once (an engine that batches concurrent requests asks for more than one); an exclusive slot
(warm-up, clearing caches) has the device alone. Waiters are served by priority (interactive before
batch), then in arrival order; the number of waiters is bounded, so a full queue answers at once
(HTTP 429) instead of hanging.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from glmtts.types import CancelToken

INTERACTIVE = 0
BATCH = 1
DEFAULT_MAX_WAITING = 16
DEFAULT_WAIT_S = 300.0
CANCEL_POLL_S = 0.1  # how often a waiter looks at its cancel token: a client that left gives up its place


class QueueFull(RuntimeError):
    """Too many requests are already waiting for the device."""

    def __init__(self, waiting: int, retry_after_s: int):
        super().__init__(f"The server is busy ({waiting} requests waiting); retry in {retry_after_s} s.")
        self.retry_after_s = retry_after_s


class QueueTimeout(RuntimeError):
    """A request waited longer than its limit for the device."""


class DeviceScheduler:
    """A priority-ordered, bounded waiting line in front of `capacity` device slots.

    Slots are re-entrant per thread. Only the head of the line may take a free slot, so an exclusive
    waiter at the head keeps later requests out until the holders have left.
    """

    def __init__(self, max_waiting: int = DEFAULT_MAX_WAITING, capacity: int = 1):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.max_waiting = max_waiting
        self._capacity = capacity
        self._condition = threading.Condition()
        self._waiting: list[tuple[int, int]] = []  # heap of (priority, arrival)
        self._arrivals = itertools.count()
        self._holders: dict[int, int] = {}  # thread id -> re-entry depth (0 for a first entry)
        self._exclusive_holder: int | None = None  # thread id holding the device alone
        self.last_work_s = 1.0  # duration of the last slot use, for Retry-After

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def holding(self) -> int:
        return len(self._holders)

    @property
    def capacity(self) -> int:
        return self._capacity

    @capacity.setter
    def capacity(self, capacity: int) -> None:
        """Change how many may hold a slot at once (the engine's batch size is known after loading)."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        with self._condition:
            self._capacity = capacity
            self._condition.notify_all()

    @contextmanager
    def slot(
        self,
        priority: int = INTERACTIVE,
        wait_s: float = DEFAULT_WAIT_S,
        exclusive: bool = False,
        queue_limit: bool = True,
        cancel: CancelToken | None = None,
    ) -> Iterator[None]:
        """Hold a device slot; `exclusive` waits until no one else holds one and keeps others out meanwhile.

        `queue_limit=False` waits even when the line is full: for the next segment of a request
        that was already admitted. A waiter whose `cancel` token is set leaves the line (raising it)."""
        me = threading.get_ident()
        with self._condition:
            reentered = me in self._holders
            if reentered:  # nested use by the same request
                if exclusive and self._exclusive_holder != me:
                    raise RuntimeError("a shared slot cannot become exclusive; take the exclusive slot first")
                self._holders[me] += 1
            else:
                self._wait_for_turn(me, priority, wait_s, exclusive, queue_limit, cancel)
        started = time.perf_counter()
        try:
            yield
        finally:
            with self._condition:
                if reentered:
                    self._holders[me] -= 1
                else:
                    del self._holders[me]
                    if self._exclusive_holder == me:
                        self._exclusive_holder = None
                    self.last_work_s = time.perf_counter() - started
                    self._condition.notify_all()

    def _has_room(self, exclusive: bool) -> bool:
        if self._exclusive_holder is not None:
            return False
        return not self._holders if exclusive else len(self._holders) < self._capacity

    def _wait_for_turn(
        self, me: int, priority: int, wait_s: float, exclusive: bool, queue_limit: bool, cancel: CancelToken | None
    ) -> None:
        if queue_limit and not self._has_room(exclusive) and len(self._waiting) >= self.max_waiting:
            rounds = (len(self._waiting) + 1) / self._capacity  # slot uses ahead of this request
            raise QueueFull(len(self._waiting), max(1, round(self.last_work_s * rounds)))
        ticket = (priority, next(self._arrivals))
        heapq.heappush(self._waiting, ticket)
        deadline = time.monotonic() + wait_s
        try:
            while not self._has_room(exclusive) or self._waiting[0] != ticket:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QueueTimeout(f"Waited {wait_s:.0f} s for the device; try again later.")
                if cancel is not None:
                    cancel.check()
                self._condition.wait(remaining if cancel is None else min(remaining, CANCEL_POLL_S))
        except BaseException:  # out of the line: the next waiter may be first now
            self._waiting.remove(ticket)
            heapq.heapify(self._waiting)
            self._condition.notify_all()
            raise
        heapq.heappop(self._waiting)
        self._holders[me] = 0
        if exclusive:
            self._exclusive_holder = me
        if self._waiting:  # the next in line may fit in a slot that is still free
            self._condition.notify_all()
