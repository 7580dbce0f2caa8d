"""The redis-server the shared-state tests run (unit and server), and the persistence they rely on.

`RedisServer` starts Debian's redis-server on a free loopback port with its append-only file in a
temporary folder, synced at every write, so that a kill -9 and a start() keep everything Redis
acknowledged. Skipped only where redis-server is not installed (.ci/run installs it).
"""

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

redis = pytest.importorskip("redis", reason="the redis client is not installed (pip install redis)")

START_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """redis-server on a free loopback port, persisting to an append-only file in `folder`
    (synced at every write), so that a kill -9 then start() loses nothing it acknowledged."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"]
        command += ["--appendfsync", "always", "--dir", str(self.folder)]
        with (self.folder / "redis.log").open("a") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.process.poll() is None, (self.folder / "redis.log").read_text()
            try:
                if client.ping():
                    break
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        return self

    def kill(self) -> None:
        """kill -9: no shutdown, no final save."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def test_acknowledged_writes_survive_kill_9_and_restart(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    try:
        client = redis.Redis(port=server.port)
        client.xadd("s", {"n": "1"})
        client.hset("h", "k", "v")
        server.kill()
        server.start()
        assert client.xlen("s") == 1 and client.hget("h", "k") == b"v"
    finally:
        server.stop()
