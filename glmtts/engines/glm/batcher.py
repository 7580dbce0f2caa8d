"""Gathers the speech-LM calls of concurrent requests into batched decodes.

Each request thread calls `DecodeBatcher.generate` as it would call `SpeechLM.generate`. The first
caller in line leads: it waits up to GATHER_WINDOW_S after its arrival (less once `max_batch` calls
are pending), takes the pending calls, decodes them together, then hands each caller its own tokens
(or the batch's exception) and passes the lead to the next caller in line. Calls arriving while a
batch runs wait for the next one. A batch of one runs `SpeechLM.generate`, the upstream-exact path.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import torch

from glmtts.engines.glm.llm import GenerationRequest, SpeechLM
from glmtts.engines.glm.sampling import SamplingConfig

_LOGGER = logging.getLogger(__name__)

GATHER_WINDOW_S = 0.005  # how long the first call waits for others to join its batch


@dataclass(eq=False)
class _PendingCall:
    """One caller's request and, once its batch has run, its tokens or the batch's exception."""

    request: GenerationRequest
    arrived: float
    tokens: list[int] | None = None
    error: BaseException | None = None
    done: bool = False


class DecodeBatcher:
    """Owns the waiting line of LLM calls in front of one SpeechLM and runs them in batches."""

    def __init__(self, llm: SpeechLM, max_batch: int, gather_s: float = GATHER_WINDOW_S):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.llm = llm
        self.max_batch = max_batch
        self.gather_s = gather_s
        self._condition = threading.Condition()
        self._pending: list[_PendingCall] = []  # arrival order
        self._leading = False  # a caller is gathering or running a batch

    @property
    def pending(self) -> int:
        """Calls waiting for a batch (not those in the batch that runs)."""
        with self._condition:
            return len(self._pending)

    def generate(
        self,
        prompt_ids: list[int],
        min_new: int,
        max_new: int,
        sampling: SamplingConfig,
        generator: torch.Generator,
        forced_length: int | None = None,
    ) -> list[int]:
        """`SpeechLM.generate`, decoded together with the calls of other threads."""
        call = _PendingCall(GenerationRequest(prompt_ids, min_new, max_new, sampling, generator, forced_length), time.monotonic())
        with self._condition:
            self._pending.append(call)
            self._condition.notify_all()  # a gathering leader counts its batch again
            while not call.done:
                if not self._leading and self._pending[0] is call:
                    self._lead(call)
                else:
                    self._condition.wait()
        if call.error is not None:
            raise call.error
        return call.tokens

    def _lead(self, call: _PendingCall) -> None:
        """Gather a batch headed by `call`, run it without the lock, and hand out the results."""
        self._leading = True
        deadline = call.arrived + self.gather_s
        while len(self._pending) < self.max_batch and (remaining := deadline - time.monotonic()) > 0:
            self._condition.wait(remaining)
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        self._condition.release()
        try:
            results = self._run([pending.request for pending in batch])
        except BaseException as error:  # every caller in this batch gets it; later batches go on
            for pending in batch:
                pending.error = error
        else:
            for pending, tokens in zip(batch, results, strict=True):
                pending.tokens = tokens
        finally:
            self._condition.acquire()
            for pending in batch:
                pending.done = True
            self._leading = False
            self._condition.notify_all()

    def _run(self, requests: list[GenerationRequest]) -> list[list[int]]:
        if len(requests) == 1:
            (request,) = requests
            return [
                self.llm.generate(
                    request.prompt_ids,
                    request.min_new,
                    request.max_new,
                    request.sampling,
                    request.generator,
                    request.forced_length,
                )
            ]
        _LOGGER.debug("Decoding %d requests together", len(requests))
        return self.llm.generate_batch(requests)
