"""Benchmark the app as users meet it: start-up to ready, first vs warm requests, RTF, memory.

    python bench/bench_app.py [--ckpt DIR] [--device cpu] [--warm 7]

Starts `app.py` as a process on a free loopback port and talks to it over HTTP only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import httpx
from app_process import running_app

SENTENCE = "Warm start means the first request is as fast as the hundredth."
PARAGRAPHS = {
    "English": (
        "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
        "It is easy to tell the depth of a well. These days a chicken leg is a rare dish. "
        "Rice is often served in round bowls. The juice of lemons makes fine punch."
    ),
    "Chinese": (
        "今天的天气非常好，阳光明媚，微风不燥。我们决定去公园散步，顺便看看湖边新开的花。"
        "下午三点，我们在咖啡馆坐了一会儿，聊了聊最近读的书。晚上回家的路上，街灯一盏一盏地亮了起来。"
    ),
    "Mixed": (
        "我们今天用 Python 写了一个 demo，效果非常好。Next week we will test it with real users. "
        "如果一切顺利，version two 会在十二月发布。The team is excited about the results."
    ),
}


def speak(url: str, text: str) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    response = httpx.post(f"{url}/v1/audio/speech", json={"input": text, "response_format": "wav", "stream": False}, timeout=600)
    response.raise_for_status()
    return time.perf_counter() - start, response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warm", type=int, default=7, help="warm repetitions of the sentence")
    args = parser.parse_args()

    with running_app(args.ckpt, args.device) as (_, url, ready_s):
        status = httpx.get(f"{url}/v1/status").json()

        first_s, _ = speak(url, SENTENCE)
        warm = [speak(url, SENTENCE)[0] for _ in range(args.warm)]
        warm_median = statistics.median(warm)

        print(f"engine: {status['engine']} on {status['device']} ({status['engine_reason']})")
        print(f"cores: {os.cpu_count()}")
        print(f"{'process start -> ready':<34}{ready_s:8.2f} s")
        for name, seconds in status["timings"].items():
            print(f"  {name:<32}{seconds:8.2f} s")
        print(f"{'first request':<34}{first_s:8.3f} s")
        print(f"{'warm median (n=' + str(args.warm) + ')':<34}{warm_median:8.3f} s")
        print(f"{'first / warm median':<34}{first_s / warm_median:8.2f}")
        print("RTF (server-side synthesis time / audio duration):")
        for name, text in PARAGRAPHS.items():
            seconds, response = speak(url, text)
            audio_s = (len(response.content) - 44) / 2 / int(response.headers["X-Sample-Rate"])
            print(f"  {name:<14}{float(response.headers['X-RTF']):6.3f}   ({audio_s:5.1f} s of audio, {seconds:5.2f} s wall)")
        memory = httpx.get(f"{url}/v1/status").json()["memory"]
        for name, mib in memory.items():
            print(f"{'memory ' + name:<34}{mib:8.1f} MiB")


if __name__ == "__main__":
    main()
