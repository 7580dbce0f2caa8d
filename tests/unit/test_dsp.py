"""The embedded engine's numpy signal processing and speaker encoder against the libraries they replace."""

from __future__ import annotations

import collections
import pickle
import subprocess
import sys

import librosa
import numpy as np
import parselmouth
import pytest
import scipy.ndimage
import scipy.signal
import soundfile as sf
import torch

from glmtts import dsp
from glmtts.engines.embedded import speaker
from glmtts.engines.embedded.torch_legacy import read_legacy_checkpoint

RATE = speaker.ENCODER_SAMPLE_RATE
LIBRARIES = ("torch", "scipy", "librosa", "numba")


@pytest.fixture(scope="module")
def prompts(prompt_paths) -> list[np.ndarray]:
    """The four real prompts, mono float32 at 16 kHz."""
    loaded = []
    for path in prompt_paths.values():
        audio, rate = sf.read(path, dtype="float32")
        assert rate == RATE
        loaded.append(audio)
    return loaded


@pytest.fixture(scope="module")
def encoder() -> speaker.SpeakerEncoder:
    loaded = speaker.SpeakerEncoder()
    loaded.load("cpu")
    return loaded


def _noise(seed: int, length: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(length).astype(np.float32)


def test_the_app_on_the_embedded_engine_pulls_in_no_heavy_library():
    """Seconds of start-up each: the app's own modules and the embedded engine import none of them."""
    modules = "glmtts.engines.embedded, glmtts.audio, glmtts.service, glmtts.http, glmtts.ui"
    code = f"import sys, {modules}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())
    assert not loaded & set(LIBRARIES)


@pytest.mark.parametrize(("n_fft", "hop"), [(400, 160), (512, 128), (256, 100)])
def test_stft_matches_librosa(n_fft, hop, prompts):
    signals = [_noise(n_fft, length) for length in (n_fft, n_fft + 1, n_fft + 5 * hop + 7, 16000)] + prompts[:2]
    for signal in signals:
        expected = librosa.stft(signal, n_fft=n_fft, hop_length=hop)
        ours = dsp.stft(signal, n_fft, hop)
        assert ours.dtype == expected.dtype == np.complex64 and ours.shape == expected.shape
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    assert dsp.stft(signals[-1].astype(np.float64), n_fft, hop).dtype == np.complex128


@pytest.mark.parametrize(
    ("rate", "n_fft", "n_mels", "fmin", "fmax"),
    [(16000, 400, 40, 0.0, None), (16000, 512, 24, 60.0, 7800.0), (22050, 1024, 80, 0.0, 8000.0), (8000, 256, 32, 20.0, None)],
)
def test_mel_filterbank_and_frequencies_match_librosa(rate, n_fft, n_mels, fmin, fmax):
    expected = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    ours = dsp.mel_filterbank(rate, n_fft, n_mels, fmin, fmax)
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    np.testing.assert_array_equal(ours, expected)  # bit for bit, as the GLM-TTS parity needs
    top = rate / 2 if fmax is None else fmax
    np.testing.assert_allclose(
        dsp.mel_frequencies(n_mels, fmin, top), librosa.mel_frequencies(n_mels, fmin=fmin, fmax=top), rtol=1e-12
    )


def test_uniform_filter_matches_scipy():
    rng = np.random.default_rng(0)
    for length in (1, 5, 8, 9, 300):
        for size in (1, 2, 3, 7, 8, 12):
            for values in (rng.standard_normal(length), (rng.random(length) > 0.5).astype(np.float64)):
                expected = scipy.ndimage.uniform_filter1d(values, size, mode="constant")
                np.testing.assert_allclose(dsp.uniform_filter1d(values, size), expected, rtol=1e-12, atol=1e-12)
    single = rng.standard_normal(50).astype(np.float32)
    ours = dsp.uniform_filter1d(single, 8)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, scipy.ndimage.uniform_filter1d(single, 8, mode="constant"), rtol=1e-6, atol=1e-7)


