"""CAM++ speaker embedding (ONNX): prompt audio to the 192-dim speaker vector the flow is conditioned on.

Upstream computes 80-bin Kaldi fbank at 16 kHz (25 ms frames every 10 ms, povey window, pre-emphasis
0.97, DC removal, dither 0, on samples in [-1, 1]), subtracts its mean over time, feeds it as
[1, frames, 80] to the first input of `campplus.onnx` and flattens the first output, [1, 192].
"""

from __future__ import annotations

import logging
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import onnxruntime as ort
import torch

from glmtts.audio import resample
from glmtts.engines.glm.errors import CheckpointError

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FBANK_BINS = 80
EMBEDDING_DIM = 192
INPUT_NAME = "input"  # names in the official file; the loader takes the first input and output as upstream does
OUTPUT_NAME = "output"
ONNX_OPSET = 17
ONNX_IR_VERSION = 8


def audio_to_fbank(audio_16k: np.ndarray) -> np.ndarray:
    """Kaldi fbank [frames, 80] (float32) of mono 16 kHz audio, dither 0, mean over time subtracted."""
    options = knf.FbankOptions()
    options.frame_opts.samp_freq = SAMPLE_RATE
    options.frame_opts.dither = 0.0
    options.mel_opts.num_bins = FBANK_BINS
    fbank = knf.OnlineFbank(options)
    fbank.accept_waveform(SAMPLE_RATE, np.asarray(audio_16k, dtype=np.float32))
    fbank.input_finished()
    if fbank.num_frames_ready == 0:
        raise ValueError(f"audio of {len(audio_16k)} samples is too short for one fbank frame")
    frames = np.stack([fbank.get_frame(index) for index in range(fbank.num_frames_ready)])  # [frames, 80]
    return (frames - frames.mean(axis=0, keepdims=True)).astype(np.float32)


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
        features = audio_to_fbank(resample(np.asarray(audio, dtype=np.float32), sample_rate, SAMPLE_RATE))
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
    dense layers. Needs the `onnx` package (only this writer does).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if size not in _SIZES:
        raise ValueError(f"size must be one of {sorted(_SIZES)}, got {size!r}")
    convolutions, hidden = _SIZES[size]
    rng = np.random.default_rng(seed)
    initializers, nodes = [], []

    def weight(name: str, *shape: int, fan_in: int) -> str:
        values = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)  # He initialisation keeps ReLU activations in range
        initializers.append(numpy_helper.from_array(values.astype(np.float32), name))
        return name

    def zeros(name: str, width: int) -> str:
        initializers.append(numpy_helper.from_array(np.zeros(width, dtype=np.float32), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attributes: object) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

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
    epsilon = numpy_helper.from_array(np.array(1e-5, dtype=np.float32), "epsilon")
    initializers.append(epsilon)
    std = node("Sqrt", [node("Add", [variance, "epsilon"], "variance_eps")], "std")
    stats = node("Concat", [mean, std], "stats", axis=1)  # [B, 2C]
    w1 = weight("dense.weight", hidden, 2 * channels, fan_in=2 * channels)
    x = node("Relu", [node("Gemm", [stats, w1, zeros("dense.bias", hidden)], "dense", transB=1)], "dense_relu")
    w2 = weight("embedding.weight", EMBEDDING_DIM, hidden, fan_in=hidden)
    node("Gemm", [x, w2, zeros("embedding.bias", EMBEDDING_DIM)], OUTPUT_NAME, transB=1)  # [B, 192]

    graph = helper.make_graph(
        nodes,
        "campplus_random",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", "frames", FBANK_BINS])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", EMBEDDING_DIM])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], ir_version=ONNX_IR_VERSION)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
