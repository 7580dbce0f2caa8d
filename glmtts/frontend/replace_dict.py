"""The G2P replace dictionary, `configs/G2P_replace_dict.jsonl` in the GLM-TTS format.

One JSON object a line, `{"<surface>": "<replacement>"}`; the replacement mixes kept Chinese
characters and phoneme tokens, e.g. `{"乡音无改鬓毛衰": "乡音无改鬓毛<|C|><|UEI1|>"}`. It is
applied to normalized Chinese text, longest surface first, before G2P.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from glmtts.files import dumps_line, split_lines
from glmtts.frontend.phonemes import ZhSyllable, tokens_to_syllables
from glmtts.frontend.text_utils import is_cjk

_LOGGER = logging.getLogger(__name__)

_TOKEN_RUN_RE = re.compile(r"(?:<\|[^<>|]*\|>)+")
_EXAMPLE = '{"弦": "<|X|><|IAN2|>"}'


class ReplaceDictError(ValueError):
    """A replace dictionary that does not validate; `problems` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "G2P replace dictionary"):
        self.problems, self.source = problems, source
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        super().__init__(f"{source} has {count}:\n" + "\n".join(problems))

    def __reduce__(self):  # pickled as built (it crosses from the frontend's process)
        return type(self), (self.problems, self.source)


@dataclass(frozen=True)
class DictMatch:
    """A stretch of text the dictionary matched: its surface and the parts that replace it."""

    surface: str
    parts: tuple[str | ZhSyllable, ...]  # kept characters (one per item) and spelled syllables


def _replacement_parts(replacement: str, problems: list[str]) -> tuple[str | ZhSyllable, ...]:
    parts: list[str | ZhSyllable] = []
    position = 0
    for match in _TOKEN_RUN_RE.finditer(replacement):
        parts.extend(replacement[position : match.start()])
        parts.extend(tokens_to_syllables(match.group(0), problems))
        position = match.end()
    parts.extend(replacement[position:])
    stray = "".join(part for part in parts if isinstance(part, str) and not is_cjk(part))
    if stray:
        problems.append(f"the replacement may hold only Chinese characters and phoneme tokens, not {stray!r}")
    return tuple(parts)


def parse_replace_dict(text: str) -> dict[str, str]:
    """The whole text of a replace dictionary -> {surface: replacement}, in file order.

    Raises ReplaceDictError listing every problem with its line number.
    """
    entries: dict[str, str] = {}
    defined_on: dict[str, int] = {}
    problems: list[str] = []
    for number, line in enumerate(split_lines(text), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"line {number}: not valid JSON ({error.msg}); expected an object like {_EXAMPLE}")
            continue
        if not isinstance(obj, dict) or not obj:
            problems.append(f"line {number}: expected one object like {_EXAMPLE}")
            continue
        for surface, replacement in obj.items():
            if not isinstance(replacement, str) or not replacement.strip():
                problems.append(f"line {number}: the replacement for {surface!r} must be a non-empty string")
                continue
            if not surface or not all(is_cjk(ch) for ch in surface):
                problems.append(f"line {number}: the surface {surface!r} must be Chinese characters only")
                continue
            found: list[str] = []
            _replacement_parts(replacement.strip(), found)
            problems.extend(f"line {number}: {problem}" for problem in found)
            if surface in defined_on:
                problems.append(f"line {number}: {surface!r} is already defined on line {defined_on[surface]}")
                continue
            defined_on[surface] = number
            entries[surface] = replacement.strip()
    if problems:
        raise ReplaceDictError(problems)
    return entries


def format_replace_dict(entries: dict[str, str]) -> str:
    """{surface: replacement} -> file text, one object a line."""
    return "".join(dumps_line({surface: replacement}) + "\n" for surface, replacement in entries.items())


class ReplaceDict:
    """Longest-match replacement of surfaces by their dictionary pronunciations."""

    def __init__(self, entries: dict[str, str] | None = None):
        self.entries = dict(entries or {})
        problems: list[str] = []
        self._parts = {surface: _replacement_parts(replacement, problems) for surface, replacement in self.entries.items()}
        if problems:
            raise ReplaceDictError(problems)
        self._lengths = sorted({len(surface) for surface in self.entries}, reverse=True)

    @classmethod
    def load(cls, path: Path) -> ReplaceDict:
        """Read and validate a dictionary file; a missing file is an empty dictionary."""
        if not path.exists():
            _LOGGER.info("No replace dictionary at %s", path)
            return cls()
        try:
            entries = parse_replace_dict(path.read_text(encoding="utf-8"))
        except ReplaceDictError as error:
            raise ReplaceDictError(error.problems, source=str(path)) from None
        _LOGGER.info("Loaded %d replace-dictionary entries from %s", len(entries), path)
        return cls(entries)

    def save(self, path: Path) -> None:
        path.write_text(format_replace_dict(self.entries), encoding="utf-8")

    def __len__(self) -> int:
        return len(self.entries)

    def apply(self, text: str) -> list[str | DictMatch]:
        """Text -> unmatched stretches and matches, longest surface first at each position."""
        if not self.entries or not text:
            return [text] if text else []
        pieces: list[str | DictMatch] = []
        plain_start = 0
        index = 0
        while index < len(text):
            for length in self._lengths:
                surface = text[index : index + length]
                if len(surface) == length and surface in self._parts:
                    if plain_start < index:
                        pieces.append(text[plain_start:index])
                    pieces.append(DictMatch(surface, self._parts[surface]))
                    index += length
                    plain_start = index
                    break
            else:
                index += 1
        if plain_start < len(text):
            pieces.append(text[plain_start:])
        return pieces
