"""The fast decode path on a tiny random LLM (CPU, fp32): the same tokens and logits as the reference
path under greedy decoding, for one row and for rows of different lengths; seeded sampling that is
reproducible run to run; the device sampler's rules (RAS nucleus, window redraw, end mask, top-k)."""

from __future__ import annotations

import math

import pytest
import torch

from glmtts.engines.glm.fast_decode import SYNC_EVERY, FastDecoder
from glmtts.engines.glm.llm import GenerationRequest, SpeechLM
from glmtts.engines.glm.random_checkpoint import vocab_size_for, write_random_llm, write_random_tokenizer
from glmtts.engines.glm.sampling import METHOD_CODES, SamplingConfig, sample_rows
from glmtts.engines.glm.text_tokenizer import TextTokenizer

STEPS = 300
GREEDY = SamplingConfig(method="greedy")
END = 3  # end id of the hand-made sampler tests
DRAWS = 400


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    directory = tmp_path_factory.mktemp("tokenizer")
    write_random_tokenizer(directory, "tiny")
    return TextTokenizer.load(directory)


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory, tokenizer: TextTokenizer) -> SpeechLM:
    directory = tmp_path_factory.mktemp("llm")
    write_random_llm(directory, "tiny", vocab_size_for("tiny", tokenizer.size))
    return SpeechLM.load(directory, "cpu", torch.float32, tokenizer.speech_ids)


@pytest.fixture(scope="module")
def fast(llm: SpeechLM) -> FastDecoder:
    decoder = FastDecoder(llm, max_batch=3, max_positions=1024)
    decoder.warmup()
    return decoder


def _prompts(tokenizer: TextTokenizer) -> list[list[int]]:
    speech = [tokenizer.audio_0_id + token for token in range(7, 400, 13)]
    text = tokenizer.encode("hello world, today the weather is fine")
    full = text + [tokenizer.begin_of_audio_id] + speech
    return [full, full[9:], text[:3] + [tokenizer.begin_of_audio_id] + speech[-5:]]


def _greedy(prompt: list[int]) -> GenerationRequest:
    return GenerationRequest(prompt, STEPS, STEPS, GREEDY, torch.Generator().manual_seed(0))


def test_weights_are_shared_with_the_reference_model(llm: SpeechLM, fast: FastDecoder) -> None:
    attention = llm.model.model.layers[0].self_attn
    fused = fast.weights.layers[0].qkv
    assert attention.q_proj.weight.data_ptr() == fused.data_ptr()
    assert attention.k_proj.weight.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
    assert FastDecoder(llm, max_batch=1).weights.layers[0].qkv.data_ptr() == fused.data_ptr()  # not fused twice


def test_greedy_tokens_and_logits_equal_the_reference_for_300_steps(
    llm: SpeechLM, fast: FastDecoder, tokenizer: TextTokenizer
) -> None:
    prompt = _prompts(tokenizer)[0]
    reference = llm.generate(prompt, STEPS, STEPS, GREEDY, torch.Generator())
    assert len(reference) == STEPS and len(set(reference)) > 20
    assert fast.generate(_greedy(prompt)) == reference
    # Per step: the fast step's logits after feeding each token against transformers' cached decode.
    decoder = fast._decoder(1, 512)
    decoder.load([_greedy(prompt)])
    decoding, logits = llm.start(prompt, STEPS)
    torch.testing.assert_close(decoder.logits[0], logits, rtol=1e-4, atol=1e-4)
    start = tokenizer.audio_0_id
    for token in reference[:-1]:
        decoder.run(steps=1)
        logits = decoding.feed([token + start])
        torch.testing.assert_close(decoder.logits[0], logits, rtol=1e-4, atol=1e-4)


def test_batched_rows_of_different_lengths_equal_the_reference(
    llm: SpeechLM, fast: FastDecoder, tokenizer: TextTokenizer
) -> None:
    prompts = _prompts(tokenizer)
    assert len({len(prompt) for prompt in prompts}) == 3
    requests = [_greedy(prompts[0]), GenerationRequest(prompts[1], 40, 90, GREEDY, torch.Generator()), _greedy(prompts[2])]
    batched = fast.generate_batch(requests)
    for request, tokens in zip(requests, batched):
        assert tokens == llm.generate(request.prompt_ids, request.min_new, request.max_new, GREEDY, torch.Generator())
    assert [len(tokens) for tokens in batched][0::2] == [STEPS, STEPS] and 40 <= len(batched[1]) <= 90
    # Per step and row, against each row decoded alone by transformers.
    decoder = fast._decoder(3, 1024)
    decoder.load([_greedy(prompt) for prompt in prompts])
    references = [llm.start(prompt, STEPS) for prompt in prompts]
    tokens = [llm.generate(prompt, STEPS, STEPS, GREEDY, torch.Generator()) for prompt in prompts]
    start = tokenizer.audio_0_id
    for step in range(60):
        for row, (decoding, logits) in enumerate(references):
            torch.testing.assert_close(decoder.logits[row], logits, rtol=1e-4, atol=1e-4)
            references[row] = (decoding, decoding.feed([tokens[row][step] + start]))
        decoder.run(steps=1)


