"""GLM-TTS text tokenizer, speech LM and sampling on tiny random checkpoints (CPU)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from glmtts.engines.glm.errors import CheckpointError
from glmtts.engines.glm.llm import INDEX_FILE, BatchDecoding, GenerationRequest, SpeechLM
from glmtts.engines.glm.random_checkpoint import phoneme_symbols, vocab_size_for, write_random_llm, write_random_tokenizer
from glmtts.engines.glm.sampling import SamplingConfig, sample_token
from glmtts.engines.glm.text_tokenizer import CONFIG_FILE, TextTokenizer

SHARD_1 = "model-00001-of-00002.safetensors"
SHARD_2 = "model-00002-of-00002.safetensors"
END = 3  # end token id in the hand-built distributions
SEEDS = range(300)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    write_random_tokenizer(directory, "tiny")
    return directory


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> TextTokenizer:
    return TextTokenizer.load(tokenizer_dir)


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: TextTokenizer) -> Path:
    directory = tmp_path_factory.mktemp("llm")
    write_random_llm(directory, "tiny", vocab_size_for("tiny", tokenizer.size))
    return directory


@pytest.fixture(scope="module")
def llm(llm_dir: Path, tokenizer: TextTokenizer) -> SpeechLM:
    return SpeechLM.load(llm_dir, "cpu", torch.float32, tokenizer.speech_ids)


def _prompt(tokenizer: TextTokenizer) -> list[int]:
    speech = [tokenizer.audio_0_id + token for token in (5, 17, 300, 32767)]
    return tokenizer.encode("hello world, today ") + tokenizer.encode("the weather") + [tokenizer.begin_of_audio_id] + speech


# ----------------------------------------------------------------------------- tokenizer


def test_full_layout_has_the_reported_special_ids(tmp_path: Path) -> None:
    write_random_tokenizer(tmp_path, "full")
    tokenizer = TextTokenizer.load(tmp_path)
    assert tokenizer.audio_0_id == 61498
    assert tokenizer.end_of_speech_id == 59253
    assert tokenizer.begin_of_audio_id == 59260
    assert tokenizer.encode("<|audio_32767|>") == [61498 + 32767]
    assert tokenizer.pad_id == tokenizer.encode("<|endoftext|>")[0] < tokenizer.end_of_speech_id
    assert tokenizer.size <= 98304


def test_special_and_phoneme_tokens_are_single_ids(tokenizer: TextTokenizer) -> None:
    ids = tokenizer.speech_ids
    assert tokenizer.encode("<|user|>") == [ids.end_of_speech]
    assert tokenizer.encode("<|begin_of_audio|>") == [ids.begin_of_audio]
    assert tokenizer.encode("<|audio_0|><|audio_1|>") == [ids.audio_start, ids.audio_start + 1]
    assert ids.codebook_size == 32768
    symbols = phoneme_symbols()
    assert len(symbols) == 204 and "SH" in symbols and "ANG1" in symbols
    from glmtts.frontend.phonemes import INVENTORY

    assert set(symbols) == INVENTORY  # the writer's copy of the inventory is the frontend's
    phoneme_ids = [tokenizer.token_id(f"<|{symbol}|>") for symbol in symbols]
    assert None not in phoneme_ids and len(set(phoneme_ids)) == 204
    sh, ang = tokenizer.token_id("<|SH|>"), tokenizer.token_id("<|ANG1|>")
    assert tokenizer.encode("<|SH|><|ANG1|>") == [sh, ang]
    # Text around added tokens is encoded on its own, as upstream's tokenizer splits on them.
    assert tokenizer.encode("ab<|SH|>cd") == tokenizer.encode("ab") + [sh] + tokenizer.encode("cd")


@pytest.mark.parametrize(
    "text",
    ["hello world, today 123!", "今天天气很好，我们一起去公园散步吧。", "Mixed 中文 and <|X|><|IAN2|> tokens\n", "<|<|SH|>|>"],
)
def test_round_trip(tokenizer: TextTokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_missing_added_tokens_file_is_named(tokenizer_dir: Path, tmp_path: Path) -> None:
    shutil.copy(tokenizer_dir / "tokenizer.model", tmp_path / "tokenizer.model")
    with pytest.raises(CheckpointError, match=CONFIG_FILE):
        TextTokenizer.load(tmp_path)


# ----------------------------------------------------------------------------- speech LM


def test_cached_steps_equal_full_forward(llm: SpeechLM, tokenizer: TextTokenizer) -> None:
    ids = _prompt(tokenizer)
    prefix = 6
    decoding, first = llm.start(ids[:prefix], len(ids) - prefix)
    stepped = [first] + [decoding.feed([token]) for token in ids[prefix:]]
    full = llm.logits(ids)  # [T, vocab]
    torch.testing.assert_close(torch.stack(stepped), full[prefix - 1 :], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="KV cache"):
        decoding.feed([ids[0]])


def test_same_seed_same_tokens(llm: SpeechLM, tokenizer: TextTokenizer) -> None:
    prompt = _prompt(tokenizer)

    def run(seed: int, method: str = "ras") -> list[int]:
        return llm.generate(prompt, 5, 40, SamplingConfig(method=method), torch.Generator().manual_seed(seed))

    first = run(42)
    assert first == run(42)
    assert first != run(43)
    assert run(7, "topk") == run(7, "topk")
    assert 5 <= len(first) <= 40


def test_forced_length_gives_exactly_that_many_speech_tokens(llm: SpeechLM, tokenizer: TextTokenizer) -> None:
    tokens = llm.generate(_prompt(tokenizer), 0, 3, SamplingConfig(), torch.Generator().manual_seed(0), forced_length=64)
    assert len(tokens) == 64
    assert all(0 <= token < 32768 for token in tokens)


def _three_requests(tokenizer: TextTokenizer) -> list[GenerationRequest]:
    """Prompts of three lengths with a free length (RAS), a short top-k and a forced length."""
    prompt = _prompt(tokenizer)
    return [
        GenerationRequest(prompt, 5, 40, SamplingConfig(), torch.Generator().manual_seed(1)),
        GenerationRequest(prompt[3:], 2, 12, SamplingConfig(method="topk", top_k=10), torch.Generator().manual_seed(2)),
        GenerationRequest(prompt[:4] + prompt[-3:], 0, 0, SamplingConfig(temperature=1.5), torch.Generator().manual_seed(3), 30),
    ]


def test_batched_generation_gives_each_row_its_one_by_one_tokens(llm: SpeechLM, tokenizer: TextTokenizer) -> None:
    requests = _three_requests(tokenizer)
    assert len({len(r.prompt_ids) for r in requests}) == 3
    one_by_one = [llm.generate(r.prompt_ids, r.min_new, r.max_new, r.sampling, r.generator, r.forced_length) for r in requests]
    assert llm.generate_batch(_three_requests(tokenizer)) == one_by_one
    assert 2 <= len(one_by_one[1]) <= 12 < len(one_by_one[2]) == 30  # rows finish at different steps
    assert 5 <= len(one_by_one[0]) and len({tuple(tokens) for tokens in one_by_one}) == 3


def test_batched_steps_match_single_sequence_logits(llm: SpeechLM, tokenizer: TextTokenizer) -> None:
    prompt = _prompt(tokenizer)
    prompts = [prompt, prompt[5:], prompt[:3]]
    start = tokenizer.audio_0_id
    continuations = [[start + t for t in row] for row in ([1, 2, 3, 4], [40, 50, 60, 70], [9, 9, 8, 8])]
    decoding = BatchDecoding(llm.model, llm.device, prompts, max_new=len(continuations[0]))
    steps = [decoding.prefill()] + [decoding.feed(list(column)) for column in zip(*continuations)]
    batched = torch.stack(steps, dim=1)  # [rows, 1 + steps, vocab]
    for row, (ids, continuation) in enumerate(zip(prompts, continuations)):
        full = llm.logits(ids + continuation)  # [T, vocab]
        torch.testing.assert_close(batched[row], full[len(ids) - 1 :], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="KV cache"):
        decoding.feed([start] * len(prompts))


def test_missing_shard_is_named(llm_dir: Path, tokenizer: TextTokenizer, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(llm_dir, tmp_path / "llm"))
    (copy / SHARD_2).unlink()
    with pytest.raises(CheckpointError, match=SHARD_2):
        SpeechLM.load(copy, "cpu", torch.float32, tokenizer.speech_ids)


def test_truncated_shard_is_named(llm_dir: Path, tokenizer: TextTokenizer, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(llm_dir, tmp_path / "llm"))
    shard = copy / SHARD_1
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=SHARD_1):
        SpeechLM.load(copy, "cpu", torch.float32, tokenizer.speech_ids)


def test_missing_key_is_named(llm_dir: Path, tokenizer: TextTokenizer, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(llm_dir, tmp_path / "llm"))
    dropped = "model.layers.0.mlp.up_proj.weight"
    with safe_open(copy / SHARD_1, framework="pt") as handle:
        kept = {key: handle.get_tensor(key) for key in list(handle.keys()) if key != dropped}
    save_file(kept, str(copy / SHARD_1))
    with pytest.raises(CheckpointError, match=rf"{SHARD_1}.*{dropped}"):
        SpeechLM.load(copy, "cpu", torch.float32, tokenizer.speech_ids)
    # Dropped from the index as well: the index no longer lists a key the model needs.
    index = json.loads((copy / INDEX_FILE).read_text())
    del index["weight_map"][dropped]
    (copy / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"missing key '{dropped}'"):
        SpeechLM.load(copy, "cpu", torch.float32, tokenizer.speech_ids)


def test_wrong_shape_is_named(llm_dir: Path, tokenizer: TextTokenizer, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(llm_dir, tmp_path / "llm"))
    with safe_open(copy / SHARD_2, framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in list(handle.keys())}
    tensors["model.norm.weight"] = torch.ones(3)
    save_file(tensors, str(copy / SHARD_2))
    with pytest.raises(CheckpointError, match="model.norm.weight.*shape"):
        SpeechLM.load(copy, "cpu", torch.float32, tokenizer.speech_ids)


# ----------------------------------------------------------------------------- sampling


def _logp(probabilities: dict[int, float], size: int = 64) -> torch.Tensor:
    """Log-probabilities [size]: the given ids, every other id impossible."""
    logp = torch.full((size,), -math.inf)
    for token, probability in probabilities.items():
        logp[token] = math.log(probability)
    return logp


def _draws(logp: torch.Tensor, history: list[int], allow_end: bool, config: SamplingConfig) -> list[int]:
    return [sample_token(logp, history, END, allow_end, config, torch.Generator().manual_seed(s)) for s in SEEDS]


def test_nucleus_keeps_the_crossing_token_and_stops_after_it() -> None:
    draws = _draws(_logp({10: 0.5, 11: 0.35, 12: 0.15}), [], True, SamplingConfig())
    assert set(draws) == {10, 11}  # 0.5 < 0.8 adds 11 (crossing 0.8); 12 is never a candidate


def test_nucleus_takes_at_most_top_k_in_stable_order() -> None:
    uniform = torch.full((100,), -math.log(100))
    draws = _draws(uniform, [], True, SamplingConfig())
    assert set(draws) <= set(range(25))  # ties keep index order: ids 0-24 only
    assert len(set(draws)) > 15


def test_repetition_in_window_redraws_from_the_full_distribution() -> None:
    logp = _logp({10: 0.85, 11: 0.15})  # the nucleus holds only 10
    config = SamplingConfig()
    assert set(_draws(logp, [], True, config)) == {10}
    # 10 occurs in the last 10 ids: redraw from the whole distribution, so 11 appears.
    recent = _draws(logp, [10] + [20] * 9, True, config)
    assert set(recent) == {10, 11}
    assert 0.05 < recent.count(11) / len(recent) < 0.3
    # 10 lies just outside the window: no redraw.
    assert set(_draws(logp, [10] + [20] * 10, True, config)) == {10}


@pytest.mark.parametrize("method", ["ras", "topk"])
def test_end_token_only_after_minimum_length(method: str) -> None:
    logp = _logp({END: 0.9, 10: 0.06, 11: 0.04})
    config = SamplingConfig(method=method)
    before = _draws(logp, [], False, config)
    assert END not in before and set(before) <= {10, 11}
    after = _draws(logp, [], True, config)
    assert after.count(END) > len(after) // 2


def test_temperature_flattens_the_nucleus() -> None:
    logp = _logp({10: 0.85, 11: 0.1, 12: 0.05})
    assert set(_draws(logp, [], True, SamplingConfig())) == {10}
    assert len(set(_draws(logp, [], True, SamplingConfig(temperature=3.0)))) == 3


def test_bad_sampling_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="method"):
        SamplingConfig(method="beam")
    with pytest.raises(ValueError):
        SamplingConfig(top_p=0.0)
