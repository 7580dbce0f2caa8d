"""Speech: OpenAI's `audio/speech` shape, whole or streamed, plus our seed and sample rate.

A whole response is synthesized in a worker thread that stops before its next segment once the
client has gone away. A streamed one (`stream: true`, or `stream_format` "audio" or "sse") starts
with the first segment; it waits for that segment first, so bad input still gets its 4xx.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from glmtts.encoders import DEFAULT_FORMAT, FORMATS, SSE_MEDIA_TYPE, StreamEncoder, encode_audio, sse_audio_delta, sse_audio_done
from glmtts.openai_compat import model_error, models_list, voice_name
from glmtts.options import OptionError, check_options
from glmtts.pipeline import AsyncSynthesis, SynthesisRequest, playable
from glmtts.service import Service
from glmtts.types import CancelToken, SynthesisError, TimeLimitExceeded

_LOGGER = logging.getLogger(__name__)

STREAM_FORMATS = ("audio", "sse")
DISCONNECT_POLL_S = 0.25


class SpeechBody(BaseModel):
    """The OpenAI `audio/speech` request, plus `seed`, `sample_rate` and our `stream` switch."""

    model_config = ConfigDict(extra="ignore")

    input: str
    model: str | None = None
    voice: str | dict[str, str] | None = None  # a name, or the newer SDKs' custom voice {"id": name}
    response_format: str | None = None
    speed: float | None = None
    instructions: str | None = None  # accepted, not followed: the voice comes from the prompt
    stream_format: str | None = None
    stream: bool = False
    seed: int | float | None = None
    sample_rate: int | None = None


async def run_until_disconnected(request: Request, cancel: CancelToken, work: Callable, *args):
    """Run `work(*args)` in a worker thread; cancel it when the client goes away meanwhile."""
    task = asyncio.ensure_future(run_in_threadpool(work, *args))
    while not task.done():
        await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if not task.done() and await request.is_disconnected():
            _LOGGER.info("Client gone: cancelling its synthesis")
            cancel.cancel()
    return task.result()


def speech_router(service: Service, require_warm) -> APIRouter:
    router = APIRouter(prefix="/v1")
    pipeline = service.pipeline
    created = int(time.time())

    @router.get("/models")
    def models() -> dict[str, object]:
        """The model names a speech request may give (OpenAI's and the engine's); all run the loaded engine."""
        return models_list(service.engine.name, created)

    @router.post("/audio/speech")
    async def speech(body: SpeechBody, request: Request) -> Response:
        """Speak `input` in `voice` (a built-in or saved voice, or an OpenAI voice name)."""
        require_warm()
        fmt = body.response_format or DEFAULT_FORMAT
        if fmt not in FORMATS:
            raise OptionError("response_format", f"response_format must be one of {', '.join(FORMATS)} (got {fmt!r}).")
        if body.stream_format is not None and body.stream_format not in STREAM_FORMATS:
            raise OptionError("stream_format", f"stream_format must be one of {', '.join(STREAM_FORMATS)}.")
        if message := model_error(body.model, service.engine.name):
            raise OptionError("model", message)
        options = check_options(service.engine, {"seed": body.seed, "speed": body.speed, "sample_rate": body.sample_rate})
        synthesis = SynthesisRequest(body.input, voice_name(body.voice), "", options)
        cancel = CancelToken(service.settings.request_timeout_s)
        started = time.perf_counter()
        if body.stream or body.stream_format is not None:
            run = AsyncSynthesis(pipeline, synthesis, cancel)
            return await _streamed(service, run, fmt, sse=body.stream_format == "sse", characters=len(body.input), started=started)
        result = await run_until_disconnected(request, cancel, pipeline.synthesize, synthesis)
        service.metrics.observe_synthesis(result.timings["total"], result.duration_s)
        headers = {"X-RTF": f"{result.rtf:.3f}", "X-Sample-Rate": str(result.sample_rate)}
        if result.hard_split:
            headers["X-Text-Hard-Split"] = "1"
        audio = await run_in_threadpool(encode_audio, result.audio, result.sample_rate, fmt)
        return Response(audio, media_type=FORMATS[fmt].media_type, headers=headers)

    return router


async def _streamed(service: Service, run: AsyncSynthesis, fmt: str, sse: bool, characters: int, started: float) -> StreamingResponse:
    """Wait for the first chunk (so bad input still gets its 4xx), then stream the rest as it comes."""
    try:
        first = await run.next_chunk()
    except BaseException:
        run.cancel()
        raise
    if first is None:
        raise SynthesisError("Nothing to speak.")
    first_audio_s = time.perf_counter() - started
    encoder = StreamEncoder(fmt, first.sample_rate)

    def encoded(data: bytes) -> bytes:
        return sse_audio_delta(data) if sse and data else data

    async def body() -> AsyncIterator[bytes]:
        chunk, audio_s = first, 0.0
        try:
            while chunk is not None:
                audio = playable(chunk)
                audio_s += len(audio) / chunk.sample_rate
                yield encoded(await run_in_threadpool(encoder.encode, audio))
                chunk = await run.next_chunk()
            yield encoded(encoder.finish())
            if sse:
                yield sse_audio_done(characters)
            service.metrics.observe_synthesis(time.perf_counter() - started, audio_s, first_audio_s)
        except TimeLimitExceeded as error:  # the status line is sent: the stream just ends early
            _LOGGER.warning("Stream cut: %s", error)
        finally:
            run.cancel()
            encoder.finish()

    headers = {"X-Sample-Rate": str(first.sample_rate), "X-Segments": str(first.total), "Cache-Control": "no-store"}
    if first.segment.hard_split:
        headers["X-Text-Hard-Split"] = "1"
    media_type = SSE_MEDIA_TYPE if sse else FORMATS[fmt].media_type
    return StreamingResponse(body(), media_type=media_type, headers=headers)
