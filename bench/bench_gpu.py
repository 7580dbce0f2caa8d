"""The GLM-TTS engine's figures on one device, fast and reference decode paths side by side, per dtype.

    python bench/bench_gpu.py                       # CUDA: full-size random checkpoint, fp32 + bf16
    python bench/bench_gpu.py --device cpu          # CPU: the tiny random checkpoint, the same table

One command on a bare GPU machine with no network: it imports only torch, transformers, safetensors,
tiktoken, onnxruntime, numpy (and PyYAML, which transformers requires) besides this repository, and
writes the random checkpoint it needs itself (`--size full` is the official shapes, about 9 GB; kept
in `--ckpt-cache` for the next run). Each (dtype, decode path) runs in its own process, so its memory
figures are its own. The LLM length is forced (`--tokens` speech tokens, 25 a second of audio), so the
figures do not depend on what random weights would say.

Per configuration: load -> ready (load, the prompt's analysis, warm-up with every decode shape
captured), first request / warm median, LLM tokens/s for one stream and the per-step time, RTF, time
to first audio streamed and not, memory resident and peak (VRAM on CUDA, RSS on the CPU), throughput
(seconds of audio per wall second) at each `--concurrency` with `--max-batch` rows decoded together.
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
import threading
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
PROMPT_RATE = 16000
PROMPT_SECONDS = 3.0
PROMPT_TRANSCRIPT = "The birch canoe slid on the smooth planks."
TARGET_TEXT = "Glue the sheet to the dark blue background."
WARMUP_TEXTS = {"en": "Glue the sheet to the dark blue background.", "zh": "今天天气很好，我们一起去公园散步吧。"}
TOKENS_PER_SECOND = 25
OUTPUT_RATE = 24000
_MIB = 2**20


def prompt_audio() -> object:
    """A voiced-sounding prompt at 16 kHz: a wobbling 150 Hz tone with a little noise."""
    import numpy as np

    t = np.arange(int(PROMPT_SECONDS * PROMPT_RATE)) / PROMPT_RATE
    audio = 0.3 * np.sin(2 * np.pi * (150 + 40 * np.sin(2 * np.pi * 2 * t)) * t)
    return (audio + 0.01 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)


def _segments(text: str) -> list:
    from glmtts.types import Segment, TextRun

    return [Segment(text=text, runs=(TextRun("en", text),), glm_text=text)]


def _memory(device: object) -> dict[str, float]:
    import torch

    if device.type == "cuda":
        return {
            "resident_mib": torch.cuda.memory_allocated(device) / _MIB,
            "peak_mib": torch.cuda.max_memory_allocated(device) / _MIB,
        }
    with open("/proc/self/statm") as handle:  # resident pages: no psutil on a bare machine
        resident = int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return {"resident_mib": resident / _MIB, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_config(ckpt: Path, device_name: str, dtype: str, decode: str, args: argparse.Namespace) -> dict:
    """Every figure of one (dtype, decode path), in this process."""
    import torch

    from glmtts.engines.glm.engine import GLMTTSEngine
    from glmtts.engines.glm.llm import GenerationRequest
    from glmtts.engines.glm.sampling import SamplingConfig
    from glmtts.types import SynthesisOptions

    figures: dict[str, object] = {"dtype": dtype, "decode": decode}
    max_batch = max(args.concurrency)
    engine = GLMTTSEngine(ckpt, dtype, max_batch=max_batch, decode=decode, capture=args.capture)
    ready_start = time.perf_counter()
    engine.load(device_name)
    device = engine.device
    figures["load_s"] = time.perf_counter() - ready_start
    voice = engine.prepare_voice(prompt_audio(), PROMPT_RATE, PROMPT_TRANSCRIPT, "bench")
    engine.warmup(voice, {lang: _segments(text) for lang, text in WARMUP_TEXTS.items()})
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    figures["ready_s"] = time.perf_counter() - ready_start
    figures["capture"] = engine.describe().get("decode_capture", "-")
    figures.update({f"ready_{k}": v for k, v in _memory(device).items()})

    segments = _segments(TARGET_TEXT)
    audio_s = args.tokens / TOKENS_PER_SECOND

    def request(stream: bool, seed: int = 1) -> tuple[float, float, dict]:
        """(seconds to the first audio, seconds in all, summed stage timings) of one request."""
        options = SynthesisOptions(seed=seed, sample_rate=OUTPUT_RATE, forced_tokens_per_segment=args.tokens)
        start = time.perf_counter()
        first = None
        stages: dict[str, float] = {}
        for piece in engine._synthesize(segments, voice, options, None, stream):
            if first is None and len(piece.audio):
                first = time.perf_counter() - start
            for name, value in piece.timings.items():
                stages[name] = stages.get(name, 0.0) + value
        return first or 0.0, time.perf_counter() - start, stages

    first_latency = request(False)[1]
    warm = [request(False) for _ in range(args.repeats)]
    warm_total = statistics.median(total for _, total, _ in warm)
    figures["first_request_s"] = first_latency
    figures["warm_request_s"] = warm_total
    figures["first_over_warm"] = first_latency / warm_total
    figures["rtf"] = warm_total / audio_s
    figures["llm_s"] = statistics.median(stages["llm"] for _, _, stages in warm)
    figures["flow_s"] = statistics.median(stages["flow"] for _, _, stages in warm)
    figures["vocoder_s"] = statistics.median(stages["vocoder"] for _, _, stages in warm)
    figures["first_audio_whole_s"] = statistics.median(first for first, _, _ in warm)
    streamed = [request(True) for _ in range(args.repeats)]
    figures["first_audio_stream_s"] = statistics.median(first for first, _, _ in streamed)
    figures["stream_request_s"] = statistics.median(total for _, total, _ in streamed)

    # The LLM alone, one stream: tokens per second and time per step.
    ids = engine.tokenizer.speech_ids
    prompt = (
        voice.features.prompt_text_ids + engine.tokenizer.encode(TARGET_TEXT) + [ids.begin_of_audio]
        + [ids.audio_start + t for t in voice.features.speech_tokens]
    )  # fmt: skip

    def decode_once(steps: int) -> float:
        generator = torch.Generator(device=device).manual_seed(0)
        llm_request = GenerationRequest(prompt, 0, 0, SamplingConfig(), generator, steps)
        start = time.perf_counter()
        engine.decoder.generate_batch([llm_request])  # the decode path chosen at load
        torch.cuda.synchronize(device) if device.type == "cuda" else None
        return time.perf_counter() - start

    decode_once(8)
    steps = []
    for _ in range(args.repeats):
        short, long = decode_once(args.tokens // 5), decode_once(args.tokens)
        steps.append((long - short) / (args.tokens - args.tokens // 5))  # without the prefill
    per_step = statistics.median(steps)
    figures["llm_step_ms"] = per_step * 1000
    figures["llm_tokens_per_s"] = 1 / per_step
    figures["llm_floor_ms"] = _matmul_floor_ms(engine.llm.model, device)

    # Throughput: K requests at once, their LLM calls decoded together (max_batch rows).
    for concurrency in args.concurrency:

        def one(index: int, walls: list[float]) -> None:
            start = time.perf_counter()
            request(False, seed=index)
            walls[index] = time.perf_counter() - start

        walls = [0.0] * concurrency
        threads = [threading.Thread(target=one, args=(index, walls)) for index in range(concurrency)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        figures[f"throughput_{concurrency}"] = concurrency * audio_s / wall
        figures[f"latency_{concurrency}_s"] = statistics.mean(walls)
    figures.update({f"end_{k}": v for k, v in _memory(device).items()})
    figures["kv_cache_mib"] = engine.memory_report().get("kv_cache", 0.0)
    return figures


def _matmul_floor_ms(model: object, device: object, repeats: int = 200) -> float:
    """Time of one decode step's matrix products alone (every projection and the output head, one
    row): what neither path can go below, so step time minus this is the per-step overhead."""
    import torch
    import torch.nn.functional as F

    weights = [model.lm_head.weight]
    for layer in model.model.layers:
        attention, mlp = layer.self_attn, layer.mlp
        weights += [attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight, attention.o_proj.weight]
        weights += [mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight]
    inputs = {w.shape[1]: torch.randn(1, w.shape[1], device=device, dtype=w.dtype) for w in weights}

    def products() -> None:
        for weight in weights:
            F.linear(inputs[weight.shape[1]], weight)

    with torch.inference_mode():
        products()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            products()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats * 1000


ROWS = (
    ("load -> ready (s)", "ready_s", "{:.1f}"),
    ("  of which load (s)", "load_s", "{:.1f}"),
    ("decode step captured as", "capture", "{}"),
    ("first request / warm median", "first_over_warm", "{:.2f}"),
    ("warm request (s)", "warm_request_s", "{:.2f}"),
    ("RTF (whole request)", "rtf", "{:.3f}"),
    ("  LLM / flow / vocoder (s)", ("llm_s", "flow_s", "vocoder_s"), "{:.2f}"),
    ("LLM tokens/s, one stream", "llm_tokens_per_s", "{:.1f}"),
    ("LLM ms per step", "llm_step_ms", "{:.2f}"),
    ("  of which matrix products (floor, ms)", "llm_floor_ms", "{:.2f}"),
    ("first audio, not streamed (s)", "first_audio_whole_s", "{:.2f}"),
    ("first audio, streamed (s)", "first_audio_stream_s", "{:.2f}"),
    ("streamed request, all (s)", "stream_request_s", "{:.2f}"),
    ("memory resident after warm-up (MiB)", "ready_resident_mib", "{:.0f}"),
    ("memory peak (MiB)", "end_peak_mib", "{:.0f}"),
    ("KV cache (MiB)", "kv_cache_mib", "{:.0f}"),
)


def table(results: list[dict], concurrency: list[int], memory_kind: str) -> str:
    header = "| figure | " + " | ".join(f"{r['dtype']} {r['decode']}" for r in results) + " |"
    lines = [header, "|" + " --- |" * (len(results) + 1)]
    for label, key, fmt in ROWS:
        label = label.replace("memory", memory_kind)
        cells = []
        for r in results:
            if "error" in r:
                cells.append("failed")
            elif isinstance(key, tuple):
                cells.append(" / ".join(fmt.format(r[k]) for k in key))
            else:
                cells.append(fmt.format(r[key]))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for k in concurrency:
        cells = ["failed" if "error" in r else f"{r[f'throughput_{k}']:.2f} ({r[f'latency_{k}_s']:.1f} s)" for r in results]
        lines.append(f"| throughput at {k} concurrent, audio s / s (mean latency) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--size", choices=("tiny", "full"), help="random checkpoint size (default: full on CUDA, tiny on CPU)")
    parser.add_argument("--ckpt", type=Path, help="an existing checkpoint root instead of a random one")
    parser.add_argument("--ckpt-cache", type=Path, default=Path(tempfile.gettempdir()) / "glmtts-bench-ckpt")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--decodes", default="fast,reference")
    parser.add_argument(
        "--capture", choices=("eager", "compile", "graphs"), help="the fast path's step capture (default: the engine's)"
    )
    parser.add_argument("--tokens", type=int, default=250, help="speech tokens per request (25 a second)")
    parser.add_argument("--concurrency", default="1,4,8", help="concurrent requests; the largest is --max-batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch intra-op threads on the CPU")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.concurrency = [int(k) for k in args.concurrency.split(",")]
    sys.path.insert(0, str(_ROOT))  # run as a plain script from anywhere
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.child:  # one configuration: print its figures as JSON for the parent
        dtype, decode = args.child.split("/")
        try:
            figures = run_config(args.ckpt, device, dtype, decode, args)
        except Exception as error:  # the parent reports it in the table
            figures = {"dtype": dtype, "decode": decode, "error": f"{type(error).__name__}: {error}"}
        print("FIGURES " + json.dumps(figures))
        return

    size = args.size or ("full" if device.startswith("cuda") else "tiny")
    ckpt = args.ckpt
    if ckpt is None:
        from glmtts.engines.glm.checkpoint import validate_checkpoint
        from glmtts.engines.glm.errors import CheckpointError
        from glmtts.engines.glm.random_checkpoint import write_random_checkpoint

        ckpt = args.ckpt_cache / size
        try:
            validate_checkpoint(ckpt)
        except CheckpointError:
            start = time.perf_counter()
            write_random_checkpoint(ckpt, size)
            print(f"random {size} checkpoint written to {ckpt} in {time.perf_counter() - start:.0f} s", flush=True)
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        where = f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    else:
        where = f"CPU, {len(os.sched_getaffinity(0))} cores, torch threads {args.threads or torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}"
    print(
        f"{where}; {size} checkpoint; {args.tokens} speech tokens ({args.tokens / TOKENS_PER_SECOND:.0f} s) a request", flush=True
    )
    results = []
    for dtype in args.dtypes.split(","):
        for decode in args.decodes.split(","):
            command = [sys.executable, __file__, "--child", f"{dtype}/{decode}", "--ckpt", str(ckpt), "--device", device]
            command += ["--tokens", str(args.tokens), "--concurrency", ",".join(map(str, args.concurrency))]
            command += ["--repeats", str(args.repeats)] + (["--threads", str(args.threads)] if args.threads else [])
            command += ["--capture", args.capture] if args.capture else []
            start = time.perf_counter()
            child = subprocess.run(command, capture_output=True, text=True, check=False)
            lines = [line for line in child.stdout.splitlines() if line.startswith("FIGURES ")]
            figures = (
                json.loads(lines[-1][len("FIGURES ") :])
                if lines
                else {"dtype": dtype, "decode": decode, "error": child.stderr[-2000:]}
            )
            if "error" in figures:
                print(f"{dtype} {decode} failed: {figures['error']}", flush=True)
            else:
                print(f"{dtype} {decode}: done in {time.perf_counter() - start:.0f} s", flush=True)
            results.append(figures)
    memory_kind = "VRAM" if device.startswith("cuda") else "RSS"
    print()
    print(table(results, args.concurrency, memory_kind))
    by_key = {(r["dtype"], r["decode"]): r for r in results if "error" not in r}
    for dtype in args.dtypes.split(","):
        fast, reference = by_key.get((dtype, "fast")), by_key.get((dtype, "reference"))
        if fast and reference:
            floor = min(fast["llm_floor_ms"], reference["llm_floor_ms"])
            print(
                f"{dtype}: fast path {fast['llm_step_ms']:.2f} ms a step against {reference['llm_step_ms']:.2f} ms "
                f"on the reference path ({reference['llm_step_ms'] / fast['llm_step_ms']:.1f}x); per-step overhead "
                f"beyond the {floor:.2f} ms of matrix products: {fast['llm_step_ms'] - floor:.2f} ms against "
                f"{reference['llm_step_ms'] - floor:.2f} ms ({(reference['llm_step_ms'] - floor) / max(fast['llm_step_ms'] - floor, 1e-6):.1f}x)"
            )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.out:
        args.out.write_text(json.dumps({"where": where, "size": size, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
