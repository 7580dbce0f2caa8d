"""Streamed speech (the default, as OpenAI's): chunked audio from the first segment on, cancelled by a client that leaves (streamed
or not), stopped by the time limit; plus the async synthesis run and the error table on fakes (no models)."""

import asyncio
import io
import shutil
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI
from fastapi.testclient import TestClient

from glmtts.http.errors import install_error_handlers
from glmtts.scheduler import QueueFull, QueueTimeout
from glmtts.session import SpeechSession
from glmtts.types import AudioChunk, Segment, SynthesisError, TimeLimitExceeded
from glmtts.ui import LIVE_PLAYBACK

from ..decoding import decode
from .conftest import speak

RATE = 24000
TWO_SEGMENTS = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It is easy to tell the depth of a well. These days a chicken leg is a rare dish. "
    "Rice is often served in round bowls. The juice of lemons makes fine punch."
)


def sentences(count: int) -> str:
    return " ".join(f"This is sentence number {i} of a long text that keeps the device busy for a while." for i in range(count))


# ----------------------------------------------------------------------------- fakes, no models
class FakePipeline:
    """`synthesize_stream` as the real one behaves: a generator that checks its cancel token before each segment."""

    def __init__(self, segments: int, seconds_each: float = 0.0, error: Exception | None = None):
        self.segments = segments
        self.seconds_each = seconds_each
        self.error = error
        self.produced = 0
        self.slot_threads: list[int] = []  # thread that took the slot, thread that released it
        self.released = threading.Event()

    def synthesize_stream(self, request, cancel):
        if self.error is not None:
            raise self.error
        self.slot_threads.append(threading.get_ident())
        try:
            for index in range(self.segments):
                cancel.check()
                time.sleep(self.seconds_each)
                self.produced += 1
                audio = np.full(100, 0.1 * (index + 1), dtype=np.float32)
                yield AudioChunk(index, self.segments, audio, RATE, Segment(f"s{index}", (), f"s{index}"), {"synthesis": 0.01})
        finally:
            self.slot_threads.append(threading.get_ident())
            self.released.set()


def consume(pipeline: FakePipeline, limit_s: float = 60.0, take: int | None = None) -> list[AudioChunk]:
    async def main():
        run = SpeechSession(pipeline, None, limit_s)
        got = []
        try:
            while (chunk := await run.next_chunk()) is not None:
                got.append(chunk)
                if take is not None and len(got) == take:
                    break
        finally:
            run.cancel()
        return got

    return asyncio.run(main())


def test_run_hands_out_every_chunk_and_ends_the_stream_in_its_own_thread():
    pipeline = FakePipeline(4)
    chunks = consume(pipeline)
    assert [c.index for c in chunks] == [0, 1, 2, 3]
    assert pipeline.released.wait(5)
    taker, releaser = pipeline.slot_threads
    assert taker == releaser != threading.get_ident()


def test_the_end_is_handed_out_before_the_pipelines_clean_up():
    """The reader learns the end with the last segment's chunk, not after the pipeline's clean-up (its slot
    to find the end, the memory trim): the clean-up here waits until the reader has returned."""
    reader_returned, cleaned_up = threading.Event(), threading.Event()

    class SlowCleanUp(FakePipeline):
        def synthesize_stream(self, request, cancel):
            try:
                yield from super().synthesize_stream(request, cancel)
            finally:
                reader_returned.wait(5)
                cleaned_up.set()

    chunks = consume(SlowCleanUp(3))
    assert len(chunks) == 3 and not cleaned_up.is_set()
    reader_returned.set()
    assert cleaned_up.wait(5)


def test_cancel_stops_after_the_segment_in_progress():
    pipeline = FakePipeline(50, seconds_each=0.02)
    assert len(consume(pipeline, take=1)) == 1
    assert pipeline.released.wait(5)
    assert pipeline.produced <= 3
    assert pipeline.slot_threads[0] == pipeline.slot_threads[1]


def test_a_slow_reader_holds_the_synthesis_back():
    """At most a few chunks wait for the reader: a client that reads slowly does not pile up audio."""
    pipeline = FakePipeline(50)

    async def main():
        run = SpeechSession(pipeline, None, None)
        await run.next_chunk()
        await asyncio.sleep(0.3)
        produced = pipeline.produced
        run.cancel()
        return produced

    assert asyncio.run(main()) <= 6


