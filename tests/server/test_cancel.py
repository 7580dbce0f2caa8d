"""One cancel path: a client that leaves stops its synthesis, whatever it asked for and whenever it leaves.

First the speech route on a real uvicorn server over a stand-in pipeline whose segments last until
they are cancelled (so each wait is seen exactly); then the app as a process, where the state read
is `/v1/status`'s `syntheses_active`. Plus the text a voice cannot read: named, or refused.
"""

import io
import json
import socket
import threading
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import soundfile as sf
import uvicorn
from fastapi import FastAPI

from glmtts.http.errors import install_error_handlers
from glmtts.http.speech import speech_router
from glmtts.session import SpeechSession
from glmtts.types import AudioChunk, Cancelled, Segment

from .conftest import free_port, speak, wait_for

RATE = 24000
WAIT_S = 10.0
GONE_WITHIN_S = 5.0  # a client that left: its synthesis stops within one segment (a fraction of a second here)


def sentences(count: int) -> str:
    return " ".join(f"This is sentence number {i} of a long text that keeps the device busy for a while." for i in range(count))


# ----------------------------------------------------------------------------- the route over a stand-in
class HeldPipeline:
    """Three segments; those from `hold_from` on last until the request's token is cancelled (or WAIT_S)."""

    engine = SimpleNamespace(name="held", speed_range=(0.5, 2.0), sample_rates=(RATE,))

    def __init__(self, hold_from: int | None):
        self.hold_from = hold_from
        self.holding = threading.Event()
        self.cancelled = threading.Event()

    def synthesize_stream(self, request, cancel):
        for index in range(3):
            if self.hold_from is not None and index >= self.hold_from:
                self.holding.set()
                self._hold(cancel)
            segment = Segment(f"s{index}", (), f"s{index}")
            yield AudioChunk(index, 3, np.full(2400, 0.1, dtype=np.float32), RATE, segment, {"synthesis": 0.01})

    def _hold(self, cancel) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                cancel.check()
            except Cancelled:
                self.cancelled.set()
                raise
            time.sleep(0.005)


@pytest.fixture(scope="module")
def route():
    """The speech router on a real server (real disconnects); `route.pipeline` is set per test."""
    holder = SimpleNamespace(pipeline=None)
    service = SimpleNamespace(
        engine=HeldPipeline.engine,
        start_speech=lambda request, whole=False, keep=False: SpeechSession(holder.pipeline, request, 60, whole=whole, keep=keep),
    )
    api = FastAPI()
    install_error_handlers(api)
    api.include_router(speech_router(service, lambda: None))
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, WAIT_S, "the test server")
    holder.port = server.config.port
    yield holder
    server.should_exit = True
    thread.join(WAIT_S)


