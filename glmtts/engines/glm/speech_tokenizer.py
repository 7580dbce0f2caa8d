"""WhisperVQ speech tokenizer: prompt audio to GLM-TTS speech tokens (25 per second).

Official layout of `speech_tokenizer/`: `config.json` (a Whisper config with the VQ fields),
`preprocessor_config.json` (Whisper feature extractor) and `model.safetensors` (keys `model.encoder.*`).

What produces a token: Whisper log-mel (128 bins, 100 frames/s) -> conv1 (k3) + GELU -> conv2 (k3,
stride 2) + GELU -> plus the positional table -> the first `quantize_position` pre-norm Whisper
encoder layers with block-causal attention (a 50 Hz frame sees every earlier frame and every frame of
its own block of `quantize_causal_block_size` frames; padding frames are never seen) -> average
pooling by `pooling_kernel_size` -> index of the nearest codebook row in squared L2 distance (no
projection and no layer norm before it). Audio is cut into 30 s chunks, each zero-padded to a whole
number of tokens; tokens of padding are dropped.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from glmtts.engines.glm.errors import CheckpointError
from glmtts.engines.glm.mel import resample
from glmtts.engines.glm.whisper_features import HOP_LENGTH, N_FFT, SAMPLE_RATE, whisper_log_mel

_LOGGER = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
WEIGHTS_FILE = "model.safetensors"
KEY_PREFIX = "model.encoder."
CONV_STRIDE = 2  # conv1 stride 1 x conv2 stride 2: mel frames per encoder frame
CODEBOOK_KEY = "codebook.weight"
# Keys of the official file that tokens do not use: the post-VQ positional table, the EMA state
# of the codebook training and the final layer norm (after all encoder layers).
UNUSED_KEYS = frozenset({"embed_positions2.weight", "ema_count", "ema_weight", "layer_norm.weight", "layer_norm.bias"})


@dataclass(frozen=True)
class SpeechTokenizerConfig:
    """The values of `config.json` and `preprocessor_config.json` that the tokenizer depends on."""

    d_model: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    encoder_layers: int
    num_mel_bins: int
    max_source_positions: int
    pooling_kernel_size: int
    quantize_position: int
    quantize_vocab_size: int
    quantize_causal_block_size: int
    sampling_rate: int
    hop_length: int

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per encoder frame (50 Hz)."""
        return self.hop_length * CONV_STRIDE

    @property
    def samples_per_token(self) -> int:
        return self.samples_per_frame * self.pooling_kernel_size

    @property
    def chunk_samples(self) -> int:
        """Longest audio the positional table covers (30 s officially)."""
        return self.max_source_positions * self.samples_per_frame

    @classmethod
    def from_dir(cls, directory: Path) -> SpeechTokenizerConfig:
        """Read and check both config files; raise CheckpointError naming the file and key."""
        model = _read_json(directory / CONFIG_FILE)
        features = _read_json(directory / PREPROCESSOR_FILE)
        model_path, features_path = directory / CONFIG_FILE, directory / PREPROCESSOR_FILE
        # The architecture variants upstream's config can select; only the official one is built here.
        required = {
            "pooling_type": "avg",
            "activation_function": "gelu",
            "encoder_causal_convolution": False,
            "encoder_causal_attention": False,
            "quantize_causal_encoder": False,
        }
        for key, value in required.items():
            if model.get(key) != value:
                raise CheckpointError(f"{model_path}: key {key} is {model.get(key)!r}; only {value!r} is supported")
        config = cls(
            **{name: _int(model, name, model_path) for name in _MODEL_INT_KEYS},
            sampling_rate=_int(features, "sampling_rate", features_path),
            hop_length=_int(features, "hop_length", features_path),
        )
        if _int(model, "pooling_position", model_path) != config.quantize_position:
            raise CheckpointError(f"{model_path}: key pooling_position must equal quantize_position")
        if not 0 < config.quantize_position <= config.encoder_layers:
            raise CheckpointError(f"{model_path}: key quantize_position is out of range")
        if config.d_model % config.encoder_attention_heads:
            raise CheckpointError(f"{model_path}: key d_model is not divisible by encoder_attention_heads")
        expected_features = {
            "feature_size": config.num_mel_bins,
            "sampling_rate": SAMPLE_RATE,
            "hop_length": HOP_LENGTH,
            "n_fft": N_FFT,
        }
        for key, value in expected_features.items():
            if _int(features, key, features_path) != value:
                raise CheckpointError(f"{features_path}: key {key} is {features[key]}; expected {value}")
        return config


