"""The embedded engine: bundled English and Mandarin voices, matched to the prompt speaker.

Each language run of a segment is spoken by its built-in voice, then moved toward the prompt
speaker (pitch, range, formant scale, rate) with parameters fitted once per prompt; runs are joined
with short crossfades and resampled to one output rate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from glmtts.audio import crossfade_join, resample
from glmtts.engine import Engine
from glmtts.engines.embedded.english import PiperEnglishVoice
from glmtts.engines.embedded.mandarin import BakerMandarinVoice
from glmtts.engines.embedded.speaker import SpeakerEncoder, check_prompt
from glmtts.engines.embedded.voice_match import MatchParams, VoiceProfile, apply_match, fit_match
from glmtts.types import PromptVoice, Segment, SegmentAudio, SynthesisOptions, TextRun

_LOGGER = logging.getLogger(__name__)

OUTPUT_RATE = 24000
# Sentences each built-in voice speaks once at load, to measure its own voice profile.
ENGLISH_REFERENCE = "The birch canoe slid on the smooth planks, and the sun rose slowly over the quiet lake."
MANDARIN_REFERENCE = tuple(  # 今天天气很好，我们一起去公园散步吧。
    "J IN1 T IAN1 T IAN1 Q I4 H EN3 H AO3 , UO3 M EN5 I4 Q I3 Q V4 G ONG1 VAN2 S AN4 B U4 B A5 .".split()
)


@dataclass(frozen=True)
class EmbeddedVoice:
    """What the engine keeps per prompt: the prompt's profile and fitted parameters per language."""

    profile: VoiceProfile
    params: dict[str, MatchParams]
    fit_s: float


class EmbeddedEngine(Engine):
    """Piper English + Baker Mandarin on the CPU (or ONNX Runtime's CUDA provider), voice-matched."""

    name = "embedded"
    sample_rates = (OUTPUT_RATE,)
    samples = False

    def __init__(self, cache_dir: Path):
        self.cache_dir = cache_dir
        self.english = PiperEnglishVoice()
        self.mandarin = BakerMandarinVoice(cache_dir)
        self.encoder = SpeakerEncoder()
        self._references: dict[str, tuple[np.ndarray, int, VoiceProfile]] = {}

    def load(self, device: str) -> None:
        self.english.load(device)
        self.mandarin.load(device)
        self.encoder.load(device)
        samples = {
            "en": (self.english.text_to_audio(ENGLISH_REFERENCE), self.english.sample_rate),
            "zh": (self.mandarin.phonemes_to_audio(MANDARIN_REFERENCE), self.mandarin.sample_rate),
        }
        self._references = {
            lang: (audio, rate, VoiceProfile.from_audio(audio, rate, self.encoder)) for lang, (audio, rate) in samples.items()
        }

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
        self, segments: list[Segment], voice: PromptVoice, options: SynthesisOptions
    ) -> Iterator[SegmentAudio]:
        fitted: EmbeddedVoice = voice.features
        for segment in segments:
            timings = {"synthesis": 0.0, "voice_match": 0.0}
            pieces = []
            for run in segment.runs:
                start = time.perf_counter()
                audio, rate = self._speak(run, options.speed)
                timings["synthesis"] += time.perf_counter() - start
                start = time.perf_counter()
                audio = resample(apply_match(audio, rate, fitted.params[run.lang], options.seed), rate, OUTPUT_RATE)
                timings["voice_match"] += time.perf_counter() - start
                pieces.append(audio)
            yield SegmentAudio(crossfade_join(pieces, OUTPUT_RATE), OUTPUT_RATE, timings)

    def _speak(self, run: TextRun, speed: float) -> tuple[np.ndarray, int]:
        if run.lang == "zh":
            return self.mandarin.phonemes_to_audio(run.phonemes or (), speed), self.mandarin.sample_rate
        if run.phonemes:
            return self.english.phonemes_to_audio(list(run.phonemes), speed), self.english.sample_rate
        return self.english.text_to_audio(run.text, speed), self.english.sample_rate

    def memory_report(self) -> dict[str, float]:
        return {"rss_mib": psutil.Process().memory_info().rss / 2**20}

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "voices": {"en": "piper en_US-joe-medium (GPL-3.0)", "zh": "Baker FastSpeech2 + MB-MelGAN (non-commercial)"},
        }
