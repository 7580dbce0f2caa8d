"""Sentence splitting, synthesis-segment chunking and zh/en language runs, all in linear time.

Normalized text becomes a list of units (a Han character, a token syllable, a dictionary match,
an English word, an override span, punctuation, a space). Segments are cut only between units, so
never inside a `<|...|>` syllable or a `[[...]]` span. Like upstream GLM-TTS, a Han character or
syllable weighs 1 and an English syllable 0.7; a segment closes at the first punctuation once it
weighs at least `MIN_SEGMENT_WEIGHT`, and clauses heavier than `MAX_SEGMENT_WEIGHT` are cut into
even pieces at word boundaries.

No segment is longer than `MAX_SEGMENT_CHARS` characters, whatever the text: a stretch longer than
that with no space or punctuation in it (a 20,000-letter "word", Chinese without punctuation) has no
break to cut at, so it is hard-split: its words are cut into pieces of at most `MAX_WORD_CHARS`
letters and its units are marked `cut`, which makes their segments `hard_split`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from glmtts.frontend.phonemes import EnOverride, ZhSyllable
from glmtts.frontend.replace_dict import DictMatch
from glmtts.frontend.text_utils import CJK_RANGES, LATIN_LETTERS

MIN_SEGMENT_WEIGHT = 30.0
MAX_SEGMENT_WEIGHT = 60.0
EN_SYLLABLE_WEIGHT = 0.7
# The most characters a segment may hold, and the longest stretch without a space or punctuation
# mark that is still cut only where the weights say; longer stretches are hard-split.
MAX_SEGMENT_CHARS = 400
MAX_WORD_CHARS = 40  # pieces a word of a hard-split stretch is cut into (real words are shorter)
_CHARS_PER_SYLLABLE = 3  # weight of a cut piece: at least one syllable per three letters
_ACRONYM_MAX_LETTERS = 5
_WEIGHT_EPSILON = 1e-6  # English weights are sums of 0.7s

# A run of the same class is matched from its start only: retried inside a long run, a pattern
# would rescan the rest of it at each position.
_SENTENCE_END_RE = re.compile(r"[。！？；!?;]+|(?<!\.)\.+(?=\s|$)")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc no fig vol inc ltd co mt gen col sgt capt rev ave blvd ext approx "
    "jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
_WORD_BEFORE_RE = re.compile(f"([{LATIN_LETTERS}]+)$")
_UNIT_RE = re.compile(f"([{CJK_RANGES}])|([{LATIN_LETTERS}]+(?:'[{LATIN_LETTERS}]+)*'?)|(\\s+)|(.)", re.DOTALL)
_VOWEL_GROUP_RE = re.compile(r"[aeiouy]+")
_BREAKLESS_RE = re.compile(rf"(?<![^\s,;:.!?、，；：。！？…])[^\s,;:.!?、，；：。！？…]{{{MAX_SEGMENT_CHARS + 1},}}")

ZH_KINDS = frozenset({"zh", "syl", "dict"})
EN_KINDS = frozenset({"en", "ovr"})


@dataclass(frozen=True, slots=True)
class Unit:
    """The smallest piece of normalized text that segmenting may not cut."""

    kind: str  # "zh" Han char, "syl" token syllable, "dict" dictionary match, "en" word, "ovr" override, "punct", "space"
    text: str
    weight: float
    item: ZhSyllable | EnOverride | DictMatch | None = None
    cut: bool = False  # part of a stretch without any break, hard-split

    @property
    def lang(self) -> str | None:
        if self.kind in ZH_KINDS:
            return "zh"
        if self.kind in EN_KINDS:
            return "en"
        return None


def split_sentences(text: str) -> list[str]:
    """Cleaned text -> sentences, cut after 。！？；!?; and after a period that ends a word
    (not in decimals, abbreviations such as "Dr." or initials such as "J.")."""
    sentences = []
    start = 0
    for match in _SENTENCE_END_RE.finditer(text):
        if match.group(0) == "." and _is_abbreviation(text, match.start()):
            continue
        piece = text[start : match.end()].strip()
        if piece:
            sentences.append(piece)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def _is_abbreviation(text: str, dot: int) -> bool:
    match = _WORD_BEFORE_RE.search(text, max(0, dot - 8), dot)
    if not match:
        return False
    word = match.group(1)
    if len(word) == 1:  # an initial ("J. K."), or the end of "e.g." / "U.S."
        return word.isupper() or text[match.start() - 1 : match.start()] == "."
    return word.lower() in _ABBREVIATIONS


def english_syllables(word: str) -> int:
    """Rough syllable count of an English word; acronyms are spelled letter by letter."""
    if word.isupper() and 1 < len(word) <= _ACRONYM_MAX_LETTERS:
        return len(word)
    lower = word.lower().rstrip("'")
    groups = len(_VOWEL_GROUP_RE.findall(lower))
    if lower.endswith("e") and not lower.endswith(("le", "ee", "ye")) and groups > 1:
        groups -= 1
    return max(groups, 1)


def items_to_units(items: list[str | ZhSyllable | EnOverride | DictMatch]) -> list[Unit]:
    """Normalized text pieces and override objects -> units."""
    units: list[Unit] = []
    for item in items:
        if isinstance(item, ZhSyllable):
            units.append(Unit("syl", item.token_text, 1.0, item))
        elif isinstance(item, EnOverride):
            units.append(Unit("ovr", item.text, EN_SYLLABLE_WEIGHT * item.syllables, item))
        elif isinstance(item, DictMatch):
            units.append(Unit("dict", item.surface, float(len(item.surface)), item))
        else:
            position = 0
            for stretch in _BREAKLESS_RE.finditer(item):
                units.extend(_text_units(item[position : stretch.start()]))
                units.extend(_text_units(stretch.group(0), cut=True))
                position = stretch.end()
            units.extend(_text_units(item[position:]))
    return units


def _text_units(text: str, cut: bool = False) -> Iterator[Unit]:
    """Plain normalized text -> units; in a hard-split stretch, words are cut into MAX_WORD_CHARS pieces."""
    for match in _UNIT_RE.finditer(text):
        han, word, space, other = match.groups()
        if han:
            yield Unit("zh", han, 1.0, cut=cut)
        elif word and cut:
            for start in range(0, len(word), MAX_WORD_CHARS):
                piece = word[start : start + MAX_WORD_CHARS]
                syllables = max(english_syllables(piece), len(piece) // _CHARS_PER_SYLLABLE)
                yield Unit("en", piece, EN_SYLLABLE_WEIGHT * syllables, cut=True)
        elif word:
            yield Unit("en", word, EN_SYLLABLE_WEIGHT * english_syllables(word))
        elif space:
            yield Unit("space", " ", 0.0)
        else:
            yield Unit("punct", other, 0.0, cut=cut)


def _strip_spaces(units: list[Unit]) -> list[Unit]:
    start, end = 0, len(units)
    while start < end and units[start].kind == "space":
        start += 1
    while end > start and units[end - 1].kind == "space":
        end -= 1
    return units[start:end]


def _hard_split(units: list[Unit], weight: float, max_weight: float) -> list[list[Unit]]:
    """Cut an over-long stretch into even pieces at unit boundaries, none over `max_weight`
    (unless a single unit is)."""
    target = weight / math.ceil(weight / max_weight)
    pieces: list[list[Unit]] = []
    current: list[Unit] = []
    acc = 0.0
    for unit in units:
        if acc > 0 and unit.weight > 0 and (acc >= target or acc + unit.weight > max_weight + _WEIGHT_EPSILON):
            pieces.append(current)
            current, acc = [], 0.0
        current.append(unit)
        acc += unit.weight
    pieces.append(current)
    return pieces


def chunk_units(
    units: list[Unit], min_weight: float = MIN_SEGMENT_WEIGHT, max_weight: float = MAX_SEGMENT_WEIGHT
) -> list[list[Unit]]:
    """Units -> segments: clauses are gathered until a punctuation mark closes at least
    `min_weight`; no segment exceeds `max_weight` unless one unit alone does. A short remainder
    is joined to the next clause and cut evenly rather than left as a tiny segment."""
    segments: list[list[Unit]] = []
    pending: list[Unit] = []
    pending_weight = 0.0

    def flush() -> None:
        nonlocal pending, pending_weight
        if pending_weight > 0:
            segments.append(pending)
        elif pending and segments:
            segments[-1].extend(pending)  # trailing punctuation belongs to the previous segment
        pending, pending_weight = [], 0.0

    for clause, weight in _clauses(units):
        if pending_weight + weight > max_weight and pending_weight >= min_weight / 2:
            flush()
        pending.extend(clause)
        pending_weight += weight
        if pending_weight > max_weight + _WEIGHT_EPSILON:
            *done, pending = _hard_split(pending, pending_weight, max_weight)
            segments.extend(done)
            pending_weight = sum(unit.weight for unit in pending)
        if pending_weight >= min_weight - _WEIGHT_EPSILON:
            flush()
    flush()
    bounded = [piece for segment in segments for piece in _bound_chars(segment)]
    return [stripped for stripped in (_strip_spaces(segment) for segment in bounded) if stripped]


def unit_chars(unit: Unit) -> int:
    """The characters a unit stands for: a token syllable is one character, not its token text."""
    return 1 if unit.kind == "syl" else len(unit.text)


def _bound_chars(units: list[Unit]) -> list[list[Unit]]:
    """Cut a segment into pieces of at most MAX_SEGMENT_CHARS characters at unit boundaries."""
    if sum(map(unit_chars, units)) <= MAX_SEGMENT_CHARS:
        return [units]
    pieces: list[list[Unit]] = [[]]
    length = 0
    for unit in units:
        if pieces[-1] and length + unit_chars(unit) > MAX_SEGMENT_CHARS:
            pieces.append([])
            length = 0
        pieces[-1].append(unit)
        length += unit_chars(unit)
    return pieces


def _clauses(units: list[Unit]) -> Iterator[tuple[list[Unit], float]]:
    """Units -> clauses, each ending after a punctuation mark, with their weights."""
    current: list[Unit] = []
    acc = 0.0
    for unit in units:
        current.append(unit)
        acc += unit.weight
        if unit.kind == "punct":
            yield current, acc
            current, acc = [], 0.0
    if current:
        yield current, acc


def group_runs(units: list[Unit]) -> list[tuple[str, int, int]]:
    """A segment's units -> (lang, start, end) runs over contiguous units; punctuation and spaces
    join the run before them, and each English override forms a run of its own."""
    runs: list[list] = []  # [lang, start, end]
    for index, unit in enumerate(units):
        lang = unit.lang
        if lang is None:
            if runs:  # punctuation before the first word of a segment belongs to no run
                runs[-1][2] = index + 1
            continue
        last = runs[-1] if runs else None
        if last and last[0] == lang and unit.kind != "ovr" and units[last[1]].kind != "ovr":
            last[2] = index + 1
        else:
            runs.append([lang, index, index + 1])
    trimmed = []
    for lang, start, end in runs:
        while end > start and units[end - 1].kind == "space":
            end -= 1
        trimmed.append((lang, start, end))
    return trimmed
