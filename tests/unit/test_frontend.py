"""Text frontend: normalization, G2P, polyphones, replace dictionary, overrides, segmenting."""

import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glmtts.frontend import TextFrontend
from glmtts.frontend.arpabet import arpa_to_ipa
from glmtts.frontend.en_numbers import cardinal, ordinal, year
from glmtts.frontend.g2p_zh import pinyin_to_symbols
from glmtts.frontend.normalize import _SIGNS, _UNIT_SIGNS
from glmtts.frontend.phonemes import INITIALS, INVENTORY, tokens_to_syllables
from glmtts.frontend.replace_dict import ReplaceDict, ReplaceDictError, format_replace_dict, parse_replace_dict
from glmtts.frontend.split import (
    MAX_SEGMENT_CHARS,
    MAX_SEGMENT_WEIGHT,
    MIN_SEGMENT_WEIGHT,
    chunk_units,
    items_to_units,
    split_sentences,
)
from glmtts.types import SynthesisError

UPSTREAM_DICT = '{"弦": "<|X|><|IAN2|>"}\n{"弈": "<|I4|>"}\n{"乡音无改鬓毛衰": "乡音无改鬓毛<|C|><|UEI1|>"}\n'
PAUSES = {",", "."}


@pytest.fixture(scope="module")
def frontend(tmp_path_factory):
    path = tmp_path_factory.mktemp("frontend") / "G2P_replace_dict.jsonl"
    path.write_text(UPSTREAM_DICT, encoding="utf-8")
    fe = TextFrontend(path)
    fe.load()
    return fe


def normalized(fe: TextFrontend, text: str) -> str:
    return " ".join(segment.text for segment in fe.text_to_segments(text))


def zh_phonemes(fe: TextFrontend, text: str, use_phoneme: bool = False) -> list[str]:
    return [p for s in fe.text_to_segments(text, use_phoneme) for r in s.runs if r.lang == "zh" for p in r.phonemes]


def syllables_only(phonemes: list[str]) -> list[str]:
    return [p for p in phonemes if p not in PAUSES]