@pytest.mark.parametrize("method", ["ras", "topk"])
def test_seeded_sampling_is_reproducible_run_to_run(fast: FastDecoder, tokenizer: TextTokenizer, method: str) -> None:
    prompt = _prompts(tokenizer)[0]

    def run(seed: int) -> list[int]:
        sampling = SamplingConfig(method=method, top_k=10 if method == "topk" else 25)
        return fast.generate(GenerationRequest(prompt, 5, 120, sampling, torch.Generator().manual_seed(seed)))

    first = run(42)
    assert first == run(42)
    assert first != run(43)
    assert 5 <= len(first) <= 120


def test_a_row_draws_from_its_own_generator_whatever_rows_run_beside_it(fast: FastDecoder, tokenizer: TextTokenizer) -> None:
    prompts = _prompts(tokenizer)

    def request(prompt: list[int], seed: int) -> GenerationRequest:
        return GenerationRequest(prompt, 0, 0, SamplingConfig(), torch.Generator().manual_seed(seed), forced_length=80)

    alone = [fast.generate(request(prompt, seed)) for seed, prompt in enumerate(prompts)]
    together = fast.generate_batch([request(prompt, seed) for seed, prompt in enumerate(prompts)])
    assert together == alone
    assert all(len(tokens) == 80 and all(0 <= t < 32768 for t in tokens) for tokens in together)


def test_tokens_stream_every_sync_interval_and_a_stopped_row_ends(fast: FastDecoder, tokenizer: TextTokenizer) -> None:
    prompts = _prompts(tokenizer)
    requests = [
        GenerationRequest(prompt, 0, 0, SamplingConfig(), torch.Generator().manual_seed(1), 100) for prompt in prompts[:2]
    ]
    seen = [0, 0]
    chunks = 0
    for new in fast.stream_batch(requests, stopped=lambda row: row == 1 and seen[1] >= SYNC_EVERY):
        chunks += 1
        for row, tokens in enumerate(new):
            assert len(tokens) <= SYNC_EVERY
            seen[row] += len(tokens)
    assert seen == [100, SYNC_EVERY] and chunks == math.ceil(100 / SYNC_EVERY)


def test_a_request_beyond_the_cache_falls_back_to_the_reference_path(
    llm: SpeechLM, fast: FastDecoder, tokenizer: TextTokenizer
) -> None:
    prompt = _prompts(tokenizer)[2]
    request = GenerationRequest(prompt, 2000, 2000, GREEDY, torch.Generator())
    assert not fast.fits([request])
    short = GenerationRequest(prompt, 30, 30, GREEDY, torch.Generator())
    assert fast.generate(short) == llm.generate(prompt, 30, 30, GREEDY, torch.Generator())


# ----------------------------------------------------------------------------- the device sampler


def _rows(probabilities: dict[int, float], size: int = 64) -> torch.Tensor:
    logits = torch.full((DRAWS, size), -math.inf)
    for token, probability in probabilities.items():
        logits[:, token] = math.log(probability)
    return logits


def _sample(
    logits: torch.Tensor, method: str = "ras", history: list[int] | None = None, allow_end: bool = True, **settings
) -> list[int]:
    rows = logits.shape[0]
    config = SamplingConfig(method=method, **settings)
    window = torch.full((rows, config.window), -1, dtype=torch.long)
    if history:
        window[:, : len(history)] = torch.tensor(history)
    uniforms = torch.rand((rows, 2), generator=torch.Generator().manual_seed(0))

    def per_row(value: float, dtype: torch.dtype) -> torch.Tensor:
        return torch.full((rows,), value, dtype=dtype)

    return sample_rows(
        logits, window, torch.full((rows,), allow_end), per_row(METHOD_CODES[method], torch.long),
        per_row(config.top_k, torch.long), per_row(config.top_p, torch.float32), per_row(config.temperature, torch.float32),
        per_row(config.window * config.tau, torch.float32), uniforms, END, 32,
    ).tolist()  # fmt: skip


def test_device_nucleus_keeps_the_crossing_token_and_stops_after_it() -> None:
    assert set(_sample(_rows({10: 0.5, 11: 0.35, 12: 0.15}))) == {10, 11}


def test_device_nucleus_takes_at_most_top_k_and_top_k_draws_from_k() -> None:
    uniform = torch.full((DRAWS, 100), -math.log(100))
    assert len(set(_sample(uniform))) > 15 and len(set(_sample(uniform))) <= 25
    assert set(_sample(uniform, "topk", top_k=5)) <= set(range(100)) and len(set(_sample(uniform, "topk", top_k=5))) == 5


def test_device_repetition_in_window_redraws_from_the_full_distribution() -> None:
    logits = _rows({10: 0.85, 11: 0.15})
    assert set(_sample(logits)) == {10}
    recent = _sample(logits, history=[10] + [20] * 9)
    assert set(recent) == {10, 11} and 0.05 < recent.count(11) / DRAWS < 0.3


@pytest.mark.parametrize("method", ["ras", "topk", "greedy"])
def test_device_end_token_only_after_minimum_length(method: str) -> None:
    logits = _rows({END: 0.9, 10: 0.06, 11: 0.04})
    before = _sample(logits, method, allow_end=False)
    assert END not in before and set(before) <= {10, 11}
    assert _sample(logits, method).count(END) > DRAWS // 2
