"""Random-weight GLM-TTS checkpoints in the official layout, for tests and benchmarks: the one home
of every fixture writer (no runtime module writes weights).

    python -m glmtts.engines.glm.random_checkpoint OUT_DIR --size tiny|full

`write_random_checkpoint` writes a whole checkpoint; `write_random_<part>` writes one part (tokenizer,
LLM, speech tokenizer, CAM++, flow, HiFT, Vocos2D) for the tests of that stage. "tiny" builds in
seconds and takes a few tens of MB; "full" has the official shapes (about 9 GB, the LLM alone 6.2 GB
in fp32). Every writer is deterministic for its `seed`.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from glmtts.engines.glm import campplus, checkpoint, flow, llm, speech_tokenizer, text_tokenizer, vocoder
from glmtts.engines.glm.dit import rotary_inv_freq
from glmtts.engines.glm.hift import HiFTGenerator, HiFTSizes, unfold_weight_norm

_LOGGER = logging.getLogger(__name__)

SIZES = ("tiny", "full")
CAMPPLUS_PATH = f"frontend/{checkpoint.CAMPPLUS_NAME}"


def write_random_checkpoint(root: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write every part under `root` (created if needed); returns `root`."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = root / checkpoint.TEXT_TOKENIZER_DIR
    write_random_tokenizer(tokenizer_dir, size, seed=seed)
    vocab_size = vocab_size_for(size, text_tokenizer.TextTokenizer.load(tokenizer_dir).size)
    write_random_llm(root / checkpoint.LLM_DIR, size, vocab_size, seed=seed)
    write_random_speech_tokenizer(root / checkpoint.SPEECH_TOKENIZER_DIR, size, seed=seed)
    write_random_flow(root / checkpoint.FLOW_DIR, size, seed=seed)
    write_random_hift(root / checkpoint.HIFT_FILE, size, seed=seed)
    write_random_vocos(root / checkpoint.VOCOS_FILE, size, seed=seed)
    write_random_campplus(root / CAMPPLUS_PATH, size, seed=seed)
    checkpoint.validate_checkpoint(root)
    return root


def random_weight(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A deterministic random tensor of a sensible scale for the writers of random checkpoints:
    fan-in scaled matrices and kernels, near-one norm weights, small biases."""
    values = torch.randn(shape, generator=generator)
    if len(shape) >= 2:
        return values / math.sqrt(math.prod(shape[1:]))
    if name.endswith("norm.weight"):
        return 1.0 + 0.1 * values
    return 0.02 * values


# ----------------------------------------------------------------------------- text tokenizer

# ChatGLM4's special tokens, in id order right after the BPE ranks.
GLM4_SPECIALS = (
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
    "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>",
    "<|begin_of_video|>", "<|end_of_video|>",
)  # fmt: skip
AUDIO_MARKERS = (text_tokenizer.BEGIN_OF_AUDIO, "<|end_of_audio|>")
# Official layout (reported ids: <|user|> 59253, <|begin_of_audio|> 59260, <|audio_0|> 61498).
FULL_RANKS = 59246
FULL_AUDIO_0 = 61498
FULL_VOCAB = 98304

# The phoneme tokens of the official tokenizer_config.json, for the random writer: 21 initials, then
# finals with the tones the inventory has (5 is the neutral tone). The same inventory as the frontend's
# glmtts.frontend.phonemes (a test holds them equal); spelled out here because that package needs the
# text-normalization stack, which a bare GPU machine writing a random checkpoint does not have.
_INITIALS = "B C CH D F G H J K L M N P Q R S SH T X Z ZH".split()
_FINALS_ALL_TONES = "A AI AN ANG AO E EI EN ENG I IA IAN IANG IAO IE II III IN ING IOU O ONG OU U UA UANG UEI UEN UO V VAN VN"
_FINAL_TONES = {
    **dict.fromkeys(_FINALS_ALL_TONES.split(), "12345"),
    "ER": "234",
    "IO": "1",
    "IONG": "1234",
    "UAI": "1234",
    "UAN": "1234",
    "UENG": "134",
    "VE": "1234",
}


