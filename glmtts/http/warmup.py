"""The HTTP warm-up: real requests through the app's own stack before it says ready.

Once the models are warm, the first request still pays for lazy work in the layers above them
(route compilation, the encoders of each output format, the streaming path). The app sends these
requests to itself, marked with the warm-up token, so /ready says 200 only when a client's
first request costs what the hundredth does.
"""

from __future__ import annotations

import logging
import time

import httpx

from glmtts.encoders import FORMATS
from glmtts.http.security import WARMUP_HEADER

_LOGGER = logging.getLogger(__name__)

WARMUP_TIMEOUT_S = 120.0
# The models are warm already: a few words in both languages take every layer's path at little cost.
WARMUP_TEXT = "好的, OK."


def warm_routes(base_url: str, token: str) -> float:
    """Speak through every output format, whole and streamed; returns the seconds it took."""
    start = time.perf_counter()
    requests = [{"response_format": fmt} for fmt in FORMATS]
    requests += [{"response_format": fmt, "stream": True} for fmt in FORMATS]
    requests.append({"response_format": "mp3", "stream_format": "sse"})
    with httpx.Client(base_url=base_url, headers={WARMUP_HEADER: token}, timeout=WARMUP_TIMEOUT_S) as client:
        for extra in requests:
            response = client.post("/v1/audio/speech", json={"input": WARMUP_TEXT, **extra})
            response.raise_for_status()
        client.get("/v1/voices").raise_for_status()
    seconds = time.perf_counter() - start
    _LOGGER.info("HTTP warm-up: %d requests in %.2f s", len(requests) + 1, seconds)
    return seconds