# ----------------------------------------------------------------------------- normalization
@pytest.mark.parametrize(
    "text, expected",
    [
        ("今天是2024年3月15日，气温-3.5℃。", "今天是二零二四年三月十五日，气温负三点五摄氏度。"),
        ("价格是¥12.50，涨了25%。", "价格是十二元五角，涨了百分之二十五。"),
        ("花了$12.50", "花了十二点五美元。"),
        ("电话13812345678。", "电话幺三八幺二三四五六七八。"),
        ("手机号+86 138 1234 5678", "手机号加八六，幺三八幺二三四五六七八。"),
        ("下午3:30开会", "下午三点三十分开会。"),
        ("他跑了1,250米，用时12.5秒。", "他跑了一千二百五十米，用时十二点五秒。"),
        ("第2天，2个人", "第二天，两个人。"),
        ("下午2点见，买2公斤，涨了2倍，去了2次。", "下午两点见，买两公斤，涨了两倍，去了两次。"),  # 两 where wetext says 二
        ("2月2日，12点，2年级，2的2次方，第2点。", "二月二日，十二点，二年级，二的二次方，第二点。"),  # and 二 where it is
        (
            "房间号是302，验证码：123456，航班CA1234，住301室。",
            "房间号是三零二，验证码，幺二三四五六，航班CA幺二三四，住三零幺室。",
        ),
        ("如果5≥3且2≤4，那么1≠2，π≈3.14。", "如果五大于等于三且二小于等于四，那么一不等于二，派约等于三点一四。"),
        (
            "房间里有302个人，电话费302元，RMB100元，Top100榜单，他是No.1。",
            "房间里有三百零二个人，电话费三百零二元，RMB一百元，Top一百榜单，他是第一。",
        ),  # counts stay counts
        ("速度60km/h，重量3kg", "速度每小时六十公里，重量三千克。"),
        ("一共10005人", "一共一万零五人。"),
        ("“你好”，他说（笑）——好吧……", "你好，他说，笑，好吧。"),
    ],
)
def test_chinese_normalization(frontend, text, expected):
    assert normalized(frontend, text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I paid $12.50.", "I paid twelve dollars and fifty cents."),
        ("1,250 apples", "one thousand two hundred fifty apples."),
        ("$0.99, $1 and $1.5 million", "ninety nine cents, one dollar and one point five million dollars."),
        ("It is 3.14 and 0.5.", "It is three point one four and zero point five."),
        ("He came 1st, 2nd and 21st.", "He came first, second and twenty first."),
        ("In 1999, 1905 and 2008.", "In nineteen ninety nine, nineteen oh five and two thousand eight."),
        ("At 3:30 pm or 10:05 am.", "At three thirty PM or ten oh five AM."),
        ("Up 25%, then 3.5%.", "Up twenty five percent, then three point five percent."),
        ("Call 555-123-4567.", "Call five five five, one two three, four five six seven."),
        ("It weighs 5 kg, 20 mph.", "It weighs five kilograms, twenty miles per hour."),
        ("The 1990s and '80s.", "The nineteen nineties and eighties."),
        ("1999 people came in 1999.", "one thousand nine hundred ninety nine people came in nineteen ninety nine."),
        (
            "From 1999 to 2005, 2008 sold 1,999.",
            "From nineteen ninety nine to two thousand five, two thousand eight sold one thousand nine hundred ninety nine.",
        ),
        ("The year 2024 was good, 1969 saw it.", "The year twenty twenty four was good, nineteen sixty nine saw it."),
        ("Page 1999.", "Page one thousand nine hundred ninety nine."),
        ("#1 hit, e.g. now!", "number one hit, for example now."),
        ("On Jan. 3rd, 2024 we met.", "On the third of january, twenty twenty four we met."),
        ("It was Dec. 25. Then we left.", "It was the twenty fifth of december. Then we left."),
        (
            "He lives on Baker St. now, near St. Louis and Mt. Fuji.",
            "He lives on Baker Street now, near Saint Louis and Mount Fuji.",
        ),
        (
            "Call ext. 42, see Fig. 3 of Vol. 2, approx. 5 pages.",
            "Call extension forty two, see figure three of volume two, approximately five pages.",
        ),
        ("Is it 12,345,678?", "Is it twelve million three hundred forty five thousand six hundred seventy eight?"),
        (
            "Chapter IV of World War II: Henry VIII's wives, Louis XIV, Pope John Paul II and Rocky III.",
            "Chapter four of World War two, Henry the eighth's wives, Louis the fourteenth, Pope John Paul the second and Rocky three.",
        ),
        (
            "John I think is right, an IV drip, The XX chromosome, size XL.",
            "John I think is right, an IV drip, The XX chromosome, size XL.",
        ),
        (
            "If a != b and x >= 3, or y <= 2 and a == b.",
            "If a not equal to b and x greater than or equal to three, or y less than or equal to two and a equals b.",
        ),
        (
            "Open 24/7, w/ or w/o sugar, in C# on .NET, #AI.",
            "Open twenty four seven, with or without sugar, in C sharp on dot NET, hashtag AI.",
        ),
        ("A 3rd-party app, wait 1 min or 5 mins or 2 hrs.", "A third party app, wait one minute or five minutes or two hours."),
    ],
)
def test_english_normalization(frontend, text, expected):
    assert normalized(frontend, text) == expected


def test_number_words():
    assert cardinal(1250) == "one thousand two hundred fifty"
    assert cardinal(1_000_001) == "one million one"
    assert ordinal(112) == "one hundred twelfth"
    assert year(1905) == "nineteen oh five" and year(2024) == "twenty twenty four" and year(1900) == "nineteen hundred"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Visit https://www.example.com/docs?page=2 today.", "Visit example dot com today."),  # a link: its site
        ("See docs.python.org/3/library for more.", "See docs dot python dot org for more."),
        (
            "Mail john.doe@example.com or http://user@shop.example.co.uk:8080/x.",
            "Mail john dot doe at example dot com or shop dot example dot co dot uk.",
        ),
        ("请访问example.com了解更多。", "请访问example dot com了解更多。"),
        ("Open app.py, config.json and Node.js.", "Open app dot py, config dot json and Node dot js."),
        ("I came home.Then I slept, etc.and so on.", "I came home. Then I slept, et cetera. and so on."),  # sentence ends stay
        ("The U.S. and Ph.D. students at 10 a.m.", "The U. S. and Ph. D. students at ten AM."),
    ],
)
def test_names_with_dots_are_said_with_dot(frontend, text, expected):
    assert normalized(frontend, text) == expected