def test_binary_dilation_matches_scipy():
    rng = np.random.default_rng(1)
    for length in (1, 4, 7, 200):
        for density in (0.02, 0.3):
            mask = rng.random(length) < density
            for width in (1, 3, 7, 9):
                expected = scipy.ndimage.binary_dilation(mask, np.ones(width, dtype=bool))
                np.testing.assert_array_equal(dsp.binary_dilation(mask, width), expected)
    with pytest.raises(ValueError, match="odd"):
        dsp.binary_dilation(np.ones(5, dtype=bool), 4)


def _assert_same_peaks(values: np.ndarray, height: float, prominence: float, distance: int) -> None:
    expected, _ = scipy.signal.find_peaks(values, height=height, prominence=prominence, distance=distance)
    np.testing.assert_array_equal(dsp.find_peaks(values, height=height, prominence=prominence, distance=distance), expected)


def test_find_peaks_matches_scipy_on_plateaus_and_ties():
    rng = np.random.default_rng(2)
    for trial in range(40):
        walk = np.round(rng.standard_normal(rng.integers(3, 400)).cumsum() * 2) / 2  # many plateaus and equal peaks
        for height in (walk.min() - 1, np.median(walk)):
            for prominence in (0.0, 0.5, 2.0):
                _assert_same_peaks(walk, height, prominence, distance=1 + trial % 7)
    _assert_same_peaks(np.array([0.0, 1.0, 1.0, 1.0, 0.0, 2.0, 2.0]), 0.0, 0.0, 1)  # flat top; a rise to the end
    _assert_same_peaks(np.zeros(10), 0.0, 0.0, 1)


def test_find_peaks_matches_scipy_on_real_intensity_contours(prompts):
    for audio in prompts:
        level = parselmouth.Sound(audio.astype(np.float64), sampling_frequency=RATE).to_intensity(100.0, 0.01).values[0]
        for dynamic_range, prominence, distance in ((25.0, 2.0, 5), (40.0, 0.5, 1), (15.0, 4.0, 12)):
            _assert_same_peaks(level, float(np.percentile(level, 99)) - dynamic_range, prominence, distance)


