"""Home Assistant's Wyoming protocol (glmtts.wyoming_server), driven by the `wyoming` package's own client.

First the server in this process over a stand-in pipeline that records each request's text (so the
order of text, audio and cancellation is seen exactly): streamed text spoken sentence by sentence
before its end arrives, the limits, hostile frames, the key policy. Then the app as a process with
GLMTTS_WYOMING_PORT set: voices, audio equal to the HTTP API's for the same text, streaming, an
unknown voice, and a client that leaves freeing the device (`syntheses_active` in /v1/status).
"""

import asyncio
import socket
import threading
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from wyoming.audio import AudioChunk as WyomingAudioChunk
from wyoming.audio import AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from glmtts.pipeline import MAX_TEXT_CHARS
from glmtts.ratelimit import RateLimiter
from glmtts.session import SpeechSession
from glmtts.settings import Settings
from glmtts.types import AudioChunk, Cancelled, Segment, SynthesisError
from glmtts.wyoming_server import WyomingServer, complete_sentences, exposure_refusal

from .conftest import free_port, wait_for

RATE = 24000
WAIT_S = 10.0
GONE_WITHIN_S = 5.0
CHUNK_SAMPLES = 2400


# ----------------------------------------------------------------------------- in this process, a stand-in pipeline
class StandInPipeline:
    """One 0.1 s chunk per request, recording its text. Voice "nobody" and text without a letter are
    SynthesisErrors, as the real pipeline's; with `hold` a request runs until it is cancelled."""

    engine = SimpleNamespace(name="stand-in", sample_rates=(RATE,))

    def __init__(self, hold: bool = False):
        self.hold = hold
        self.texts: list[str] = []
        self.cancelled = threading.Event()

    def synthesize_stream(self, request, cancel):
        if request.prompt == "nobody":
            raise SynthesisError("There is no voice 'nobody'; voices: libri_1998.")
        if not any(character.isalnum() for character in request.text):
            raise SynthesisError("Nothing to speak.")
        self.texts.append(request.text)
        while self.hold:
            try:
                cancel.check()
            except Cancelled:
                self.cancelled.set()
                raise
            time.sleep(0.005)
        audio = np.full(CHUNK_SAMPLES, 0.25, dtype=np.float32)
        yield AudioChunk(0, 1, audio, RATE, Segment(request.text, (), request.text), {})


def stand_in_service(pipeline: StandInPipeline, port: int, **changes) -> SimpleNamespace:
    voices = SimpleNamespace(describe=list, aliases=SimpleNamespace(mapping={}))
    service = SimpleNamespace(
        settings=SimpleNamespace(wyoming_host="127.0.0.1", wyoming_port=port, request_timeout_s=WAIT_S),
        warm=True,
        limiter=None,
        voices=voices,
        engine=pipeline.engine,
        start_speech=lambda request, whole=False, keep=False: SpeechSession(pipeline, request, 60),
    )
    return SimpleNamespace(**{**vars(service), **changes})


def serve(pipeline: StandInPipeline, conversation, **changes):
    """Run `conversation(port)` (a coroutine function) against a Wyoming server over `pipeline`."""

    async def main():
        port = free_port()
        server = WyomingServer(stand_in_service(pipeline, port, **changes))
        await server.start()
        try:
            return await asyncio.wait_for(conversation(port), WAIT_S)
        finally:
            await server.stop()

    return asyncio.run(main())


async def read_until(client: AsyncTcpClient, *types: str) -> list[Event]:
    """Events up to and including the first of `types`, or an error, or the end of the connection."""
    events = []
    while (event := await client.read_event()) is not None:
        events.append(event)
        if event.type in types or Error.is_type(event.type):
            break
    return events


