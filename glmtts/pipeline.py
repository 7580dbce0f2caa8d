"""The resident pipeline: text frontend -> engine -> audio, loaded and warmed up once.

Device work goes through one scheduler (several UI sessions and API clients share one model): as
many requests at once as the engine batches (`Engine.max_batch`), warm-up and cache clearing alone.
Prompt analysis is cached per prompt content, so a voice costs its analysis only the first time.
Saved voices (glmtts.voices) are registered by id and keep their analysis outside that LRU cache.
The caches have their own locks, since several requests may hold device slots at once.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from glmtts.audio import SEGMENT_PAUSE_SECONDS, content_key, crossfade_join, limit_peak, read_prompt
from glmtts.engine import Engine
from glmtts.frontend import TextFrontend
from glmtts.scheduler import BATCH, INTERACTIVE, DeviceScheduler
from glmtts.settings import Settings, resolve_device
from glmtts.types import AudioChunk, PromptVoice, SynthesisError, SynthesisOptions, SynthesisResult

_LOGGER = logging.getLogger(__name__)

PROMPT_RATE = 24000  # prompts are decoded to this rate before engine analysis
MAX_TEXT_CHARS = 20000
PROMPT_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")
WARMUP_TEXTS = {
    "en": "The quick brown fox jumps over the lazy dog.",
    "zh": "今天天气很好，我们一起去公园散步吧。",
    "mixed": "我们明天用 Python 写一个 demo 吧。",
}

ProgressFn = Callable[[float, str], None]


@dataclass
class SavedPrompt:
    """A voice saved by the user: its prompt file and transcript, and its analysis once known.

    `voice` is None until the analysis is decoded from disk or computed; `on_prepared` is told when
    the pipeline had to compute it, so the store can persist it.
    """

    path: Path
    prompt_text: str
    voice: PromptVoice | None = None
    on_prepared: Callable[[PromptVoice], None] | None = None


@dataclass
class SynthesisRequest:
    """One synthesis: text plus a prompt given as a built-in voice name, a file path or raw bytes.

    A `str` prompt is only ever a voice name; callers turn user-given paths into `Path` after
    checking them against the allowed folders.
    """

    text: str
    prompt: str | Path | bytes | None = None  # None: the default built-in voice
    prompt_text: str = ""
    options: SynthesisOptions = field(default_factory=SynthesisOptions)
    priority: int = INTERACTIVE  # BATCH work yields to interactive requests


class Pipeline:
    """Owns the frontend and one engine for the life of the process."""

    def __init__(self, settings: Settings, engine: Engine, engine_reason: str):
        self.settings = settings
        self.engine = engine
        self.engine_reason = engine_reason
        self.frontend = TextFrontend(settings.replace_dict)
        self.device = resolve_device(settings.device)
        self.ready = False
        self.timings: dict[str, float] = {}
        self._voices: OrderedDict[str, PromptVoice] = OrderedDict()
        self._voices_lock = threading.Lock()
        self._saved: dict[str, SavedPrompt] = {}  # saved voice id -> prompt and analysis, never evicted
        self._saved_lock = threading.Lock()
        self.scheduler = DeviceScheduler()  # its capacity follows the engine once loaded

    # ----------------------------------------------------------------- lifecycle
    def load(self) -> None:
        start = time.perf_counter()
        self.frontend.load()
        self.timings["frontend_load_s"] = time.perf_counter() - start
        start = time.perf_counter()
        self.engine.load(self.device)
        self.timings["engine_load_s"] = time.perf_counter() - start
        self.scheduler.capacity = self.engine.max_batch  # an engine sizes its batch for the device at load
        _LOGGER.info("Loaded %s on %s in %.1f s", self.engine.name, self.device, self.timings["engine_load_s"])

    def warmup(self) -> None:
        """Analyse every built-in voice and synthesize each language once, then mark ready."""
        start = time.perf_counter()
        for name in self.builtin_voices():
            self._voice_for(name, "")
        default = self._voice_for(None, "")
        segments = {lang: self.frontend.text_to_segments(text) for lang, text in WARMUP_TEXTS.items()}
        with self.scheduler.slot(BATCH, exclusive=True):
            self.engine.warmup(default, segments)
        self.timings["warmup_s"] = time.perf_counter() - start
        self.ready = True
        _LOGGER.info("Warm-up finished in %.1f s", self.timings["warmup_s"])

    # ----------------------------------------------------------------- voices
    def builtin_voices(self) -> dict[str, Path]:
        """Every voice a request may name: examples/prompt and files in outputs/voices by file stem,
        then the saved voices by id (their prompt files)."""
        voices = {}
        for folder in (self.settings.examples / "prompt", self.settings.voices_dir):
            if folder.is_dir():
                for path in sorted(folder.iterdir()):
                    if path.is_file() and path.suffix.lower() in PROMPT_EXTENSIONS:
                        voices[path.stem] = path
        with self._saved_lock:
            voices.update((voice_id, saved.path) for voice_id, saved in self._saved.items())
        return voices

    def register_saved_voice(self, voice_id: str, saved: SavedPrompt) -> None:
        """Make a saved voice resolvable by id; its analysis stays resident (not in the LRU cache)."""
        with self._saved_lock:
            self._saved[voice_id] = saved

    def unregister_saved_voice(self, voice_id: str) -> None:
        with self._saved_lock:
            self._saved.pop(voice_id, None)

    def saved_voice(self, voice_id: str) -> SavedPrompt | None:
        with self._saved_lock:
            return self._saved.get(voice_id)

    def prepare_prompt(self, audio: np.ndarray, rate: int, prompt_text: str) -> PromptVoice:
        """Analyse a decoded prompt on the device, outside the cache (for saving a voice)."""
        with self.scheduler.slot():
            return self._analyse(audio, rate, prompt_text, content_key(audio, prompt_text.strip()))

    def _analyse(self, audio: np.ndarray, rate: int, prompt_text: str, key: str) -> PromptVoice:
        """Engine analysis of a prompt; its transcript is normalized the way target text is."""
        try:
            segments = self.frontend.text_to_segments(prompt_text) if prompt_text.strip() else []
        except SynthesisError:  # nothing speakable in the transcript: treat it as absent
            segments = []
        return self.engine.prepare_voice(audio, rate, " ".join(s.text for s in segments), key)

    def _saved_voice_for(self, voice_id: str, saved: SavedPrompt) -> PromptVoice:
        """A saved voice's analysis: resident, or computed once from its prompt file and handed back."""
        if saved.voice is not None:
            return saved.voice
        audio, rate = read_prompt(saved.path, PROMPT_RATE)
        with self.scheduler.slot():
            if saved.voice is not None:  # another request analysed it while this one waited
                return saved.voice
            voice = self._analyse(audio, rate, saved.prompt_text, content_key(audio, saved.prompt_text))
        with self._saved_lock:
            first = saved.voice is None  # another request may have analysed it at the same time
            if first:
                saved.voice = voice
        if first:
            _LOGGER.info("Saved voice %s analysed from its prompt", voice_id)
            if saved.on_prepared is not None:
                saved.on_prepared(voice)
        return saved.voice

    def _voice_for(self, prompt: str | Path | bytes | None, prompt_text: str) -> PromptVoice:
        if isinstance(prompt, str):
            saved = self.saved_voice(prompt)
            if saved is not None:  # a saved voice brings its own transcript
                return self._saved_voice_for(prompt, saved)
        builtin = self.builtin_voices()
        if prompt is None:
            if not builtin:
                raise SynthesisError("Give a prompt voice: no built-in voice is installed.")
            prompt = next(iter(builtin.values()))
        elif isinstance(prompt, str):
            if prompt not in builtin:
                raise SynthesisError(f"Unknown voice {prompt!r}; voices: {', '.join(builtin) or 'none'}.")
            prompt = builtin[prompt]
        if isinstance(prompt, Path) and not prompt_text.strip():
            transcript = prompt.with_suffix(".txt")  # built-in voices ship their transcript beside them
            prompt_text = transcript.read_text(encoding="utf-8").strip() if transcript.is_file() else ""
        audio, rate = read_prompt(prompt, PROMPT_RATE)
        key = content_key(audio, prompt_text)
        with self._voices_lock:
            if key in self._voices:
                self._voices.move_to_end(key)
                return self._voices[key]
        # Two requests with the same new prompt may both analyse it; the results are equal.
        with self.scheduler.slot():
            voice = self._analyse(audio, rate, prompt_text, key)
        with self._voices_lock:
            self._voices[key] = voice
            while len(self._voices) > self.settings.voice_cache_size:
                self._voices.popitem(last=False)
        return voice

    # ----------------------------------------------------------------- synthesis
    def synthesize_stream(self, request: SynthesisRequest, progress: ProgressFn | None = None) -> Iterator[AudioChunk]:
        """Yield each segment's audio as soon as it is synthesized."""
        text = request.text or ""
        if len(text) > MAX_TEXT_CHARS:
            raise SynthesisError(f"The text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}.")
        options = request.options
        if options.sample_rate and options.sample_rate not in self.engine.sample_rates:
            raise SynthesisError(
                f"Sample rate {options.sample_rate} is not offered by the {self.engine.name} engine "
                f"(choose from {', '.join(map(str, self.engine.sample_rates))})."
            )
        if not 0.5 <= options.speed <= 2.0:
            raise SynthesisError("Speed must be between 0.5 and 2.0.")
        start = time.perf_counter()
        segments = self.frontend.text_to_segments(text, use_phoneme=options.use_phoneme)
        frontend_s = time.perf_counter() - start
        total = len(segments)
        with self.scheduler.slot(request.priority):
            start = time.perf_counter()
            voice = self._voice_for(request.prompt, request.prompt_text)
            voice_s = time.perf_counter() - start
            for index, piece in enumerate(self.engine.synthesize_segments(segments, voice, options)):
                timings = dict(piece.timings)
                if index == 0:
                    timings.update(frontend=frontend_s, voice=voice_s)
                if progress:
                    progress((index + 1) / total, f"segment {index + 1}/{total}")
                yield AudioChunk(index, total, piece.audio, piece.sample_rate, segments[index], timings)

    def synthesize(self, request: SynthesisRequest, progress: ProgressFn | None = None) -> SynthesisResult:
        start = time.perf_counter()
        chunks = list(self.synthesize_stream(request, progress))
        timings: dict[str, float] = {}
        for chunk in chunks:
            for stage, seconds in chunk.timings.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
        rate = chunks[0].sample_rate
        audio = limit_peak(crossfade_join([c.audio for c in chunks], rate, SEGMENT_PAUSE_SECONDS))
        timings["total"] = time.perf_counter() - start
        return SynthesisResult(audio, rate, [c.segment for c in chunks], timings, self.engine.name)

    def text_to_phoneme_text(self, text: str) -> str:
        return self.frontend.text_to_phoneme_text(text)

    # ----------------------------------------------------------------- memory and status
    def memory_report(self) -> dict[str, float]:
        report = {"rss_mib": psutil.Process().memory_info().rss / 2**20}
        report.update(self.engine.memory_report())
        return {name: round(value, 1) for name, value in report.items()}

    def clear_caches(self) -> tuple[dict[str, float], dict[str, float]]:
        """Free per-request and allocator caches, keep the models; returns memory before and after."""
        before = self.memory_report()
        with self.scheduler.slot(exclusive=True):
            with self._voices_lock:
                self._voices.clear()
            self.engine.release_caches()
            gc.collect()
        return before, self.memory_report()

    def status(self) -> dict[str, object]:
        return {
            "ready": self.ready,
            **self.engine.describe(),
            "engine_reason": self.engine_reason,
            "device": self.device,
            "timings": {name: round(value, 2) for name, value in self.timings.items()},
            "memory": self.memory_report(),
            "cached_voices": len(self._voices),
            "saved_voices": len(self._saved),
            "queue_waiting": self.scheduler.waiting,
            "builtin_voices": list(self.builtin_voices()),
        }


def build_pipeline(settings: Settings) -> Pipeline:
    """Choose the engine: GLM-TTS when a valid checkpoint root is configured, else the embedded voices."""
    if settings.ckpt is not None:
        from glmtts.engines.glm.checkpoint import validate_checkpoint
        from glmtts.engines.glm.errors import CheckpointError

        try:
            validate_checkpoint(settings.ckpt)
        except CheckpointError as error:
            _LOGGER.error("GLM-TTS checkpoint unusable, using the embedded voices: %s", error)
            reason = f"checkpoint {settings.ckpt} unusable: {error}"
        else:
            from glmtts.engines.glm.engine import GLMTTSEngine

            engine = GLMTTSEngine(settings.ckpt, settings.dtype, settings.max_batch)
            return Pipeline(settings, engine, f"checkpoint {settings.ckpt}")
    else:
        reason = "no GLM-TTS checkpoint configured (set GLMTTS_CKPT)"
    from glmtts.engines.embedded import EmbeddedEngine

    return Pipeline(settings, EmbeddedEngine(settings.cache_dir), reason)
