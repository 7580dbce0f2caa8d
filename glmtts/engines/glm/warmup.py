"""Warm-up of a loaded GLM-TTS engine, and the fallbacks that keep a failed optimisation from failing
start-up.

Warm-up captures every decode shape of the fast path (`SpeechDecoder.warmup`), then runs one short
synthesis per language at each output rate, whole and streamed, with a fixed LLM length
(WARMUP_TOKENS), so that lazy initialisation happens before the server says it is ready. A step
capture (CUDA graphs, torch.compile) that raises falls back to the eager step; bf16/fp16 that raises
or makes non-finite audio reloads the LLM and the flow in fp32; after a fallback warm-up starts over.
Each fallback is logged with its traceback and its reason kept in `engine.fallbacks` (/v1/status).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch

from glmtts.engines.glm.decoder import SpeechDecoder
from glmtts.engines.glm.fast_decode import CaptureError
from glmtts.types import PromptVoice, Segment, SegmentAudio, SynthesisOptions

_LOGGER = logging.getLogger(__name__)

WARMUP_TOKENS = 25  # one second of speech per warm-up synthesis


class WarmableEngine(Protocol):
    """What warm-up needs of the engine (GLMTTSEngine) and the two fallbacks it may ask for."""

    decoder: SpeechDecoder
    dtype: torch.dtype
    fallbacks: list[str]
    load_seconds: dict[str, float]
    sample_rates: tuple[int, ...]

    def synthesize_segments(self, segments, voice: PromptVoice, options: SynthesisOptions) -> Iterator[SegmentAudio]: ...

    def use_eager_step(self) -> None: ...

    def reload_in_fp32(self) -> None: ...


def warm_up(engine: WarmableEngine, voice: PromptVoice, segments_by_language: dict[str, list[Segment]]) -> None:
    """Warm `engine` up, falling back (eager step, then float32) until a warm-up succeeds; a failure
    in float32 with the eager step raises."""
    while True:
        try:
            return _warm(engine, voice, segments_by_language)
        except CaptureError as error:
            engine.fallbacks.append(_fallback_reason(str(error), error.__cause__, "the eager step"))
            engine.use_eager_step()
        except Exception as error:
            if engine.dtype == torch.float32:
                raise
            what = f"{str(engine.dtype).removeprefix('torch.')} warm-up failed"
            engine.fallbacks.append(_fallback_reason(what, error, "float32"))
            engine.reload_in_fp32()


def _warm(engine: WarmableEngine, voice: PromptVoice, segments_by_language: dict[str, list[Segment]]) -> None:
    engine.load_seconds.update(engine.decoder.warmup())
    for rate in engine.sample_rates:
        for segments in segments_by_language.values():
            for stream in (False, True):
                options = SynthesisOptions(sample_rate=rate, forced_tokens_per_segment=WARMUP_TOKENS, stream=stream)
                for piece in engine.synthesize_segments(segments[:1], voice, options):
                    if not np.isfinite(piece.audio).all():
                        raise FloatingPointError(f"non-finite audio at {rate} Hz")


def _fallback_reason(what: str, error: BaseException | None, instead: str) -> str:
    """Log a fallback with its traceback; its reason (with the error's first line) for `describe`."""
    lines = str(error).strip().splitlines()
    reason = f"{what} ({type(error).__name__}: {lines[0][:200] if lines else ''}); using {instead}"
    _LOGGER.warning("GLM-TTS warm-up: %s", reason, exc_info=error)
    return reason
