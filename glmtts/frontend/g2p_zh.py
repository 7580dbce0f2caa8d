"""Chinese G2P: jieba words + pypinyin's dictionaries + our phrase list + context rules + a context
model -> readings.

Readings are lexical, as a dictionary gives them (with neutral tones, before tone sandhi, which
`tone_sandhi` applies for the voice that expects it): jieba cuts the text into words, pypinyin's
phrase and character dictionaries read each word, the phrase list `polyphones.txt` overrides them
where a phrase lies on word boundaries, `zh_rules` settles polyphones that stand as words of their
own from their neighbours, the context model (`polyphone_model`, with g2pM's network as one input)
reads the polyphones none of these settled, and `zh_rules` adds regular neutral tones.

A syllable becomes an initial and a tone-numbered final ("SH", "ANG1"), or a final alone for
zero-initial syllables: y/w spellings are resolved ("yao4" -> "IAO4", "wo3" -> "UO3",
"yu2" -> "V2"), contracted finals expanded (iu -> IOU, ui -> UEI, un -> UEN), u after j/q/x is V,
and i after zh/ch/sh/r is III, after z/c/s II. The neutral tone is 5.
"""

from __future__ import annotations

import functools
import logging
import marshal
import re
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from glmtts.files import atomic_output, made_once
from glmtts.frontend.g2pm_reader import NeuralReader
from glmtts.frontend.phonemes import FINAL_TONES
from glmtts.frontend.polyphone_model import ALONE, PHRASE, Context, PolyphoneModel, candidates
from glmtts.frontend.zh_rules import RULE_CHARS, apply_neutral_rules, apply_polyphone_rules

_LOGGER = logging.getLogger(__name__)

POLYPHONES_RESOURCE = "polyphones.txt"
WORD_COUNTS_FORMAT = 1  # the layout of our cache of jieba's dictionary
# jieba's dictionary counts: below this a "word" is most likely a glued fragment (他数, 会弹).
COMMON_WORD_FREQUENCY = 50
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