def test_streamed_text_is_spoken_sentence_by_sentence_before_it_ends():
    pipeline = StandInPipeline()

    async def conversation(port):
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(SynthesizeStart().event())
            for part in ("The first ", "sentence. The sec", "ond one! And the", " rest"):
                await client.write_event(SynthesizeChunk(text=part).event())
            first = await read_until(client, "audio-chunk")
            heard_before_stop = list(pipeline.texts)
            await client.write_event(Synthesize(text="The first sentence. The second one! And the rest").event())
            await client.write_event(SynthesizeStop().event())
            return first + await read_until(client, "synthesize-stopped"), heard_before_stop

    events, heard_before_stop = serve(pipeline, conversation)
    assert heard_before_stop[0] == "The first sentence."  # spoken while the stream was still open
    assert pipeline.texts == ["The first sentence.", "The second one!", "And the rest"]  # the repeated whole text ignored
    types = [event.type for event in events]
    assert types == ["audio-start", *["audio-chunk"] * 3, "audio-stop", "synthesize-stopped"]
    start = AudioStart.from_event(events[0])
    assert (start.rate, start.width, start.channels) == (RATE, 2, 1)
    chunks = [WyomingAudioChunk.from_event(event) for event in events[1:4]]
    pause = int(0.12 * RATE)  # the pipeline's pause between segments, before each sentence after the first
    assert [len(chunk.audio) // 2 for chunk in chunks] == [CHUNK_SAMPLES, pause + CHUNK_SAMPLES, pause + CHUNK_SAMPLES]
    assert np.frombuffer(chunks[0].audio, "<i2").tolist() == [round(0.25 * 32767)] * CHUNK_SAMPLES


def test_a_sentence_with_nothing_to_read_is_left_out_once_audio_was_heard_and_refused_before():
    pipeline = StandInPipeline()

    async def stream(port, parts):
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(SynthesizeStart().event())
            for part in parts:
                await client.write_event(SynthesizeChunk(text=part).event())
            await client.write_event(SynthesizeStop().event())
            return [event.type for event in await read_until(client, "synthesize-stopped")]

    heard = serve(pipeline, lambda port: stream(port, ["Hello there.\n", "--- ***\n", "Bye."]))
    assert heard == ["audio-start", "audio-chunk", "audio-chunk", "audio-stop", "synthesize-stopped"]
    assert pipeline.texts == ["Hello there.", "--- *** Bye."]  # a line with no word joins the next sentence
    assert serve(StandInPipeline(), lambda port: stream(port, ["... ", "!!!"])) == ["error"]


def test_unknown_voice_oversized_stream_and_busy_connection_get_error_events():
    async def unknown_voice(port):
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Synthesize(text="Hello.", voice=SynthesizeVoice(name="nobody")).event())
            events = await read_until(client, "audio-stop")
            return events, await client.read_event()

    (error,), after = serve(StandInPipeline(), unknown_voice)
    assert Error.from_event(error).code == "bad-request" and "nobody" in Error.from_event(error).text
    assert after is None  # an error ends the conversation: nobody waits for audio that is not coming

    async def oversized(port):
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(SynthesizeStart().event())
            for _ in range(MAX_TEXT_CHARS // 1000 + 1):
                await client.write_event(SynthesizeChunk(text="word " * 200).event())
            return await read_until(client, "synthesize-stopped")

    events = serve(StandInPipeline(hold=True), oversized)
    assert Error.from_event(events[-1]).code == "text-too-long"

    pipeline = StandInPipeline(hold=True)

    async def twice(port):
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Synthesize(text="First.").event())
            while not pipeline.texts:
                await asyncio.sleep(0.01)
            await client.write_event(Synthesize(text="Second.").event())
            return await read_until(client, "never")

    assert Error.from_event(serve(pipeline, twice)[-1]).code == "busy"
    assert pipeline.cancelled.wait(GONE_WITHIN_S)  # the first one stopped with the conversation


