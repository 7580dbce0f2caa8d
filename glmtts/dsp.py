"""The few signal-processing routines the engines need, on numpy alone.

Each one computes what the library function named in its docstring computes (librosa >= 0.10,
scipy), for the arguments used here, so that importing an engine pulls in neither scipy nor librosa
(seconds of start-up).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above.
_MEL_HZ_PER_MEL = 200.0 / 3
_MEL_LOG_START_HZ = 1000.0
_MEL_LOG_START = _MEL_LOG_START_HZ / _MEL_HZ_PER_MEL
_MEL_LOG_STEP = math.log(6.4) / 27.0


def stft(signal: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """`librosa.stft(signal, n_fft=n_fft, hop_length=hop_length)`: periodic Hann window, frames centred
    on multiples of `hop_length` with zero padding; (1 + n_fft // 2, frames), complex64 for float32 input."""
    signal = np.asarray(signal)
    padded = np.pad(signal.astype(np.float64), n_fft // 2)
    frames = sliding_window_view(padded, n_fft)[::hop_length]  # (frames, n_fft)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    spectrum = np.fft.rfft(frames * window, axis=1).T
    return spectrum.astype(np.result_type(signal.dtype, np.complex64))


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """`librosa.hz_to_mel` (Slaney scale)."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _MEL_HZ_PER_MEL
    logarithmic = _MEL_LOG_START + np.log(np.maximum(hz, _MEL_LOG_START_HZ) / _MEL_LOG_START_HZ) / _MEL_LOG_STEP
    return np.where(hz >= _MEL_LOG_START_HZ, logarithmic, linear)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """`librosa.mel_to_hz` (Slaney scale)."""
    mels = np.asarray(mels, dtype=np.float64)
    linear = mels * _MEL_HZ_PER_MEL
    logarithmic = _MEL_LOG_START_HZ * np.exp(_MEL_LOG_STEP * (np.maximum(mels, _MEL_LOG_START) - _MEL_LOG_START))
    return np.where(mels >= _MEL_LOG_START, logarithmic, linear)


def mel_frequencies(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """`librosa.mel_frequencies(n_mels, fmin=fmin, fmax=fmax)`: `n_mels` frequencies (Hz) evenly spaced in mels."""
    return _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels))


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None, dtype: type = np.float32
) -> np.ndarray:
    """`librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=dtype)`:
    triangular filters on the Slaney mel scale, each scaled to unit area in Hz, (n_mels, 1 + n_fft // 2).
    Bit for bit: the triangles are computed in float64 and stored into `dtype`, then scaled, as librosa does."""
    edges = mel_frequencies(n_mels + 2, fmin, sample_rate / 2 if fmax is None else fmax)  # (n_mels + 2,)
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)  # (1 + n_fft // 2,)
    widths = np.diff(edges)
    ramps = np.subtract.outer(edges, bins)
    weights = np.zeros((n_mels, len(bins)), dtype=dtype)
    for index in range(n_mels):
        rising = -ramps[index] / widths[index]
        falling = ramps[index + 2] / widths[index + 1]
        weights[index] = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, np.newaxis]
    return weights


def uniform_filter1d(values: np.ndarray, size: int) -> np.ndarray:
    """`scipy.ndimage.uniform_filter1d(values, size, mode="constant")` for 1-D float input: the mean of
    values[i - size // 2 : i - size // 2 + size], with zeros outside."""
    values = np.asarray(values)
    left = size // 2
    padded = np.pad(values.astype(np.float64), (left, size - 1 - left))
    return sliding_window_view(padded, size).mean(axis=1).astype(values.dtype)


def binary_dilation(mask: np.ndarray, width: int) -> np.ndarray:
    """`scipy.ndimage.binary_dilation(mask, np.ones(width, bool))` for 1-D input and odd `width`:
    True wherever a True sample lies within width // 2 samples."""
    if width % 2 == 0:
        raise ValueError(f"width must be odd, not {width}")
    padded = np.pad(np.asarray(mask, dtype=bool), width // 2)
    return sliding_window_view(padded, width).any(axis=1)


def find_peaks(values: np.ndarray, *, height: float, prominence: float, distance: int) -> np.ndarray:
    """Indices that `scipy.signal.find_peaks(values, height=height, prominence=prominence, distance=distance)`
    returns: local maxima (a flat top counts once, at its middle, rounded down) at least `height` high,
    thinned to one per `distance` samples keeping the highest, then those at least `prominence` above
    the higher of the lowest points between them and a higher sample on either side."""
    values = np.asarray(values, dtype=np.float64)
    peaks = _local_maxima(values)
    peaks = peaks[values[peaks] >= height]
    peaks = peaks[_spaced_by(peaks, values[peaks], distance)]
    return peaks[_prominences(values, peaks) >= prominence]


def _local_maxima(values: np.ndarray) -> np.ndarray:
    """Middles of the runs of equal samples that are higher than the samples just outside them."""
    run_starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    run_ends = np.append(run_starts[1:], len(values)) - 1
    inner = (run_starts > 0) & (run_ends < len(values) - 1)
    run_starts, run_ends = run_starts[inner], run_ends[inner]
    higher = (values[run_starts - 1] < values[run_starts]) & (values[run_ends + 1] < values[run_ends])
    return (run_starts[higher] + run_ends[higher]) // 2


def _spaced_by(peaks: np.ndarray, heights: np.ndarray, distance: int) -> np.ndarray:
    """Mask of the peaks kept when, highest first, each kept peak drops the others closer than `distance`."""
    keep = np.ones(len(peaks), dtype=bool)
    for j in np.argsort(heights)[::-1]:  # same order as scipy's, ties included
        if keep[j]:
            close = np.abs(peaks - peaks[j]) < distance
            close[j] = False
            keep &= ~close
    return keep


def _prominences(values: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """`scipy.signal.peak_prominences(values, peaks)[0]`, without a window length."""
    prominences = np.empty(len(peaks))
    for n, peak in enumerate(peaks):
        top = values[peak]
        higher_left = np.flatnonzero(values[:peak] > top)
        higher_right = np.flatnonzero(values[peak + 1 :] > top)
        start = higher_left[-1] + 1 if len(higher_left) else 0
        stop = peak + 1 + higher_right[0] if len(higher_right) else len(values)
        prominences[n] = top - max(values[start : peak + 1].min(), values[peak:stop].min())
    return prominences


def firwin2(numtaps: int, freqs: np.ndarray, gains: np.ndarray, sample_rate: float) -> np.ndarray:
    """`scipy.signal.firwin2(numtaps, freqs, gains, fs=sample_rate)` for odd `numtaps` and strictly rising
    `freqs` from 0 to the Nyquist frequency: the gains interpolated on a uniform grid, inverse-FFT'd,
    delayed to linear phase and shaped by a Hamming window."""
    freqs, gains = np.asarray(freqs, dtype=np.float64), np.asarray(gains, dtype=np.float64)
    nyquist = sample_rate / 2
    if numtaps % 2 == 0 or numtaps < 3:
        raise ValueError(f"numtaps must be odd and at least 3, not {numtaps}")
    if freqs[0] != 0 or freqs[-1] != nyquist or np.any(np.diff(freqs) <= 0) or len(freqs) != len(gains):
        raise ValueError("freqs must rise strictly from 0 to the Nyquist frequency, one gain each")
    grid = np.linspace(0.0, nyquist, 1 + 2 ** math.ceil(math.log2(numtaps)))
    delay = np.exp(-(numtaps - 1) / 2 * 1j * np.pi * grid / nyquist)
    response = np.fft.irfft(np.interp(grid, freqs, gains) * delay)
    return response[:numtaps] * np.hamming(numtaps)


def convolve_same(signal: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """`scipy.signal.oaconvolve(signal, kernel, mode="same")` (or fftconvolve) for 1-D float input: the
    full convolution's middle len(signal) samples."""
    signal, kernel = np.asarray(signal, dtype=np.float64), np.asarray(kernel, dtype=np.float64)
    full_length = len(signal) + len(kernel) - 1
    size = 1 << (full_length - 1).bit_length()
    full = np.fft.irfft(np.fft.rfft(signal, size) * np.fft.rfft(kernel, size), size)
    start = (len(kernel) - 1) // 2
    return full[start : start + len(signal)]
