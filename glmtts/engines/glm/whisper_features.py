"""Whisper log-mel features for the speech tokenizer (transformers' WhisperFeatureExtractor recipe).

16 kHz audio, Hann window of 400 samples, hop 160 (100 frames per second), power spectrum, slaney
mel filters from 0 to 8 kHz, log10 with a floor, an 8-decade dynamic range below the maximum of the
whole input, then `(x + 4) / 4`. Same operations and dtypes as the extractor's torch path, so the
output matches it to float32 rounding.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch

from glmtts.dsp import mel_filterbank

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 128
MEL_FMAX = 8000.0
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # decades kept below the loudest bin


@functools.lru_cache(maxsize=4)
def _mel_filters(n_mels: int) -> np.ndarray:
    """Slaney-scale, slaney-normalized mel filters [n_mels, N_FFT // 2 + 1], built in float64."""
    return mel_filterbank(SAMPLE_RATE, N_FFT, n_mels, 0.0, MEL_FMAX, np.float64).astype(np.float32)


def whisper_log_mel(audio_16k: np.ndarray, device: torch.device | str, n_mels: int = N_MELS) -> torch.Tensor:
    """Log-mel features [n_mels, len(audio) // HOP_LENGTH] (float32, on `device`) of mono 16 kHz audio.

    The audio is taken as it is (no padding to 30 s): callers pad first where they need to.
    """
    samples = np.asarray(audio_16k, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"whisper_log_mel expects mono audio, got shape {samples.shape}")
    if len(samples) <= N_FFT // 2:
        raise ValueError(f"whisper_log_mel needs more than {N_FFT // 2} samples, got {len(samples)}")
    waveform = torch.from_numpy(samples).to(device)  # [N]
    window = torch.hann_window(N_FFT, device=waveform.device)
    spectrum = torch.stft(waveform, N_FFT, HOP_LENGTH, window=window, return_complex=True)  # [201, N // 160 + 1]
    power = (spectrum[..., :-1].abs() ** 2).contiguous()  # [201, frames]; the last frame is dropped
    filters = torch.from_numpy(_mel_filters(n_mels)).to(waveform.device)  # [n_mels, 201]
    log_mel = torch.clamp(filters @ power, min=LOG_FLOOR).log10()  # [n_mels, frames]
    log_mel = torch.maximum(log_mel, log_mel.max() - DYNAMIC_RANGE)
    return (log_mel + 4.0) / 4.0
