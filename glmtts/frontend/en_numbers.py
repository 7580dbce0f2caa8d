"""English numbers in words, and the numeric patterns the wetext English grammar gets wrong.

wetext drops the leading "one" of "1,250", reads "$12.50" as "twelve point five dollars", "1990s"
as "... ninety seconds" and "1905" as "nineteen zero five", and fails on "#1". `expand_numbers`
rewrites those patterns (money, phone numbers, decades, grouped thousands, decimals, ISO dates,
years, ranges; a four-digit number is a year only where its context says so, "in 1999", and a
quantity elsewhere, "1999 people") and the common cheap ones (clock times, bare small integers) before wetext sees the
text; wetext then reads what is left (numbers with units, ordinals, month-name dates, fractions,
percentages, math symbols, titles such as "Dr.").
"""

from __future__ import annotations

import re
from collections.abc import Callable

ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
MONTHS = "January February March April May June July August September October November December".split()
# fmt: off
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}
# fmt: on
# Currency symbol -> (unit singular, unit plural, subunit singular, subunit plural or None).
CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", None, None),
}
# fmt: off
_SCALE_WORDS = {
    "k": "thousand", "thousand": "thousand", "m": "million", "million": "million",
    "bn": "billion", "b": "billion", "billion": "billion", "trillion": "trillion",
}
# fmt: on


def cardinal(n: int) -> str:
    """1250 -> "one thousand two hundred fifty"."""
    if n < 0:
        return "negative " + cardinal(-n)
    if n < 20:
        return ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return TENS[tens] + (" " + ONES[ones] if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return ONES[hundreds] + " hundred" + (" " + cardinal(rest) if rest else "")
    for value, name in SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return cardinal(head) + " " + name + (" " + cardinal(rest) if rest else "")
    raise AssertionError("unreachable")


def ordinal(n: int) -> str:
    """21 -> "twenty first"."""
    words = cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def digits(text: str) -> str:
    """ "0571" -> "zero five seven one"."""
    return " ".join(ONES[int(ch)] for ch in text if ch.isdigit())


def decimal(integer: str, fraction: str) -> str:
    """("3", "14") -> "three point one four"."""
    return cardinal(int(integer or "0")) + " point " + digits(fraction)


def year(n: int) -> str:
    """1905 -> "nineteen oh five", 2008 -> "two thousand eight", 2024 -> "twenty twenty four"."""
    if not 1100 <= n <= 2099 or 2000 <= n <= 2009:
        return cardinal(n)
    head, tail = divmod(n, 100)
    if tail == 0:
        return cardinal(head) + " hundred"
    return cardinal(head) + " " + (("oh " + ONES[tail]) if tail < 10 else cardinal(tail))


_ROMAN = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}
# 1 to 99, written the one correct way (and not empty: it ends on a numeral's letter)
_ROMAN_NUMERAL = r"(?=[IVXLC])(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})(?<=[IVXLC])"
# Rulers and popes say their numeral as an ordinal: Henry VIII, Louis XIV, John Paul II.
_REGNAL_NAMES = (
    "Henry|Louis|Elizabeth|George|Edward|Charles|William|Richard|James|John|Paul|Pius|Benedict|Leo|Gregory|"
    "Innocent|Clement|Urban|Boniface|Alexander|Frederick|Philip|Peter|Ivan|Nicholas|Catherine|Mary|Anne|"
    "Victoria|Napoleon|Ferdinand|Carlos|Felipe|Gustav|Christian|Olav|Harald|Rama|Ramesses|Ptolemy|Otto|"
    "Wilhelm|Friedrich|Karl|Franz|Leopold|Sixtus|Constantine|Justinian|Theodosius"
)
_DETERMINERS = "The|A|An|This|That|These|Those|My|Your|His|Her|Its|Our|Their|Some|Any|No|Every|Each"
# Words after which a numeral counts: Chapter IV, World War II, Apollo XI.
_COUNTED_AFTER = "Chapter|Part|Act|Scene|Phase|Volume|Book|Episode|Season|Stage|Type|Class|Level|Article|Section|Appendix|Grade|Category|Round|Apollo|War"


