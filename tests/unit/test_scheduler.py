"""The device scheduler: priority order, bounded waiting, time limits, re-entry."""

import threading
import time

import pytest

from glmtts.scheduler import BATCH, INTERACTIVE, DeviceScheduler, QueueFull, QueueTimeout


def hold_slot(scheduler: DeviceScheduler, release: threading.Event) -> threading.Thread:
    entered = threading.Event()

    def worker():
        with scheduler.slot():
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    entered.wait(5)
    return thread


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.005)


@pytest.mark.parametrize("capacity", [1, 2])
def test_interactive_waiters_go_before_batch_waiters(capacity):
    scheduler = DeviceScheduler(capacity=capacity)
    releases = [threading.Event() for _ in range(capacity)]
    holders = [hold_slot(scheduler, release) for release in releases]
    order: list[str] = []

    def waiter(name, priority):
        with scheduler.slot(priority):
            order.append(name)

    threads = []
    for name, priority in [("batch1", BATCH), ("batch2", BATCH), ("ui", INTERACTIVE)]:
        threads.append(threading.Thread(target=waiter, args=(name, priority)))
        threads[-1].start()
        wait_until(lambda n=len(threads): scheduler.waiting == n)
    releases[0].set()  # one free slot: the waiters pass through it one at a time
    for thread in threads:
        thread.join(5)
    assert order == ["ui", "batch1", "batch2"]
    for release in releases:
        release.set()
    for thread in holders:
        thread.join(5)


def test_full_queue_answers_at_once_with_retry_after():
    scheduler = DeviceScheduler(max_waiting=1)
    release = threading.Event()
    holder = hold_slot(scheduler, release)
    waiter = threading.Thread(target=lambda: scheduler.slot().__enter__())
    waiter.start()
    wait_until(lambda: scheduler.waiting == 1)
    started = time.monotonic()
    with pytest.raises(QueueFull) as caught, scheduler.slot():
        pass
    assert time.monotonic() - started < 0.5 and caught.value.retry_after_s >= 1
    release.set()
    holder.join(5)
    waiter.join(5)


def test_waiting_past_the_limit_gives_up_and_leaves_the_line():
    scheduler = DeviceScheduler()
    release = threading.Event()
    holder = hold_slot(scheduler, release)
    with pytest.raises(QueueTimeout), scheduler.slot(wait_s=0.1):
        pass
    assert scheduler.waiting == 0
    release.set()
    holder.join(5)
    with scheduler.slot(wait_s=1):
        pass


def test_the_holder_may_reenter():
    scheduler = DeviceScheduler()
    with scheduler.slot(), scheduler.slot():
        pass
    with scheduler.slot(wait_s=0.1):
        pass


def test_capacity_admits_that_many_holders_and_queues_the_next():
    scheduler = DeviceScheduler(capacity=2)
    releases = [threading.Event(), threading.Event()]
    holders = [hold_slot(scheduler, release) for release in releases]
    assert scheduler.holding == 2
    entered = threading.Event()

    def third():
        with scheduler.slot():
            entered.set()

    waiter = threading.Thread(target=third)
    waiter.start()
    wait_until(lambda: scheduler.waiting == 1)
    assert not entered.wait(0.1)
    releases[0].set()  # one slot frees up: the waiter takes it while the other holder stays
    assert entered.wait(5)
    releases[1].set()
    for thread in [*holders, waiter]:
        thread.join(5)


def test_exclusive_slot_waits_for_holders_and_keeps_later_requests_out():
    scheduler = DeviceScheduler(capacity=3)
    releases = [threading.Event(), threading.Event()]
    holders = [hold_slot(scheduler, release) for release in releases]
    order: list[str] = []
    exclusive_in, exclusive_release = threading.Event(), threading.Event()

    def exclusive():
        with scheduler.slot(exclusive=True):
            order.append(f"exclusive alone={scheduler.holding == 1}")
            exclusive_in.set()
            exclusive_release.wait(10)

    def shared():
        with scheduler.slot():
            order.append("shared")

    exclusive_thread = threading.Thread(target=exclusive)
    exclusive_thread.start()
    wait_until(lambda: scheduler.waiting == 1)
    shared_thread = threading.Thread(target=shared)  # a slot is free, but the exclusive waiter is ahead
    shared_thread.start()
    wait_until(lambda: scheduler.waiting == 2)
    assert not exclusive_in.wait(0.1) and order == []
    for release in releases:
        release.set()
    assert exclusive_in.wait(5)
    shared_thread.join(0.1)
    assert shared_thread.is_alive() and scheduler.waiting == 1 and order == ["exclusive alone=True"]
    exclusive_release.set()
    for thread in [*holders, exclusive_thread, shared_thread]:
        thread.join(5)
    assert order == ["exclusive alone=True", "shared"]


def test_a_shared_holder_cannot_reenter_exclusively():
    scheduler = DeviceScheduler(capacity=2)
    with scheduler.slot(exclusive=True), scheduler.slot():
        pass
    with scheduler.slot(), pytest.raises(RuntimeError, match="exclusive"), scheduler.slot(exclusive=True):
        pass
    assert scheduler.holding == 0
