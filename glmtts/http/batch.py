"""Batch jobs as a resource: submit a GLM-TTS JSONL, follow it, download its zip, cancel, resume."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from glmtts.http.forms import FORM_OVERHEAD_BYTES, check_length, read_form, read_json, read_upload
from glmtts.jobs.batchfile import MAX_BATCH_BYTES
from glmtts.openai_compat import validation_error
from glmtts.options import UNCOERCED_BOOL, check_options
from glmtts.service import Service

JSON_ESCAPE_FACTOR = 6  # a JSONL string inside JSON grows by at most this much (\uXXXX escapes)


class BatchBody(BaseModel):
    """A batch job: the GLM-TTS JSONL text plus synthesis options (None: the model's default)."""

    model_config = ConfigDict(extra="forbid")

    jsonl: str
    name: str = Field("", max_length=80)
    seed: Annotated[int | float | None, UNCOERCED_BOOL] = None  # true/false reach check_options, which refuses them
    speed: Annotated[float | None, UNCOERCED_BOOL] = None
    sample_rate: Annotated[int | None, UNCOERCED_BOOL] = None
    sampling: str | None = None
    top_k: Annotated[int | float | None, UNCOERCED_BOOL] = None
    top_p: Annotated[float | None, UNCOERCED_BOOL] = None
    temperature: Annotated[float | None, UNCOERCED_BOOL] = None
    use_phoneme: bool | None = None
    use_cache: bool | None = None


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


def job_json(progress: dict[str, object]) -> dict[str, object]:
    links = {"url": f"/v1/batch/{progress['id']}"}
    if progress["status"] == "done":
        links["download"] = f"/v1/batch/{progress['id']}/download"
    return {**progress, **links}


def batch_router(service: Service, require_warm) -> APIRouter:
    router = APIRouter(prefix="/v1")
    jobs = service.jobs

    @router.post("/batch", status_code=202, openapi_extra=_BATCH_BODY_DOC)
    async def submit_batch(request: Request) -> JSONResponse:
        """Queue a GLM-TTS JSONL job (`uttid`, `prompt_text`, `prompt_speech`, `syn_text` per line)."""
        require_warm()
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            check_length(request, MAX_BATCH_BYTES + FORM_OVERHEAD_BYTES)
            form = await read_form(request, MAX_BATCH_BYTES + 1)
            fields = {key: value for key, value in form.items() if key != "file" and isinstance(value, str) and value != ""}
            if "file" in form:
                data = await read_upload(form["file"], MAX_BATCH_BYTES, "batch file")
                fields["jsonl"] = data.decode("utf-8", errors="replace")
            elif "jsonl" not in fields:
                raise HTTPException(400, "Send the batch as a file field named 'file' (or a text field 'jsonl').")
        elif content_type.startswith("application/json"):
            check_length(request, MAX_BATCH_BYTES * JSON_ESCAPE_FACTOR)
            fields = await read_json(request)
        else:
            raise HTTPException(415, "Send multipart/form-data with a 'file', or application/json with 'jsonl'.")
        try:
            body = BatchBody.model_validate(fields)
        except ValidationError as error:
            message, _field = validation_error(error.errors())
            raise HTTPException(422, message) from error
        options = check_options(service.engine, body.model_dump(exclude={"jsonl", "name"}))
        job_id = await run_in_threadpool(jobs.submit, body.jsonl, options, body.name)
        progress = await run_in_threadpool(jobs.progress, job_id)  # with shared state, a Redis round trip
        return JSONResponse(job_json(progress), status_code=202, headers={"Location": f"/v1/batch/{job_id}"})

    @router.get("/batch")
    def list_batch() -> dict[str, list[dict[str, object]]]:
        return {"jobs": [job_json(summary) for summary in jobs.list()]}

    @router.get("/batch/{job_id}")
    def batch_progress(job_id: str) -> dict[str, object]:
        return job_json(jobs.progress(job_id))

    @router.get("/batch/{job_id}/download")
    def batch_download(job_id: str) -> FileResponse:
        archive = jobs.archive(job_id)
        return FileResponse(archive, media_type="application/zip", filename=archive.name)

    @router.post("/batch/{job_id}/cancel")
    def batch_cancel(job_id: str) -> dict[str, object]:
        return job_json(jobs.cancel(job_id))

    @router.post("/batch/{job_id}/resume", status_code=202)
    def batch_resume(job_id: str) -> dict[str, object]:
        return job_json(jobs.resume(job_id))

    return router