def roman(numeral: str) -> int:
    """ "XIV" -> 14, for the numerals `_ROMAN_NUMERAL` accepts."""
    values = [_ROMAN[letter] for letter in numeral]
    return sum(-value if value < after else value for value, after in zip(values, values[1:] + [0], strict=True))


ROMAN_RULES: tuple[tuple[re.Pattern, Callable[[re.Match], str]], ...] = (
    (  # a ruler's numeral; a lone I only before a sentence's punctuation (Henry I. but not "Henry I think")
        re.compile(rf"\b({_REGNAL_NAMES}) ({_ROMAN_NUMERAL})\b(?<!\bI)(?!'(?!s\b))|\b({_REGNAL_NAMES}) (I)(?=[.,;:!?]|$)"),
        lambda m: f"{m[1] or m[3]} the {ordinal(roman(m[2] or m[4]))}",
    ),
    (re.compile(rf"\b({_COUNTED_AFTER}) ({_ROMAN_NUMERAL})\b(?!'(?!s\b))"), lambda m: f"{m[1]} {cardinal(roman(m[2]))}"),
    (  # two or more of I, V, X after a capitalized name: Rocky III, Final Fantasy VII (not "The XX chromosome")
        re.compile(
            rf"\b(?!(?:{_DETERMINERS})\b)([A-Z][a-z]+) ((?=[IVX]{{2}})X{{0,3}}(?:IX|IV|V?I{{0,3}})(?<=[IVX]{{2}}))\b(?!'(?!s\b))"
        ),
        lambda m: f"{m[1]} {cardinal(roman(m[2]))}",
    ),
)


def _plural(words: str) -> str:
    """ "nineteen ninety" -> "nineteen nineties"."""
    head, _, last = words.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return f"{head} {last}".strip()


def _number(text: str) -> str:
    """ "1,250.5" -> words."""
    integer, _, fraction = text.replace(",", "").partition(".")
    return decimal(integer, fraction) if fraction else cardinal(int(integer or "0"))


def _money(match: re.Match) -> str:
    unit, units, sub, subs = CURRENCIES[match.group("cur")]
    prefix = "US " if match.group("us") else ""
    amount = match.group("num").replace(",", "")
    scale = match.group("scale")
    if scale:
        return f"{_number(amount)} {_SCALE_WORDS[scale.lower()]} {prefix}{units}"
    integer, _, fraction = amount.partition(".")
    whole = int(integer or "0")
    if fraction and (sub is None or len(fraction) > 2):
        return f"{decimal(integer, fraction)} {prefix}{units}"
    cents = int(fraction.ljust(2, "0")) if fraction else 0
    main = f"{cardinal(whole)} {prefix}{unit if whole == 1 else units}"
    if not cents:
        return main
    change = f"{cardinal(cents)} {sub if cents == 1 else subs}"
    return change if whole == 0 else f"{main} and {change}"


def _phone(match: re.Match) -> str:
    text = match.group(0)
    groups = re.findall(r"\d+", text)
    spoken = [digits(group) for group in groups]
    if text.startswith("+"):
        spoken[0] = "plus " + spoken[0]
    return ", ".join(spoken)


def _iso_date(match: re.Match) -> str:
    y, m, d = (int(part) for part in match.groups())
    if not (1 <= m <= 12 and 1 <= d <= 31):
        return match.group(0)
    return f"{MONTHS[m - 1]} {ordinal(d)}, {year(y)}"


def _decade(match: re.Match) -> str:
    century, tens = match.group("century"), match.group("tens")
    if century:
        return _plural(year(int(century + tens + "0")))
    return _plural(TENS[int(tens)] if int(tens) >= 2 else cardinal(int(tens) * 10))


