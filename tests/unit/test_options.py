"""One check of synthesis options for every entry point: same bad value, same message."""

import math
from types import SimpleNamespace

import pytest

from glmtts.options import MAX_SEED, OptionError, check_options, options_to_dict
from glmtts.types import SynthesisOptions

ENGINE = SimpleNamespace(name="embedded", sample_rates=(24000,), speed_range=(0.5, 2.0))


def test_none_means_the_models_default():
    assert check_options(ENGINE, {}) == SynthesisOptions()
    assert check_options(ENGINE, {"seed": None, "top_k": None, "speed": None}) == SynthesisOptions()
    checked = check_options(ENGINE, {"seed": 7.0, "speed": 1.5, "sample_rate": 24000, "top_p": 1, "use_cache": False})
    assert (checked.seed, checked.speed, checked.sample_rate, checked.top_p, checked.use_cache) == (7, 1.5, 24000, 1.0, False)
    assert check_options(ENGINE, options_to_dict(checked)) == checked  # a stored job's options check again


@pytest.mark.parametrize(
    ("values", "param", "message"),
    [
        ({"seed": -1}, "seed", "from 0 to 4294967295"),
        ({"seed": 2**64}, "seed", "from 0 to 4294967295"),
        ({"seed": 1.5}, "seed", "whole number"),
        ({"seed": True}, "seed", r"an integer from 0 to 4294967295, not a boolean \(got true\)"),
        ({"top_k": False}, "top_k", r"not a boolean \(got false\)"),
        ({"speed": True}, "speed", "must be a number"),
        ({"sample_rate": True}, "sample_rate", "not offered"),
        ({"seed": "42"}, "seed", "whole number"),
        ({"speed": math.nan}, "speed", "from 0.25 to 4"),
        ({"speed": math.inf}, "speed", "from 0.25 to 4"),
        ({"speed": 4.01}, "speed", "from 0.25 to 4"),
        ({"speed": 0.2}, "speed", "from 0.25 to 4"),
        ({"speed": 0}, "speed", "from 0.25 to 4"),
        ({"speed": "fast"}, "speed", "from 0.25 to 4"),
        ({"sample_rate": 8000}, "sample_rate", "choose from 24000"),
        ({"sampling": "beam"}, "sampling", "ras, topk"),
        ({"top_k": 0}, "top_k", "from 1"),
        ({"top_p": 0}, "top_p", "above 0"),
        ({"temperature": -1}, "temperature", "above 0"),
        ({"use_cache": "yes"}, "use_cache", "true or false"),
        ({"volume": 3}, "volume", "Unknown option"),
    ],
)
def test_bad_values_name_the_option_and_its_range(values, param, message):
    with pytest.raises(OptionError, match=message) as raised:
        check_options(ENGINE, values)
    assert raised.value.param == param


def test_the_seed_range_is_the_full_32_bit_range():
    assert check_options(ENGINE, {"seed": MAX_SEED}).seed == 2**32 - 1


@pytest.mark.parametrize("speed_range", [(0.5, 2.0), (1.0, 1.0)])
@pytest.mark.parametrize("speed", [0.25, 0.5, 1, 1.5, 4.0])
def test_openais_speed_range_is_accepted_whatever_the_engine_renders_itself(speed_range, speed):
    engine = SimpleNamespace(name="glm-tts", sample_rates=(24000,), speed_range=speed_range)
    assert check_options(engine, {"speed": speed}).speed == speed
