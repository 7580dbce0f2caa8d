"""Start app.py as the benchmarks need it: its own process, a free loopback port, temporary outputs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
# How often /ready is asked during start-up: every 20 ms would be 50 requests a second to a process
# busy starting, which slows what is measured.
READY_POLL_S = 0.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_app(
    ckpt: str, device: str, *extra_args: str, outputs: Path | None = None
) -> Iterator[tuple[subprocess.Popen, str, float]]:
    """Yield (process, base url, seconds from process start to /ready == 200); stop it afterwards.

    `outputs`: the app's outputs folder (kept); by default a temporary one."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as scratch:
        outputs = outputs or Path(scratch)
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port), "--device", device, "--outputs", str(outputs), *extra_args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # MALLOC_ARENA_MAX as start_app.sh and the deployment files set it.
            env={"MALLOC_ARENA_MAX": "2", **os.environ, "GLMTTS_CKPT": ckpt, "ORT_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1"},
        )
        try:
            while True:
                if process.poll() is not None:
                    raise SystemExit("app.py exited before it was ready")
                try:
                    if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(READY_POLL_S)
            yield process, url, time.perf_counter() - started
        finally:
            process.terminate()
            process.wait(timeout=30)
