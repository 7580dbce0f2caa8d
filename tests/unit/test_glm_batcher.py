"""The decode batcher: concurrent calls share a decode, late calls wait for the next, errors stay in their batch."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import torch

from glmtts.engines.glm.batcher import DecodeBatcher
from glmtts.engines.glm.llm import GenerationRequest
from glmtts.engines.glm.sampling import SamplingConfig

FAILING_ID = -1  # a prompt holding this id makes its decode raise
LONG_GATHER_S = 10.0  # a batch closes only once it is full


class FakeLLM:
    """Records the prompts of each decode and answers each prompt with its ids reversed."""

    def __init__(self, hold: bool = False):
        self.batches: list[list[list[int]]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def generate(self, prompt_ids, min_new, max_new, sampling, generator, forced_length=None) -> list[int]:
        return self._decode([prompt_ids])[0]

    def generate_batch(self, requests: list[GenerationRequest]) -> list[list[int]]:
        return self._decode([request.prompt_ids for request in requests])

    def _decode(self, prompts: list[list[int]]) -> list[list[int]]:
        self.batches.append(prompts)
        self.started.set()
        self.release.wait(5)
        if any(FAILING_ID in prompt for prompt in prompts):
            raise ValueError("decode failed")
        return [prompt[::-1] for prompt in prompts]


def call(batcher: DecodeBatcher, prompt: list[int]) -> list[int]:
    return batcher.generate(prompt, 0, 10, SamplingConfig(), torch.Generator())


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_concurrent_calls_share_one_decode_and_get_their_own_tokens() -> None:
    llm = FakeLLM()
    batcher = DecodeBatcher(llm, max_batch=4, gather_s=LONG_GATHER_S)
    prompts = [[row, row + 10, row + 20] for row in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda prompt: call(batcher, prompt), prompts))
    assert [len(batch) for batch in llm.batches] == [4]
    assert results == [prompt[::-1] for prompt in prompts]


def test_calls_arriving_during_a_batch_go_into_the_next_ones() -> None:
    llm = FakeLLM(hold=True)
    batcher = DecodeBatcher(llm, max_batch=2, gather_s=0.0)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(call, batcher, [1])
        assert llm.started.wait(5)
        later: list[Future] = []
        for prompt in ([2], [3], [4]):
            later.append(pool.submit(call, batcher, prompt))
            wait_until(lambda n=len(later): batcher.pending == n)
        llm.release.set()
        assert [f.result(5) for f in (first, *later)] == [[1], [2], [3], [4]]
    assert llm.batches == [[[1]], [[2], [3]], [[4]]]


def test_an_exception_reaches_only_the_callers_of_its_batch() -> None:
    llm = FakeLLM(hold=True)
    batcher = DecodeBatcher(llm, max_batch=2, gather_s=0.0)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(call, batcher, [1])
        assert llm.started.wait(5)
        failing = [pool.submit(call, batcher, [2]), pool.submit(call, batcher, [FAILING_ID])]
        wait_until(lambda: batcher.pending == 2)
        llm.release.set()
        assert first.result(5) == [1]
        for future in failing:
            with pytest.raises(ValueError, match="decode failed"):
                future.result(5)
    assert call(batcher, [5, 6]) == [6, 5]  # the batcher goes on after a failed batch
