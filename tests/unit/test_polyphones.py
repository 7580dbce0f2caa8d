"""Chinese polyphones: names, transliterations and place names, technical terms, everyday contexts,
the rules that used to overreach, the context model and g2pM's network, and a floor on CPP.

Readings are lexical (before tone sandhi), as `ChineseG2P.readings` gives them.
"""

import pytest

from glmtts.frontend.g2p_zh import ChineseG2P
from glmtts.frontend.g2pm_reader import NeuralReader
from glmtts.frontend.polyphone_model import MODEL_RESOURCE

from .test_mandarin_set import bench  # bench/bench_frontend.py, loaded once

MIN_CPP_SAMPLE_ACCURACY = 0.95  # the shipped dev-split sample, held out of the model's training
MAX_MODEL_BYTES = 2_000_000


@pytest.fixture(scope="module")
def g2p():
    reader = ChineseG2P()
    reader.load()
    return reader


def reading_of(g2p: ChineseG2P, text: str, char: str, occurrence: int = 0) -> str:
    positions = [i for i, ch in enumerate(text) if ch == char]
    return g2p.readings(text)[positions[occurrence]]


@pytest.mark.parametrize(
    "text, char, expected",
    [
        ("翟先生来了", "翟", "zhai2"),
        ("缪先生说得对", "缪", "miao4"),
        ("曾先生是我的老师", "曾", "zeng1"),
        ("我姓单", "单", "shan4"),
        ("单先生在吗", "单", "shan4"),
        ("朴槿惠当选总统", "朴", "piao2"),
        ("杨仆率军南下", "仆", "pu2"),
        ("杨仆率军南下", "率", "shuai4"),
    ],
)
def test_surnames_and_names(g2p, text, char, expected):
    assert reading_of(g2p, text, char) == expected


@pytest.mark.parametrize(
    "text, char, expected",
    [
        ("阿塞拜疆的首都是巴库", "塞", "sai4"),
        ("塞尔维亚队赢了", "塞", "sai4"),
        ("他来自埃塞俄比亚", "塞", "sai4"),
        ("勃艮第出产葡萄酒", "艮", "gen4"),
        ("儒勒凡尔纳写了很多小说", "勒", "le4"),
        ("他住在欧什", "什", "shi2"),
        ("张掖在甘肃", "掖", "ye4"),
        ("阆中是一座古城", "阆", "lang4"),
        ("什叶派", "什", "shi2"),
    ],
)
def test_transliterations_and_place_names(g2p, text, char, expected):
    assert reading_of(g2p, text, char) == expected


@pytest.mark.parametrize(
    "text, char, expected",
    [
        ("乙炔是一种气体", "炔", "que1"),
        ("蛤蜊很好吃", "蛤", "ge2"),
        ("这种材料掺杂了硼", "掺", "chan1"),
        ("晟是一个人名用字", "晟", "sheng4"),
    ],
)
def test_technical_terms_and_rare_characters(g2p, text, char, expected):
    assert reading_of(g2p, text, char) == expected


@pytest.mark.parametrize(
    "text, char, expected",
    [
        ("他把书塞进书包", "塞", "sai1"),
        ("交通堵塞", "塞", "se4"),
        ("他没来", "没", "mei2"),
        ("箱子太重了", "重", "zhong4"),
        ("他会弹钢琴", "弹", "tan2"),
        ("他露了一手", "露", "lou4"),
        ("你把钱还给我", "还", "huan2"),
        ("他去银行取钱", "行", "hang2"),
        ("他的单位在城里", "单", "dan1"),
        ("你查一查", "查", "cha2"),
        ("他们在山洞里藏了很多粮食", "藏", "cang2"),  # the verb before 了 / 到 / 起来
        ("你把我的书藏到哪里去了", "藏", "cang2"),
        ("西藏的宝藏", "藏", "zang4"),
        ("他们的成绩相差很多", "差", "cha4"),  # pypinyin's phrase reading kept: CPP's chā here is no reason to leave it
        ("甭说了", "甭", "beng2"),  # characters g2pM never learnt keep the dictionary's reading
        ("於是他走了", "於", "yu2"),
    ],
)
def test_everyday_contexts(g2p, text, char, expected):
    assert reading_of(g2p, text, char) == expected


