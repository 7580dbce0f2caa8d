"""The interface every synthesis engine implements.

Lifecycle: constructing an engine is cheap; `load(device)` builds every stage on
the device; the pipeline then calls `warmup()` so lazy initialisation happens before the server
reports ready. Engines never pick a device themselves; `auto_device()` only says which one they
would use best.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np

from glmtts.types import CancelToken, PromptVoice, Segment, SegmentAudio, SynthesisOptions


class Engine(ABC):
    """A resident text-to-speech model that turns frontend segments into audio in a prompt's voice."""

    name: str = "engine"
    sample_rates: tuple[int, ...] = (24000,)
    samples: bool = False  # whether top-k / top-p / temperature / sampling method mean anything
    # Speaking rates the engine renders itself, well. Requests take any speed in OpenAI's 0.25-4.0: the
    # pipeline asks the engine for the nearest rate in this range and time-stretches the rest (glmtts.tempo).
    speed_range: tuple[float, float] = (0.5, 2.0)
    max_batch: int = 1  # how many requests may synthesize at once; above 1 the engine batches their work
    analysis_version: str = "1"  # change it when prepare_voice's output changes: stored analyses are redone
    analysis_reads_text: bool = True  # False: prepare_voice ignores the transcript (one analysis per audio)

    def auto_device(self) -> str:
        """The device "--device auto" means for this engine on this machine."""
        return "cpu"

    @abstractmethod
    def load(self, device: str) -> None:
        """Load every stage onto `device` ("cpu", "cuda", "cuda:1", "mps")."""

    @abstractmethod
    def prepare_voice(self, audio: np.ndarray, sample_rate: int, prompt_text: str, key: str) -> PromptVoice:
        """Analyse a prompt (mono float32 at the file's own rate) once; the voice library caches the
        result under `key`. Each consumer resamples from the original rate itself."""

    @abstractmethod
    def synthesize_segments(
        self, segments: list[Segment], voice: PromptVoice, options: SynthesisOptions, cancel: CancelToken | None = None
    ) -> Iterator[SegmentAudio]:
        """Yield each segment's audio in order, at a rate from `sample_rates`: one SegmentAudio per
        segment, or several pieces (`final=False` on all but the last) for an engine that streams
        inside a segment. Call `cancel.check()` inside long work so an abandoned request stops early."""

    def warmup(self, voice: PromptVoice, segments_by_language: dict[str, list[Segment]]) -> None:
        """Run real syntheses so kernels, graphs and caches are initialised before serving."""
        for segments in segments_by_language.values():
            for _ in self.synthesize_segments(segments, voice, SynthesisOptions()):
                pass

    def memory_report(self) -> dict[str, float]:
        """Resident memory owned by this engine, in MiB, by name (e.g. {"vram_allocated": 812.0})."""
        return {}

    def release_caches(self) -> None:
        """Free per-request and allocator caches; the models stay loaded."""

    def describe(self) -> dict[str, object]:
        """Facts for the status panel and /ready."""
        return {"engine": self.name, "sample_rates": list(self.sample_rates)}
