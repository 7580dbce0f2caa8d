"""The embedded engine: bundled English and Mandarin voices, matched to the prompt speaker.

Each language run of a segment is spoken by its built-in voice, then moved toward the prompt
speaker (pitch, range, formant scale, rate) with parameters fitted once per prompt; runs are joined
with short crossfades and resampled to one output rate.

Matching needs each built-in voice's own profile, measured on a reference sentence it speaks. That
is a pure function of the models, the code and the libraries, so it is computed once and kept in
`cache_dir` under a key made of all three (`_reference_key`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from glmtts import memory
from glmtts.audio import CROSSFADE_SECONDS, crossfade_join, resample
from glmtts.captions import text_words, words_over_spans
from glmtts.engine import Engine
from glmtts.engines.embedded.english import PiperEnglishVoice, english_runs_on_cuda
from glmtts.engines.embedded.mandarin import BakerMandarinVoice
from glmtts.engines.embedded.speaker import SpeakerEncoder, check_prompt
from glmtts.engines.embedded.tflite_rewrite import file_digest
from glmtts.engines.embedded.voice_match import MatchParams, VoiceProfile, apply_match, fit_match
from glmtts.files import atomic_output, made_once
from glmtts.types import CancelToken, PromptVoice, Segment, SegmentAudio, SynthesisOptions, TextRun, WordTime

_LOGGER = logging.getLogger(__name__)

OUTPUT_RATE = 24000
# Sentences each built-in voice speaks once, to measure its own voice profile.
ENGLISH_REFERENCE = "The birch canoe slid on the smooth planks, and the sun rose slowly over the quiet lake."
MANDARIN_REFERENCE = (
    "J",
    "IN1",
    "T",
    "IAN1",
    "T",
    "IAN1",
    "Q",
    "I4",
    "H",
    "EN3",
    "H",
    "AO3",
    ",",
    "UO3",
    "M",
    "EN5",
    "I4",
    "Q",
    "I3",
    "Q",
    "V4",
    "G",
    "ONG1",
    "VAN2",
    "S",
    "AN4",
    "B",
    "U4",
    "B",
    "A5",
    ".",
)
REFERENCE_SEED = 0
# What the reference profiles depend on besides the model files: this package's code, the resampler,
# and the libraries that synthesize and analyse.
_REFERENCE_CODE = ("glmtts.engines.embedded", "glmtts.audio", "glmtts.dsp")
_REFERENCE_PACKAGES = (
    "numpy", "soxr", "onnxruntime", "ai-edge-litert", "piper-tts",
    "praat-parselmouth", "webrtcvad-wheels",
)  # fmt: skip
_REFERENCE_KEY_CHARS = 16


@dataclass(frozen=True)
class EmbeddedVoice:
    """What the engine keeps per prompt: the prompt's profile and fitted parameters per language."""

    profile: VoiceProfile
    params: dict[str, MatchParams]
    fit_s: float


def _code_files() -> list[Path]:
    found = []
    for name in _REFERENCE_CODE:
        spec = importlib.util.find_spec(name)
        if spec.submodule_search_locations:
            found += sorted(p for folder in spec.submodule_search_locations for p in Path(folder).glob("*.py"))
        else:
            found.append(Path(spec.origin))
    return found


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


