"""HTTP resources for saved voices and batch jobs under /v1, on the app's FastAPI instance.

Routes:
    POST   /v1/voices                 multipart: file, prompt_text, name       -> 201 voice
    GET    /v1/voices                 built-in and saved voices
    GET    /v1/voices/{id}            one voice
    DELETE /v1/voices/{id}            a saved voice (built-ins: 403)
    POST   /v1/batch                  multipart (file + fields) or JSON {"jsonl": ...} -> 202 job
    GET    /v1/batch                  every job, newest first
    GET    /v1/batch/{id}             status, counts and items
    GET    /v1/batch/{id}/download    the zip (409 until done)
    POST   /v1/batch/{id}/cancel      stop after the current item
    POST   /v1/batch/{id}/resume      run the items not yet finished -> 202
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from glmtts.audio import PROMPT_MAX_BYTES
from glmtts.batch import MAX_BATCH_BYTES
from glmtts.jobs import BatchJobs, BatchTooLarge, JobLimit, JobNotFound, JobStateError, options_from_dict
from glmtts.pipeline import Pipeline
from glmtts.scheduler import QueueFull, QueueTimeout
from glmtts.settings import Settings
from glmtts.types import SynthesisError
from glmtts.voices import VoiceExists, VoiceInfo, VoiceLimit, VoiceNotFound, VoiceStore

_LOGGER = logging.getLogger(__name__)

NOT_READY_RETRY_S = 5
FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and small fields on top of the file
JSON_ESCAPE_FACTOR = 6  # a JSONL string inside JSON grows by at most this much (\uXXXX escapes)
MAX_FORM_FIELDS = 16


class BatchBody(BaseModel):
    """A batch job: the GLM-TTS JSONL text plus synthesis options (as in /v1/audio/speech)."""

    model_config = ConfigDict(extra="forbid")

    jsonl: str
    name: str = Field("", max_length=80)
    seed: int = 42
    speed: float = Field(1.0, ge=0.5, le=2.0)
    sample_rate: int | None = None
    sampling: Literal["ras", "topk"] = "ras"
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    temperature: float | None = Field(None, gt=0.0)
    use_phoneme: bool = False
    use_cache: bool = True


# The request bodies these routes parse themselves (to refuse oversized bodies before reading them).
_VOICE_FORM_DOC = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "3-10 s of speech (wav, flac, mp3, ogg)"},
                        "prompt_text": {"type": "string", "description": "what the prompt says (recommended)"},
                        "name": {"type": "string"},
                    },
                }
            }
        }
    }
}
_BATCH_BODY_DOC = {
    "requestBody": {
        "content": {
            "application/json": {"schema": BatchBody.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "the GLM-TTS JSONL"},
                        "name": {"type": "string"},
                        "seed": {"type": "integer"},
                        "speed": {"type": "number"},
                    },
                }
            },
        }
    }
}


def _voice_json(info: VoiceInfo) -> dict[str, object]:
    return {**info.to_json(), "url": f"/v1/voices/{info.id}"}


def _builtin_json(name: str, path: Path) -> dict[str, object]:
    return {"id": name, "name": name, "builtin": True, "file": path.name, "url": f"/v1/voices/{name}"}


def _job_json(progress: dict[str, object]) -> dict[str, object]:
    links = {"url": f"/v1/batch/{progress['id']}"}
    if progress["status"] == "done":
        links["download"] = f"/v1/batch/{progress['id']}/download"
    return {**progress, **links}


def _check_length(request: Request, limit: int) -> None:
    """Refuse a body that announces more than `limit` bytes before reading it."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"The request has {int(length)} bytes; the limit is {limit}.")


async def _form(request: Request, part_limit: int) -> FormData:
    try:
        return await request.form(max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=part_limit)
    except MultiPartException as error:
        raise HTTPException(400, f"Malformed multipart form: {error.message}") from error


