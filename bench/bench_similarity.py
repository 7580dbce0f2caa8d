"""Benchmark voice matching of the embedded engine: speaker similarity before and after, per prompt.

    python bench/bench_similarity.py [--prompts DIR] [--device cpu] [--threads N]

For each built-in voice (English Piper "joe"; Mandarin Baker when its module is present) a profile
is measured from a reference sentence, then for each prompt (*.flac / *.wav in --prompts) params are
fitted on that sentence and applied to a held-out sentence. Similarity is the cosine of
resemblyzer d-vectors (the GE2E encoder bundled in the resemblyzer wheel).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EN_REFERENCE = "The quick brown fox jumps over the lazy dog, while the children watch from the garden and laugh."
EN_HELD_OUT = "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow."
# 中文语音合成系统，效果很好。今天天气非常好，我们去公园。
ZH_REFERENCE = (
    "ZH ONG1 UEN2 V3 IN1 H E2 CH ENG2 X I4 T ONG3 , X IAO4 G UO3 H EN3 H AO3 . "
    "J IN1 T IAN1 T IAN1 Q I4 F EI1 CH ANG2 H AO3 , UO3 M EN5 Q V4 G ONG1 VAN2 ."
).split()
# 你好朋友，我们明天早上一起去图书馆看书吧。
ZH_HELD_OUT = (
    "N I3 H AO3 P ENG2 IOU3 , UO3 M EN5 M ING2 T IAN1 Z AO3 SH ANG4 I4 Q I3 Q V4 T U2 SH U1 G UAN3 K AN4 SH U1 B A5 ."
).split()


def builtin_voices(device: str, cache_dir: Path):
    """Yield (name, reference audio, held-out audio, sample rate) per available built-in voice."""
    from glmtts.engines.embedded.english import PiperEnglishVoice

    english = PiperEnglishVoice()
    english.load(device)
    yield "en (piper joe)", english.text_to_audio(EN_REFERENCE), english.text_to_audio(EN_HELD_OUT), english.sample_rate
    if importlib.util.find_spec("glmtts.engines.embedded.mandarin") is None:
        print("(glmtts.engines.embedded.mandarin not found: English only)")
        return
    from glmtts.engines.embedded.mandarin import BakerMandarinVoice

    mandarin = BakerMandarinVoice(cache_dir)
    mandarin.load(device)
    reference, held_out = mandarin.phonemes_to_audio(ZH_REFERENCE), mandarin.phonemes_to_audio(ZH_HELD_OUT)
    yield "zh (baker)", reference, held_out, mandarin.sample_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=Path, default=ROOT / "examples" / "prompt")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()

    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import soundfile as sf
    import torch

    from glmtts.engines.embedded.speaker import SpeakerEncoder
    from glmtts.engines.embedded.voice_match import VoiceProfile, apply_match, fit_match

    if args.threads:
        torch.set_num_threads(args.threads)
    encoder = SpeakerEncoder()
    encoder.load(args.device)
    prompt_files = sorted([*args.prompts.glob("*.flac"), *args.prompts.glob("*.wav")])
    prompts = {}
    for path in prompt_files:
        audio, sr = sf.read(path, dtype="float32")
        start = time.perf_counter()
        prompts[path.stem] = VoiceProfile.from_audio(audio, sr, encoder)
        profile = prompts[path.stem]
        print(
            f"prompt {path.stem:11s} f0 {profile.f0_median_hz:5.0f} Hz  range {profile.f0_range_st:4.2f} st  "
            f"tract {profile.vocal_tract_cm:4.1f} cm  rate {profile.speech_rate:4.2f}/s  "
            f"(profile {time.perf_counter() - start:.2f} s)"
        )

    print("\nSpeaker similarity = cosine of resemblyzer d-vectors (GE2E, bundled pretrained.pt).")
    print("fit = reference sentence the params were fitted on; held = a different sentence.")
    header = (
        f"{'voice':15s} {'prompt':11s} {'fit before':>10s} {'fit after':>9s} {'held before':>11s} {'held after':>10s}  "
        f"{'formant':>7s} {'f0 Hz':>6s} {'range':>5s} {'dur':>5s} {'EQ dB':>5s} {'fit s':>6s} {'RTF':>6s}"
    )
    with tempfile.TemporaryDirectory() as cache_dir:
        for voice, reference, held_out, sr in builtin_voices(args.device, Path(cache_dir)):
            start = time.perf_counter()
            source = VoiceProfile.from_audio(reference, sr, encoder)
            print(
                f"\n{voice}: f0 {source.f0_median_hz:.0f} Hz, range {source.f0_range_st:.2f} st, tract "
                f"{source.vocal_tract_cm:.1f} cm, rate {source.speech_rate:.2f}/s (profile {time.perf_counter() - start:.2f} s)"
            )
            print(header)
            print("-" * len(header))
            for name, target in prompts.items():
                start = time.perf_counter()
                params = fit_match(source, target, reference, sr, encoder)
                fit_s = time.perf_counter() - start
                start = time.perf_counter()
                matched = apply_match(held_out, sr, params)
                rtf = (time.perf_counter() - start) / (len(held_out) / sr)
                held_before = encoder.similarity(encoder.embed(held_out, sr), target.embedding)
                held_after = encoder.similarity(encoder.embed(matched, sr), target.embedding)
                eq = max((abs(g) for g in params.eq_gains_db), default=0.0)
                print(
                    f"{voice:15s} {name:11s} {params.similarity_before:10.3f} {params.similarity_after:9.3f} "
                    f"{held_before:11.3f} {held_after:10.3f}  {params.formant_shift_ratio:7.3f} "
                    f"{params.pitch_median_hz:6.0f} {params.pitch_range_factor:5.2f} {params.duration_factor:5.2f} "
                    f"{eq:5.1f} {fit_s:6.2f} {rtf:6.3f}"
                )
    print("\nEQ dB: largest band gain of the equaliser (0 = not used). RTF: apply_match on the held-out sentence.")


if __name__ == "__main__":
    main()
