"""The app started as a real process on a free loopback port, shared by the server tests."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 600
RATE = 24000
POLL_S = 0.2
FIRST_SENTENCE = "Warm start means the first request is as fast as the hundredth."


@dataclass
class RunningApp:
    url: str
    outputs: Path
    ready_codes: list[int]
    wyoming_port: int = 0  # Home Assistant's protocol beside HTTP (tests/server/test_wyoming.py)
    first_latency_s: float = 0.0
    warm_latencies_s: list[float] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def speak(url: str, text: str, **extra) -> httpx.Response:
    """POST /v1/audio/speech; wav unless `response_format` says otherwise (the API's default is mp3, as OpenAI's)."""
    return httpx.post(f"{url}/v1/audio/speech", json={"input": text, "response_format": "wav", **extra}, timeout=300)


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL_S)
    pytest.fail(f"timed out waiting for {what}")


def is_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def launched_app(outputs: Path, *args: str, **env: str) -> Iterator[tuple[str, list[int]]]:
    """Run app.py on a free loopback port until it is ready; yield its URL and the /ready codes seen on the way."""
    port = free_port()
    log_path = outputs / "app.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port), "--device", "cpu", "--outputs", str(outputs), *args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GLMTTS_CKPT": "", **env},
        )
        url = f"http://127.0.0.1:{port}"
        codes: list[int] = []
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                assert process.poll() is None, log_path.read_text()
                try:
                    codes.append(httpx.get(f"{url}/ready", timeout=5).status_code)
                except httpx.TransportError:
                    pass
                if codes and codes[-1] == 200:
                    break
                time.sleep(0.2)
            else:
                pytest.fail("the app did not become ready:\n" + log_path.read_text()[-3000:])
            yield url, codes
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    outputs = tmp_path_factory.mktemp("app-outputs")
    wyoming_port = free_port()
    with launched_app(outputs, GLMTTS_WYOMING_PORT=str(wyoming_port)) as (url, codes):
        running = RunningApp(url, outputs, codes, wyoming_port)
        # The very first synthesis request of the process, then the warm ones, same sentence.
        start = time.perf_counter()
        assert speak(url, FIRST_SENTENCE).status_code == 200
        running.first_latency_s = time.perf_counter() - start
        for _ in range(5):
            start = time.perf_counter()
            assert speak(url, FIRST_SENTENCE).status_code == 200
            running.warm_latencies_s.append(time.perf_counter() - start)
        yield running
