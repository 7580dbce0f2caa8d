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
ONNX_OPSET = 17
ONNX_IR_VERSION = 8


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


# (out_channels, kernel, dilation) of the convolutions, then the width of the hidden dense layer.
_SIZES = {
    "tiny": ([(32, 3, 1), (32, 3, 2)], 64),
    # A TDNN of about the official size (28 MB, ~7M parameters): only the I/O contract is official.
    "full": ([(704, 5, 1), (704, 3, 2), (704, 3, 3), (704, 1, 1), (1536, 1, 1)], 704),
}


def write_random_campplus(path: Path, size: str, seed: int = 0) -> Path:
    """Write a random ONNX speaker model with the official I/O: "input" [batch, frames, 80] -> "output" [batch, 192].

    A stand-in, not CAM++: convolutions + ReLU over time, mean and standard deviation pooling, two
    dense layers. The ONNX file is encoded here (`_OnnxGraph`), so no `onnx` package is needed.
    """
    if size not in _SIZES:
        raise ValueError(f"size must be one of {sorted(_SIZES)}, got {size!r}")
    convolutions, hidden = _SIZES[size]
    rng = np.random.default_rng(seed)
    graph = _OnnxGraph()

    def weight(name: str, *shape: int, fan_in: int) -> str:
        values = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)  # He initialisation keeps ReLU activations in range
        return graph.initializer(name, values.astype(np.float32))

    def zeros(name: str, width: int) -> str:
        return graph.initializer(name, np.zeros(width, dtype=np.float32))

    node = graph.node
    x = node("Transpose", [INPUT_NAME], "features", perm=[0, 2, 1])  # [B, 80, T]
    channels = FBANK_BINS
    for index, (width, kernel, dilation) in enumerate(convolutions):
        pad = dilation * (kernel - 1) // 2
        w = weight(f"conv{index}.weight", width, channels, kernel, fan_in=channels * kernel)
        b = zeros(f"conv{index}.bias", width)
        x = node("Conv", [x, w, b], f"conv{index}", kernel_shape=[kernel], dilations=[dilation], pads=[pad, pad])
        x = node("Relu", [x], f"relu{index}")  # [B, width, T]
        channels = width
    mean = node("ReduceMean", [x], "mean", axes=[2], keepdims=0)  # [B, C]
    mean_square = node("ReduceMean", [node("Mul", [x, x], "square")], "mean_square", axes=[2], keepdims=0)
    variance = node("Relu", [node("Sub", [mean_square, node("Mul", [mean, mean], "mean_squared")], "variance_raw")], "variance")
    graph.initializer("epsilon", np.array(1e-5, dtype=np.float32))
    std = node("Sqrt", [node("Add", [variance, "epsilon"], "variance_eps")], "std")
    stats = node("Concat", [mean, std], "stats", axis=1)  # [B, 2C]
    w1 = weight("dense.weight", hidden, 2 * channels, fan_in=2 * channels)
    x = node("Relu", [node("Gemm", [stats, w1, zeros("dense.bias", hidden)], "dense", transB=1)], "dense_relu")
    w2 = weight("embedding.weight", EMBEDDING_DIM, hidden, fan_in=hidden)
    node("Gemm", [x, w2, zeros("embedding.bias", EMBEDDING_DIM)], OUTPUT_NAME, transB=1)  # [B, 192]

    model = graph.model(
        "campplus_random",
        inputs=[(INPUT_NAME, ["batch", "frames", FBANK_BINS])],
        outputs=[(OUTPUT_NAME, ["batch", EMBEDDING_DIM])],
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model)
    return path


# ONNX protobuf field numbers (onnx.proto): enough of the schema for a float graph of plain ops.
_WIRE_VARINT, _WIRE_BYTES = 0, 2
_ONNX_FLOAT = 1  # TensorProto.DataType and TypeProto.Tensor.elem_type
_ATTRIBUTE_INT, _ATTRIBUTE_INTS = 2, 7  # AttributeProto.AttributeType


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 as two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3 | _WIRE_VARINT) + _varint(value)


def _field_bytes(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | _WIRE_BYTES) + _varint(len(data)) + data


class _OnnxGraph:
    """Builds the bytes of an ONNX ModelProto: nodes with int / ints attributes, float initializers,
    float inputs and outputs with named or fixed dimensions."""

    def __init__(self) -> None:
        self._nodes: list[bytes] = []
        self._initializers: list[bytes] = []

    def initializer(self, name: str, values: np.ndarray) -> str:
        values = np.ascontiguousarray(values, dtype="<f4")
        tensor = b"".join(_field_varint(1, dim) for dim in values.shape)  # dims
        tensor += _field_varint(2, _ONNX_FLOAT) + _field_bytes(8, name) + _field_bytes(9, values.tobytes())
        self._initializers.append(tensor)
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes: int | list[int]) -> str:
        body = b"".join(_field_bytes(1, name) for name in inputs) + _field_bytes(2, output)
        body += _field_bytes(3, output) + _field_bytes(4, op)
        for name, value in attributes.items():
            if isinstance(value, list):
                attribute = _field_bytes(1, name) + b"".join(_field_varint(8, v) for v in value)
                attribute += _field_varint(20, _ATTRIBUTE_INTS)
            else:
                attribute = _field_bytes(1, name) + _field_varint(3, int(value)) + _field_varint(20, _ATTRIBUTE_INT)
            body += _field_bytes(5, attribute)
        self._nodes.append(body)
        return output

    def model(self, name: str, inputs: list[tuple[str, list]], outputs: list[tuple[str, list]]) -> bytes:
        graph = b"".join(_field_bytes(1, node) for node in self._nodes) + _field_bytes(2, name)
        graph += b"".join(_field_bytes(5, tensor) for tensor in self._initializers)
        graph += b"".join(_field_bytes(11, _value_info(*value)) for value in inputs)
        graph += b"".join(_field_bytes(12, _value_info(*value)) for value in outputs)
        opset = _field_bytes(1, "") + _field_varint(2, ONNX_OPSET)
        return _field_varint(1, ONNX_IR_VERSION) + _field_bytes(2, "glmtts") + _field_bytes(7, graph) + _field_bytes(8, opset)


def _value_info(name: str, dims: list[int | str]) -> bytes:
    shape = b"".join(_field_bytes(1, _field_bytes(2, dim) if isinstance(dim, str) else _field_varint(1, dim)) for dim in dims)
    tensor_type = _field_varint(1, _ONNX_FLOAT) + _field_bytes(2, shape)
    return _field_bytes(1, name) + _field_bytes(2, _field_bytes(1, tensor_type))
