"""The speech LM's decode interface: what turns LLM prompts into speech tokens.

Two implementations, one chosen when the engine loads (`decode`): `SpeechLM` (llm.py), the reference
path (transformers' Llama, host-side sampling: upstream's computation and the parity oracle), and
`FastDecoder` (fast_decode.py), the static-KV-cache path with on-device sampling and a captured step.
The engine, the decode batcher and the benchmarks use only what this protocol names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from glmtts.engines.glm.llm import GenerationRequest


class SpeechDecoder(Protocol):
    """Decodes one prompt or several together into speech tokens (ids relative to `<|audio_0|>`)."""

    @property
    def kv_cache_bytes(self) -> int:
        """Bytes of KV cache held between requests (0 where each decode allocates its own)."""
        ...

    def warmup(self) -> dict[str, float]:
        """Prepare every shape a request can meet, so that none pays for it; seconds by step, for the
        engine's load timings. A failed step capture raises `fast_decode.CaptureError`."""
        ...

    def describe(self) -> dict[str, object]:
        """Facts for the status endpoint beyond the path's name (empty where there are none)."""
        ...

    def stream(self, request: GenerationRequest) -> Iterator[list[int]]:
        """One request's tokens in chunks, as they are decoded."""
        ...

    def stream_batch(
        self, requests: Sequence[GenerationRequest], stopped: Callable[[int], bool] | None = None
    ) -> Iterator[list[list[int]]]:
        """Several requests decoded together: each row's new tokens (or none) per look at the device.
        `stopped(row)` True ends a row early (its caller went away)."""
        ...

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[list[int]]:
        """`stream_batch` joined: every row's tokens."""
        ...
