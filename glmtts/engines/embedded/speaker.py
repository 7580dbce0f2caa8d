"""Speaker d-vectors and prompt checks for the embedded engine.

The encoder is the GE2E d-vector LSTM that ships inside the `resemblyzer` wheel (`pretrained.pt`,
40 mel channels at 16 kHz in, 256-dim unit vector out). We read its weights ourselves, without torch
and strictly, run the network in numpy, and do the preprocessing ourselves (resample from the
prompt's own rate, level, VAD trimming, partial windows) so that nothing prints, downloads or picks
a device on its own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import parselmouth
import webrtcvad
from threadpoolctl import threadpool_limits

from glmtts.audio import resample
from glmtts.dsp import binary_dilation, mel_filterbank, stft, uniform_filter1d
from glmtts.engines.embedded.torch_legacy import read_legacy_checkpoint
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
_WEIGHT_SHAPES = {
    **{f"lstm.weight_ih_l{k}": (4 * _HIDDEN, _N_MELS if k == 0 else _HIDDEN) for k in range(_LAYERS)},
    **{f"lstm.weight_hh_l{k}": (4 * _HIDDEN, _HIDDEN) for k in range(_LAYERS)},
    **{f"lstm.bias_{kind}_l{k}": (4 * _HIDDEN,) for kind in ("ih", "hh") for k in range(_LAYERS)},
    "linear.weight": (EMBEDDING_DIM, _HIDDEN),
    "linear.bias": (EMBEDDING_DIM,),
}

# Prompt checks.
MIN_PROMPT_SECONDS = 1.0
MIN_VOICED_SECONDS = 1.0
_SILENCE_PEAK = 10 ** (-60 / 20)  # peak below -60 dBFS counts as silence
_CLIP_LEVEL = 0.99
_MAX_CLIPPED_FRACTION = 0.05
_PITCH_FLOOR_HZ = 60.0
_PITCH_CEILING_HZ = 600.0
_PITCH_STEP_S = 0.01


def _checked_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inference weights, after checking that names and shapes are exactly the network's."""
    state = {name: array for name, array in state.items() if name not in _TRAINING_ONLY_KEYS}
    missing, unexpected = _WEIGHT_SHAPES.keys() - state.keys(), state.keys() - _WEIGHT_SHAPES.keys()
    if missing or unexpected:
        raise RuntimeError(f"Speaker encoder weights: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    wrong = [name for name, shape in _WEIGHT_SHAPES.items() if state[name].shape != shape]
    if wrong:
        raise RuntimeError(f"Speaker encoder weights with unexpected shapes: {wrong}")
    return state


_BLAS_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """numpy's BLAS on one thread: threads that wait for each other's cores on a busy machine make the
    encoder's small products many times slower. One caller at a time, so each restores what it found."""
    with _BLAS_LIMIT_LOCK, threadpool_limits(limits=1, user_api="blas"):
        yield


def _gate_blocks(weights: np.ndarray) -> np.ndarray:
    """torch's LSTM gate blocks (input, forget, cell, output) reordered to (input, forget, output, cell),
    the three sigmoid gates halved (exactly), so that one tanh gives all four: sigmoid(x) = (1 + tanh(x / 2)) / 2."""
    input_gate, forget_gate, cell_input, output_gate = np.split(weights, 4)
    return np.concatenate([0.5 * input_gate, 0.5 * forget_gate, 0.5 * output_gate, cell_input])


class _DVectorNet:
    """LSTM over mel frames; the last layer's final hidden state, projected, is the d-vector.

    torch's `nn.LSTM(40, 256, 3, batch_first=True)` + `nn.Linear(256, 256)` + ReLU + L2 normalisation,
    in float32 numpy, zero initial state. Arrays are feature-major, (features, frames, batch), so that
    each step's product is one (4 * hidden, hidden) x (hidden, batch) matrix product.
    """

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self._layers = [
            (
                _gate_blocks(state[f"lstm.weight_ih_l{k}"]),  # (4 * hidden, inputs)
                _gate_blocks(state[f"lstm.weight_hh_l{k}"]),  # (4 * hidden, hidden)
                _gate_blocks(state[f"lstm.bias_ih_l{k}"] + state[f"lstm.bias_hh_l{k}"])[:, None],
            )
            for k in range(_LAYERS)
        ]
        self._linear_weight = state["linear.weight"]  # (256, hidden)
        self._linear_bias = state["linear.bias"][:, None]

    def __call__(self, mels: np.ndarray) -> np.ndarray:
        """(batch, frames, 40) power mel -> (batch, 256) unit vectors."""
        batch, n_frames, _ = mels.shape
        sequence = np.ascontiguousarray(mels.transpose(2, 1, 0), dtype=np.float32)  # (40, frames, batch)
        with _single_threaded_blas():
            for input_weight, hidden_weight, bias in self._layers:
                input_gates = input_weight @ sequence.reshape(len(sequence), -1) + bias  # all frames at once
                sequence = self._recurrence(input_gates.reshape(-1, n_frames, batch), hidden_weight)
        embeds = np.maximum(self._linear_weight @ sequence[:, -1] + self._linear_bias, 0.0)  # (256, batch)
        return (embeds / np.maximum(np.linalg.norm(embeds, axis=0), 1e-12)).T

    @staticmethod
    def _recurrence(input_gates: np.ndarray, hidden_weight: np.ndarray) -> np.ndarray:
        """(4 * hidden, frames, batch) input projections -> (hidden, frames, batch) hidden states."""
        _, n_frames, batch = input_gates.shape
        outputs = np.empty((_HIDDEN, n_frames, batch), dtype=np.float32)
        hidden = np.zeros((_HIDDEN, batch), dtype=np.float32)
        cell = np.zeros((_HIDDEN, batch), dtype=np.float32)
        gates = np.empty((4 * _HIDDEN, batch), dtype=np.float32)
        input_gate, forget_gate, output_gate, cell_input = np.split(gates, 4)  # views into `gates`
        sigmoid_gates = gates[: 3 * _HIDDEN]
        for t in range(n_frames):
            np.matmul(hidden_weight, hidden, out=gates)
            gates += input_gates[:, t]
            np.tanh(gates, out=gates)
            sigmoid_gates *= 0.5
            sigmoid_gates += 0.5
            cell *= forget_gate
            cell += input_gate * cell_input
            hidden = outputs[:, t]
            np.tanh(cell, out=hidden)
            hidden *= output_gate
        return outputs


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
    smoothed = uniform_filter1d(flags, _VAD_SMOOTHING) >= 0.5
    keep = binary_dilation(smoothed, _VAD_MAX_SILENCE + 1)
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
        self._mel_basis = mel_filterbank(ENCODER_SAMPLE_RATE, _N_FFT, _N_MELS)  # (40, 201)

    @property
    def weights_path(self) -> Path:
        """The bundled resemblyzer weights, found without importing the package (it imports torch)."""
        spec = importlib.util.find_spec("resemblyzer")
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError("The resemblyzer wheel, which holds the speaker encoder's weights, is not installed")
        return Path(spec.submodule_search_locations[0]) / "pretrained.pt"

    def load(self, device: str = "cpu") -> None:
        """Load the bundled resemblyzer weights, failing on any key or shape mismatch; the network runs in
        numpy on the CPU whatever `device` says."""
        self._net = _DVectorNet(_checked_state(read_legacy_checkpoint(self.weights_path)))
        _LOGGER.info("Speaker encoder loaded")

    def _mel(self, wav: np.ndarray) -> np.ndarray:
        """16 kHz audio -> (frames, 40) power mel, as the encoder was trained on."""
        power = np.abs(stft(wav, _N_FFT, _HOP)) ** 2
        return (self._mel_basis @ power).T.astype(np.float32)

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
        partials = self._net(batch)  # (n, 256)
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
