"""The decode batcher: concurrent calls share a decode, late calls wait for the next, errors stay in their
batch, tokens reach their caller while the batch still decodes, and a caller that leaves ends its row."""

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
    """Records the prompts of each decode and answers each prompt with its ids reversed, one id a step."""

    def __init__(self, hold: bool = False):
        self.batches: list[list[list[int]]] = []
        self.stopped_rows: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.step = threading.Semaphore(1000)  # tests that pace the steps take the permits away
        if not hold:
            self.release.set()

    def stream_batch(self, requests: list[GenerationRequest], stopped=None):
        prompts = [request.prompt_ids for request in requests]
        self.batches.append(prompts)
        self.started.set()
        self.release.wait(5)
        if any(FAILING_ID in prompt for prompt in prompts):
            raise ValueError("decode failed")
        answers = [prompt[::-1] for prompt in prompts]
        ended = [False] * len(requests)
        for index in range(max(len(answer) for answer in answers)):
            assert self.step.acquire(timeout=5)
            for row in range(len(requests)):
                if not ended[row] and stopped is not None and stopped(row):
                    ended[row] = True
                    self.stopped_rows.append(row)
            yield [[] if ended[row] or index >= len(answer) else [answer[index]] for row, answer in enumerate(answers)]


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


def test_tokens_reach_the_caller_while_the_batch_decodes_and_a_leaving_caller_ends_its_row() -> None:
    llm = FakeLLM()
    llm.step = threading.Semaphore(0)
    batcher = DecodeBatcher(llm, max_batch=2, gather_s=LONG_GATHER_S)
    request = GenerationRequest([1, 2, 3, 4], 0, 10, SamplingConfig(), torch.Generator())
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(call, batcher, [7, 8, 9])
        wait_until(lambda: batcher.pending == 1)
        stream = batcher.stream(request)
        llm.step.release()
        assert next(stream) == [4]  # the first step's token, before the batch has finished
        stream.close()  # the caller leaves
        for _ in range(5):
            llm.step.release()
        assert other.result(5) == [9, 8, 7]
    assert llm.stopped_rows == [1]
