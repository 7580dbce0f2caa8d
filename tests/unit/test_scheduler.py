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


def test_interactive_waiters_go_before_batch_waiters():
    scheduler = DeviceScheduler()
    release = threading.Event()
    holder = hold_slot(scheduler, release)
    order: list[str] = []

    def waiter(name, priority):
        with scheduler.slot(priority):
            order.append(name)

    threads = []
    for name, priority in [("batch1", BATCH), ("batch2", BATCH), ("ui", INTERACTIVE)]:
        threads.append(threading.Thread(target=waiter, args=(name, priority)))
        threads[-1].start()
        wait_until(lambda n=len(threads): scheduler.waiting == n)
    release.set()
    for thread in [holder, *threads]:
        thread.join(5)
    assert order == ["ui", "batch1", "batch2"]


def test_full_queue_answers_at_once_with_retry_after():
    scheduler = DeviceScheduler(max_waiting=1)
    release = threading.Event()
    holder = hold_slot(scheduler, release)
    waiter = threading.Thread(target=lambda: scheduler.slot().__enter__())
    waiter.start()
    wait_until(lambda: scheduler.waiting == 1)
    started = time.monotonic()
    with pytest.raises(QueueFull) as caught:
        with scheduler.slot():
            pass
    assert time.monotonic() - started < 0.5 and caught.value.retry_after_s >= 1
    release.set()
    holder.join(5)
    waiter.join(5)


def test_waiting_past_the_limit_gives_up_and_leaves_the_line():
    scheduler = DeviceScheduler()
    release = threading.Event()
    holder = hold_slot(scheduler, release)
    with pytest.raises(QueueTimeout):
        with scheduler.slot(wait_s=0.1):
            pass
    assert scheduler.waiting == 0
    release.set()
    holder.join(5)
    with scheduler.slot(wait_s=1):
        pass


def test_the_holder_may_reenter():
    scheduler = DeviceScheduler()
    with scheduler.slot():
        with scheduler.slot():
            pass
    with scheduler.slot(wait_s=0.1):
        pass
