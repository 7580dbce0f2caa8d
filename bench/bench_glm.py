"""Load time, memory, LLM decode speed and real-time factor of the GLM-TTS engine, per dtype.

    .venv/bin/python bench/bench_glm.py [--size tiny|full] [--ckpt DIR] [--device cpu] [--dtypes fp32,bf16] [--decode fast|reference]

Without `--ckpt` a random checkpoint of `--size` is written to a temporary folder (the full one is
about 9 GB). Each dtype runs in its own process so that its memory figures are its own. The LLM
length is fixed (`forced_tokens_per_segment`), so the figures do not depend on the random weights.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
PROMPT_SECONDS = 3.0
PROMPT_TRANSCRIPT = "The birch canoe slid on the smooth planks."
TARGET_TEXT = "Glue the sheet to the dark blue background."
TOKENS_PER_SECOND = 25


def prompt_audio(rate: int) -> np.ndarray:
    """A voiced-sounding test prompt: a wobbling 150 Hz tone with a little noise."""
    t = np.arange(int(PROMPT_SECONDS * rate)) / rate
    audio = 0.3 * np.sin(2 * np.pi * (150 + 40 * np.sin(2 * np.pi * 2 * t)) * t)
    return (audio + 0.01 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)


def run_one(
    ckpt: Path, device: str, dtype: str, lengths: list[int], decode_tokens: int, repeats: int, decode: str | None
) -> dict:
    """All figures for one dtype, in this process."""
    import psutil
    import torch

    from glmtts.engines.glm.engine import GLMTTSEngine
    from glmtts.engines.glm.sampling import SamplingConfig, sample_token
    from glmtts.types import Segment, SynthesisOptions, TextRun

    engine = GLMTTSEngine(ckpt, dtype, decode=decode, stream=False)  # whole segments: one piece each
    start = time.perf_counter()
    engine.load(device)
    figures: dict[str, object] = {
        "dtype": dtype,
        "device": device,
        "decode": engine.decode,
        "load_s": time.perf_counter() - start,
    }
    figures["load_stages_s"] = {name: round(s, 2) for name, s in engine.load_seconds.items()}
    figures["rss_after_load_mib"] = psutil.Process().memory_info().rss / 2**20
    figures.update({name: value for name, value in engine.memory_report().items() if name.startswith("vram")})

    rate = 24000
    start = time.perf_counter()
    voice = engine.prepare_voice(prompt_audio(rate), rate, PROMPT_TRANSCRIPT, "bench")
    figures["prepare_voice_s"] = time.perf_counter() - start

    # LLM alone: prefill of the real prompt layout, then decoding steps with RAS sampling.
    ids = engine.tokenizer.speech_ids
    llm_input = (
        voice.features.prompt_text_ids
        + engine.tokenizer.encode(TARGET_TEXT)
        + [ids.begin_of_audio]
        + [ids.audio_start + t for t in voice.features.speech_tokens]
    )
    generator = torch.Generator(device=engine.device).manual_seed(0)
    start = time.perf_counter()
    engine.llm.generate(llm_input, 0, 0, SamplingConfig(), generator, forced_length=2)
    figures["first_llm_call_s"] = time.perf_counter() - start  # pages in memory-mapped weights
    start = time.perf_counter()
    decoding, logits = engine.llm.start(llm_input, decode_tokens)
    figures["prefill_s"] = time.perf_counter() - start
    tokens: list[int] = []
    start = time.perf_counter()
    for _ in range(decode_tokens):
        tokens.append(sample_token(logits.log_softmax(-1), tokens, ids.end_of_speech, False, SamplingConfig(), generator))
        logits = decoding.feed([tokens[-1]])
    figures.update(prompt_tokens=len(llm_input), decode_tokens_per_s=decode_tokens / (time.perf_counter() - start))

    segment = Segment(text=TARGET_TEXT, runs=(TextRun("en", TARGET_TEXT),), glm_text=TARGET_TEXT)
    rtf = {}
    for sample_rate in engine.sample_rates:
        for length in lengths:
            options = SynthesisOptions(sample_rate=sample_rate, forced_tokens_per_segment=length)
            list(engine.synthesize_segments([segment], voice, options))  # first call: lazy initialisation
            runs = []
            for _ in range(repeats):
                (piece,) = engine.synthesize_segments([segment], voice, options)
                runs.append(piece)
            seconds = len(runs[0].audio) / sample_rate
            stages = {name: statistics.median(p.timings[name] for p in runs) for name in runs[0].timings}
            total = sum(stages.values())
            rtf[f"{sample_rate}Hz/{length}tok"] = {
                "audio_s": round(seconds, 2),
                "rtf": round(total / seconds, 3),
                **{f"{name}_s": round(value, 3) for name, value in stages.items()},
            }
    figures["rtf"] = rtf
    figures.update({name: value for name, value in engine.memory_report().items() if name.startswith("vram")})
    figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def report(figures: dict) -> None:
    print(
        f"\n== {figures['dtype']} on {figures['device']}, {figures['decode']} decode: load {figures['load_s']:.2f} s "
        f"{figures['load_stages_s']}, RSS after load {figures['rss_after_load_mib']:.0f} MiB, "
        f"peak RSS {figures['peak_rss_mib']:.0f} MiB"
    )
    if "vram_allocated" in figures:
        print(f"   VRAM allocated {figures['vram_allocated']:.0f} MiB, reserved {figures['vram_reserved']:.0f} MiB")
    print(
        f"   prepare_voice {figures['prepare_voice_s']:.2f} s; first LLM call {figures['first_llm_call_s']:.2f} s; "
        f"LLM prefill of {figures['prompt_tokens']} tokens "
        f"{figures['prefill_s']:.3f} s, decode {figures['decode_tokens_per_s']:.1f} tokens/s "
        f"(real time needs {TOKENS_PER_SECOND}; the reference path's decode loop)"
    )
    for name, row in figures["rtf"].items():
        stages = ", ".join(f"{key[:-2]} {value:.2f} s" for key, value in row.items() if key.endswith("_s") and key != "audio_s")
        print(f"   {name}: {row['audio_s']} s of audio, RTF {row['rtf']} ({stages})")


def main() -> None:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--ckpt", type=Path, help="an existing checkpoint root instead of a random one")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--lengths", default="50,250", help="speech tokens per segment (25 per second)")
    parser.add_argument("--decode-tokens", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--decode", choices=("fast", "reference"), help="the engine's decode path (default: its own)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(_ROOT))  # run as a plain script from anywhere
    lengths = [int(n) for n in args.lengths.split(",")]

    if args.child:  # one dtype: print its figures as JSON for the parent
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        figures = run_one(args.ckpt, args.device, args.dtypes, lengths, args.decode_tokens, args.repeats, args.decode)
        figures["torch_threads"] = torch.get_num_threads()
        print("FIGURES " + json.dumps(figures))
        return

    with tempfile.TemporaryDirectory(prefix="glm-bench-") as scratch:
        ckpt = args.ckpt
        if ckpt is None:
            from glmtts.engines.glm.random_checkpoint import write_random_checkpoint

            start = time.perf_counter()
            ckpt = write_random_checkpoint(Path(scratch) / "ckpt", args.size)
            print(f"random {args.size} checkpoint written in {time.perf_counter() - start:.1f} s")
        print(f"CPU cores: {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}; device {args.device}")
        for dtype in args.dtypes.split(","):
            command = [sys.executable, __file__, "--child", "--ckpt", str(ckpt), "--device", args.device]
            command += ["--dtypes", dtype, "--lengths", args.lengths, "--decode-tokens", str(args.decode_tokens)]
            command += ["--repeats", str(args.repeats)] + (["--threads", str(args.threads)] if args.threads else [])
            command += ["--decode", args.decode] if args.decode else []
            child = subprocess.run(command, capture_output=True, text=True, check=False)
            lines = [line for line in child.stdout.splitlines() if line.startswith("FIGURES ")]
            if child.returncode or not lines:
                print(f"\n== {dtype}: failed (exit {child.returncode})\n{child.stderr[-3000:]}")
                continue
            report(json.loads(lines[-1][len("FIGURES ") :]))
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
