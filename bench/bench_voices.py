"""Load time and real-time factor of the two embedded voices, each on a paragraph in its language.

    .venv/bin/python bench/bench_voices.py [--repeats 3] [--device cpu]

The Mandarin paragraph is turned into GLM-TTS phonemes with pypinyin here (initials, finals with
tone, "," / "." pauses), so the figure covers the voice alone, not the text frontend.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]

ENGLISH_PARAGRAPH = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It's easy to tell the depth of a well. These days a chicken leg is a rare dish. "
    "Rice is often served in round bowls, and the juice of lemons makes fine punch."
)
MANDARIN_PARAGRAPH = (
    "今天天气非常好，我们一起去公园散步。湖边的柳树已经发芽了，孩子们在草地上放风筝。"
    "语音合成系统可以把文字转换成自然流畅的声音，让机器像人一样说话。"
)
_PAUSES = {"，": ",", "、": ",", "；": ",", "：": ",", "。": ".", "！": ".", "？": "."}


def mandarin_phonemes(text: str) -> list[str]:
    """Chinese text -> GLM-TTS phoneme symbols, pauses as "," and "."."""
    from pypinyin import Style, pinyin

    symbols: list[str] = []
    for piece in re.findall(r"[\u4e00-\u9fff]+|[，、；：。！？]", text):
        if piece in _PAUSES:
            symbols.append(_PAUSES[piece])
            continue
        initials = pinyin(piece, style=Style.INITIALS, strict=True, neutral_tone_with_five=True)
        finals = pinyin(piece, style=Style.FINALS_TONE3, strict=True, neutral_tone_with_five=True)
        for (initial,), (final,) in zip(initials, finals, strict=True):
            symbols += ([initial.upper()] if initial else []) + [final.upper()]
    return symbols


def measure(synthesize: Callable[[], np.ndarray], sample_rate: int, repeats: int) -> tuple[float, float, float]:
    """(first-call seconds, median warm seconds, audio seconds) over `repeats` warm runs."""
    start = time.perf_counter()
    audio = synthesize()
    first = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        audio = synthesize()
        warm.append(time.perf_counter() - start)
    return first, statistics.median(warm), len(audio) / sample_rate


def main() -> None:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    sys.path.insert(0, str(_ROOT))  # run as a plain script from anywhere
    from glmtts.engines.embedded.english import PiperEnglishVoice
    from glmtts.engines.embedded.mandarin import BakerMandarinVoice

    print(f"CPU cores available: {len(os.sched_getaffinity(0))}; device: {args.device}")

    start = time.perf_counter()
    english = PiperEnglishVoice()
    english.load(args.device)
    english_load = time.perf_counter() - start
    first, warm, seconds = measure(lambda: english.text_to_audio(ENGLISH_PARAGRAPH), english.sample_rate, args.repeats)
    print(
        f"English (Piper joe, {english.sample_rate} Hz): load {english_load:.2f} s, first call {first:.2f} s, "
        f"{seconds:.1f} s of audio in {warm:.2f} s -> RTF {warm / seconds:.3f}"
    )

    phonemes = mandarin_phonemes(MANDARIN_PARAGRAPH)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        mandarin = BakerMandarinVoice(Path(cache))
        mandarin.load(args.device)
        cold_load = time.perf_counter() - start  # includes the one-time builtin rewrite of FastSpeech2
        start = time.perf_counter()
        mandarin = BakerMandarinVoice(Path(cache))
        mandarin.load(args.device)
        warm_load = time.perf_counter() - start
        first, warm, seconds = measure(lambda: mandarin.phonemes_to_audio(phonemes), mandarin.sample_rate, args.repeats)
    print(
        f"Mandarin (Baker FastSpeech2 + MB-MelGAN, {mandarin.sample_rate} Hz): load {cold_load:.2f} s cold "
        f"(rewrite + cache), {warm_load:.2f} s cached, first call {first:.2f} s, "
        f"{seconds:.1f} s of audio in {warm:.2f} s -> RTF {warm / seconds:.3f}"
    )


if __name__ == "__main__":
    main()
