"""Measure the embedded engine: load() and prepare_voice() time, and memory and speed of long segments.

    MALLOC_ARENA_MAX=2 python bench/bench_embedded_memory.py [--cache-dir DIR] [--words 400] [--repeat 2]
        [--cases en_400_chars,en_400_words,zh_long] [--torch-threads 1] [--json OUT]

Loads `EmbeddedEngine` on the CPU twice (the first load of the process fills a cold cache or reads a
warm one; pass the same --cache-dir again to time a fresh process on a warm cache),
fits one built-in voice, warms up, then synthesizes each case (one segment each) and reports, per
case, the resident memory before, the peak during and the memory after, and the synthesis time.
The peak is the kernel's high-water mark (VmHWM, reset through /proc/self/clear_refs) where the
kernel allows that, else the highest of samples taken every few milliseconds.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import psutil
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from typing import Self

from glmtts.types import Segment, SynthesisOptions, TextRun

PROMPT = ROOT / "examples" / "prompt" / "libri_1688.flac"
EN_SENTENCE = (
    "the committee met on a quiet Tuesday morning to review the results of the long study, and everyone "
    "in the room agreed that the work should continue for another year"
)
# 今天天气很好，我们一起去公园散步吧，你好朋友，我们明天早上一起去图书馆看书吧， as GLM-TTS phonemes
# (written out so that the benchmark does not depend on the text frontend).
ZH_SENTENCE = (
    "J IN1 T IAN1 T IAN1 Q I4 H EN3 H AO3 , UO3 M EN5 I4 Q I3 Q V4 G ONG1 VAN2 S AN4 B U4 B A5 , "
    "N I3 H AO3 P ENG2 IOU3 , UO3 M EN5 M ING2 T IAN1 Z AO3 SH ANG4 I4 Q I3 Q V4 T U2 SH U1 G UAN3 K AN4 SH U1 B A5 ,"
).split()
ZH_REPEATS = 8  # about 400 syllables in one segment
SAMPLE_S = 0.002
MIB = 2**20


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / MIB


class PeakMeter:
    """The peak RSS over a `with` block: VmHWM where it can be reset, else sampled."""

    def __init__(self) -> None:
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm = False

    def __enter__(self) -> Self:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._hwm = True
        except OSError:
            self._hwm = False
        self.peak_mib = rss_mib()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.peak_mib = max(self.peak_mib, rss_mib())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self._hwm:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_mib = max(self.peak_mib, int(line.split()[1]) / 1024)


def synthesize(engine, segments, voice, options) -> float:
    """Run the engine over `segments`; return the seconds of audio made."""
    seconds = 0.0
    for piece in engine.synthesize_segments(segments, voice, options):
        seconds += len(piece.audio) / piece.sample_rate
    return seconds


def english_segment(text: str) -> list[Segment]:
    return [Segment(text, (TextRun("en", text),), text)]


def mandarin_segment(phonemes: list[str]) -> list[Segment]:
    text = " ".join(phonemes)
    return [Segment(text, (TextRun("zh", text, tuple(phonemes)),), text)]


def build_cases(words: int) -> dict[str, list[Segment]]:
    en_words = EN_SENTENCE.split()
    long_en = " ".join(en_words[i % len(en_words)] for i in range(words)) + "."
    cap_en = " ".join(en_words[i % len(en_words)] for i in range(70)) + "."  # about 400 characters
    return {
        "en_400_chars": english_segment(cap_en),
        f"en_{words}_words": english_segment(long_en),
        "zh_long": mandarin_segment(ZH_SENTENCE * ZH_REPEATS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="engine cache (default: a fresh temporary folder)")
    parser.add_argument("--words", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=2, help="runs per case")
    parser.add_argument("--cases", default="", help="comma-separated case names to run (default: all)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default); 1 steadies the speaker encoder on a busy machine",
    )
    args = parser.parse_args()
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="bench-embedded-"))
    report: dict[str, object] = {"cache_dir": str(cache_dir)}

    import torch

    from glmtts.engines.embedded import EmbeddedEngine

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    loads, load_cpu = [], []
    for _ in range(2):  # the first in this process (the cache may be cold), then a second one
        engine = EmbeddedEngine(cache_dir)
        start, cpu = time.perf_counter(), time.process_time()
        engine.load("cpu")
        loads.append(time.perf_counter() - start)
        load_cpu.append(time.process_time() - cpu)
    report["load_s"] = {"first": round(loads[0], 2), "second": round(loads[1], 2)}
    report["load_cpu_s"] = {"first": round(load_cpu[0], 2), "second": round(load_cpu[1], 2)}

    audio, rate = sf.read(PROMPT, dtype="float32")
    times, cpu_times = [], []
    for _ in range(2):
        start, cpu = time.perf_counter(), time.process_time()
        voice = engine.prepare_voice(audio, rate, PROMPT.with_suffix(".txt").read_text().strip(), "bench")
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu)
    report["prepare_voice_s"] = [round(t, 2) for t in times]
    report["prepare_voice_cpu_s"] = [round(t, 2) for t in cpu_times]

    engine.warmup(
        voice,
        {"en": english_segment("The quick brown fox jumps over the lazy dog."), "zh": mandarin_segment(ZH_SENTENCE)},
    )
    gc.collect()
    warm = rss_mib()
    report["warm_rss_mib"] = round(warm, 1)
    options = SynthesisOptions(seed=42)
    cases = {}
    wanted = {name for name in args.cases.split(",") if name}
    for name, segments in build_cases(args.words).items():
        if wanted and name not in wanted:
            continue
        for attempt in range(args.repeat):
            gc.collect()
            before = rss_mib()
            with PeakMeter() as meter:
                start = time.perf_counter()
                audio_s = synthesize(engine, segments, voice, options)
                elapsed = time.perf_counter() - start
            gc.collect()
            after = rss_mib()
            row = {
                "audio_s": round(audio_s, 1),
                "synth_s": round(elapsed, 2),
                "rtf": round(elapsed / audio_s, 3),
                "rss_before": round(before, 1),
                "rss_peak": round(meter.peak_mib, 1),
                "rss_after": round(after, 1),
                "peak_growth": round(meter.peak_mib - before, 1),
                "after_minus_warm": round(after - warm, 1),
            }
            cases[f"{name}#{attempt + 1}"] = row
            print(name, row, flush=True)
    report["cases"] = cases
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
