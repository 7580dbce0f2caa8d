"""Speech: OpenAI's `audio/speech` shape, streamed as it is made, plus our seed, sample rate and `stream` switch.

Each request is a speech session (glmtts.session); this route only maps HTTP to it. As OpenAI's
API does, a request streams by default, in every format: the route waits for the first chunk (so
bad input still gets its 4xx), then sends the audio chunked as the segments come, or as
`speech.audio.delta` events with `stream_format: "sse"`. `"stream": false` asks for one whole file
instead, sent with its Content-Length and `X-RTF`. One client watcher covers every wait: until the
response starts, the ASGI receive channel's `http.disconnect` cancels the session; once it
streams, the response closes it when it ends, the client gone included. A text with parts no voice
reads is answered with `X-Text-Warning`. `Server-Timing` carries the session's timing record: the
whole request's in a whole file, up to the first chunk in a stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.types import Receive, Scope, Send

from glmtts.encoders import DEFAULT_FORMAT, FORMATS, SSE_MEDIA_TYPE, StreamEncoder, encode_audio, sse_audio_delta, sse_audio_done
from glmtts.openai_compat import model_error, voice_name
from glmtts.options import UNCOERCED_BOOL, OptionError, check_options
from glmtts.pipeline import SynthesisRequest, playable
from glmtts.service import Service
from glmtts.session import SpeechSession
from glmtts.types import AudioChunk, Segment, SynthesisError, SynthesisResult, TimeLimitExceeded, unread_note

_LOGGER = logging.getLogger(__name__)

STREAM_FORMATS = ("audio", "sse")
T = TypeVar("T")


class SpeechBody(BaseModel):
    """The OpenAI `audio/speech` request, plus `seed`, `sample_rate` and our `stream` switch (unset: stream)."""

    model_config = ConfigDict(extra="ignore")

    input: str
    model: str | None = None
    voice: str | dict[str, str] | None = None  # a name, or the newer SDKs' custom voice {"id": name}
    response_format: str | None = None
    speed: Annotated[float | None, UNCOERCED_BOOL] = None
    instructions: str | None = None  # accepted, not followed: the voice comes from the prompt
    stream_format: str | None = None
    stream: bool | None = None  # false: one whole file with its length; unset or true: streamed as it is made
    seed: Annotated[int | float | None, UNCOERCED_BOOL] = None  # true/false reach check_options, which refuses them
    sample_rate: Annotated[int | None, UNCOERCED_BOOL] = None


async def _client_gone(request: Request) -> None:
    """Return when the client disconnects (the request body has been read: nothing else arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def while_connected(request: Request, session: SpeechSession, wait: Awaitable[T]) -> T:
    """Await `wait` (a read from the session); cancel the session the moment its client disconnects."""
    reading, watching = asyncio.ensure_future(wait), asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({reading, watching}, return_when=asyncio.FIRST_COMPLETED)
        if not reading.done():
            _LOGGER.info("Client gone before its answer: cancelling its synthesis")
            session.cancel()
        return await reading  # a cancelled synthesis raises Cancelled within one segment
    except BaseException:
        session.cancel()
        raise
    finally:
        watching.cancel()


class SessionResponse(StreamingResponse):
    """A streamed answer that closes its session however it ends: finished, failed or its client gone."""

    def __init__(self, session: SpeechSession, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.session = session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.session.done:
                _LOGGER.info("Stream ended before its synthesis: cancelling it")
            self.session.close()


def text_headers(segment: Segment) -> dict[str, str]:
    """What was done to the text, as headers (a segment carries what concerns the whole text)."""
    headers = {"X-Text-Hard-Split": "1"} if segment.hard_split else {}
    if segment.unread:
        headers["X-Text-Warning"] = unread_note(segment.unread)
    return headers


def speech_router(service: Service, require_warm) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/audio/speech")
    async def speech(body: SpeechBody, request: Request) -> Response:
        """Speak `input` in `voice` (a built-in or saved voice, or an OpenAI voice name)."""
        require_warm()
        if body.stream_format is not None and body.stream_format not in STREAM_FORMATS:
            raise OptionError("stream_format", f"stream_format must be one of {', '.join(STREAM_FORMATS)}.")
        sse = body.stream_format == "sse"
        if sse and body.stream is False:
            raise OptionError("stream", 'stream_format "sse" is a stream: leave out "stream": false.')
        fmt, synthesis = checked_request(body, service)
        if body.stream is False:
            return await _whole(service.start_speech(synthesis, whole=True), request, fmt)
        return await _streamed(service.start_speech(synthesis), request, fmt, sse, characters=len(body.input))

    return router


def checked_request(body: SpeechBody, service: Service) -> tuple[str, SynthesisRequest]:
    """The body's output format and its synthesis request, checked: the one check of every speech route."""
    fmt = body.response_format or DEFAULT_FORMAT
    if fmt not in FORMATS:
        raise OptionError("response_format", f"response_format must be one of {', '.join(FORMATS)} (got {fmt!r}).")
    if message := model_error(body.model, service.engine.name):
        raise OptionError("model", message)
    options = check_options(service.engine, {"seed": body.seed, "speed": body.speed, "sample_rate": body.sample_rate})
    return fmt, SynthesisRequest(body.input, voice_name(body.voice), "", options)


async def whole_audio(session: SpeechSession, request: Request, fmt: str) -> tuple[SynthesisResult, bytes]:
    """The session's whole result and its audio encoded as `fmt`; the session is closed after."""
    try:
        result = await while_connected(request, session, session.result())
        with session.timed("encode"):
            return result, await run_in_threadpool(encode_audio, result.audio, result.sample_rate, fmt)
    finally:
        session.close()


async def _whole(session: SpeechSession, request: Request, fmt: str) -> Response:
    """Wait for the whole synthesis, then send one file with its length."""
    result, audio = await whole_audio(session, request, fmt)
    headers = {
        "X-RTF": f"{result.rtf:.3f}",
        "X-Sample-Rate": str(result.sample_rate),
        "X-Segments": str(len(result.segments)),
        "Server-Timing": session.server_timing(),
        **text_headers(result.segments[0]),
    }
    return Response(audio, media_type=FORMATS[fmt].media_type, headers=headers)


async def _streamed(session: SpeechSession, request: Request, fmt: str, sse: bool, characters: int) -> StreamingResponse:
    """Wait for the first chunk (so bad input still gets its 4xx) and encode it, then stream the rest as it comes."""

    def encoded(data: bytes) -> bytes:
        return sse_audio_delta(data) if sse and data else data

    async def encode(chunk: AudioChunk) -> bytes:
        with session.timed("encode"):
            return encoded(await run_in_threadpool(encoder.encode, playable(chunk)))

    try:
        first = await while_connected(request, session, session.next_chunk())
        if first is None:
            raise SynthesisError("Nothing to speak.")
        encoder = StreamEncoder(fmt, first.sample_rate)
        first_bytes = await encode(first)
    except BaseException:
        session.close()
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            yield first_bytes
            while (chunk := await session.next_chunk()) is not None:
                yield await encode(chunk)
            yield encoded(encoder.finish())
            if sse:
                yield sse_audio_done(characters)
        except TimeLimitExceeded as error:  # the status line is sent: the stream just ends early
            _LOGGER.warning("Stream cut: %s", error)
        finally:
            session.close()
            encoder.finish()

    headers = {
        "X-Sample-Rate": str(first.sample_rate),
        "X-Segments": str(first.total),
        "Cache-Control": "no-store",
        "Server-Timing": session.server_timing(),
        **text_headers(first.segment),
    }
    media_type = SSE_MEDIA_TYPE if sse else FORMATS[fmt].media_type
    return SessionResponse(session, body(), media_type=media_type, headers=headers)