class EmbeddedEngine(Engine):
    """Piper English + Baker Mandarin on the CPU (or ONNX Runtime's CUDA provider), voice-matched."""

    name = "embedded"
    sample_rates = (OUTPUT_RATE,)
    samples = False
    analysis_version = "3"  # numpy speaker encoder and DSP: analyses differ in the last digits
    analysis_reads_text = False  # the voice is fitted to the prompt's sound alone

    def __init__(self, cache_dir: Path):
        self.cache_dir = cache_dir
        self.english = PiperEnglishVoice(cache_dir)
        self.mandarin = BakerMandarinVoice(cache_dir)
        self.encoder = SpeakerEncoder()
        self._references: dict[str, tuple[np.ndarray, int, VoiceProfile]] = {}

    def auto_device(self) -> str:
        return "cuda" if english_runs_on_cuda() else "cpu"  # only the English voice's ONNX graphs can use a GPU

    def load(self, device: str) -> None:
        self.english.load(device)
        self.mandarin.load(device)
        self.encoder.load(device)
        path = self.cache_dir / f"embedded-references-{self._reference_key()}.npz"
        self._references = made_once(path, lambda: _read_references(path), lambda: self._measure_references(path))

    def _measure_references(self, path: Path) -> dict[str, tuple[np.ndarray, int, VoiceProfile]]:
        """The built-in voices' own profiles, measured on reference sentences, and kept at `path`."""
        samples = {
            "en": (self.english.text_to_audio(ENGLISH_REFERENCE, seed=REFERENCE_SEED), self.english.sample_rate),
            "zh": (self.mandarin.phonemes_to_audio(MANDARIN_REFERENCE), self.mandarin.sample_rate),
        }
        references = {
            lang: (audio, rate, VoiceProfile.from_audio(audio, rate, self.encoder)) for lang, (audio, rate) in samples.items()
        }
        try:
            _write_references(references, path)
        except OSError as error:
            _LOGGER.warning("Reference profiles not cached (%s)", error)
        return references

    def _reference_key(self) -> str:
        """A hash of what the reference profiles depend on: model files, this code, library versions."""
        digest = hashlib.sha256()
        for path in (*self.english.model_files, *self.mandarin.model_files):
            digest.update(file_digest(path).encode())
        for path in _code_files():
            digest.update(path.read_bytes())
        for package in _REFERENCE_PACKAGES:
            digest.update(f"{package}={_package_version(package)}".encode())
        return digest.hexdigest()[:_REFERENCE_KEY_CHARS]

    def prepare_voice(self, audio: np.ndarray, sample_rate: int, prompt_text: str, key: str) -> PromptVoice:
        check_prompt(audio, sample_rate)
        start = time.perf_counter()
        target = VoiceProfile.from_audio(audio, sample_rate, self.encoder)
        params = {
            lang: fit_match(profile, target, reference, rate, self.encoder)
            for lang, (reference, rate, profile) in self._references.items()
        }
        fitted = EmbeddedVoice(target, params, time.perf_counter() - start)
        similarity = ", ".join(f"{lang} {p.similarity_before:.2f} -> {p.similarity_after:.2f}" for lang, p in params.items())
        _LOGGER.info("Voice %s fitted in %.2f s; similarity %s", key[:8], fitted.fit_s, similarity)
        return PromptVoice(key, prompt_text, fitted, len(audio) / sample_rate)

    def synthesize_segments(
        self, segments: list[Segment], voice: PromptVoice, options: SynthesisOptions, cancel: CancelToken | None = None
    ) -> Iterator[SegmentAudio]:
        """Yield each segment's audio. Run r of segment s draws its noise from (seed, s, r, sentence),
        so equal requests give byte-identical audio; `cancel` is checked between runs, sentences and
        chunks. Freed memory goes back to the system when the request ends."""
        fitted: EmbeddedVoice = voice.features
        try:
            for s, segment in enumerate(segments):
                timings = {"synthesis": 0.0, "voice_match": 0.0}
                pieces, run_words = [], []
                for r, run in enumerate(segment.runs):
                    if cancel is not None:
                        cancel.check()
                    start = time.perf_counter()
                    audio, rate, units = self._speak(run, options.speed, (options.seed, s, r), cancel)
                    timings["synthesis"] += time.perf_counter() - start
                    start = time.perf_counter()
                    spoken_s = len(audio) / rate
                    audio = resample(apply_match(audio, rate, fitted.params[run.lang], options.seed), rate, OUTPUT_RATE)
                    timings["voice_match"] += time.perf_counter() - start
                    stretch = len(audio) / OUTPUT_RATE / spoken_s if spoken_s else 1.0  # voice matching changes the rate
                    spans = [(a * stretch, b * stretch) for a, b, _ in units]
                    run_words.append(words_over_spans(text_words(run.text), spans, [n for _, _, n in units]))
                    pieces.append(audio)
                words = _joined_words(pieces, run_words)
                yield SegmentAudio(crossfade_join(pieces, OUTPUT_RATE), OUTPUT_RATE, timings, words=words)
        finally:
            self.english.release_memory()
            memory.trim()

    def _speak(
        self, run: TextRun, speed: float, seed: tuple[int, ...], cancel: CancelToken | None
    ) -> tuple[np.ndarray, int, list[tuple[float, float, int]]]:
        """(audio, its rate, the spoken units: (start s, end s, symbols) of each syllable or espeak word)."""
        if run.lang == "zh":
            audio, syllables = self.mandarin.phonemes_to_timed_audio(run.phonemes or (), speed, cancel)
            return audio, self.mandarin.sample_rate, [(a, b, 1) for a, b in syllables]
        if run.phonemes:
            audio, units = self.english.phonemes_to_timed_audio(list(run.phonemes), speed, seed, cancel)
        else:
            audio, units = self.english.text_to_timed_audio(run.text, speed, seed, cancel)
        return audio, self.english.sample_rate, units

    def memory_report(self) -> dict[str, float]:
        return {"rss_mib": psutil.Process().memory_info().rss / 2**20}

    def release_caches(self) -> None:
        self.english.release_memory(force=True)
        memory.trim()

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "voices": {"en": "piper en_US-joe-medium (GPL-3.0)", "zh": "Baker FastSpeech2 + MB-MelGAN (non-commercial)"},
        }


