"""The text frontend: raw text -> normalized synthesis segments with language runs and phonemes."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from glmtts.frontend.g2p_zh import ChineseG2P, pinyin_to_symbols, reading_to_symbols
from glmtts.frontend.normalize import TextNormalizer, clean_text
from glmtts.frontend.phonemes import EnOverride, InlineItem, ZhSyllable, split_inline, tokens_text
from glmtts.frontend.replace_dict import DictMatch, ReplaceDict
from glmtts.frontend.split import Unit, chunk_units, group_runs, items_to_units, split_sentences
from glmtts.frontend.text_utils import EN_SENTINEL, ZH_SENTINEL, has_cjk, unspoken_scripts
from glmtts.frontend.tone_sandhi import Syllable, apply_sandhi
from glmtts.types import CancelToken, Segment, SynthesisError, TextRun

_LOGGER = logging.getLogger(__name__)

# Punctuation -> pause mark in Chinese phoneme sequences: "," short, "." sentence end.
PAUSE_MARKS = {"，": ",", ",": ",", "。": ".", "？": ".", ".": ".", "?": "."}
_ASCII_JOINERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,?'")
ERHUA_MARK = "儿"  # how the phoneme text writes an erhua suffix: after its syllable's tokens
Syllables = list[tuple[str, ...]]


@dataclass
class Spoken:
    """The syllables of one unit: lexical (what GLM-TTS reads in phoneme mode, as upstream),
    shown (after tone sandhi: the Phoneme tab) and voiced (shown, with erhua finals: the Mandarin voice)."""

    lexical: Syllables = field(default_factory=list)
    shown: Syllables = field(default_factory=list)
    voiced: Syllables = field(default_factory=list)
    erhua_mark: bool = False  # an erhua 儿: no syllable, written ERHUA_MARK in the phoneme text


class TextFrontend:
    """Owns cleanup and normalization, segmenting, Chinese G2P and the user's replace dictionary.

    Construction is cheap; `load()` reads the grammars and dictionaries once. Inline overrides
    (`<|CH|><|ONG2|>` syllables and `[[arpa: ...]]` / `[[ipa: ...]]` spans) are honoured in every mode.
    """

    def __init__(self, replace_dict_path: Path | None = None, cache_dir: Path | None = None):
        self.replace_dict_path = replace_dict_path
        self.normalizer = TextNormalizer()
        self.g2p = ChineseG2P(cache_dir)
        self.replace_dict = ReplaceDict()
        self._loaded = False

    # ----------------------------------------------------------------------------- lifecycle
    def load(self) -> None:
        """Load wetext's grammars, jieba, pypinyin, the polyphones and the replace dictionary; idempotent."""
        if self._loaded:
            return
        start = time.perf_counter()
        self.normalizer.load()
        self.g2p.load()
        self.reload_replace_dict()
        self._loaded = True
        _LOGGER.info("Text frontend loaded in %.2f s", time.perf_counter() - start)

    def reload_replace_dict(self) -> int:
        """Re-read the replace dictionary file (after the UI saved it); returns the entry count."""
        self.replace_dict = ReplaceDict.load(self.replace_dict_path) if self.replace_dict_path else ReplaceDict()
        return len(self.replace_dict)

    # ----------------------------------------------------------------------------- public API
    def text_to_segments(self, text: str, use_phoneme: bool = False, cancel: CancelToken | None = None) -> list[Segment]:
        """Raw text -> segments of 30 to 60 character-weights, each with zh/en runs and `glm_text`.

        With `use_phoneme`, `glm_text` spells every Chinese character as tokens (`<|X|><|IAN2|>`);
        otherwise it is the normalized text with the tokens the user typed. Every segment names the
        scripts of the text no voice reads (`unread`: left out). `cancel` is checked before the work
        and between sentences and segments (Cancelled within one of them).
        """
        if cancel is not None:
            cancel.check()
        unread = tuple(unspoken_scripts("".join(item for item in split_inline(text or "") if isinstance(item, str))))
        segments = []
        for units, hard_split in self._text_to_units(text, cancel):
            _check(cancel)
            spoken = self._spoken(units)
            segments.append(
                Segment(
                    text="".join(unit.text for unit in units),
                    runs=tuple(self._runs(units, spoken)),
                    glm_text="".join(self._glm_piece(unit, spoken.get(i), use_phoneme) for i, unit in enumerate(units)),
                    hard_split=hard_split,
                    unread=unread,
                )
            )
        return segments

    def text_to_phoneme_text(self, text: str, cancel: CancelToken | None = None) -> str:
        """Raw text -> the editable phoneme sequence: normalized, replace dictionary applied, every
        Chinese character as tokens after tone sandhi (the tones the Mandarin voice says), an erhua
        儿 written as the character after its syllable, English words and the user's [[...]] spans kept.

        `text_to_segments(result, use_phoneme=True)` gives the same Chinese phonemes: tokens are
        never changed by a rule. `cancel` as in `text_to_segments`.
        """
        pieces: list[str] = []
        for units, _ in self._text_to_units(text, cancel):
            _check(cancel)
            spoken = self._spoken(units)
            rendered = "".join(self._phoneme_piece(unit, spoken.get(i)) for i, unit in enumerate(units))
            if pieces and (pieces[-1][-1] in _ASCII_JOINERS or rendered[0] in _ASCII_JOINERS):
                pieces.append(" ")
            pieces.append(rendered)
        return "".join(pieces)

    # ----------------------------------------------------------------------------- text -> units
    def _text_to_units(self, text: str, cancel: CancelToken | None = None) -> list[tuple[list[Unit], bool]]:
        """Raw text -> segments' units, each with whether it was hard-split (no break to cut at)."""
        if not self._loaded:
            raise RuntimeError("TextFrontend.load() was not called")
        if text is None or not text.strip():
            raise SynthesisError("The text is empty: type something to speak.")
        items = split_inline(text.replace(ZH_SENTINEL, "").replace(EN_SENTINEL, ""))
        overrides = [item for item in items if not isinstance(item, str)]
        cleaned = clean_text("".join(_placeholder(item) for item in items))
        if cleaned.count(ZH_SENTINEL) + cleaned.count(EN_SENTINEL) != len(overrides):
            raise RuntimeError("text cleanup lost an inline override")
        supply = iter(overrides)
        units: list[Unit] = []
        previous_english = False
        for sentence in split_sentences(cleaned):
            _check(cancel)
            english = not self.normalizer.is_chinese(sentence)
            normalized = self.normalizer.normalize_sentence(sentence, cancel)
            sentence_units = items_to_units(self._sentence_items(normalized, supply))
            if units and sentence_units and (english or previous_english):
                units.append(Unit("space", " ", 0.0))
            units.extend(sentence_units)
            previous_english = english
        if next(supply, None) is not None:
            raise RuntimeError("normalization lost an inline override")
        if not any(unit.weight > 0 for unit in units):
            scripts = unspoken_scripts(text)
            if scripts:
                raise SynthesisError(
                    f"Nothing to speak: the text is in {_join_names(scripts)}, which this voice cannot read; "
                    "it speaks Chinese and English."
                )
            raise SynthesisError("Nothing to speak: no words are left after removing emoji, markup, symbols and punctuation.")
        return [(segment, any(unit.cut for unit in segment)) for segment in chunk_units(units)]

    def _sentence_items(self, normalized: str, supply: Iterator[ZhSyllable | EnOverride]) -> list[InlineItem | DictMatch]:
        """A normalized sentence -> plain text, dictionary matches and the overrides its sentinels stand for."""
        items: list[InlineItem | DictMatch] = []
        start = 0
        for index, ch in enumerate(normalized):
            if ch in (ZH_SENTINEL, EN_SENTINEL):
                items.extend(self._dictionary_pieces(normalized[start:index]))
                items.append(next(supply))
                start = index + 1
        items.extend(self._dictionary_pieces(normalized[start:]))
        return items

    def _dictionary_pieces(self, text: str) -> list[str | DictMatch]:
        if not text:
            return []
        return self.replace_dict.apply(text) if has_cjk(text) else [text]

    # ----------------------------------------------------------------------------- G2P and rendering
    def _spoken(self, units: list[Unit]) -> dict[int, Spoken]:
        """Index of every Chinese unit in a segment -> its syllables, lexical and after tone sandhi.

        G2P runs over whole character runs; tone sandhi over stretches without a pause (punctuation,
        a space or English end one), where the user's tokens are context but never change.
        """
        out: dict[int, Spoken] = {}
        stretch: list[Syllable] = []
        owners: list[int] = []  # unit index of each syllable in the stretch
        words: list[str] = []

        def add_text(text: str, owner_of: list[int]) -> None:
            word_list, readings = self.g2p.analyse(text)
            position = 0
            for word in word_list:
                words.append(word)
                for ch in word:
                    stretch.append(Syllable(ch, readings[position], len(words) - 1))
                    owners.append(owner_of[position])
                    position += 1

        def add_token(symbols: tuple[str, ...], owner: int) -> None:
            words.append("")
            stretch.append(Syllable(None, symbols[-1], len(words) - 1, locked=True, symbols=symbols))
            owners.append(owner)

        def flush() -> None:
            lexical = [syllable.reading for syllable in stretch]
            apply_sandhi(stretch, words)
            for syllable, reading, owner in zip(stretch, lexical, owners, strict=True):
                spoken = out.setdefault(owner, Spoken())
                if syllable.locked:
                    symbols = syllable.symbols
                    spoken.lexical.append(symbols)
                    spoken.shown.append(symbols)
                    spoken.voiced.append(_erhua_symbols(symbols) if syllable.erhua else symbols)
                    continue
                lexical_symbols = reading_to_symbols(syllable.char, reading)
                if lexical_symbols:
                    spoken.lexical.append(lexical_symbols)
                if syllable.silent:
                    spoken.erhua_mark = True
                    continue
                shown = _symbols(syllable.reading) or lexical_symbols
                if shown:
                    spoken.shown.append(shown)
                    spoken.voiced.append(_erhua_symbols(shown) if syllable.erhua else shown)
            stretch.clear()
            owners.clear()
            words.clear()

        index = 0
        while index < len(units):
            unit = units[index]
            if unit.kind == "zh":
                end = index
                while end < len(units) and units[end].kind == "zh":
                    end += 1
                add_text("".join(u.text for u in units[index:end]), list(range(index, end)))
                index = end
                continue
            if unit.kind == "syl":
                add_token(unit.item.symbols, index)
            elif unit.kind == "dict":
                kept: list[str] = []
                for part in [*unit.item.parts, None]:
                    if isinstance(part, str):
                        kept.append(part)
                        continue
                    if kept:
                        text = "".join(kept)
                        add_text(text, [index] * len(text))
                        kept = []
                    if isinstance(part, ZhSyllable):
                        add_token(part.symbols, index)
            else:
                flush()
            index += 1
        flush()
        return out

    def _runs(self, units: list[Unit], spoken: dict[int, Spoken]) -> Iterator[TextRun]:
        for lang, start, end in group_runs(units):
            text = "".join(unit.text for unit in units[start:end])
            if lang == "en":
                first = units[start]
                yield TextRun("en", text, first.item.ipa if first.kind == "ovr" else None)
                continue
            phonemes: list[str] = []
            for index in range(start, end):
                unit = units[index]
                if unit.kind == "punct":
                    if unit.text in PAUSE_MARKS:
                        phonemes.append(PAUSE_MARKS[unit.text])
                elif index in spoken:
                    for syllable in spoken[index].voiced:
                        phonemes.extend(syllable)
            yield TextRun("zh", text, tuple(phonemes))

    @staticmethod
    def _tokens(unit: Unit, syllables: Syllables | None) -> str:
        return "".join(tokens_text(s) for s in syllables) if syllables else unit.text

    def _glm_piece(self, unit: Unit, spoken: Spoken | None, use_phoneme: bool) -> str:
        if unit.kind in ("en", "ovr"):
            return unit.text.lower()
        if use_phoneme and unit.kind in ("zh", "dict"):
            return self._tokens(unit, spoken.lexical if spoken else None)
        return unit.text

    def _phoneme_piece(self, unit: Unit, spoken: Spoken | None) -> str:
        if unit.kind in ("zh", "dict", "syl"):
            if spoken is not None and spoken.erhua_mark and not spoken.shown:
                return ERHUA_MARK
            return self._tokens(unit, spoken.shown if spoken else None) + (ERHUA_MARK if spoken and spoken.erhua_mark else "")
        if unit.kind == "ovr":
            return unit.item.source
        return unit.text


def _check(cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.check()


def _symbols(reading: str) -> tuple[str, ...]:
    try:
        return pinyin_to_symbols(reading) if reading else ()
    except ValueError:
        return ()


def _erhua_symbols(symbols: tuple[str, ...]) -> tuple[str, ...]:
    """A syllable with the r-colouring of a following 儿: ("D", "IAN3") -> ("D", "IANR3"), which the
    Mandarin voice reads as the Baker corpus writes erhua (ian3 er5)."""
    final = symbols[-1]
    return (*symbols[:-1], final[:-1] + "R" + final[-1])


def _join_names(names: list[str]) -> str:
    """["Hangul"] -> "Hangul"; ["Arabic", "Cyrillic", "Hangul"] -> "Arabic, Cyrillic and Hangul"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _placeholder(item: InlineItem) -> str:
    if isinstance(item, str):
        return item
    return ZH_SENTINEL if isinstance(item, ZhSyllable) else f" {EN_SENTINEL} "