_MODEL_INT_KEYS = (
    "d_model",
    "encoder_attention_heads",
    "encoder_ffn_dim",
    "encoder_layers",
    "num_mel_bins",
    "max_source_positions",
    "pooling_kernel_size",
    "quantize_position",
    "quantize_vocab_size",
    "quantize_causal_block_size",
)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing speech tokenizer file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable ({error})") from error


def _int(values: dict, key: str, path: Path) -> int:
    value = values.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CheckpointError(f"{path}: key {key} is missing or not an integer")
    return value


def block_causal_mask(frames: int, valid_frames: int, block_size: int, device: torch.device | str) -> torch.Tensor:
    """Attention permission [frames (query), frames (key)], True where a query frame may attend a key.

    A frame sees every earlier frame and every frame of its own block of `block_size`; key frames at
    or after `valid_frames` (padding) are never seen.
    """
    index = torch.arange(frames, device=device)
    earlier = index[None, :] <= index[:, None]
    same_block = (index[None, :] // block_size) == (index[:, None] // block_size)
    return (earlier | same_block) & (index[None, :] < valid_frames)


class _SelfAttention(nn.Module):
    """Whisper multi-head self-attention (the key projection has no bias)."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        batch, frames, width = x.shape  # [B, T, d]

        def split(t: torch.Tensor) -> torch.Tensor:  # [B, T, d] -> [B, heads, T, d / heads]
            return t.view(batch, frames, self.heads, width // self.heads).transpose(1, 2)

        query, key, value = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed)  # [B, heads, T, d / heads]
        return self.out_proj(out.transpose(1, 2).reshape(batch, frames, width))


class _EncoderLayer(nn.Module):
    """Pre-norm Whisper encoder layer: attention then a GELU feed-forward, each with a residual."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = _SelfAttention(d_model, heads)
        self.self_attn_layer_norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.final_layer_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), allowed)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class WhisperVQEncoder(nn.Module):
    """The part of the WhisperVQ encoder that produces tokens; parameter names follow the official file."""

    def __init__(self, config: SpeechTokenizerConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.conv1 = nn.Conv1d(config.num_mel_bins, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=CONV_STRIDE, padding=1)
        self.embed_positions = nn.Embedding(config.max_source_positions, d)
        self.layers = nn.ModuleList(
            _EncoderLayer(d, config.encoder_attention_heads, config.encoder_ffn_dim) for _ in range(config.quantize_position)
        )
        self.codebook = nn.Embedding(config.quantize_vocab_size, d)  # kept in float32 for the distances

    def forward(self, mel: torch.Tensor, valid_frames: int) -> torch.Tensor:
        """Token ids [ceil(frames / pooling)] of log-mel [n_mels, 2 * frames]; frames from `valid_frames` on are padding."""
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel[None]))))  # [1, d, T]
        frames = x.shape[-1]
        if frames > self.config.max_source_positions:
            raise ValueError(f"{frames} encoder frames exceed the positional table ({self.config.max_source_positions})")
        x = x.transpose(1, 2) + self.embed_positions.weight[:frames]  # [1, T, d]
        allowed = block_causal_mask(frames, valid_frames, self.config.quantize_causal_block_size, x.device)  # [T, T]
        for layer in self.layers:
            x = layer(x, allowed)
        kernel = self.config.pooling_kernel_size
        pooled = F.avg_pool1d(F.pad(x.transpose(1, 2), (0, -frames % kernel)), kernel)  # [1, d, ceil(T / k)]
        return _nearest_code(pooled[0].T, self.codebook.weight)


