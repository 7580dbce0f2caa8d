"""Speaker d-vectors and prompt checks for the embedded engine.

The encoder is the GE2E d-vector LSTM that ships inside the `resemblyzer` wheel (`pretrained.pt`,
40 mel channels at 16 kHz in, 256-dim unit vector out). We load its weights strictly into our own
module and do the preprocessing ourselves (resample from the prompt's own rate, level, VAD trimming,
partial windows) so that nothing prints, downloads or picks a device on its own.
"""

from __future__ import annotations

import logging
import math
from importlib.resources import files
from pathlib import Path

import librosa
import numpy as np
import parselmouth
import scipy.ndimage
import torch
import webrtcvad
from torch import nn

from glmtts.audio import resample
from glmtts.types import SynthesisError

_LOGGER = logging.getLogger(__name__)

ENCODER_SAMPLE_RATE = 16000
EMBEDDING_DIM = 256
_N_MELS = 40
_N_FFT = 400  # 25 ms window
_HOP = 160  # 10 ms step
_HIDDEN = 256
_LAYERS = 3
_PARTIAL_FRAMES = 160  # 1.6 s per partial utterance
_PARTIALS_PER_SECOND = 1.3
_LAST_PARTIAL_MIN_COVERAGE = 0.25  # add a final end-aligned partial when this much tail is left
_TARGET_DBFS = -30.0  # the encoder was trained on audio raised to this level
_VAD_WINDOW_MS = 30
_VAD_SMOOTHING = 8  # windows in the moving average over VAD decisions
_VAD_MAX_SILENCE = 6  # windows of silence kept around speech
_VAD_MODE = 3
_TRAINING_ONLY_KEYS = ("similarity_weight", "similarity_bias")  # GE2E loss scale, unused at inference

# Prompt checks.
MIN_PROMPT_SECONDS = 1.0
MIN_VOICED_SECONDS = 1.0
_SILENCE_PEAK = 10 ** (-60 / 20)  # peak below -60 dBFS counts as silence
_CLIP_LEVEL = 0.99
_MAX_CLIPPED_FRACTION = 0.05
_PITCH_FLOOR_HZ = 60.0
_PITCH_CEILING_HZ = 600.0
_PITCH_STEP_S = 0.01


class _DVectorNet(nn.Module):
    """LSTM over mel frames; the last layer's final hidden state, projected, is the d-vector."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(_N_MELS, _HIDDEN, _LAYERS, batch_first=True)
        self.linear = nn.Linear(_HIDDEN, EMBEDDING_DIM)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        # mels: (batch, frames, 40) power mel -> (batch, 256) unit vectors
        _, (hidden, _) = self.lstm(mels)
        embeds = torch.relu(self.linear(hidden[-1]))
        return embeds / embeds.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _trim_long_silences(wav: np.ndarray) -> np.ndarray:
    """Drop silences longer than a few VAD windows (16 kHz input), as the encoder's training did."""
    window = _VAD_WINDOW_MS * ENCODER_SAMPLE_RATE // 1000
    n_windows = len(wav) // window
    if n_windows == 0:
        return wav
    pcm = (np.clip(wav[: n_windows * window], -1.0, 1.0) * 32767).astype("<i2")
    vad = webrtcvad.Vad(_VAD_MODE)
    flags = np.array(
        [vad.is_speech(pcm[i * window : (i + 1) * window].tobytes(), ENCODER_SAMPLE_RATE) for i in range(n_windows)],
        dtype=np.float64,
    )
    smoothed = scipy.ndimage.uniform_filter1d(flags, _VAD_SMOOTHING, mode="constant") >= 0.5
    keep = scipy.ndimage.binary_dilation(smoothed, np.ones(_VAD_MAX_SILENCE + 1, dtype=bool))
    if not keep.any():
        return wav
    return wav[: n_windows * window][np.repeat(keep, window)]


