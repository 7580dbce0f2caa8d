"""The text frontend: raw text -> normalized synthesis segments with language runs and phonemes."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

from glmtts.frontend.g2p_zh import ChineseG2P
from glmtts.frontend.normalize import TextNormalizer, clean_text
from glmtts.frontend.phonemes import EnOverride, InlineItem, ZhSyllable, split_inline, tokens_text
from glmtts.frontend.replace_dict import DictMatch, ReplaceDict
from glmtts.frontend.split import Unit, chunk_units, group_runs, items_to_units, split_sentences
from glmtts.frontend.text_utils import EN_SENTINEL, ZH_SENTINEL, has_cjk
from glmtts.types import Segment, SynthesisError, TextRun

_LOGGER = logging.getLogger(__name__)

# Punctuation -> pause mark in Chinese phoneme sequences: "," short, "." sentence end.
PAUSE_MARKS = {"，": ",", ",": ",", "。": ".", "？": ".", ".": ".", "?": "."}
_ASCII_JOINERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,?'")
Syllables = list[tuple[str, ...]]


class TextFrontend:
    """Owns cleanup and normalization, segmenting, Chinese G2P and the user's replace dictionary.

    Construction is cheap; `load()` reads the grammars and dictionaries once. Inline overrides
    (`<|CH|><|ONG2|>` syllables and `[[arpa: ...]]` / `[[ipa: ...]]` spans) are honoured in every mode.
    """

    def __init__(self, replace_dict_path: Path | None = None):
        self.replace_dict_path = replace_dict_path
        self.normalizer = TextNormalizer()
        self.g2p = ChineseG2P()
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
    def text_to_segments(self, text: str, use_phoneme: bool = False) -> list[Segment]:
        """Raw text -> segments of 30 to 60 character-weights, each with zh/en runs and `glm_text`.

        With `use_phoneme`, `glm_text` spells every Chinese character as tokens (`<|X|><|IAN2|>`);
        otherwise it is the normalized text with the tokens the user typed.
        """
        segments = []
        for units in self._text_to_units(text):
            syllables = self._syllables(units)
            segments.append(
                Segment(
                    text="".join(unit.text for unit in units),
                    runs=tuple(self._runs(units, syllables)),
                    glm_text="".join(self._glm_piece(unit, syllables.get(i), use_phoneme) for i, unit in enumerate(units)),
                )
            )
        return segments

    def text_to_phoneme_text(self, text: str) -> str:
        """Raw text -> the editable phoneme sequence: normalized, replace dictionary applied, every
        Chinese character as tokens, English words and the user's [[...]] spans kept.

        `text_to_segments(result, use_phoneme=True)` gives the same Chinese phonemes.
        """
        pieces: list[str] = []
        for units in self._text_to_units(text):
            syllables = self._syllables(units)
            rendered = "".join(self._phoneme_piece(unit, syllables.get(i)) for i, unit in enumerate(units))
            if pieces and (pieces[-1][-1] in _ASCII_JOINERS or rendered[0] in _ASCII_JOINERS):
                pieces.append(" ")
            pieces.append(rendered)
        return "".join(pieces)

    # ----------------------------------------------------------------------------- text -> units
    def _text_to_units(self, text: str) -> list[list[Unit]]:
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
            english = not self.normalizer.is_chinese(sentence)
            normalized = self.normalizer.normalize_sentence(sentence)
            sentence_units = items_to_units(self._sentence_items(normalized, supply))
            if units and sentence_units and (english or previous_english):
                units.append(Unit("space", " ", 0.0))
            units.extend(sentence_units)
            previous_english = english
        if next(supply, None) is not None:
            raise RuntimeError("normalization lost an inline override")
        if not any(unit.weight > 0 for unit in units):
            raise SynthesisError("Nothing to speak: no words are left after removing emoji, markup, symbols and punctuation.")
        return chunk_units(units)

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
    def _syllables(self, units: list[Unit]) -> dict[int, Syllables]:
        """Index of every Chinese unit in a segment -> its syllables (G2P over whole character runs)."""
        out: dict[int, Syllables] = {}
        index = 0
        while index < len(units):
            unit = units[index]
            if unit.kind == "zh":
                end = index
                while end < len(units) and units[end].kind == "zh":
                    end += 1
                for offset, syllable in enumerate(self.g2p.syllables("".join(u.text for u in units[index:end]))):
                    out[index + offset] = [syllable] if syllable else []
                index = end
                continue
            if unit.kind == "syl":
                out[index] = [unit.item.symbols]
            elif unit.kind == "dict":
                out[index] = self._dict_syllables(unit.item)
            index += 1
        return out

    def _dict_syllables(self, match: DictMatch) -> Syllables:
        syllables: Syllables = []
        kept: list[str] = []
        for part in [*match.parts, None]:
            if isinstance(part, str):
                kept.append(part)
                continue
            if kept:
                syllables.extend(s for s in self.g2p.syllables("".join(kept)) if s)
                kept = []
            if isinstance(part, ZhSyllable):
                syllables.append(part.symbols)
        return syllables

    def _runs(self, units: list[Unit], syllables: dict[int, Syllables]) -> Iterator[TextRun]:
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
                elif unit.kind != "space":
                    for syllable in syllables[index]:
                        phonemes.extend(syllable)
            yield TextRun("zh", text, tuple(phonemes))

    @staticmethod
    def _tokens(unit: Unit, syllables: Syllables | None) -> str:
        return "".join(tokens_text(s) for s in syllables) if syllables else unit.text

    def _glm_piece(self, unit: Unit, syllables: Syllables | None, use_phoneme: bool) -> str:
        if unit.kind in ("en", "ovr"):
            return unit.text.lower()
        if use_phoneme and unit.kind in ("zh", "dict"):
            return self._tokens(unit, syllables)
        return unit.text

    def _phoneme_piece(self, unit: Unit, syllables: Syllables | None) -> str:
        if unit.kind in ("zh", "dict", "syl"):
            return self._tokens(unit, syllables)
        if unit.kind == "ovr":
            return unit.item.source
        return unit.text


def _placeholder(item: InlineItem) -> str:
    if isinstance(item, str):
        return item
    return ZH_SENTINEL if isinstance(item, ZhSyllable) else f" {EN_SENTINEL} "
