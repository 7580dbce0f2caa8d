"""An optimisation that fails at warm-up does not fail start-up (tiny random checkpoint, CPU): a step
capture that raises falls back to the eager step, bf16 that raises or makes non-finite audio reloads
the LLM and the flow in fp32; the result is what the fallback configuration gives from the start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glmtts.engines.glm.engine import GLMTTSEngine
from glmtts.engines.glm.fast_decode import FastDecoder, StaticDecoder
from glmtts.engines.glm.flow import FlowDecoder
from glmtts.engines.glm.llm import GenerationRequest
from glmtts.engines.glm.random_checkpoint import write_random_checkpoint
from glmtts.engines.glm.sampling import SamplingConfig
from glmtts.types import PromptVoice, Segment, SynthesisOptions, TextRun

RATE = 24000
TEXT = "hello world today."
SEGMENTS = {"en": [Segment(text=TEXT, runs=(TextRun("en", TEXT),), glm_text=TEXT)]}
OPTIONS = SynthesisOptions(seed=11, sampling="topk", top_k=10, forced_tokens_per_segment=30)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt", "tiny")


@pytest.fixture(scope="module")
def fp32_engine(ckpt: Path) -> GLMTTSEngine:
    engine = GLMTTSEngine(ckpt, dtype="fp32", stream=False)  # the reference path, in float32
    engine.load("cpu")
    return engine


@pytest.fixture(scope="module")
def voice(fp32_engine: GLMTTSEngine) -> PromptVoice:
    """A prompt's features do not depend on the engine dtype: every engine here may use them."""
    t = np.arange(2 * RATE) / RATE
    audio = (0.3 * np.sin(2 * np.pi * 160 * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)
    return fp32_engine.prepare_voice(audio, RATE, "Hello there.", "fallback-voice")


def _audio(engine: GLMTTSEngine, voice: PromptVoice) -> np.ndarray:
    (piece,) = engine.synthesize_segments(SEGMENTS["en"], voice, OPTIONS)
    return piece.audio


def test_a_failed_step_capture_falls_back_to_the_eager_step(ckpt: Path, voice: PromptVoice, monkeypatch) -> None:
    def unavailable(decoder: StaticDecoder) -> None:
        raise RuntimeError("CUDA graph capture is unavailable")

    monkeypatch.setattr(StaticDecoder, "capture", unavailable)
    engine = GLMTTSEngine(ckpt, decode="fast", capture="compile", stream=False)
    engine.load("cpu")
    engine.warmup(voice, SEGMENTS)

    facts = engine.describe()
    assert (facts["decode"], facts["decode_capture"], facts["dtype"]) == ("fast", "eager", "float32")
    assert facts["fallbacks"] == [
        "compile step capture failed (RuntimeError: CUDA graph capture is unavailable); using the eager step"
    ]
    assert isinstance(engine.decoder, FastDecoder) and engine.batcher.decoder is engine.decoder  # the rebuilt decoder
    prompt = engine.tokenizer.encode(TEXT) + [engine.tokenizer.speech_ids.begin_of_audio]
    greedy = GenerationRequest(prompt, 40, 40, SamplingConfig(method="greedy"), torch.Generator())
    reference = [token for chunk in engine.llm.stream(greedy) for token in chunk]
    assert len(reference) == 40 and engine.decoder.generate_batch([greedy]) == [reference]  # the reference path's tokens
    eager = GLMTTSEngine(ckpt, decode="fast", capture="eager", stream=False)
    eager.load("cpu")
    np.testing.assert_array_equal(_audio(engine, voice), _audio(eager, voice))
    assert eager.describe()["fallbacks"] == []


@pytest.mark.parametrize("failure", ["raises", "non-finite"])
def test_a_failed_bf16_warm_up_reloads_the_llm_and_the_flow_in_fp32(
    ckpt: Path, fp32_engine: GLMTTSEngine, voice: PromptVoice, monkeypatch, failure: str
) -> None:
    tokens_to_mel = FlowDecoder.tokens_to_mel

    def fails_in_bf16(flow: FlowDecoder, *args, **kwargs) -> torch.Tensor:
        mel = tokens_to_mel(flow, *args, **kwargs)
        if flow.dtype == torch.bfloat16 and failure == "raises":
            raise RuntimeError("no bf16 kernel")
        return mel * float("nan") if flow.dtype == torch.bfloat16 else mel

    monkeypatch.setattr(FlowDecoder, "tokens_to_mel", fails_in_bf16)
    engine = GLMTTSEngine(ckpt, dtype="bf16", stream=False)
    engine.load("cpu")
    assert engine.llm.dtype == torch.bfloat16
    engine.warmup(voice, SEGMENTS)

    reason = "RuntimeError: no bf16 kernel" if failure == "raises" else "FloatingPointError: non-finite audio at 24000 Hz"
    assert engine.describe()["fallbacks"] == [f"bfloat16 warm-up failed ({reason}); using float32"]
    assert (engine.describe()["dtype"], engine.llm.dtype, engine.flow.dtype) == ("float32", torch.float32, torch.float32)
    np.testing.assert_array_equal(_audio(engine, voice), _audio(fp32_engine, voice))


def test_a_failure_in_fp32_and_eager_still_fails_warm_up(fp32_engine: GLMTTSEngine, voice: PromptVoice, monkeypatch) -> None:
    def broken(flow: FlowDecoder, *args, **kwargs) -> torch.Tensor:
        raise RuntimeError("broken flow")

    monkeypatch.setattr(FlowDecoder, "tokens_to_mel", broken)
    with pytest.raises(RuntimeError, match="broken flow"):
        fp32_engine.warmup(voice, SEGMENTS)
    assert fp32_engine.describe()["fallbacks"] == []
