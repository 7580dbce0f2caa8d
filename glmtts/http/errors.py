"""One error table for every route: which exception is which status, and one body shape.

Bodies carry the message twice: `detail` (FastAPI's shape, which our clients read) and `error`
(OpenAI's shape, which the OpenAI SDKs read): {"detail": msg, "error": {"message", "type", "param", "code"}}.
Every error answer has it: the table's, FastAPI's validation and HTTP errors (a missing required field
is OpenAI's 400 naming it), unexpected 500s, and unknown paths or methods under /v1, which a fallback
route answers before the UI mounted at "/" would (`add_v1_fallback`).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from glmtts.files import StorageError
from glmtts.jobs.batchfile import BatchTooLarge
from glmtts.jobs.interface import JobLimit, JobNotFound, JobStateError
from glmtts.metrics import METHODS, UNMATCHED_ROUTE
from glmtts.openai_compat import (
    MISSING_PARAMETER,
    MODEL_NOT_FOUND,
    missing_parameter,
    model_not_found,
    openai_error,
    validation_error,
)
from glmtts.options import OptionError
from glmtts.scheduler import QueueFull, QueueTimeout
from glmtts.types import Cancelled, SynthesisError, TimeLimitExceeded
from glmtts.voices import BuiltinVoice, VoiceExists, VoiceLimit, VoiceNameTaken, VoiceNotFound

_LOGGER = logging.getLogger(__name__)

RETRY_AFTER_S = 5
SHARED_STATE_DOWN = "The shared state store (Redis) is unreachable; retry in a few seconds."
JOB_LIMIT_RETRY_S = 60
CLIENT_CLOSED = 499  # nginx's code for a request whose client went away (only ever logged)
FASTAPI_BODY_ERROR = "There was an error parsing the body"  # FastAPI's text for any body it could not read


class NotReady(RuntimeError):
    """The service is still loading or warming up."""

    def __init__(self) -> None:
        super().__init__("The model is still warming up; retry in a few seconds.")


class ModelNotFound(LookupError):
    """A model id this server does not run (OpenAI's 404 `model_not_found`)."""

    param, code = "model", MODEL_NOT_FOUND

    def __init__(self, model: str, engine_name: str) -> None:
        super().__init__(model_not_found(model, engine_name))


@dataclass(frozen=True)
class _Rule:
    status: int
    retry_after_s: int | None = None
    message: str | None = None  # said instead of the error's own text (which may name internal hosts)


def shared_state_rules() -> list[tuple[type[BaseException], _Rule]]:
    """503 for what an unreachable Redis raises, once the shared state (glmtts.cluster) imported the
    client: a single service never imports it (nor needs it installed)."""
    redis_errors, cluster = sys.modules.get("redis.exceptions"), sys.modules.get("glmtts.cluster")
    if redis_errors is None or cluster is None:
        return []
    kinds = (redis_errors.ConnectionError, redis_errors.TimeoutError, cluster.SharedStateUnavailable)
    return [(kind, _Rule(503, RETRY_AFTER_S, SHARED_STATE_DOWN)) for kind in kinds]


# Most specific first: the first class an error is an instance of decides.
ERROR_TABLE: list[tuple[type[BaseException], _Rule]] = [
    (NotReady, _Rule(503, RETRY_AFTER_S)),
    (BatchTooLarge, _Rule(413)),
    (VoiceNotFound, _Rule(404)),
    (ModelNotFound, _Rule(404)),
    (JobNotFound, _Rule(404)),
    (BuiltinVoice, _Rule(403)),
    (VoiceExists, _Rule(409)),
    (VoiceNameTaken, _Rule(409)),
    (VoiceLimit, _Rule(409)),
    (JobStateError, _Rule(409)),
    (JobLimit, _Rule(429, JOB_LIMIT_RETRY_S)),
    (QueueTimeout, _Rule(503, RETRY_AFTER_S)),
    (TimeLimitExceeded, _Rule(504)),
    (StorageError, _Rule(507)),  # a full, read-only or failing disk: the message says which
    (Cancelled, _Rule(CLIENT_CLOSED)),
    (SynthesisError, _Rule(400)),
]


def body_error_message(error: BaseException | None) -> str | None:
    """Why a JSON body could not be parsed, and where; None for an error that is not about parsing.

    The classes json.loads raises on a body: JSONDecodeError (bad syntax, truncated), UnicodeDecodeError
    (not UTF-8), RecursionError (nested past the interpreter's recursion limit) and ValueError (an
    integer longer than sys.get_int_max_str_digits())."""
    if isinstance(error, json.JSONDecodeError):
        return f"The body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno} (character {error.pos})."
    if isinstance(error, UnicodeDecodeError):
        return f"The body is not UTF-8: byte 0x{error.object[error.start]:02X} at offset {error.start} ({error.reason})."
    if isinstance(error, RecursionError):
        limit = sys.getrecursionlimit()
        return f"The body is not valid JSON here: it is nested deeper than the limit of about {limit} levels."
    if isinstance(error, ValueError) and "integer string conversion" in str(error):
        return f"The body holds a number longer than {sys.get_int_max_str_digits()} digits, the limit."
    return None


def _json_invalid_message(error: RequestValidationError) -> str | None:
    """FastAPI's validation error for a body json.loads refused, as body_error_message says it (with line and column)."""
    for problem in error.errors():
        if problem.get("type") == "json_invalid" and isinstance(error.body, str):
            position = problem["loc"][-1] if isinstance(problem["loc"][-1], int) else 0
            reason = str(problem.get("ctx", {}).get("error", "JSON decode error"))
            return body_error_message(json.JSONDecodeError(reason, error.body, position))
    return None


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, object]:
    return {"detail": message, **openai_error(status, message, param, code)}


