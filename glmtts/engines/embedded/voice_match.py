"""Moving a built-in voice toward a prompt speaker: analysis, fitting and the transform itself.

The embedded engine's voices are fixed, so the prompt shapes the output afterwards. A
`VoiceProfile` measures a speaker (pitch level and range, vocal-tract length from formants,
articulation rate, long-term spectrum, d-vector). `fit_match` turns two profiles into
`MatchParams`: it starts from the analytic ratios and refines formant scale, pitch level and range
and a spectral-envelope equaliser with a short coordinate search that maximises d-vector similarity to
the prompt, never returning a transform that scores below the unmodified voice. `apply_match`
runs Praat's "Change gender" (PSOLA resynthesis with a formant-scaling resample) and the
equaliser; it is cheap enough to run on every synthesized segment.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import parselmouth
from parselmouth.praat import call, run

from glmtts.audio import resample
from glmtts.dsp import convolve_same, find_peaks, firwin2, mel_filterbank, mel_frequencies, stft
from glmtts.engines.embedded.speaker import ENCODER_SAMPLE_RATE, SpeakerEncoder, check_prompt
from glmtts.types import SynthesisError

_LOGGER = logging.getLogger(__name__)

# Pitch analysis: a wide first pass, then a speaker-specific range from its quartiles.
_PITCH_STEP_S = 0.01
_FIRST_PASS_FLOOR_HZ = 60.0
_FIRST_PASS_CEILING_HZ = 700.0
_FLOOR_FROM_Q1 = 0.75
_CEILING_FROM_Q3 = 1.5
_MIN_FLOOR_HZ = 50.0
_MAX_CEILING_HZ = 800.0

# Formants -> vocal-tract length of a uniform tube closed at the glottis: F_i = (2i - 1) c / (4 L).
_SPEED_OF_SOUND_CM_S = 35000.0
_N_FORMANTS = 4
_LOW_VOICE_F0_HZ = 160.0  # below this median the formant ceiling of a longer tract is used
_FORMANT_CEILING_LOW_HZ = 5000.0
_FORMANT_CEILING_HIGH_HZ = 5500.0

# Syllable nuclei: voiced intensity peaks (after de Jong & Wempe 2009).
_NUCLEUS_DYNAMIC_RANGE_DB = 25.0  # peaks must lie within this of the loudest frames
_NUCLEUS_MIN_PROMINENCE_DB = 2.0
_NUCLEUS_MIN_DISTANCE_S = 0.05

# Long-term average spectrum on mel bands at the encoder's rate.
_LTAS_N_FFT = 512
_LTAS_HOP = 128
_LTAS_BANDS = 24
_LTAS_FMIN_HZ = 60.0
_LTAS_FMAX_HZ = 7800.0
_LTAS_ACTIVE_DB = -30.0  # frames quieter than this relative to the loudest are left out
_BAND_CENTERS_HZ = mel_frequencies(_LTAS_BANDS + 2, _LTAS_FMIN_HZ, _LTAS_FMAX_HZ)[1:-1]
_MEL_BANDS = mel_filterbank(ENCODER_SAMPLE_RATE, _LTAS_N_FFT, _LTAS_BANDS, _LTAS_FMIN_HZ, _LTAS_FMAX_HZ)  # (24, 257)

# Safe ranges: the speech stays intelligible and natural inside them.
FORMANT_RATIO_RANGE = (0.8, 1.25)
DURATION_FACTOR_RANGE = (0.75, 1.3)
PITCH_RANGE_FACTOR_RANGE = (0.5, 1.6)
PITCH_RATIO_RANGE = (0.45, 2.4)  # new median / source median
EQ_MAX_DB = 12.0
_EQ_FIR_TAPS = 513
_RATE_EXPONENT = 0.5  # move only halfway (in log) toward the prompt's rate: rate estimates are noisy
_MIN_CHANGE_GENDER_S = 0.1  # shorter pieces get only the equaliser
_NO_VOICING_WARNING = "There were no voiced segments found"

# Search: multiplicative steps for the coordinate refinement, equaliser strengths tried first.
_FORMANT_STEP = 1.06
_PITCH_STEP = 1.08
_RANGE_STEP = 1.3
_MAX_STEPS_PER_DIRECTION = 2
_PITCH_SEARCH_SPAN = 1.2  # the fitted median stays within this factor of the prompt's
_EQ_STRENGTHS = (0.0, 0.5, 1.0)
_MIN_GAIN = 0.005  # similarity gain below which the identity transform is kept
_MAX_SEARCH_SAMPLE_S = 8.0

_PEAK_LIMIT = 0.99
_SILENT_PEAK = 1e-6

# Praat has one random generator per process; a seeded "Change gender" holds it from seeding to
# unseeding, so that another thread's call cannot draw from it in between.
_PRAAT_RANDOM_LOCK = threading.Lock()


@dataclass(frozen=True)
class VoiceProfile:
    """What the matcher knows about one speaker, measured from a few seconds of speech."""

    f0_median_hz: float
    f0_range_st: float  # standard deviation of voiced f0 in semitones around the median
    pitch_floor_hz: float  # speaker-specific pitch analysis range
    pitch_ceiling_hz: float
    vocal_tract_cm: float  # uniform-tube estimate from F1..F4
    speech_rate: float  # syllable nuclei per second of active speech
    spectrum_db: tuple[float, ...]  # long-term average spectrum on mel bands, mean removed
    embedding: np.ndarray = field(compare=False, repr=False)  # (256,) d-vector

    @classmethod
    def from_audio(cls, audio: np.ndarray, sample_rate: int, encoder: SpeakerEncoder) -> VoiceProfile:
        """Measure a speaker; raises SynthesisError when the audio cannot carry a voice."""
        check_prompt(audio, sample_rate)
        sound = parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=sample_rate)
        pitch, floor, ceiling = _pitch_track(sound)
        f0 = pitch.selected_array["frequency"]  # (frames,), 0 where unvoiced
        voiced = f0[f0 > 0]
        if len(voiced) == 0:
            raise SynthesisError("The voice prompt has no voiced speech.")
        median = float(np.median(voiced))
        return cls(
            f0_median_hz=median,
            f0_range_st=float(np.std(12.0 * np.log2(voiced / median))),
            pitch_floor_hz=floor,
            pitch_ceiling_hz=ceiling,
            vocal_tract_cm=_vocal_tract_cm(sound, pitch, median),
            speech_rate=_speech_rate(sound, pitch, floor),
            spectrum_db=tuple(float(x) for x in _ltas_db(audio, sample_rate)),
            embedding=encoder.embed(audio, sample_rate),
        )


@dataclass(frozen=True)
class MatchParams:
    """A transform of one built-in voice toward one prompt speaker, and how well it scored."""

    formant_shift_ratio: float = 1.0  # > 1 shortens the vocal tract (raises formants)
    pitch_median_hz: float = 0.0  # new f0 median; 0 keeps the voice's own
    pitch_range_factor: float = 1.0  # scales f0 excursions around the median
    duration_factor: float = 1.0  # > 1 slows down
    pitch_floor_hz: float = 75.0  # analysis range of the source voice for the PSOLA resynthesis
    pitch_ceiling_hz: float = 600.0
    eq_gains_db: tuple[float, ...] = ()  # one gain per long-term-spectrum mel band (24); empty = no EQ
    similarity_before: float = 0.0  # d-vector cosine to the prompt, unmodified sample
    similarity_after: float = 0.0  # same, transformed sample

    @property
    def is_identity(self) -> bool:
        return (
            self.formant_shift_ratio == 1.0
            and self.pitch_median_hz == 0.0
            and self.pitch_range_factor == 1.0
            and self.duration_factor == 1.0
            and not self.eq_gains_db
        )


def _pitch_track(sound: parselmouth.Sound) -> tuple[parselmouth.Pitch, float, float]:
    """Two-pass autocorrelation pitch: returns the track and the speaker's floor and ceiling (Hz)."""
    first = sound.to_pitch_ac(time_step=_PITCH_STEP_S, pitch_floor=_FIRST_PASS_FLOOR_HZ, pitch_ceiling=_FIRST_PASS_CEILING_HZ)
    f0 = first.selected_array["frequency"]
    voiced = f0[f0 > 0]
    if len(voiced) == 0:
        return first, _FIRST_PASS_FLOOR_HZ, _FIRST_PASS_CEILING_HZ
    q1, q3 = np.percentile(voiced, [25, 75])
    floor = float(max(_MIN_FLOOR_HZ, _FLOOR_FROM_Q1 * q1))
    ceiling = float(min(_MAX_CEILING_HZ, _CEILING_FROM_Q3 * q3))
    return sound.to_pitch_ac(time_step=_PITCH_STEP_S, pitch_floor=floor, pitch_ceiling=ceiling), floor, ceiling


