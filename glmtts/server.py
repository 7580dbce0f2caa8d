"""HTTP endpoints beside the UI on the same port: health, readiness and an OpenAI-shaped speech API.

Speech can come whole (`wav`, `flac`, `mp3`, `pcm`) or streamed (`"stream": true`; `pcm`, `wav`,
`mp3`), starting with the first sentence. A streamed synthesis runs in its own thread (`SynthesisRun`)
so that the device slot is taken and released by one thread, and so that a client that goes away,
or a request that runs past its time limit, stops it between segments.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
import time

import numpy as np
import soundfile as sf
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from glmtts.audio import SEGMENT_PAUSE_SECONDS, audio_to_wav_bytes, crossfade_join, limit_peak
from glmtts.pipeline import MAX_TEXT_CHARS, Pipeline, ProgressFn, SynthesisRequest
from glmtts.scheduler import QueueFull, QueueTimeout
from glmtts.security import SecurityMiddleware
from glmtts.types import AudioChunk, SynthesisError, SynthesisOptions

_LOGGER = logging.getLogger(__name__)

MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "pcm": "audio/L16"}
STREAM_FORMATS = ("pcm", "wav", "mp3")
NOT_READY_RETRY_S = 5
MAX_SEED = 2**32 - 1
OPEN_ENDED = 0xFFFFFFFF  # RIFF and data sizes of a wav whose length is not known yet
PCM_BITS = 16
MP3_STREAM_COMPRESSION = 0.5  # libsndfile's 0 (best) to 1 (smallest); about 80 kbit/s for mono speech


class TimeLimitExceeded(RuntimeError):
    """A synthesis ran past the per-request time limit; it stopped between segments."""

    def __init__(self, limit_s: float):
        super().__init__(f"The synthesis ran past the {limit_s:.0f} s time limit; send shorter text.")


class SpeechBody(BaseModel):
    """The OpenAI `audio/speech` request shape, plus our seed, sample rate and streaming switch."""

    model_config = {"extra": "ignore"}

    input: str = Field(max_length=MAX_TEXT_CHARS)
    voice: str | None = None
    response_format: str = "wav"
    speed: float = Field(1.0, ge=0.5, le=2.0)
    seed: int = Field(42, ge=0, le=MAX_SEED)
    sample_rate: int | None = None
    stream: bool = False


def deadline_guard(deadline: float, limit_s: float) -> ProgressFn:
    """A progress callback that stops a synthesis between segments once `deadline` has passed."""

    def check(fraction: float, _message: str) -> None:
        if fraction < 1.0 and time.monotonic() > deadline:
            raise TimeLimitExceeded(limit_s)

    return check


def pcm16(audio: np.ndarray) -> bytes:
    """Float audio in [-1, 1] to 16-bit little-endian PCM."""
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def wav_stream_header(sample_rate: int) -> bytes:
    """A mono 16-bit wav header with open-ended RIFF and data sizes, as streaming servers send."""
    block_align = PCM_BITS // 8
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", OPEN_ENDED, b"WAVE",
        b"fmt ", 16, 1, 1, sample_rate, sample_rate * block_align, block_align, PCM_BITS,
        b"data", OPEN_ENDED,
    )  # fmt: skip


def chunk_to_stream_audio(chunk: AudioChunk) -> np.ndarray:
    """A chunk as it sounds in the joined result: the pause before every segment but the first."""
    audio = limit_peak(chunk.audio)
    if chunk.index == 0:
        return audio
    return np.concatenate([np.zeros(int(SEGMENT_PAUSE_SECONDS * chunk.sample_rate), dtype=np.float32), audio])


def join_chunks(chunks: list[AudioChunk]) -> np.ndarray:
    """The whole waveform of a streamed synthesis, joined as `Pipeline.synthesize` joins it."""
    return limit_peak(crossfade_join([c.audio for c in chunks], chunks[0].sample_rate, SEGMENT_PAUSE_SECONDS))


class _ByteSink:
    """A seekable write target for libsndfile that hands out each byte once, when first written."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._position = 0
        self._taken = 0

    def write(self, data: bytes) -> int:
        data = bytes(data)
        self._data[self._position : self._position + len(data)] = data
        self._position += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: len(self._data)}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        return b""

    def take(self) -> bytes:
        """Bytes written past everything taken before (rewrites of taken bytes, e.g. headers, are lost)."""
        new = bytes(self._data[self._taken :])
        self._taken = len(self._data)
        return new


