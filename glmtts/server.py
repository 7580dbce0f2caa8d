"""HTTP endpoints beside the UI on the same port: health, readiness and an OpenAI-shaped speech API."""

from __future__ import annotations

import logging

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from glmtts.audio import audio_to_wav_bytes
from glmtts.pipeline import Pipeline, SynthesisRequest
from glmtts.scheduler import QueueFull, QueueTimeout
from glmtts.types import SynthesisError, SynthesisOptions

_LOGGER = logging.getLogger(__name__)

MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "pcm": "audio/L16"}
NOT_READY_RETRY_S = 5


class SpeechBody(BaseModel):
    """The OpenAI `audio/speech` request shape, plus our seed and sample rate."""

    model_config = {"extra": "ignore"}

    input: str = Field(max_length=20000)
    voice: str | None = None
    response_format: str = "wav"
    speed: float = Field(1.0, ge=0.5, le=2.0)
    seed: int = 42
    sample_rate: int | None = None


def create_api(pipeline: Pipeline) -> FastAPI:
    api = FastAPI(title="GLM-TTS warm WebUI", docs_url="/docs", redoc_url=None)

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
    def speech(body: SpeechBody) -> Response:
        if not pipeline.ready:
            raise HTTPException(503, "The model is still warming up.", headers={"Retry-After": str(NOT_READY_RETRY_S)})
        if body.response_format not in MEDIA_TYPES:
            raise HTTPException(400, f"response_format must be one of {', '.join(MEDIA_TYPES)}.")
        options = SynthesisOptions(seed=body.seed, speed=body.speed, sample_rate=body.sample_rate)
        try:
            result = pipeline.synthesize(SynthesisRequest(body.input, body.voice, "", options))
        except SynthesisError as error:
            raise HTTPException(400, str(error)) from error
        except QueueFull as error:
            raise HTTPException(429, str(error), headers={"Retry-After": str(error.retry_after_s)}) from error
        except QueueTimeout as error:
            raise HTTPException(503, str(error), headers={"Retry-After": str(NOT_READY_RETRY_S)}) from error
        headers = {"X-RTF": f"{result.rtf:.3f}", "X-Sample-Rate": str(result.sample_rate)}
        if body.response_format == "pcm":
            pcm = (np.clip(result.audio, -1, 1) * 32767).astype("<i2").tobytes()
            return Response(pcm, media_type=MEDIA_TYPES["pcm"], headers=headers)
        fmt = body.response_format.upper()
        return Response(audio_to_wav_bytes(result.audio, result.sample_rate, fmt), media_type=MEDIA_TYPES[body.response_format], headers=headers)

    return api
