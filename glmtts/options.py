"""Synthesis options, checked once against the loaded engine.

Every entry point (the UI, the speech API, batch jobs from the API and the page, the CLI) turns its
raw values into `SynthesisOptions` through `check_options`, so the same bad value gets the same
message everywhere. None means the model's default.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from pydantic import WrapValidator

from glmtts.engine import Engine
from glmtts.openai_compat import OPENAI_SPEED_MAX, OPENAI_SPEED_MIN
from glmtts.types import SynthesisError, SynthesisOptions

MAX_SEED = 2**32 - 1
SAMPLING_METHODS = ("ras", "topk")
MAX_TOP_K = 1000
MAX_TEMPERATURE = 5.0
OPTION_NAMES = ("seed", "sampling", "top_k", "top_p", "temperature", "speed", "sample_rate", "use_phoneme", "use_cache")


class OptionError(SynthesisError):
    """One option is out of range or of the wrong type; `param` names it."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def _booleans_as_sent(value: object, validate):
    """A JSON true/false reaches check_options as a boolean, which it refuses for a number (pydantic would make it 1/0)."""
    return value if isinstance(value, bool) else validate(value)


# For the number fields of request models: `seed: Annotated[int | float | None, UNCOERCED_BOOL]`.
UNCOERCED_BOOL = WrapValidator(_booleans_as_sent)


def _whole(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise OptionError(name, f"{name} must be an integer from {low} to {high}, not a boolean (got {str(value).lower()}).")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not low <= value <= high:
        raise OptionError(name, f"{name} must be a whole number from {low} to {high} (got {value!r}).")
    return value


def _number(name: str, value: object, low: float, high: float, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bound = f"above {low:g} and at most {high:g}" if low_open else f"from {low:g} to {high:g}"
        raise OptionError(name, f"{name} must be a number {bound} (got {value!r}).")
    return float(value)


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise OptionError(name, f"{name} must be true or false (got {value!r}).")
    return value


def check_options(engine: Engine, values: Mapping[str, object]) -> SynthesisOptions:
    """Raw option values (None or absent: the default) -> checked SynthesisOptions for `engine`."""
    unknown = sorted(set(values) - set(OPTION_NAMES))
    if unknown:
        raise OptionError(unknown[0], f"Unknown option(s): {', '.join(unknown)}; known: {', '.join(OPTION_NAMES)}.")
    given = {name: value for name, value in values.items() if value is not None}
    checked: dict[str, object] = {}
    if "seed" in given:
        checked["seed"] = _whole("seed", given["seed"], 0, MAX_SEED)
    if "speed" in given:  # every engine: the pipeline stretches what the engine's speed_range does not render
        checked["speed"] = _number("speed", given["speed"], OPENAI_SPEED_MIN, OPENAI_SPEED_MAX)
    if "sample_rate" in given:
        rate = given["sample_rate"]
        if isinstance(rate, bool) or rate not in engine.sample_rates:
            rates = ", ".join(map(str, engine.sample_rates))
            raise OptionError(
                "sample_rate", f"sample_rate {rate!r} is not offered by the {engine.name} engine (choose from {rates})."
            )
        checked["sample_rate"] = int(rate)
    if "sampling" in given:
        if given["sampling"] not in SAMPLING_METHODS:
            raise OptionError("sampling", f"sampling must be one of {', '.join(SAMPLING_METHODS)} (got {given['sampling']!r}).")
        checked["sampling"] = given["sampling"]
    if "top_k" in given:
        checked["top_k"] = _whole("top_k", given["top_k"], 1, MAX_TOP_K)
    if "top_p" in given:
        checked["top_p"] = _number("top_p", given["top_p"], 0.0, 1.0, low_open=True)
    if "temperature" in given:
        checked["temperature"] = _number("temperature", given["temperature"], 0.0, MAX_TEMPERATURE, low_open=True)
    for name in ("use_phoneme", "use_cache"):
        if name in given:
            checked[name] = _flag(name, given[name])
    return SynthesisOptions(**checked)


def options_to_dict(options: SynthesisOptions) -> dict[str, object]:
    """The options as stored with a batch job (read back by glmtts.jobs.interface.options_from_stored)."""
    return {name: value for name, value in dataclasses.asdict(options).items() if name in OPTION_NAMES}