def _equaliser_design(rate: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies and gains like the voice matcher's equaliser: mel band centres, flat ends."""
    centres = dsp.mel_frequencies(26, 60.0, 7800.0)[1:-1]
    centres = centres[centres < rate / 2]
    gains = 10 ** (np.random.default_rng(seed).uniform(-12, 12, len(centres)) / 20)
    return np.concatenate([[0.0], centres, [rate / 2]]), np.concatenate([[gains[0]], gains, [gains[-1]]])


@pytest.mark.parametrize(("rate", "numtaps"), [(16000, 513), (22050, 513), (24000, 101), (44100, 255)])
def test_firwin2_matches_scipy(rate, numtaps):
    freqs, gains = _equaliser_design(rate, numtaps)
    expected = scipy.signal.firwin2(numtaps, freqs, gains, fs=rate)
    np.testing.assert_allclose(dsp.firwin2(numtaps, freqs, gains, rate), expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_firwin2_refuses_what_it_does_not_implement():
    with pytest.raises(ValueError, match="odd"):
        dsp.firwin2(512, [0.0, 8000.0], [1.0, 1.0], 16000)
    with pytest.raises(ValueError, match="rise"):
        dsp.firwin2(513, [0.0, 1000.0, 1000.0, 8000.0], [1.0, 1.0, 0.5, 0.5], 16000)


def test_convolve_same_matches_scipy(prompts):
    rng = np.random.default_rng(3)
    freqs, gains = _equaliser_design(RATE, 0)
    taps = dsp.firwin2(513, freqs, gains, RATE)
    cases = [(prompts[0].astype(np.float64), taps)] + [
        (rng.standard_normal(n), rng.standard_normal(m)) for n, m in ((480, 513), (1, 5), (1000, 1), (999, 64), (20000, 513))
    ]
    for signal, kernel in cases:
        expected = scipy.signal.oaconvolve(signal, kernel, mode="same")
        ours = dsp.convolve_same(signal, kernel)
        assert ours.shape == signal.shape
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_the_legacy_reader_returns_exactly_what_torch_loads(encoder):
    expected = torch.load(encoder.weights_path, map_location="cpu", weights_only=True)["model_state"]
    ours = read_legacy_checkpoint(encoder.weights_path)
    assert list(ours) == list(expected)
    for name, tensor in expected.items():
        assert ours[name].dtype == np.float32 and np.array_equal(ours[name], tensor.numpy()), name


def test_the_legacy_reader_handles_views_and_refuses_foreign_content(tmp_path, encoder):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = collections.OrderedDict(columns=base[:, 1:3], transposed=base.T, row=base[2], other=torch.ones(3))
    path = tmp_path / "legacy.pt"
    torch.save({"model_state": state, "step": 1}, path, _use_new_zipfile_serialization=False)
    read = read_legacy_checkpoint(path)
    assert all(np.array_equal(read[name], tensor.numpy()) for name, tensor in state.items())

    header = b"".join(pickle.dumps(part, protocol=2) for part in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    path.write_bytes(header + pickle.dumps({"model_state": {"x": print}}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="print is not allowed"):
        read_legacy_checkpoint(path)

    path.write_bytes(encoder.weights_path.read_bytes()[:3_000_000])  # cut inside the LSTM weights' storage
    with pytest.raises(ValueError, match="truncated"):
        read_legacy_checkpoint(path)


def test_the_weights_are_checked_strictly(encoder):
    state = read_legacy_checkpoint(encoder.weights_path)
    assert set(speaker._checked_state(state)) == set(state) - set(speaker._TRAINING_ONLY_KEYS)
    with pytest.raises(RuntimeError, match="missing \\['linear.bias'\\]"):
        speaker._checked_state({name: array for name, array in state.items() if name != "linear.bias"})
    with pytest.raises(RuntimeError, match="unexpected \\['lstm.weight_ih_l3'\\]"):
        speaker._checked_state({**state, "lstm.weight_ih_l3": state["lstm.weight_ih_l2"]})
    with pytest.raises(RuntimeError, match="shapes"):
        speaker._checked_state({**state, "linear.bias": state["linear.bias"][:-1]})


def _torch_d_vectors(encoder: speaker.SpeakerEncoder, batch: np.ndarray) -> np.ndarray:
    """The encoder as it was: torch's LSTM and Linear on the weights torch loads."""
    state = torch.load(encoder.weights_path, map_location="cpu", weights_only=True)["model_state"]
    lstm = torch.nn.LSTM(40, 256, 3, batch_first=True)
    linear = torch.nn.Linear(256, 256)
    lstm.load_state_dict({name[5:]: value for name, value in state.items() if name.startswith("lstm.")})
    linear.load_state_dict({name[7:]: value for name, value in state.items() if name.startswith("linear.")})
    with torch.inference_mode():
        _, (hidden, _) = lstm(torch.from_numpy(batch))
        return torch.nn.functional.normalize(torch.relu(linear(hidden[-1])), dim=1).numpy()


def test_the_numpy_d_vector_matches_torch_on_a_real_prompt(encoder, prompts):
    audio = prompts[0]
    mel = encoder._mel(speaker._preprocess(audio, RATE))
    batch = np.stack([mel[start : start + 160] for start in speaker._partial_starts(len(mel))])
    expected = _torch_d_vectors(encoder, batch)
    ours = encoder._net(batch)
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-6)
    mean = expected.mean(axis=0)
    assert float(encoder.embed(audio, RATE) @ (mean / np.linalg.norm(mean))) > 0.99999


def test_the_encoder_mel_matches_librosa(encoder, prompts):
    wav = speaker._preprocess(prompts[1], RATE)
    spectrum = np.abs(librosa.stft(wav, n_fft=400, hop_length=160)) ** 2
    expected = (librosa.filters.mel(sr=RATE, n_fft=400, n_mels=40) @ spectrum).T
    np.testing.assert_allclose(encoder._mel(wav), expected, rtol=1e-5, atol=1e-6 * expected.max())