def _nearest_code(hidden: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index [N] of the codebook row [V, d] nearest to each hidden row [N, d], squared L2 in float32."""
    hidden = hidden.float()
    squared = (codebook**2).sum(dim=1) + (hidden**2).sum(dim=1, keepdim=True)  # [N, V]
    return torch.addmm(squared, hidden, codebook.T, beta=1.0, alpha=-2.0).argmin(dim=1)


def _is_unused_key(name: str, config: SpeechTokenizerConfig) -> bool:
    """Whether `name` (without KEY_PREFIX) is an official key that tokens do not need."""
    if name in UNUSED_KEYS:
        return True
    parts = name.split(".")
    if len(parts) < 3 or parts[0] != "layers" or not parts[1].isdigit():
        return False
    return config.quantize_position <= int(parts[1]) < config.encoder_layers


class SpeechTokenizer:
    """Owns the WhisperVQ encoder on one device and turns prompt audio into speech-token ids."""

    def __init__(
        self, config: SpeechTokenizerConfig, encoder: WhisperVQEncoder, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.config = config
        self.encoder = encoder
        self.device = device
        self.dtype = dtype

    @classmethod
    def load(cls, directory: Path | str, device: torch.device | str, dtype: torch.dtype = torch.float32) -> SpeechTokenizer:
        """Load `speech_tokenizer/` memory-mapped onto `device` in `dtype` (the codebook stays float32)."""
        started = time.perf_counter()
        directory, device = Path(directory), torch.device(device)
        config = SpeechTokenizerConfig.from_dir(directory)
        path = directory / WEIGHTS_FILE
        if not path.is_file():
            raise CheckpointError(f"{path}: missing speech tokenizer weights")
        with torch.device("meta"):
            encoder = WhisperVQEncoder(config)
        expected = {name: tuple(tensor.shape) for name, tensor in encoder.state_dict().items()}
        state: dict[str, torch.Tensor] = {}
        try:
            with safe_open(path, framework="pt", device="cpu") as weights:
                for key in sorted(weights.keys()):
                    name = key[len(KEY_PREFIX) :] if key.startswith(KEY_PREFIX) else None
                    if name is None or name not in expected:
                        if name is not None and _is_unused_key(name, config):
                            continue
                        raise CheckpointError(f"{path}: unexpected key {key}")
                    shape = tuple(weights.get_slice(key).get_shape())
                    if shape != expected[name]:
                        raise CheckpointError(f"{path}: key {key} has shape {list(shape)}, expected {list(expected[name])}")
                    tensor_dtype = torch.float32 if name == CODEBOOK_KEY else dtype
                    state[name] = weights.get_tensor(key).to(device=device, dtype=tensor_dtype)
        except SafetensorError as error:  # a truncated or foreign file
            raise CheckpointError(f"{path}: unreadable safetensors file ({error})") from error
        missing = sorted(set(expected) - set(state))
        if missing:
            raise CheckpointError(f"{path}: missing key {KEY_PREFIX}{missing[0]} ({len(missing)} missing)")
        encoder.load_state_dict(state, strict=True, assign=True)
        encoder.eval()
        _LOGGER.info(
            "Speech tokenizer loaded from %s: %d layers, d_model %d, %d codes, %s %s, %.2f s",
            directory,
            config.quantize_position,
            config.d_model,
            config.quantize_vocab_size,
            device,
            dtype,
            time.perf_counter() - started,
        )
        return cls(config, encoder, device, dtype)

    @torch.inference_mode()
    def audio_to_tokens(self, audio: np.ndarray, sample_rate: int) -> torch.Tensor:
        """Speech-token ids [T] (int64, on the CPU) of mono audio: ceil(seconds x 25) per 30 s chunk."""
        config = self.config
        audio = np.asarray(audio, dtype=np.float32)
        if audio.size == 0:
            return torch.zeros(0, dtype=torch.long)
        # torchaudio's resampler, from the prompt's own rate, as upstream's tokenizer does
        samples = resample(torch.from_numpy(audio), sample_rate, config.sampling_rate).numpy()
        step = config.chunk_samples
        chunks = [samples[start : start + step] for start in range(0, len(samples), step)]
        # Upstream runs the chunks of one audio as one batch padded to the longest chunk (rounded
        # up to whole tokens); padding every chunk the same way gives the same features.
        padded_length = math.ceil(max(len(chunk) for chunk in chunks) / config.samples_per_token) * config.samples_per_token
        tokens = []
        for chunk in chunks:
            padded = np.zeros(padded_length, dtype=np.float32)
            padded[: len(chunk)] = chunk
            mel = whisper_log_mel(padded, self.device, config.num_mel_bins).to(self.dtype)  # [n_mels, padded / hop]
            ids = self.encoder(mel, valid_frames=math.ceil(len(chunk) / config.samples_per_frame))
            tokens.append(ids[: math.ceil(len(chunk) / config.samples_per_token)].cpu())
        return torch.cat(tokens)
