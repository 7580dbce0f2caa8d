"""The one cancel path on stand-ins (no models): the pipeline hands its token to the frontend, the
device line and the engine; a speech session records its figures once; the page's Generate stops
its session when Gradio closes the callback's generator."""

import asyncio
import json
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from glmtts.engines.embedded import EmbeddedEngine
from glmtts.pipeline import Pipeline, SynthesisRequest
from glmtts.scheduler import DeviceScheduler
from glmtts.service import Service
from glmtts.session import SpeechSession
from glmtts.settings import Settings
from glmtts.types import Cancelled, CancelToken, Segment, SegmentAudio, SynthesisOptions, SynthesisResult

RATE = 24000
WAIT_S = 10.0


class CountingEngine:
    """Yields one short segment per `synthesize_segments` step; a segment may be held until cancelled."""

    name = "counting"
    speed_range = (0.5, 2.0)
    sample_rates = (RATE,)

    def __init__(self, hold_from: int | None = None):
        self.hold_from = hold_from
        self.produced = 0
        self.cancelled = threading.Event()
        self.holding = threading.Event()

    def synthesize_segments(self, segments, voice, options, cancel):
        for index in range(len(segments)):
            if self.hold_from is not None and index >= self.hold_from:
                self.holding.set()
                deadline = time.monotonic() + WAIT_S
                while time.monotonic() < deadline:  # as an engine checks inside a long segment
                    try:
                        cancel.check()
                    except Cancelled:
                        self.cancelled.set()
                        raise
                    time.sleep(0.005)
            self.produced += 1
            yield SegmentAudio(np.full(240, 0.1, dtype=np.float32), RATE, {"synthesis": 0.001})


class RecordingFrontend:
    """Splits on spaces; records the cancel token it was given."""

    def __init__(self):
        self.tokens: list[CancelToken | None] = []

    def text_to_segments(self, text, use_phoneme=False, cancel=None):
        self.tokens.append(cancel)
        if cancel is not None:
            cancel.check()
        return [Segment(word, (), word, unread=("Cyrillic",)) for word in text.split()]


def pipeline_with(engine: CountingEngine, scheduler: DeviceScheduler | None = None) -> Pipeline:
    voices = SimpleNamespace(resolve=lambda *args: None)
    return Pipeline(engine, RecordingFrontend(), voices, scheduler or DeviceScheduler(), request_timeout_s=60)


def test_a_cancelled_token_stops_the_pipeline_before_its_next_segment():
    engine = CountingEngine()
    pipeline = pipeline_with(engine)
    cancel = CancelToken()
    stream = pipeline.synthesize_stream(SynthesisRequest("one two three four"), cancel)
    assert next(stream).index == 0
    cancel.cancel()
    with pytest.raises(Cancelled):
        next(stream)
    assert engine.produced == 1 and pipeline.active == 0
    assert pipeline.frontend.tokens == [cancel]  # the frontend got the request's own token


def test_a_token_cancelled_before_the_frontend_runs_nothing():
    engine = CountingEngine()
    pipeline = pipeline_with(engine)
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        pipeline.synthesize(SynthesisRequest("one two"), cancel)
    assert engine.produced == 0


def test_a_cancelled_waiter_leaves_the_device_line():
    scheduler = DeviceScheduler()
    cancel, failures = CancelToken(), []

    def wait_for_the_device():
        try:
            with scheduler.slot(cancel=cancel):
                pass
        except Cancelled as error:
            failures.append(error)

    with scheduler.slot():
        waiter = threading.Thread(target=wait_for_the_device)
        waiter.start()
        deadline = time.monotonic() + WAIT_S
        while scheduler.waiting == 0:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        cancel.cancel()
        waiter.join(WAIT_S)
        assert not waiter.is_alive() and len(failures) == 1
        assert scheduler.waiting == 0  # the slot is still held: the waiter left without its turn


def test_a_session_gives_chunks_then_the_whole_result_and_records_once():
    observed = []
    metrics = SimpleNamespace(observe_synthesis=lambda *figures: observed.append(figures))

    async def main():
        session = SpeechSession(pipeline_with(CountingEngine()), SynthesisRequest("one two three"), 60, metrics, keep=True)
        indexes = [chunk.index async for chunk in session]
        result = await session.result()  # after the last chunk: joins what was kept, reads nothing more
        return session, indexes, result

    session, indexes, result = asyncio.run(main())
    assert indexes == [0, 1, 2] and len(result.segments) == 3
    assert result.unread == ("Cyrillic",)
    ((total_s, audio_s, first_audio_s),) = observed
    assert total_s == session.total_s and first_audio_s == session.first_audio_s <= total_s
    assert audio_s == pytest.approx(result.duration_s, abs=1 / RATE)