@pytest.mark.parametrize("sign", sorted(_SIGNS) + sorted(_UNIT_SIGNS))
def test_no_sign_between_numbers_is_dropped(frontend, sign):
    """Every sign the table knows is said in its words in both languages, between two numbers (where
    the grammars see it) as elsewhere."""
    english, chinese = {**_SIGNS, **_UNIT_SIGNS}[sign]
    assert english in normalized(frontend, f"Then 1 {sign} 2 and x {sign} y.")
    assert chinese in normalized(frontend, f"然后1{sign}2，甲{sign}乙。")


# Text as people type it, and worse: digits, signs, Latin and Han letters, punctuation of both kinds,
# markup and arbitrary Unicode, in any order.
_TYPED = st.text(
    st.one_of(
        st.sampled_from(list("0123456789 ,.;:!?-/*^=<>()[]#@&%$€£¥'\"\n") + list("，。！？：；、（）％") + sorted(_SIGNS)),
        st.sampled_from(list("abcXYZIVst") + list("的一是二两号月日点元")),
        st.characters(codec="utf-8"),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_TYPED)
def test_any_text_is_spoken_in_words_or_refused_clearly(frontend, text):
    """Generated text: the frontend answers words (no digit, no sign of the table left to be dropped
    by a voice) or refuses with SynthesisError, never another error."""
    try:
        segments = frontend.text_to_segments(text)
    except SynthesisError:
        return
    spoken = "".join(segment.text for segment in segments)
    assert not any(ch in "0123456789" or ch in _SIGNS for ch in spoken), spoken


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Set 3 * 4, 2^10, 50¢, ₹100, ±5%, 25℃ and 10 µs.",
            "Set three times four, two to the power of ten, fifty cents, one hundred rupees, plus or minus five percent, twenty five degrees Celsius and ten microseconds.",
        ),
        ("It is 5 m² and π r², rose 5‰.", "It is five square meters and pi r squared, rose five per mille."),
        ("增长了5‰，2^10，₹100，5µm的颗粒，5Ω。", "增长了千分之五，二的十次方，一百卢比，五微米的颗粒，五欧姆。"),
        ("他考了100，5个人没考好。", "他考了一百，五个人没考好。"),  # a Chinese comma is no thousands separator
        ("\uf9a6子很好看。", "簾子很好看。"),  # a compatibility ideograph is its unified character
    ],
)
def test_signs_with_numbers(frontend, text, expected):
    assert normalized(frontend, text) == expected


def test_cleanup_markdown_emoji_full_width(frontend):
    assert normalized(frontend, "# Title\n**Bold** and [a link](http://example.com) 😀") == "Title. Bold and a link."
    assert normalized(frontend, "Ｈｅｌｌｏ　１２３") == "Hello one hundred twenty three."
    assert normalized(frontend, "- 第一项\n- 第二项") == "第一项。第二项。"


def test_english_glm_text_is_lowercase_and_text_keeps_case(frontend):
    (segment,) = frontend.text_to_segments("Hello NASA.")
    assert segment.text == "Hello NASA." and segment.glm_text == "hello nasa."


@pytest.mark.parametrize("text", ["", "   \n ", "😀🎉👍", "。。。！！！", "**  **"])
def test_nothing_to_speak_raises(frontend, text):
    with pytest.raises(SynthesisError):
        frontend.text_to_segments(text)


@pytest.mark.parametrize(
    "text, names",
    [
        ("안녕하세요", "Hangul"),
        ("こんにちは、カタカナ", "Japanese kana"),
        ("Привет, как дела?", "Cyrillic"),
        ("مرحبا بالعالم", "Arabic"),
        ("Привет 안녕 😀", "Cyrillic and Hangul"),
    ],
)
def test_unspeakable_script_is_named(frontend, text, names):
    with pytest.raises(SynthesisError) as caught:
        frontend.text_to_segments(text)
    message = str(caught.value)
    assert message.startswith("Nothing to speak: the text is in " + names + ", which this voice cannot read")
    assert "Chinese and English" in message


# ----------------------------------------------------------------------------- G2P
def test_inventory_matches_upstream_size():
    assert len(INVENTORY) == 204 and len(INITIALS) == 21


