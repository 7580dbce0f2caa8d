"""Vocoders for the flow's 80-bin log mel at 50 Hz: HiFT (24 kHz, `hift/hift.pt`) and Vocos2D
(32 kHz, the TorchScript `vocos2d/generator_jit.ckpt`), plus writers of random checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from glmtts.engines.glm.errors import CheckpointError
from glmtts.engines.glm.hift import HiFTGenerator, HiFTSizes, fold_weight_norm, unfold_weight_norm
from glmtts.engines.glm.state_dict import assign_state_dict, random_weight, read_torch_state_dict

_LOGGER = logging.getLogger(__name__)

HIFT_SAMPLE_RATE = 24000
VOCOS_SAMPLE_RATE = 32000
_VOCOS_HOP = 640
_VOCOS_N_FFT = 2560
# Upstream's MEL_LOGDIFF: the Vocos2D generator was trained on log mels shifted by this constant.
_VOCOS_MEL_OFFSET = -7.847762537473608
_MEL_BINS = 80
# size -> (HiFT base channels, F0-predictor channels); everything else is the official model
_HIFT_WIDTHS = {"full": (512, 512), "tiny": (32, 32)}
# size -> (Vocos width, ConvNeXt layers); "full" is about the official file's 60 MB
_VOCOS_SIZES = {"full": (512, 8), "tiny": (32, 2)}
_VOCOS_FF_MULT = 3
# Random HiFT output layer: scale and shift so that exp(log magnitude) stays well below clipping.
_QUIET_POST_SCALE = 0.2
_QUIET_POST_SHIFT = -1.0
_VOCOS_KERNEL = 7


class HiFTVocoder:
    """Owns the HiFT generator: mel [F, 80] -> 24 kHz audio [F * 480], using the caller's random
    stream for the source phases and noise."""

    sample_rate = HIFT_SAMPLE_RATE

    def __init__(self, model: HiFTGenerator, device: torch.device) -> None:
        self._model = model
        self.device = device

    @classmethod
    def load(cls, path: Path, device: torch.device | str, dtype: torch.dtype = torch.float32) -> HiFTVocoder:
        path = Path(path)
        state = read_torch_state_dict(path)
        sizes = _hift_sizes(state, path)
        with torch.device("meta"):
            model = HiFTGenerator(sizes)
        state = fold_weight_norm(state, model.weight_normed(), path)
        device = torch.device(device)
        assign_state_dict(model, state, path, device, dtype)
        _LOGGER.info("HiFT loaded from %s: %d channels (%s, %s)", path, sizes.base_channels, device, dtype)
        return cls(model, device)

    @torch.inference_mode()
    def mel_to_audio(self, mel: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """[F, 80] -> float32 [F * 480] on the vocoder's device."""
        _check_mel(mel)
        if mel.shape[0] == 0:
            return torch.zeros(0, device=self.device)
        audio = self._model(mel.to(self.device).T[None], generator)  # [1, samples]
        return audio[0].float()


class Vocos2DVocoder:
    """Owns the official TorchScript Vocos2D generator: mel [F, 80] -> 32 kHz audio."""

    sample_rate = VOCOS_SAMPLE_RATE

    def __init__(self, model: torch.jit.ScriptModule, device: torch.device) -> None:
        self._model = model
        self.device = device

    @classmethod
    def load(cls, path: Path, device: torch.device | str) -> Vocos2DVocoder:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"Vocos2D generator not found: {path}")
        device = torch.device(device)
        try:
            model = torch.jit.load(str(path), map_location=device)
        except RuntimeError as error:
            raise CheckpointError(f"cannot load TorchScript generator {path}: {error}") from error
        _LOGGER.info("Vocos2D loaded from %s (%s)", path, device)
        return cls(model.eval(), device)

    @torch.inference_mode()
    def mel_to_audio(self, mel: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[F, 80] -> float32 [samples] (F * 640 for our random generator). Deterministic: the
        generator is accepted for interface parity and not used."""
        _check_mel(mel)
        if mel.shape[0] == 0:
            return torch.zeros(0, device=self.device)
        frames = mel.to(self.device, torch.float32)[None]  # [1, F, 80]: the generator's layout
        if frames.shape[1] == 1:  # as upstream: a single frame is doubled
            frames = torch.cat([frames, frames], dim=1)
        audio = self._model(frames + _VOCOS_MEL_OFFSET)  # [1, samples]
        return audio.reshape(-1).float()


def _check_mel(mel: torch.Tensor) -> None:
    if mel.ndim != 2 or mel.shape[1] != _MEL_BINS:
        raise ValueError(f"mel must be [frames, {_MEL_BINS}], got {tuple(mel.shape)}")


def _hift_sizes(state: dict[str, torch.Tensor], path: Path) -> HiFTSizes:
    """Channel widths read from the weights (conv_pre and the first F0 conv); the rest is fixed."""
    widths = []
    for name in ("conv_pre", "f0_predictor.condnet.0"):
        keys = [f"{name}.parametrizations.weight.original1", f"{name}.weight_v"]
        found = next((state[key] for key in keys if key in state), None)
        if found is None:
            raise CheckpointError(f"{path}: missing key {keys[0]!r}")
        widths.append(int(found.shape[0]))
    return HiFTSizes(base_channels=widths[0], f0_channels=widths[1])


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
        self.embed = nn.Conv1d(_MEL_BINS, dim, _VOCOS_KERNEL, padding=_VOCOS_KERNEL // 2)
        self.blocks = nn.ModuleList([_VocosBlock(dim) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, _VOCOS_N_FFT + 2)
        self.n_fft = _VOCOS_N_FFT
        self.hop = _VOCOS_HOP
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
