"""Voice matching on the real built-in voices toward the four real LibriSpeech prompt speakers.

Speaker similarity is the cosine of resemblyzer d-vectors (`SpeakerEncoder`). Matching is fitted
on one sentence of the built-in voice and judged on a different sentence, as the engine uses it.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf

from glmtts.audio import resample
from glmtts.engines.embedded.english import PiperEnglishVoice
from glmtts.engines.embedded.mandarin import BakerMandarinVoice
from glmtts.engines.embedded.speaker import SpeakerEncoder, check_prompt
from glmtts.engines.embedded.voice_match import (
    DURATION_FACTOR_RANGE,
    FORMANT_RATIO_RANGE,
    PITCH_RANGE_FACTOR_RANGE,
    MatchParams,
    VoiceProfile,
    apply_match,
    fit_match,
)
from glmtts.types import SynthesisError
from tests.voices.asr import transcribe, word_errors

FEMALE = ("libri_367", "libri_1998")
MALE = ("libri_1688", "libri_2414")
PROMPTS = FEMALE + MALE

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

MIN_SIMILARITY_GAIN = 0.02  # per prompt, on the held-out sentence (measured: 0.06 to 0.32)
MIN_MEAN_SIMILARITY_GAIN = 0.08  # over the four prompts (measured: about 0.19 English, 0.13 Mandarin)
MAX_MATCHED_WER = 0.25  # Whisper tiny.en on the matched English held-out sentence (0.0 unmatched)
MAX_FIT_SECONDS = 15.0  # CPU seconds (all threads), whatever else the machine runs: about 2-4


@pytest.fixture(scope="module")
def encoder():
    speaker_encoder = SpeakerEncoder()
    speaker_encoder.load()
    return speaker_encoder


@pytest.fixture(scope="module")
def prompts(prompt_paths) -> dict[str, tuple[np.ndarray, int]]:
    loaded = {}
    for name in PROMPTS:
        audio, sample_rate = sf.read(prompt_paths[name], dtype="float32")
        loaded[name] = (audio, sample_rate)
    return loaded


@pytest.fixture(scope="module")
def prompt_profiles(prompts, encoder) -> dict[str, VoiceProfile]:
    return {name: VoiceProfile.from_audio(audio, sr, encoder) for name, (audio, sr) in prompts.items()}


@pytest.fixture(scope="module")
def builtin(tmp_path_factory) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Per built-in voice: (reference sentence, held-out sentence, sample rate)."""
    english = PiperEnglishVoice()
    english.load("cpu")
    mandarin = BakerMandarinVoice(tmp_path_factory.mktemp("tflite-cache"))
    mandarin.load("cpu")
    return {
        "en": (english.text_to_audio(EN_REFERENCE), english.text_to_audio(EN_HELD_OUT), english.sample_rate),
        "zh": (mandarin.phonemes_to_audio(ZH_REFERENCE), mandarin.phonemes_to_audio(ZH_HELD_OUT), mandarin.sample_rate),
    }


@pytest.fixture(scope="module")
def fitted(builtin, prompt_profiles, encoder) -> dict[tuple[str, str], tuple[MatchParams, float]]:
    """(voice, prompt) -> (params, fit seconds), fitted once per pair as the engine caches them."""
    results = {}
    for voice, (reference, _, sr) in builtin.items():
        source = VoiceProfile.from_audio(reference, sr, encoder)
        for name, target in prompt_profiles.items():
            start = time.process_time()
            params = fit_match(source, target, reference, sr, encoder)
            results[voice, name] = (params, time.process_time() - start)
    return results


@pytest.fixture(scope="module")
def held_out_gains(builtin, prompt_profiles, fitted, encoder) -> dict[tuple[str, str], float]:
    """(voice, prompt) -> similarity to the prompt after matching minus before, on the held-out sentence."""
    gains = {}
    for voice, (_, held_out, sr) in builtin.items():
        before = encoder.embed(held_out, sr)
        for name, target in prompt_profiles.items():
            after = encoder.embed(apply_match(held_out, sr, fitted[voice, name][0]), sr)
            gains[voice, name] = encoder.similarity(after, target.embedding) - encoder.similarity(before, target.embedding)
    return gains


@pytest.mark.parametrize("voice", ["en", "zh"])
@pytest.mark.parametrize("name", PROMPTS)
def test_matching_raises_similarity_on_a_held_out_sentence(voice, name, fitted, held_out_gains):
    params, fit_seconds = fitted[voice, name]
    assert held_out_gains[voice, name] > MIN_SIMILARITY_GAIN, params
    assert params.similarity_after > params.similarity_before
    assert fit_seconds < MAX_FIT_SECONDS


@pytest.mark.parametrize("voice", ["en", "zh"])
def test_matching_raises_similarity_clearly_on_average(voice, held_out_gains):
    assert np.mean([held_out_gains[voice, name] for name in PROMPTS]) > MIN_MEAN_SIMILARITY_GAIN