def _time(match: re.Match) -> str:
    hour, minute, half = int(match.group("hour")), int(match.group("minute")), match.group("half")
    if hour > 24 or minute > 59:
        return match.group(0)
    words = cardinal(hour)
    if minute:
        words += " " + (("oh " + ONES[minute]) if minute < 10 else cardinal(minute))
    elif not half:
        words += " o'clock"
    return words + (f" {half.upper()}M" if half else "")


def _small_integer(match: re.Match) -> str:
    """A bare integer that is not part of a date or a measure: read it ourselves."""
    before = match.string[max(0, match.start() - 10) : match.start()].split()
    if before and before[-1].rstrip(".").lower()[:3] in _MONTH_PREFIXES:
        return match.group(0)
    return cardinal(int(match.group(0)))


def _version(match: re.Match) -> str:
    """ "1.2.3" -> "one point two point three"."""
    return " point ".join(cardinal(int(part)) for part in match.group(0).split("."))


# Words before a number that make it a year ("in 1999", "since 1985", "the spring of 2003").
_YEAR_BEFORE = frozenset(
    "in since by from until till before after during circa c ca year years of around about early late mid "
    "spring summer autumn fall winter christmas born died founded built established class".split()
)
# Words after a number that make it a year ("1999 was", "1969 saw", "300 BC").
_YEAR_AFTER = frozenset("was is were saw marked brought began ended will had ad bc bce ce onwards onward".split())
_WORD_BEFORE_RE = re.compile(r"([A-Za-z]+)\.?,?\s*$")
_WORD_AFTER_RE = re.compile(r"^\s*'?([A-Za-z]+)")
# A year just before, joined by list glue: "in 1999, 1905 and 2008", "from 1999 to 2005".
_MONTH_DAY_RE = re.compile(
    r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s*$", re.IGNORECASE
)
_YEAR_LIST_RE = re.compile(r"(?<![\d.,])(\d{4})\s*(?:,|and|or|to|through|until|till|-|–|,\s*and|,\s*or)\s*$")
_LISTED_YEARS_MAX = 16


def is_year(text: str, start: int, end: int) -> bool:
    """Whether the four-digit number text[start:end] reads as a year: its words around say so
    ("in 1999", "1999 was", "300 BC", a month before it) or it follows a year in a list or range
    (followed back at most _LISTED_YEARS_MAX numbers, which bounds the cost of a long list)."""
    for _ in range(_LISTED_YEARS_MAX):
        if not 1100 <= int(text[start:end]) <= 2099:
            return False
        if _context_says_year(text, start, end):
            return True
        listed = _YEAR_LIST_RE.search(text[max(0, start - 40) : start])
        if not listed:
            return False
        start = max(0, start - 40) + listed.start(1)
        end = start + 4
    return False


def _context_says_year(text: str, start: int, end: int) -> bool:
    before = text[max(0, start - 40) : start]
    after = text[end : end + 20]
    if after.startswith("'s"):
        return True
    word_before = _WORD_BEFORE_RE.search(before)
    if word_before:
        word = word_before.group(1).lower()
        if word in _YEAR_BEFORE or word[:3] in _MONTH_PREFIXES:
            return True
    if _MONTH_DAY_RE.search(before):
        return True  # "May 3, 1999"
    word_after = _WORD_AFTER_RE.match(after)
    return bool(word_after and word_after.group(1).lower() in _YEAR_AFTER)


# A bare four-digit number: not part of a decimal, a grouped number, a time, a date or money.
_FOUR_DIGITS_RE = re.compile(r"(?<![\d.,:/$€£¥#+-])\d{4}(?![\d:/]|[.,]\d|s\b|-\d)")