@pytest.mark.parametrize(
    "pinyin, symbols",
    [
        ("shang1", ("SH", "ANG1")),
        ("yao4", ("IAO4",)),
        ("wo3", ("UO3",)),
        ("yu2", ("V2",)),
        ("yi4", ("I4",)),
        ("ying1", ("ING1",)),
        ("wu3", ("U3",)),
        ("zhi1", ("ZH", "III1")),
        ("ri4", ("R", "III4")),
        ("si1", ("S", "II1")),
        ("ju1", ("J", "V1")),
        ("xue2", ("X", "VE2")),
        ("gui4", ("G", "UEI4")),
        ("liu2", ("L", "IOU2")),
        ("lun2", ("L", "UEN2")),
        ("men5", ("M", "EN5")),
        ("er5", ("ER2",)),  # the inventory has no neutral-tone ER
        ("n2", ("EN2",)),
    ],
)
def test_pinyin_to_symbols(pinyin, symbols):
    assert pinyin_to_symbols(pinyin) == symbols
    assert all(symbol in INVENTORY for symbol in symbols)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("重新", "CH ONG2 X IN1"),
        ("重要", "ZH ONG4 IAO4"),
        ("银行", "IN2 H ANG2"),
        ("行走", "X ING2 Z OU3"),
        ("长大", "ZH ANG3 D A4"),
        ("长度", "CH ANG2 D U4"),
        ("银行行长", "IN2 H ANG2 H ANG2 ZH ANG3"),
        ("我要还钱", "UO3 IAO4 H UAN2 Q IAN2"),
        ("还是", "H AI2 SH III4"),
        ("音乐很快乐", "IN1 VE4 H EN3 K UAI4 L E4"),
        ("我觉得要睡觉", "UO3 J VE2 D E5 IAO4 SH UEI4 J IAO4"),
        ("调整计划的音调", "T IAO2 ZH ENG3 J I4 H UA4 D E5 IN1 D IAO4"),
        ("你别着急", "N I3 B IE2 ZH AO2 J I2"),
        ("看着", "K AN4 ZH E5"),
        ("朝阳和朝代", "ZH AO1 IANG2 H E2 CH AO2 D AI4"),
        ("为了因为", "UEI4 L E5 IN1 UEI4"),
        ("数学，数一数", "SH U4 X VE2 SH U3 I5 SH U3"),  # 一 is neutral inside a reduplicated verb
        ("头发很长", "T OU2 F A5 H EN3 CH ANG2"),
        ("我得走了", "UO2 D EI3 Z OU3 L E5"),  # a third tone rises before a third tone in its prosodic word
    ],
)
def test_polyphones(frontend, text, expected):
    assert " ".join(syllables_only(zh_phonemes(frontend, text))) == expected


def test_pause_marks(frontend):
    assert zh_phonemes(frontend, "你好，世界！真的吗？") == [
        "N",
        "I2",
        "H",
        "AO3",
        ",",
        "SH",
        "III4",
        "J",
        "IE4",
        ".",
        "ZH",
        "EN1",
        "D",
        "E5",
        "M",
        "A5",
        ".",
    ]


# ----------------------------------------------------------------------------- tone sandhi and neutral tones
def shown_syllables(fe: TextFrontend, text: str) -> list[str]:
    """The Phoneme tab's sequence as one string per spoken position ("儿" for an erhua suffix)."""
    phoneme_text = fe.text_to_phoneme_text(text)
    out = []
    for match in re.finditer(r"((?:<\|[^<>|]*\|>)+)|(儿)", phoneme_text):
        if match.group(2):
            out.append("儿")
        else:
            out.extend(" ".join(s.symbols) for s in tokens_to_syllables(match.group(1)))
    return out


@pytest.mark.parametrize(
    "text, expected",
    [
        ("一次", ["I2", "C II4"]),
        ("一千", ["I4", "Q IAN1"]),
        ("第一", ["D I4", "I1"]),
        ("看一看", ["K AN4", "I5", "K AN4"]),
        ("不去", ["B U2", "Q V4"]),
        ("去不去", ["Q V4", "B U5", "Q V4"]),
        ("美好", ["M EI2", "H AO3"]),
        ("洗手间", ["X I2", "SH OU3", "J IAN1"]),
        ("展览馆", ["ZH AN2", "L AN2", "G UAN3"]),
        ("姐姐", ["J IE3", "J IE5"]),
        ("小姐", ["X IAO2", "J IE5"]),
        ("椅子", ["I3", "Z II5"]),
        ("一点儿", ["I4", "D IAN3", "儿"]),
        ("女儿", ["N V3", "ER2"]),
    ],
)
def test_tone_sandhi_in_the_phoneme_sequence(frontend, text, expected):
    assert shown_syllables(frontend, text) == expected


