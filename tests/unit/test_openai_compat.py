"""OpenAI compatibility pieces: the voice alias file, model names, the speed range and the error body."""

import json
import logging
from pathlib import Path

import pytest

from glmtts.openai_compat import (
    OPENAI_MODELS,
    OPENAI_VOICES,
    VoiceAliases,
    error_type,
    model_error,
    model_names,
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