def _preprocess(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float audio at any rate -> 16 kHz, raised to the training level, long silences cut."""
    wav = resample(np.asarray(audio, dtype=np.float32), sample_rate, ENCODER_SAMPLE_RATE)
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
    if rms > 0:
        gain_db = _TARGET_DBFS - 20 * math.log10(rms)
        if gain_db > 0:
            wav = wav * np.float32(10 ** (gain_db / 20))
    return _trim_long_silences(wav)


def _partial_starts(n_frames: int) -> list[int]:
    """Start frames of the 1.6 s windows whose embeddings are averaged."""
    if n_frames <= _PARTIAL_FRAMES:
        return [0]
    step = round(ENCODER_SAMPLE_RATE / _PARTIALS_PER_SECOND / _HOP)
    starts = list(range(0, n_frames - _PARTIAL_FRAMES + 1, step))
    if n_frames - (starts[-1] + _PARTIAL_FRAMES) > _LAST_PARTIAL_MIN_COVERAGE * _PARTIAL_FRAMES:
        starts.append(n_frames - _PARTIAL_FRAMES)
    return starts


class SpeakerEncoder:
    """Turns speech into 256-dim unit d-vectors whose cosine similarity says "same speaker"."""

    def __init__(self) -> None:
        self._net: _DVectorNet | None = None
        self._device = torch.device("cpu")
        self._mel_basis = librosa.filters.mel(sr=ENCODER_SAMPLE_RATE, n_fft=_N_FFT, n_mels=_N_MELS)  # (40, 201)

    @property
    def weights_path(self) -> Path:
        """The bundled resemblyzer weights."""
        return Path(str(files("resemblyzer").joinpath("pretrained.pt")))

    def load(self, device: str) -> None:
        """Load the bundled resemblyzer weights onto `device`, failing on any key mismatch."""
        with self.weights_path.open("rb") as handle:
            checkpoint = torch.load(handle, map_location="cpu", weights_only=True)
        state = {k: v for k, v in checkpoint["model_state"].items() if k not in _TRAINING_ONLY_KEYS}
        net = _DVectorNet()
        net.load_state_dict(state, strict=True)
        self._device = torch.device(device)
        self._net = net.to(self._device).eval()
        _LOGGER.info("Speaker encoder loaded on %s", self._device)

    def _mel(self, wav: np.ndarray) -> np.ndarray:
        """16 kHz audio -> (frames, 40) power mel, as the encoder was trained on."""
        spec = librosa.stft(wav, n_fft=_N_FFT, hop_length=_HOP, window="hann", center=True)
        return (self._mel_basis @ np.abs(spec) ** 2).T.astype(np.float32)

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono float audio -> unit-norm float32 d-vector of shape (256,)."""
        if self._net is None:
            raise RuntimeError("SpeakerEncoder.load() has not been called")
        wav = _preprocess(audio, sample_rate)
        if len(wav) < _N_FFT:
            wav = np.pad(wav, (0, _N_FFT - len(wav)))
        mel = self._mel(wav)  # (frames, 40)
        if len(mel) < _PARTIAL_FRAMES:
            mel = np.pad(mel, ((0, _PARTIAL_FRAMES - len(mel)), (0, 0)))
        batch = np.stack([mel[s : s + _PARTIAL_FRAMES] for s in _partial_starts(len(mel))])  # (n, 160, 40)
        with torch.inference_mode():
            partials = self._net(torch.from_numpy(batch).to(self._device)).cpu().numpy()  # (n, 256)
        mean = partials.mean(axis=0)
        norm = float(np.linalg.norm(mean))
        if norm == 0.0:
            raise SynthesisError("The voice prompt has no speech the speaker encoder can use.")
        return (mean / norm).astype(np.float32)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        """Cosine similarity of two d-vectors (1.0 = same direction)."""
        denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
        return float(np.dot(a, b)) / denominator if denominator > 0 else 0.0


def voiced_seconds(audio: np.ndarray, sample_rate: int) -> float:
    """Seconds of audio that Praat's autocorrelation pitch tracker calls voiced."""
    sound = parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=sample_rate)
    pitch = sound.to_pitch_ac(time_step=_PITCH_STEP_S, pitch_floor=_PITCH_FLOOR_HZ, pitch_ceiling=_PITCH_CEILING_HZ)
    return float(np.count_nonzero(pitch.selected_array["frequency"] > 0)) * _PITCH_STEP_S


def check_prompt(audio: np.ndarray, sample_rate: int) -> None:
    """Raise SynthesisError, with a message for the user, when a prompt cannot carry a voice."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise SynthesisError("The voice prompt must be mono audio.")
    duration = len(audio) / sample_rate
    if duration < MIN_PROMPT_SECONDS:
        raise SynthesisError(
            f"The voice prompt is {duration:.2f} s long; give at least {MIN_PROMPT_SECONDS:.0f} s "
            "(3 to 10 s of clear speech works best)."
        )
    if not np.all(np.isfinite(audio)):
        raise SynthesisError("The voice prompt contains invalid samples (NaN or infinity).")
    peak = float(np.max(np.abs(audio)))
    if peak < _SILENCE_PEAK:
        raise SynthesisError("The voice prompt is silent; record or upload someone speaking.")
    clipped = float(np.mean(np.abs(audio) >= _CLIP_LEVEL))
    if clipped > _MAX_CLIPPED_FRACTION:
        raise SynthesisError(
            f"The voice prompt is heavily clipped ({clipped:.0%} of samples at full scale); record it again at a lower level."
        )
    voiced = voiced_seconds(audio, sample_rate)
    if voiced < MIN_VOICED_SECONDS:
        raise SynthesisError(
            f"The voice prompt has only {voiced:.1f} s of voiced speech; give at least "
            f"{MIN_VOICED_SECONDS:.0f} s of someone speaking clearly, without music or noise."
        )