def test_the_voice_reads_sandhi_and_erhua_glm_tts_reads_dictionary_tones(frontend):
    (segment,) = frontend.text_to_segments("我很好，一点儿")
    assert segment.runs[0].phonemes == ("UO2", "H", "EN2", "H", "AO3", ",", "I4", "D", "IANR3", ".")
    (segment,) = frontend.text_to_segments("我很好，一点儿", use_phoneme=True)
    assert segment.glm_text == "<|UO3|><|H|><|EN3|><|H|><|AO3|>，<|I4|><|D|><|IAN3|><|ER2|>。"


def test_overrides_win_over_every_rule(frontend, tmp_path):
    # An inline token is kept as typed, and is context for its neighbours (不 before a fourth tone).
    assert shown_syllables(frontend, "不<|Q|><|V3|>美<|H|><|AO4|>") == ["B U4", "Q V3", "M EI3", "H AO4"]
    assert shown_syllables(frontend, "<|I1|>次") == ["I1", "C II4"]
    path = tmp_path / "dict.jsonl"
    path.write_text('{"一次": "<|I1|><|C|><|II4|>"}\n{"展览": "<|ZH|><|AN3|><|L|><|AN3|>"}\n', encoding="utf-8")
    fe = TextFrontend(path)
    fe.load()
    assert shown_syllables(fe, "一次") == ["I1", "C II4"]
    assert shown_syllables(fe, "展览馆") == ["ZH AN3", "L AN3", "G UAN3"]


def test_erhua_round_trips_through_the_phoneme_text(frontend):
    text = "我们一块儿去吧，等一会儿。"
    phoneme_text = frontend.text_to_phoneme_text(text)
    assert "<|K|><|UAI4|>儿" in phoneme_text and "<|H|><|UEI4|>儿" in phoneme_text
    assert zh_phonemes(frontend, phoneme_text, use_phoneme=True) == zh_phonemes(frontend, text)
    assert "UAIR4" in zh_phonemes(frontend, text)


# ----------------------------------------------------------------------------- replace dictionary
def test_upstream_replace_dict_applies(frontend):
    phonemes = syllables_only(zh_phonemes(frontend, "乡音无改鬓毛衰"))
    assert phonemes[-2:] == ["C", "UEI1"]
    assert syllables_only(zh_phonemes(frontend, "弈")) == ["I4"]
    (segment,) = frontend.text_to_segments("琴弦")
    assert segment.glm_text == "琴弦。"  # the dictionary reaches glm_text only in phoneme mode
    (segment,) = frontend.text_to_segments("琴弦", use_phoneme=True)
    assert segment.glm_text == "<|Q|><|IN2|><|X|><|IAN2|>。"


def test_replace_dict_longest_match_first():
    table = ReplaceDict({"衰": "<|SH|><|UAI1|>", "鬓毛衰": "鬓毛<|C|><|UEI1|>", "鬓毛": "<|B|><|IN4|><|M|><|AO2|>"})
    pieces = table.apply("鬓毛衰老，衰")
    assert [getattr(p, "surface", p) for p in pieces] == ["鬓毛衰", "老，", "衰"]
    assert pieces[0].parts[-1].symbols == ("C", "UEI1")


def test_replace_dict_validation_lists_every_problem():
    text = '{"弦": "<|X|><|IAN2|>"}\n{"琴": "<|Q|><|INN2|>"}\nnot json\n{"abc": "<|A1|>"}\n{"弦": "<|X|><|IAN4|>"}\n{"好": "<|H|>"}\n{"行": "hang"}'
    with pytest.raises(ReplaceDictError) as caught:
        parse_replace_dict(text)
    message = str(caught.value)
    assert len(caught.value.problems) == 6
    assert "line 2: unknown phoneme token <|INN2|>" in message
    assert "line 3: not valid JSON" in message
    assert "line 4: the surface 'abc' must be Chinese characters only" in message
    assert "line 5: '弦' is already defined on line 1" in message
    assert "line 6: initial <|H|> is not followed by a final" in message
    assert "line 7:" in message and "'hang'" in message