def phoneme_symbols() -> list[str]:
    """The 204 GLM-TTS phoneme symbols: initials, then finals with tones in sorted order."""
    finals = {f"{final}{tone}" for final, tones in _FINAL_TONES.items() for tone in tones}
    return list(_INITIALS) + sorted(finals)


def write_random_tokenizer(directory: Path, size: str = "tiny", seed: int = 0) -> None:
    """Write `tokenizer.model` + `tokenizer_config.json` with the official added-token layout.

    "full": 59246 BPE ranks, specials from 59246 (`<|user|>` 59253, `<|begin_of_audio|>` 59260),
    `<|audio_0|>` at 61498, ids up to the LLM vocabulary of 98304. "tiny": about a thousand ranks
    with the same added tokens packed right after them. The BPE ranks are synthetic (byte-level,
    deterministic; `seed` is accepted for symmetry with the other writers and does not matter).
    """
    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', not {size!r}")
    del seed
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokens = _synthetic_ranks(FULL_RANKS if size == "full" else None)
    with (directory / text_tokenizer.RANKS_FILE).open("w", encoding="utf-8") as handle:
        for rank, token in enumerate(tokens):
            handle.write(f"{base64.b64encode(token).decode('ascii')} {rank}\n")
    next_id = len(tokens)
    added: dict[int, str] = {}
    for content in (*GLM4_SPECIALS, *AUDIO_MARKERS, *(f"<|{symbol}|>" for symbol in phoneme_symbols())):
        added[next_id] = content
        next_id += 1
    audio_start = FULL_AUDIO_0 if size == "full" else next_id
    if audio_start < next_id:
        raise AssertionError("official audio ids overlap the other added tokens")
    for index in range(text_tokenizer.SPEECH_CODEBOOK):
        added[audio_start + index] = text_tokenizer.AUDIO_TOKEN.format(index)
    config = {
        "added_tokens_decoder": {
            str(token_id): {
                "content": content,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for token_id, content in added.items()
        },
        "clean_up_tokenization_spaces": False,
        "eos_token": text_tokenizer.PAD,
        "pad_token": text_tokenizer.PAD,
        "tokenizer_class": "ChatGLM4Tokenizer",
    }
    (directory / text_tokenizer.CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")


def vocab_size_for(size: str, tokenizer_size: int) -> int:
    """The LLM vocabulary for a random checkpoint: the official 98304, or the tokenizer rounded up to 64."""
    return FULL_VOCAB if size == "full" else -(-tokenizer_size // 64) * 64


def _synthetic_ranks(count: int | None) -> list[bytes]:
    """Byte-level BPE tokens: 256 bytes, then letter pairs and words, then CJK characters.

    Every multi-byte token extends an earlier one by one byte or joins two earlier ones, so BPE can
    reach it. `count` None gives the tiny table.
    """
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens: list[bytes] = [bytes([value]) for value in range(256)]
    seen = set(tokens)

    def add(token: bytes) -> None:
        if token not in seen and (count is None or len(tokens) < count):
            seen.add(token)
            tokens.append(token)

    for first in letters:
        add(f" {first}".encode())
        for second in letters:
            add(f"{first}{second}".encode())
    for word in ("the", "and", "hello", "world", "speech", "voice", "today", "weather"):
        for end in range(2, len(word) + 1):
            add(word[:end].encode())
            add(f" {word[:end]}".encode())
    cjk = range(0x4E00, 0x4E40) if count is None else [*range(0x4E00, 0xA000), *range(0x3400, 0x4DC0)]
    for code in cjk:
        char = chr(code).encode()
        add(char[:2])
        add(char)
    if count is not None:
        for first in letters:
            for second in letters:
                for third in letters:
                    add(f"{first}{second}{third}".encode())
                    add(f" {first}{second}{third}".encode())
        if len(tokens) < count:
            raise AssertionError(f"synthetic BPE table stops at {len(tokens)} < {count}")
    return tokens


# ----------------------------------------------------------------------------- speech LM


@dataclass(frozen=True)
class _LLMSizes:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int


_LLM_SIZES = {
    "tiny": _LLMSizes(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128),
    "full": _LLMSizes(hidden=2048, layers=28, heads=16, kv_heads=4, ffn=6144),
}
# The official split: layers 0-20 and part of layer 21 in the first shard (tiny: half the layers).
_FIRST_SHARD_LAST_LAYER = 21
_SECOND_SHARD_IN_SPLIT_LAYER = ("input_layernorm", "mlp.down_proj", "post_attention_layernorm")
_FLOAT32_BYTES = 4
_EMBEDDING_STD = 0.1


def write_random_llm(llm_dir: Path, size: str, vocab_size: int, seed: int = 0) -> None:
    """Write `config.json`, two fp32 safetensors shards and the index json, in the official layout."""
    if size not in _LLM_SIZES:
        raise ValueError(f"size must be one of {sorted(_LLM_SIZES)}, not {size!r}")
    sizes = _LLM_SIZES[size]
    llm_dir = Path(llm_dir)
    llm_dir.mkdir(parents=True, exist_ok=True)
    head_dim = sizes.hidden // sizes.heads
    config = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": sizes.hidden,
        "initializer_range": 0.02,
        "intermediate_size": sizes.ffn,
        "max_position_embeddings": 8192,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": sizes.heads,
        "num_hidden_layers": sizes.layers,
        "num_key_value_heads": sizes.kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": vocab_size,
    }
    (llm_dir / llm.CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    generator = torch.Generator().manual_seed(seed)
    shapes = {"model.embed_tokens.weight": (vocab_size, sizes.hidden), "model.norm.weight": (sizes.hidden,)}
    for layer in range(sizes.layers):
        prefix = f"model.layers.{layer}."
        shapes.update({
            prefix + "input_layernorm.weight": (sizes.hidden,),
            prefix + "post_attention_layernorm.weight": (sizes.hidden,),
            prefix + "self_attn.q_proj.weight": (sizes.heads * head_dim, sizes.hidden),
            prefix + "self_attn.k_proj.weight": (sizes.kv_heads * head_dim, sizes.hidden),
            prefix + "self_attn.v_proj.weight": (sizes.kv_heads * head_dim, sizes.hidden),
            prefix + "self_attn.o_proj.weight": (sizes.hidden, sizes.heads * head_dim),
            prefix + "mlp.gate_proj.weight": (sizes.ffn, sizes.hidden),
            prefix + "mlp.up_proj.weight": (sizes.ffn, sizes.hidden),
            prefix + "mlp.down_proj.weight": (sizes.hidden, sizes.ffn),
        })  # fmt: skip
    names = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    last_first = _FIRST_SHARD_LAST_LAYER if sizes.layers > _FIRST_SHARD_LAST_LAYER else sizes.layers // 2
    weight_map = {key: names[_shard_of(key, last_first)] for key in sorted(shapes)}
    for name in names:
        keys = [key for key, shard in weight_map.items() if shard == name]
        _write_safetensors(llm_dir / name, {key: shapes[key] for key in keys}, generator)
    total = sum(math.prod(shape) * _FLOAT32_BYTES for shape in shapes.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (llm_dir / llm.INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _shard_of(key: str, last_first: int) -> int:
    if key == "model.embed_tokens.weight":
        return 0
    if not key.startswith("model.layers."):
        return 1
    layer = int(key.split(".")[2])
    if layer < last_first:
        return 0
    if layer > last_first:
        return 1
    return int(any(f".{part}." in key for part in _SECOND_SHARD_IN_SPLIT_LAYER))


def _write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], generator: torch.Generator) -> None:
    """Write random fp32 tensors as a safetensors file one tensor at a time (the full LLM is 6 GB)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key, shape in shapes.items():
        size = math.prod(shape) * _FLOAT32_BYTES
        header[key] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with path.open("wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little"))
        handle.write(encoded)
        for key, shape in shapes.items():
            handle.write(_random_tensor(key, shape, generator).numpy().tobytes())


def _random_tensor(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Norm weights near one, fan-in scaled matrices; small embeddings keep the tied head from copying
    its input, so a random model samples varied tokens."""
    if len(shape) == 1:
        return 1.0 + 0.1 * torch.randn(shape, generator=generator)
    if key == "model.embed_tokens.weight":
        return _EMBEDDING_STD * torch.randn(shape, generator=generator)
    return torch.randn(shape, generator=generator) / math.sqrt(shape[1])


# ----------------------------------------------------------------------------- speech tokenizer


# The official config.json (GLM-TTS speech_tokenizer, derived from whisper-large-v3), minus its
# build-machine `_name_or_path`.
_SPEECH_TOKENIZER_CONFIG = {
    "activation_dropout": 0.0,
    "activation_function": "gelu",
    "apply_spec_augment": False,
    "architectures": ["WhisperVQForConditionalGeneration"],
    "attention_dropout": 0.0,
    "begin_suppress_tokens": [220, 50257],
    "bos_token_id": 50257,
    "classifier_proj_size": 256,
    "d_model": 1280,
    "decoder_attention_heads": 20,
    "decoder_ffn_dim": 5120,
    "decoder_layerdrop": 0.0,
    "decoder_layers": 32,
    "decoder_start_token_id": 50258,
    "dropout": 0.0,
    "encoder_attention_heads": 20,
    "encoder_causal_attention": False,
    "encoder_causal_convolution": False,
    "encoder_ffn_dim": 5120,
    "encoder_layerdrop": 0.0,
    "encoder_layers": 32,
    "eos_token_id": 50257,
    "init_std": 0.02,
    "is_encoder_decoder": True,
    "mask_feature_length": 10,
    "mask_feature_min_masks": 0,
    "mask_feature_prob": 0.0,
    "mask_time_length": 10,
    "mask_time_min_masks": 2,
    "mask_time_prob": 0.05,
    "max_length": 448,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "median_filter_width": 7,
    "model_type": "whisper",
    "num_hidden_layers": 32,
    "num_mel_bins": 128,
    "pad_token_id": 50256,
    "pitch_control": "fcpe_f0",
    "pitch_loss_scale": 2.0,
    "pitch_upsample_scale": 2,
    "pooling_kernel_size": 2,
    "pooling_position": 16,
    "pooling_type": "avg",
    "quantize_causal_block_size": 200,
    "quantize_causal_encoder": False,
    "quantize_commit_coefficient": 0.25,
    "quantize_ema_decay": 0.99,
    "quantize_encoder_only": False,
    "quantize_hidden_dim": None,
    "quantize_loss_scale": 10.0,
    "quantize_position": 16,
    "quantize_restart_interval": 100,
    "quantize_vocab_size": 32768,
    "scale_embedding": False,
    "skip_language_detection": True,
    "torch_dtype": "float32",
    "transformers_version": "4.44.1",
    "use_cache": True,
    "use_weighted_layer_sum": False,
    "vocab_size": 51866,
}
_SPEECH_TOKENIZER_PREPROCESSOR = {
    "chunk_length": 30,
    "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": 128,
    "hop_length": 160,
    "n_fft": 400,
    "n_samples": 480000,
    "nb_max_frames": 3000,
    "padding_side": "right",
    "padding_value": 0.0,
    "processor_class": "WhisperProcessor",
    "return_attention_mask": False,
    "sampling_rate": 16000,
}
# Tiny keeps every non-size value (block size, pooling, 32768 codes, 128 mel bins, 30 s table).
_SPEECH_TOKENIZER_TINY = {
    "d_model": 32,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 128,
    "encoder_layers": 4,
    "num_hidden_layers": 4,
    "quantize_position": 2,
    "pooling_position": 2,
    "decoder_attention_heads": 2,
    "decoder_ffn_dim": 128,
    "decoder_layers": 4,
}


def _sinusoids(length: int, channels: int) -> torch.Tensor:
    """Whisper's sinusoidal position table [length, channels]."""
    increment = math.log(10000) / (channels // 2 - 1)
    inverse = torch.exp(-increment * torch.arange(channels // 2))
    angle = torch.arange(length)[:, None] * inverse[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=1)


def write_random_speech_tokenizer(directory: Path, size: str, seed: int = 0) -> Path:
    """Write config.json, preprocessor_config.json and a random model.safetensors in the official layout.

    size "full" has the official shapes and keys (the first `quantize_position` = 16 layers, the
    codebook with its EMA state, both positional tables); "tiny" shrinks widths and depth only.
    """
    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_config = {**_SPEECH_TOKENIZER_CONFIG, **(_SPEECH_TOKENIZER_TINY if size == "tiny" else {})}
    (directory / speech_tokenizer.CONFIG_FILE).write_text(json.dumps(model_config, indent=2) + "\n", encoding="utf-8")
    (directory / speech_tokenizer.PREPROCESSOR_FILE).write_text(
        json.dumps(_SPEECH_TOKENIZER_PREPROCESSOR, indent=2) + "\n", encoding="utf-8"
    )
    config = speech_tokenizer.SpeechTokenizerConfig.from_dir(directory)
    generator = torch.Generator().manual_seed(seed)
    d, ffn, mels, codes = config.d_model, config.encoder_ffn_dim, config.num_mel_bins, config.quantize_vocab_size

    def normal(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    def linear(name: str, fan_out: int, fan_in: int, bias: bool = True) -> dict[str, torch.Tensor]:
        tensors = {f"{name}.weight": normal(fan_out, fan_in, std=fan_in**-0.5)}
        if bias:
            tensors[f"{name}.bias"] = normal(fan_out, std=0.02)
        return tensors

    def norm(name: str) -> dict[str, torch.Tensor]:
        return {f"{name}.weight": 1.0 + normal(d, std=0.02), f"{name}.bias": normal(d, std=0.02)}

    positions = _sinusoids(config.max_source_positions, d)
    tensors = {
        "conv1.weight": normal(d, mels, 3, std=(3 * mels) ** -0.5),
        "conv1.bias": normal(d, std=0.02),
        "conv2.weight": normal(d, d, 3, std=(3 * d) ** -0.5),
        "conv2.bias": normal(d, std=0.02),
        "embed_positions.weight": positions,
    }
    for index in range(config.quantize_position):
        prefix = f"layers.{index}"
        tensors.update(linear(f"{prefix}.self_attn.q_proj", d, d))
        tensors.update(linear(f"{prefix}.self_attn.k_proj", d, d, bias=False))
        tensors.update(linear(f"{prefix}.self_attn.v_proj", d, d))
        tensors.update(linear(f"{prefix}.self_attn.out_proj", d, d))
        tensors.update(norm(f"{prefix}.self_attn_layer_norm"))
        tensors.update(linear(f"{prefix}.fc1", ffn, d))
        tensors.update(linear(f"{prefix}.fc2", d, ffn))
        tensors.update(norm(f"{prefix}.final_layer_norm"))
    codebook = normal(codes, d, std=1.0)
    pooled_positions = math.ceil(config.max_source_positions / config.pooling_kernel_size)
    tensors.update(
        {
            speech_tokenizer.CODEBOOK_KEY: codebook,
            "embed_positions2.weight": positions[:pooled_positions].clone(),
            "ema_count": torch.ones(codes),
            "ema_weight": codebook.clone(),
        }
    )
    save_file(
        {speech_tokenizer.KEY_PREFIX + name: tensor.contiguous() for name, tensor in tensors.items()},
        str(directory / speech_tokenizer.WEIGHTS_FILE),
    )
    return directory


# ----------------------------------------------------------------------------- CAM++ speaker model (ONNX)


# (out_channels, kernel, dilation) of the convolutions, then the width of the hidden dense layer.
_CAMPPLUS_SIZES = {
    "tiny": ([(32, 3, 1), (32, 3, 2)], 64),
    # A TDNN of about the official size (28 MB, ~7M parameters): only the I/O contract is official.
    "full": ([(704, 5, 1), (704, 3, 2), (704, 3, 3), (704, 1, 1), (1536, 1, 1)], 704),
}


def write_random_campplus(path: Path, size: str, seed: int = 0) -> Path:
    """Write a random ONNX speaker model with the official I/O: "input" [batch, frames, 80] -> "output" [batch, 192].

    A stand-in, not CAM++: convolutions + ReLU over time, mean and standard deviation pooling, two
    dense layers. The ONNX file is encoded here (`_OnnxGraph`), so no `onnx` package is needed.
    """
    if size not in _CAMPPLUS_SIZES:
        raise ValueError(f"size must be one of {sorted(_CAMPPLUS_SIZES)}, got {size!r}")
    convolutions, hidden = _CAMPPLUS_SIZES[size]
    rng = np.random.default_rng(seed)
    graph = _OnnxGraph()

    def weight(name: str, *shape: int, fan_in: int) -> str:
        values = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)  # He initialisation keeps ReLU activations in range
        return graph.initializer(name, values.astype(np.float32))

    def zeros(name: str, width: int) -> str:
        return graph.initializer(name, np.zeros(width, dtype=np.float32))

    node = graph.node
    x = node("Transpose", [campplus.INPUT_NAME], "features", perm=[0, 2, 1])  # [B, 80, T]
    channels = campplus.FBANK_BINS
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
    w2 = weight("embedding.weight", campplus.EMBEDDING_DIM, hidden, fan_in=hidden)
    node("Gemm", [x, w2, zeros("embedding.bias", campplus.EMBEDDING_DIM)], campplus.OUTPUT_NAME, transB=1)  # [B, 192]

    model = graph.model(
        "campplus_random",
        inputs=[(campplus.INPUT_NAME, ["batch", "frames", campplus.FBANK_BINS])],
        outputs=[(campplus.OUTPUT_NAME, ["batch", campplus.EMBEDDING_DIM])],
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model)
    return path


ONNX_OPSET = 17
ONNX_IR_VERSION = 8
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


# ----------------------------------------------------------------------------- flow


_FLOW_CONFIG = """flow: !new:flow.flow.Flow
    spkr_emb_adaLN: True
    speech_token_cfg: False
    remove_spkr_concat_condition: True
    mel_dim: 80
    mel_framerate: 50
    input_frame_rate: 25
"""
_FLOW_TINY_EXTRA = """    vocab_size: 32768
    speech_token_dim: 16
dit_sizes:
    trans_dim: 64
    depth: 2
    heads: 2
    dim_head: 32
    ff_mult: 2
    conv_layers: 2
"""


def write_random_flow(flow_dir: Path, size: str, seed: int = 0) -> None:
    """Writes `config.yaml` (official text; tiny adds a smaller vocabulary and `dit_sizes`) and a
    random `flow.pt` with the official key names, deterministic for `seed`."""
    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    flow_dir = Path(flow_dir)
    flow_dir.mkdir(parents=True, exist_ok=True)
    text = _FLOW_CONFIG + (_FLOW_TINY_EXTRA if size == "tiny" else "")
    (flow_dir / flow.CONFIG_FILE).write_text(text, encoding="utf-8")
    config = flow.FlowConfig.from_yaml(flow_dir / flow.CONFIG_FILE)
    with torch.device("meta"):
        shapes = flow._FlowModule(config).state_dict()
    generator = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for name, meta in shapes.items():
        if name == flow._ROTARY_KEY:
            state[name] = rotary_inv_freq(config.dit_sizes().dim_head)
        else:
            state[name] = random_weight(name, tuple(meta.shape), generator)
    torch.save(state, flow_dir / flow.WEIGHTS_FILE)


# ----------------------------------------------------------------------------- vocoders

# size -> (HiFT base channels, F0-predictor channels); everything else is the official model
_HIFT_WIDTHS = {"full": (512, 512), "tiny": (32, 32)}
# Random HiFT output layer: scale and shift so that exp(log magnitude) stays well below clipping.
_QUIET_POST_SCALE = 0.2
_QUIET_POST_SHIFT = -1.0
# Random F0 read-out: a voice-like F0 (mostly 60-300 Hz, sometimes unvoiced), so the harmonic source runs.
_F0_READOUT_SCALE = 60.0
_F0_READOUT_SHIFT = 150.0
# size -> (Vocos width, ConvNeXt layers); "full" is about the official file's 60 MB
_VOCOS_SIZES = {"full": (512, 8), "tiny": (32, 2)}
_VOCOS_FF_MULT = 3
_VOCOS_KERNEL = 7
_VOCOS_N_FFT = 2560


def write_random_hift(path: Path, size: str, seed: int = 0) -> None:
    """A random `hift.pt` with the official key names (weight norm as parametrizations)."""
    if size not in _HIFT_WIDTHS:
        raise ValueError(f"size must be one of {sorted(_HIFT_WIDTHS)}, got {size!r}")
    base, f0_channels = _HIFT_WIDTHS[size]
    with torch.device("meta"):
        model = HiFTGenerator(HiFTSizes(base_channels=base, f0_channels=f0_channels))
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, meta in model.state_dict().items():
        tensor = random_weight(name, tuple(meta.shape), generator)
        if name.endswith(".alpha"):
            tensor = 1.0 + tensor  # Snake alphas near one
        elif name == "conv_post.weight":
            tensor = _QUIET_POST_SCALE * tensor
        elif name == "conv_post.bias":
            tensor = tensor + _QUIET_POST_SHIFT
        elif name == "f0_predictor.classifier.weight":
            tensor = _F0_READOUT_SCALE * tensor
        elif name == "f0_predictor.classifier.bias":
            tensor = tensor + _F0_READOUT_SHIFT
        state[name] = tensor
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(unfold_weight_norm(state, model.weight_normed()), path)


class _VocosBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, _VOCOS_KERNEL, padding=_VOCOS_KERNEL // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, dim * _VOCOS_FF_MULT)
        self.pwconv2 = nn.Linear(dim * _VOCOS_FF_MULT, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        y = self.norm(self.dwconv(x).transpose(1, 2))
        return x + self.pwconv2(F.gelu(self.pwconv1(y))).transpose(1, 2)


class RandomVocosGenerator(nn.Module):
    """A small Vocos-like generator (ConvNeXt backbone + iSTFT head) with the official generator's
    call signature: shifted log mel [B, T, 80] -> 32 kHz audio [B, T * 640]."""

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Conv1d(vocoder.MEL_BINS, dim, _VOCOS_KERNEL, padding=_VOCOS_KERNEL // 2)
        self.blocks = nn.ModuleList([_VocosBlock(dim) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, _VOCOS_N_FFT + 2)
        self.n_fft = _VOCOS_N_FFT
        self.hop = vocoder.VOCOS_HOP
        self.register_buffer("window", torch.hann_window(_VOCOS_N_FFT))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.embed(mel.transpose(1, 2))  # [B, dim, T]
        for block in self.blocks:
            x = block(x)
        out = self.head(self.norm(x.transpose(1, 2))).transpose(1, 2)  # [B, n_fft + 2, T]
        bins = self.n_fft // 2 + 1
        magnitude = torch.exp(out[:, :bins]).clamp(max=1e2)
        phase = out[:, bins:]
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        spec = torch.cat([spec, spec[:, :, -1:]], dim=2)  # one more frame: the centred iSTFT gives T * hop
        return torch.istft(spec, self.n_fft, self.hop, self.n_fft, window=self.window)


def write_random_vocos(path: Path, size: str, seed: int = 0) -> None:
    """A random `generator_jit.ckpt`: our RandomVocosGenerator saved as TorchScript."""
    if size not in _VOCOS_SIZES:
        raise ValueError(f"size must be one of {sorted(_VOCOS_SIZES)}, got {size!r}")
    model = RandomVocosGenerator(*_VOCOS_SIZES[size])
    generator = torch.Generator().manual_seed(seed)
    state = {
        name: tensor if name == "window" else random_weight(name, tuple(tensor.shape), generator)
        for name, tensor in model.state_dict().items()
    }
    model.load_state_dict(state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(model.eval()).save(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    write_random_checkpoint(args.out_dir, args.size, args.seed)
    total = sum(path.stat().st_size for path in args.out_dir.rglob("*") if path.is_file())
    print(f"{args.size} checkpoint in {args.out_dir}: {total / 2**20:.1f} MiB, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