def test_a_whole_file_session_asks_the_engine_not_to_stream():
    seen: list[SynthesisOptions] = []
    engine = CountingEngine()
    original = engine.synthesize_segments

    def recording(segments, voice, options, cancel):
        seen.append(options)
        return original(segments, voice, options, cancel)

    engine.synthesize_segments = recording

    async def main():
        return await SpeechSession(pipeline_with(engine), SynthesisRequest("one two"), 60, whole=True).result()

    assert len(asyncio.run(main()).segments) == 2
    assert seen[0].stream is False


def test_notes_name_a_hard_split_and_the_scripts_left_out():
    segments = [Segment("a", (), "a", hard_split=True, unread=("Hangul",)), Segment("b", (), "b", unread=("Hangul",))]
    result = SynthesisResult(np.zeros(10, np.float32), RATE, segments, {"total": 0.1}, "x")
    assert result.unread == ("Hangul",)
    assert result.notes == [
        "text without breaks was cut at fixed lengths",
        "text in Hangul was left out: the voices read Chinese and English",
    ]
    assert all(note.isascii() for note in result.notes)


@pytest.fixture
def page(tmp_path):
    """The real page over a service whose pipeline is a stand-in whose second segment lasts until cancelled."""
    from glmtts.ui import build_ui

    service = Service(Settings(outputs=tmp_path), EmbeddedEngine(tmp_path / "cache"), "test", SimpleNamespace(close=lambda: None))
    engine = CountingEngine(hold_from=1)
    service.pipeline = pipeline_with(engine)
    service.warm = True
    blocks = build_ui(service)
    generate = next(block.fn for block in blocks.fns.values() if block.api_name == "synthesize")
    return generate, engine


def test_closing_the_pages_generator_cancels_its_synthesis(page):
    """Gradio closes the generator of an event that was stopped or whose page went away."""
    generate, engine = page

    async def main():
        updates = generate("one two three", None, None, "", 42, "ras", 25, 0.8, 1.0, 1.0, RATE, True, False)
        first = await updates.__anext__()  # segment 1 of 3 is playing
        assert await asyncio.to_thread(engine.holding.wait, WAIT_S)
        await updates.aclose()
        return first

    first = asyncio.run(main())
    assert any("segment 1 of 3" in str(value) for value in first.values())
    assert engine.cancelled.wait(WAIT_S)
    assert engine.produced == 1


def test_cancelling_a_batch_job_stops_its_running_item_and_resume_runs_it_again(tmp_path):
    from glmtts.jobs.disk_store import DiskJobQueue
    from glmtts.jobs.interface import CANCELLED, DONE
    from glmtts.settings import PROJECT_ROOT

    prompt = PROJECT_ROOT / "examples" / "prompt" / "libri_367.flac"
    engine = CountingEngine(hold_from=1)
    jobs = DiskJobQueue(pipeline_with(engine), SimpleNamespace(known_names=list), tmp_path / "batch", [prompt.parent])
    jobs.recover()
    jobs.start()
    try:
        line = {"uttid": "long", "prompt_text": "", "prompt_speech": str(prompt), "syn_text": "one two three"}
        job = jobs.submit(json.dumps(line))
        assert engine.holding.wait(WAIT_S)  # the item's second segment runs
        jobs.cancel(job)
        assert engine.cancelled.wait(WAIT_S)  # stopped inside the item, not after it
        wait_until(lambda: jobs.progress(job)["status"] == CANCELLED)
        assert jobs.progress(job)["done"] == 0
        engine.hold_from = None
        jobs.resume(job)
        wait_until(lambda: jobs.progress(job)["status"] == DONE)
        assert [item["status"] for item in jobs.progress(job)["items"]] == ["ok"]
    finally:
        jobs.shutdown(timeout_s=5)


def wait_until(predicate) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_pages_status_names_the_scripts_left_out(page):
    generate, engine = page
    engine.hold_from = None

    async def main():
        return [update async for update in generate("one two", None, None, "", 42, "ras", 25, 0.8, 1.0, 1.0, RATE, True, False)]

    done = " ".join(str(value) for value in asyncio.run(main())[-1].values())
    assert "Done:" in done and "Note: text in Cyrillic was left out: the voices read Chinese and English." in done
