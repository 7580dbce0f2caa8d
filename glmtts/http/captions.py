"""Captioned speech: Kokoro-FastAPI's `POST /dev/captioned_speech`, audio with word timestamps.

The request is the speech body (glmtts.http.speech). The answer is Kokoro's shape:
`{"audio": base64, "audio_format": media type, "timestamps": [{"word", "start_time", "end_time"}]}`,
times in seconds from the start of the audio. As in Kokoro, a request streams unless it says
`"stream": false`: one such object per line (JSON lines), one per segment, each with that
segment's encoded audio and its words' times in the whole output; the objects' audio decoded and
concatenated is one file, the encoder's tail in a last object without words.

Words are timed by the engine's own durations where it has them (the embedded voices), else
estimated from the audio (glmtts.captions.estimate_words); either way every segment is
synthesized whole (no streaming inside a segment), so the times fit the audio sent.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from glmtts.encoders import FORMATS, StreamEncoder
from glmtts.files import dumps_line
from glmtts.http.speech import SessionResponse, SpeechBody, checked_request, text_headers, while_connected, whole_audio
from glmtts.options import OptionError
from glmtts.pipeline import chunk_words, playable, played_seconds
from glmtts.service import Service
from glmtts.session import SpeechSession
from glmtts.types import SynthesisError, TimeLimitExceeded, WordTime

_LOGGER = logging.getLogger(__name__)

STREAM_MEDIA_TYPE = "application/x-ndjson"  # one JSON object a line (Kokoro-FastAPI labels them application/json)


def captioned(audio: bytes, media_type: str, words: list[WordTime]) -> dict[str, object]:
    """One answer object in Kokoro-FastAPI's `CaptionedSpeechResponse` shape."""
    timestamps = [{"word": w.word, "start_time": round(w.start, 3), "end_time": round(w.end, 3)} for w in words]
    return {"audio": base64.b64encode(audio).decode("ascii"), "audio_format": media_type, "timestamps": timestamps}


def captions_router(service: Service, require_warm) -> APIRouter:
    router = APIRouter(prefix="/dev")

    @router.post("/captioned_speech", responses={200: {"content": {"application/json": {}, STREAM_MEDIA_TYPE: {}}}})
    async def captioned_speech(body: SpeechBody, request: Request) -> Response:
        """Speak `input` in `voice` and say when each word is spoken (Kokoro-FastAPI's captioned speech)."""
        require_warm()
        if body.stream_format is not None:
            raise OptionError("stream_format", "captioned speech streams JSON lines: leave out stream_format.")
        fmt, synthesis = checked_request(body, service)
        synthesis = synthesis.whole()
        if body.stream is False:
            return await _whole(service.start_speech(synthesis, whole=True), request, fmt)
        return await _streamed(service.start_speech(synthesis), request, fmt)

    return router


async def _whole(session: SpeechSession, request: Request, fmt: str) -> Response:
    """The whole file and every word, in one object."""
    result, audio = await whole_audio(session, request, fmt)
    headers = {
        "X-Sample-Rate": str(result.sample_rate),
        "X-Segments": str(len(result.segments)),
        **text_headers(result.segments[0]),
    }
    return JSONResponse(captioned(audio, FORMATS[fmt].media_type, result.words), headers=headers)


async def _streamed(session: SpeechSession, request: Request, fmt: str) -> Response:
    """One JSON line per segment, as each is made; the first waited for, so bad input still gets its 4xx."""
    try:
        first = await while_connected(request, session, session.next_chunk())
        if first is None:
            raise SynthesisError("Nothing to speak.")
        encoder = StreamEncoder(fmt, first.sample_rate)
    except BaseException:
        session.close()
        raise
    media_type = FORMATS[fmt].media_type

    async def body() -> AsyncIterator[bytes]:
        chunk, start_s = first, 0.0
        try:
            while chunk is not None:
                with session.timed("encode"):
                    audio = await run_in_threadpool(encoder.encode, playable(chunk))
                yield (dumps_line(captioned(audio, media_type, chunk_words(chunk, start_s))) + "\n").encode()
                start_s += played_seconds(chunk)
                chunk = await session.next_chunk()
            if tail := encoder.finish():
                yield (dumps_line(captioned(tail, media_type, [])) + "\n").encode()
        except TimeLimitExceeded as error:  # the status line is sent: the stream just ends early
            _LOGGER.warning("Captioned stream cut: %s", error)
        finally:
            session.close()
            encoder.finish()

    headers = {"X-Sample-Rate": str(first.sample_rate), "X-Segments": str(first.total), "Cache-Control": "no-store"}
    return SessionResponse(session, body(), media_type=STREAM_MEDIA_TYPE, headers={**headers, **text_headers(first.segment)})