def test_time_limit_is_enforced_between_segments():
    pipeline = FakePipeline(50, seconds_each=0.03)
    with pytest.raises(TimeLimitExceeded, match="time limit"):
        consume(pipeline, limit_s=0.1)
    assert pipeline.released.wait(5)
    assert 2 <= pipeline.produced <= 6


def test_errors_before_the_first_chunk_reach_the_consumer():
    with pytest.raises(SynthesisError, match="empty"):
        consume(FakePipeline(1, error=SynthesisError("The text is empty.")))


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (TimeLimitExceeded(300), 504, None),
        (QueueFull(16, 7), 429, "7"),
        (QueueTimeout("waited"), 503, "5"),
        (SynthesisError("The text is empty."), 400, None),
    ],
)
def test_pipeline_errors_map_to_statuses_on_every_route(error, status, retry_after):
    api = FastAPI()
    install_error_handlers(api)

    @api.post("/v1/anything")
    def fail():
        raise error

    response = TestClient(api).post("/v1/anything")
    assert response.status_code == status and response.json()["detail"] == str(error)
    assert response.json()["error"]["message"] == str(error)  # the OpenAI shape beside ours
    assert response.headers.get("retry-after") == retry_after


# ----------------------------------------------------------------------------- the app as a process
def stream(url: str, text: str, fmt: str) -> tuple[httpx.Response, list[tuple[float, bytes]]]:
    """POST a plain request (it streams by default); returns the response and (seconds since the request, bytes) per read."""
    start = time.perf_counter()
    pieces = []
    with httpx.stream("POST", f"{url}/v1/audio/speech", json={"input": text, "response_format": fmt}, timeout=300) as r:
        if r.status_code == 200:
            for data in r.iter_raw():
                pieces.append((time.perf_counter() - start, data))
        else:
            r.read()
    return r, pieces


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3", "flac"])
def test_streamed_audio_matches_the_whole_file(app_server, fmt):
    response, pieces = stream(app_server.url, TWO_SEGMENTS, fmt)
    assert response.status_code == 200, response.text
    assert response.headers["transfer-encoding"] == "chunked" and "content-length" not in response.headers
    assert "x-rtf" not in response.headers  # known only at the end
    assert response.headers["x-sample-rate"] == str(RATE) and int(response.headers["x-segments"]) >= 2
    data = b"".join(p for _, p in pieces)
    if fmt == "pcm":
        assert response.headers["content-type"] == "audio/pcm"
        streamed = np.frombuffer(data, "<i2").astype(np.float32) / 32767
        streamed_s = len(streamed) / RATE
    else:
        if fmt == "wav":
            assert data[:4] == b"RIFF" and data[40:44] == b"\xff\xff\xff\xff"
        _, rate, audio = decode(data)
        assert rate == RATE and np.abs(audio).max() > 0.05
        streamed_s = len(audio) / rate
    whole = speak(app_server.url, TWO_SEGMENTS, response_format=fmt if fmt != "pcm" else "wav", stream=False)
    whole_audio, _ = sf.read(io.BytesIO(whole.content), dtype="float32")
    whole_s = len(whole_audio) / RATE
    print(f"{fmt}: streamed {streamed_s:.2f} s, whole {whole_s:.2f} s")
    assert abs(streamed_s - whole_s) < 0.05 * whole_s
    if fmt == "pcm":  # same seed, same audio: the stream is the whole file cut into pieces
        np.testing.assert_allclose(streamed, whole_audio, atol=2 / 32767)


def test_mp3_is_the_default_response_format(app_server):
    response = httpx.post(f"{app_server.url}/v1/audio/speech", json={"input": "An mp3 file, please."}, timeout=300)
    assert response.status_code == 200 and response.headers["content-type"] == "audio/mpeg"
    audio, rate = sf.read(io.BytesIO(response.content))
    assert rate == RATE and len(audio) / rate > 0.8


