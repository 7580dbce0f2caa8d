"""Context rules for Mandarin readings: polyphones that a word list cannot settle, and neutral tones.

A polyphonic character that jieba leaves as a word of its own (他/还/没把书/还/给我) gets one reading
from pypinyin whatever the context. The rules here pick the reading from the neighbouring words,
the way a reader does: 还 before 给 or at the end of a clause is huán, 得 after a pronoun is děi,
after a verb de, 只 after a numeral is zhī. They run after the phrase list (`polyphones.txt`), whose
matches they never change. The neutral-tone rules cover what is regular rather than listed:
reduplicated kinship nouns (姐姐 jiějie), reduplicated verbs (看看 kànkan), the aspect particle 过
after a verb, and the noun suffix 子 in words the dictionary does not know.

Readings are tone-numbered pinyin ("hai2", "de5"); these rules give lexical readings, before any
tone sandhi.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# fmt: off
PRONOUNS = frozenset("我 你 您 他 她 它 我们 你们 他们 她们 它们 咱们 咱 大家 自己 谁 人家 别人 大伙 各位".split())
# Characters after which a measure word follows: numerals, demonstratives, 几, 每, 各.
NUMERAL_CHARS = frozenset("一二两三四五六七八九十百千万几半这那哪每各某多")
# Adverbs and modals after which 得 is the modal děi.
DEI_BEFORE = frozenset("就 还 也 都 总 可 非 必须 恐怕 总得 又 才 一定 肯定 先 还是 必 真 怕是 只 于是".split())
# Words that typically follow the modal děi: what one must do.
DEI_AFTER = frozenset(
    "好好 赶快 赶紧 马上 早点 早 先 抓紧 小心 注意 去 走 回家 回去 想想 多 少 花 等 找 把 给 跟 让 用 交 买 做 考虑 重新 "
    "自己 立刻 再 请 换 改 加油 带 准备 尽快 快点 练".split()
)
# Common one-syllable verbs: the aspect particle 过 after them is neutral, and so is the second
# syllable of their reduplication (看看, 想想).
VERBS = frozenset(
    "去 来 吃 喝 看 听 见 做 用 学 住 玩 说 想 试 到 坐 走 读 写 买 卖 爱 遇 碰 问 谈 聊 找 尝 练 唱 跳 跑 洗 擦 扫 "
    "等 歇 摸 闻 动 查 算 比 改 画 讲 教 拿 送 放 开 关 穿 戴 借 还 提 搬 修 拍 打 逛 猜 数 抱 亲 笑 哭 睡 醒 飞 游 "
    "种 养 煮 炒 切 剪 推 拉 摇 转 数 翻 找 挑 选 弹 拉 吹 敲 踢 捏 揉 捶 晒 泡 尝".split()
)
KINSHIP = frozenset("妈 爸 哥 姐 弟 妹 爷 奶 姥 叔 舅 姑 伯 婶 公 婆 太 宝 娃 星 猩")
# Nouns in 子 whose 子 keeps its full third tone (孔子, 电子, 男子...).
FULL_ZI = frozenset("孔 孟 庄 老 男 女 电 原 分 粒 因 质 中 光 量 卵 精 孢 君 天 太 王 弟 游 学 赤 瓜 莲 棋 松 才 诸 夫 孝 浪 公 舟 骰 仔 赘 世 臣 士 母 父 妻 嫡 庶 长 次 独 逆 犬 狮 鱼 虾 蚕 桑 子".split())
# Things that come loose (散 sǎn) rather than disperse (散 sàn).
LOOSE_THINGS = ("鞋带", "头发", "辫子", "绳子", "架子", "包", "书", "纸", "线")
# fmt: on


@dataclass
class Context:
    """The words of a clause run, their readings (one per character), and the word being decided."""

    words: list[str]
    readings: list[str]
    starts: list[int]  # character offset of each word
    index: int

    def word(self, offset: int) -> str:
        """The word `offset` places away ("" outside the run)."""
        position = self.index + offset
        return self.words[position] if 0 <= position < len(self.words) else ""

    def following(self) -> str:
        """The text after the word, to the end of the run."""
        return "".join(self.words[self.index + 1 :])

    def reading(self, offset: int) -> str:
        """The reading of the last character of the word `offset` places away ("" outside)."""
        position = self.index + offset
        if not 0 <= position < len(self.words):
            return ""
        return self.readings[self.starts[position] + len(self.words[position]) - 1]


def _last(word: str) -> str:
    return word[-1:] if word else ""


_GAINS = ("奖", "分", "第", "冠军", "金牌", "病", "感冒", "名")  # what one 得了 (dé le): prizes, scores, illnesses


def _de(c: Context) -> str | None:  # 得: de (complement), děi (must), dé (obtain)
    before, after = c.word(-1), c.word(1)
    if after == "了" and (before in PRONOUNS or not before or any(gain in c.following()[:6] for gain in _GAINS)):
        return "de2"
    if before in PRONOUNS or before in DEI_BEFORE or not before:
        return "de2" if after.startswith(("到", "奖", "分", "病")) else "dei3"
    if after in DEI_AFTER and after not in ("多", "少", "早"):
        return "dei3"
    return "de5"


def _di(c: Context) -> str | None:  # 地: de (adverbial marker), dì (ground)
    before, after = c.word(-1), c.word(1)
    if after[:1] in ("上", "下", "里", "面", "方", "区", "图", "铁", "球", "点", "板") or before in (
        "在",
        "这块",
        "块",
        "片",
        "这",
        "那",
        "一",
        "满",
        "扫",
        "种",
        "落",
        "土",
    ):
        return "di4"
    if len(before) >= 2 or (before and before[-1:] in "然地般样么") or (before and before == c.word(-2)):
        return "de5"  # after an adverbial: 认真地, 慢慢地 (also as two words 慢 慢)
    return None


def _zhe(c: Context) -> str | None:  # 着: zháo (catch fire, fall asleep, find) before 了 or at the end
    if c.word(1) in ("了", "") and _last(c.word(-1)) in set("火灯睡猜找买借打点烧够碰"):
        return "zhao2"
    return None


def _le(c: Context) -> str | None:  # 了: liǎo in potential complements (做不了, 做得了)
    before = c.word(-1)
    if before.endswith("不") or (before == "得" and c.reading(-1) == "de5"):
        return "liao3"
    return None


def _huan(c: Context) -> str | None:  # 还: huán (give back) vs hái (still)
    after, after2 = c.word(1), c.word(2)
    if after.startswith(("给", "钱", "书", "债", "清", "款", "贷")):
        return "huan2"
    if after.startswith("回") and c.word(-1) in ("要", "得", "该", "应该", "必须", "记得", "别忘了", "按时", "会"):
        return "huan2"  # 要还回去
    if not after and c.word(-1):  # at the end of a clause: 按时还
        return "huan2"
    if after == "了" and not after2.startswith("得"):  # 他还了我钱 (but 还了得: how outrageous)
        return "huan2"
    if after in PRONOUNS and (not after2 or after2[:1] in "钱书东一个的"):
        return "huan2"
    return None


_NAMING = frozenset("选称变改分化任评拜誉命定列视转译作成以认沦划封立推")


def _wei(c: Context) -> str | None:  # 为: wéi after verbs of naming and becoming (选为, 选他为)
    if _last(c.word(-1)) in _NAMING or (c.word(-1) in PRONOUNS and _last(c.word(-2)) in _NAMING):
        return "wei2"
    return None


def _zhong(c: Context) -> str | None:  # 中: zhòng (hit the mark, win) vs zhōng
    if c.word(1) in ("了", "过") or _last(c.word(-1)) in set("射打击命猜考选看说投砸踢"):
        return "zhong4"
    return None


def _zhuan(c: Context) -> str | None:  # 转: zhuàn (turn round) vs zhuǎn (turn to, pass on)
    after, after2 = c.word(1), c.word(2)
    if after[:1] in ("个", "圈", "来", "去", "得", "着", "动", "悠") or after in ("不停",):
        return "zhuan4"
    if after == "了" and after2[:2] in ("一圈", "几圈", "两圈", "半天", "一会", "圈"):
        return "zhuan4"
    if not after and (
        c.word(-1) in ("在", "正在", "着", "地", "会", "不停")
        or any(word[:1] in ("绕", "围", "团") for word in c.words[: c.index])
    ):
        return "zhuan4"  # 一直在转, 绕着太阳转
    return None


def _bei(c: Context) -> str | None:  # 背: bēi (carry on the back) vs bèi (recite, back)
    if c.word(1) in ("着", "上", "起", "起来", "走", "过", "在") or c.following().startswith(("不动", "得动", "在身")):
        return "bei1"
    return None


def _kong(c: Context) -> str | None:  # 空: kòng (free time) after 有 / 没 / 抽
    if c.word(-1) in ("有", "没", "没有", "抽", "有没有", "腾", "留", "得"):
        return "kong4"
    return None


def _zhong_zhong(c: Context) -> str | None:  # 种: zhǒng (kind) after a numeral, zhòng (plant) as a verb
    if _last(c.word(-1)) in NUMERAL_CHARS:
        return "zhong3"
    if c.word(-1) in PRONOUNS:
        return "zhong4"  # 他种的西瓜
    if c.word(1)[:1] in set("了着过花树菜地田草瓜豆") or c.word(1) in ("玉米", "麦子", "水稻", "庄稼", "粮食"):
        return "zhong4"
    return None


def _shu(c: Context) -> str | None:  # 数: shǔ (count) as a verb, shù (number) after a measure or 的
    if c.word(1) in ("着", "了", "一", "过", "一数", "一下", "清", "清楚", "不清", "到", "数"):
        return "shu3"
    if _last(c.word(-1)) in set("个的有少多大小整奇偶分倍基参次岁人总位"):
        return "shu4"
    return None


def _cha(c: Context) -> str | None:  # 差: chā (difference) after 的
    return "cha1" if c.word(-1) == "的" else None


def _tan(c: Context) -> str | None:  # 弹: dàn (bullet) after its measure words and after kinds of shell (布雷弹, 燃烧弹)
    return "dan4" if _last(c.word(-1)) in set("颗枚发炸导炮雷榴烧泪号甲雾毒烟光") else None


def _gan(c: Context) -> str | None:  # 干: gān (dry) vs gàn (do)
    if c.word(1) in ("什么", "吗", "嘛", "活", "活儿", "事", "得", "起来", "掉", "这", "那", "一"):
        return "gan4"
    if c.word(-1) in ("已经", "晒", "烤", "烘", "吹", "擦", "没", "还没", "很", "太", "都", "快", "半", "变", "风", "没有", "晾"):
        return "gan1"
    return None


def _liang(c: Context) -> str | None:  # 量: liáng (measure) as a verb
    if c.word(1) in ("一下", "一量", "体温", "尺寸", "身高", "血压", "了", "过", "好", "长度", "一"):
        return "liang2"
    if c.word(-1) in ("先", "去", "给", "帮", "来", "再"):
        return "liang2"
    return None


def _zhi(c: Context) -> str | None:  # 只: zhī (measure word) after a numeral or demonstrative
    return "zhi1" if _last(c.word(-1)) in NUMERAL_CHARS else None


# Surname readings of characters that read otherwise elsewhere (单 dān, but 单雄信 Shàn Xióngxìn).
SURNAMES = {
    "单": "shan4", "仇": "qiu2", "解": "xie4", "区": "ou1", "查": "zha1", "曾": "zeng1", "盖": "ge3", "朴": "piao2",
    "翟": "zhai2", "缪": "miao4", "隗": "wei3", "覃": "qin2", "召": "shao4", "繁": "po2", "纪": "ji3", "秘": "bi4",
}  # fmt: skip
_TITLES = ("先生", "老师", "女士", "总", "经理", "教授", "同学", "小姐", "某", "家", "氏", "太太", "师傅", "大夫", "医生")


def _surname(c: Context) -> str | None:  # a surname before a title or after 姓: 曾先生, 我姓单
    before = c.word(-1)
    if (before.endswith("姓") and not before.endswith("百姓")) or c.word(1).startswith(_TITLES):
        return SURNAMES[c.words[c.index]]
    return None


def _san(c: Context) -> str | None:  # 散: sǎn (come loose) for things that come loose
    if c.word(1) == "了" and c.word(-1).endswith(LOOSE_THINGS):
        return "san3"
    return None


def _he(c: Context) -> str | None:  # 和: hú (win at mahjong) before 了
    return "hu2" if c.word(1) == "了" else None


def _jie(c: Context) -> str | None:  # 结: jiē (bear fruit)
    if any(fruit in c.word(1) + c.word(2) + c.word(3) for fruit in ("果", "籽", "瓜")) and not c.word(1).startswith(
        ("婚", "束", "论", "账")
    ):
        return "jie1"
    return None


def _xi(c: Context) -> str | None:  # 系: jì (tie)
    if c.word(1) in ("好", "上", "紧", "着", "鞋带", "领带", "安全带", "扣子", "了") or c.word(-1) in ("请", "把", "帮", "要"):
        return "ji4"
    return None


def _jia(c: Context) -> str | None:  # 假: jià (leave, holiday) after 天 / 请 / 放
    return "jia4" if _last(c.word(-1)) in set("天请放休病事婚产") else None


def _chong(c: Context) -> str | None:  # 冲: chòng (blunt; towards)
    if c.word(-1) in ("很", "太", "真", "特别", "挺", "有点", "有些") or c.word(1) in ("着", "我", "你", "他", "她"):
        return "chong4"
    return None


def _cheng(c: Context) -> str | None:  # 盛: chéng (fill a bowl)
    if c.word(1)[:1] in set("一饭汤菜水满了着") or c.word(1)[:1] == "不":
        return "cheng2"
    return None


def _hang(c: Context) -> str | None:  # 行: háng (row, trade) after a numeral or ordinal
    before = c.word(-1)
    if _last(before) in NUMERAL_CHARS or before.startswith("第"):
        return "hang2"
    return None


def _zhang(c: Context) -> str | None:  # 长: zhǎng (grow) before 得 / 大 / 高; cháng after degree words
    if c.word(1)[:1] in set("得大高胖出满") or c.word(1) == "了":
        return "zhang3"
    if c.word(-1) in ("很", "太", "最", "多", "真", "好", "挺", "这么", "那么", "更", "不", "较", "比较", "特别", "非常"):
        return "chang2"
    return None


def _jiao_sleep(c: Context) -> str | None:  # 觉: jiào (sleep) after 睡 / 午 / a measure word
    return "jiao4" if _last(c.word(-1)) in set("睡午个好场") else None


def _shuai(c: Context) -> str | None:  # 率: shuài (lead) before troops, also in a name jieba glued (杨仆率 军)
    return "shuai4" if c.word(1)[:1] in set("军兵部众师舰") else None


def _cang(c: Context) -> str | None:  # 藏: cáng (hide) before a verb's particle or complement (藏了, 藏到)
    return "cang2" if c.word(1)[:1] in set("了到起在着好进得住过") else None


def _dao(c: Context) -> str | None:  # 倒: dǎo (fall) after verbs that make things fall
    return "dao3" if _last(c.word(-1)) in set("吹摔推打撞踢砍绊病累跌压击晕滑扳撂") else None


# Character -> rule for when it is a word of its own.
RULES: dict[str, Callable[[Context], str | None]] = {
    "得": _de, "地": _di, "着": _zhe, "了": _le, "还": _huan, "为": _wei, "中": _zhong, "转": _zhuan,
    "背": _bei, "空": _kong, "种": _zhong_zhong, "数": _shu, "差": _cha, "弹": _tan, "干": _gan,
    "量": _liang, "只": _zhi, "散": _san, "和": _he, "结": _jie, "系": _xi, "假": _jia,
    "冲": _chong, "盛": _cheng, "行": _hang, "长": _zhang, "觉": _jiao_sleep, "倒": _dao, "率": _shuai,
    "藏": _cang,
}  # fmt: skip
RULES.update({char: _surname for char in SURNAMES if char not in RULES})
# The reading of a character that jieba leaves as a word of its own when no rule decided: the
# verb, where pypinyin's first reading is the noun (教 jiāo teach, 切 qiē cut, 背 bèi recite...).
DEFAULTS = {
    "为": "wei4", "背": "bei4", "数": "shu3", "差": "cha4", "弹": "tan2", "只": "zhi3", "教": "jiao1",
    "切": "qie1", "划": "hua2", "露": "lou4",
}  # fmt: skip


RULE_CHARS = frozenset(RULES) | frozenset(DEFAULTS) | {"过"}


RULE, DEFAULT = "rule", "default"  # what set a character's reading: a context rule, or DEFAULTS


def apply_polyphone_rules(rule_words: list[str], taken_apart: list[bool], readings: list[str], fixed: list[bool]) -> list[str]:
    """Settle polyphones standing as words of their own, in place; returns, per character, RULE
    where a context rule set its reading, DEFAULT where DEFAULTS did, "" elsewhere.

    `rule_words` are jieba's words with unknown words holding a RULE_CHARS character taken apart
    (`taken_apart` marks their characters: rules apply to them, defaults do not); `fixed` marks
    characters the phrase list settled: no rule changes them.
    """
    return _polyphones(rule_words, taken_apart, readings, fixed)


def apply_neutral_rules(words: list[str], readings: list[str], fixed: list[bool]) -> None:
    """Regular neutral tones in jieba's `words`, in place; characters marked `fixed` keep their reading."""
    starts = _starts(words)
    for word, start in zip(words, starts, strict=True):
        if len(word) > 1:
            _neutral_in_word(word, start, readings, fixed)
    _reduplications(words, starts, readings, fixed)


