"""The HTTP warm-up: real requests through the app's own stack before it says ready.

Once the models are warm, the first request still pays for lazy work in the layers above them
(route compilation, the encoders of each output format, the streaming path). The app encodes a
moment of audio in every format, whole and streamed, then sends itself a whole-file, a streamed
and an SSE request, marked with the warm-up token, so /ready says 200 only when a client's first
request costs what the hundredth does. Each request costs a synthesis, so there are few of them.
"""

from __future__ import annotations

import logging
import time

import httpx
import numpy as np

from glmtts.encoders import FORMATS, StreamEncoder, encode_audio
from glmtts.http.security import WARMUP_HEADER

_LOGGER = logging.getLogger(__name__)

WARMUP_TIMEOUT_S = 120.0
# The models are warm already: a few words in both languages take every layer's path at little cost.
WARMUP_TEXT = "好的, OK."
WARMUP_REQUESTS = (
    {"response_format": "wav", "stream": False},
    {"response_format": "mp3"},  # streamed, as a plain request is
    {"response_format": "mp3", "stream_format": "sse"},
)
_TONE_RATE = 24000


def warm_encoders() -> None:
    """Encode a tenth of a second of tone in every format, as a whole file and as a stream."""
    tone = (0.1 * np.sin(np.arange(_TONE_RATE // 10, dtype=np.float32) * 0.1)).astype(np.float32)
    for fmt in FORMATS:
        encode_audio(tone, _TONE_RATE, fmt)
        stream = StreamEncoder(fmt, _TONE_RATE)
        stream.encode(tone)
        stream.finish()


def warm_routes(base_url: str, token: str) -> float:
    """Warm the encoders, then speak through the route whole, streamed and as SSE; returns the seconds it took."""
    start = time.perf_counter()
    warm_encoders()
    with httpx.Client(base_url=base_url, headers={WARMUP_HEADER: token}, timeout=WARMUP_TIMEOUT_S) as client:
        for extra in WARMUP_REQUESTS:
            response = client.post("/v1/audio/speech", json={"input": WARMUP_TEXT, **extra})
            response.raise_for_status()
        client.get("/v1/voices").raise_for_status()
    seconds = time.perf_counter() - start
    _LOGGER.info("HTTP warm-up: every encoder, then %d requests in %.2f s", len(WARMUP_REQUESTS) + 1, seconds)
    return seconds