def load_phrase_readings(text: str) -> dict[str, tuple[str, ...]]:
    """Polyphone file text -> {phrase: tone-numbered reading per character}; raises ValueError on a bad line."""
    phrases: dict[str, tuple[str, ...]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        phrase, _, reading = line.partition("\t")
        syllables = reading.split()
        if len(syllables) != len(phrase):
            raise ValueError(f"polyphones line {number}: {phrase!r} has {len(phrase)} characters but {len(syllables)} syllables")
        for syllable in syllables:
            pinyin_to_symbols(syllable)  # raises ValueError for a syllable with no spelling
        phrases[phrase] = tuple(syllables)
    return phrases


def _import_jieba():
    """jieba, imported without pkg_resources (a third of a second, and deprecated): without it jieba
    opens its dictionary by path."""
    if "jieba" in sys.modules or "pkg_resources" in sys.modules:
        import jieba

        return jieba
    sys.modules["pkg_resources"] = None  # makes `import pkg_resources` raise ImportError
    try:
        import jieba
    finally:
        del sys.modules["pkg_resources"]
    return jieba


def _word_counts(jieba, tokenizer, cache_dir: Path) -> tuple[dict[str, int], int]:
    """jieba's prefix dictionary (word -> count, 0 for a prefix that is no word) and the counts' total.

    jieba caches it as one marshalled dict, about 1.3 s to read on a 2-core machine; our cache holds
    the words as one text and the counts as one array, read in a third of that. It is named by the
    dictionary file's size and time, so another jieba's dictionary gets its own.
    """
    dictionary = Path(jieba.__file__).with_name(jieba.DEFAULT_DICT_NAME)
    stat = dictionary.stat()
    cache = cache_dir / f"jieba-words-{WORD_COUNTS_FORMAT}-{stat.st_size}-{stat.st_mtime_ns}.marshal"

    def read() -> tuple[dict[str, int], int] | None:
        try:
            with cache.open("rb") as handle:
                words, counts, total = marshal.load(handle)
            return dict(zip(words.split("\n"), np.frombuffer(counts, np.int64).tolist(), strict=True)), total
        except (OSError, EOFError, ValueError, TypeError):
            return None

    def make() -> tuple[dict[str, int], int]:
        freq, total = tokenizer.gen_pfdict(tokenizer.get_dict_file())
        try:
            with atomic_output(cache) as handle:
                marshal.dump(("\n".join(freq), np.fromiter(freq.values(), np.int64, len(freq)).tobytes(), total), handle)
        except OSError as error:
            _LOGGER.warning("jieba's dictionary could not be cached in %s: %s", cache_dir, error)
        return freq, total

    return made_once(cache, read, make)


@dataclass
class Analysis:
    """A run of Han characters read by dictionaries, phrases and rules, before the context model."""

    text: str
    words: list[str]  # jieba's
    readings: list[str]  # one per character
    phrase_read: list[bool]  # read from pypinyin's phrase dictionary
    fixed: list[bool]  # settled by our phrase list
    rule_sources: list[str]  # zh_rules.RULE where a context rule settled it, zh_rules.DEFAULT where its defaults read it
    polyphonic: frozenset[str]  # the characters the context model reads

    def unsettled(self) -> list[int]:
        """Positions of polyphonic characters that neither our phrase list nor zh_rules settled."""
        flags = zip(self.text, self.fixed, self.rule_sources, strict=True)
        return [i for i, (ch, fixed, source) in enumerate(flags) if ch in self.polyphonic and not (fixed or source)]

    def context(self, index: int, default_reading: str, neural: dict[str, float] | None = None) -> Context:
        """The model's view of the character at `index`."""
        position = word_index = 0
        while position + len(self.words[word_index]) <= index:
            position += len(self.words[word_index])
            word_index += 1
        source = PHRASE if self.phrase_read[index] else ALONE
        words = tuple(self.words)
        return Context(self.text, index, words, word_index, self.readings[index], source, default_reading, neural or {})


class ChineseG2P:
    """Turns runs of Han characters into lexical readings, one per character, and their words."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir  # where jieba keeps its parsed dictionary (default: the system's temp folder)
        self._tokenizer = None
        self._phrase_dict: dict[str, list[list[str]]] = {}
        self._char_dict: dict[int, str] = {}
        self._segment = None
        self._phrases: dict[str, tuple[str, ...]] = {}
        self._phrase_lengths: list[int] = []
        self._model: PolyphoneModel | None = None
        self._neural: NeuralReader | None = None
        self._polyphonic: frozenset[str] = frozenset()  # the characters the context model reads

    def load(self, use_model: bool = True) -> None:
        """Load jieba's dictionary, pypinyin's dictionaries, the polyphone list and the context model
        (without it, where nothing else settles a polyphone pypinyin's first-listed reading stays); idempotent."""
        if self._tokenizer is not None:
            return
        jieba = _import_jieba()
        from pypinyin.constants import PHRASES_DICT, PINYIN_DICT
        from pypinyin.seg.mmseg import seg

        logging.getLogger("jieba").setLevel(logging.WARNING)
        tokenizer = jieba.Tokenizer()
        tokenizer.FREQ, tokenizer.total = _word_counts(jieba, tokenizer, self.cache_dir or Path(tempfile.gettempdir()))
        tokenizer.initialized = True
        text = resources.files("glmtts.frontend").joinpath(POLYPHONES_RESOURCE).read_text(encoding="utf-8")
        self._phrases = load_phrase_readings(text)
        self._phrase_lengths = sorted({len(p) for p in self._phrases}, reverse=True)
        self._phrase_dict, self._char_dict, self._segment = PHRASES_DICT, PINYIN_DICT, seg.cut
        self.set_model(PolyphoneModel.load() if use_model else None)
        self._tokenizer = tokenizer
        self.syllables("预热一下")
        _LOGGER.info("Chinese G2P ready with %d polyphone phrases", len(self._phrases))

    def set_model(self, model: PolyphoneModel | None) -> None:
        """Read unsettled polyphones with `model` (None: keep the dictionaries' readings)."""
        self._model = model
        self._neural = NeuralReader() if model is not None and model.uses_neural else None
        self._polyphonic = frozenset(model.readings) if model is not None else frozenset()

    # ----------------------------------------------------------------------------- readings
    def _phrase_readings(self, piece: str) -> list[str] | None:
        """pypinyin's phrase-dictionary readings of a piece of two or more characters, None where it has none."""
        marked = self._phrase_dict.get(piece) if len(piece) > 1 else None
        if marked is not None and len(marked) == len(piece):
            return [marked_to_tone3(m[0]) for m in marked]
        return None

    def _piece_readings(self, piece: str) -> list[str]:
        """A piece pypinyin's segmenter cut -> tone-numbered readings (phrase dictionary, else characters)."""
        phrase = self._phrase_readings(piece)
        return phrase if phrase is not None else [self.default_reading(ch) for ch in piece]

    def _word_pieces(self, word: str) -> list[str]:
        """A jieba word -> the pieces pypinyin reads it in: the word when it knows it, else its segments."""
        if len(word) == 1 or word in self._phrase_dict:
            return [word]
        return list(self._segment(word))

    def analyse(self, text: str) -> tuple[list[str], list[str]]:
        """Han characters -> (jieba words, one lexical reading per character: "hai2", "" for none)."""
        analysis = self.settle(text)
        if self._model is not None:
            for index, context in self.contexts(analysis, analysis.unsettled()).items():
                analysis.readings[index] = self._model.predict(text[index], context)
        apply_neutral_rules(analysis.words, analysis.readings, analysis.fixed)
        return analysis.words, analysis.readings

    def settle(self, text: str) -> Analysis:
        """Han characters -> jieba's words and the readings that dictionaries, phrases and rules give,
        before the context model and the neutral-tone rules."""
        if self._tokenizer is None:
            raise RuntimeError("ChineseG2P.load() was not called")
        if not text:
            return Analysis(text, [], [], [], [], [], frozenset())
        words = self._tokenizer.lcut(text)
        pieces = [piece for word in words for piece in self._word_pieces(word)]
        readings = [reading for piece in pieces for reading in self._piece_readings(piece)]
        phrase_read = [self._phrase_readings(piece) is not None for piece in pieces for _ in piece]
        if len(readings) != len(text):  # a word jieba changed (never seen); read it character by character
            readings = [r for ch in text for r in self._piece_readings(ch)]
            phrase_read = [False] * len(text)
        fixed = self._apply_phrases(text, words, readings)
        rule_words, taken_apart = self._rule_words(words)
        rule_sources = apply_polyphone_rules(rule_words, taken_apart, readings, fixed)
        return Analysis(text, words, readings, phrase_read, fixed, rule_sources, self._polyphonic)

    def contexts(self, analysis: Analysis, positions: list[int]) -> dict[int, Context]:
        """The context model's view of the characters at `positions` (g2pM asked once for all)."""
        model, text = self._model, analysis.text
        if not positions or model is None:
            return {}
        asked = {i: candidates(model.readings[text[i]], analysis.readings[i]) for i in positions}
        neural = self._neural.distributions(text, asked) if self._neural is not None else {}
        return {i: analysis.context(i, self.default_reading(text[i]), neural.get(i)) for i in positions}

    def default_reading(self, char: str) -> str:
        """pypinyin's first-listed reading of a character (\"\" for none)."""
        listed = self._char_dict.get(ord(char))
        return marked_to_tone3(listed.split(",", 1)[0]) if listed else ""

    def _rule_words(self, words: list[str]) -> tuple[list[str], list[bool]]:
        """jieba's words for the context rules, and which characters came from a word taken apart.

        A word pypinyin does not know that holds a character a rule settles is taken apart: when
        jieba glued it from unknown text or it is a rare dictionary entry (他数, 树结, 背不动: 他 数,
        树 结, 背 不 动), its characters count as words of their own; when it is a common word
        (计划, 静静地), rules may still see its characters but the defaults do not apply to them.
        """
        out: list[str] = []
        taken_apart: list[bool] = []
        for word in words:
            if len(word) == 1 or word in self._phrase_dict or not any(ch in RULE_CHARS for ch in word):
                out.append(word)
                taken_apart.append(False)
            elif self._tokenizer.FREQ.get(word, 0) >= COMMON_WORD_FREQUENCY:
                out.extend(word)
                taken_apart.extend([True] * len(word))
            else:  # glued or rare: its dictionary words (调整计划: 调整 计划), rare ones taken apart
                sub_words, sub_flags = self._rule_words(self._common_words(word))
                out.extend(sub_words)
                taken_apart.extend(sub_flags)
        return out, taken_apart

    def _common_words(self, word: str) -> list[str]:
        """A glued word -> the longest common dictionary words in it, left to right, else characters."""
        parts: list[str] = []
        i = 0
        while i < len(word):
            for j in range(len(word) - (i == 0), i + 1, -1):  # never the whole word again
                if self._tokenizer.FREQ.get(word[i:j], 0) >= COMMON_WORD_FREQUENCY:
                    break
            else:
                j = i + 1
            parts.append(word[i:j])
            i = j
        return parts

    def readings(self, text: str) -> list[str]:
        """Han characters -> one lexical tone-numbered reading per character ("" for none)."""
        return self.analyse(text)[1]

    def syllables(self, text: str) -> list[tuple[str, ...]]:
        """Han characters -> one lexical symbol tuple per character (empty for a character with no reading)."""
        return [reading_to_symbols(ch, reading) for ch, reading in zip(text, self.readings(text), strict=True)]

    def _apply_phrases(self, text: str, words: list[str], out: list[str]) -> list[bool]:
        """Overlay polyphone phrases that lie inside one word or start and end on word boundaries;
        returns which characters a phrase settled."""
        word_of: list[int] = []
        starts = set()
        position = 0
        for index, word in enumerate(words):
            starts.add(position)
            word_of.extend([index] * len(word))
            position += len(word)
        starts.add(position)
        fixed = [False] * len(text)
        i, n = 0, len(text)
        while i < n:
            for length in self._phrase_lengths:
                j = i + length
                if j > n:
                    continue
                reading = self._phrases.get(text[i:j])
                if reading and ((i in starts and j in starts) or word_of[i] == word_of[j - 1]):
                    out[i:j] = reading
                    fixed[i:j] = [True] * length
                    i = j
                    break
            else:
                i += 1
        return fixed


@functools.lru_cache(maxsize=4096)  # pypinyin's tone-marked syllables: a few thousand
def marked_to_tone3(marked: str) -> str:
    """pypinyin's tone-marked syllable -> tone-numbered, neutral tone 5: "zhòng" -> "zhong4", "de" -> "de5"."""
    from pypinyin.contrib.tone_convert import to_tone3

    return to_tone3(marked, neutral_tone_with_five=True)


def reading_to_symbols(char: str, reading: str) -> tuple[str, ...]:
    """A reading -> symbols; () (with a warning) for a character without a usable reading."""
    try:
        symbols = pinyin_to_symbols(reading) if reading else ()
    except ValueError:
        symbols = ()
    if not symbols:
        _LOGGER.warning("No pronunciation for %r (%r); it is skipped", char, reading)
    return symbols
