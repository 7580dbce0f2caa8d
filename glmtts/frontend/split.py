"""Sentence splitting, synthesis-segment chunking and zh/en language runs, all in linear time.

Normalized text becomes a list of units (a Han character, a token syllable, a dictionary match,
an English word, an override span, punctuation, a space). Segments are cut only between units, so
never inside a `<|...|>` syllable or a `[[...]]` span. Like upstream GLM-TTS, a Han character or
syllable weighs 1 and an English syllable 0.7; a segment closes at the first punctuation once it
weighs at least `MIN_SEGMENT_WEIGHT`, and clauses heavier than `MAX_SEGMENT_WEIGHT` are cut into
even pieces at word boundaries.
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
_ACRONYM_MAX_LETTERS = 5
_WEIGHT_EPSILON = 1e-6  # English weights are sums of 0.7s

_SENTENCE_END_RE = re.compile(r"[。！？；!?;]+|\.+(?=\s|$)")
_ABBREVIATIONS = frozenset("mr mrs ms dr prof st jr sr vs etc no fig inc ltd co mt gen col sgt capt rev".split())
_WORD_BEFORE_RE = re.compile(f"([{LATIN_LETTERS}]+)$")
_UNIT_RE = re.compile(f"([{CJK_RANGES}])|([{LATIN_LETTERS}]+(?:'[{LATIN_LETTERS}]+)*'?)|(\\s+)|(.)", re.DOTALL)
_VOWEL_GROUP_RE = re.compile(r"[aeiouy]+")

ZH_KINDS = frozenset({"zh", "syl", "dict"})
EN_KINDS = frozenset({"en", "ovr"})


@dataclass(frozen=True, slots=True)
class Unit:
    """The smallest piece of normalized text that segmenting may not cut."""

    kind: str  # "zh" Han char, "syl" token syllable, "dict" dictionary match, "en" word, "ovr" override, "punct", "space"
    text: str
    weight: float
    item: ZhSyllable | EnOverride | DictMatch | None = None

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
            for match in _UNIT_RE.finditer(item):
                han, word, space, other = match.groups()
                if han:
                    units.append(Unit("zh", han, 1.0))
                elif word:
                    units.append(Unit("en", word, EN_SYLLABLE_WEIGHT * english_syllables(word)))
                elif space:
                    units.append(Unit("space", " ", 0.0))
                else:
                    units.append(Unit("punct", other, 0.0))
    return units


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
    return [stripped for stripped in (_strip_spaces(segment) for segment in segments) if stripped]


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
