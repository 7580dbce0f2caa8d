"""Saved voices as a resource: create from a prompt upload, list, show, rename, delete; hear a voice's
prompt; export a voice as one file and import it on another machine (glmtts.voice_file)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from glmtts.audio import PROMPT_MAX_BYTES
from glmtts.encoders import encode_audio
from glmtts.http.forms import FORM_OVERHEAD_BYTES, MAX_FORM_FIELDS, check_length, read_form, read_upload
from glmtts.service import Service
from glmtts.voice_file import MAX_FILE_BYTES
from glmtts.voices import MAX_NAME_CHARS, VoiceInfo


def _form_doc(required: str, **properties: dict) -> dict:
    """The OpenAPI request body of a multipart form (read by hand, so FastAPI cannot describe it)."""
    schema = {"type": "object", "required": [required], "properties": properties}
    return {"requestBody": {"content": {"multipart/form-data": {"schema": schema}}}}


_VOICE_FORM_DOC = _form_doc(
    "file",
    file={"type": "string", "format": "binary", "description": "3-10 s of speech (wav, flac, mp3, ogg)"},
    prompt_text={"type": "string", "description": "what the prompt says (recommended)"},
    name={
        "type": "string",
        "maxLength": MAX_NAME_CHARS,
        "description": "usable as `voice` (stored NFKC-normalized, compared case-folded); no control, format, "
        "private-use or unassigned characters; not a built-in's, an alias's or another saved voice's name (409)",
    },
)
_IMPORT_FORM_DOC = _form_doc(
    "file",
    file={"type": "string", "format": "binary", "description": "a voice file from /v1/voices/{id}/export"},
    name={"type": "string", "maxLength": MAX_NAME_CHARS, "description": "the name it was exported with if empty"},
)


class RenameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str


def voice_json(info: VoiceInfo) -> dict[str, object]:
    return {**info.to_json(), "url": f"/v1/voices/{info.id}"}


def voices_router(service: Service, require_warm) -> APIRouter:
    router = APIRouter(prefix="/v1")
    library = service.voices
    upload_limit = min(PROMPT_MAX_BYTES, service.settings.max_upload_mb * 2**20)

    @router.post("/voices", status_code=201, openapi_extra=_VOICE_FORM_DOC)
    async def create_voice(request: Request) -> JSONResponse:
        """Save a prompt voice: analysed once, then usable by id as `voice` everywhere."""
        require_warm()
        check_length(request, upload_limit + FORM_OVERHEAD_BYTES)
        form = await read_form(request, MAX_FORM_FIELDS * 1024)
        data = await read_upload(form.get("file"), upload_limit, "prompt audio")
        prompt_text, name = form.get("prompt_text", ""), form.get("name", "")
        if not isinstance(prompt_text, str) or not isinstance(name, str):
            raise HTTPException(400, "prompt_text and name must be text fields.")
        info = await run_in_threadpool(library.create, data, prompt_text, name)
        return JSONResponse(voice_json(info), status_code=201, headers={"Location": f"/v1/voices/{info.id}"})

    @router.post("/voices/import", status_code=201, openapi_extra=_IMPORT_FORM_DOC)
    async def import_voice(request: Request) -> JSONResponse:
        """Save a voice from a voice file exported here or on another machine."""
        require_warm()
        file_limit = min(MAX_FILE_BYTES, service.settings.max_upload_mb * 2**20)
        check_length(request, file_limit + FORM_OVERHEAD_BYTES)
        form = await read_form(request, MAX_FORM_FIELDS * 1024)
        data = await read_upload(form.get("file"), file_limit, "voice file")
        name = form.get("name", "")
        if not isinstance(name, str):
            raise HTTPException(400, "name must be a text field.")
        info = await run_in_threadpool(library.import_voice, data, name)
        return JSONResponse(voice_json(info), status_code=201, headers={"Location": f"/v1/voices/{info.id}"})

    @router.get("/voices")
    def list_voices() -> dict[str, list[dict[str, object]]]:
        """The built-in voices, then the saved ones (oldest first), and the aliases (OpenAI's voice names)."""
        return {"voices": [voice_json(info) for info in library.describe()], "aliases": library.aliases.to_json()}

    @router.get("/voices/{voice_id}")
    def get_voice(voice_id: str) -> dict[str, object]:
        return voice_json(library.get(voice_id))

    @router.patch("/voices/{voice_id}")
    def rename_voice(voice_id: str, body: RenameBody) -> dict[str, object]:
        """Rename a saved voice (its id stays)."""
        return voice_json(library.rename(voice_id, body.name))

    @router.get("/voices/{voice_id}/prompt", response_class=Response)
    async def voice_prompt(voice_id: str) -> Response:
        """The voice's prompt as a WAV file, to hear what it sounds like."""
        samples, rate = await run_in_threadpool(library.prompt_audio, voice_id)
        return Response(await run_in_threadpool(encode_audio, samples, rate, "wav"), media_type="audio/wav")

    @router.get("/voices/{voice_id}/export", response_class=Response)
    async def export_voice(voice_id: str) -> Response:
        """The voice as one file (prompt, transcript, analysis) for POST /v1/voices/import elsewhere."""
        require_warm()
        filename, data = await run_in_threadpool(library.export, voice_id)
        disposition = f'attachment; filename="{filename}"'
        return Response(data, media_type="application/zip", headers={"Content-Disposition": disposition})

    @router.delete("/voices/{voice_id}")
    def delete_voice(voice_id: str) -> dict[str, object]:
        library.delete(voice_id)
        return {"id": voice_id, "deleted": True}

    return router
