"""Text cleanup and normalization: raw text -> speakable Chinese or English sentences.

Cleanup (markdown, emoji, full-width forms, brackets, line ends) runs on the whole text; then each
sentence is normalized as Chinese when it holds a Han character, else as English. Numbers, dates,
money and units go through WeTextProcessing's compiled grammars (`wetext`), with our own rewrites
around its known defects (see `en_numbers`). Only windows around digits and symbols reach the
grammars, none longer than WETEXT_MAX_CHARS, and every pattern here runs in linear time, so the cost
of any text is linear in its length. Inline overrides are replaced by sentinel characters by the
caller and pass through untouched.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Callable

from glmtts.frontend.en_numbers import ROMAN_RULES, digits, expand_numbers, expand_years, spell_remaining_digits
from glmtts.frontend.text_utils import CJK_RANGES, EN_SENTINEL, LATIN_LETTERS, ZH_SENTINEL
from glmtts.types import CancelToken

_LOGGER = logging.getLogger(__name__)

_SENTINELS = ZH_SENTINEL + EN_SENTINEL
_SENTINEL_SPLIT_RE = re.compile(f"([{_SENTINELS}])")
_ZH_RE = re.compile(f"[{CJK_RANGES}{ZH_SENTINEL}]")  # what makes a sentence Chinese
_LATIN_RE = re.compile(f"[{LATIN_LETTERS}{EN_SENTINEL}]")

# ------------------------------------------------------------------------------------ cleanup
# Every pattern runs in linear time: no two adjacent parts can match the same characters, a scan
# to a closing mark stops at the next opening one, and leading spaces are taken only from where
# their run starts (else each position of a long run rescans the rest of it).
_LINK_TARGET = r"(?:[^)\]\n\ue000\ue001]|\](?!\())*"  # a link's target ends at ")", never crosses a next "]("
_MARKDOWN_RULES: tuple[tuple[re.Pattern, str | Callable[[re.Match], str]], ...] = (
    (re.compile(r"```[\w+-]*"), "\n"),
    (re.compile(r"!\[([^\[\]\n]*)\]\(" + _LINK_TARGET + r"\)"), r"\1"),
    (re.compile(r"\[([^\[\]\n]+)\]\(" + _LINK_TARGET + r"\)"), r"\1"),
    (
        re.compile(r"(?:https?://|www\.)[^\s\ue000\ue001\u3000-\u303f\uff00-\uffef" + CJK_RANGES + r"]+"),
        lambda link: _site(link[0]),
    ),
    (re.compile(r"</?[A-Za-z][^<>\n\ue000\ue001]*>"), ""),
    (re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+", re.MULTILINE), ""),
    (re.compile(r"^[ \t]*>+[ \t]?", re.MULTILINE), ""),
    (re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.MULTILINE), ""),
    (re.compile(r"^[ \t]*(?:\|[ \t]*)?:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)*(?:\|[ \t]*)?$", re.MULTILINE), ""),
    (re.compile(r"^[ \t]*\|(.*)$", re.MULTILINE), lambda row: row.group(1).rstrip(" \t").removesuffix("|")),
    (re.compile(r"^[ \t]*[-*+•·][ \t]+", re.MULTILINE), ""),
    (re.compile(r"^[ \t]*(\d+)[.)][ \t]+", re.MULTILINE), r"\1, "),
    (re.compile(r"\*\*|__|~~|`"), ""),
    (re.compile(r"(?<![\w*])[*_](?=\S)|(?<=\S)[*_](?![\w*])"), ""),
)
# Names with dots, said with "dot": a site (example dot com; its path is left out, as a link's is) and a
# file or library name (app dot py, Node dot js: a lower-case letter after the dot, so a missing space
# after a sentence's end stays a sentence end).
_SITE_RE = re.compile(
    r"(?<![A-Za-z0-9_@.-])((?:[a-z0-9-]+\.)+(?:com|org|net|edu|gov|io|ai|dev|app|co|cn|uk|info))"
    r"(?![A-Za-z0-9_@-]|\.[A-Za-z0-9])(?:/[A-Za-z0-9_./?=&%#~+-]*)?",
    re.IGNORECASE,
)
_NAME_DOT_RE = re.compile(r"(?<=[A-Za-z0-9]{2})(?<![Ee]tc)\.(?=[a-z]{2})")
# Comparisons typed in ASCII become their signs, so that "!" and "=" neither end a sentence nor
# are read on their own ("a != b" was "a. equals b"); each language then says the sign.
_ASCII_COMPARISONS = {"!=": "≠", ">=": "≥", "<=": "≤", "==": "="}
_ASCII_COMPARISON_RE = re.compile("|".join(map(re.escape, _ASCII_COMPARISONS)))
_TIMES_RE = re.compile(r"(?<=\d)\s*\*\s*(?=\d)")  # 3 * 4: a product
# fmt: off
# Signs said in words (English, Chinese) before the grammars see the text: they drop what they do
# not know ("25℃" was "twenty five", "1∞2" 一二). Signs with a number's unit come first.
_UNIT_SIGNS = {
    "µs": ("microseconds", "微秒"), "µm": ("micrometers", "微米"), "µg": ("micrograms", "微克"),
    "µl": ("microliters", "微升"), "Ω": ("ohms", "欧姆"), "¢": ("cents", "美分"),
    "km²": ("square kilometers", "平方公里"), "m²": ("square meters", "平方米"), "cm²": ("square centimeters", "平方厘米"),
    "m³": ("cubic meters", "立方米"), "cm³": ("cubic centimeters", "立方厘米"),
}
_SIGNS = {
    "≠": ("not equal to", "不等于"), "≥": ("greater than or equal to", "大于等于"),
    "≤": ("less than or equal to", "小于等于"), "≈": ("approximately equal to", "约等于"),
    "±": ("plus or minus", "正负"), "∞": ("infinity", "无穷大"), "√": ("the square root of", "根号"),
    "∈": ("in", "属于"), "∉": ("not in", "不属于"), "℃": ("degrees Celsius", "摄氏度"),
    "℉": ("degrees Fahrenheit", "华氏度"), "²": ("squared", "的平方"), "³": ("cubed", "的立方"),
    "µ": ("micro", "微"), "α": ("alpha", "阿尔法"), "β": ("beta", "贝塔"), "γ": ("gamma", "伽马"),
    "δ": ("delta", "德尔塔"), "Δ": ("delta", "德尔塔"), "ε": ("epsilon", "艾普西龙"), "θ": ("theta", "西塔"),
    "λ": ("lambda", "拉姆达"), "μ": ("mu", "缪"), "π": ("pi", "派"), "σ": ("sigma", "西格玛"),
    "Σ": ("sigma", "西格玛"), "φ": ("phi", "斐"), "ω": ("omega", "欧米伽"), "Ω": ("omega", "欧米伽"),
    "∑": ("the sum of", "求和"), "∏": ("the product of", "连乘"), "∫": ("the integral of", "积分"),
    "∆": ("delta", "德尔塔"), "∂": ("partial", "偏"), "∩": ("intersect", "交"), "∪": ("union", "并"),
    "⊂": ("subset of", "包含于"), "⊃": ("superset of", "包含"), "∀": ("for all", "对所有"),
    "∃": ("there exists", "存在"), "¬": ("not", "非"), "∧": ("and", "且"), "∨": ("or", "或"),
}
_UNIT_SIGNS |= {unit.replace("µ", "μ"): words for unit, words in _UNIT_SIGNS.items() if "µ" in unit}  # Greek mu typed for micro
# Currencies whose sign comes before the number: the number, then the currency's name.
_CURRENCY_SIGNS = {"₹": ("rupees", "卢比"), "₩": ("won", "韩元"), "₽": ("rubles", "卢布")}
# fmt: on
_UNIT_SIGN_RE = re.compile(r"(?<=\d)\s?(" + "|".join(map(re.escape, _UNIT_SIGNS)) + r")(?![A-Za-z])")
_SIGN_RE = re.compile(f"[{''.join(_SIGNS)}]")
_CURRENCY_SIGN_RE = re.compile(f"([{''.join(_CURRENCY_SIGNS)}])\\s?(\\d+(?:,\\d{{3}})*(?:\\.\\d+)?)")
_POWER_RE = re.compile(r"(?<!\d)(\d+)\s?\^\s?(\d+)")  # starts at a number's first digit: linear


def say_signs(text: str, language: str) -> str:
    """The signs of `text` in words of `language` ("en" or "zh"): 2^10, ₹100, 5 µs, ≥, π..."""
    words = ("en", "zh").index(language)  # the column of the tables
    power = ("{0} to the power of {1}", "{0}的{1}次方")[words]
    text = _POWER_RE.sub(lambda m: power.format(m[1], m[2]), text)
    text = _CURRENCY_SIGN_RE.sub(lambda m: f"{m[2]} {_CURRENCY_SIGNS[m[1]][words]}", text)
    text = _UNIT_SIGN_RE.sub(lambda m: f" {_UNIT_SIGNS[m[1]][words]}", text)
    return _SIGN_RE.sub(lambda m: f" {_SIGNS[m[0]][words]} ", text)


_EMOJI_RE = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\u2190-\u21ff\u2300-\u23ff\u25a0-\u25ff"
    "\ufe0e\ufe0f\u200d\u20e3\U000e0020-\U000e007f\u2122\u00a9\u00ae]"
)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200c\u2028\u2029\ufeff]")
# Full-width forms -> ASCII; the full-width comma keeps a space after it, so that 考了100，5个人 is two
# numbers, not the thousands of 100,5.
_FULL_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20, 0xFF0C: ", "}
_QUOTES_RE = re.compile(r"[\"“”„‟«»「」『』《》【】〈〉〔〕]")
_BRACKETS_RE = re.compile(r"(?:(?<!\s)\s+)?[()\[\]{}]+\s*")
_PHONE_AREA_RE = re.compile(r"\((\d{3})\)\s?(?=\d{3}[-.\s]\d{4})")
_DASHES_RE = re.compile(r"(?:(?<!\s)\s+)?(?:—+|–|――|\s-\s)\s*")
_LINE_END = set(".!?;:,。！？；：，…")
_SPACES_RE = re.compile(r"[ \t\u00a0]+")


def _site(link: str) -> str:
    """A bare link is read as its site: https://user@www.example.com:8080/docs -> "example.com"."""
    host = re.split(r"[/?#]", link.split("://", 1)[-1], maxsplit=1)[0]
    return host.rsplit("@", 1)[-1].split(":", 1)[0].removeprefix("www.").removeprefix("WWW.")


