"""HiFT generator (CosyVoice2 style): F0 predictor, harmonic neural source filter and an iSTFT head.

Mel [B, 80, T] at 50 Hz -> 24 kHz audio [B, T * 480]. Submodule names reproduce the official
`hift.pt` keys; weight-normalised convolutions are stored there as two tensors (magnitude and
direction) and are folded into plain `weight`s at load time (see `fold_weight_norm`).

`forward` is upstream's computation, random stream included. `window_to_audio` is the same network
for the fast and streaming paths: it takes the F0 and the accumulated harmonic phase from its caller
(so a window of a longer mel continues the phase of the frames before it) and noise from a tape, and
keeps the phase in float64 (upstream accumulates it in float32, which loses precision on long audio).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from glmtts.engines.glm.errors import CheckpointError

_LOGGER = logging.getLogger(__name__)

_LRELU_SLOPE = 0.1
_FINAL_LRELU_SLOPE = 0.01  # upstream's last activation uses leaky_relu's default slope
_AUDIO_LIMIT = 0.99
_MAGNITUDE_LIMIT = 1e2
_SNAKE_EPS = 1e-9
_F0_LAYERS = 5
_F0_KERNEL = 3
_CONV_KERNEL = 7
# Weight-norm tensors: (magnitude, direction) under torch's parametrization names or the legacy ones.
_WEIGHT_NORM_NAMES = (
    ("parametrizations.weight.original0", "parametrizations.weight.original1"),
    ("weight_g", "weight_v"),
)


@dataclass(frozen=True)
class HiFTSizes:
    """HiFT hyper-parameters; the defaults are the official 24 kHz model (only the channel widths
    vary between our full and tiny checkpoints, and are read back from the weights)."""

    base_channels: int = 512
    f0_channels: int = 512
    mel_bins: int = 80
    sample_rate: int = 24000
    harmonics: int = 8
    sine_amp: float = 0.1
    noise_std: float = 0.003
    voiced_threshold: float = 10.0
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernels: tuple[int, ...] = (16, 11, 7)
    n_fft: int = 16
    hop: int = 4
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[int, ...] = (1, 3, 5)  # the same for every resblock
    source_resblock_kernels: tuple[int, ...] = (7, 7, 11)

    @property
    def samples_per_frame(self) -> int:
        return math.prod(self.upsample_rates) * self.hop


class _Snake(nn.Module):
    """x + sin^2(alpha x) / alpha, one alpha per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        alpha = self.alpha[None, :, None]
        return x + (1.0 / (alpha + _SNAKE_EPS)) * torch.sin(x * alpha).pow(2)  # upstream's order of operations


class _ResBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            [nn.Conv1d(channels, channels, kernel, dilation=d, padding=(kernel - 1) * d // 2) for d in dilations]
        )
        self.convs2 = nn.ModuleList([nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2) for _ in dilations])
        self.activations1 = nn.ModuleList([_Snake(channels) for _ in dilations])
        self.activations2 = nn.ModuleList([_Snake(channels) for _ in dilations])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2, act1, act2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = x + conv2(act2(conv1(act1(x))))
        return x