class StreamEncoder:
    """Turns streamed float32 chunks into the bytes of one open-ended `pcm`, `wav` or `mp3` stream."""

    def __init__(self, fmt: str, sample_rate: int):
        self.fmt = fmt
        self.sample_rate = sample_rate
        self._header = wav_stream_header(sample_rate) if fmt == "wav" else b""
        self._sink = _ByteSink() if fmt == "mp3" else None
        self._mp3 = None
        if self._sink is not None:  # constant bitrate: a reader that cannot seek back for a VBR tag still gets the length right
            self._mp3 = sf.SoundFile(
                self._sink, "w", sample_rate, 1, format="MP3", bitrate_mode="CONSTANT", compression_level=MP3_STREAM_COMPRESSION
            )

    def encode(self, audio: np.ndarray) -> bytes:
        if self._sink is not None:
            self._mp3.write(np.clip(audio, -1.0, 1.0))
            return self._sink.take()
        header, self._header = self._header, b""
        return header + pcm16(audio)

    def finish(self) -> bytes:
        """The stream's last bytes (the mp3 encoder's tail); safe to call more than once."""
        if self._mp3 is None:
            return b""
        self._mp3.close()
        self._mp3 = None
        return self._sink.take()


class SynthesisRun:
    """One streamed synthesis in a thread of its own, consumed chunk by chunk from the event loop.

    The thread iterates `Pipeline.synthesize_stream`, which holds the device slot; `cancel()` (the
    client went away) or the time limit stops it after the segment in progress, and closing the
    stream in that same thread releases the slot. Create it inside a running event loop.
    """

    _END = object()

    def __init__(self, pipeline: Pipeline, request: SynthesisRequest, time_limit_s: float):
        self._pipeline = pipeline
        self._request = request
        self._time_limit_s = time_limit_s
        self._deadline = time.monotonic() + time_limit_s
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[object] = asyncio.Queue()
        self._stop = threading.Event()
        self.chunks: list[AudioChunk] = []  # every chunk handed out so far
        threading.Thread(target=self._run, name="synthesis-run", daemon=True).start()

    def _run(self) -> None:
        stream = self._pipeline.synthesize_stream(self._request)
        try:
            for chunk in stream:
                self._deliver(chunk)
                if self._stop.is_set():
                    _LOGGER.info("Streamed synthesis cancelled after segment %d/%d", chunk.index + 1, chunk.total)
                    break
                if chunk.index + 1 < chunk.total and time.monotonic() > self._deadline:
                    raise TimeLimitExceeded(self._time_limit_s)
            self._deliver(self._END)
        except Exception as error:  # noqa: BLE001 (handed to the consumer, which decides what the client sees)
            self._deliver(error)
        finally:
            stream.close()  # in this thread, which took the device slot: releases it

    def _deliver(self, item: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the event loop has closed: nobody is listening
            self._stop.set()

    async def next_chunk(self) -> AudioChunk | None:
        """The next chunk, None after the last one; raises what the synthesis raised."""
        item = await self._items.get()
        if item is self._END:
            return None
        if isinstance(item, BaseException):
            raise item
        self.chunks.append(item)
        return item

    def cancel(self) -> None:
        self._stop.set()


def _validation_detail(error: RequestValidationError) -> list[dict[str, object]]:
    """Validation errors without the offending input, which may not even be encodable (NaN, lone surrogates)."""
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in error.errors()]


