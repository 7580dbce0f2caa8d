"""A context model for the polyphones that our phrase list and context rules leave unsettled.

For a polyphonic character it scores each reading the character has with a linear model over
features of the context: the characters up to two places either side (by position and as pairs),
the jieba word holding the character and its neighbours, the reading dictionaries gave it and
where from (pypinyin's phrase dictionary, or its first-listed reading of the character), g2pM's
most likely reading, and g2pM's probability of each reading, in bands. A feature counts for one
reading of one character ("行", "L1:银", "hang2"); some count for a reading of any character ("the
reading pypinyin's phrase dictionary gives", "g2pM gives it 90-99 %"), and g2pM's bands also count
per character (how far to trust g2pM on 行). The highest score wins (a conditional logit model),
except that a reading from pypinyin's phrase dictionary is replaced only by one scoring `margin`
more, and its neutral tone stays where the model picks the same syllable: CPP, the training
corpus, writes citation tones (关系 guānxì), our readings the spoken ones.

Features are hashed (CRC-32 of the feature's text) and the weights kept as two sorted arrays,
hashes and float16 weights, so a lookup is one `searchsorted` per character. The weights are
trained by `tools/train_polyphone.py` on the CPP corpus (see the README's Mandarin section).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

MODEL_RESOURCE = "polyphone_model.npz"
ANY_CHAR = "*"  # the character slot of features shared by all characters
# Lower bounds of the bands of g2pM's probability of a reading (the bands are named by their index).
PROBABILITY_BANDS = (0.99, 0.9, 0.7, 0.5, 0.3, 0.1, 1e-2, 1e-3, 1e-4, 1e-5, 0.0)


# Where the reading a context holds came from: pypinyin's phrase dictionary, its character dictionary.
PHRASE, ALONE = "phrase", "alone"


@dataclass(frozen=True)
class Context:
    """One polyphonic character in a run of Han characters, and what the dictionaries read there."""

    text: str
    index: int
    words: tuple[str, ...]  # jieba's words of `text`
    word_index: int  # the word holding the character
    reading: str  # the reading dictionaries and rules gave it
    source: str  # where that reading came from: PHRASE or ALONE
    default_reading: str  # pypinyin's first-listed reading of the character
    neural: dict[str, float] = field(default_factory=dict)  # g2pM's probability of each candidate reading ({} where not asked)


def context_features(c: Context) -> list[str]:
    """The character-specific features of a context (each later joined with the character and a reading)."""
    text, i = c.text, c.index
    padded = "^^" + text + "$$"
    p = i + 2  # the character's position in `padded`
    word = c.words[c.word_index]
    start = sum(len(w) for w in c.words[: c.word_index])
    features = [
        "",
        "L1:" + padded[p - 1],
        "R1:" + padded[p + 1],
        "L2:" + padded[p - 2 : p],
        "R2:" + padded[p + 1 : p + 3],
        "L1R1:" + padded[p - 1] + padded[p + 1],
        "W:" + word,
        f"WP:{len(word)}:{i - start}",
        "WL:" + (c.words[c.word_index - 1] if c.word_index else "^"),
        "WR:" + (c.words[c.word_index + 1] if c.word_index + 1 < len(c.words) else "$"),
        f"O:{c.source}:{c.reading}",
    ]
    if c.neural:
        features.append("N:" + max(c.neural, key=c.neural.get))
    return features


def _band(probability: float) -> str:
    return str(next(index for index, bound in enumerate(PROBABILITY_BANDS) if probability >= bound))


def shared_features(c: Context, reading: str) -> list[str]:
    """Features of a reading for any character: how it relates to what dictionaries, rules and g2pM read."""
    features = []
    if reading == c.reading:
        features.append("=ours:" + c.source)
    elif c.source == PHRASE and reading[:-1] == c.reading[:-1]:
        features.append("~phrase")  # the same syllable in another tone (a neutral tone in the phrase)
    if reading == c.default_reading:
        features.append("=default:" + c.source)
    if c.neural:
        band = _band(c.neural.get(reading, 0.0))
        features += ["P:" + band, f"P:{band}:{c.source}:{int(reading == c.reading)}"]
    return features


def feature_keys(char: str, c: Context, readings: tuple[str, ...]) -> list[list[int]]:
    """Hashed features of each reading of `char` in context `c`."""
    own = [f"{char}\x1f{feature}\x1f" for feature in context_features(c)]
    keys = []
    for reading in readings:
        texts = [prefix + reading for prefix in own]
        if c.neural:
            texts.append(f"{char}\x1fP:{_band(c.neural.get(reading, 0.0))}")
        texts.extend(f"{ANY_CHAR}\x1f{feature}" for feature in shared_features(c, reading))
        keys.append([zlib.crc32(text.encode()) for text in texts])
    return keys


class PolyphoneModel:
    """The trained weights: candidate readings per character and hashed feature weights."""

    def __init__(
        self, readings: dict[str, tuple[str, ...]], keys: np.ndarray, weights: np.ndarray, uses_neural: bool, margin: float
    ) -> None:
        self.readings = readings
        self.uses_neural = uses_neural  # whether contexts should carry g2pM's reading
        self.margin = margin  # how far another reading must outscore pypinyin's phrase reading to replace it
        self._keys = keys
        self._weights = weights.astype(np.float32)

    @classmethod
    def load(cls) -> PolyphoneModel:
        with resources.files("glmtts.frontend").joinpath(MODEL_RESOURCE).open("rb") as handle, np.load(handle) as data:
            table = str(data["readings"])
            keys, weights, uses_neural, margin = data["keys"], data["weights"], bool(data["uses_neural"]), float(data["margin"])
        readings = {}
        for entry in table.split(";"):
            char, _, listed = entry.partition(":")
            readings[char] = tuple(listed.split(","))
        return cls(readings, keys, weights, uses_neural, margin)

    def scores(self, char: str, c: Context, readings: tuple[str, ...]) -> np.ndarray:
        """One score per reading of `char` in `readings`."""
        per_reading = feature_keys(char, c, readings)
        flat = np.fromiter((k for keys in per_reading for k in keys), np.uint32)
        found = np.searchsorted(self._keys, flat)
        found[found == len(self._keys)] = 0
        values = np.where(self._keys[found] == flat, self._weights[found], 0.0)
        bounds = np.cumsum([0] + [len(keys) for keys in per_reading])
        return np.add.reduceat(values, bounds[:-1])

    def predict(self, char: str, c: Context) -> str:
        """The best-scoring reading of `char` in context `c`."""
        readings = candidates(self.readings[char], c.reading)
        scores = self.scores(char, c, readings)
        best = readings[int(np.argmax(scores))]
        if c.source == PHRASE and scores.max() - scores[readings.index(c.reading)] < self.margin:
            return c.reading
        if c.source == PHRASE and c.reading.endswith("5") and best[:-1] == c.reading[:-1]:
            return c.reading
        return best


def candidates(known: tuple[str, ...], reading: str) -> tuple[str, ...]:
    """The readings to choose from: the character's known ones and the `reading` it holds."""
    return known if not reading or reading in known else (*known, reading)


def save_model(path, model: PolyphoneModel) -> None:
    """Write a model: readings per character, the weights sorted by hash (float16) and its settings."""
    table = ";".join(f"{char}:{','.join(listed)}" for char, listed in sorted(model.readings.items()))
    weights = model._weights.astype(np.float16)
    np.savez_compressed(
        path,
        readings=np.array(table),
        keys=model._keys,
        weights=weights,
        uses_neural=np.array(model.uses_neural),
        margin=np.array(model.margin),
    )