def _vocal_tract_cm(sound: parselmouth.Sound, pitch: parselmouth.Pitch, f0_median: float) -> float:
    """Median over voiced frames of the tube length that best explains F1..F4."""
    ceiling = _FORMANT_CEILING_LOW_HZ if f0_median < _LOW_VOICE_F0_HZ else _FORMANT_CEILING_HIGH_HZ
    formant = sound.to_formant_burg(time_step=_PITCH_STEP_S, max_number_of_formants=5, maximum_formant=ceiling)
    times = pitch.xs()[pitch.selected_array["frequency"] > 0]
    odd = 2.0 * np.arange(1, _N_FORMANTS + 1) - 1.0  # (4,) 1, 3, 5, 7
    freqs = np.array([[formant.get_value_at_time(i, t) for i in range(1, _N_FORMANTS + 1)] for t in times])
    freqs = freqs[np.all(np.isfinite(freqs), axis=1)]  # (frames, 4)
    if len(freqs) == 0:
        raise SynthesisError("The voice prompt has no vowels clear enough to measure.")
    quarter_wave_hz = freqs @ odd / (odd @ odd)  # (frames,) c / (4 L)
    return float(_SPEED_OF_SOUND_CM_S / (4.0 * np.median(quarter_wave_hz)))


def _speech_rate(sound: parselmouth.Sound, pitch: parselmouth.Pitch, pitch_floor: float) -> float:
    """Articulation rate: voiced intensity peaks per second of non-pause audio."""
    intensity = sound.to_intensity(minimum_pitch=pitch_floor, time_step=_PITCH_STEP_S)
    level = intensity.values[0]  # (frames,) dB
    threshold = float(np.percentile(level, 99)) - _NUCLEUS_DYNAMIC_RANGE_DB
    peaks = find_peaks(
        level,
        height=threshold,
        prominence=_NUCLEUS_MIN_PROMINENCE_DB,
        distance=max(1, round(_NUCLEUS_MIN_DISTANCE_S / _PITCH_STEP_S)),
    )
    times = intensity.xs()
    nuclei = sum(1 for i in peaks if np.isfinite(pitch.get_value_at_time(times[i])))
    active_s = float(np.count_nonzero(level > threshold)) * _PITCH_STEP_S
    return nuclei / active_s if active_s > 0 else 0.0