def test_replace_dict_round_trip_and_reload(tmp_path):
    entries = parse_replace_dict(UPSTREAM_DICT + "\n\n")
    assert list(entries) == ["弦", "弈", "乡音无改鬓毛衰"]
    assert parse_replace_dict(format_replace_dict(entries)) == entries
    path = tmp_path / "dict.jsonl"
    fe = TextFrontend(path)
    fe.load()
    assert syllables_only(zh_phonemes(fe, "弦")) == ["X", "IAN2"]  # pypinyin's own reading
    path.write_text('{"弦": "<|X|><|IAN4|>"}\n', encoding="utf-8")
    assert fe.reload_replace_dict() == 1
    assert syllables_only(zh_phonemes(fe, "弦")) == ["X", "IAN4"]


# ----------------------------------------------------------------------------- inline overrides
def test_inline_tokens_override_g2p(frontend):
    text = "<|ch|><|ONG2|>要"
    assert syllables_only(zh_phonemes(frontend, text)) == ["CH", "ONG2", "IAO4"]
    (segment,) = frontend.text_to_segments(text)
    assert segment.glm_text == "<|CH|><|ONG2|>要。"
    (segment,) = frontend.text_to_segments(text, use_phoneme=True)
    assert segment.glm_text == "<|CH|><|ONG2|><|IAO4|>。"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("你好<|XYZ|>", "<|XYZ|>"),
        ("<|CH|>好", "initial <|CH|> is not followed by a final"),
        ("<|endoftext|>", "<|endoftext|>"),
        ("[[foo: bar]]", "[[arpa: HH AH0 L OW1]]"),
        ("[[arpa: HH QQ1]]", "'QQ1' is not an ARPAbet phone"),
    ],
)
def test_bad_markup_names_the_problem(frontend, text, fragment):
    with pytest.raises(SynthesisError, match="Bad pronunciation markup") as caught:
        frontend.text_to_segments(text)
    assert fragment in str(caught.value)


def test_tokens_to_syllables_groups_initials_and_finals():
    assert [s.symbols for s in tokens_to_syllables("<|CH|><|ONG2|><|I4|>")] == [("CH", "ONG2"), ("I4",)]


def test_arpabet_to_ipa():
    assert arpa_to_ipa(["HH", "AH0", "L", "OW1"]) == "həlˈoʊ"
    assert arpa_to_ipa(["T", "AH0", "M", "EY1", "T", "OW2"]) == "təmˈeɪtˌoʊ"
    with pytest.raises(ValueError):
        arpa_to_ipa(["AH3"])


def test_english_override_spans_get_their_own_runs(frontend):
    (segment,) = frontend.text_to_segments("Say [[hello|arpa: HH AH0 L OW1]] and [[ipa: ˈnu ˈjɔɹk]] now.")
    runs = [(r.lang, r.text, r.phonemes) for r in segment.runs]
    assert runs[0] == ("en", "Say", None)
    assert runs[1] == ("en", "hello", ("həlˈoʊ",))
    assert runs[2] == ("en", "and", None)
    assert runs[3][2] == ("ˈnu", "ˈjɔɹk")
    assert runs[4] == ("en", "now.", None)
    assert "hello" in segment.glm_text and "[[" not in segment.glm_text


# ----------------------------------------------------------------------------- runs and segments
def test_mixed_text_runs(frontend):
    (segment,) = frontend.text_to_segments("我们明天用 Python 写一个 demo 吧。")
    assert [(r.lang, r.text) for r in segment.runs] == [
        ("zh", "我们明天用"),
        ("en", "Python"),
        ("zh", "写一个"),
        ("en", "demo"),
        ("zh", "吧。"),
    ]
    assert all(r.phonemes for r in segment.runs if r.lang == "zh")
    assert all(r.phonemes is None for r in segment.runs if r.lang == "en")


def test_digits_inside_chinese_are_read_in_chinese(frontend):
    (segment,) = frontend.text_to_segments("我用iPhone 15打电话")
    assert [(r.lang, r.text) for r in segment.runs] == [("zh", "我用"), ("en", "iPhone"), ("zh", "十五打电话。")]


def test_sentence_split_keeps_decimals_and_abbreviations():
    text = "Dr. Smith paid 3.5 dollars, e.g. cash. J. K. Rowling wrote it! 好的。再见"
    assert split_sentences(text) == ["Dr. Smith paid 3.5 dollars, e.g. cash.", "J. K. Rowling wrote it!", "好的。", "再见"]


