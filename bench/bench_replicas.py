"""Benchmark batch throughput with one replica and with two sharing a Redis, in one run.

    python bench/bench_replicas.py [--items 40] [--device cpu] [--no-local]

Starts a redis-server (Debian's, on a free loopback port, AOF in a temporary folder), then:
  local   one replica without Redis (the single-machine default), for reference;
  1 x     one replica with GLMTTS_REDIS_URL;
  2 x     a second replica on the same Redis and the same outputs folder, both working the job;
and for each a job of `--items` lines submitted over HTTP, timed from the submit to `done`.
Prints items a minute, the ratio 2 x / 1 x, and how many items each replica made. On a machine
with few cores the replicas share the same cores, so the ratio is bounded by them: with one GPU
per replica it is bounded by the number of replicas instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from app_process import ROOT, free_port

SENTENCE = "This sentence is long enough that each batch item takes a moment to synthesize on the processor."
POLL_S = 0.5
REDIS_START_S = 15.0


def batch(count: int, prefix: str) -> str:
    prompt = str(ROOT / "examples" / "prompt" / "libri_367.flac")
    lines = [
        {"uttid": f"{prefix}{i:03d}", "prompt_text": "", "prompt_speech": prompt, "syn_text": f"Item {i}. {SENTENCE}"}
        for i in range(count)
    ]
    return "\n".join(json.dumps(line) for line in lines)


def run_job(url: str, count: int, prefix: str) -> tuple[float, Counter]:
    """Submit a job of `count` items; (seconds from submit to done, items per replica)."""
    with httpx.Client(base_url=url, timeout=60) as client:  # one connection: polling costs the replicas next to nothing
        started = time.perf_counter()
        response = client.post("/v1/batch", json={"jsonl": batch(count, prefix), "name": prefix})
        response.raise_for_status()
        job_id = response.json()["id"]
        while (state := client.get(f"/v1/batch/{job_id}").json())["status"] in ("queued", "running"):
            time.sleep(POLL_S)
        seconds = time.perf_counter() - started
    if state["status"] != "done" or state["ok"] != count:
        raise SystemExit(f"job {job_id} ended {state['status']} with {state['ok']} of {count} ok")
    return seconds, Counter(item.get("replica") for item in state["items"])


@contextmanager
def replica(outputs: Path, log: Path, device: str, ckpt: str, **env: str) -> Iterator[tuple[str, float]]:
    """app.py on a free port until it is ready: (its URL, seconds to ready); stopped afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port), "--device", device, "--outputs", str(outputs)],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={
                "MALLOC_ARENA_MAX": "2",
                **os.environ,
                "GLMTTS_CKPT": ckpt,
                "ORT_DISABLE_TELEMETRY": "1",
                "HF_HUB_OFFLINE": "1",
                **env,
            },
        )
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"app.py exited before it was ready; see {log}:\n" + log.read_text()[-2000:])
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(POLL_S)
        yield url, time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=60)


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"]
    command += ["--appendfsync", "always", "--dir", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import redis

    client = redis.Redis(port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + REDIS_START_S
    while True:
        try:
            if client.ping():
                return process, f"redis://127.0.0.1:{port}/0"
        except redis.exceptions.RedisError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.05)


def report(name: str, count: int, seconds: float, per_replica: Counter) -> float:
    rate = count / seconds * 60
    made = ", ".join(f"{replica}: {items}" for replica, items in sorted(per_replica.items()))
    print(f"{name:<26}{seconds:8.1f} s {rate:8.1f} items/min   ({made})", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ckpt", default="")
    parser.add_argument("--no-local", action="store_true", help="skip the one-replica run without Redis")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        scratch = Path(scratch)
        if not args.no_local:
            with replica(scratch / "local", scratch / "local.log", args.device, args.ckpt) as (url, ready_s):
                print(f"local replica ready in {ready_s:.1f} s", flush=True)
                report("local, 1 replica", args.items, *run_job(url, args.items, "local"))

        (scratch / "redis").mkdir()
        redis_process, redis_url = start_redis(scratch / "redis")
        stack.callback(redis_process.terminate)
        shared = scratch / "shared"  # one outputs folder for both replicas
        url_a, ready_a = stack.enter_context(
            replica(shared, scratch / "a.log", args.device, args.ckpt, GLMTTS_REDIS_URL=redis_url)
        )
        print(f"replica A ready in {ready_a:.1f} s", flush=True)
        one = report("redis, 1 replica", args.items, *run_job(url_a, args.items, "one"))
        url_b, ready_b = stack.enter_context(
            replica(shared, scratch / "b.log", args.device, args.ckpt, GLMTTS_REDIS_URL=redis_url)
        )
        print(f"replica B ready in {ready_b:.1f} s (built-in analyses read from the shared folder)", flush=True)
        two = report("redis, 2 replicas", args.items, *run_job(url_b, args.items, "two"))
        print(f"{'ratio 2 / 1 replicas':<26}{two / one:8.2f}")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