def clean_text(text: str) -> str:
    """Strip markdown, emoji, control characters, quotes and brackets; full-width -> half-width;
    every non-empty line gets a sentence end; lines are joined into one string."""
    # NFC: a CJK compatibility ideograph (簾 U+F9A6, from old encodings and PDFs) is its unified
    # character, which the dictionaries know; accents are composed (é).
    text = _CONTROL_RE.sub("", unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n"))
    for pattern, replacement in _MARKDOWN_RULES:
        text = pattern.sub(replacement, text)
    text = _NAME_DOT_RE.sub(" dot ", _SITE_RE.sub(lambda site: site[1].replace(".", " dot "), text))
    text = _TIMES_RE.sub("×", _ASCII_COMPARISON_RE.sub(lambda sign: _ASCII_COMPARISONS[sign[0]], text))
    text = _EMOJI_RE.sub("", text).translate(_FULL_WIDTH)
    text = text.replace("’", "'").replace("‘", "'")
    text = _QUOTES_RE.sub("", text)
    text = _PHONE_AREA_RE.sub(r"\1-", text)
    text = _BRACKETS_RE.sub(", ", text)
    text = _DASHES_RE.sub(", ", text)
    lines = []
    for line in text.split("\n"):
        line = _SPACES_RE.sub(" ", line).strip(" ,")
        if not line:
            continue
        if line[-1] not in _LINE_END:
            line += "。" if _ZH_RE.search(line) else "."
        lines.append(line)
    return " ".join(lines)


# ------------------------------------------------------------------------------------ Chinese
_ZH_DIGITS = "零一二三四五六七八九"
_ZH_POWERS = ("", "十", "百", "千")
_ZH_GROUPS = ("", "万", "亿", "万亿")
_ZH_PHONE_DIGITS = "零幺二三四五六七八九"
_ZH_CURRENCY = {"$": "美元", "€": "欧元", "£": "英镑", "¥": "元", "￥": "元"}
_ZH_CURRENCY_WORDS = "元|块|美元|欧元|英镑|日元|人民币"
# fmt: off
_ZH_SYMBOLS = {
    "&": "和", "@": "艾特", "+": "加", "=": "等于", ">": "大于", "<": "小于", "×": "乘", "÷": "除以",
    "°": "度", "%": "百分号", "‰": "千分之",
}
# fmt: on
_ZH_MONEY_RE = re.compile(
    rf"(?P<cur>[$€£¥￥])\s?(?P<num>\d+(?:,\d{{3}})*(?:\.\d+)?)\s?(?P<word>{_ZH_CURRENCY_WORDS})?"
    rf"|(?<!\d)(?P<num2>\d+)\.(?P<frac>\d{{1,2}})(?P<yuan>元|块)"
)
_ZH_PHONE_RE = re.compile(r"(?<![\d.])(?:\+\d{1,3}[\s-]?)?1[3-9]\d[\s-]?\d{4}[\s-]?\d{4}(?!\d)|(?<![\d.])0\d{2,3}-\d{7,8}(?!\d)")
# A count of two is 两 before a measure word; wetext says 二 before these (二次, 二点, 二公斤), and 两
# for the day of a date (二月两日). So a lone 2 before them is written 两 (not in 2次方, 2次元, 2年级,
# 第2), and a day after 月 二.
_ZH_LIANG_RE = re.compile(r"(?<![\d.第])2(?=倍|次(?![方元])|遍|年(?!级)|星期|份|句|点|成|门|台|部|间|种|样|美元|公斤|英里)")
_ZH_DAY_TWO_RE = re.compile(r"(?<=月)2(?=[日号])")
# Numbers that name rather than count are read digit by digit, 1 as 幺: after a word that says so
# (房间号是302 -> 三零二, 验证码：123456), after letters (CA1234 -> 幺二三四, RTX4090; not RMB100 or
# Top100), and a room (301室).
_ZH_CODE_RE = re.compile(
    r"((?:电话|号码|编号|房间|房号|邮编|航班|车次|门牌|学号|工号|账号|密码|分机|验证码)号?\s?[是为:,]?\s?"
    r"|(?<=[A-Za-z])(?<!RMB|USD|HKD|EUR|JPY|GBP|Top|TOP)|(?<![\d.])(?=\d{3,4}室))(\d{3,})(?![\d.])"
)
_ZH_PER_MILLE_RE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s?‰")  # 5‰ -> 千分之5, as % is read before its number
_ZH_NUMBER_SIGN_RE = re.compile(r"(?<![A-Za-z])[Nn][Oo]\.\s?(?=\d)")  # 他是No.1 -> 他是第1


def zh_cardinal(n: int) -> str:
    """1005 -> "一千零五", 100000 -> "十万"."""
    if n == 0:
        return "零"
    groups = []
    while n:
        n, group = divmod(n, 10000)
        groups.append(group)
    out = ""
    skipped = False
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if group == 0:
            skipped = bool(out)
            continue
        if out and (skipped or group < 1000):
            out += "零"
        out += _zh_section(group) + _ZH_GROUPS[index]
        skipped = False
    return out[1:] if out.startswith("一十") else out


def _zh_section(n: int) -> str:
    """0 < n < 10000 -> words, with one 零 for each gap."""
    out = ""
    gap = False
    for power in (3, 2, 1, 0):
        digit = n // 10**power % 10
        if digit == 0:
            gap = bool(out)
            continue
        out += ("零" if gap else "") + _ZH_DIGITS[digit] + _ZH_POWERS[power]
        gap = False
    return out


def _zh_amount(integer: str, fraction: str = "") -> str:
    """("12", "5") -> "十二点五"; a whole 2 is "两" as in amounts of money."""
    whole = int(integer or "0")
    words = "两" if whole == 2 and not fraction else zh_cardinal(whole)
    return words + ("点" + "".join(_ZH_DIGITS[int(d)] for d in fraction) if fraction else "")


def _zh_yuan(integer: str, fraction: str) -> str:
    """("12", "50") -> "十二元五角", ("0", "05") -> "五分"."""
    jiao, fen = (int(d) for d in (fraction + "00")[:2])
    out = f"{_zh_amount(integer)}元" if int(integer or "0") or not (jiao or fen) else ""
    if jiao:
        out += _ZH_DIGITS[jiao] + "角"
    if fen:
        out += ("零" if out and not jiao else "") + _ZH_DIGITS[fen] + "分"
    return out


def _zh_money(match: re.Match) -> str:
    if match.group("num2"):
        return _zh_yuan(match.group("num2"), match.group("frac"))
    integer, _, fraction = match.group("num").replace(",", "").partition(".")
    word = match.group("word") or _ZH_CURRENCY[match.group("cur")]
    if word in ("元", "块") and len(fraction) <= 2:
        return _zh_yuan(integer, fraction) if fraction else f"{_zh_amount(integer)}{word}"
    return _zh_amount(integer, fraction.rstrip("0")) + word


def _zh_phone(match: re.Match) -> str:
    text = match.group(0)
    spoken = "".join(_ZH_PHONE_DIGITS[int(ch)] for ch in text.lstrip("+") if ch.isdigit())
    if text.startswith("+"):
        code = re.match(r"\+(\d+)", text).group(1)
        spoken = "加" + spoken[: len(code)] + "，" + spoken[len(code) :]
    return spoken


def _zh_code(match: re.Match) -> str:
    return match[1] + "".join(_ZH_PHONE_DIGITS[int(digit)] for digit in match[2])


def _zh_prenormalize(text: str) -> str:
    text = _ZH_MONEY_RE.sub(_zh_money, text)
    text = _ZH_PHONE_RE.sub(_zh_phone, text)
    text = _ZH_NUMBER_SIGN_RE.sub("第", text)
    text = _ZH_PER_MILLE_RE.sub(r"千分之\1", say_signs(text, "zh"))
    text = _ZH_DAY_TWO_RE.sub("二", _ZH_LIANG_RE.sub("两", text))
    text = re.sub(f"(?<=[{LATIN_LETTERS}])-(?=\\d)", " ", text)
    return text


def _zh_postnormalize(text: str) -> str:
    text = text.replace("第两", "第二")
    text = re.sub(r"\d+", lambda m: "".join(_ZH_DIGITS[int(ch)] for ch in m.group(0)), text)
    return "".join(_ZH_SYMBOLS.get(ch, ch) for ch in text)


# ------------------------------------------------------------------------------------ English
_TIME_UNITS = {"min": "minute", "hr": "hour", "sec": "second"}


def _time_unit(match: re.Match) -> str:
    """5 mins -> 5 minutes, 1 hr -> 1 hour (wetext leaves these abbreviations as they are)."""
    count, unit = match.group(1), _TIME_UNITS[match.group(2).lower()]
    return f"{count} {unit}" + ("" if count == "1" else "s")


_EN_ABBREVIATIONS = (
    (re.compile(r"\be\.g\.", re.IGNORECASE), "for example"),
    (re.compile(r"\bi\.e\.", re.IGNORECASE), "that is"),
    (re.compile(r"\betc\.", re.IGNORECASE), "et cetera."),
    (re.compile(r"\bvs\.?(?=\s)", re.IGNORECASE), "versus"),
    (re.compile(r"\bNo\.\s?(?=\d)"), "number "),
    (re.compile(r"\b(Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\.(?=\s*\d)"), r"\1"),  # Jan. 3 reads as Jan 3, a date
    (re.compile(r"\b([A-Z][a-z]+) St\.(?!\s*[A-Z])"), r"\1 Street"),  # Baker St. (St. Louis: Saint)
    (re.compile(r"\bSt\.(?=\s*[A-Z])"), "Saint"),
    (re.compile(r"\bMt\.(?=\s*[A-Z])"), "Mount"),
    (re.compile(r"\bAve\."), "Avenue"),
    (re.compile(r"\bBlvd\."), "Boulevard"),
    (re.compile(r"\bext\.(?=\s*\d)", re.IGNORECASE), "extension"),
    (re.compile(r"\bapprox\.", re.IGNORECASE), "approximately"),
    (re.compile(r"\b(?:Fig|fig)\.(?=\s*\d)"), "figure"),
    (re.compile(r"\b(?:Vol|vol)\.(?=\s*\d)"), "volume"),
    (re.compile(r"\bw/o\b", re.IGNORECASE), "without"),
    (re.compile(r"\bw/(?=\s)", re.IGNORECASE), "with"),
    (re.compile(r"\b24/7\b"), "twenty four seven"),
    (re.compile(r"\b([CF])#"), r"\1 sharp"),
    (re.compile(r"(?<![\w.])\.NET\b"), "dot NET"),
    (re.compile(r"(?<![\w#&])#(?=[A-Za-z])"), "hashtag "),
    (re.compile(r"\b(\d+)(st|nd|rd|th)-(?=[A-Za-z])", re.IGNORECASE), r"\1\2 "),  # 3rd-party: third party
    (re.compile(r"\b(\d+)\s?(min|hr|sec)s?\b", re.IGNORECASE), _time_unit),
    (re.compile(r"(?<=\d)\s?‰"), " per mille"),
)
# fmt: off
_EN_SYMBOLS = {
    "%": " percent", "&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "°": " degrees",
    "×": " times ", "÷": " divided by ", "<": " less than ", ">": " greater than ", "/": " ", "~": " about ",
    "€": " euros", "$": " dollars", "£": " pounds", "¥": " yen", "#": " ", "_": " ",
}
# fmt: on
_EN_WETEXT_TRIGGER = re.compile(r"\d|[&+=%@°/]|\b(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr)\.")
# The grammars are run on windows around what they must read, not on whole clauses: their cost
# per character grows with the input length. Context kept on each side: English words, Chinese
# characters. Windows that touch are merged up to WETEXT_MAX_CHARS; a longer stretch (a text that
# is all numbers) goes in pieces of at most that length, which keeps the cost linear in the text.
_EN_WINDOW_WORDS = 2
_ZH_WINDOW_CHARS = 4
WETEXT_MAX_CHARS = 64
_ZH_NUMBER_RE = re.compile(r"\d[\d.,:/%~\-]*")
# A run of digits and separators longer than this is no number anyone reads as one: it is spelled
# digit by digit (a phone number with its country code, or a long amount, is half as long).
MAX_NUMBER_CHARS = 32
_NUMBER_RUN_RE = re.compile(r"\d[\d.,:]*")


def _expand_abbreviations(text: str) -> str:
    """English abbreviations and Roman numerals in words, on a whole sentence (a rule may look past a
    clause's end: St. Louis)."""
    for pattern, replacement in _EN_ABBREVIATIONS + ROMAN_RULES:
        text = pattern.sub(replacement, text)
    return say_signs(text, "en")


def _en_symbols(text: str) -> str:
    return "".join(_EN_SYMBOLS.get(ch, ch) for ch in text)


# ------------------------------------------------------------------------------------ punctuation
_PUNCT_RUN_RE = re.compile(r"(?:(?<!\s)\s+)?(?:[,;:、，；：.。!！?？…]\s*)+")
# Clause ends: ; 、 , : (but not inside "1,250" or "3:30") and . ! ? before a space.
_CLAUSE_SPLIT_RE = re.compile(r"(?<=[;、])|(?<=[,:])(?!(?<=\d[,:])\d)|(?<=[.!?])(?=\s)")

_ZH_MARKS = {",": "，", ".": "。", "?": "？"}
_ZH_ABBREVIATION_DOT_RE = re.compile(f"(?<=[{LATIN_LETTERS}])\\.(?=[{LATIN_LETTERS}])")  # "U.S" inside Chinese
_ZH_STRAY_RE = re.compile(f"[^{CJK_RANGES}{_SENTINELS}{LATIN_LETTERS}'\\s,;:、，；：.。!！?？…]")
_EN_STRAY_RE = re.compile(f"[^{LATIN_LETTERS}{EN_SENTINEL}'\\s,;:.!?…]")
_WORD_HYPHEN_RE = re.compile(f"(?<=[{LATIN_LETTERS}])-(?=[{LATIN_LETTERS}])")
# Apostrophes survive inside words ("it's") and after a plural s ("dogs'").
_STRAY_APOSTROPHE_RE = re.compile(f"(?<![{LATIN_LETTERS}])'|'(?![{LATIN_LETTERS}])(?<!s')")
# In Chinese text spaces only separate Latin words (or English overrides).
_ZH_SPACE_RE = re.compile(f"(?<![{LATIN_LETTERS}{EN_SENTINEL}']) | (?![{LATIN_LETTERS}{EN_SENTINEL}])")


def _punct_class(run: str) -> str:
    """A run of punctuation -> "?", "." or "," (the strongest mark in it)."""
    if "?" in run or "？" in run:
        return "?"
    if any(ch in run for ch in ".。!！…"):
        return "."
    return ","


def _add_span(spans: list[list[int]], start: int, end: int, core_end: int) -> None:
    """Append the window [start, end) around a number or word ending at `core_end` to sorted spans
    [start, end, core_end]: merged with the last one when they touch and the merged window holds at
    most WETEXT_MAX_CHARS, else the two are cut apart between their numbers or words."""
    if spans and start <= spans[-1][1]:
        last = spans[-1]
        if end - last[0] <= WETEXT_MAX_CHARS:
            last[1], last[2] = max(last[1], end), core_end
            return
        start = last[1] = max(start, last[2])
    spans.append([start, end, core_end])


def _bounded_pieces(text: str) -> list[str]:
    """`text` in pieces of at most WETEXT_MAX_CHARS, cut after a space where there is one, else not
    between two digits where it can be helped."""
    pieces, start = [], 0
    while len(text) - start > WETEXT_MAX_CHARS:
        end = start + WETEXT_MAX_CHARS
        cut = text.rfind(" ", start + 1, end) + 1 or next(
            (i for i in range(end, start, -1) if not (text[i - 1].isdigit() and text[i].isdigit())), end
        )
        pieces.append(text[start:cut])
        start = cut
    return [*pieces, text[start:]]


def _spell_long_numbers(text: str, spell: Callable[[str], str]) -> str:
    """Every run of digits and separators longer than MAX_NUMBER_CHARS -> `spell(run)`."""
    return _NUMBER_RUN_RE.sub(lambda m: spell(m.group(0)) if len(m.group(0)) > MAX_NUMBER_CHARS else m.group(0), text)


class TextNormalizer:
    """Normalizes cleaned sentences with wetext's zh/en grammars plus our fixes; load() once."""

    def __init__(self) -> None:
        self._tn: Callable[[str, str], str] | None = None
        self._lock = threading.Lock()  # the grammars are shared C++ objects

    def load(self) -> None:
        """Import wetext, which reads its compiled grammars (about a second); idempotent."""
        if self._tn is not None:
            return
        from wetext.utils import reorder, tag, verbalize

        def tn(text: str, lang: str) -> str:
            return verbalize(reorder(tag(text, lang, "tn"), lang, "tn"), lang, "tn")

        self._tn = tn

    def _wetext_windows(self, text: str, lang: str, cancel: CancelToken | None) -> str:
        """Run the `lang` grammar over merged windows around digits and symbols; the rest is kept.
        `cancel` is checked before each window."""
        spans: list[list[int]] = []
        if lang == "en":
            words = list(re.finditer(r"\S+", text))
            for index, word in enumerate(words):
                if _EN_WETEXT_TRIGGER.search(word.group(0)):
                    first = words[max(0, index - _EN_WINDOW_WORDS)].start()
                    last = words[min(len(words) - 1, index + _EN_WINDOW_WORDS)].end()
                    _add_span(spans, first, last, word.end())
        else:
            for number in _ZH_NUMBER_RE.finditer(text):
                start, end = max(0, number.start() - _ZH_WINDOW_CHARS), min(len(text), number.end() + _ZH_WINDOW_CHARS)
                _add_span(spans, start, end, number.end())
        out = []
        position = 0
        for start, end, _ in spans:
            if cancel is not None:
                cancel.check()
            out.append(text[position:start])
            out.extend(self._wetext(piece, lang) for piece in _bounded_pieces(text[start:end]))
            position = end
        out.append(text[position:])
        return "".join(out)

    def _wetext(self, text: str, lang: str) -> str:
        if self._tn is None:
            raise RuntimeError("TextNormalizer.load() was not called")
        stripped = text.strip()
        if not stripped:
            return text
        try:
            with self._lock:
                out = self._tn(stripped, lang)
        except (AssertionError, RuntimeError, ValueError) as error:
            _LOGGER.debug("wetext %s failed on %r: %r", lang, stripped, error)
            return text
        lead = text[: len(text) - len(text.lstrip())]
        trail = text[len(text.rstrip()) :]
        return lead + out + trail

    @staticmethod
    def is_chinese(sentence: str) -> bool:
        return _ZH_RE.search(sentence) is not None

    def normalize_sentence(self, sentence: str, cancel: CancelToken | None = None) -> str:
        """A cleaned sentence (sentinels allowed) -> normalized text with canonical punctuation.
        `cancel` is checked between the pieces that go to the grammars (Cancelled)."""
        if self.is_chinese(sentence):
            sentence = _ZH_CODE_RE.sub(_zh_code, sentence)
            sentence = _spell_long_numbers(sentence, lambda run: "".join(_ZH_DIGITS[int(ch)] for ch in run if ch.isdigit()))
            return self._finish_zh(self._normalize_pieces(sentence, self._normalize_mixed_clause, cancel))
        sentence = _spell_long_numbers(_expand_abbreviations(sentence), lambda run: f" {digits(run)} ")
        return self._finish_en(self._normalize_pieces(expand_years(sentence), self._normalize_en_clause, cancel))

    def _normalize_pieces(
        self, sentence: str, normalize: Callable[[str, CancelToken | None], str], cancel: CancelToken | None
    ) -> str:
        """Normalize the stretches between sentinels, clause by clause."""
        parts = _SENTINEL_SPLIT_RE.split(sentence)
        out = []
        for part in parts:
            if not part or part in _SENTINELS:
                out.append(part)
                continue
            out.extend(normalize(clause, cancel) for clause in _CLAUSE_SPLIT_RE.split(part))
        return "".join(out)

    def _normalize_mixed_clause(self, clause: str, cancel: CancelToken | None) -> str:
        """In a Chinese sentence, a clause of English words (no Han character) is read as English."""
        if _LATIN_RE.search(clause) and not _ZH_RE.search(clause):
            return self._normalize_en_clause(_expand_abbreviations(clause), cancel)
        return self._normalize_zh_clause(clause, cancel)

    def _normalize_zh_clause(self, clause: str, cancel: CancelToken | None) -> str:
        clause = _zh_prenormalize(clause)
        if re.search(r"\d", clause):
            clause = self._wetext_windows(clause, "zh", cancel)
        return _zh_postnormalize(clause)

    def _normalize_en_clause(self, clause: str, cancel: CancelToken | None) -> str:
        clause = expand_numbers(clause)
        if _EN_WETEXT_TRIGGER.search(clause):
            clause = self._wetext_windows(clause, "en", cancel)
        return _en_symbols(spell_remaining_digits(clause))

    @staticmethod
    def _finish_zh(text: str) -> str:
        text = _ZH_ABBREVIATION_DOT_RE.sub("", text)
        text = _ZH_STRAY_RE.sub("", _WORD_HYPHEN_RE.sub(" ", text))
        text = _STRAY_APOSTROPHE_RE.sub("", text)
        text = _PUNCT_RUN_RE.sub(lambda m: _ZH_MARKS[_punct_class(m.group(0))], text)
        text = _ZH_SPACE_RE.sub("", _SPACES_RE.sub(" ", text))
        text = text.lstrip("，。？ ")
        if text and text[-1] not in "。？":
            text = text.rstrip("，") + "。"
        return text

    @staticmethod
    def _finish_en(text: str) -> str:
        text = _WORD_HYPHEN_RE.sub(" ", text)
        text = _EN_STRAY_RE.sub(" ", text)
        text = _STRAY_APOSTROPHE_RE.sub("", text)
        text = _PUNCT_RUN_RE.sub(lambda m: _punct_class(m.group(0)) + " ", text)
        text = _SPACES_RE.sub(" ", text).strip().lstrip(",.? ")
        if text and text[-1] not in ".?":
            text = text.rstrip(",") + "."
        return text