def test_first_audio_arrives_long_before_the_last(app_server):
    response, pieces = stream(app_server.url, sentences(12), "pcm")
    assert response.status_code == 200
    segments = int(response.headers["x-segments"])
    first_s, total_s = pieces[0][0], pieces[-1][0]
    print(f"{segments} segments: first audio {first_s:.2f} s, all {total_s:.2f} s")
    assert segments >= 4
    assert first_s < 0.5 * total_s


def test_client_disconnect_frees_the_device(app_server):
    start = time.perf_counter()
    assert speak(app_server.url, "Next, please.").status_code == 200
    short_s = time.perf_counter() - start
    start = time.perf_counter()
    with httpx.stream(
        "POST",
        f"{app_server.url}/v1/audio/speech",
        json={"input": sentences(40), "stream": True, "response_format": "pcm"},
        timeout=300,
    ) as response:
        segments = int(response.headers["x-segments"])
        next(response.iter_raw())
        first_s = time.perf_counter() - start
    # The client left after one segment: at most the segment in progress is finished before the next request.
    start = time.perf_counter()
    assert speak(app_server.url, "Next, please.").status_code == 200
    follow_up_s = time.perf_counter() - start
    print(f"{segments} segments, first after {first_s:.2f} s; next request {follow_up_s:.2f} s (alone {short_s:.2f} s)")
    assert segments >= 15
    assert follow_up_s < first_s + 3 * short_s
    assert httpx.get(f"{app_server.url}/v1/status").json()["queue_waiting"] == 0


def test_a_whole_file_request_whose_client_gave_up_frees_the_device(app_server):
    start = time.perf_counter()
    assert speak(app_server.url, "Next, please.").status_code == 200
    short_s = time.perf_counter() - start
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{app_server.url}/v1/audio/speech", json={"input": sentences(60), "stream": False}, timeout=2)
    start = time.perf_counter()
    assert speak(app_server.url, "Next, please.").status_code == 200
    follow_up_s = time.perf_counter() - start
    print(f"after a client gave up on 60 sentences: next request {follow_up_s:.2f} s (alone {short_s:.2f} s)")
    assert follow_up_s < 4 + 3 * short_s  # one segment of the abandoned request at most, not all 60


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"input": "", "stream": True}, 400, "empty"),
        ({"input": "😀😀", "stream": True, "response_format": "wav"}, 400, "nothing to speak"),
        ({"input": "hello", "stream": True, "voice": "nobody"}, 400, "there is no voice"),
        ({"input": "hello", "stream": True, "response_format": "ogg"}, 400, "response_format"),
        ({"input": "hello", "stream": "sometimes"}, 422, "boolean"),
        ({"input": "hello", "stream": False, "stream_format": "sse"}, 400, "stream_format"),
        ({"input": "😀😀"}, 400, "nothing to speak"),  # the default is a stream too
    ],
)
def test_bad_streamed_requests_get_a_status_not_a_broken_stream(app_server, body, status, message):
    response = httpx.post(f"{app_server.url}/v1/audio/speech", json=body, timeout=60)
    assert response.status_code == status, response.text
    assert message in response.text.lower()


# ----------------------------------------------------------------------------- the UI's live player, in Chromium
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None or not LIVE_PLAYBACK, reason="needs Debian's chromium and ffmpeg (Gradio's stream encoder)")
def test_ui_plays_the_first_sentences_before_the_whole_file_is_done(app_server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(app_server.url)
            page.locator("#single-text textarea").wait_for(state="visible", timeout=60_000)
            page.locator("#single-text textarea").fill(sentences(12))
            page.locator("#single-generate").click()
            played_before_done = 0.0
            deadline = time.monotonic() + 240
            while "Done" not in page.locator("#single-status").inner_text():
                assert time.monotonic() < deadline, "the UI never finished"
                played = page.evaluate(
                    "() => Math.max(0, ...Array.from(document.querySelectorAll('#single-live audio')).map(a => a.currentTime))"
                )
                played_before_done = max(played_before_done, played)
                time.sleep(0.2)
            download = page.locator("#single-output a[data-testid=download-link]")
            download.wait_for(state="attached", timeout=60_000)
        finally:
            browser.close()
    print(f"live player had played {played_before_done:.2f} s before the whole file was ready")
    assert played_before_done > 0.5
