"""Request bodies the routes read themselves: sizes checked before reading, clear 4xx for malformed ones."""

from __future__ import annotations

import json

from fastapi import HTTPException, Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from glmtts.http.errors import body_error_message

FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and small fields on top of the file
MAX_FORM_FIELDS = 16


def check_length(request: Request, limit: int) -> None:
    """Refuse a body that announces more than `limit` bytes before reading it."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"The request has {int(length)} bytes; the limit is {limit}.")


async def read_form(request: Request, part_limit: int) -> FormData:
    """A multipart form; a malformed one (no closing boundary, too many parts) is a 400 that says so."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise HTTPException(415, "Send multipart/form-data, with the file in a field named 'file'.")
    boundary = _boundary(content_type)
    if boundary is None:
        raise HTTPException(400, "Malformed multipart form: the Content-Type names no boundary.")
    body = await request.body()
    if f"--{boundary}--".encode("latin-1") not in body:
        raise HTTPException(400, "Malformed multipart form: the closing boundary is missing (was the upload cut short?).")
    try:
        return await request.form(max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=part_limit)
    except MultiPartException as error:
        raise HTTPException(400, f"Malformed multipart form: {error.message}") from error


def _boundary(content_type: str) -> str | None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "boundary" and value.strip('"'):
            return value.strip('"')
    return None


async def read_upload(upload: object, limit: int, what: str) -> bytes:
    if not isinstance(upload, UploadFile):
        raise HTTPException(400, f"Send the {what} as a multipart file field named 'file'.")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"The {what} is larger than {limit // 2**20} MB.")
    return data


async def read_json(request: Request) -> object:
    try:
        return json.loads(await request.body())
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise HTTPException(400, body_error_message(error) or "The body is not valid JSON.") from error