@pytest.mark.parametrize(
    "text, char, expected",
    [
        ("露西是我的朋友", "露", "lu4"),  # zh_rules' default lòu for 露 alone
        ("这种布雷弹很危险", "弹", "dan4"),  # its default tán
        ("他去了圣彼得堡", "得", "de2"),  # a taken-apart word read by the 得 rule as de
        ("这座山因此得名", "得", "de2"),
        ("他是诺贝尔奖得主", "得", "de2"),
        ("他的生活很简朴", "朴", "pu3"),  # pypinyin's phrase dictionary: jiǎn piáo
    ],
)
def test_rules_that_overreached(g2p, text, char, expected):
    assert reading_of(g2p, text, char) == expected


def test_model_changes_only_what_phrases_and_rules_left(g2p):
    """Our phrase list and the context rules win over the model: 行 in 银行 is háng from the phrase
    list, 只 after a numeral zhī by rule; the model reads only characters read alone."""
    analysis = g2p.settle("他去银行取了两只猫")
    unsettled = {analysis.text[i] for i in analysis.unsettled()}
    assert "行" not in unsettled and "只" not in unsettled
    assert g2p.readings("他去银行取了两只猫")[3] == "hang2"


def test_model_reads_with_g2pms_probabilities(g2p):
    """Each polyphone the model reads carries g2pM's probability of each of its candidate readings."""
    analysis = g2p.settle("这一行的行家说银杏在秋天很好看")
    contexts = g2p.contexts(analysis, analysis.unsettled())
    assert contexts
    for context in contexts.values():
        assert sum(context.neural.values()) == pytest.approx(1.0, abs=1e-6)
        assert set(context.neural) <= set(g2p._model.readings[context.text[context.index]]) | {context.reading}


def test_model_file_is_small_and_loads_the_same_way_twice(g2p):
    from importlib import resources

    size = resources.files("glmtts.frontend").joinpath(MODEL_RESOURCE).stat().st_size
    assert size < MAX_MODEL_BYTES
    again = ChineseG2P()
    again.load()
    text = "欧什和张掖都有一座什么样的塔"
    assert again.readings(text) == g2p.readings(text)


def test_neural_reader_matches_g2pm():
    """Our numpy run of g2pM's network picks what g2pM itself picks."""
    from g2pM import G2pM

    reference = G2pM()
    reader = NeuralReader()
    every = tuple(reader.class_ids)
    for text in ("然而他红了二十年以后竟退出了大家的视线", "银行行长说这一行不好做", "他把书塞进书包"):
        expected = reference(text, char_split=True)
        positions = [i for i, ch in enumerate(text) if len(reference.cedict.get(ch, ())) > 1]
        got = reader.distributions(text, {i: every for i in positions})
        assert [max(got[i], key=got[i].get) for i in positions] == [expected[i] for i in positions]
        assert all(sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6) for probabilities in got.values())
    assert reader.distributions("他把书塞进书包", {3: ("sai1", "not-a-reading")}) == {3: {"sai1": 1.0}}


def test_cpp_sample_floor(g2p):
    """400 lines of CPP's dev split, held out of the model's training (the full figures: bench_frontend.py)."""
    items = bench.read_cpp(bench.CPP_SAMPLE)
    result = bench.score_cpp(items, g2p.readings)
    assert result["total"] == 400
    assert result["strict"] / result["total"] >= MIN_CPP_SAMPLE_ACCURACY, result["errors"][:20]


def test_without_the_model_the_sample_falls_back_to_dictionary_readings():
    """The floor above is the model's doing: without it the same lines read far worse."""
    plain = ChineseG2P()
    plain.load(use_model=False)
    result = bench.score_cpp(bench.read_cpp(bench.CPP_SAMPLE), plain.readings)
    assert result["strict"] / result["total"] < MIN_CPP_SAMPLE_ACCURACY
