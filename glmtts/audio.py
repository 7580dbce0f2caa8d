"""Audio in and out: reading prompts (bounded), the one resampler, joining and writing.

A prompt is decoded only as far as it is used (PROMPT_MAX_SECONDS), whatever the length of the
file, and kept at its own sample rate; each consumer resamples from the original with `resample`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from glmtts.files import atomic_output
from glmtts.types import SynthesisError

_LOGGER = logging.getLogger(__name__)

PROMPT_MIN_SECONDS = 1.0
PROMPT_MAX_SECONDS = 30.0  # longer prompts are cut to this many seconds (the rest is never decoded)
PROMPT_MAX_BYTES = 20 * 1024 * 1024
PROMPT_MIN_RATE, PROMPT_MAX_RATE = 8000, 192000
SILENCE_RMS = 1e-3  # below this a prompt holds no usable speech
CROSSFADE_SECONDS = 0.03


def read_prompt(source: str | Path | bytes, max_seconds: float = PROMPT_MAX_SECONDS) -> tuple[np.ndarray, int]:
    """Decode the first `max_seconds` of a prompt (path or bytes) to mono float32 at its own rate.

    Raises SynthesisError for files that are too large, undecodable, shorter than
    PROMPT_MIN_SECONDS, silent or holding invalid samples.
    """
    if isinstance(source, (str, Path)):
        size = Path(source).stat().st_size
        opened: str | io.BytesIO = str(source)
    else:
        size, opened = len(source), io.BytesIO(source)
    if not size:
        raise SynthesisError("The prompt audio is empty.")
    if size > PROMPT_MAX_BYTES:
        raise SynthesisError(f"The prompt audio is larger than {PROMPT_MAX_BYTES // (1024 * 1024)} MB.")
    try:
        audio, rate = _read_soundfile(opened, max_seconds)
    except (sf.LibsndfileError, RuntimeError, TypeError):  # formats libsndfile lacks (m4a, webm, old mp3)
        if isinstance(opened, io.BytesIO):
            opened.seek(0)
        audio, rate = _read_av(opened, max_seconds)
    if not len(audio):
        raise SynthesisError("The prompt audio could not be decoded (no samples in it).")
    if not PROMPT_MIN_RATE <= rate <= PROMPT_MAX_RATE:
        raise SynthesisError(f"The prompt's sample rate is {rate} Hz; give {PROMPT_MIN_RATE} to {PROMPT_MAX_RATE} Hz.")
    if not np.all(np.isfinite(audio)):
        raise SynthesisError("The prompt audio holds invalid samples (NaN or infinity).")
    duration = len(audio) / rate
    if duration < PROMPT_MIN_SECONDS:
        raise SynthesisError(
            f"The prompt audio is {duration:.2f} s long; give at least {PROMPT_MIN_SECONDS:.0f} s (3 to 10 s is best)."
        )
    if float(np.sqrt(np.mean(audio**2))) < SILENCE_RMS:
        raise SynthesisError(f"The prompt audio is silent (in its first {max_seconds:.0f} s, which is what is used).")
    return audio, rate


def prompt_seconds(path: Path) -> float:
    """How much of a prompt file is used (up to PROMPT_MAX_SECONDS), from its header; 0.0 where that
    cannot tell (a missing file, a format libsndfile lacks). Read again only when the file changes."""
    try:
        stat = path.stat()
    except OSError:
        return 0.0
    return _header_seconds(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _header_seconds(path: str, size: int, mtime_ns: int) -> float:
    try:
        return round(min(sf.info(path).duration, PROMPT_MAX_SECONDS), 3)
    except (OSError, RuntimeError):  # gone since, or not a format libsndfile reads
        return 0.0


def _read_soundfile(opened: str | io.BytesIO, max_seconds: float) -> tuple[np.ndarray, int]:
    with sf.SoundFile(opened) as sound:
        rate = sound.samplerate
        frames = int(max_seconds * rate)
        if sound.frames > frames:
            _LOGGER.info("Prompt of %.1f s cut to %.0f s", sound.frames / rate, max_seconds)
        audio = sound.read(frames, dtype="float32", always_2d=True)
        if len(audio) < min(frames, sound.frames):
            raise SynthesisError("The prompt audio could not be decoded (the file is damaged or cut short).")
    return audio.mean(axis=1), rate


def _read_av(opened: str | io.BytesIO, max_seconds: float) -> tuple[np.ndarray, int]:
    import av

    try:
        with av.open(opened, "r") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise SynthesisError("The prompt file holds no audio.")
            rate = stream.codec_context.sample_rate
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            wanted, pieces, kept = int(max_seconds * rate), [], 0
            for frame in container.decode(stream):
                for converted in resampler.resample(frame):
                    piece = converted.to_ndarray().reshape(-1)
                    pieces.append(piece[: wanted - kept])
                    kept += len(pieces[-1])
                if kept >= wanted:
                    break
    except SynthesisError:
        raise
    except Exception as error:  # PyAV raises many kinds for foreign or damaged data
        raise SynthesisError(f"The prompt audio could not be decoded ({type(error).__name__}).") from error
    audio = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    return audio, rate


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Mono float32 audio from `rate` to `target_rate` (soxr, high quality)."""
    if rate == target_rate:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(np.asarray(audio, dtype=np.float32), rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def content_key(audio: np.ndarray, prompt_text: str) -> str:
    """A stable key for a prompt: the hash of its samples and its transcript."""
    digest = hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    digest.update(prompt_text.encode("utf-8"))
    return digest.hexdigest()[:24]


def crossfade_join(pieces: list[np.ndarray], sample_rate: int) -> np.ndarray:
    """Join pieces (language runs inside one segment) with a short equal-power crossfade."""
    pieces = [p for p in pieces if len(p)]
    if not pieces:
        return np.zeros(0, dtype=np.float32)
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


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    """A 16-bit wav, written atomically and synced (a batch item's file exists whole or not at all).
    Encoded in memory first: soundfile would hide a failed write (a full disk) behind an AssertionError."""
    encoded = io.BytesIO()
    sf.write(encoded, audio, sample_rate, format="WAV", subtype="PCM_16")
    with atomic_output(path) as handle:
        handle.write(encoded.getbuffer())
    return path
