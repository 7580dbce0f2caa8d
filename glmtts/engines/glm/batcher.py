"""Gathers the speech-LM calls of concurrent requests into batched decodes, run by one worker thread.

Each request thread calls `DecodeBatcher.stream(request)` (or `generate`, its joined form) where it
would call the decoder itself. The worker takes the first call in line, waits up to GATHER_WINDOW_S
after its arrival for others (less once `max_batch` calls are pending), decodes them together with
the decoder's `stream_batch` and hands each caller its tokens as they come (so a caller can turn
early tokens into audio while the batch still decodes), or the batch's exception. Calls arriving
while a batch runs wait for the next one. A caller that stops reading (its client went away) has its
row ended at the decoder's next look at the device.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from glmtts.engines.glm.decoder import SpeechDecoder
from glmtts.engines.glm.llm import GenerationRequest
from glmtts.engines.glm.sampling import SamplingConfig

_LOGGER = logging.getLogger(__name__)

GATHER_WINDOW_S = 0.005  # how long the first call waits for others to join its batch
_END = object()  # the last item of a call's queue when its row ended normally


@dataclass(eq=False)
class _PendingCall:
    """One caller's request and the queue its tokens (then _END, or the batch's exception) arrive on."""

    request: GenerationRequest
    arrived: float
    chunks: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    abandoned: bool = False


class DecodeBatcher:
    """Owns the waiting line of LLM calls in front of one decoder and the worker that batches them."""

    def __init__(self, decoder: SpeechDecoder, max_batch: int, gather_s: float = GATHER_WINDOW_S):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.decoder = decoder
        self.max_batch = max_batch
        self.gather_s = gather_s
        self._condition = threading.Condition()
        self._pending: list[_PendingCall] = []  # arrival order
        self._worker: threading.Thread | None = None

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
        request = GenerationRequest(prompt_ids, min_new, max_new, sampling, generator, forced_length)
        return [token for chunk in self.stream(request) for token in chunk]

    def stream(self, request: GenerationRequest) -> Iterator[list[int]]:
        """This request's tokens (ids relative to `<|audio_0|>`) in chunks, as its batch decodes them."""
        call = _PendingCall(request, time.monotonic())
        with self._condition:
            self._pending.append(call)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="glm-decode-batcher", daemon=True)
                self._worker.start()
            self._condition.notify_all()
        finished = False
        try:
            while True:
                item = call.chunks.get()
                if item is _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            if not finished:  # the caller stopped reading: drop the call or end its row
                call.abandoned = True
                with self._condition:
                    if call in self._pending:
                        self._pending.remove(call)

    def _work(self) -> None:
        while True:
            with self._condition:
                while not self._pending:
                    self._condition.wait()
                deadline = self._pending[0].arrived + self.gather_s
                while len(self._pending) < self.max_batch and (remaining := deadline - time.monotonic()) > 0:
                    self._condition.wait(remaining)
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
            self._run(batch)

    def _run(self, batch: list[_PendingCall]) -> None:
        """Decode one batch, handing out chunks as they come; an exception goes to every caller in it."""
        if len(batch) > 1:
            _LOGGER.debug("Decoding %d requests together", len(batch))
        try:
            stream = self.decoder.stream_batch([call.request for call in batch], lambda row: batch[row].abandoned)
            for chunks in stream:
                for call, chunk in zip(batch, chunks):
                    if chunk and not call.abandoned:
                        call.chunks.put(chunk)
        except Exception as error:  # every caller in this batch gets it; later batches go on
            for call in batch:
                call.chunks.put(error)
        else:
            for call in batch:
                call.chunks.put(_END)