def _starts(words: list[str]) -> list[int]:
    starts = []
    position = 0
    for word in words:
        starts.append(position)
        position += len(word)
    return starts


def _polyphones(words: list[str], taken_apart: list[bool], readings: list[str], fixed: list[bool]) -> list[str]:
    starts = _starts(words)
    sources = [""] * len(readings)
    for index, word in enumerate(words):
        start = starts[index]
        if len(word) != 1 or fixed[start]:
            continue
        rule = RULES.get(word)
        reading = rule(Context(words, readings, starts, index)) if rule is not None else None
        if reading:
            sources[start] = RULE
        elif not taken_apart[index] and word in DEFAULTS:
            reading = DEFAULTS[word]
            sources[start] = DEFAULT
        if reading:
            readings[start] = reading
        after = words[index + 1][:1] if index + 1 < len(words) else ""
        if word == "过" and index and _last(words[index - 1]) in VERBS and after not in ("来", "去"):
            readings[start] = "guo5"  # the aspect particle: 去过, 吃过
            sources[start] = RULE
    return sources


def _neutral_in_word(word: str, start: int, readings: list[str], fixed: list[bool]) -> None:
    """Regular neutral tones inside one word: AA kinship nouns and verbs, V过, the suffix 子."""
    end = start + len(word) - 1
    if fixed[end]:
        return
    if len(word) >= 2 and word[0] == word[1] and (word[0] in KINSHIP or word[0] in VERBS) and not fixed[start + 1]:
        readings[start + 1] = _neutral(readings[start + 1])  # 姐姐, 看看, 说说看
    elif len(word) == 2 and word[1] == "过" and word[0] in VERBS and readings[end] == "guo4":
        readings[end] = "guo5"
    elif word[-1] == "子" and len(word) in (2, 3) and readings[end] == "zi3" and word[-2] not in FULL_ZI:
        readings[end] = "zi5"


def _reduplications(words: list[str], starts: list[int], readings: list[str], fixed: list[bool]) -> None:
    """A kinship noun or verb said twice as two words (姐 姐, 看 看) is one reduplication: the second is neutral."""
    for index in range(1, len(words)):
        word = words[index]
        if len(word) == 1 and word == words[index - 1] and (word in VERBS or word in KINSHIP) and not fixed[starts[index]]:
            readings[starts[index]] = _neutral(readings[starts[index]])


def _neutral(reading: str) -> str:
    return reading[:-1] + "5" if reading and reading[-1].isdigit() else reading
