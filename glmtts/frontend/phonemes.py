"""The GLM-TTS phoneme inventory and the pronunciation overrides users can type inline.

Chinese: tokens `<|CH|><|ONG2|>` spell one syllable (an initial then a final with its tone, or a
final alone) and bypass G2P. English: a span `[[arpa: HH AH0 L OW1]]` or `[[ipa: həˈloʊ]]` is
spoken with that pronunciation; `[[hello|arpa: ...]]` also names the written word(s). Several words
are separated by `|` in ARPAbet and by spaces (or `|`) in IPA.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from glmtts.frontend.arpabet import arpa_to_ipa, ipa_syllable_count, ipa_to_respelling
from glmtts.types import SynthesisError

# The 21 initials of the GLM-TTS inventory (no Y/W: those spellings are finals).
INITIALS = ("B", "C", "CH", "D", "F", "G", "H", "J", "K", "L", "M", "N", "P", "Q", "R", "S", "SH", "T", "X", "Z", "ZH")
_ALL_TONES = (1, 2, 3, 4, 5)
# Finals and the tones the inventory has for them (tone 5 is the neutral tone).
FINAL_TONES: dict[str, tuple[int, ...]] = {
    **{
        final: _ALL_TONES
        for final in (
            "A AI AN ANG AO E EI EN ENG I IA IAN IANG IAO IE II III IN ING IOU O ONG OU U UA UANG UEI UEN UO V VAN VN"
        ).split()
    },
    "ER": (2, 3, 4),
    "IO": (1,),
    "IONG": (1, 2, 3, 4),
    "UAI": (1, 2, 3, 4),
    "UAN": (1, 2, 3, 4),
    "UENG": (1, 3, 4),
    "VE": (1, 2, 3, 4),
}
FINALS = frozenset(f"{final}{tone}" for final, tones in FINAL_TONES.items() for tone in tones)
INVENTORY = frozenset(INITIALS) | FINALS  # 204 symbols

TOKEN_RE = re.compile(r"<\|([^<>|]*)\|>")
# A run of adjacent tokens, or one English override span.
INLINE_RE = re.compile(r"(?:<\|[^<>|]*\|>\s*)*<\|[^<>|]*\|>|\[\[([^\[\]]*)\]\]")
# Linear time: no two adjacent parts match the same spaces (the caller strips surface and body).
_SPAN_RE = re.compile(r"^(?:(?P<surface>[^|:]*)\|)?\s*(?P<scheme>[A-Za-z]+)\s*:(?P<body>.*)$", re.DOTALL)
_WORD_RE = re.compile(r"[A-Za-z\u00c0-\u024f]+(?:'[A-Za-z]+)*")
_MAX_LISTED_PROBLEMS = 8


@dataclass(frozen=True)
class ZhSyllable:
    """One Chinese syllable spelled in GLM-TTS symbols: (initial, final) or (final,)."""

    symbols: tuple[str, ...]

    @property
    def token_text(self) -> str:
        return tokens_text(self.symbols)


@dataclass(frozen=True)
class EnOverride:
    """An English pronunciation override: IPA per word, and the words written (or respelled)."""

    source: str  # the span as the user wrote it, "[[...]]"
    words: tuple[str, ...]  # written words, or respellings of the IPA when none were given
    ipa: tuple[str, ...]  # one IPA string per spoken word

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def syllables(self) -> int:
        return sum(ipa_syllable_count(word) for word in self.ipa)


InlineItem = str | ZhSyllable | EnOverride


def tokens_text(symbols: tuple[str, ...] | list[str]) -> str:
    """GLM symbols -> token text: ("X", "IAN2") -> "<|X|><|IAN2|>"."""
    return "".join(f"<|{symbol}|>" for symbol in symbols)


def is_initial(symbol: str) -> bool:
    return symbol in INITIALS


def tokens_to_syllables(text: str, problems: list[str] | None = None) -> list[ZhSyllable]:
    """Token text ("<|CH|><|ONG2|><|I4|>") -> syllables, validated against the inventory.

    Problems are appended to `problems` when given, else the first one raises SynthesisError.
    """
    found: list[str] = []
    syllables: list[ZhSyllable] = []
    pending: str | None = None
    for match in TOKEN_RE.finditer(text):
        symbol = match.group(1).strip().upper()
        if symbol not in INVENTORY:
            found.append(f"unknown phoneme token <|{match.group(1)}|>")
            pending = None
            continue
        if pending is not None:
            if is_initial(symbol):
                found.append(f"initial <|{pending}|> is followed by another initial <|{symbol}|>, not a final")
                pending = symbol
                continue
            syllables.append(ZhSyllable((pending, symbol)))
            pending = None
        elif is_initial(symbol):
            pending = symbol
        else:
            syllables.append(ZhSyllable((symbol,)))
    if pending is not None:
        found.append(f"initial <|{pending}|> is not followed by a final (e.g. <|{pending}|><|A1|>)")
    if found:
        if problems is None:
            raise SynthesisError(_problem_message(found))
        problems.extend(found)
    return syllables


def parse_override(inner: str) -> EnOverride:
    """The inside of a `[[...]]` span -> EnOverride; raises ValueError with the reason."""
    source = f"[[{inner}]]"
    match = _SPAN_RE.match(inner)
    if not match or match.group("scheme").lower() not in ("arpa", "ipa"):
        raise ValueError(f"{source} must look like [[arpa: HH AH0 L OW1]] or [[ipa: həˈloʊ]]")
    scheme = match.group("scheme").lower()
    body = match.group("body").strip().strip("/").strip()
    if not body:
        raise ValueError(f"{source} gives no pronunciation")
    if scheme == "arpa":
        word_phones = [part.split() for part in body.replace(",", "|").split("|") if part.strip()]
        try:
            ipa = tuple(arpa_to_ipa(phones) for phones in word_phones)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from error
    else:
        ipa = tuple(word.strip("/") for word in re.split(r"[\s|]+", body) if word.strip("/"))
        for word in ipa:
            bad = [ch for ch in word if not _is_ipa_char(ch)]
            if bad:
                raise ValueError(f"{source}: {''.join(bad)!r} is not IPA")
    surface = (match.group("surface") or "").strip()
    words = tuple(_WORD_RE.findall(surface)) if surface else tuple(ipa_to_respelling(word) for word in ipa)
    if surface and not words:
        raise ValueError(f"{source}: the written part {surface!r} holds no English word")
    return EnOverride(source=source, words=words, ipa=ipa)


def split_inline(text: str) -> list[InlineItem]:
    """Text -> plain pieces and parsed overrides, in order; raises SynthesisError listing every bad one."""
    items: list[InlineItem] = []
    problems: list[str] = []
    position = 0
    for match in INLINE_RE.finditer(text):
        if match.start() > position:
            items.append(text[position : match.start()])
        position = match.end()
        if match.group(0).startswith("[["):
            try:
                items.append(parse_override(match.group(1)))
            except ValueError as error:
                problems.append(str(error))
        else:
            items.extend(tokens_to_syllables(match.group(0), problems))
    if position < len(text):
        items.append(text[position:])
    if problems:
        raise SynthesisError(_problem_message(problems))
    return items


def _is_ipa_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in ("L", "M") or ch in "ˈˌːˑ.‿ʼ"


def _problem_message(problems: list[str]) -> str:
    listed = problems[:_MAX_LISTED_PROBLEMS]
    more = len(problems) - len(listed)
    text = "; ".join(listed) + (f"; and {more} more" if more else "")
    hint = ""
    if any("<|" in problem for problem in listed):
        hint = " Chinese tokens are initials such as <|CH|> and finals with a tone 1-5 such as <|ONG2|>."
    return f"Bad pronunciation markup: {text}.{hint}"
