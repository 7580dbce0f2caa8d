"""Device time spent for a whole-file client that left: starts the app (from this checkout, or the one
given as --root, e.g. a worktree of an older commit), sends a long text, closes the connection once
the device is busy, and prints how long the device stays busy afterwards and whether it is busy 2 s
after (the issue's target: 0, within one segment).

    python bench/probe_cancel.py [--root /tmp/old] [--sentences 200]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

POLL_S = 0.05
QUIET_S = 2.0  # the device idle this long in a row: the synthesis is over
WATCH_LIMIT_S = 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def busy(url: str) -> bool:
    state = httpx.get(f"{url}/v1/status", timeout=10).json()
    return bool(state["device_busy"] or state["queue_waiting"] or state.get("syntheses_active"))


def leave_and_watch(url: str, text: str) -> tuple[float, bool]:
    """(seconds the device stayed busy after the client left, busy 2 s after it left)."""
    port = int(url.rsplit(":", 1)[1])
    data = json.dumps({"input": text, "response_format": "wav"}).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    head = f"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    sock.sendall(head.encode() + data)
    deadline = time.monotonic() + 60
    while not busy(url):
        if time.monotonic() > deadline:
            raise SystemExit("the synthesis never started")
        time.sleep(POLL_S)
    sock.close()
    left = last_busy = time.monotonic()
    busy_at_2s = None
    while time.monotonic() - last_busy < QUIET_S and time.monotonic() - left < WATCH_LIMIT_S:
        now = time.monotonic()
        if busy(url):
            last_busy = now
        if busy_at_2s is None and now - left >= 2.0:
            busy_at_2s = last_busy == now
        time.sleep(POLL_S)
    return last_busy - left, bool(busy_at_2s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--sentences", type=int, default=200)
    args = parser.parse_args()
    text = " ".join(
        f"This is sentence number {i} of a long text that keeps the device busy for a while." for i in range(args.sentences)
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as outputs:
        env = {**os.environ, "GLMTTS_CKPT": "", "ORT_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, "app.py", "--port", str(port), "--device", "cpu", "--outputs", outputs]
        app = subprocess.Popen(command, cwd=args.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 600
            while True:
                try:
                    if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if app.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the app did not become ready")
                time.sleep(0.2)
            busy_s, busy_at_2s = leave_and_watch(url, text)
        finally:
            app.terminate()
            app.wait(30)
    print(f"{args.root}: {len(text)} characters, whole file, client left once the device was busy:")
    more = " or more (still busy when the watch ended)" if busy_s > WATCH_LIMIT_S - QUIET_S else ""
    print(f"  device busy {busy_s:.2f} s{more} after the client left; busy 2 s after: {int(busy_at_2s)}")


if __name__ == "__main__":
    main()
