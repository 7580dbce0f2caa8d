"""A speech session: one request's synthesis, between a transport (an HTTP route, the page) and the pipeline.

The service starts one per request (`Service.start_speech`). The session owns the request's
CancelToken (with the per-request time limit), runs `Pipeline.synthesize_stream` with it in a
thread of its own and hands the chunks to the event loop that started it; at most
MAX_BUFFERED_CHUNKS wait for the reader, so a slow client slows its synthesis down rather than
filling memory. It measures the time to first audio and records the metrics once, when the last
chunk has been read. It also keeps the request's timing record (`stages`: the pipeline's stage
timings summed over the chunks, plus what the transport times with `timed`, its encoding say),
which a transport may send as a Server-Timing header and which is logged once, at `close()`.

A transport only maps its own protocol to it: iterate it (`async for chunk in session`) or
`await session.result()` for the whole waveform, call `cancel()` when its client is gone and
`close()` when it is done (on a finished session, cancelling does nothing and closing only logs):
the synthesis then stops before its next segment, and inside a long one at the engine's next check.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from glmtts.metrics import Metrics
from glmtts.pipeline import Pipeline, SynthesisRequest, played_seconds, result_of
from glmtts.types import AudioChunk, CancelToken, SynthesisResult

_LOGGER = logging.getLogger(__name__)

MAX_BUFFERED_CHUNKS = 4  # a slow reader holds its synthesis back instead of piling up audio


class SpeechSession:
    """One request's synthesis, read chunk by chunk from an event loop; create it inside a running loop.

    `whole`: a whole file is wanted (engines skip the work of streaming inside segments) and the
    chunks are kept for `result()`; `keep`: keep them while streaming too (the page plays each
    chunk, then saves the whole file).
    """

    _END = object()

    def __init__(
        self,
        pipeline: Pipeline,
        request: SynthesisRequest,
        limit_s: float | None,
        metrics: Metrics | None = None,
        *,
        whole: bool = False,
        keep: bool = False,
    ):
        self.cancel_token = CancelToken(limit_s)
        self.first_audio_s: float | None = None  # from the start to the first chunk handed out
        self.total_s: float | None = None  # from the start to the end of the synthesis
        self.audio_s = 0.0
        self.chunks: list[AudioChunk] = []  # the chunks handed out, when kept
        self.stages: dict[str, float] = {}  # seconds by stage: the pipeline's, summed over the chunks, and the transport's
        self._closed = False
        self._pipeline, self._metrics, self._whole, self._keep = pipeline, metrics, whole, keep or whole
        self._error: BaseException | None = None  # what the synthesis raised, raised again to every later read
        self._started = time.perf_counter()
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[object] = asyncio.Queue()
        self._room = threading.Semaphore(MAX_BUFFERED_CHUNKS)
        work = request.whole() if whole else request
        self._thread = threading.Thread(target=self._run, args=(work,), name="speech-session", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- the synthesis thread
    def _run(self, request: SynthesisRequest) -> None:
        """Hand out each chunk; the end goes out with the last segment's last piece, so that the
        pipeline's clean-up after it (a device slot to find the end, the memory trim) is not waited for."""
        ended = False
        try:
            for chunk in self._pipeline.synthesize_stream(request, self.cancel_token):
                while not self._room.acquire(timeout=0.5):
                    self.cancel_token.check()
                self._deliver(chunk)
                if chunk.final and chunk.index == chunk.total - 1:
                    self._deliver(self._END)
                    ended = True
            if not ended:
                self._deliver(self._END)
        except Exception as error:  # handed to the reader, which decides what the client sees
            if ended:
                _LOGGER.debug("Speech session clean-up after its last chunk: %s", error)
            else:
                self._deliver(error)

    def _deliver(self, item: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the event loop has closed: nobody is reading
            self.cancel_token.cancel()

    # ----------------------------------------------------------------- the reader's side
    async def next_chunk(self) -> AudioChunk | None:
        """The next chunk, None after the last one; raises what the synthesis raised."""
        if self.done:
            return None
        if self._error is not None:
            raise self._error
        item = await self._items.get()
        if item is self._END:
            self._finished()
            return None
        if isinstance(item, BaseException):
            self._error = item
            raise item
        self._room.release()
        chunk: AudioChunk = item
        if self.first_audio_s is None:
            self.first_audio_s = time.perf_counter() - self._started
        self.audio_s += played_seconds(chunk)
        for stage, seconds in chunk.timings.items():
            self.stages[stage] = self.stages.get(stage, 0.0) + seconds
        if self._keep:
            self.chunks.append(chunk)
        return chunk

    def __aiter__(self) -> SpeechSession:
        return self

    async def __anext__(self) -> AudioChunk:
        chunk = await self.next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def result(self) -> SynthesisResult:
        """The whole synthesis: reads the chunks not read yet and joins every chunk (`whole` or `keep`)."""
        async for _ in self:
            pass
        return result_of(self.chunks, self.total_s, self._pipeline.engine.name)

    def cancel(self) -> None:
        """Stop the synthesis (its client went away, or the transport is done with it)."""
        self.cancel_token.cancel()

    def close(self) -> None:
        """The transport is done: stop the synthesis if it still runs; log the timing record once."""
        self.cancel()
        if not self._closed:
            self._closed = True
            if _LOGGER.isEnabledFor(logging.DEBUG):
                _LOGGER.debug("Speech session stages: %s", self.server_timing())

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the time spent in the block to `stage` (a transport's own work: encoding)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages[stage] = self.stages.get(stage, 0.0) + time.perf_counter() - start

    def server_timing(self) -> str:
        """The timing record so far as a Server-Timing header value (milliseconds), `session` the time since the start."""
        stages = {**self.stages, "session": time.perf_counter() - self._started}
        return ", ".join(f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in stages.items())

    @property
    def done(self) -> bool:
        """Every chunk has been read."""
        return self.total_s is not None

    def _finished(self) -> None:
        """The last chunk was read: the session's figures, recorded once (a whole file has no early audio)."""
        self.total_s = time.perf_counter() - self._started
        _LOGGER.debug("Speech session done: %.2f s of audio in %.2f s", self.audio_s, self.total_s)
        if self._metrics is not None:
            self._metrics.observe_synthesis(self.total_s, self.audio_s, None if self._whole else self.first_audio_s)
