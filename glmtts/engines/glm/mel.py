"""Prompt mel spectrogram for the GLM-TTS flow: resampling and the 80-bin log mel at 50 frames/s.

Also `resample` (torchaudio's default resampler, which upstream's loaders use for every rate), which
the other consumers share; the mel filter bank is librosa's, from `glmtts.dsp`.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from glmtts.dsp import mel_filterbank

_LOGGER = logging.getLogger(__name__)

MEL_BINS = 80
_FMIN = 0.0
_FMAX = 8000.0
_LOG_FLOOR = 1e-5
_MAGNITUDE_EPS = 1e-9
# target rate -> (n_fft == window length, hop length); both give 50 frames per second
_STFT_SIZES = {24000: (1920, 480), 32000: (2560, 640)}
# Upstream resamples with torchaudio's default Resample: Hann-windowed sinc, 6 zero crossings.
_RESAMPLE_ZERO_CROSSINGS = 6
_RESAMPLE_ROLLOFF = 0.99


def hop_length(target_rate: int) -> int:
    """Audio samples per mel frame at `target_rate` (24 or 32 kHz)."""
    return _stft_size(target_rate)[1]


def audio_to_prompt_mel(audio: np.ndarray, sample_rate: int, target_rate: int, device: torch.device | str) -> torch.Tensor:
    """Mono audio -> float32 log mel [frames, 80] at `target_rate`, floor(samples / hop) frames.

    As upstream: resample, reflect-pad (n_fft - hop) / 2 on both sides, STFT without centering
    (periodic Hann window), magnitude sqrt(re^2 + im^2 + 1e-9), Slaney mel filters 0-8 kHz,
    log(clamp(x, 1e-5)).
    """
    n_fft, hop = _stft_size(target_rate)
    device = torch.device(device)
    wave = torch.as_tensor(np.asarray(audio, dtype=np.float32), device=device)
    if wave.ndim != 1:
        raise ValueError(f"prompt audio must be mono 1-D, got shape {tuple(wave.shape)}")
    if sample_rate != target_rate:
        wave = resample(wave, sample_rate, target_rate)
    pad = (n_fft - hop) // 2
    if wave.numel() <= pad:
        raise ValueError(f"prompt audio too short for a mel frame: {wave.numel()} samples")
    padded = F.pad(wave[None, None], (pad, pad), mode="reflect")[0]  # [1, samples + 2 pad]
    spec = torch.stft(
        padded,
        n_fft,
        hop_length=hop,
        win_length=n_fft,
        window=_hann_window(n_fft, device),
        center=False,
        return_complex=True,
    )  # [1, n_fft / 2 + 1, frames]
    magnitude = torch.sqrt(spec.real.square() + spec.imag.square() + _MAGNITUDE_EPS)
    mel = torch.matmul(_mel_filters(target_rate, n_fft, _FMAX, device), magnitude)  # [1, 80, frames]
    return torch.log(mel.clamp(min=_LOG_FLOOR))[0].T.contiguous()  # [frames, 80]


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """[samples] -> [ceil(samples * new / orig)]: the windowed-sinc resampler upstream uses
    (torchaudio's defaults), computed as a strided convolution with one filter per output phase."""
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return wave
    common = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // common, int(new_rate) // common
    kernel, width = _sinc_kernel(orig, new, wave.device)
    padded = F.pad(wave.float()[None, None], (width, width + orig))  # [1, 1, samples + pads]
    phases = F.conv1d(padded, kernel, stride=orig)  # [1, new, blocks]
    out = phases.transpose(1, 2).reshape(-1)
    # torchaudio rounds the target length through float32; keep that so lengths agree exactly.
    length = math.ceil(float(np.float32(new * wave.numel() / orig)))
    return out[:length]


def _stft_size(target_rate: int) -> tuple[int, int]:
    if target_rate not in _STFT_SIZES:
        raise ValueError(f"unsupported flow sample rate {target_rate}; use one of {sorted(_STFT_SIZES)}")
    return _STFT_SIZES[target_rate]


@functools.lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Filters [new, 1, taps] and the half width, for rates already divided by their gcd."""
    cutoff = min(orig, new) * _RESAMPLE_ROLLOFF
    width = math.ceil(_RESAMPLE_ZERO_CROSSINGS * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64) / orig  # [taps]
    # torchaudio forms the output phase offsets in float32 before mixing them with the float64 taps
    phase_offsets = (torch.arange(0, -new, -1, dtype=torch.float32)[:, None] / new).double()  # [new, 1]
    t = ((phase_offsets + taps) * cutoff).clamp(-_RESAMPLE_ZERO_CROSSINGS, _RESAMPLE_ZERO_CROSSINGS)
    window = torch.cos(t * math.pi / _RESAMPLE_ZERO_CROSSINGS / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernel = (sinc * window * (cutoff / orig)).float()[:, None, :]
    return kernel.to(device), width


@functools.lru_cache(maxsize=16)
def _mel_filters(sample_rate: int, n_fft: int, fmax: float, device: torch.device) -> torch.Tensor:
    """Slaney-normalised mel filters [80, n_fft / 2 + 1], cached per rate, size, fmax and device."""
    filters = mel_filterbank(sample_rate, n_fft, MEL_BINS, _FMIN, fmax, np.float32)
    return torch.from_numpy(filters).float().to(device)


@functools.lru_cache(maxsize=16)
def _hann_window(size: int, device: torch.device) -> torch.Tensor:
    return torch.hann_window(size, device=device)