def test_long_text_segments_are_bounded(frontend):
    sentences = [
        "今天我们重新开始学习音乐，大家都很快乐。",
        "The meeting starts at 3:30 pm and costs $12.50 per person.",
        "我用Python写了一个demo，效果还不错！",
        "Please call me tomorrow, I will be at home all day.",
    ]
    text = " ".join(sentences[i % 4] for i in range(400))
    segments = frontend.text_to_segments(text)
    for segment in segments:
        units = items_to_units([segment.text])
        assert sum(u.weight for u in units) <= MAX_SEGMENT_WEIGHT
    assert 100 < len(segments) < 400
    han = sum(ch == "乐" for s in segments for ch in s.text)
    assert han == 200  # nothing lost: 音乐 and 快乐 once in each of 100 sentences


def test_run_on_text_is_cut_evenly_between_syllables(frontend):
    phoneme_text = frontend.text_to_phoneme_text("我们今天去公园散步然后回家吃饭" * 20)
    segments = frontend.text_to_segments(phoneme_text, use_phoneme=True)
    assert len(segments) >= 5
    for segment in segments:
        syllables = tokens_to_syllables(segment.glm_text)  # raises if a syllable were cut in half
        assert 30 <= len(syllables) <= MAX_SEGMENT_WEIGHT


def test_chunking_bounds_every_segment():
    rng = random.Random(0)
    han = "我们今天去公园散步然后回家吃饭"
    text = "".join("".join(rng.choice(han) for _ in range(rng.randint(1, 90))) + rng.choice("，。") for _ in range(300))
    segments = chunk_units(items_to_units([text]))
    weights = [sum(u.weight for u in segment) for segment in segments]
    assert max(weights) <= MAX_SEGMENT_WEIGHT
    assert min(weights[:-1]) >= MIN_SEGMENT_WEIGHT / 2  # no tiny pieces left between long clauses
    assert "".join(u.text for segment in segments for u in segment) == text


def test_override_spans_are_never_split():
    from glmtts.frontend.phonemes import parse_override

    span = parse_override("tomato|arpa: T AH0 M EY1 T OW2")
    items = []
    for _ in range(40):
        items.extend(["we like the ", span, " and the potato and the onion "])
    segments = chunk_units(items_to_units(items))
    assert len(segments) > 1
    assert sum(u.item is span for seg in segments for u in seg) == 40


# ----------------------------------------------------------------------------- phoneme text round trip
def test_phoneme_text_round_trip(frontend):
    text = "乡音无改鬓毛衰，我们重新开始。他去银行取钱，I paid $12.50 for [[tomato|arpa: T AH0 M EY1 T OW2]]。<|CH|><|ONG2|>要！"
    phoneme_text = frontend.text_to_phoneme_text(text)
    assert not any("\u4e00" <= ch <= "\u9fff" for ch in phoneme_text)
    assert "<|C|><|UEI1|>" in phoneme_text and "[[tomato|arpa: T AH0 M EY1 T OW2]]" in phoneme_text
    assert "twelve dollars and fifty cents" in phoneme_text
    assert zh_phonemes(frontend, phoneme_text, use_phoneme=True) == zh_phonemes(frontend, text)
    # The user edits one syllable in the sequence and it is honoured.
    edited = phoneme_text.replace("<|CH|><|ONG2|>", "<|ZH|><|ONG4|>", 1)
    assert "ZH" in zh_phonemes(frontend, edited, use_phoneme=True)


@pytest.mark.parametrize(
    "text",
    [
        "我" * 20_000,  # Chinese without a break
        "a" * 20_000,  # one Latin "word"
        "Hello世界abc" * 2_000,  # mixed, no space or punctuation
    ],
)
def test_text_without_breaks_is_hard_split_into_bounded_segments(frontend, text):
    segments = frontend.text_to_segments(text)
    assert len(segments) > 1
    assert all(len(segment.text) <= MAX_SEGMENT_CHARS for segment in segments)
    assert all(segment.hard_split for segment in segments)
    letters = sum(ch.isalpha() for ch in text)
    assert sum(ch.isalpha() for segment in segments for ch in segment.text) == letters  # nothing lost


def test_ordinary_text_is_not_marked_hard_split(frontend):
    text = "今天天气很好，我们去公园散步。" * 30 + " The meeting starts at noon and lasts an hour." * 10
    assert not any(segment.hard_split for segment in frontend.text_to_segments(text))


def test_load_is_idempotent(frontend):
    tokenizer = frontend.g2p._tokenizer
    frontend.load()
    assert frontend.g2p._tokenizer is tokenizer
