"""The resident pipeline: text frontend -> voice -> engine -> audio, for every request, streamed or not.

A synthesis is a stream of chunks (`synthesize_stream`); `synthesize` is a thin wrapper that joins
them. The device slot is taken per segment (or per streamed piece), so concurrent requests take
turns by priority between segments, and every request carries a CancelToken, handed to the text
frontend and the engine: a client that went away, or the per-request time limit, stops it before
its next segment (engines also check the token inside long segments). Transports reach it through
a speech session (glmtts.session). Audio is joined in one place: `playable` and `join_chunks`. A
speed beyond the engine's own rates is time-stretched here, a segment at a time (glmtts.tempo).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glmtts import memory
from glmtts.captions import estimate_words
from glmtts.engine import Engine
from glmtts.frontend import TextFrontend
from glmtts.frontend.process import FrontendProcess
from glmtts.scheduler import BATCH, INTERACTIVE, DeviceScheduler
from glmtts.tempo import SegmentStretcher, split_speed
from glmtts.types import AudioChunk, CancelToken, SynthesisError, SynthesisOptions, SynthesisResult, WordTime
from glmtts.voices import VoiceLibrary

_LOGGER = logging.getLogger(__name__)

MAX_TEXT_CHARS = 20000
SEGMENT_PAUSE_SECONDS = 0.12
WARMUP_TEXTS = {  # one sentence a language; the HTTP warm-up then speaks both in one request
    "en": "The quick brown fox jumps over the lazy dog.",
    "zh": "今天天气很好，我们一起去公园散步吧。",
}


@dataclass
class SynthesisRequest:
    """One synthesis: text plus a prompt given as a voice name, a checked file path or raw bytes.

    A `str` prompt is only ever a voice name; callers turn user-given paths into `Path` after
    checking them against the allowed folders. `options` come from `glmtts.options.check_options`.
    """

    text: str
    prompt: str | Path | bytes | None = None  # None: the default built-in voice
    prompt_text: str = ""
    options: SynthesisOptions = field(default_factory=SynthesisOptions)
    priority: int = INTERACTIVE  # BATCH work yields to interactive requests

    def whole(self) -> SynthesisRequest:
        """The same request for a whole file: engines skip the work of streaming inside segments."""
        return dataclasses.replace(self, options=dataclasses.replace(self.options, stream=False))


def _pause_before(chunk: AudioChunk) -> int:
    """Samples of silence before a chunk: a pause before every segment but the first."""
    return 0 if chunk.index == 0 or not chunk.first else int(SEGMENT_PAUSE_SECONDS * chunk.sample_rate)


def played_seconds(chunk: AudioChunk) -> float:
    """How long a chunk plays in the joined result, its pause included."""
    return (_pause_before(chunk) + len(chunk.audio)) / chunk.sample_rate


def playable(chunk: AudioChunk) -> np.ndarray:
    """A chunk as it sounds in the joined result, clipped to [-1, 1], with its pause."""
    return join_chunks([chunk])


def join_chunks(chunks: list[AudioChunk]) -> np.ndarray:
    """The whole waveform of a synthesis: exactly the streamed chunks back to back, each written in
    place (a long synthesis is held twice at most: its chunks and the result)."""
    lengths = [_pause_before(chunk) + len(chunk.audio) for chunk in chunks]
    whole = np.zeros(sum(lengths), dtype=np.float32)
    end = 0
    for chunk, length in zip(chunks, lengths, strict=True):
        end += length
        np.clip(chunk.audio, -1.0, 1.0, out=whole[end - len(chunk.audio) : end])
    return whole


def chunk_words(chunk: AudioChunk, start_s: float) -> list[WordTime]:
    """A whole segment's words in the time of the joined output, the chunk (its pause included)
    starting at `start_s`: the engine's times where it has durations, else estimated from the audio.
    Only whole segments are timed (a request for words is not streamed inside segments)."""
    if not (chunk.first and chunk.final):
        return []
    words = chunk.words if chunk.words is not None else estimate_words(chunk.segment.text, chunk.audio, chunk.sample_rate)
    offset = start_s + _pause_before(chunk) / chunk.sample_rate
    return [WordTime(word, offset + start, offset + end) for word, start, end in words]


def result_of(chunks: list[AudioChunk], total_s: float, engine: str) -> SynthesisResult:
    """The finished synthesis from its chunks, with the stage timings summed."""
    if not chunks:
        raise SynthesisError("Nothing to speak.")
    timings: dict[str, float] = {}
    for chunk in chunks:
        for stage, seconds in chunk.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
    timings["total"] = total_s
    segments = [chunk.segment for chunk in chunks if chunk.final]
    starts = np.cumsum([0.0] + [played_seconds(chunk) for chunk in chunks[:-1]])
    words = [word for chunk, start in zip(chunks, starts, strict=True) for word in chunk_words(chunk, float(start))]
    return SynthesisResult(join_chunks(chunks), chunks[0].sample_rate, segments, timings, engine, words)


class Pipeline:
    """Turns requests into audio with one resident frontend, voice library and engine."""

    def __init__(
        self,
        engine: Engine,
        frontend: TextFrontend | FrontendProcess,
        voices: VoiceLibrary,
        scheduler: DeviceScheduler,
        request_timeout_s: float,
    ):
        self.engine = engine
        self.frontend = frontend
        self.voices = voices
        self.scheduler = scheduler
        self.request_timeout_s = request_timeout_s
        self._active = 0
        self._active_lock = threading.Lock()

    def warmup(self) -> None:
        """Synthesize each language once in the default voice, with the device alone."""
        voice = self.voices.resolve(None)
        segments = {lang: self.frontend.text_to_segments(text) for lang, text in WARMUP_TEXTS.items()}
        with self.scheduler.slot(BATCH, exclusive=True):
            self.engine.warmup(voice, segments)

    def synthesize_stream(self, request: SynthesisRequest, cancel: CancelToken | None = None) -> Iterator[AudioChunk]:
        """Yield each segment's audio (or each piece of it) as soon as it is synthesized.

        `cancel` defaults to a token with the per-request time limit; the text frontend and the
        engine get it too. Raises SynthesisError for bad input, Cancelled / TimeLimitExceeded when
        stopped, QueueFull / QueueTimeout when busy.
        """
        cancel = cancel or CancelToken(self.request_timeout_s)
        text = request.text or ""
        if len(text) > MAX_TEXT_CHARS:
            raise SynthesisError(f"The text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}.")
        start = time.perf_counter()
        segments = self.frontend.text_to_segments(text, use_phoneme=request.options.use_phoneme, cancel=cancel)
        frontend_s = time.perf_counter() - start
        start = time.perf_counter()
        voice = self.voices.resolve(request.prompt, request.prompt_text, request.priority)
        voice_s = time.perf_counter() - start
        with self._active_lock:
            self._active += 1
        native_speed, stretch_factor = split_speed(request.options.speed, self.engine.speed_range)
        stretcher = SegmentStretcher(stretch_factor)
        options = dataclasses.replace(request.options, speed=native_speed)
        pieces = self.engine.synthesize_segments(segments, voice, options, cancel)
        index, first, admitted = 0, True, False
        try:
            while True:
                cancel.check()
                # A request that has started is never refused for a full queue between its segments.
                with self.scheduler.slot(request.priority, queue_limit=not admitted, cancel=cancel):
                    admitted = True
                    piece = next(pieces, None)
                if piece is None:
                    break
                piece = stretcher.feed(piece)  # outside the device slot: stretching is CPU work
                if piece is None:
                    continue
                timings = dict(piece.timings)
                if index == 0 and first:
                    timings.update(frontend=frontend_s, voice=voice_s)
                yield AudioChunk(
                    index,
                    len(segments),
                    piece.audio,
                    piece.sample_rate,
                    segments[index],
                    timings,
                    first,
                    piece.final,
                    piece.words,
                )
                first = piece.final
                if piece.final:
                    index += 1
        finally:
            pieces.close()
            self._request_finished()

    def synthesize(self, request: SynthesisRequest, cancel: CancelToken | None = None) -> SynthesisResult:
        """The whole waveform: the stream, joined, in the caller's thread (batch items, the CLI)."""
        start = time.perf_counter()
        chunks = list(self.synthesize_stream(request.whole(), cancel))
        return result_of(chunks, time.perf_counter() - start, self.engine.name)

    @property
    def active(self) -> int:
        """Syntheses in progress (between their frontend call and their end, waiting for the device included)."""
        return self._active

    def _request_finished(self) -> None:
        """The last request out hands freed memory back, so the process returns to its warm size."""
        with self._active_lock:
            self._active -= 1
            idle = self._active == 0
        if idle:
            memory.trim()

    def text_to_phoneme_text(self, text: str) -> str:
        return self.frontend.text_to_phoneme_text(text)
