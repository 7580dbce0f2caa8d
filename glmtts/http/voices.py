"""Saved voices as a resource: create from a prompt upload, list, show, delete."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from glmtts.audio import PROMPT_MAX_BYTES
from glmtts.http.forms import FORM_OVERHEAD_BYTES, MAX_FORM_FIELDS, check_length, read_form, read_upload
from glmtts.service import Service
from glmtts.voices import MAX_NAME_CHARS, VoiceInfo

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
                        "name": {
                            "type": "string",
                            "maxLength": MAX_NAME_CHARS,
                            "description": "usable as `voice` (stored NFKC-normalized, compared case-folded); no control, format, "
                            "private-use or unassigned characters; not a built-in's, an alias's or another saved voice's name (409)",
                        },
                    },
                }
            }
        }
    }
}


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

    @router.get("/voices")
    def list_voices() -> dict[str, list[dict[str, object]]]:
        """The built-in voices, then the saved ones (oldest first), and the aliases (OpenAI's voice names)."""
        return {"voices": [voice_json(info) for info in library.describe()], "aliases": library.aliases.to_json()}

    @router.get("/voices/{voice_id}")
    def get_voice(voice_id: str) -> dict[str, object]:
        return voice_json(library.get(voice_id))

    @router.delete("/voices/{voice_id}")
    def delete_voice(voice_id: str) -> dict[str, object]:
        library.delete(voice_id)
        return {"id": voice_id, "deleted": True}

    return router
