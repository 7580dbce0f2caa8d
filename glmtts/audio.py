"""Audio input and output: reading and checking prompts, resampling, joining and writing."""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from glmtts.types import SynthesisError

_LOGGER = logging.getLogger(__name__)

PROMPT_MIN_SECONDS = 1.0
PROMPT_MAX_SECONDS = 30.0  # longer prompts are cut to this many seconds
PROMPT_MAX_BYTES = 20 * 1024 * 1024
SILENCE_RMS = 1e-3  # below this a prompt holds no usable speech
CROSSFADE_SECONDS = 0.03
SEGMENT_PAUSE_SECONDS = 0.12


def read_prompt(source: str | Path | bytes, target_rate: int = 16000) -> tuple[np.ndarray, int]:
    """Decode a prompt (path or bytes) to mono float32 at `target_rate`, or raise SynthesisError.

    Rejects files that are too large, undecodable, shorter than PROMPT_MIN_SECONDS or silent; a
    prompt longer than PROMPT_MAX_SECONDS is cut.
    """
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    if not data:
        raise SynthesisError("The prompt audio is empty.")
    if len(data) > PROMPT_MAX_BYTES:
        raise SynthesisError(f"The prompt audio is larger than {PROMPT_MAX_BYTES // (1024 * 1024)} MB.")
    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception:
        try:  # formats libsndfile lacks (mp3 in old builds, m4a): let librosa try its backends
            audio, rate = librosa.load(io.BytesIO(data), sr=None, mono=False)
            audio = np.atleast_2d(audio).T.astype(np.float32)
        except Exception as error:
            raise SynthesisError(f"The prompt audio could not be decoded ({type(error).__name__}).") from error
    audio = audio.mean(axis=1)
    if not np.all(np.isfinite(audio)):
        raise SynthesisError("The prompt audio holds invalid samples (NaN or infinity).")
    duration = len(audio) / rate
    if duration < PROMPT_MIN_SECONDS:
        raise SynthesisError(
            f"The prompt audio is {duration:.2f} s long; give at least {PROMPT_MIN_SECONDS:.0f} s (3 to 10 s is best)."
        )
    if duration > PROMPT_MAX_SECONDS:
        _LOGGER.info("Prompt of %.1f s cut to %.0f s", duration, PROMPT_MAX_SECONDS)
        audio = audio[: int(PROMPT_MAX_SECONDS * rate)]
    if float(np.sqrt(np.mean(audio**2))) < SILENCE_RMS:
        raise SynthesisError("The prompt audio is silent.")
    return resample(audio, rate, target_rate), target_rate


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    if rate == target_rate:
        return audio.astype(np.float32, copy=False)
    return librosa.resample(audio, orig_sr=rate, target_sr=target_rate, res_type="soxr_hq").astype(np.float32)


def content_key(audio: np.ndarray, prompt_text: str) -> str:
    """A stable key for a prompt: the hash of its samples and its transcript."""
    digest = hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    digest.update(prompt_text.encode("utf-8"))
    return digest.hexdigest()[:24]


def crossfade_join(pieces: list[np.ndarray], sample_rate: int, pause_s: float = 0.0) -> np.ndarray:
    """Join pieces with a short equal-power crossfade, or with `pause_s` of silence between them."""
    pieces = [p for p in pieces if len(p)]
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    if pause_s > 0:
        gap = np.zeros(int(pause_s * sample_rate), dtype=np.float32)
        return np.concatenate([x for p in pieces for x in (p, gap)][:-1]).astype(np.float32)
    fade = int(CROSSFADE_SECONDS * sample_rate)
    out = pieces[0].astype(np.float32)
    for piece in pieces[1:]:
        n = min(fade, len(out), len(piece))
        if n == 0:
            out = np.concatenate([out, piece])
            continue
        t = np.linspace(0.0, np.pi / 2, n, dtype=np.float32)
        mixed = out[-n:] * np.cos(t) + piece[:n] * np.sin(t)
        out = np.concatenate([out[:-n], mixed, piece[n:]])
    return out.astype(np.float32)


def limit_peak(audio: np.ndarray, peak: float = 0.97) -> np.ndarray:
    """Scale down audio whose peak exceeds `peak`; never amplify."""
    top = float(np.max(np.abs(audio))) if len(audio) else 0.0
    return audio * (peak / top) if top > peak else audio


def audio_to_wav_bytes(audio: np.ndarray, sample_rate: int, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, format=fmt, subtype="PCM_16" if fmt == "WAV" else None)
    return buffer.getvalue()


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sample_rate, subtype="PCM_16")
    return path
