"""The GLM-TTS engine end to end on a tiny random checkpoint in the official layout (CPU)."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from glmtts.engines.glm.checkpoint import analysis_fingerprint, describe_checkpoint, find_campplus, validate_checkpoint
from glmtts.engines.glm.engine import GLMTTSEngine
from glmtts.engines.glm.errors import CheckpointError
from glmtts.engines.glm.fast_decode import FastDecoder
from glmtts.engines.glm.random_checkpoint import write_random_checkpoint
from glmtts.engines.glm.segment import MAX_PROMPT_SPEECH_TOKENS, PromptHistory
from glmtts.types import PromptVoice, Segment, SegmentAudio, SynthesisError, SynthesisOptions, TextRun

RATE = 24000
FORCED = 50  # speech tokens per segment: 2 s of audio
TEXTS = ("hello world today.", "the weather is nice,", "see you tomorrow!")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt", "tiny")


@pytest.fixture(scope="module")
def engine(ckpt: Path) -> GLMTTSEngine:
    engine = GLMTTSEngine(ckpt, stream=False)  # one piece per segment; streaming has its own tests
    engine.load("cpu")
    return engine


@pytest.fixture(scope="module")
def voice(engine: GLMTTSEngine) -> PromptVoice:
    t = np.arange(3 * RATE) / RATE
    audio = 0.3 * np.sin(2 * np.pi * (150 + 40 * np.sin(2 * np.pi * 2 * t)) * t)  # a wobbling tone
    audio += 0.01 * np.random.default_rng(0).standard_normal(audio.size)
    return engine.prepare_voice(audio.astype(np.float32), RATE, "  Hello   there, my friend. ", "test-voice")


def _segments(*texts: str) -> list[Segment]:
    return [Segment(text=text, runs=(TextRun("en", text),), glm_text=text) for text in texts]


def _synthesize(engine: GLMTTSEngine, voice: PromptVoice, texts: tuple[str, ...], **options: object) -> list[SegmentAudio]:
    return list(engine.synthesize_segments(_segments(*texts), voice, SynthesisOptions(**options)))


def test_checkpoint_layout(ckpt: Path) -> None:
    validate_checkpoint(ckpt)
    assert find_campplus(ckpt) == (ckpt / "frontend" / "campplus.onnx").resolve()
    facts = describe_checkpoint(ckpt)
    assert facts["llm_layers"] == 2 and set(facts["disk_mib"]) >= {"llm", "flow", "hift"}
    part_bytes = [path.stat().st_size for path in ckpt.rglob("*") if path.is_file()]
    assert max(part_bytes) < 10 * 2**20


def test_voice_features(voice: PromptVoice, engine: GLMTTSEngine) -> None:
    features = voice.features
    assert voice.prompt_text == "Hello there, my friend."
    assert abs(voice.duration_s - 3.0) < 1e-6
    assert abs(len(features.speech_tokens) - 75) <= 1  # 25 tokens per second
    assert features.prompt_text_ids == engine.tokenizer.encode("Hello there, my friend. ")
    assert features.speaker_embedding.shape == (192,)
    assert {rate: mel.shape[1] for rate, mel in features.prompt_mels.items()} == {24000: 80, 32000: 80}


@pytest.mark.parametrize("rate", [24000, 32000])
def test_forced_length_gives_plausible_audio(engine: GLMTTSEngine, voice: PromptVoice, rate: int) -> None:
    (piece,) = _synthesize(engine, voice, TEXTS[:1], forced_tokens_per_segment=FORCED, sample_rate=rate)
    assert piece.sample_rate == rate
    assert piece.info == {"speech_tokens": FORCED}
    assert piece.audio.dtype == np.float32 and np.isfinite(piece.audio).all()
    assert abs(len(piece.audio) / rate - FORCED / 25) < 0.1
    assert set(piece.timings) == {"llm", "flow", "vocoder"} and all(s >= 0 for s in piece.timings.values())


def test_same_seed_same_audio(engine: GLMTTSEngine, voice: PromptVoice) -> None:
    first = _synthesize(engine, voice, TEXTS[:1], seed=7, forced_tokens_per_segment=FORCED)[0].audio
    again = _synthesize(engine, voice, TEXTS[:1], seed=7, forced_tokens_per_segment=FORCED)[0].audio
    other = _synthesize(engine, voice, TEXTS[:1], seed=8, forced_tokens_per_segment=FORCED)[0].audio
    np.testing.assert_array_equal(first, again)
    assert len(other) == len(first) and not np.array_equal(first, other)


def test_free_length_stays_within_text_bounds(engine: GLMTTSEngine, voice: PromptVoice) -> None:
    (piece,) = _synthesize(engine, voice, TEXTS[1:2], sampling="topk", top_k=10)
    text_tokens = len(engine.tokenizer.encode(TEXTS[1]))
    # Between 2x and 20x the text tokens; the few sampled ids outside the speech range are dropped.
    assert 1.6 * text_tokens <= piece.info["speech_tokens"] <= 20 * text_tokens
    assert len(piece.audio) > 0


def test_prompt_history_cache_changes_later_segments_only(engine: GLMTTSEngine, voice: PromptVoice) -> None:
    cached = _synthesize(engine, voice, TEXTS, use_cache=True, forced_tokens_per_segment=FORCED)
    plain = _synthesize(engine, voice, TEXTS, use_cache=False, forced_tokens_per_segment=FORCED)
    assert len(cached) == len(plain) == 3
    np.testing.assert_array_equal(cached[0].audio, plain[0].audio)  # same prompt for the first segment
    assert not np.array_equal(cached[1].audio, plain[1].audio)
    assert not np.array_equal(cached[2].audio, plain[2].audio)
    assert all(abs(len(p.audio) / RATE - FORCED / 25) < 0.1 for p in cached)


def test_prompt_without_transcript_still_speaks(engine: GLMTTSEngine, voice: PromptVoice) -> None:
    features = voice.features
    audio = np.sin(np.arange(2 * RATE) / RATE * 2 * np.pi * 220).astype(np.float32)
    silent_text = engine.prepare_voice(audio, RATE, "   ", "no-transcript")
    assert silent_text.features.prompt_text_ids == [] and len(silent_text.features.speech_tokens) == 50
    (piece,) = _synthesize(engine, silent_text, TEXTS[:1], forced_tokens_per_segment=FORCED)
    assert abs(len(piece.audio) / RATE - FORCED / 25) < 0.1
    assert features.prompt_text_ids  # the module's voice is unaffected


def test_concurrent_requests_decode_together_and_match_one_at_a_time(
    ckpt: Path, engine: GLMTTSEngine, voice: PromptVoice, monkeypatch: pytest.MonkeyPatch
) -> None:
    batched = GLMTTSEngine(ckpt, max_batch=3, stream=False)
    batched.load("cpu")
    assert engine.max_batch == 1 and engine.batcher is None  # the default on a CPU
    batched.batcher.gather_s = 10.0  # the batch closes once all three requests have arrived
    batch_sizes: list[int] = []
    decode_batch = batched.llm.stream_batch
    monkeypatch.setattr(
        batched.llm,
        "stream_batch",
        lambda requests, stopped=None: batch_sizes.append(len(requests)) or decode_batch(requests, stopped),
    )
    requests = [
        (TEXTS[0], {"seed": 1, "forced_tokens_per_segment": FORCED}),
        (TEXTS[1], {"seed": 2, "sampling": "topk", "top_k": 10}),
        (TEXTS[2], {"seed": 3}),
    ]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda request: _synthesize(batched, voice, (request[0],), **request[1])[0], requests))
    assert batch_sizes == [3]
    for (text, options), piece in zip(requests, together):
        (alone,) = _synthesize(engine, voice, (text,), **options)
        assert piece.info == alone.info
        np.testing.assert_array_equal(piece.audio, alone.audio)


def test_prompt_history_drops_old_segments_beyond_the_limit() -> None:
    history = PromptHistory([1, 2], [10] * 300)
    assert history.prompt(5, use_cache=True) == ([1, 2], [10] * 300)
    history.append([3] * 10, [11] * 300)
    history.append([4] * 10, [12] * 100)
    # 22 text / 700 speech tokens cached: a 5-token segment is estimated at int(700 / 22 * 5) = 159.
    text, speech = history.prompt(5, use_cache=True)
    assert 700 + 159 > MAX_PROMPT_SPEECH_TOKENS >= 400 + 159  # dropping the second entry is enough
    assert text == [1, 2] + [4] * 10 and speech == [10] * 300 + [12] * 100
    assert history.prompt(0, use_cache=True) == (text, speech)  # dropped for good
    assert history.prompt(5, use_cache=False) == ([1, 2], [10] * 300)


def test_bad_requests_are_synthesis_errors(engine: GLMTTSEngine, voice: PromptVoice) -> None:
    with pytest.raises(SynthesisError, match="22050"):
        _synthesize(engine, voice, TEXTS[:1], sample_rate=22050)
    with pytest.raises(SynthesisError, match="method"):
        _synthesize(engine, voice, TEXTS[:1], sampling="beam")


def test_memory_report_and_description(engine: GLMTTSEngine) -> None:
    report = engine.memory_report()
    assert report["weights_llm"] > 1.0 and report["weights_flow"] > 0.1
    assert "vram_allocated" not in report  # CPU
    facts = engine.describe()
    assert facts["engine"] == "glm-tts" and facts["sample_rates"] == [24000, 32000]
    assert facts["dtype"] == "float32" and facts["device"] == "cpu"


def test_missing_file_fails_validation_by_name(ckpt: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(ckpt, tmp_path / "ckpt"))
    (copy / "hift" / "hift.pt").unlink()
    with pytest.raises(CheckpointError, match="hift.pt"):
        validate_checkpoint(copy)
    with pytest.raises(CheckpointError, match="hift.pt"):
        GLMTTSEngine(copy).load("cpu")


def test_corrupted_llm_fails_load_by_key(ckpt: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(ckpt, tmp_path / "ckpt"))
    shard = copy / "llm" / "model-00001-of-00002.safetensors"
    dropped = "model.layers.0.self_attn.q_proj.weight"
    with safe_open(shard, framework="pt") as handle:
        kept = {key: handle.get_tensor(key) for key in list(handle.keys()) if key != dropped}
    save_file(kept, str(shard))
    validate_checkpoint(copy)  # the cheap check only looks at files
    with pytest.raises(CheckpointError, match=rf"model-00001-of-00002.*{dropped}"):
        GLMTTSEngine(copy).load("cpu")


def test_decode_paths_and_streaming_are_described(engine: GLMTTSEngine, ckpt: Path) -> None:
    facts = engine.describe()
    assert facts["decode"] == "reference" and facts["stream"] is False  # the CPU default decode path
    assert engine.decoder is engine.llm and "decode_capture" not in facts and "kv_cache" not in engine.memory_report()
    assert engine.analysis_version == f"2-{analysis_fingerprint(ckpt)}"  # prompts are analysed from their own rate now
    with pytest.raises(ValueError, match="decode"):
        GLMTTSEngine(ckpt, decode="turbo")
    fast = GLMTTSEngine(ckpt, decode="fast", stream=False)
    fast.load("cpu")
    facts = fast.describe()
    assert facts["decode"] == "fast" and facts["decode_capture"] == "eager" and facts["kv_cache_mib"] > 0
    assert isinstance(fast.decoder, FastDecoder) and fast.decoder.llm is fast.llm and fast.batcher.decoder is fast.decoder
    assert fast.memory_report()["kv_cache"] > 0


def test_fast_path_synthesis_is_reproducible_for_a_seed(ckpt: Path, voice: PromptVoice) -> None:
    fast = GLMTTSEngine(ckpt, decode="fast", stream=False)
    fast.load("cpu")
    first = _synthesize(fast, voice, TEXTS[:1], seed=5, sampling="topk", top_k=10)[0]
    again = _synthesize(fast, voice, TEXTS[:1], seed=5, sampling="topk", top_k=10)[0]
    np.testing.assert_array_equal(first.audio, again.audio)
    assert first.info == again.info and len(first.audio) > 0


@pytest.mark.parametrize("rate", [16000, 44100])
def test_prompts_are_analysed_from_their_own_rate(engine: GLMTTSEngine, rate: int) -> None:
    from glmtts.engines.glm.mel import audio_to_prompt_mel

    t = np.arange(2 * rate) / rate
    audio = (0.3 * np.sin(2 * np.pi * 180 * t) + 0.01 * np.random.default_rng(1).standard_normal(t.size)).astype(np.float32)
    voice = engine.prepare_voice(audio, rate, "Hello there.", f"rate-{rate}")
    assert abs(len(voice.features.speech_tokens) - 50) <= 1 and abs(voice.duration_s - 2.0) < 1e-6
    for out_rate, mel in voice.features.prompt_mels.items():
        assert torch.equal(mel, audio_to_prompt_mel(audio, rate, out_rate, "cpu"))


def test_the_engine_imports_only_what_a_bare_gpu_machine_has() -> None:
    """bench/bench_gpu.py runs with torch, transformers, safetensors, tiktoken, onnxruntime and numpy
    (PyYAML comes with transformers): no module of the engine may import anything else."""
    import ast
    import sys

    root = Path(__file__).resolve().parents[2]
    allowed = {"torch", "transformers", "safetensors", "tiktoken", "onnxruntime", "numpy", "yaml", "glmtts"}
    allowed_glmtts = ("glmtts.types", "glmtts.engine", "glmtts.engines.glm", "glmtts.dsp")
    files = [
        *sorted((root / "glmtts" / "engines" / "glm").glob("*.py")),
        root / "glmtts" / "dsp.py",
        root / "bench" / "bench_gpu.py",
    ]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in allowed, f"{path.name} imports {name}"
                if top == "glmtts":
                    assert name.startswith(allowed_glmtts), f"{path.name} imports {name}"


def test_runtime_modules_hold_no_fixtures() -> None:
    """Every random-weight writer lives in random_checkpoint.py, and no runtime module imports it."""
    import ast

    package = Path(__file__).resolve().parents[2] / "glmtts" / "engines" / "glm"
    for path in sorted(package.glob("*.py")):
        if path.name == "random_checkpoint.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined = [node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        assert not [name for name in defined if name.startswith(("write_random", "Random"))], path.name
        imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert "glmtts.engines.glm.random_checkpoint" not in imported, path.name


def test_analyses_are_redone_for_another_checkpoint_not_for_a_copy(ckpt: Path, tmp_path: Path) -> None:
    """The fingerprint in the analysis version (the key of analyses on disk and of saved voices' features)
    follows the tokenizers and CAM++ by content: a copy or another LLM keeps it, another CAM++ or checkpoint not."""
    copy = Path(shutil.copytree(ckpt, tmp_path / "copy"))
    assert analysis_fingerprint(copy) == analysis_fingerprint(ckpt)
    (copy / "llm" / "config.json").write_text((ckpt / "llm" / "config.json").read_text() + " ")
    assert analysis_fingerprint(copy) == analysis_fingerprint(ckpt)  # the LLM has no part in a prompt's analysis
    campplus = find_campplus(copy)
    changed = bytearray(campplus.read_bytes())
    changed[-1] ^= 1
    campplus.write_bytes(bytes(changed))
    assert analysis_fingerprint(copy) != analysis_fingerprint(ckpt)
    other = write_random_checkpoint(tmp_path / "other", "tiny", seed=1)
    assert analysis_fingerprint(other) != analysis_fingerprint(ckpt)
