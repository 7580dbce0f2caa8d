"""Mandarin tone sandhi and erhua: lexical readings -> the tones a native speaker says.

Applied to the phoneme sequence the Mandarin voice reads and the Phoneme tab shows (the Baker corpus
that voice was trained on labels tones as spoken: 卡尔普 ka2 er2 pu3, 老虎 lao2 hu3), not to what
GLM-TTS reads in phoneme mode (upstream feeds dictionary tones and lets the model apply sandhi).

- 一: yī alone, at the end of a word or number, among digits, as an ordinal (第一, 一月, 一号, 一楼,
  星期一); neutral between a reduplicated verb (看一看, not 一步一步); yí before a fourth tone; yì before the others.
- 不: neutral between A and A (去不去, not 不对不对) and inside a three-character potential complement
  (对不起); bú before a fourth tone; bù elsewhere.
- Third tone: syllables are grouped into prosodic words of at most three syllables (jieba words;
  a one-syllable word leans on its neighbour: particles and object pronouns to the left, adverbs and
  subjects to the right), and inside each a third tone before a third tone rises (展览馆 zhán lán
  guǎn, 我很好 wó hén hǎo). A neutral syllable that was a third tone counts as one (小姐 xiáojie),
  except 子 and reduplicated kinship nouns (椅子 yǐzi, 姐姐 jiějie).
- Erhua: 儿 at the end of a word (一点儿, 哪儿, 玩儿) is the r-colouring of the syllable before it,
  not a syllable of its own; 女儿, 婴儿, 儿童 keep a full ér.

A locked syllable (the user's inline token, a replace-dictionary token) is never changed, but it is
context for its neighbours.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from glmtts.frontend.zh_rules import KINSHIP

MAX_PROSODIC_WORD = 3
_DIGITS = frozenset("零〇一二三四五六七八九")
_NUMBER_CHARS = _DIGITS | frozenset("十")
_ORDINAL_AFTER_YI = frozenset("月号楼")  # 一月, 一号, 一楼: January, number one, the first floor
_WEEKDAY_BEFORE_YI = frozenset("期周拜")  # 星期一, 周一, 礼拜一
# One-syllable words that lean on the word before them.
_ENCLITICS = frozenset("了 着 过 的 地 得 吗 呢 吧 啊 呀 哪 嘛 们 里 上 下 中 外 内 前 后 馆 家 者 性 化 员 边 头 子 儿".split())
_OBJECT_PRONOUNS = frozenset("我 你 他 她 它 您".split())
_SUBJECTS = frozenset("我 你 他 她 它 您 谁 这 那 也 都 很 就 还".split())  # not verbs: an object pronoun does not lean on them
# Words in which 儿 is a full syllable, not erhua.
_FULL_ER = frozenset(
    "女儿 婴儿 幼儿 孤儿 健儿 男儿 胎儿 患儿 少儿 宠儿 新生儿 混血儿 孙儿 妻儿 乞儿 育儿 产儿 弃儿 "
    "病儿 犬儿 儿女 儿童 儿子 儿科 儿歌 儿戏 儿媳 儿孙 儿时".split()
)


@dataclass
class Syllable:
    """One spoken position: its character (None for a locked token), reading, word and lock."""

    char: str | None
    reading: str  # tone-numbered pinyin ("hai2"); for a locked token, its final's tone is what counts
    word: int  # index of the jieba word (or token) it belongs to
    locked: bool = False
    erhua: bool = False  # this syllable takes the r-colouring of the 儿 after it
    silent: bool = False  # an erhua 儿: no syllable of its own
    symbols: tuple[str, ...] = ()  # a locked token's symbols

    @property
    def tone(self) -> int:
        return int(self.reading[-1]) if self.reading and self.reading[-1].isdigit() else 0


def apply_sandhi(syllables: list[Syllable], words: list[str]) -> None:
    """Turn the lexical readings of one stretch of speech (no pause inside) into spoken ones, in place.

    `words[i]` is the text of word i (a token's word is ""), for prosodic grouping and erhua.
    """
    _erhua(syllables, words)
    spoken = [s for s in syllables if not s.silent]
    lexical = [s.tone for s in spoken]
    for index, syllable in enumerate(spoken):
        if syllable.locked:
            continue
        if syllable.char == "一":
            _yi(spoken, index, words, lexical)
        elif syllable.char == "不":
            _bu(spoken, index, words, lexical)
    _third_tones(spoken, words)


def _set_tone(syllable: Syllable, tone: int) -> None:
    if syllable.reading and syllable.reading[-1].isdigit():
        syllable.reading = syllable.reading[:-1] + str(tone)


def _char(spoken: list[Syllable], index: int) -> str:
    return (spoken[index].char or "") if 0 <= index < len(spoken) else ""


def _yi(spoken: list[Syllable], index: int, words: list[str], lexical: list[int]) -> None:
    before, after = _char(spoken, index - 1), _char(spoken, index + 1)
    word = words[spoken[index].word]
    if index + 1 >= len(spoken):
        tone = 1  # alone or at the end
    elif before == "第" or before in _NUMBER_CHARS or after in _DIGITS or before in _WEEKDAY_BEFORE_YI:
        tone = 1  # an ordinal, or a digit of a number (十一, 一九九九, 一百零一)
    elif after in _ORDINAL_AFTER_YI or (after == "日" and before == "月") or after + _char(spoken, index + 2) == "年级":
        tone = 1  # 一月, 一号, 一楼, 三月一日, 一年级
    elif before and before == after and _char(spoken, index - 2) != "一":
        tone = 5  # 看一看, 调一调; not a count said twice (一步一步)
    elif len(word) > 1 and word.endswith("一") and spoken[index].word != spoken[index + 1].word:
        tone = 1  # 统一, 唯一, 万一 at the end of their word
    else:
        following = spoken[index + 1]
        next_tone = lexical[index + 1] if lexical[index + 1] != 5 else citation_tone(following.char, following.reading)
        tone = 2 if next_tone in (4, 5, 0) else 4
    _set_tone(spoken[index], tone)


def _bu(spoken: list[Syllable], index: int, words: list[str], lexical: list[int]) -> None:
    before, after = _char(spoken, index - 1), _char(spoken, index + 1)
    word = words[spoken[index].word]
    if before and before == after and _char(spoken, index - 2) != "不":
        tone = 5  # 去不去, 好不好; not a denial said twice (不对不对)
    elif len(word) == 3 and word[1] == "不":
        tone = 5  # 对不起, 来不及, 看不懂
    elif index + 1 < len(spoken) and 4 in (lexical[index + 1], _neutral_citation(spoken[index + 1])):
        tone = 2  # before a fourth tone, or a neutral syllable that is one (不是, 不过)
    else:
        tone = 4
    _set_tone(spoken[index], tone)


def _neutral_citation(syllable: Syllable) -> int:
    return citation_tone(syllable.char, syllable.reading) if syllable.tone == 5 else 0


def _prosodic_words(spoken: list[Syllable], words: list[str]) -> list[list[int]]:
    """Indices of `spoken` grouped into prosodic words of at most MAX_PROSODIC_WORD syllables."""
    runs: list[list[int]] = []  # syllables of each lexical word, in order
    for index, syllable in enumerate(spoken):
        if runs and spoken[runs[-1][-1]].word == syllable.word and not syllable.locked:
            runs[-1].append(index)
        else:
            runs.append([index])
    groups: list[list[int]] = []
    open_right = False  # the last group ends in a one-syllable word that leans on what follows
    for position, run in enumerate(runs):
        if len(run) > MAX_PROSODIC_WORD:  # long words and idioms: feet of two
            groups.extend(run[i : i + 2] for i in range(0, len(run), 2))
            open_right = False
            continue
        text = "" if spoken[run[0]].locked else words[spoken[run[0]].word]
        previous = "" if position == 0 or spoken[runs[position - 1][0]].locked else words[spoken[runs[position - 1][0]].word]
        leans_left = len(run) == 1 and (
            text in _ENCLITICS or (text in _OBJECT_PRONOUNS and len(previous) == 1 and previous not in _SUBJECTS)
        )
        if groups and len(groups[-1]) + len(run) <= MAX_PROSODIC_WORD and (open_right or leans_left):
            groups[-1].extend(run)
        else:
            groups.append(list(run))
        open_right = len(run) == 1 and not leans_left
    return groups


def _third_tones(spoken: list[Syllable], words: list[str]) -> None:
    """Inside each prosodic word, a third tone before a third tone (lexical) becomes a second."""
    for group in _prosodic_words(spoken, words):
        tones = [_sandhi_tone(spoken, index) for index in group]
        for k in range(len(group) - 1):
            syllable = spoken[group[k]]
            if tones[k] == 3 and tones[k + 1] == 3 and not syllable.locked and syllable.tone == 3:
                _set_tone(syllable, 2)


def _sandhi_tone(spoken: list[Syllable], index: int) -> int:
    """The tone that triggers third-tone sandhi: a neutral syllable counts with its citation tone,
    except the suffix 子 and the second syllable of a reduplicated kinship noun."""
    syllable = spoken[index]
    if syllable.tone != 5 or syllable.char is None:
        return syllable.tone
    before = _char(spoken, index - 1)
    if syllable.char == "子" or (before == syllable.char and syllable.char in KINSHIP):
        return 5
    return citation_tone(syllable.char, syllable.reading)


def _erhua(syllables: list[Syllable], words: list[str]) -> None:
    """Mark 儿 that ends a word after another syllable as erhua of that syllable."""
    for index in range(1, len(syllables)):
        syllable = syllables[index]
        if syllable.char != "儿" or syllable.locked:
            continue
        host = syllables[index - 1]
        if host.silent or host.char == "儿":
            continue
        word = words[syllable.word]
        if syllable.word == host.word:
            if not word.endswith("儿") or word in _FULL_ER or any(word.endswith(full) for full in _FULL_ER):
                continue
        elif word != "儿" or (host.char is not None and words[host.word][-1:] + "儿" in _FULL_ER):
            continue
        host.erhua, syllable.silent = True, True


@functools.lru_cache(maxsize=8192)
def citation_tone(char: str | None, reading: str) -> int:
    """The dictionary tone of a neutral-tone syllable ("姐", "jie5" -> 3); 0 when unknown."""
    if not char or not reading:
        return 0
    from pypinyin.constants import PINYIN_DICT

    from glmtts.frontend.g2p_zh import marked_to_tone3

    base = reading.rstrip("012345")
    for marked in PINYIN_DICT.get(ord(char), "").split(","):
        tone3 = marked_to_tone3(marked)
        if tone3.rstrip("012345") == base and tone3[-1:] in "1234":
            return int(tone3[-1])
    return 0