def error_response(
    status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None, code: str | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def response_for(error: BaseException) -> JSONResponse:
    """The response for an exception from the table (a bare exception is a 500 without its text)."""
    if isinstance(error, QueueFull):
        return error_response(429, str(error), headers={"Retry-After": str(error.retry_after_s)})
    for kind, rule in [*ERROR_TABLE, *shared_state_rules()]:
        if isinstance(error, kind):
            headers = {"Retry-After": str(rule.retry_after_s)} if rule.retry_after_s else None
            if rule.message:
                _LOGGER.warning("%s (%s: %s)", rule.message, type(error).__name__, error)
            param, code = getattr(error, "param", None), getattr(error, "code", None)
            return error_response(rule.status, rule.message or str(error), param, headers, code)
    return error_response(500, f"Internal error ({type(error).__name__}); see the server log.")


_NULLABLE_STRING = {"anyOf": [{"type": "string"}, {"type": "null"}]}
ERROR_BODY_SCHEMA = {
    "title": "ErrorBody",
    "type": "object",
    "required": ["detail", "error"],
    "properties": {
        "detail": {"type": "string"},
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": _NULLABLE_STRING,
                "code": _NULLABLE_STRING,
            },
        },
    },
}


def declare_error_body(api: FastAPI) -> None:
    """Make /openapi.json say what error responses carry: ErrorBody (ERROR_BODY_SCHEMA) for 422, in place of
    FastAPI's HTTPValidationError, which these handlers never send, and as every operation's default response."""
    build = api.openapi

    def openapi() -> dict[str, object]:
        schema = build()  # FastAPI's, built once and cached on the app; patching it again changes nothing
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for fastapi_name in ("ValidationError", "HTTPValidationError"):
            schemas.pop(fastapi_name, None)
        schemas["ErrorBody"] = ERROR_BODY_SCHEMA
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "422" in responses:
                    responses["422"].update(error)
                responses.setdefault("default", {"description": "An error (4xx or 5xx)", **error})
        return schema

    api.openapi = openapi


def install_error_handlers(api: FastAPI) -> None:
    declare_error_body(api)

    async def from_table(_request: Request, error: Exception) -> JSONResponse:
        return response_for(error)

    for kind in {kind for kind, _rule in [*ERROR_TABLE, *shared_state_rules()]} | {QueueFull, OptionError}:
        api.add_exception_handler(kind, from_table)

    @api.exception_handler(Exception)
    async def unexpected(_request: Request, error: Exception) -> JSONResponse:
        _LOGGER.exception("Unhandled error", exc_info=error)
        return response_for(error)

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        parse_error = body_error_message(error.__cause__) if error.detail == FASTAPI_BODY_ERROR else None
        message = parse_error or _url_error_message(request, error) or str(error.detail)
        return error_response(error.status_code, message, headers=error.headers)

    @api.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        if parse_error := _json_invalid_message(error):
            return error_response(400, parse_error)
        if missing := missing_parameter(error.errors()):
            message, field = missing
            return error_response(400, message, field, code=MISSING_PARAMETER)
        message, field = validation_error(error.errors())
        return error_response(422, message, field)


def _url_error_message(request: Request, error: HTTPException) -> str | None:
    """Starlette's bare "Not Found" / "Method Not Allowed" said as OpenAI says them, with the request's method and path."""
    if error.status_code not in (404, 405) or error.detail != HTTPStatus(error.status_code).phrase:
        return None
    where = f"{request.method[:20]} {request.url.path[:200]}"  # bounded: an answer repeats no long input
    if error.status_code == 404:
        return f"Invalid URL ({where}): no such route; the API is listed at /docs."
    return f"Invalid method for URL ({where}): use {(error.headers or {}).get('Allow', 'another method')}."


class _UnmatchedV1:
    """The ASGI app of the fallback route (an app, not a function, so that the route takes every method)."""

    def __init__(self, api: FastAPI) -> None:
        self.api = api

    def _routed(self, scope: Scope) -> bool:
        """Whether a route before the fallback takes this request (asked by matching, which sees into
        included routers too)."""
        for route in self.api.router.routes:
            if getattr(route, "name", None) == UNMATCHED_ROUTE:
                return False
            if route.matches(scope)[0] == Match.FULL:
                return True
        return False

    async def __call__(self, scope: Scope, _receive: Receive, _send: Send) -> None:
        allowed = sorted(method for method in METHODS if self._routed({**scope, "method": method}))
        if allowed:
            raise HTTPException(405, headers={"Allow": ", ".join(allowed)})
        raise HTTPException(404)


def add_v1_fallback(api: FastAPI) -> None:
    """Answer unknown paths and methods under /v1 here, with the error body, rather than in the UI mounted at "/".

    Call it after the last /v1 route: a path that one of them knows, asked with another method, is a 405
    listing the methods it takes; any other is a 404."""
    api.router.routes.append(Route("/v1/{path:path}", _UnmatchedV1(api), name=UNMATCHED_ROUTE, include_in_schema=False))
