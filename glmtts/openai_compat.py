"""What makes the speech API a drop-in for OpenAI's: voice names, model names, speed range, error shape.

- Voices: OpenAI's voice names (and any other alias an operator adds) map to our voices through
  `configs/openai_voices.json`, a flat JSON object `{"alias": "voice"}`. The shipped defaults pair
  each OpenAI voice with a built-in LibriSpeech voice of the same kind (female or male, deeper
  or higher). A name that is one of our voices is always taken as is; an alias whose target is not
  a voice at start-up is logged as a warning (it may be a saved voice created later), never a crash.
- Models: OpenAI's speech model names and the loaded engine's own name are all accepted, and all
  run the loaded engine (`model_names`; `models_list` and `model_object` for `GET /v1/models[/{id}]`,
  `audio_models` for Open WebUI's `GET /v1/audio/models`).
- Speed: OpenAI's 0.25 to 4.0, for every engine (glmtts.options checks it; glmtts.tempo does what an
  engine does not render itself).
- Errors: `openai_error` builds `{"error": {"message", "type", "param", "code"}}`, the body the
  official SDKs read the message from; a missing required field is OpenAI's 400 naming it
  (`missing_parameter`).
- `instructions` (gpt-4o-mini-tts's voice directions) are accepted and ignored: neither engine
  takes style prompts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse", "marin", "cedar",
)  # fmt: skip
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15")
OPENAI_SPEED_MIN, OPENAI_SPEED_MAX = 0.25, 4.0
MODEL_OWNER = "glmtts"

# The `type` OpenAI's API gives each status; other 4xx are invalid_request_error, 5xx server_error.
ERROR_TYPES = {401: "invalid_request_error", 429: "requests"}
DEFAULT_ERROR_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
MISSING_PARAMETER = "missing_required_parameter"  # OpenAI's code for a request without a required field
MODEL_NOT_FOUND = "model_not_found"  # and for a model id it does not know
REQUEST_SOURCES = ("body", "query", "path", "header", "cookie")  # the first part of FastAPI's error locations


@dataclass(frozen=True)
class VoiceAliases:
    """Voice names a request may use besides our own (OpenAI's `alloy`, ...), each naming one of our voices."""

    mapping: dict[str, str] = field(default_factory=dict)
    source: Path | None = None  # the file they were read from, for messages

    @classmethod
    def load(cls, path: Path, known_voices: Collection[str] | None = None) -> VoiceAliases:
        """Read the alias file; problems are start-up warnings, and bad entries are skipped.

        A missing or unreadable file gives no aliases. When `known_voices` is given, an alias whose
        target is not among them is kept (it may name a voice saved later) and warned about.
        """
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            _LOGGER.warning("No voice alias file at %s: OpenAI voice names (alloy, ...) will not resolve", path)
            return cls({}, path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            _LOGGER.warning("Voice alias file %s is unreadable (%s): no OpenAI voice names", path, error)
            return cls({}, path)
        if not isinstance(raw, dict):
            _LOGGER.warning("Voice alias file %s must hold one JSON object {alias: voice}: no OpenAI voice names", path)
            return cls({}, path)
        mapping: dict[str, str] = {}
        for alias, target in raw.items():
            if not alias.strip() or not isinstance(target, str) or not target.strip():
                _LOGGER.warning("Voice alias file %s: skipped %r: %r (want a name and a voice name)", path, alias, target)
                continue
            mapping[alias.strip()] = target.strip()
        aliases = cls(mapping, path)
        if known_voices is not None:
            aliases.warn_unknown(known_voices)
        return aliases

    def warn_unknown(self, known_voices: Collection[str]) -> dict[str, str]:
        """Log (and return) the aliases whose target is not one of `known_voices`, and aliases that a
        voice of the same name hides."""
        unknown = {alias: target for alias, target in self.mapping.items() if target not in known_voices}
        for alias, target in unknown.items():
            _LOGGER.warning(
                "Voice alias %r -> %r (%s): no such voice now; requests for %r fail until a voice %r exists "
                "(voices: %s)",
                alias, target, self.source, alias, target, ", ".join(sorted(known_voices)) or "none",
            )  # fmt: skip
        for alias in sorted(set(self.mapping) & set(known_voices)):
            _LOGGER.warning("Voice alias %r (%s) is hidden by the voice of the same name", alias, self.source)
        return unknown

    def resolve(self, voice: str, known_voices: Collection[str]) -> str:
        """The voice a request's `voice` means: one of ours as is, else its alias's target, else `voice`
        unchanged (so the pipeline rejects it with its usual "Unknown voice" message)."""
        if voice in known_voices:
            return voice
        return self.mapping.get(voice, voice)

    def to_json(self) -> list[dict[str, object]]:
        """The aliases for `GET /v1/voices`: `{"id": "alloy", "alias_of": "libri_1998", "openai": true}`."""
        return [{"id": alias, "alias_of": target, "openai": alias in OPENAI_VOICES} for alias, target in self.mapping.items()]


def voice_name(voice: str | Mapping[str, object] | None) -> str | None:
    """A request's `voice` as a name: newer OpenAI SDKs may send a custom voice as `{"id": "..."}`."""
    if isinstance(voice, Mapping):
        voice_id = voice.get("id")
        return voice_id if isinstance(voice_id, str) else None
    return voice


def model_names(engine_name: str) -> tuple[str, ...]:
    """Every `model` a speech request may name; all of them run the loaded engine (`embedded` or `glm-tts`)."""
    return (engine_name, *OPENAI_MODELS)


def model_error(model: str | None, engine_name: str) -> str | None:
    """None when `model` is accepted (or not given), else the message for the 400."""
    names = model_names(engine_name)
    if model is None or model in names:
        return None
    return f"Unknown model {model!r}; this server runs the {engine_name} engine as: {', '.join(names)}."


def model_object(name: str, created: int = 0) -> dict[str, object]:
    """One model in OpenAI's shape, which `client.models.retrieve(name)` reads."""
    return {"id": name, "object": "model", "created": created, "owned_by": MODEL_OWNER}


def models_list(engine_name: str, created: int = 0) -> dict[str, object]:
    """`GET /v1/models` in OpenAI's list shape, which `client.models.list()` reads."""
    return {"object": "list", "data": [model_object(name, created) for name in model_names(engine_name)]}


def audio_models(engine_name: str) -> dict[str, list[dict[str, str]]]:
    """`GET /v1/audio/models` in Open WebUI's shape: `{"models": [{"id": "tts-1"}, ...]}`."""
    return {"models": [{"id": name} for name in model_names(engine_name)]}


def model_not_found(model: str, engine_name: str) -> str:
    """The 404 message for a model id `GET /v1/models/{id}` does not know."""
    return f"The model {model!r} does not exist; this server runs the {engine_name} engine as: {', '.join(model_names(engine_name))}."


def error_type(status: int) -> str:
    """The `type` OpenAI's API puts in an error of HTTP `status`."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def openai_error(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    type_: str | None = None,
) -> dict[str, dict[str, str | None]]:
    """The error body OpenAI's API sends and its SDKs read: `{"error": {"message", "type", "param", "code"}}`.

    `type` follows the status (400 `invalid_request_error`, 401 the same with code `invalid_api_key`,
    429 `requests` with code `rate_limit_exceeded`, 5xx `server_error`) unless `type_` is given.
    """
    return {
        "error": {
            "message": message,
            "type": type_ or error_type(status),
            "param": param,
            "code": code if code is not None else DEFAULT_ERROR_CODES.get(status),
        }
    }


def _field_path(error: Mapping[str, object]) -> list[str]:
    """Where a validation error is, less FastAPI's leading source ("body", "query", ...): ["input"]."""
    location = [str(part) for part in error.get("loc", ())]
    return location[1:] if location and location[0] in REQUEST_SOURCES else location


def missing_parameter(errors: Iterable[Mapping[str, object]]) -> tuple[str, str | None] | None:
    """The message and `param` of OpenAI's 400 for the first required field (or body) a request lacks,
    e.g. ("Missing required parameter: 'input'.", "input"); None when nothing required is missing."""
    for error in errors:
        if error.get("type") == "missing":
            path = ".".join(_field_path(error))
            if not path:
                return "Missing request body: send a JSON object.", None
            return f"Missing required parameter: {path!r}.", path
    return None


def validation_error(errors: Iterable[Mapping[str, object]]) -> tuple[str, str | None]:
    """A request-validation failure (pydantic's `errors()`) as one message and the first bad field
    (`param`), without echoing the input; e.g. ("speed: Input should be a valid number.", "speed")."""
    messages, param = [], None
    for error in errors:
        location = _field_path(error)
        where = ".".join(location)
        if param is None and location:
            param = location[0]
        text = str(error.get("msg", "invalid value")).rstrip(".")
        messages.append(f"{where}: {text}." if where else f"{text}.")
    return (" ".join(messages) or "The request is invalid."), param
