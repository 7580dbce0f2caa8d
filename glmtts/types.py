"""Typed values that travel between the frontend, the engines, the pipeline and the UI."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


class SynthesisError(ValueError):
    """Bad input to synthesis; the message is shown to the user as it is."""


class Cancelled(RuntimeError):
    """A synthesis stopped early because its client went away."""


class TimeLimitExceeded(Cancelled):
    """A synthesis ran past the per-request time limit."""

    def __init__(self, limit_s: float):
        super().__init__(f"The synthesis ran past the {limit_s:.0f} s time limit; send shorter text.")


class CancelToken:
    """A request's stop signal: set when its client leaves, or due when its time limit passes.

    The pipeline checks it between segments; engines call `check()` inside long segments (every few
    LLM steps, between sentences) so a request nobody waits for stops within a fraction of a segment.
    """

    def __init__(self, limit_s: float | None = None, stop: threading.Event | None = None):
        """`stop`: an event that cancels the token when set (a batch job's cancel reaches its item's synthesis)."""
        self.limit_s = limit_s
        self._deadline = None if limit_s is None else time.monotonic() + limit_s
        self._event = stop or threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise Cancelled once cancelled, TimeLimitExceeded once past the deadline."""
        if self._event.is_set():
            raise Cancelled("The synthesis was cancelled (its client went away, or its job was cancelled).")
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise TimeLimitExceeded(self.limit_s)


@dataclass(frozen=True)
class TextRun:
    """A stretch of one language inside a segment.

    `phonemes` is None when the engine should derive pronunciation itself. For Chinese it holds
    GLM-TTS phoneme symbols in syllable order ("SH", "ANG1", "I4", ...); for English it holds IPA
    phonemes (one string per word) when the user overrode pronunciation.
    """

    lang: str  # "zh" or "en"
    text: str
    phonemes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Segment:
    """One unit of synthesis: a sentence or a piece of one, normalized, split into language runs.

    `glm_text` is the text the GLM-TTS LLM reads: normalized text, or in phoneme mode the text with
    `<|X|><|IAN2|>` tokens in place of characters.
    """

    text: str
    runs: tuple[TextRun, ...]
    glm_text: str
    hard_split: bool = False  # cut at MAX_SEGMENT_CHARS because the text had no break to cut at
    unread: tuple[str, ...] = ()  # scripts of the request's text no voice reads, left out (on every segment)


class WordTime(NamedTuple):
    """A word of the text and when it is spoken, in seconds (from the start of its segment's audio,
    or of the whole output once the pipeline has placed it)."""

    word: str
    start: float
    end: float


HARD_SPLIT_NOTE = "text without breaks was cut at fixed lengths"


def unread_note(scripts: tuple[str, ...]) -> str:
    """What a listener is told when part of the text was left out: ASCII, fit for an HTTP header."""
    return f"text in {', '.join(scripts)} was left out: the voices read Chinese and English" if scripts else ""


@dataclass
class SynthesisOptions:
    """Per-request settings; None means the engine's default."""

    seed: int = 42
    sampling: str = "ras"  # "ras" or "topk" (GLM-TTS)
    top_k: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    speed: float = 1.0
    sample_rate: int | None = None
    use_phoneme: bool = False  # text already holds phoneme tokens / overrides to honour
    use_cache: bool = True  # GLM-TTS prompt-history cache across segments
    stream: bool | None = None  # stream inside segments (None: the engine's default); set by the pipeline
    forced_tokens_per_segment: int | None = None  # benchmarks: fix the LLM length


@dataclass
class PromptVoice:
    """A prompt after engine-specific analysis, cached by the pipeline per prompt content."""

    key: str  # content hash of the prompt audio plus its transcript (of the audio alone for an engine whose analysis ignores it)
    prompt_text: str
    features: object  # engine-owned analysis (speaker embedding, voice profile, speech tokens...)
    duration_s: float


@dataclass
class SegmentAudio:
    """What an engine yields for a segment: mono float32 audio at `sample_rate` and timings.

    A streaming engine may yield a segment in several pieces, all but the last with `final=False`;
    the pieces of one segment are played back to back as they are (the engine fades its own
    joins), segments are joined by the pipeline with a pause.
    """

    audio: np.ndarray
    sample_rate: int
    timings: dict[str, float] = field(default_factory=dict)  # stage name -> seconds
    info: dict[str, object] = field(default_factory=dict)  # e.g. {"speech_tokens": 123}
    final: bool = True  # the last piece of its segment
    # The segment's words timed by the engine's own durations, relative to this piece (whole
    # segments only); None where the engine has no durations (the pipeline then estimates them).
    words: tuple[WordTime, ...] | None = None


@dataclass
class AudioChunk:
    """A streamed piece of the output: a finished segment, or a piece of one, with its text and timings.

    `index` is the segment's position among `total` segments; a segment streamed in pieces gives
    several chunks with the same index, `first` on its first piece and `final` on its last.
    """

    index: int
    total: int
    audio: np.ndarray
    sample_rate: int
    segment: Segment
    timings: dict[str, float]
    first: bool = True
    final: bool = True
    words: tuple[WordTime, ...] | None = None  # the engine's word times, relative to `audio` (SegmentAudio.words)


@dataclass
class SynthesisResult:
    """A finished synthesis: the whole waveform plus what was done to produce it."""

    audio: np.ndarray
    sample_rate: int
    segments: list[Segment]
    timings: dict[str, float]  # stage -> seconds, summed over segments, plus "total"
    engine: str
    words: list[WordTime] = field(default_factory=list)  # every word of the text, timed in `audio`

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate

    @property
    def rtf(self) -> float:
        return self.timings["total"] / max(self.duration_s, 1e-6)

    @property
    def normalized_text(self) -> str:
        return " ".join(s.text for s in self.segments)

    @property
    def phoneme_text(self) -> str:
        return " ".join(s.glm_text for s in self.segments)

    @property
    def hard_split(self) -> bool:
        """Whether some text had no break and was cut at a fixed length."""
        return any(s.hard_split for s in self.segments)

    @property
    def unread(self) -> tuple[str, ...]:
        """The scripts of the text that were left out, which no voice reads ("Cyrillic", "Hangul", ...)."""
        return tuple(sorted({script for s in self.segments for script in s.unread}))

    @property
    def notes(self) -> list[str]:
        """What was done to the text that a listener should be told: cut at fixed lengths, parts left out."""
        return [note for note in (HARD_SPLIT_NOTE if self.hard_split else "", unread_note(self.unread)) if note]
