"""Word times and captions: the text's words, timed from an engine's spoken units or estimated from
the audio, and SRT subtitles made of them.

Engines that know their durations (the embedded voices: piper's frames per phoneme, FastSpeech2's
frames per symbol) time their own spoken units (phoneme words, syllables) and hand them to
`words_over_spans`, which gives every word of the text a time. An engine without durations
(GLM-TTS) gets `estimate_words`: the words spread over the voiced stretches of the audio by their
length, boundaries snapped to the pauses found in it. Pure numpy, below every other layer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np

from glmtts.files import atomic_output
from glmtts.types import WordTime

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_PUNCTUATION = "\u3000-\u303f\uff00-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"  # 。、「」，！？：；…
# A Han character alone, a CJK punctuation mark alone (the frontend writes "four，said"), or a run of anything else.
_TOKEN = re.compile(rf"[{_HAN}{_CJK_PUNCTUATION}]|[^\s{_HAN}{_CJK_PUNCTUATION}]+")
_HAN_CHAR = re.compile(rf"[{_HAN}]")
_CJK_CHAR = re.compile(rf"[{_HAN}{_CJK_PUNCTUATION}]")
_SENTENCE_END = tuple(".!?。！？")
_HAN_WEIGHT = 3  # a Mandarin syllable lasts about as long as three letters of English
_CLAUSE_END = tuple(",;:.!?，。！？；：、…")
_MAX_GROUP = 3  # words that may share one spoken unit, units one word may take
_GROUP_PENALTY = 0.7  # a pairing that is not one to one costs as much as lengths off by a factor of two

# Pauses in the audio (estimate_words).
_FRAME_S = 0.01
_SILENCE_BELOW_PEAK_DB = 40.0  # frames this far under the loudest frame are silent
_SILENCE_FLOOR_DB = -70.0  # and frames this quiet (dB of full scale) always
_MIN_PAUSE_S = 0.08  # shorter silences are stop closures inside words, not pauses
_SNAP_WORDS = 1.0  # a boundary moves to a pause at most this many (neighbour-)word lengths away
_PUNCTUATION_PULL = 1.0  # after punctuation a boundary reaches a pause this much further

# SRT cues.
MAX_CUE_CHARS = 42
MAX_CUE_S = 5.0
_CUE_BREAK_GAP_S = 0.5


def text_words(text: str) -> list[str]:
    """The words a listener reads: whitespace-separated, each Han character alone, punctuation kept
    on the word before it (or after it, at the start). Tokens without a letter or digit are no words."""
    words: list[str] = []
    leading = ""
    for token in _TOKEN.findall(text):
        if not any(ch.isalnum() for ch in token):
            if words:
                words[-1] += token
            else:
                leading += token
            continue
        words.append(leading + token)
        leading = ""
    return words


def spoken_weight(word: str) -> float:
    """About how long a word takes to say, in letters (a Han character counts as three)."""
    han = len(_HAN_CHAR.findall(word))
    return float(han * _HAN_WEIGHT + sum(ch.isalnum() for ch in word) - han) or 1.0


def spread_words(word_list: Sequence[str], start: float, end: float) -> list[WordTime]:
    """Words sharing [start, end], each a share by its weight."""
    weights = np.array([spoken_weight(w) for w in word_list])
    edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum()
    return [WordTime(w, float(a), float(b)) for w, a, b in zip(word_list, edges[:-1], edges[1:], strict=True)]


def words_over_spans(words: Sequence[str], spans: Sequence[tuple[float, float]], weights: Sequence[float]) -> list[WordTime]:
    """Time `words` from the engine's spoken units: `spans` (start, end) in order, `weights` their
    lengths in the engine's symbols (phonemes, syllables).

    Words and units are paired in order, one to one where they can be: espeak speaks "of the" as
    one word and "$5" as two, so a group of up to `_MAX_GROUP` words may share one unit (its time
    split by their lengths) and one word may take up to `_MAX_GROUP` units. The pairing is the
    cheapest by lengths (dynamic programming over both sequences).
    """
    if not words:
        return []
    if not spans:
        return [WordTime(w, 0.0, 0.0) for w in words]
    if len(words) == len(spans):
        return [WordTime(w, float(a), float(b)) for w, (a, b) in zip(words, spans, strict=True)]
    timed: list[WordTime] = []
    for (w0, w1), (u0, u1) in _pair_groups([spoken_weight(w) for w in words], [float(x) for x in weights]):
        timed += spread_words(words[w0:w1], spans[u0][0], spans[u1 - 1][1])
    return timed


def _pair_groups(word_weights: list[float], unit_weights: list[float]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The cheapest monotone pairing of word groups with unit groups (one side of each pair a single
    item): cost |log| of the ratio of their lengths on one scale, plus a penalty for every group."""
    n, m = len(word_weights), len(unit_weights)
    scale = sum(unit_weights) / max(sum(word_weights), 1e-9)
    word_edges = np.concatenate([[0.0], np.cumsum(word_weights)]) * scale
    unit_edges = np.concatenate([[0.0], np.cumsum(unit_weights)])
    steps = [(1, 1)] + [(g, 1) for g in range(2, _MAX_GROUP + 1)] + [(1, g) for g in range(2, _MAX_GROUP + 1)]
    cost = np.full((n + 1, m + 1), np.inf)
    came: dict[tuple[int, int], tuple[int, int]] = {}
    cost[0, 0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            if not np.isfinite(cost[i, j]):
                continue
            for di, dj in steps:
                if i + di > n or j + dj > m:
                    continue
                ratio = (word_edges[i + di] - word_edges[i] + 1) / (unit_edges[j + dj] - unit_edges[j] + 1)
                step = abs(np.log(ratio)) + (_GROUP_PENALTY if (di, dj) != (1, 1) else 0.0)
                if cost[i, j] + step < cost[i + di, j + dj]:
                    cost[i + di, j + dj] = cost[i, j] + step
                    came[(i + di, j + dj)] = (i, j)
    if not np.isfinite(cost[n, m]):  # counts too far apart for any pairing: everything in one group
        return [((0, n), (0, m))]
    pairs = []
    at = (n, m)
    while at != (0, 0):
        before = came[at]
        pairs.append(((before[0], at[0]), (before[1], at[1])))
        at = before
    return pairs[::-1]


def voiced_stretches(audio: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
    """(start, end) in seconds of the stretches between pauses, leading and trailing silence left out."""
    hop = max(1, int(_FRAME_S * sample_rate))
    frames = len(audio) // hop
    if frames == 0:
        return []
    power = np.mean(np.square(audio[: frames * hop].reshape(frames, hop), dtype=np.float64), axis=1)
    level = 10 * np.log10(power + 1e-12)
    voiced = np.flatnonzero(level > max(level.max() - _SILENCE_BELOW_PEAK_DB, _SILENCE_FLOOR_DB))
    if len(voiced) == 0:
        return []
    gaps = np.flatnonzero(np.diff(voiced) * _FRAME_S > _MIN_PAUSE_S)  # a pause after voiced[g]
    starts = np.concatenate([[voiced[0]], voiced[gaps + 1]])
    ends = np.concatenate([voiced[gaps], [voiced[-1]]]) + 1
    return [(float(a * hop / sample_rate), float(b * hop / sample_rate)) for a, b in zip(starts, ends, strict=True)]


def _anchors(boundaries: np.ndarray, pauses: np.ndarray, words: Sequence[str], reach: np.ndarray) -> dict[int, int]:
    """Word boundary -> the pause it moves to: the cheapest monotone matching (dynamic programming,
    one numpy pass per pause). A match costs the distance, less a pull after punctuation; a boundary
    may only move within its reach (more after punctuation); a pause left without one costs the mean reach."""
    n, m = len(words), len(pauses)  # boundaries 1 .. n - 1 may move
    if n < 2 or m == 0:
        return {}
    ends_clause = np.array([k > 0 and words[k - 1].endswith(_CLAUSE_END) for k in range(n)])
    pull = np.where(ends_clause, _PUNCTUATION_PULL * reach[:n], 0.0)
    skip = float(np.mean(reach[1:-1]))
    distance = np.abs(boundaries[None, 1:n] - pauses[:, None])  # (pause, boundary 1 .. n - 1)
    match = np.where(distance <= (reach[1:n] + pull[1:n])[None, :], distance - pull[None, 1:n], np.inf)
    # cost[p, k]: the first p pauses and the boundaries before k dealt with (k = 1 .. n; column 0 unused).
    cost = np.full((m + 1, n + 1), np.inf)
    cost[0, 1:] = 0.0
    matched = np.zeros((m + 1, n + 1), dtype=bool)  # the step into (p, came_from[p, k]) matched pause p - 1
    came_from = np.zeros((m + 1, n + 1), dtype=np.int64)  # the column where row p was entered
    came_from[0, 1:] = 1
    columns = np.arange(n + 1)
    for p in range(1, m + 1):
        by_skip = cost[p - 1] + skip
        by_match = np.full(n + 1, np.inf)
        by_match[2:] = cost[p - 1, 1:n] + match[p - 1]  # boundary k - 1 takes pause p - 1
        entered = np.minimum(by_skip, by_match)
        entered[0] = np.inf
        best = np.minimum.accumulate(entered)  # then boundaries may stay on the same row
        came_from[p] = np.maximum.accumulate(np.where(entered == best, columns, 0))
        matched[p] = by_match < by_skip
        cost[p] = best
    taken: dict[int, int] = {}
    k = n
    for p in range(m, 0, -1):
        k = int(came_from[p, k])
        if matched[p, k]:
            taken[k - 1] = p - 1
            k -= 1
    return taken


def estimate_words(text: str, audio: np.ndarray, sample_rate: int) -> list[WordTime]:
    """Every word of `text` timed in `audio` without the engine's help.

    The words share the voiced time (silence at the ends and pauses of 0.08 s or more left out) by
    their length in letters; then each pause takes the word boundary nearest to it, if it is within
    `_SNAP_WORDS` word lengths (more after a comma or full stop), and the words between two such
    boundaries share the voiced time between them again.
    """
    words = text_words(text)
    stretches = voiced_stretches(np.asarray(audio, dtype=np.float32).reshape(-1), sample_rate)
    if not words or not stretches:
        return [WordTime(w, 0.0, 0.0) for w in words]
    voiced_s = sum(b - a for a, b in stretches)
    pauses = np.cumsum([b - a for a, b in stretches[:-1]])  # the voiced time at each pause
    weights = np.array([spoken_weight(w) for w in words])
    boundaries = voiced_s * np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum()
    durations = voiced_s * weights / weights.sum()
    reach = np.zeros(len(words) + 1)
    reach[1:-1] = _SNAP_WORDS * np.maximum(durations[:-1], durations[1:])
    anchors = _anchors(boundaries, pauses, words, reach)
    # Boundary k taking pause p: the words before k end with stretch p, the rest start at stretch p + 1.
    cuts = [(0, 0), *sorted((k, p + 1) for k, p in anchors.items()), (len(words), len(stretches))]
    timed: list[WordTime] = []
    for (k0, s0), (k1, s1) in pairwise(cuts):
        timed += _in_stretches(words[k0:k1], stretches[s0:s1])
    return timed


def _in_stretches(words: Sequence[str], stretches: Sequence[tuple[float, float]]) -> list[WordTime]:
    """Words spread over the voiced time of `stretches` by weight; times jump over the pauses."""
    lengths = np.array([b - a for a, b in stretches])
    voiced_before = np.concatenate([[0.0], np.cumsum(lengths)])
    weights = np.array([spoken_weight(w) for w in words])
    positions = voiced_before[-1] * np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum()

    def to_time(position: float, at_end: bool) -> float:
        index = int(np.searchsorted(voiced_before, position, side="left" if at_end else "right")) - 1
        index = min(max(index, 0), len(stretches) - 1)
        return stretches[index][0] + position - voiced_before[index]

    return [
        WordTime(w, float(to_time(a, at_end=False)), float(to_time(b, at_end=True)))
        for w, a, b in zip(words, positions[:-1], positions[1:], strict=True)
    ]


def _srt_time(seconds: float) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def join_words(words: Sequence[str]) -> str:
    """Words as a line of text: spaces between them, none between Han characters."""
    text = ""
    for word in words:
        cjk = text and _CJK_CHAR.match(text[-1]) and _CJK_CHAR.match(word[0])
        text += word if not text or cjk else " " + word
    return text


def cues_from_words(words: Sequence[WordTime]) -> list[tuple[float, float, str]]:
    """Words grouped into caption cues (start, end, text): a cue ends after a sentence mark, before
    a pause of 0.5 s, or before it would pass MAX_CUE_CHARS characters or MAX_CUE_S seconds."""
    cues: list[tuple[float, float, str]] = []
    current: list[WordTime] = []
    for word in words:
        if current and (
            len(join_words([*(w.word for w in current), word.word])) > MAX_CUE_CHARS
            or word.end - current[0].start > MAX_CUE_S
            or word.start - current[-1].end >= _CUE_BREAK_GAP_S
            or current[-1].word.endswith(_SENTENCE_END)
        ):
            cues.append((current[0].start, current[-1].end, join_words([w.word for w in current])))
            current = []
        current.append(word)
    if current:
        cues.append((current[0].start, current[-1].end, join_words([w.word for w in current])))
    return cues


def srt_from_words(words: Sequence[WordTime]) -> str:
    """SubRip subtitles of timed words: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, blank-line separated."""
    blocks = [
        f"{n}\n{_srt_time(start)} --> {_srt_time(max(end, start))}\n{text}\n"
        for n, (start, end, text) in enumerate(cues_from_words(words), start=1)
    ]
    return "\n".join(blocks)


def write_srt(path: Path, words: Sequence[WordTime]) -> Path:
    """The SRT of `words` at `path` (UTF-8), written whole and synced: a batch item's captions."""
    with atomic_output(path, "w") as handle:
        handle.write(srt_from_words(words))
    return path
