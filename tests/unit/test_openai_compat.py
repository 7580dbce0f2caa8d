"""OpenAI compatibility pieces: the voice alias file, model names, the speed range and the error body."""

import json
import logging
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from glmtts.http.errors import add_v1_fallback, install_error_handlers
from glmtts.http.speech import SpeechBody
from glmtts.metrics import Metrics, MetricsMiddleware
from glmtts.openai_compat import (
    OPENAI_MODELS,
    OPENAI_VOICES,
    VoiceAliases,
    audio_models,
    error_type,
    missing_parameter,
    model_error,
    model_names,
    model_not_found,
    model_object,
    models_list,
    openai_error,
    validation_error,
    voice_name,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "configs" / "openai_voices.json"
BUILTIN = {p.stem for p in (ROOT / "examples" / "prompt").glob("*.flac")}
FEMALE, MALE = {"libri_367", "libri_1998"}, {"libri_1688", "libri_2414"}  # examples/prompt/README.md


def write(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "openai_voices.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def test_shipped_file_maps_every_openai_voice_to_a_builtin_voice(caplog):
    with caplog.at_level(logging.WARNING):
        aliases = VoiceAliases.load(SHIPPED, BUILTIN)
    assert not caplog.records
    assert set(aliases.mapping) == set(OPENAI_VOICES)
    assert set(aliases.mapping.values()) == BUILTIN  # every built-in voice is used
    # the voices OpenAI describes as female / male get a female / male speaker; onyx is the deepest
    for alias in ("alloy", "coral", "nova", "sage", "shimmer", "marin"):
        assert aliases.mapping[alias] in FEMALE, alias
    for alias in ("ash", "ballad", "echo", "fable", "onyx", "verse", "cedar"):
        assert aliases.mapping[alias] in MALE, alias
    assert aliases.mapping["onyx"] == "libri_2414"


def test_resolve_prefers_our_voice_names_then_aliases():
    aliases = VoiceAliases({"alloy": "libri_367", "libri_1688": "libri_2414"})
    known = {"libri_367", "libri_1688", "libri_2414"}
    assert aliases.resolve("alloy", known) == "libri_367"
    assert aliases.resolve("libri_1688", known) == "libri_1688"  # a voice of ours is never remapped
    assert aliases.resolve("nobody", known) == "nobody"  # left for the pipeline's "Unknown voice" message


def test_unknown_targets_are_a_warning_not_a_crash(tmp_path, caplog):
    path = write(tmp_path, {"alloy": "libri_367", "echo": "my_saved_voice", "libri_367": "libri_1688"})
    with caplog.at_level(logging.WARNING):
        aliases = VoiceAliases.load(path, {"libri_367", "libri_1688"})
    assert aliases.mapping["echo"] == "my_saved_voice"  # kept: a voice of that name may be saved later
    text = caplog.text
    assert "'echo' -> 'my_saved_voice'" in text and str(path) in text and "(voices: libri_1688, libri_367)" in text
    assert "hidden by the voice of the same name" in text
    assert aliases.warn_unknown({"libri_367", "libri_1688", "my_saved_voice"}) == {}


@pytest.mark.parametrize(
    ("content", "warning"),
    [
        (None, "No voice alias file"),
        ("{not json", "unreadable"),
        (["alloy", "libri_367"], "one JSON object"),
    ],
)
def test_a_missing_or_broken_file_gives_no_aliases_and_a_warning(tmp_path, caplog, content, warning):
    path = tmp_path / "missing.json" if content is None else write(tmp_path, content)
    with caplog.at_level(logging.WARNING):
        aliases = VoiceAliases.load(path, BUILTIN)
    assert aliases.mapping == {} and warning in caplog.text


def test_bad_entries_are_skipped_with_a_warning(tmp_path, caplog):
    path = write(tmp_path, {"alloy": 3, " ": "libri_367", "nova": "  libri_367 ", "echo": ""})
    with caplog.at_level(logging.WARNING):
        aliases = VoiceAliases.load(path, BUILTIN)
    assert aliases.mapping == {"nova": "libri_367"}
    assert [r.getMessage().count(": skipped ") for r in caplog.records] == [1, 1, 1]


def test_alias_listing():
    listed = VoiceAliases({"alloy": "libri_367", "narrator": "libri_2414"}).to_json()
    assert listed == [
        {"id": "alloy", "alias_of": "libri_367", "openai": True},
        {"id": "narrator", "alias_of": "libri_2414", "openai": False},
    ]


def test_voice_may_be_a_custom_voice_object():
    assert voice_name("alloy") == "alloy" and voice_name(None) is None
    assert voice_name({"id": "voice_1234"}) == "voice_1234" and voice_name({"name": "x"}) is None


def test_models_accept_openai_names_and_the_loaded_engine():
    assert model_names("embedded") == ("embedded", *OPENAI_MODELS)
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= set(OPENAI_MODELS)
    for model in (None, "tts-1", "tts-1-hd", "gpt-4o-mini-tts", "glm-tts"):
        assert model_error(model, "glm-tts") is None
    message = model_error("glm-tts", "embedded")
    assert "'glm-tts'" in message and "embedded" in message and "tts-1" in message
    listed = models_list("embedded", created=123)
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == list(model_names("embedded"))
    assert all(m["object"] == "model" and m["created"] == 123 and m["owned_by"] for m in listed["data"])
    assert listed["data"][1] == model_object("tts-1", 123)
    assert audio_models("embedded") == {"models": [{"id": name} for name in model_names("embedded")]}  # Open WebUI's shape
    message = model_not_found("nope", "embedded")
    assert "'nope' does not exist" in message and "tts-1" in message


@pytest.mark.parametrize(
    ("status", "type_", "code"),
    [
        (400, "invalid_request_error", None),
        (401, "invalid_request_error", "invalid_api_key"),
        (403, "invalid_request_error", None),
        (404, "invalid_request_error", None),
        (413, "invalid_request_error", None),
        (422, "invalid_request_error", None),
        (429, "requests", "rate_limit_exceeded"),
        (500, "server_error", None),
        (503, "server_error", None),
        (504, "server_error", None),
    ],
)
def test_error_body_has_openais_shape(status, type_, code):
    body = openai_error(status, "Something is wrong.")
    assert body == {"error": {"message": "Something is wrong.", "type": type_, "param": None, "code": code}}
    assert error_type(status) == type_


def test_error_body_takes_param_code_and_type():
    body = openai_error(400, "Unknown voice 'x'.", param="voice", code="voice_not_found")
    assert body["error"] == {
        "message": "Unknown voice 'x'.",
        "type": "invalid_request_error",
        "param": "voice",
        "code": "voice_not_found",
    }
    assert openai_error(429, "busy", type_="server_error")["error"]["type"] == "server_error"


def test_validation_errors_become_one_message_and_the_field():
    errors = [
        {"loc": ("body", "speed"), "msg": "Input should be a valid number", "type": "float_parsing"},
        {"loc": ("body", "input"), "msg": "Field required", "type": "missing"},
    ]
    message, param = validation_error(errors)
    assert message == "speed: Input should be a valid number. input: Field required." and param == "speed"
    assert validation_error([{"loc": ("body",), "msg": "Invalid JSON"}]) == ("Invalid JSON.", None)
    assert validation_error([]) == ("The request is invalid.", None)


def test_a_missing_field_is_named_as_openai_names_it():
    errors = [
        {"loc": ("body", "speed"), "msg": "Input should be a valid number", "type": "float_parsing"},
        {"loc": ("body", "input"), "msg": "Field required", "type": "missing"},
    ]
    assert missing_parameter(errors) == ("Missing required parameter: 'input'.", "input")
    assert missing_parameter([{"loc": ("query", "limit"), "type": "missing"}]) == (
        "Missing required parameter: 'limit'.",
        "limit",
    )
    assert missing_parameter([{"loc": ("body",), "type": "missing"}]) == ("Missing request body: send a JSON object.", None)
    assert missing_parameter(errors[:1]) is None  # other validation errors stay 422s


async def not_found_page(scope: Scope, receive: Receive, send: Send) -> None:
    """What Gradio, mounted at "/", answers for a path it does not know."""
    await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)


@pytest.fixture(scope="module")
def v1_app() -> tuple[TestClient, Metrics]:
    """A tiny app shaped like the real one: a /v1 router, the error handlers, the fallback, the UI at "/"."""
    app, metrics, router = FastAPI(), Metrics(), APIRouter(prefix="/v1")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_error_handlers(app)

    @router.post("/audio/speech")
    def speech(body: SpeechBody) -> dict[str, str]:
        return {"input": body.input}

    app.include_router(router)  # included, as the real routes are: the fallback must see into routers
    add_v1_fallback(app)
    app.mount("/", not_found_page)
    return TestClient(app), metrics


def check_error(response, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body == {
        "detail": message,
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code},
    }


@pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH"])
def test_unknown_paths_under_v1_get_the_error_body_not_the_uis_404(v1_app, method):
    http, _metrics = v1_app
    message = f"Invalid URL ({method} /v1/audio/nothing): no such route; the API is listed at /docs."
    check_error(http.request(method, "/v1/audio/nothing"), 404, message)
    assert http.get("/elsewhere").json() == {"detail": "Not Found"}  # outside /v1 the UI answers, as before


@pytest.mark.parametrize("method", ["GET", "PUT", "MADE-UP"])
def test_a_known_v1_path_with_another_method_is_a_405_naming_the_allowed_ones(v1_app, method):
    http, _metrics = v1_app
    response = http.request(method, "/v1/audio/speech")
    check_error(response, 405, f"Invalid method for URL ({method} /v1/audio/speech): use POST.")
    assert response.headers["allow"] == "POST"


def test_a_missing_field_is_a_400_other_validation_errors_stay_422(v1_app):
    http, _metrics = v1_app
    missing = "Missing required parameter: 'input'."
    check_error(http.post("/v1/audio/speech", json={"voice": "alloy"}), 400, missing, "input", "missing_required_parameter")
    check_error(http.post("/v1/audio/speech", json={"seed": "abc"}), 400, missing, "input", "missing_required_parameter")
    wrong_type = http.post("/v1/audio/speech", json={"input": 12})
    assert wrong_type.status_code == 422 and wrong_type.json()["error"]["param"] == "input"
    assert http.post("/v1/audio/speech", json={"input": "hi"}).json() == {"input": "hi"}


def test_unknown_v1_paths_add_no_metric_series(v1_app):
    http, metrics = v1_app
    for n in range(3):
        http.get(f"/v1/made-up/{n}")
    exposition = metrics.exposition().decode()
    assert 'route="other"' in exposition and "made-up" not in exposition and "{path:path}" not in exposition