@pytest.mark.parametrize("voice", ["en", "zh"])
def test_fitted_params_stay_in_safe_ranges_and_keep_duration_and_level(voice, builtin, fitted):
    _, held_out, sr = builtin[voice]
    for name in PROMPTS:
        params, _ = fitted[voice, name]
        assert FORMANT_RATIO_RANGE[0] <= params.formant_shift_ratio <= FORMANT_RATIO_RANGE[1]
        assert DURATION_FACTOR_RANGE[0] <= params.duration_factor <= DURATION_FACTOR_RANGE[1]
        assert PITCH_RANGE_FACTOR_RANGE[0] <= params.pitch_range_factor <= PITCH_RANGE_FACTOR_RANGE[1]
        out = apply_match(held_out, sr, params)
        assert out.dtype == np.float32 and out.ndim == 1
        assert np.all(np.isfinite(out)) and np.abs(out).max() < 1.0
        assert len(out) / len(held_out) == pytest.approx(params.duration_factor, abs=0.02)
        rms_in = np.sqrt(np.mean(np.square(held_out, dtype=np.float64)))
        rms_out = np.sqrt(np.mean(np.square(out, dtype=np.float64)))
        assert rms_out == pytest.approx(rms_in, rel=0.1)


def test_matched_english_stays_intelligible(builtin, fitted):
    _, held_out, sr = builtin["en"]
    for name in PROMPTS:
        params, _ = fitted["en", name]
        heard = transcribe(apply_match(held_out, sr, params), sr)
        errors, words = word_errors(EN_HELD_OUT, heard)
        assert errors / words <= MAX_MATCHED_WER, (name, heard)


def test_a_voice_matched_to_itself_is_left_unchanged(builtin, encoder):
    reference, held_out, sr = builtin["en"]
    profile = VoiceProfile.from_audio(reference, sr, encoder)
    params = fit_match(profile, profile, reference, sr, encoder)
    assert params.is_identity
    assert np.array_equal(apply_match(held_out, sr, params), held_out)


def test_apply_match_is_deterministic_and_handles_silence_and_tiny_pieces(builtin, fitted):
    _, held_out, sr = builtin["en"]
    params, _ = fitted["en", "libri_367"]
    assert np.array_equal(apply_match(held_out, sr, params, seed=3), apply_match(held_out, sr, params, seed=3))
    assert not np.any(apply_match(np.zeros(sr, dtype=np.float32), sr, params))
    tiny = apply_match(held_out[: sr // 50], sr, params)  # 20 ms: equaliser only
    assert len(tiny) == sr // 50 and np.all(np.isfinite(tiny))


def test_female_prompts_have_a_higher_pitch_than_male_ones(prompt_profiles):
    assert min(prompt_profiles[n].f0_median_hz for n in FEMALE) > max(prompt_profiles[n].f0_median_hz for n in MALE)
    for profile in prompt_profiles.values():
        assert 12.0 < profile.vocal_tract_cm < 21.0
        assert 1.5 < profile.speech_rate < 9.0


def test_check_prompt_accepts_real_speech(prompts):
    for audio, sr in prompts.values():
        check_prompt(audio, sr)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda rng, sr: np.zeros(5 * sr, dtype=np.float32), "silent"),
        (lambda rng, sr: rng.normal(0, 1e-5, 5 * sr).astype(np.float32), "silent"),
        (lambda rng, sr: np.sign(rng.normal(0, 1, 5 * sr)).astype(np.float32), "clipped"),
        (lambda rng, sr: rng.normal(0, 0.1, 5 * sr).astype(np.float32), "voiced speech"),
    ],
    ids=["zeros", "hiss", "clipped-noise", "white-noise"],
)
def test_check_prompt_rejects_unusable_audio(make, message):
    sr = 16000
    with pytest.raises(SynthesisError, match=message):
        check_prompt(make(np.random.default_rng(0), sr), sr)


def test_check_prompt_rejects_too_little_speech(prompts):
    audio, sr = prompts["libri_1688"]
    with pytest.raises(SynthesisError, match="at least 1 s"):
        check_prompt(audio[: int(0.6 * sr)], sr)
    speech = audio[int(2.0 * sr) : int(2.6 * sr)]  # 0.6 s of speech inside 4 s of silence
    padded = np.concatenate([np.zeros(2 * sr, np.float32), speech, np.zeros(2 * sr - len(speech), np.float32)])
    with pytest.raises(SynthesisError, match="voiced speech"):
        check_prompt(padded, sr)
    with pytest.raises(SynthesisError):
        VoiceProfile.from_audio(padded, sr, None)


@pytest.mark.parametrize("rate", [22050, 44100, 48000])
def test_a_prompt_measures_the_same_at_any_file_rate(rate, prompts, prompt_profiles, encoder):
    """Prompts arrive at their file's own rate; every analysis resamples for itself."""
    for name in ("libri_1688", "libri_367"):
        audio, sr = prompts[name]
        base = prompt_profiles[name]
        profile = VoiceProfile.from_audio(resample(audio, sr, rate), rate, encoder)
        assert profile.f0_median_hz == pytest.approx(base.f0_median_hz, rel=0.01)
        assert profile.vocal_tract_cm == pytest.approx(base.vocal_tract_cm, rel=0.02)
        assert profile.speech_rate == pytest.approx(base.speech_rate, rel=0.03)
        assert encoder.similarity(profile.embedding, base.embedding) > 0.995
        np.testing.assert_allclose(profile.spectrum_db, base.spectrum_db, atol=0.5)