def send_speech(port: int, body: dict) -> socket.socket:
    """POST /v1/audio/speech on a raw socket, which the test closes as a client that leaves would."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    head = f"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    sock.sendall(head.encode() + data)
    return sock


def read_past_headers(sock: socket.socket) -> bytes:
    """Read until the status line, the headers and some body have come."""
    received = b""
    while b"\r\n\r\n" not in received or received.endswith(b"\r\n\r\n"):
        piece = sock.recv(65536)
        assert piece, "the server closed the connection"
        received += piece
    return received


@pytest.mark.parametrize(
    ("body", "hold_from", "answered_first"),
    [
        ({"input": "whole", "stream": False, "response_format": "wav"}, 1, False),  # a whole file, left mid-synthesis
        ({"input": "plain", "response_format": "pcm"}, 1, True),  # the default: a stream, left after its first chunk
        ({"input": "stream", "stream": True, "response_format": "pcm"}, 0, False),  # a stream, left before its first chunk
        ({"input": "stream", "stream": True, "response_format": "pcm"}, 1, True),  # a stream, left after it
        ({"input": "sse", "stream_format": "sse", "response_format": "pcm"}, 1, True),  # server-sent events, left after the first
    ],
    ids=["whole", "default", "stream-before-first-chunk", "stream-after-first-chunk", "sse"],
)
def test_a_client_that_leaves_cancels_its_synthesis(route, body, hold_from, answered_first):
    route.pipeline = pipeline = HeldPipeline(hold_from)
    sock = send_speech(route.port, body)
    try:
        assert pipeline.holding.wait(WAIT_S)
        if answered_first:
            assert read_past_headers(sock).startswith(b"HTTP/1.1 200")
    finally:
        sock.close()
    assert pipeline.cancelled.wait(GONE_WITHIN_S), "the synthesis went on after its client left"


def test_a_client_that_stays_gets_everything_uncancelled(route):
    route.pipeline = pipeline = HeldPipeline(None)
    url = f"http://127.0.0.1:{route.port}/v1/audio/speech"
    whole = httpx.post(url, json={"input": "whole", "stream": False, "response_format": "wav"}, timeout=WAIT_S)
    streamed = httpx.post(url, json={"input": "stream", "response_format": "pcm"}, timeout=WAIT_S)
    assert whole.status_code == streamed.status_code == 200
    assert whole.headers["content-length"] == str(len(whole.content)) and "x-rtf" in whole.headers
    assert streamed.headers["transfer-encoding"] == "chunked" and "x-rtf" not in streamed.headers
    audio, rate = sf.read(io.BytesIO(whole.content), dtype="float32")
    pause = int(0.12 * RATE)
    assert rate == RATE and len(audio) == 3 * 2400 + 2 * pause
    assert len(streamed.content) == 2 * len(audio)  # 16-bit PCM: the same samples
    assert not pipeline.cancelled.is_set()


# ----------------------------------------------------------------------------- the app as a process
def status(url: str) -> dict:
    return httpx.get(f"{url}/v1/status", timeout=WAIT_S).json()


def leave_during(url: str, body: dict, read_first: bool) -> float:
    """Send `body`, wait until its synthesis runs (after its first bytes when `read_first`), leave;
    returns the seconds until no synthesis is active any more."""
    port = int(url.rsplit(":", 1)[1])
    sock = send_speech(port, {"response_format": "pcm", **body})
    try:
        wait_for(lambda: status(url)["syntheses_active"] > 0, 60, "the synthesis to start")
        if read_first:
            assert read_past_headers(sock).startswith(b"HTTP/1.1 200")
    finally:
        sock.close()
    left = time.perf_counter()
    wait_for(lambda: status(url)["syntheses_active"] == 0, GONE_WITHIN_S, "the synthesis of a client that left to stop")
    return time.perf_counter() - left


@pytest.mark.parametrize(
    ("extra", "read_first"),
    [({"stream": False}, False), ({}, True), ({"stream_format": "sse"}, True)],
    ids=["whole", "default-stream", "sse"],
)
def test_the_app_stops_the_synthesis_of_a_client_that_left(app_server, extra, read_first):
    """200 sentences keep the device busy for tens of seconds; the client leaves after one segment at most."""
    stopped_s = leave_during(app_server.url, {"input": sentences(200), **extra}, read_first)
    print(f"{extra or 'default stream'}: synthesis stopped {stopped_s:.2f} s after the client left")
    after = status(app_server.url)
    assert after["queue_waiting"] == 0 and after["device_busy"] == 0


@pytest.mark.parametrize("stream", [False, True])
def test_text_in_a_script_no_voice_reads_is_named(app_server, stream):
    response = speak(app_server.url, "Привет мир, hello world.", stream=stream)
    assert response.status_code == 200, response.text
    assert response.headers["x-text-warning"] == "text in Cyrillic was left out: the voices read Chinese and English"
    assert len(response.content) > 1000
    plain = speak(app_server.url, "Hello world.")
    assert "x-text-warning" not in plain.headers


def test_text_with_nothing_readable_is_still_refused(app_server):
    response = speak(app_server.url, "Привет мир. 안녕하세요")
    assert response.status_code == 400
    assert "Cyrillic and Hangul" in response.json()["detail"]
