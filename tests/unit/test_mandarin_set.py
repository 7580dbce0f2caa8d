"""Our Mandarin test set (tests/data/mandarin): every reading is one the dictionary gives the
character, and the frontend reads polyphones, tone sandhi and neutral tones as the set says.

`bench/bench_frontend.py` prints the same figures, per part and against an older frontend.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

from glmtts.frontend import TextFrontend
from glmtts.frontend.g2p_zh import marked_to_tone3, pinyin_to_symbols
from glmtts.frontend.phonemes import tokens_to_syllables

_ROOT = Path(__file__).resolve().parents[2]
POLYPHONE_FILES = ("polyphones.txt", "polyphones_heldout.txt")
SANDHI_FILES = ("sandhi.txt", "sandhi_heldout.txt")
MIN_POLYPHONE_ACCURACY = 0.95
MIN_SANDHI_ACCURACY = 0.90


def _bench():
    spec = importlib.util.spec_from_file_location("bench_frontend", _ROOT / "bench" / "bench_frontend.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.fixture(scope="module")
def frontend():
    fe = TextFrontend()
    fe.load()
    return fe


def _dictionary_readings(char: str) -> set[str]:
    from pypinyin.constants import PINYIN_DICT

    return {marked_to_tone3(marked) for marked in PINYIN_DICT.get(ord(char), "").split(",") if marked}


def _toneless(reading: str) -> str:
    return reading.rstrip("012345")


def test_the_set_is_large_and_covers_the_characters_asked_for():
    polyphones = [case for name in POLYPHONE_FILES for case in bench.read_set(name)]
    characters = {target.char for case in polyphones for target in case.targets}
    assert len(polyphones) >= 150 and len(characters) >= 40
    assert set("还行长重得地着了好为调背空种便乐处大数差参朝传弹都干发觉量没难奇强少省似应中转曾藏散") <= characters
    sandhi = [case for name in SANDHI_FILES for case in bench.read_set(name)]
    assert {case.category for case in sandhi} == {"yi", "bu", "t3", "neutral", "erhua"}


@pytest.mark.parametrize("name", POLYPHONE_FILES + SANDHI_FILES)
def test_every_reading_is_in_the_dictionary(name):
    """A polyphone reading is one of the character's dictionary readings (the neutral tone of one of
    them counts); a spoken reading in the sandhi set has one of its syllables, in any tone."""
    problems = []
    for case in bench.read_set(name):
        for target in case.targets:
            readings = _dictionary_readings(target.char)
            for reading in target.readings:
                if reading == bench.ERHUA:
                    ok = target.char == "儿"
                elif name.startswith("sandhi") or reading.endswith("5"):
                    ok = _toneless(reading) in {_toneless(r) for r in readings}
                else:
                    ok = reading in readings
                pinyin_to_symbols(reading) if reading != bench.ERHUA else None  # a spelling the inventory has
                if not ok:
                    problems.append(f"{case.text}: {target.char} {reading} not in {sorted(readings)}")
    assert not problems, "\n".join(problems)


def test_polyphone_accuracy(frontend):
    def glm_phonemes(text: str) -> str:
        return "".join(segment.glm_text for segment in frontend.text_to_segments(text, use_phoneme=True))

    cases = [case for name in POLYPHONE_FILES for case in bench.read_set(name)]
    result = bench.score(cases, glm_phonemes, tokens_to_syllables, pinyin_to_symbols)
    assert result["correct"] / result["total"] >= MIN_POLYPHONE_ACCURACY, result["errors"]


def test_sandhi_and_neutral_tone_accuracy(frontend):
    cases = [case for name in SANDHI_FILES for case in bench.read_set(name)]
    result = bench.score(cases, frontend.text_to_phoneme_text, tokens_to_syllables, pinyin_to_symbols)
    assert result["correct"] / result["total"] >= MIN_SANDHI_ACCURACY, result["errors"]
    for category, (correct, total) in result["per_key"].items():
        if category.isascii():
            assert correct / total >= MIN_SANDHI_ACCURACY, (category, result["errors"])
