"""Chinese G2P: jieba words + pypinyin readings + our polyphone list -> GLM-TTS phoneme symbols.

A syllable becomes an initial and a tone-numbered final ("SH", "ANG1"), or a final alone for
zero-initial syllables: y/w spellings are resolved ("yao4" -> "IAO4", "wo3" -> "UO3",
"yu2" -> "V2"), contracted finals expanded (iu -> IOU, ui -> UEI, un -> UEN), u after j/q/x is V,
and i after zh/ch/sh/r is III, after z/c/s II. The neutral tone is 5. No tone sandhi, as upstream.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from importlib import resources

from glmtts.frontend.phonemes import FINAL_TONES

_LOGGER = logging.getLogger(__name__)

POLYPHONES_RESOURCE = "polyphones.txt"
_INITIALS_BY_LENGTH = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "r", "z", "c", "s")
_CONTRACTED = {"iu": "iou", "ui": "uei", "un": "uen"}
# Interjection syllables outside the initial/final system -> the nearest spelling.
# fmt: off
_SYLLABIC = {
    "n": ("", "en"), "ng": ("", "en"), "m": ("m", "u"), "hm": ("h", "en"), "hng": ("h", "eng"), "ê": ("", "ei"), "r": ("", "er"),
}
# fmt: on
_SYLLABLE_RE = re.compile(r"([a-zê]+)([1-5]?)")


def _zero_initial_final(body: str) -> str:
    """y/w spellings -> finals: "yao" -> "iao", "yu" -> "v", "ying" -> "ing", "wo" -> "uo"."""
    if body.startswith("yu"):
        return "v" + body[2:]
    if body.startswith("yi"):
        return body[1:]
    if body.startswith("y"):
        return "i" + body[1:]
    if body.startswith("wu"):
        return body[1:]
    if body.startswith("w"):
        return "u" + body[1:]
    return body


def _with_tone(final: str, tone: int) -> str:
    """Final + tone, moved to the nearest tone the inventory has for that final."""
    tones = FINAL_TONES[final]
    if tone not in tones:
        tone = tones[0] if tone == 5 else min(tones, key=lambda t: (abs(t - tone), t))
    return f"{final}{tone}"


@functools.lru_cache(maxsize=4096)  # a few thousand distinct syllables cover all of Chinese
def pinyin_to_symbols(syllable: str) -> tuple[str, ...]:
    """A tone-numbered pinyin syllable -> GLM symbols: "shang1" -> ("SH", "ANG1"), "yao4" -> ("IAO4",).

    Raises ValueError for a syllable with no spelling in the inventory.
    """
    match = _SYLLABLE_RE.fullmatch(syllable.lower().replace("ü", "v").replace("u:", "v"))
    if not match:
        raise ValueError(f"{syllable!r} is not a pinyin syllable")
    body, tone = match.group(1), int(match.group(2) or 5)
    if body in _SYLLABIC:
        initial, final = _SYLLABIC[body]
    else:
        initial = next((i for i in _INITIALS_BY_LENGTH if body.startswith(i) and len(body) > len(i)), "")
        final = body[len(initial) :]
        if not initial:
            final = _zero_initial_final(final)
        else:
            if initial in ("j", "q", "x") and final.startswith("u"):
                final = "v" + final[1:]
            final = _CONTRACTED.get(final, final)
            if final == "i" and initial in ("zh", "ch", "sh", "r"):
                final = "iii"
            elif final == "i" and initial in ("z", "c", "s"):
                final = "ii"
        if final.endswith("r") and final != "er":
            final = final[:-1]  # erhua: the suffix has no symbol of its own
    if final.upper() not in FINAL_TONES:
        raise ValueError(f"{syllable!r} has no GLM-TTS final")
    symbol = _with_tone(final.upper(), tone)
    return (initial.upper(), symbol) if initial else (symbol,)


def load_polyphones(text: str) -> dict[str, tuple[tuple[str, ...], ...]]:
    """Polyphone file text -> {phrase: symbols per character}; raises ValueError on a bad line."""
    phrases: dict[str, tuple[tuple[str, ...], ...]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        phrase, _, reading = line.partition("\t")
        syllables = reading.split()
        if len(syllables) != len(phrase):
            raise ValueError(f"polyphones line {number}: {phrase!r} has {len(phrase)} characters but {len(syllables)} syllables")
        phrases[phrase] = tuple(pinyin_to_symbols(s) for s in syllables)
    return phrases


class ChineseG2P:
    """Turns runs of Han characters into GLM-TTS symbols, one syllable per character."""

    def __init__(self) -> None:
        self._tokenizer = None
        self._lazy_pinyin = None
        self._style = None
        self._phrases: dict[str, tuple[tuple[str, ...], ...]] = {}
        self._phrase_lengths: list[int] = []

    def load(self) -> None:
        """Load jieba's dictionary, pypinyin and the polyphone list; idempotent."""
        if self._tokenizer is not None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jieba imports the deprecated pkg_resources
            import jieba
        from pypinyin import Style, lazy_pinyin

        logging.getLogger("jieba").setLevel(logging.WARNING)
        tokenizer = jieba.Tokenizer()
        tokenizer.initialize()
        text = resources.files("glmtts.frontend").joinpath(POLYPHONES_RESOURCE).read_text(encoding="utf-8")
        self._phrases = load_polyphones(text)
        self._phrase_lengths = sorted({len(p) for p in self._phrases}, reverse=True)
        self._lazy_pinyin, self._style = lazy_pinyin, Style
        self._tokenizer = tokenizer
        self.syllables("预热一下")
        _LOGGER.info("Chinese G2P ready with %d polyphone phrases", len(self._phrases))

    def _pinyin(self, words: list[str]) -> list[str]:
        return self._lazy_pinyin(
            words, style=self._style.TONE3, neutral_tone_with_five=True, errors=lambda chars: [""] * len(chars)
        )

    def syllables(self, text: str) -> list[tuple[str, ...]]:
        """Han characters -> one symbol tuple per character (empty for a character with no reading)."""
        if self._tokenizer is None:
            raise RuntimeError("ChineseG2P.load() was not called")
        if not text:
            return []
        words = self._tokenizer.lcut(text)
        readings = self._pinyin(words)
        if len(readings) != len(text):
            readings = [r for ch in text for r in (self._pinyin([ch]) or [""])[:1]]
        out: list[tuple[str, ...]] = []
        for ch, reading in zip(text, readings, strict=True):
            try:
                out.append(pinyin_to_symbols(reading) if reading else ())
            except ValueError:
                out.append(())
            if not out[-1]:
                _LOGGER.warning("No pronunciation for %r (%r); it is skipped", ch, reading)
        self._apply_phrases(text, words, out)
        return out

    def _apply_phrases(self, text: str, words: list[str], out: list[tuple[str, ...]]) -> None:
        """Overlay polyphone phrases that lie inside one word or start and end on word boundaries."""
        word_of: list[int] = []
        starts = set()
        position = 0
        for index, word in enumerate(words):
            starts.add(position)
            word_of.extend([index] * len(word))
            position += len(word)
        starts.add(position)
        i, n = 0, len(text)
        while i < n:
            for length in self._phrase_lengths:
                j = i + length
                if j > n:
                    continue
                reading = self._phrases.get(text[i:j])
                if reading and ((i in starts and j in starts) or word_of[i] == word_of[j - 1]):
                    out[i:j] = reading
                    i = j
                    break
            else:
                i += 1