def expand_years(sentence: str) -> str:
    """Spell out the four-digit numbers of a whole sentence that read as years; the rest stay digits.

    Runs before the sentence is cut into clauses, so a list or range keeps its context
    ("in 1999, 1905 and 2008" are all years).
    """

    def spell(match: re.Match) -> str:
        return f" {year(int(match.group(0)))} " if is_year(match.string, match.start(), match.end()) else match.group(0)

    return _FOUR_DIGITS_RE.sub(spell, sentence)


def _four_digits(match: re.Match) -> str:
    """A four-digit number: a year where it reads as one, a quantity elsewhere ("1999 people")."""
    n = int(match.group(0))
    return year(n) if is_year(match.string, match.start(), match.end()) else cardinal(n)


_CURRENCY_CLASS = re.escape("".join(CURRENCIES))
_MONTH_PREFIXES = frozenset(month[:3].lower() for month in MONTHS)
# Unit abbreviations wetext expands after a number ("5 kg" -> "five kilograms").
_UNITS = (
    "kg|km|cm|mm|mg|ml|m|g|l|lb|lbs|oz|ft|mi|yd|mph|kph|kmh|hz|khz|mhz|ghz|kb|mb|gb|tb|w|kw|kwh|v|mah|"
    "s|ms|min|mins|h|hr|hrs|sec|secs|k|c|f|am|pm|a\\.m|p\\.m"
)
_PATTERNS: tuple[tuple[re.Pattern, Callable[[re.Match], str]], ...] = (
    (
        re.compile(
            rf"(?P<us>US)?(?P<cur>[{_CURRENCY_CLASS}])\s?(?P<num>\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|\d+(?:\.\d+)?)"
            r"(?:\s?(?P<scale>thousand|million|billion|trillion|bn|[kKmMbB])\b)?"
        ),
        _money,
    ),
    (re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b"), _iso_date),
    (re.compile(r"(?<=\d)\s?m\b(?![²³])"), lambda m: "meters"),  # wetext reads "m" as minutes
    (
        re.compile(
            r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\d-])|(?<![\d.-])\d{3}-\d{4}(?![\d-])"
        ),
        _phone,
    ),
    (re.compile(r"(?:\b(?P<century>1[1-9]|20)|'|\b)(?P<tens>\d)0s\b"), _decade),
    (re.compile(r"#\s?(\d+)"), lambda m: "number " + m.group(1)),
    (re.compile(r"(?<![\d.])\d+(?:\.\d+){2,}(?!\.?\d)"), _version),
    (
        re.compile(r"(?P<sign>(?<![\w.-])-)?(?<![\d.,])(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+)(?![\d,.]*\d)"),
        lambda m: ("negative " if m.group("sign") else "") + _number(m.group("num")),
    ),
    (re.compile(r"(?<=\d)\s?[-–]\s?(?=\d)"), lambda m: "to"),
    (_FOUR_DIGITS_RE, _four_digits),
    (re.compile(r"(?<![\d.,:])\d{5,}(?![\d.,:])"), lambda m: cardinal(int(m.group(0)))),
    (re.compile(r"(?<![\w:])(?P<hour>\d{1,2}):(?P<minute>\d{2})(?!:?\d)(?:\s?(?P<half>[aApP])\.?[mM]\b)?"), _time),
    (
        re.compile(rf"(?<![\w.,:/$#+=×*^-])\d{{1,3}}(?![\w%°/:+=×*^]|[.,]\d|\s*(?:{_UNITS})\b)", re.IGNORECASE),
        _small_integer,
    ),
)


def expand_numbers(text: str) -> str:
    """Rewrite the numeric patterns wetext mishandles into words; other digits are left as they are."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(lambda m, r=replacement: f" {r(m)} ", text)
    return re.sub(r"\s+", " ", text)


def spell_remaining_digits(text: str) -> str:
    """Any digit run still in the text -> cardinal words (the last resort after wetext)."""
    return re.sub(r"\d+", lambda m: f" {cardinal(int(m.group(0)))} " if len(m.group(0)) < 16 else f" {digits(m.group(0))} ", text)
