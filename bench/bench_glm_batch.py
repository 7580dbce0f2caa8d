"""Throughput of K concurrent GLM-TTS syntheses: LLM decodes batched (max_batch=K) against one at a time.

    .venv/bin/python bench/bench_glm_batch.py [--concurrency 4] [--length 100] [--size tiny] [--device cpu] [--decode fast|reference]

K threads each synthesize one segment with a forced LLM length (`--length` speech tokens), through
a DeviceScheduler of the engine's capacity as the pipeline does: with max_batch=1 they take turns,
with max_batch=K they hold slots together and their LLM calls meet in the decode batcher. Both
engines are loaded in this one process from the same checkpoint (a random one unless `--ckpt`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from glmtts.engines.glm.engine import GLMTTSEngine

_ROOT = Path(__file__).resolve().parents[1]
PROMPT_TRANSCRIPT = "The birch canoe slid on the smooth planks."
TARGET_TEXT = "Glue the sheet to the dark blue background."
SAMPLE_RATE = 24000


def run_mode(
    ckpt: Path, device: str, max_batch: int, concurrency: int, length: int, rounds: int, decode: str | None = None
) -> dict[str, float]:
    """Load an engine with `max_batch`, then time `rounds` rounds of `concurrency` simultaneous syntheses."""
    from bench_glm import prompt_audio

    from glmtts.engines.glm.engine import GLMTTSEngine
    from glmtts.scheduler import DeviceScheduler
    from glmtts.types import Segment, SynthesisOptions, TextRun

    engine = GLMTTSEngine(ckpt, "fp32", max_batch, decode=decode, stream=False)  # one piece per request
    engine.load(device)
    scheduler = DeviceScheduler(max_waiting=concurrency, capacity=engine.max_batch)
    voice = engine.prepare_voice(prompt_audio(SAMPLE_RATE), SAMPLE_RATE, PROMPT_TRANSCRIPT, "bench")
    segment = Segment(text=TARGET_TEXT, runs=(TextRun("en", TARGET_TEXT),), glm_text=TARGET_TEXT)
    engine.warmup(voice, {"en": [segment]})  # the fast path captures its steps here, as at start-up
    decodes = _count_decodes(engine)

    def one_round() -> tuple[float, list[float], list[float]]:
        """Wall time of the round, each request's latency and each request's LLM seconds."""
        latencies = [0.0] * concurrency
        llm_seconds = [0.0] * concurrency
        barrier = threading.Barrier(concurrency + 1)

        def request(index: int) -> None:
            options = SynthesisOptions(seed=index, sample_rate=SAMPLE_RATE, forced_tokens_per_segment=length)
            barrier.wait()
            start = time.perf_counter()
            with scheduler.slot():
                (piece,) = engine.synthesize_segments([segment], voice, options)
            latencies[index] = time.perf_counter() - start
            llm_seconds[index] = piece.timings["llm"]

        threads = [threading.Thread(target=request, args=(index,)) for index in range(concurrency)]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start, latencies, llm_seconds

    one_round()  # lazy initialisation
    decodes.clear()
    walls, latencies, llm_seconds = [], [], []
    for _ in range(rounds):
        wall, latency, llm = one_round()
        walls.append(wall)
        latencies += latency
        llm_seconds += llm
    wall = statistics.median(walls)
    audio_s = concurrency * length / 25  # 25 speech tokens per second
    return {
        "max_batch": engine.max_batch,
        "wall_s": wall,
        "audio_per_wall": audio_s / wall,
        "latency_s": statistics.mean(latencies),
        "llm_s": statistics.mean(llm_seconds),
        "decodes_per_round": len(decodes) / rounds,
        "rows_per_decode": statistics.mean(decodes),
    }


def _count_decodes(engine: GLMTTSEngine) -> list[int]:
    """Record the rows of each decode where the engine enters its decoder: the batcher's batches
    (`stream_batch`), or one request at a time (`stream`) when there is no batcher."""
    rows: list[int] = []
    decoder = engine.decoder
    if engine.batcher is not None:
        stream_batch = decoder.stream_batch

        def counted_stream_batch(requests, stopped=None):
            rows.append(len(requests))
            return stream_batch(requests, stopped)

        decoder.stream_batch = counted_stream_batch
    else:
        stream = decoder.stream

        def counted_stream(request):
            rows.append(1)
            return stream(request)

        decoder.stream = counted_stream
    return rows


def main() -> None:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--ckpt", type=Path, help="an existing checkpoint root instead of a random one")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--concurrency", type=int, default=4, help="K: simultaneous requests, and max_batch of the batched run")
    parser.add_argument("--length", type=int, default=100, help="speech tokens per request (25 per second)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--decode", choices=("fast", "reference"), help="the engine's decode path (default: its own)")
    args = parser.parse_args()
    sys.path[:0] = [str(_ROOT), str(_ROOT / "bench")]  # run as a plain script from anywhere
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="glm-bench-batch-") as scratch:
        ckpt = args.ckpt
        if ckpt is None:
            from glmtts.engines.glm.random_checkpoint import write_random_checkpoint

            ckpt = write_random_checkpoint(Path(scratch) / "ckpt", args.size)
        print(
            f"CPU cores: {len(os.sched_getaffinity(0))}, torch threads {torch.get_num_threads()}, "
            f"load average {os.getloadavg()[0]:.1f}; {args.size} checkpoint on {args.device}, fp32, {args.decode or 'default'} decode; "
            f"K={args.concurrency} requests of {args.length} speech tokens, median of {args.rounds} rounds"
        )
        rows = [
            run_mode(ckpt, args.device, max_batch, args.concurrency, args.length, args.rounds, args.decode)
            for max_batch in (1, args.concurrency)
        ]
    header = ("max_batch", "wall s", "audio s / wall s", "mean latency s", "mean LLM s", "decodes / round", "rows / decode")
    print(" | ".join(header))
    for row in rows:
        print(
            f"{row['max_batch']:>9} | {row['wall_s']:6.2f} | {row['audio_per_wall']:16.2f} | {row['latency_s']:14.2f} | "
            f"{row['llm_s']:10.2f} | {row['decodes_per_round']:15.1f} | {row['rows_per_decode']:13.1f}"
        )
    serial, batched = rows
    print(f"throughput ratio (max_batch={args.concurrency} / max_batch=1): {serial['wall_s'] / batched['wall_s']:.2f}x")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