class _F0Predictor(nn.Module):
    """Mel [B, 80, T] -> F0 in Hz [B, T] (absolute value of a linear read-out of a conv stack)."""

    def __init__(self, mel_bins: int, channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(_F0_LAYERS):
            layers += [nn.Conv1d(mel_bins if index == 0 else channels, channels, _F0_KERNEL, padding=1), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.condnet(mel).transpose(1, 2)).squeeze(-1).abs()


class _HarmonicSource(nn.Module):
    """Neural source filter: harmonics of F0 with random start phases, noise where unvoiced,
    merged into one excitation channel. Draws, in order: uniform [B, H+1], normal [B, L, H+1]
    (laid out as a transposed [B, H+1, L]), normal [B, L, 1] (upstream's unused noise branch, drawn
    to keep the random stream aligned)."""

    def __init__(self, sizes: HiFTSizes) -> None:
        super().__init__()
        self.sizes = sizes
        self.l_linear = nn.Linear(sizes.harmonics + 1, 1)

    def forward(self, f0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:  # [B, L, 1] -> [B, 1, L]
        sizes = self.sizes
        batch, length, _ = f0.shape
        channels = sizes.harmonics + 1
        upsample = sizes.samples_per_frame
        multiples = torch.arange(1, channels + 1, device=f0.device, dtype=torch.float32)
        cycles = (f0 * multiples / sizes.sample_rate) % 1  # [B, L, H+1] cycles per sample
        start = _draw(torch.rand, (batch, channels), generator, f0.device)
        start[:, 0] = 0
        cycles[:, 0, :] = cycles[:, 0, :] + start
        # Phase is integrated at the frame rate and linearly re-interpolated, as upstream does.
        per_frame = F.interpolate(cycles.transpose(1, 2), scale_factor=1 / upsample, mode="linear")
        phase = torch.cumsum(per_frame, dim=2) * 2 * math.pi  # [B, H+1, frames]
        phase = F.interpolate(phase * upsample, scale_factor=upsample, mode="linear").transpose(1, 2)
        sines = torch.sin(phase) * sizes.sine_amp  # [B, L, H+1]
        voiced = (f0 > sizes.voiced_threshold).float()  # [B, L, 1]
        noise_amp = voiced * sizes.noise_std + (1 - voiced) * sizes.sine_amp / 3
        # Upstream's noise is randn_like of a transposed [B, H+1, L] tensor; CPU normal_ fills a
        # non-contiguous tensor in a different order than a contiguous one, so keep that layout.
        raw = torch.empty((batch, channels, length), device=generator.device).transpose(1, 2)
        noise = noise_amp * raw.normal_(generator=generator).to(f0.device)
        excitation = sines * voiced + noise
        _draw(torch.randn, (batch, length, 1), generator, f0.device)
        weight = self.l_linear.weight
        merged = torch.tanh(self.l_linear(excitation.to(weight.dtype)))  # [B, L, 1]
        return merged.transpose(1, 2)


def sample_phase(cumulative: torch.Tensor, samples_per_frame: int) -> torch.Tensor:
    """Harmonic phases [B, F * up, H+1] (float32 radians in [0, 2 pi)) from the cycles accumulated
    through each frame, [B, F, H+1] float64: upstream's linear upsampling of the frame phases
    (align_corners False: sample i reads frame position (i + 0.5) / up - 0.5, clamped at 0 and at
    the last frame), reduced to one turn before the sine."""
    frames = cumulative.shape[1]
    up = samples_per_frame
    source = ((torch.arange(frames * up, device=cumulative.device, dtype=torch.float64) + 0.5) / up - 0.5).clamp(min=0)
    low = source.floor().long().clamp(max=frames - 1)
    high = (low + 1).clamp(max=frames - 1)
    weight = (source - low)[None, :, None]
    turns = up * (cumulative[:, low] + weight * (cumulative[:, high] - cumulative[:, low]))
    return (2 * math.pi * torch.frac(turns)).float()


def _draw(sampler, shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A float32 draw on the generator's device, moved to `device`."""
    return sampler(shape, generator=generator, device=generator.device, dtype=torch.float32).to(device)


class HiFTGenerator(nn.Module):
    """The HiFT network; `forward` maps mel [B, 80, T] to audio [B, T * 480] in [-0.99, 0.99]."""

    def __init__(self, sizes: HiFTSizes) -> None:
        super().__init__()
        self.sizes = sizes
        base = sizes.base_channels
        self.f0_predictor = _F0Predictor(sizes.mel_bins, sizes.f0_channels)
        self.m_source = _HarmonicSource(sizes)
        self.conv_pre = nn.Conv1d(sizes.mel_bins, base, _CONV_KERNEL, padding=_CONV_KERNEL // 2)
        self.ups = nn.ModuleList(
            [
                nn.ConvTranspose1d(base >> i, base >> (i + 1), kernel, rate, padding=(kernel - rate) // 2)
                for i, (rate, kernel) in enumerate(zip(sizes.upsample_rates, sizes.upsample_kernels))
            ]
        )
        # The source STFT (n_fft + 2 channels at the final frame rate) is brought down to each stage.
        spec_channels = sizes.n_fft + 2
        stage_strides = _source_strides(sizes.upsample_rates)
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (stride, kernel) in enumerate(zip(stage_strides, sizes.source_resblock_kernels)):
            channels = base >> (i + 1)
            if stride == 1:
                self.source_downs.append(nn.Conv1d(spec_channels, channels, 1))
            else:
                self.source_downs.append(nn.Conv1d(spec_channels, channels, stride * 2, stride, padding=stride // 2))
            self.source_resblocks.append(_ResBlock(channels, kernel, sizes.resblock_dilations))
        self.resblocks = nn.ModuleList(
            [
                _ResBlock(base >> (i + 1), kernel, sizes.resblock_dilations)
                for i in range(len(sizes.upsample_rates))
                for kernel in sizes.resblock_kernels
            ]
        )
        self.conv_post = nn.Conv1d(base >> len(sizes.upsample_rates), spec_channels, _CONV_KERNEL, padding=_CONV_KERNEL // 2)

    def weight_normed(self) -> list[str]:
        """Names of the convolutions stored with weight normalisation in the official file."""
        plain = {"source_downs"}
        return [
            name
            for name, module in self.named_modules()
            if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)) and name.split(".")[0] not in plain
        ]

    def frame_cycles(self, f0: torch.Tensor) -> torch.Tensor:
        """F0 [B, F] Hz -> cycles per sample of each harmonic, [B, F, H+1] float32 in [0, 1), computed
        as upstream does per sample (the frame's value is every one of its samples' value)."""
        multiples = torch.arange(1, self.sizes.harmonics + 2, device=f0.device, dtype=torch.float32)
        return (f0[..., None] * multiples / self.sizes.sample_rate) % 1

    def predict_f0(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel [B, 80, F] -> F0 [B, F] Hz float32 (a frame depends on the 5 frames either side)."""
        return self.f0_predictor(mel.to(self.conv_pre.weight.dtype)).float()

    def window_to_audio(
        self,
        mel: torch.Tensor,  # [1, 80, F]
        f0: torch.Tensor,  # [1, F] Hz
        cumulative: torch.Tensor,  # [1, F, H+1] float64: cycles accumulated through each frame
        noise: torch.Tensor,  # [1, F * up, H+1] standard normal
    ) -> torch.Tensor:  # [1, F * up]
        """The generator on a window whose F0, phase and noise the caller supplies (see module doc)."""
        sizes = self.sizes
        up = sizes.samples_per_frame
        sines = torch.sin(sample_phase(cumulative, up)) * sizes.sine_amp  # [1, L, H+1]
        voiced = (f0 > sizes.voiced_threshold).float().repeat_interleave(up, dim=1)[:, :, None]  # [1, L, 1]
        noise_amp = voiced * sizes.noise_std + (1 - voiced) * sizes.sine_amp / 3
        excitation = sines * voiced + noise_amp * noise.to(sines.device, torch.float32)
        weight = self.m_source.l_linear.weight
        source = torch.tanh(self.m_source.l_linear(excitation.to(weight.dtype))).transpose(1, 2)  # [1, 1, L]
        return self._decode(mel.to(self.conv_pre.weight.dtype), source.float())

    def forward(self, mel: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        sizes = self.sizes
        mel = mel.to(self.conv_pre.weight.dtype)
        f0 = self.f0_predictor(mel).float()  # [B, T] Hz
        f0_samples = f0.repeat_interleave(sizes.samples_per_frame, dim=1)[:, :, None]  # [B, L, 1]
        source = self.m_source(f0_samples, generator)  # [B, 1, L]
        return self._decode(mel, source.float())

    def _decode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        sizes = self.sizes
        window = _hann(sizes.n_fft, source.device)
        spec = torch.stft(source[:, 0], sizes.n_fft, sizes.hop, sizes.n_fft, window=window, return_complex=True)
        spec = torch.cat([spec.real, spec.imag], dim=1).to(mel.dtype)  # [B, n_fft + 2, L / hop + 1]
        x = self.conv_pre(mel)
        stages = len(self.ups)
        kernels = len(sizes.resblock_kernels)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, _LRELU_SLOPE))
            if i == stages - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](spec))
            total = self.resblocks[i * kernels](x)
            for j in range(1, kernels):
                total = total + self.resblocks[i * kernels + j](x)
            x = total / kernels
        x = self.conv_post(F.leaky_relu(x, _FINAL_LRELU_SLOPE)).float()
        bins = sizes.n_fft // 2 + 1
        magnitude = torch.exp(x[:, :bins]).clamp(max=_MAGNITUDE_LIMIT)
        phase = torch.sin(x[:, bins:])  # upstream's (redundant) sine on the phase channels
        complex_spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        audio = torch.istft(complex_spec, sizes.n_fft, sizes.hop, sizes.n_fft, window=window)
        return audio.clamp(-_AUDIO_LIMIT, _AUDIO_LIMIT)


def _source_strides(upsample_rates: tuple[int, ...]) -> list[int]:
    """Per upsampling stage, the downsampling from the final frame rate: e.g. [15, 3, 1]."""
    return [math.prod(upsample_rates[i + 1 :]) for i in range(len(upsample_rates))]


def _hann(size: int, device: torch.device) -> torch.Tensor:
    """Periodic Hann window (scipy's get_window('hann', fftbins=True)), computed in float64."""
    return torch.hann_window(size, periodic=True, dtype=torch.float64, device=device).float()


def fold_weight_norm(state: dict[str, torch.Tensor], names: list[str], path: object) -> dict[str, torch.Tensor]:
    """Replaces each weight-normalised pair (magnitude g, direction v; dim 0) by `name.weight`
    = g * v / ||v||, computed by `torch._weight_norm` as upstream's parametrization does (a hand-written
    g * v / ||v|| differs from it by an ulp in about a fifth of the weights). Accepts torch's
    parametrization names and the legacy weight_g / weight_v."""
    folded = dict(state)
    for name in names:
        for magnitude_suffix, direction_suffix in _WEIGHT_NORM_NAMES:
            magnitude_key, direction_key = f"{name}.{magnitude_suffix}", f"{name}.{direction_suffix}"
            if magnitude_key in folded and direction_key in folded:
                magnitude, direction = folded.pop(magnitude_key).float(), folded.pop(direction_key).float()
                expected = (direction.shape[0],) + (1,) * (direction.ndim - 1)
                if tuple(magnitude.shape) != expected:
                    raise CheckpointError(
                        f"{path}: key {magnitude_key!r} has shape {tuple(magnitude.shape)}, expected {expected}"
                    )
                folded[f"{name}.weight"] = torch._weight_norm(direction, magnitude, 0)
                break
        else:
            raise CheckpointError(f"{path}: missing key {name + '.' + _WEIGHT_NORM_NAMES[0][0]!r}")
    return folded


def unfold_weight_norm(state: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """Inverse of `fold_weight_norm` with torch's parametrization names (g = ||w||, v = w)."""
    out: dict[str, torch.Tensor] = {}
    normed = set(names)
    for key, tensor in state.items():
        name = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and name in normed:
            magnitude = torch.linalg.vector_norm(tensor.flatten(1), dim=1).view((tensor.shape[0],) + (1,) * (tensor.ndim - 1))
            out[f"{name}.{_WEIGHT_NORM_NAMES[0][0]}"] = magnitude
            out[f"{name}.{_WEIGHT_NORM_NAMES[0][1]}"] = tensor
        else:
            out[key] = tensor
    return out