def test_a_client_that_leaves_cancels_its_synthesis():
    pipeline = StandInPipeline(hold=True)

    async def leave(port):
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Synthesize(text="A long text.").event())
            while not pipeline.texts:
                await asyncio.sleep(0.01)
        return await asyncio.to_thread(pipeline.cancelled.wait, GONE_WITHIN_S)

    assert serve(pipeline, leave), "the synthesis went on after its client left"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"POST / HTTP/1.1\r\nHost: 127.0.0.1:10200\r\n\r\n", "bad-event"),  # a browser's cross-protocol request
        (b'{"type": "synthesize", "data_length": 100000000000}\n', "bad-event"),  # a length it would wait to fill
        (b'{"type": "synthesize", "payload_length": -1}\n', "bad-event"),
        (b"[" * 100000 + b"\n", "bad-event"),  # over the header line limit
        (b'{"type": "synthesize", "data_length": 30000}\n' + b"[" * 30000, "bad-event"),  # nested too deep
        (b'{"type": "synthesize", "data": {"text": 5}}\n', "bad-event"),
    ],
    ids=["http", "huge-data", "negative-payload", "long-line", "deep-json", "text-not-string"],
)
def test_a_frame_it_will_not_read_is_answered_and_the_connection_closed(frame, code):
    async def send_raw(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame)
        await writer.drain()
        answer = await reader.read()  # to the end: the server closes
        writer.close()
        return answer

    answer = serve(StandInPipeline(), send_raw)
    assert b'"type": "error"' in answer and code.encode() in answer


def test_rate_limit_and_warm_up_are_said_in_error_events():
    async def ask(port, count):
        codes = []
        for _ in range(count):
            async with AsyncTcpClient("127.0.0.1", port) as client:
                await client.write_event(Synthesize(text="Hello.").event())
                codes.append(
                    [
                        Error.from_event(e).code if Error.is_type(e.type) else e.type
                        for e in await read_until(client, "audio-stop")
                    ]
                )
        return codes

    limited = serve(StandInPipeline(), lambda port: ask(port, 2), limiter=RateLimiter(1))
    assert limited[0][-1] == "audio-stop" and limited[1] == ["rate-limited"]
    assert serve(StandInPipeline(), lambda port: ask(port, 1), warm=False) == [["not-ready"]]


def test_complete_sentences_waits_for_what_more_text_could_change():
    assert complete_sentences("Hello there. How") == (["Hello there."], "How")
    assert complete_sentences("It costs 3.") == ([], "It costs 3.")  # "3.14" may follow
    assert complete_sentences("Ask Dr. ") == ([], "Ask Dr. ")
    assert complete_sentences("你好。我") == (["你好。"], "我")
    assert complete_sentences("- one\n- two") == (["- one"], "- two")
    sentences, rest = complete_sentences("word " * 200)  # no end in sight: cut at a space, not held back
    assert all(len(sentence) <= 400 for sentence in sentences) and len(rest) <= 400
    assert " ".join([*sentences, rest]).split() == ["word"] * 200


def test_an_exposed_wyoming_port_needs_an_explicit_yes_while_an_api_key_guards_http():
    assert exposure_refusal(Settings(api_key="k")) is None  # loopback
    assert "GLMTTS_WYOMING_ALLOW_EXPOSED" in exposure_refusal(Settings(api_key="k", wyoming_host="0.0.0.0"))
    assert exposure_refusal(Settings(api_key="k", wyoming_host="0.0.0.0", wyoming_allow_exposed=True)) is None
    assert exposure_refusal(Settings(wyoming_host="192.168.1.5")) is None  # no key to go around: a warning
    assert exposure_refusal(Settings(api_key="k", wyoming_host="127.0.0.1.example.com")) is not None


# ----------------------------------------------------------------------------- the app as a process
@pytest.fixture
def wyoming_app(app_server):
    """The session's app, which serves Wyoming on a port of its own."""
    return SimpleNamespace(url=app_server.url, port=app_server.wyoming_port)


def converse(app, events: list[Event], until: str) -> list[Event]:
    async def main():
        async with AsyncTcpClient("127.0.0.1", app.port) as client:
            for event in events:
                await client.write_event(event)
            return await asyncio.wait_for(read_until(client, until), 120)

    return asyncio.run(main())


def pcm_of(events: list[Event]) -> np.ndarray:
    return np.frombuffer(b"".join(WyomingAudioChunk.from_event(e).audio for e in events if e.type == "audio-chunk"), "<i2")