async def _read_upload(upload: object, limit: int, what: str) -> bytes:
    if not isinstance(upload, UploadFile):
        raise HTTPException(400, f"Send the {what} as a multipart file field named 'file'.")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"The {what} is larger than {limit // 2**20} MB.")
    return data


def mount_v1(api: FastAPI, pipeline: Pipeline, settings: Settings, auto_resume: bool = False) -> tuple[VoiceStore, BatchJobs]:
    """Add the /v1 voice and batch resources to `api`; returns the store and the jobs.

    Saved voices are registered with the pipeline and unfinished jobs marked interrupted here,
    before the server takes requests, so warm-up analyses any voice whose stored features do not
    fit the engine. `load_all()` and `recover()` may be called again later: they run once.
    """
    voices = VoiceStore(settings.voices_dir, pipeline)
    jobs = BatchJobs(pipeline, settings.batch_dir, settings.allowed_roots, auto_resume=auto_resume)
    voices.load_all()
    jobs.recover()
    upload_limit = min(PROMPT_MAX_BYTES, settings.max_upload_mb * 2**20)
    router = APIRouter(prefix="/v1")

    def require_ready() -> None:
        if not pipeline.ready:
            raise HTTPException(503, "The model is still warming up.", headers={"Retry-After": str(NOT_READY_RETRY_S)})

    def builtins() -> dict[str, Path]:
        return {name: path for name, path in pipeline.builtin_voices().items() if pipeline.saved_voice(name) is None}

    # ------------------------------------------------------------------ voices
    @router.post(
        "/voices",
        status_code=201,
        openapi_extra=_VOICE_FORM_DOC,
    )
    async def create_voice(request: Request) -> JSONResponse:
        """Save a prompt voice: analysed once, then usable by id as `voice` everywhere."""
        require_ready()
        _check_length(request, upload_limit + FORM_OVERHEAD_BYTES)
        form = await _form(request, MAX_FORM_FIELDS * 1024)
        data = await _read_upload(form.get("file"), upload_limit, "prompt audio")
        prompt_text, name = form.get("prompt_text", ""), form.get("name", "")
        if not isinstance(prompt_text, str) or not isinstance(name, str):
            raise HTTPException(400, "prompt_text and name must be text fields.")
        try:
            info = await run_in_threadpool(voices.create, data, prompt_text, name)
        except VoiceExists as error:
            raise HTTPException(409, str(error)) from error
        except VoiceLimit as error:
            raise HTTPException(409, str(error)) from error
        except SynthesisError as error:
            raise HTTPException(400, str(error)) from error
        except QueueFull as error:
            raise HTTPException(429, str(error), headers={"Retry-After": str(error.retry_after_s)}) from error
        except QueueTimeout as error:
            raise HTTPException(503, str(error), headers={"Retry-After": str(NOT_READY_RETRY_S)}) from error
        return JSONResponse(_voice_json(info), status_code=201, headers={"Location": f"/v1/voices/{info.id}"})

    @router.get("/voices")
    def list_voices() -> dict[str, list[dict[str, object]]]:
        """The built-in voices, then the saved ones (oldest first)."""
        listed = [_builtin_json(name, path) for name, path in builtins().items()]
        return {"voices": listed + [_voice_json(info) for info in voices.list()]}

    @router.get("/voices/{voice_id}")
    def get_voice(voice_id: str) -> dict[str, object]:
        builtin = builtins()
        if voice_id in builtin:
            return _builtin_json(voice_id, builtin[voice_id])
        try:
            return _voice_json(voices.get(voice_id))
        except VoiceNotFound as error:
            raise HTTPException(404, f"No voice {voice_id!r}.") from error

    @router.delete("/voices/{voice_id}")
    def delete_voice(voice_id: str) -> dict[str, object]:
        if voice_id in builtins():
            raise HTTPException(403, f"{voice_id!r} is a built-in voice and cannot be deleted.")
        try:
            voices.delete(voice_id)
        except VoiceNotFound as error:
            raise HTTPException(404, f"No voice {voice_id!r}.") from error
        return {"id": voice_id, "deleted": True}

    # ------------------------------------------------------------------ batch
    @router.post(
        "/batch",
        status_code=202,
        openapi_extra=_BATCH_BODY_DOC,
    )
    async def submit_batch(request: Request) -> JSONResponse:
        """Queue a GLM-TTS JSONL job (`uttid`, `prompt_text`, `prompt_speech`, `syn_text` per line)."""
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            _check_length(request, MAX_BATCH_BYTES + FORM_OVERHEAD_BYTES)
            form = await _form(request, MAX_BATCH_BYTES + 1)
            fields = {key: value for key, value in form.items() if key != "file" and isinstance(value, str) and value != ""}
            if "file" in form:
                fields["jsonl"] = (await _read_upload(form["file"], MAX_BATCH_BYTES, "batch file")).decode(
                    "utf-8", errors="replace"
                )
            elif "jsonl" not in fields:
                raise HTTPException(400, "Send the batch as a file field named 'file' (or a text field 'jsonl').")
        elif content_type.startswith("application/json"):
            _check_length(request, MAX_BATCH_BYTES * JSON_ESCAPE_FACTOR)
            try:
                fields = await request.json()
            except ValueError as error:
                raise HTTPException(400, "The body is not valid JSON.") from error
        else:
            raise HTTPException(415, "Send multipart/form-data with a 'file', or application/json with 'jsonl'.")
        try:
            body = BatchBody.model_validate(fields)
        except ValidationError as error:
            raise HTTPException(422, error.errors(include_url=False, include_context=False, include_input=False)) from error
        options = options_from_dict(body.model_dump(exclude={"jsonl", "name"}))
        try:
            job_id = await run_in_threadpool(jobs.submit, body.jsonl, options, body.name)
        except BatchTooLarge as error:
            raise HTTPException(413, str(error)) from error
        except SynthesisError as error:  # BatchInputError included: the message names the lines
            raise HTTPException(400, str(error)) from error
        except JobLimit as error:
            raise HTTPException(429, str(error), headers={"Retry-After": "60"}) from error
        return JSONResponse(_job_json(jobs.progress(job_id)), status_code=202, headers={"Location": f"/v1/batch/{job_id}"})

    @router.get("/batch")
    def list_batch() -> dict[str, list[dict[str, object]]]:
        return {"jobs": [_job_json(summary) for summary in jobs.list()]}

    @router.get("/batch/{job_id}")
    def batch_progress(job_id: str) -> dict[str, object]:
        return _job_json(_job_call(jobs.progress, job_id))

    @router.get("/batch/{job_id}/download")
    def batch_download(job_id: str) -> FileResponse:
        archive = _job_call(jobs.archive, job_id)
        return FileResponse(archive, media_type="application/zip", filename=archive.name)

    @router.post("/batch/{job_id}/cancel")
    def batch_cancel(job_id: str) -> dict[str, object]:
        return _job_json(_job_call(jobs.cancel, job_id))

    @router.post("/batch/{job_id}/resume", status_code=202)
    def batch_resume(job_id: str) -> dict[str, object]:
        return _job_json(_job_call(jobs.resume, job_id))

    _replace_routes(api, router)
    return voices, jobs


def _job_call(operation, job_id: str):
    try:
        return operation(job_id)
    except JobNotFound as error:
        raise HTTPException(404, f"No batch job {job_id!r}.") from error
    except JobStateError as error:
        raise HTTPException(409, str(error)) from error


def _replace_routes(api: FastAPI, router: APIRouter) -> None:
    """Include `router`, dropping earlier routes of `api` with the same path and method (GET /v1/voices)."""
    ours = {(route.path, method) for route in router.routes if isinstance(route, APIRoute) for method in route.methods}
    api.router.routes[:] = [
        route
        for route in api.router.routes
        if not (isinstance(route, APIRoute) and any((route.path, method) in ours for method in route.methods))
    ]
    api.include_router(router)
