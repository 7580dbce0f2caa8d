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