def test_describe_lists_every_voice_the_http_api_lists(wyoming_app):
    (event,) = converse(wyoming_app, [Describe().event()], "info")
    (program,) = Info.from_event(event).tts
    assert program.supports_synthesize_streaming
    listed = httpx.get(f"{wyoming_app.url}/v1/audio/voices", timeout=WAIT_S).json()["voices"]
    assert [voice.name for voice in program.voices] == [voice["id"] for voice in listed]
    assert {"alloy", "libri_1998"} <= {voice.name for voice in program.voices}
    assert all(voice.languages == ["en", "zh"] for voice in program.voices)


def test_synthesize_is_the_http_apis_audio(wyoming_app):
    text = "Warm start means the first request is as fast as the hundredth."
    events = converse(wyoming_app, [Synthesize(text=text, voice=SynthesizeVoice(name="alloy")).event()], "audio-stop")
    assert events[0].type == "audio-start" and events[-1].type == "audio-stop"
    rates = {AudioStart.from_event(events[0]).rate} | {WyomingAudioChunk.from_event(e).rate for e in events[1:-1]}
    status = httpx.get(f"{wyoming_app.url}/v1/status", timeout=WAIT_S).json()
    assert rates == {RATE} and status["sample_rates"][0] == RATE
    http = httpx.post(
        f"{wyoming_app.url}/v1/audio/speech",
        json={"input": text, "voice": "alloy", "response_format": "pcm", "stream": True},  # the same streamed synthesis
        timeout=120,
    )
    wyoming_pcm, http_pcm = pcm_of(events), np.frombuffer(http.content, "<i2")
    assert len(wyoming_pcm) > RATE  # over a second of speech
    assert len(wyoming_pcm) == len(http_pcm) and np.abs(wyoming_pcm.astype(int) - http_pcm).max() <= 1


def test_streamed_audio_starts_before_the_text_ends(wyoming_app):
    async def main():
        async with AsyncTcpClient("127.0.0.1", wyoming_app.port) as client:
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="libri_1998")).event())
            await client.write_event(SynthesizeChunk(text="The first sentence arrives alone. ").event())
            early = await asyncio.wait_for(read_until(client, "audio-chunk"), 120)  # no stop sent yet
            await client.write_event(SynthesizeChunk(text="Then the second one follows.").event())
            await client.write_event(SynthesizeStop().event())
            return early, await asyncio.wait_for(read_until(client, "synthesize-stopped"), 120)

    early, rest = asyncio.run(main())
    assert [event.type for event in early] == ["audio-start", "audio-chunk"]
    assert [event.type for event in rest][-2:] == ["audio-stop", "synthesize-stopped"]
    assert len(pcm_of(early)) > RATE // 2 and len(pcm_of(rest)) > RATE // 2  # each sentence heard


def test_an_unknown_voice_is_an_error_event(wyoming_app):
    (event,) = converse(wyoming_app, [Synthesize(text="Hello.", voice=SynthesizeVoice(name="nobody-here")).event()], "audio-stop")
    error = Error.from_event(event)
    assert error.code == "bad-request" and "nobody-here" in error.text and "libri_1998" in error.text


def test_a_client_that_leaves_frees_the_device(wyoming_app):
    def status() -> dict:
        return httpx.get(f"{wyoming_app.url}/v1/status", timeout=WAIT_S).json()

    text = " ".join(f"This is sentence number {i} of a long text that keeps the device busy." for i in range(200))
    with socket.create_connection(("127.0.0.1", wyoming_app.port), timeout=120) as sock:
        sock.sendall(b'{"type": "synthesize", "data": {"text": "%s"}}\n' % text.encode())
        received = b""
        while b"audio-chunk" not in received:  # it is speaking
            piece = sock.recv(65536)
            assert piece, "the server closed the connection"
            received += piece
        assert status()["syntheses_active"] > 0
    left = time.perf_counter()
    wait_for(lambda: status()["syntheses_active"] == 0, GONE_WITHIN_S, "the synthesis of a client that left to stop")
    print(f"Wyoming: synthesis stopped {time.perf_counter() - left:.2f} s after the client left")
    after = status()
    assert after["queue_waiting"] == 0 and after["device_busy"] == 0
