"""CAM++ speaker embedding (ONNX): prompt audio to the 192-dim speaker vector the flow is conditioned on.

Upstream resamples the prompt file to 16 kHz (torchaudio's resampler), computes 80-bin Kaldi fbank
with torchaudio (25 ms frames every 10 ms, povey window, pre-emphasis 0.97, DC removal, dither 0, on
samples in [-1, 1]), subtracts its mean over time, feeds it as [1, frames, 80] to the first input of
`campplus.onnx` and flattens the first output, [1, 192]. `audio_to_fbank` is that fbank in torch.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

from glmtts.engines.glm.errors import CheckpointError
from glmtts.engines.glm.mel import resample

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FBANK_BINS = 80
EMBEDDING_DIM = 192
INPUT_NAME = "input"  # names in the official file; the loader takes the first input and output as upstream does
OUTPUT_NAME = "output"


FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512  # the frame length rounded up to a power of two
PREEMPHASIS = 0.97
POVEY_POWER = 0.85
LOW_HZ = 20.0
_LOG_FLOOR = torch.finfo(torch.float32).eps


def audio_to_fbank(audio_16k: np.ndarray) -> np.ndarray:
    """Kaldi fbank [frames, 80] (float32) of mono 16 kHz audio, dither 0, mean over time subtracted:
    torchaudio.compliance.kaldi.fbank(num_mel_bins=80, dither=0, sample_frequency=16000) with its
    defaults (snip edges, DC removal, pre-emphasis, povey window, power spectrum, log), op for op."""
    wave = torch.as_tensor(np.asarray(audio_16k, dtype=np.float32)).reshape(-1)
    count = 1 + (wave.numel() - FRAME_LENGTH) // FRAME_SHIFT
    if wave.numel() < FRAME_LENGTH or count < 1:
        raise ValueError(f"audio of {wave.numel()} samples is too short for one fbank frame")
    frames = wave.as_strided((count, FRAME_LENGTH), (FRAME_SHIFT, 1))  # [frames, 400]
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = F.pad(frames[None], (1, 0), mode="replicate")[0, :, :-1]  # each sample's predecessor, the first its own
    frames = frames - PREEMPHASIS * previous
    frames = frames * torch.hann_window(FRAME_LENGTH, periodic=False).pow(POVEY_POWER)[None]
    frames = F.pad(frames, (0, FFT_SIZE - FRAME_LENGTH))
    power = torch.fft.rfft(frames).abs().pow(2.0)  # [frames, 257]
    energies = torch.mm(power, _kaldi_mel_banks().T)
    fbank = torch.max(energies, torch.tensor(_LOG_FLOOR)).log()
    return (fbank - fbank.mean(dim=0, keepdim=True)).numpy().astype(np.float32)


def _kaldi_mel(hz: float | torch.Tensor) -> float | torch.Tensor:
    if isinstance(hz, torch.Tensor):
        return 1127.0 * (1.0 + hz / 700.0).log()
    return 1127.0 * math.log(1.0 + hz / 700.0)


def _kaldi_mel_banks() -> torch.Tensor:
    """[80, 257] Kaldi's triangular filters, equally spaced on its mel scale from 20 Hz to Nyquist,
    computed in float32 as torchaudio does (the Nyquist bin gets no weight)."""
    low, high = _kaldi_mel(LOW_HZ), _kaldi_mel(SAMPLE_RATE / 2)
    delta = (high - low) / (FBANK_BINS + 1)
    index = torch.arange(FBANK_BINS).unsqueeze(1)
    left, center, right = low + index * delta, low + (index + 1.0) * delta, low + (index + 2.0) * delta
    mel = _kaldi_mel(SAMPLE_RATE / FFT_SIZE * torch.arange(FFT_SIZE / 2)).unsqueeze(0)
    banks = torch.max(torch.zeros(1), torch.min((mel - left) / (center - left), (right - mel) / (right - center)))
    return F.pad(banks, (0, 1))


def _providers(device: torch.device) -> list:
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        _LOGGER.warning("onnxruntime has no CUDA provider here; CAM++ runs on the CPU")
    return ["CPUExecutionProvider"]


def _static_dim(dim: object) -> int | None:
    return dim if isinstance(dim, int) else None


class CamPlusSpeaker:
    """Owns the CAM++ onnxruntime session and turns prompt audio into a speaker embedding."""

    def __init__(self, session: ort.InferenceSession, path: Path) -> None:
        self._session = session
        self._input_name = session.get_inputs()[0].name
        self.path = path

    @classmethod
    def load(cls, onnx_path: Path | str, device: torch.device | str) -> CamPlusSpeaker:
        """Open `campplus.onnx` on `device` (CUDA provider when asked for and present, else the CPU)."""
        path = Path(onnx_path)
        if not path.is_file():
            raise CheckpointError(f"{path}: missing CAM++ speaker model")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=_providers(torch.device(device)))
        except Exception as error:  # onnxruntime raises its own error types for a bad file
            raise CheckpointError(f"{path}: not a loadable ONNX model ({error})") from error
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 3 or _static_dim(inputs[0].shape[2]) not in (None, FBANK_BINS):
            shapes = [i.shape for i in inputs]
            raise CheckpointError(f"{path}: expected one input of shape [batch, frames, {FBANK_BINS}], got {shapes}")
        if not outputs or _static_dim(outputs[0].shape[-1]) not in (None, EMBEDDING_DIM):
            shapes = [o.shape for o in outputs]
            raise CheckpointError(f"{path}: expected an output of shape [batch, {EMBEDDING_DIM}], got {shapes}")
        _LOGGER.info("CAM++ loaded from %s on %s", path, session.get_providers()[0])
        return cls(session, path)

    def audio_to_embedding(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Speaker embedding [192] (float32) of mono audio at `sample_rate`."""
        # torchaudio's resampler, from the prompt's own rate, as upstream's loader does
        audio_16k = resample(torch.from_numpy(np.asarray(audio, dtype=np.float32)), sample_rate, SAMPLE_RATE).numpy()
        features = audio_to_fbank(audio_16k)
        embedding = self._session.run(None, {self._input_name: features[None]})[0].reshape(-1)  # [192]
        if embedding.size != EMBEDDING_DIM:
            raise CheckpointError(f"{self.path}: produced {embedding.size} values, expected {EMBEDDING_DIM}")
        return embedding.astype(np.float32)
