"""English pronunciation spellings: ARPAbet to IPA, and IPA to a rough English respelling.

IPA follows espeak-ng's conventions (stress mark right before the stressed vowel, "ɹ", "ɡ"),
which is what the embedded Piper voices were trained on. The respelling is what the GLM-TTS
LLM reads for an override that names no written word: it has no English phoneme tokens.
"""

from __future__ import annotations

import re

# ARPAbet vowels take a stress digit: 0 unstressed, 1 primary, 2 secondary.
ARPA_VOWELS = {
    "AA": "ɑ",
    "AE": "æ",
    "AH": "ʌ",
    "AO": "ɔ",
    "AW": "aʊ",
    "AY": "aɪ",
    "EH": "ɛ",
    "ER": "ɝ",
    "EY": "eɪ",
    "IH": "ɪ",
    "IY": "i",
    "OW": "oʊ",
    "OY": "ɔɪ",
    "UH": "ʊ",
    "UW": "u",
}
# Unstressed variants that differ from the stressed vowel.
ARPA_REDUCED = {"AH": "ə", "ER": "ɚ"}
ARPA_CONSONANTS = {
    "B": "b",
    "CH": "tʃ",
    "D": "d",
    "DH": "ð",
    "F": "f",
    "G": "ɡ",
    "HH": "h",
    "JH": "dʒ",
    "K": "k",
    "L": "l",
    "M": "m",
    "N": "n",
    "NG": "ŋ",
    "P": "p",
    "R": "ɹ",
    "S": "s",
    "SH": "ʃ",
    "T": "t",
    "TH": "θ",
    "V": "v",
    "W": "w",
    "Y": "j",
    "Z": "z",
    "ZH": "ʒ",
}
STRESS_MARKS = {"1": "ˈ", "2": "ˌ", "0": ""}
_ARPA_PHONE = re.compile(r"^([A-Z]{1,2})([012]?)$")

# IPA vowel symbols, for syllable counting and validation.
IPA_VOWELS = set("aeiouyæɑɒɔəɘɛɜɝɚɪʊʌɐɨʉøœɤɯ")
# Longest first: diphthongs and affricates before single symbols.
# fmt: off
_RESPELLING = [
    ("aɪ", "eye"), ("aʊ", "ow"), ("eɪ", "ay"), ("oʊ", "oh"), ("ɔɪ", "oy"), ("tʃ", "ch"), ("dʒ", "j"),
    ("ɑ", "ah"), ("æ", "a"), ("ʌ", "u"), ("ə", "uh"), ("ɔ", "aw"), ("ɛ", "e"), ("ɝ", "er"), ("ɚ", "er"),
    ("ɜ", "er"), ("ɪ", "i"), ("i", "ee"), ("ʊ", "oo"), ("u", "oo"), ("ɒ", "o"), ("ɐ", "uh"), ("ð", "th"),
    ("θ", "th"), ("ɡ", "g"), ("ŋ", "ng"), ("ɹ", "r"), ("ʃ", "sh"), ("ʒ", "zh"), ("ɾ", "t"), ("j", "y"),
    ("x", "h"), ("ʔ", ""),
]
# fmt: on
_RESPELL_RE = re.compile("|".join(re.escape(src) for src, _ in _RESPELLING))
_RESPELL_MAP = dict(_RESPELLING)


def arpa_to_ipa(phones: list[str]) -> str:
    """One word's ARPAbet phones (["HH", "AH0", "L", "OW1"]) -> IPA ("həlˈoʊ").

    Raises ValueError naming the first phone that is not ARPAbet.
    """
    out = []
    for phone in phones:
        match = _ARPA_PHONE.match(phone.upper())
        if not match:
            raise ValueError(f"{phone!r} is not an ARPAbet phone")
        base, stress = match.groups()
        if base in ARPA_VOWELS:
            vowel = ARPA_REDUCED.get(base, ARPA_VOWELS[base]) if stress == "0" else ARPA_VOWELS[base]
            out.append(STRESS_MARKS[stress or "0"] + vowel)
        elif base in ARPA_CONSONANTS and not stress:
            out.append(ARPA_CONSONANTS[base])
        else:
            raise ValueError(f"{phone!r} is not an ARPAbet phone")
    return "".join(out)


def ipa_syllable_count(ipa: str) -> int:
    """Vowel groups in an IPA string (at least 1)."""
    groups = re.findall(f"[{''.join(sorted(IPA_VOWELS))}]+", ipa)
    return max(len(groups), 1)


def ipa_to_respelling(ipa: str) -> str:
    """IPA -> a rough English respelling ("həlˈoʊ" -> "huhloh"); stress and length marks dropped."""
    text = re.sub(r"[ˈˌːˑ.\u0300-\u036f/]", "", ipa)
    text = _RESPELL_RE.sub(lambda m: _RESPELL_MAP[m.group(0)], text)
    return "".join(ch for ch in text if "a" <= ch <= "z") or "uh"
