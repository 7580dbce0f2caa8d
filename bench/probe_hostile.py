"""Issue 16's probe: what hostile clients cost everyone else, measured against the real app.

    python bench/probe_hostile.py [--ckpt DIR] [--device cpu]

Prints, for the app started fresh on a free port (embedded engine by default):
- the time of a 12-character request while 6 clients send 20,000-character texts and leave
  after their first byte (whole-file requests: they leave after 1 s);
- the CPU use of the app and its frontend process in the second that starts 2 s after a whole-file
  client left (about 0 when its synthesis was stopped; about 1 s a second when it runs on);
- the size of /metrics before and after 1,000 requests with made-up methods;
- the resident memory of the app and its children before, at the peak of and after all that.
Run the same script from an older checkout (copy it there) to get the figures before a change.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from typing import Self

from app_process import running_app

from glmtts.memory import rss_mib

HOSTILE_CLIENTS = 6
HOSTILE_TEXT = "1你" * 10_000  # 20,000 characters, the frontend's slowest kind in the issue
LONG_TEXT = "This sentence is long enough to keep the device busy for a while. " * 200  # 13,400 characters
SHORT_TEXT = "Hello there."
MADE_UP_METHODS = 1000
SHORT_REQUEST_LIMIT_S = 180


def leave_after_first_byte(url: str, text: str, stream: bool, whole_file_wait_s: float = 1.0) -> None:
    """Send a speech request and close the connection at its first byte (or after a second for a whole file)."""
    body = {"input": text, "voice": "libri_367", "response_format": "pcm", "stream": stream}
    try:
        timeout = httpx.Timeout(whole_file_wait_s if not stream else 120)
        with httpx.Client(timeout=timeout) as client, client.stream("POST", f"{url}/v1/audio/speech", json=body) as response:
            next(response.iter_bytes(), None)
    except httpx.HTTPError:
        pass  # the whole-file client times out by design: that is how it leaves


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (the text frontend's process) so far."""
    process = psutil.Process(pid)
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        times = member.cpu_times()
        total += times.user + times.system
    return total


def cpu_in(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - before


def wait_idle(pid: int, limit_s: float = 600) -> None:
    """Until the app and its children use under a tenth of a core for a second."""
    deadline = time.monotonic() + limit_s
    while cpu_in(pid, 1.0) > 0.1 and time.monotonic() < deadline:
        pass


def short_request_under_attack(url: str) -> float:
    attackers = [
        threading.Thread(target=leave_after_first_byte, args=(url, HOSTILE_TEXT, index % 2 == 0), daemon=True)
        for index in range(HOSTILE_CLIENTS)
    ]
    for attacker in attackers:
        attacker.start()
    time.sleep(0.5)  # the hostile requests are in
    started = time.perf_counter()
    body = {"input": SHORT_TEXT, "voice": "libri_367", "response_format": "pcm"}
    try:
        status = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=SHORT_REQUEST_LIMIT_S).status_code
    except httpx.TimeoutException:
        status = "none (timed out)"
    elapsed = time.perf_counter() - started
    print(f"  short request: HTTP {status} after {elapsed:.2f} s")
    for attacker in attackers:
        attacker.join(timeout=300)
    return elapsed


def busy_after_client_left(url: str, pid: int) -> float:
    wait_idle(pid)
    leave_after_first_byte(url, LONG_TEXT, stream=False, whole_file_wait_s=1.0)
    time.sleep(2.0)
    return cpu_in(pid, 1.0)


def metrics_growth(url: str) -> tuple[int, int]:
    before = len(httpx.get(f"{url}/metrics", timeout=30).content)
    with httpx.Client(timeout=30) as client:
        for index in range(MADE_UP_METHODS):
            try:
                client.request(f"M{index}X", f"{url}/health")
            except httpx.HTTPError:
                pass
    return before, len(httpx.get(f"{url}/metrics", timeout=30).content)


class PeakRss:
    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mib(self.pid, children=True))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    socket.setdefaulttimeout(300)
    with running_app(args.ckpt, args.device) as (process, url, ready_s):
        print(f"app ready in {ready_s:.1f} s")
        before = rss_mib(process.pid, children=True)
        with PeakRss(process.pid) as peak:
            metrics_before, metrics_after = metrics_growth(url)
            busy_s = busy_after_client_left(url, process.pid)
            wait_idle(process.pid)
            print(f"{HOSTILE_CLIENTS} clients send 20,000-character texts and leave:")
            short_s = short_request_under_attack(url)
        after = rss_mib(process.pid, children=True)
    print()
    print("| figure | value |")
    print("| --- | ---: |")
    print(f"| short request while {HOSTILE_CLIENTS} clients send 20,000 characters and leave | {short_s:.2f} s |")
    print(f"| CPU of the app and its children in the second from 2 s after a whole-file client left | {busy_s:.2f} s of 1 s |")
    print(f"| /metrics before, after {MADE_UP_METHODS} made-up methods | {metrics_before:,} B, {metrics_after:,} B |")
    print(f"| RSS before, peak, after (MiB, app and children) | {before:.0f}, {max(peak.peak, before):.0f}, {after:.0f} |")


if __name__ == "__main__":
    main()
