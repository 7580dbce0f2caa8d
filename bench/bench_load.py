"""Benchmark the app under load: throughput and latency at several concurrencies, streaming time to
first audio, and memory after a soak.

    python bench/bench_load.py [--ckpt DIR] [--device cpu] [--clients 1,4,16] [--soak-minutes 10]

Starts `app.py` as a process on a free loopback port and talks to it over HTTP only. Every load level
is bounded in requests and in time; a request that fails (a 429 included) is counted as an error.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx
import psutil
from app_process import running_app

MIXED_REQUESTS = [
    {"input": "The quick brown fox jumps over the lazy dog."},
    {"input": "今天天气很好，我们一起去公园散步吧。", "voice": "libri_1688"},
    {"input": "我们明天用 Python 写一个 demo 吧。"},
    {"input": "Please call me back at five thirty this afternoon.", "voice": "libri_2414"},
]
LONG_TEXT = " ".join(
    f"Paragraph {i}: the committee met on Tuesday to review the results, and everyone agreed to continue." for i in range(16)
)
REQUESTS_PER_CLIENT = 4
MIN_REQUESTS_PER_LEVEL = 12
STREAM_REPEATS = 3
MEMORY_SAMPLE_S = 15.0


@dataclass
class LoadResult:
    clients: int
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def per_minute(self) -> float:
        return 60.0 * len(self.latencies) / self.wall_s if self.wall_s else 0.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] if ordered else float("nan")


def run_load(url: str, clients: int, total: int, limit_s: float) -> LoadResult:
    """`clients` threads share `total` requests (mixed texts), each stopping once `limit_s` has passed."""
    result = LoadResult(clients)
    lock = threading.Lock()
    remaining = [total]
    deadline = time.monotonic() + limit_s

    def client(number: int) -> None:
        with httpx.Client(timeout=600) as http:
            index = 0
            while time.monotonic() < deadline:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                body = MIXED_REQUESTS[(number + index) % len(MIXED_REQUESTS)]
                index += 1
                start = time.perf_counter()
                try:
                    response = http.post(f"{url}/v1/audio/speech", json=body)
                    error = "" if response.status_code == 200 else f"{response.status_code}"
                except httpx.HTTPError as failure:
                    error = type(failure).__name__
                with lock:
                    if error:
                        result.errors.append(error)
                    else:
                        result.latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.wall_s = time.perf_counter() - started
    return result


def time_stream(url: str, text: str) -> tuple[float, float, int]:
    """Seconds to the first audio bytes and to the last, and the number of segments, streaming pcm."""
    start = time.perf_counter()
    first = 0.0
    with httpx.stream(
        "POST", f"{url}/v1/audio/speech", json={"input": text, "stream": True, "response_format": "pcm"}, timeout=600
    ) as r:
        r.raise_for_status()
        for _ in r.iter_raw():
            first = first or time.perf_counter() - start
        segments = int(r.headers["x-segments"])
    return first, time.perf_counter() - start, segments


def time_whole(url: str, text: str) -> float:
    start = time.perf_counter()
    httpx.post(f"{url}/v1/audio/speech", json={"input": text}, timeout=600).raise_for_status()
    return time.perf_counter() - start


def soak(url: str, process: psutil.Process, minutes: float) -> tuple[LoadResult, list[float]]:
    """Four clients for `minutes` (mixed texts, some long and streamed); RSS sampled as it goes."""
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(MEMORY_SAMPLE_S):
            samples.append(process.memory_info().rss / 2**20)

    sampler = threading.Thread(target=sample)
    sampler.start()
    limit_s = minutes * 60
    stream_thread = threading.Thread(target=lambda: _stream_until(url, time.monotonic() + limit_s))
    stream_thread.start()
    result = run_load(url, 3, sys.maxsize, limit_s)
    stream_thread.join()
    done.set()
    sampler.join()
    return result, samples


def _stream_until(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        time_stream(url, LONG_TEXT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated concurrency levels")
    parser.add_argument("--level-seconds", type=float, default=120.0, help="time cap per load level")
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    args = parser.parse_args()
    levels = [int(n) for n in args.clients.split(",")]

    with running_app(args.ckpt, args.device, "--max-queue", str(max(levels))) as (app, url, _):
        process = psutil.Process(app.pid)
        status = httpx.get(f"{url}/v1/status").json()
        warm_mib = process.memory_info().rss / 2**20

        loads = [run_load(url, n, max(MIN_REQUESTS_PER_LEVEL, REQUESTS_PER_CLIENT * n), args.level_seconds) for n in levels]
        streamed, whole = [], []
        for _ in range(STREAM_REPEATS):  # interleaved, so drift in machine load hits both alike
            streamed.append(time_stream(url, LONG_TEXT))
            whole.append(time_whole(url, LONG_TEXT))
        after_load_mib = process.memory_info().rss / 2**20
        soaked, samples = soak(url, process, args.soak_minutes)
        after_soak_mib = process.memory_info().rss / 2**20

        print(f"engine: {status['engine']} on {status['device']}; {os.cpu_count()} cores; loopback; queue limit {max(levels)}")
        print()
        print("| clients | requests | errors | requests/min | p50 latency | p95 latency |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for load in loads:
            print(
                f"| {load.clients} | {len(load.latencies)} | {len(load.errors)} | {load.per_minute:.1f} | "
                f"{statistics.median(load.latencies):.2f} s | {percentile(load.latencies, 0.95):.2f} s |"
            )
        print()
        first = statistics.median(s[0] for s in streamed)
        last = statistics.median(s[1] for s in streamed)
        print(f"long text ({len(LONG_TEXT)} characters, {streamed[0][2]} segments), median of {STREAM_REPEATS}:")
        print(f"| streamed: first audio | {first:.2f} s |")
        print(f"| streamed: last audio | {last:.2f} s |")
        print(f"| whole file (not streamed) | {statistics.median(whole):.2f} s |")
        print()
        print(f"soak: {args.soak_minutes:g} min, 3 clients (mixed texts) + 1 streaming the long text")
        print(f"| requests | {len(soaked.latencies)} ok, {len(soaked.errors)} errors, {soaked.per_minute:.1f}/min |")
        print(f"| RSS after warm-up | {warm_mib:.0f} MiB |")
        print(f"| RSS after the load levels | {after_load_mib:.0f} MiB |")
        print(f"| RSS after the soak | {after_soak_mib:.0f} MiB ({after_soak_mib - warm_mib:+.0f} MiB vs warm-up) |")
        if samples:
            half = len(samples) // 2
            print(
                f"| RSS during the soak | min {min(samples):.0f}, max {max(samples):.0f} MiB; first half mean "
                f"{statistics.mean(samples[:half] or samples):.0f}, second half mean {statistics.mean(samples[half:]):.0f} MiB |"
            )
        errors = sorted({e for load in [*loads, soaked] for e in load.errors})
        if errors:
            print(f"errors seen: {', '.join(errors)}")


if __name__ == "__main__":
    main()