def _ltas_db(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono audio -> (24,) mel-band long-term average spectrum in dB, mean removed."""
    wav = resample(np.asarray(audio, dtype=np.float32), sample_rate, ENCODER_SAMPLE_RATE)
    power = np.abs(stft(wav, _LTAS_N_FFT, _LTAS_HOP)) ** 2  # (257, frames)
    energy = power.sum(axis=0)
    active = energy > energy.max() * 10 ** (_LTAS_ACTIVE_DB / 10)
    bands = 10.0 * np.log10(_MEL_BANDS @ power[:, active].mean(axis=1) + 1e-12)
    return bands - bands.mean()


def _eq_gains(target_db: np.ndarray, current_db: np.ndarray, strength: float) -> tuple[float, ...]:
    """Smoothed, clamped per-band gains that move `current_db` toward `target_db`."""
    if strength <= 0:
        return ()
    raw = strength * (np.asarray(target_db) - np.asarray(current_db))
    smooth = np.convolve(np.pad(raw, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    smooth -= smooth.mean()  # the equaliser shapes, the level is restored separately
    return tuple(float(g) for g in np.clip(smooth, -EQ_MAX_DB, EQ_MAX_DB))


def _equalize(audio: np.ndarray, sample_rate: int, gains_db: tuple[float, ...]) -> np.ndarray:
    """Linear-phase FIR through the band gains (held flat below the first and above the last band)."""
    nyquist = sample_rate / 2
    inside = _BAND_CENTERS_HZ < nyquist
    freqs = np.concatenate([[0.0], _BAND_CENTERS_HZ[inside], [nyquist]])
    gains = np.asarray(gains_db)[inside]
    gains = np.concatenate([[gains[0]], gains, [gains[-1]]])
    taps = firwin2(_EQ_FIR_TAPS, freqs, 10 ** (gains / 20), sample_rate)
    return convolve_same(audio, taps)


def _change_gender(audio: np.ndarray, sample_rate: int, params: MatchParams, seed: int) -> np.ndarray:
    """Praat's PSOLA "Change gender"; its unvoiced stretches use Praat's global random generator,
    which is seeded for this call (so equal inputs give equal outputs, in any thread) and unseeded
    afterwards."""
    sound = parselmouth.Sound(audio, sampling_frequency=sample_rate)
    with _PRAAT_RANDOM_LOCK:
        run(f"random_initializeWithSeedUnsafelyButPredictably ({int(seed)})")
        try:
            with warnings.catch_warnings():
                # A piece without voicing (a lone fricative, a breath) is copied as it is; Praat warns.
                warnings.filterwarnings("ignore", message=_NO_VOICING_WARNING, category=parselmouth.PraatWarning)
                changed = call(
                    sound,
                    "Change gender",
                    params.pitch_floor_hz,
                    params.pitch_ceiling_hz,
                    params.formant_shift_ratio,
                    params.pitch_median_hz,
                    params.pitch_range_factor,
                    params.duration_factor,
                )
        finally:
            run("random_initializeSafelyAndUnpredictably ()")
    return changed.values[0]


def apply_match(audio: np.ndarray, sample_rate: int, params: MatchParams, seed: int = 0) -> np.ndarray:
    """Transform mono audio with `params`; returns float32 at the same rate, level kept, no clipping.

    Deterministic for a given `seed`, whatever other threads do at the same time.
    """
    audio = np.asarray(audio, dtype=np.float32)
    peak_in = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if params.is_identity or peak_in < _SILENT_PEAK:
        return audio.copy()
    out = audio.astype(np.float64)
    changes_voice = (
        params.formant_shift_ratio != 1.0
        or params.pitch_median_hz != 0.0
        or params.pitch_range_factor != 1.0
        or params.duration_factor != 1.0
    )
    if changes_voice and len(audio) >= _MIN_CHANGE_GENDER_S * sample_rate:
        out = _change_gender(out, sample_rate, params, seed)
    if params.eq_gains_db:
        out = _equalize(out, sample_rate, params.eq_gains_db)
    rms_in = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    rms_out = float(np.sqrt(np.mean(np.square(out))))
    if rms_out > 0:
        out = out * (rms_in / rms_out)
    peak_out = float(np.max(np.abs(out)))
    if peak_out > _PEAK_LIMIT:
        out = out * (_PEAK_LIMIT / peak_out)
    return out.astype(np.float32)


def analytic_match(source: VoiceProfile, target: VoiceProfile) -> MatchParams:
    """The closed-form starting point: ratios of pitch, tract length and rate, clamped to safe ranges."""
    pitch_ratio = np.clip(target.f0_median_hz / source.f0_median_hz, *PITCH_RATIO_RANGE)
    rate_ratio = source.speech_rate / target.speech_rate if target.speech_rate > 0 else 1.0
    return MatchParams(
        formant_shift_ratio=float(np.clip(source.vocal_tract_cm / target.vocal_tract_cm, *FORMANT_RATIO_RANGE)),
        pitch_median_hz=float(source.f0_median_hz * pitch_ratio),
        pitch_range_factor=float(np.clip(target.f0_range_st / max(source.f0_range_st, 1e-3), *PITCH_RANGE_FACTOR_RANGE)),
        duration_factor=float(np.clip(rate_ratio**_RATE_EXPONENT, *DURATION_FACTOR_RANGE)),
        pitch_floor_hz=source.pitch_floor_hz,
        pitch_ceiling_hz=source.pitch_ceiling_hz,
    )


class _Scorer:
    """Scores candidate transforms of one source sample against one prompt, remembering results."""

    def __init__(self, sample: np.ndarray, target: VoiceProfile, encoder: SpeakerEncoder) -> None:
        self._sample = sample  # 16 kHz
        self._target = target
        self._encoder = encoder
        self._target_ltas = np.asarray(target.spectrum_db)
        self._scores: dict[tuple, tuple[float, MatchParams]] = {}

    def __call__(self, params: MatchParams, eq_strength: float) -> tuple[float, MatchParams]:
        """Similarity of the transformed sample to the prompt, and the params with their EQ gains."""
        key = (
            round(params.formant_shift_ratio, 4),
            round(params.pitch_median_hz, 2),
            round(params.pitch_range_factor, 4),
            round(params.duration_factor, 4),
            eq_strength,
        )
        if key not in self._scores:
            voice_only = replace(params, eq_gains_db=())
            changed = apply_match(self._sample, ENCODER_SAMPLE_RATE, voice_only)
            gains = _eq_gains(self._target_ltas, _ltas_db(changed, ENCODER_SAMPLE_RATE), eq_strength)
            if gains:
                changed = apply_match(changed, ENCODER_SAMPLE_RATE, MatchParams(eq_gains_db=gains))
            embedding = self._encoder.embed(changed, ENCODER_SAMPLE_RATE)
            score = self._encoder.similarity(embedding, self._target.embedding)
            self._scores[key] = (score, replace(voice_only, eq_gains_db=gains))
        return self._scores[key]

    @property
    def evaluations(self) -> int:
        return len(self._scores)


def _line_search(
    scorer: _Scorer, start: MatchParams, eq_strength: float, field_name: str, step: float, bounds: tuple[float, float]
) -> tuple[float, MatchParams]:
    """Multiply one parameter by `step` or `1/step` while similarity rises, inside `bounds`."""
    best_score, best = scorer(start, eq_strength)
    for direction in (step, 1.0 / step):
        moved = False
        for _ in range(_MAX_STEPS_PER_DIRECTION):
            value = float(np.clip(getattr(best, field_name) * direction, *bounds))
            if value == getattr(best, field_name):
                break
            score, candidate = scorer(replace(best, **{field_name: value}), eq_strength)
            if score <= best_score:
                break
            best_score, best, moved = score, candidate, True
        if moved:
            break  # no need to try the other direction
    return best_score, best


def fit_match(
    source_profile: VoiceProfile,
    target_profile: VoiceProfile,
    source_sample: np.ndarray,
    sr: int,
    encoder: SpeakerEncoder,
) -> MatchParams:
    """Params that raise d-vector similarity of `source_sample` (the built-in voice) to the prompt.

    Starts from `analytic_match`, picks the equaliser strength, then refines formant ratio, pitch
    median and pitch range by coordinate search (about a dozen transforms of at most 8 s of the
    sample). Returns the identity transform when nothing beats the unmodified voice.
    """
    start_time = time.perf_counter()
    sample = np.asarray(source_sample, dtype=np.float32)[: int(_MAX_SEARCH_SAMPLE_S * sr)]
    sample = resample(sample, sr, ENCODER_SAMPLE_RATE)
    before = encoder.similarity(encoder.embed(sample, ENCODER_SAMPLE_RATE), target_profile.embedding)
    scorer = _Scorer(sample, target_profile, encoder)

    start = analytic_match(source_profile, target_profile)
    best_score, best, eq_strength = max(
        (scorer(start, strength) + (strength,) for strength in _EQ_STRENGTHS), key=lambda item: item[0]
    )
    source_f0 = source_profile.f0_median_hz
    low = max(source_f0 * PITCH_RATIO_RANGE[0], target_profile.f0_median_hz / _PITCH_SEARCH_SPAN)
    high = min(source_f0 * PITCH_RATIO_RANGE[1], target_profile.f0_median_hz * _PITCH_SEARCH_SPAN)
    pitch_bounds = (min(low, start.pitch_median_hz), max(high, start.pitch_median_hz))  # holds the start
    best_score, best = _line_search(scorer, best, eq_strength, "formant_shift_ratio", _FORMANT_STEP, FORMANT_RATIO_RANGE)
    best_score, best = _line_search(scorer, best, eq_strength, "pitch_median_hz", _PITCH_STEP, pitch_bounds)
    best_score, best = _line_search(scorer, best, eq_strength, "pitch_range_factor", _RANGE_STEP, PITCH_RANGE_FACTOR_RANGE)

    elapsed = time.perf_counter() - start_time
    if best_score < before + _MIN_GAIN:
        _LOGGER.info("Voice match kept the voice unchanged (%.3f, best %.3f, %.2f s)", before, best_score, elapsed)
        return MatchParams(similarity_before=before, similarity_after=before)
    _LOGGER.info(
        "Voice match: similarity %.3f -> %.3f with %d transforms in %.2f s", before, best_score, scorer.evaluations, elapsed
    )
    return replace(best, similarity_before=before, similarity_after=best_score)
