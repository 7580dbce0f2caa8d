"""First byte / last byte of a plain OpenAI SDK request on a long text: whole file (`"stream": false`) vs the default.

    python bench/bench_first_byte.py [--sentences 14] [--rounds 3]

Starts this app (the embedded engine) and speaks a text of `--sentences` sentences with the
official `openai` SDK as its examples do, `with_streaming_response.create(...)` with no
`stream_format`, reading the bytes as they come; each round sends the whole-file request
(`extra_body={"stream": False}`, the behaviour before streaming became the default) and the default
one, alternately, in one run. Prints the medians of the first byte, the last byte and their ratio:
with a whole file the first byte waits for the whole synthesis (ratio near 1); streamed, it comes
with the first segment.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from app_process import running_app
from openai import OpenAI

TOPICS = ["rivers", "lanterns", "winter roads", "paper boats", "copper kettles", "night trains", "tall grass",
          "salt marshes", "clock towers", "open windows", "quiet harbours", "autumn fields", "glass bottles",
          "mountain huts", "red bicycles", "old maps"]  # fmt: skip


def long_text(sentences: int) -> str:
    return " ".join(
        f"Sentence {n + 1} tells a short story about {TOPICS[n % len(TOPICS)]} and what they hold." for n in range(sentences)
    )


def first_and_last_byte(client: OpenAI, text: str, whole: bool) -> tuple[float, float, int]:
    """Seconds to the first and to the last byte, and the number of reads that brought bytes."""
    extra = {"stream": False} if whole else {}
    start = time.perf_counter()
    first, reads = None, 0
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text, extra_body=extra
    ) as response:
        for data in response.iter_bytes():
            if data:
                first = first or time.perf_counter() - start
                reads += 1
    return first, time.perf_counter() - start, reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=14)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    text = long_text(args.sentences)
    results: dict[str, list[tuple[float, float, int]]] = {
        "before: stream false (whole file)": [],
        "after: default (streamed)": [],
    }
    with running_app("", args.device) as (_, url, _):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
        first_and_last_byte(client, text, whole=False)  # the first long text of the process
        for _ in range(args.rounds):
            for name, whole in zip(results, (True, False), strict=True):
                results[name].append(first_and_last_byte(client, text, whole))
    print(f"openai SDK, with_streaming_response.create, no stream_format, {args.sentences} sentences, median of {args.rounds}:")
    for name, runs in results.items():
        first = statistics.median(run[0] for run in runs)
        last = statistics.median(run[1] for run in runs)
        reads = statistics.median(run[2] for run in runs)
        print(
            f"  {name:<36} first byte {first:6.2f} s   last byte {last:6.2f} s   first / last {first / last:.3f}   reads {reads:.0f}"
        )


if __name__ == "__main__":
    sys.exit(main())
