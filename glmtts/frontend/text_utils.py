"""Character classes shared by the frontend stages."""

from __future__ import annotations

import re

# Han ideographs (unified, extensions, compatibility, radicals) and the ideographic zero.
CJK_RANGES = (
    "\u3007\u2e80-\u2eff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef\U00030000-\U000323af\U0002f800-\U0002fa1f"
)
LATIN_LETTERS = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"
# Stand for one inline override while text is normalized: a token syllable, an [[...]] span.
ZH_SENTINEL = "\ue000"
EN_SENTINEL = "\ue001"

_CJK_RE = re.compile(f"[{CJK_RANGES}]")


def is_cjk(ch: str) -> bool:
    """True for a single Han character."""
    return _CJK_RE.fullmatch(ch) is not None


def has_cjk(text: str) -> bool:
    return _CJK_RE.search(text) is not None


# Scripts the voices cannot read, by code point range (first match wins), for error messages.
_SCRIPTS = (
    (0x0370, 0x03FF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"),
    (0x0530, 0x058F, "Armenian"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"),
    (0x0700, 0x074F, "Syriac"),
    (0x0750, 0x077F, "Arabic"),
    (0x0780, 0x07BF, "Thaana"),
    (0x0900, 0x097F, "Devanagari"),
    (0x0980, 0x09FF, "Bengali"),
    (0x0A00, 0x0A7F, "Gurmukhi"),
    (0x0A80, 0x0AFF, "Gujarati"),
    (0x0B80, 0x0BFF, "Tamil"),
    (0x0C00, 0x0C7F, "Telugu"),
    (0x0C80, 0x0CFF, "Kannada"),
    (0x0D00, 0x0D7F, "Malayalam"),
    (0x0D80, 0x0DFF, "Sinhala"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x0E80, 0x0EFF, "Lao"),
    (0x0F00, 0x0FFF, "Tibetan"),
    (0x1000, 0x109F, "Myanmar"),
    (0x10A0, 0x10FF, "Georgian"),
    (0x1100, 0x11FF, "Hangul"),
    (0x1200, 0x139F, "Ethiopic"),
    (0x1780, 0x17FF, "Khmer"),
    (0x1800, 0x18AF, "Mongolian"),
    (0x3040, 0x30FF, "Japanese kana"),
    (0x3130, 0x318F, "Hangul"),
    (0x31F0, 0x31FF, "Japanese kana"),
    (0xA960, 0xA97F, "Hangul"),
    (0xAC00, 0xD7FF, "Hangul"),
    (0xFB1D, 0xFB4F, "Hebrew"),
    (0xFB50, 0xFDFF, "Arabic"),
    (0xFE70, 0xFEFF, "Arabic"),
    (0xFF66, 0xFF9F, "Japanese kana"),
    (0xFFA0, 0xFFDC, "Hangul"),
)


def unspoken_scripts(text: str) -> list[str]:
    """Names of the scripts in `text` that neither voice reads, sorted: "안녕 Привет" -> ["Cyrillic", "Hangul"]."""
    found = set()
    for ch in text:
        code = ord(ch)
        if code < 0x0370 or not ch.isalpha():
            continue
        for first, last, name in _SCRIPTS:
            if first <= code <= last:
                found.add(name)
                break
    return sorted(found)