def install_error_handlers(api: FastAPI) -> None:
    """Map the pipeline's errors to status codes for every route: bad input 400, busy 429, slow 503/504."""

    @api.exception_handler(SynthesisError)
    async def bad_input(_request: Request, error: SynthesisError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    @api.exception_handler(QueueFull)
    async def queue_full(_request: Request, error: QueueFull) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=429, headers={"Retry-After": str(error.retry_after_s)})

    @api.exception_handler(QueueTimeout)
    async def queue_timeout(_request: Request, error: QueueTimeout) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": str(NOT_READY_RETRY_S)})

    @api.exception_handler(TimeLimitExceeded)
    async def too_slow(_request: Request, error: TimeLimitExceeded) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=504)

    @api.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(error)}, status_code=422)


def create_api(pipeline: Pipeline) -> FastAPI:
    settings = pipeline.settings
    api = FastAPI(title="GLM-TTS warm WebUI", docs_url="/docs", redoc_url=None)
    api.add_middleware(SecurityMiddleware, settings=settings)
    install_error_handlers(api)

    @api.get("/health")
    def health() -> dict[str, str]:
        return {"status": "up"}

    @api.get("/ready")
    def ready() -> JSONResponse:
        status = {"ready": pipeline.ready, "engine": pipeline.engine.name, "engine_reason": pipeline.engine_reason}
        return JSONResponse(status, status_code=200 if pipeline.ready else 503)

    @api.get("/v1/status")
    def status() -> dict[str, object]:
        return pipeline.status()

    @api.get("/v1/voices")
    def voices() -> dict[str, list[str]]:
        return {"voices": list(pipeline.builtin_voices())}

    @api.post("/v1/audio/speech")
    async def speech(body: SpeechBody) -> Response:
        if not pipeline.ready:
            raise HTTPException(503, "The model is still warming up.", headers={"Retry-After": str(NOT_READY_RETRY_S)})
        if body.response_format not in MEDIA_TYPES:
            raise HTTPException(400, f"response_format must be one of {', '.join(MEDIA_TYPES)}.")
        if body.stream and body.response_format not in STREAM_FORMATS:
            raise HTTPException(400, f"Streaming supports response_format {', '.join(STREAM_FORMATS)}.")
        options = SynthesisOptions(seed=body.seed, speed=body.speed, sample_rate=body.sample_rate)
        request = SynthesisRequest(body.input, body.voice, "", options)
        if body.stream:
            return await _stream_speech(SynthesisRun(pipeline, request, settings.request_timeout_s), body.response_format)
        guard = deadline_guard(time.monotonic() + settings.request_timeout_s, settings.request_timeout_s)
        result = await run_in_threadpool(pipeline.synthesize, request, guard)
        headers = {"X-RTF": f"{result.rtf:.3f}", "X-Sample-Rate": str(result.sample_rate)}
        if body.response_format == "pcm":
            return Response(pcm16(result.audio), media_type=MEDIA_TYPES["pcm"], headers=headers)
        audio = await run_in_threadpool(audio_to_wav_bytes, result.audio, result.sample_rate, body.response_format.upper())
        return Response(audio, media_type=MEDIA_TYPES[body.response_format], headers=headers)

    return api


async def _stream_speech(run: SynthesisRun, fmt: str) -> StreamingResponse:
    """Wait for the first segment (so bad input still gets its 4xx), then stream the rest as it comes."""
    try:
        first = await run.next_chunk()
    except BaseException:
        run.cancel()
        raise
    if first is None:
        raise SynthesisError("Nothing to speak.")
    encoder = StreamEncoder(fmt, first.sample_rate)

    async def body():
        chunk = first
        try:
            while chunk is not None:
                yield await run_in_threadpool(encoder.encode, chunk_to_stream_audio(chunk))
                chunk = await run.next_chunk()
            yield encoder.finish()
        except TimeLimitExceeded as error:  # the status line is sent: the stream just ends early
            _LOGGER.warning("Stream cut: %s", error)
        finally:
            run.cancel()
            encoder.finish()

    headers = {"X-Sample-Rate": str(first.sample_rate), "X-Segments": str(first.total), "Cache-Control": "no-store"}
    return StreamingResponse(body(), media_type=MEDIA_TYPES[fmt], headers=headers)