def _joined_words(pieces: list[np.ndarray], run_words: list[list[WordTime]]) -> tuple[WordTime, ...]:
    """The runs' words in the time of `crossfade_join(pieces)`: each run starts where its crossfade does."""
    fade = int(CROSSFADE_SECONDS * OUTPUT_RATE)
    words: list[WordTime] = []
    length = 0  # samples joined so far
    for piece, timed in zip(pieces, run_words, strict=True):
        start = length - min(fade, length, len(piece)) if length else 0
        words += [WordTime(w, a + start / OUTPUT_RATE, b + start / OUTPUT_RATE) for w, a, b in timed]
        length = start + len(piece) if len(piece) else length
    return tuple(words)


# --- the reference cache file: per language its audio, embedding, and rate + profile as JSON --------


def _write_references(references: dict[str, tuple[np.ndarray, int, VoiceProfile]], path: Path) -> None:
    arrays = {}
    for lang, (audio, rate, profile) in references.items():
        fields = {f.name: getattr(profile, f.name) for f in dataclasses.fields(profile) if f.name != "embedding"}
        arrays[f"{lang}.audio"] = np.asarray(audio, dtype=np.float32)
        arrays[f"{lang}.embedding"] = np.asarray(profile.embedding, dtype=np.float32)
        arrays[f"{lang}.meta"] = np.array(json.dumps({"rate": rate, "profile": fields}))
    with atomic_output(path) as out:
        np.savez(out, **arrays)


def _read_references(path: Path) -> dict[str, tuple[np.ndarray, int, VoiceProfile]] | None:
    """The reference profiles kept at `path`; None where they are not kept yet, or damaged."""
    try:
        return _parse_references(path)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None


def _parse_references(path: Path) -> dict[str, tuple[np.ndarray, int, VoiceProfile]]:
    references = {}
    with np.load(path, allow_pickle=False) as data:
        for lang in sorted({name.split(".", 1)[0] for name in data.files}):
            meta = json.loads(str(data[f"{lang}.meta"]))
            fields = meta["profile"]
            fields["spectrum_db"] = tuple(fields["spectrum_db"])
            profile = VoiceProfile(**fields, embedding=data[f"{lang}.embedding"])
            references[lang] = (data[f"{lang}.audio"], int(meta["rate"]), profile)
    if set(references) != {"en", "zh"}:
        raise ValueError(f"languages {sorted(references)}")
    return references
