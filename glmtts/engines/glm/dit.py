"""The flow-matching DiT of GLM-TTS: speech-token embedding, adaLN transformer, velocity output.

Submodule and parameter names reproduce the official `flow.pt` keys (the flow adds the prefix
`estimator.`), e.g. `transformer_blocks.0.attn_norm.linear.weight`, `text_emb_layer.text_embed.weight`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_LOGGER = logging.getLogger(__name__)

_TIME_FREQ_DIM = 256
_TIME_SCALE = 1000.0
_ROPE_BASE = 10000.0
_TOKEN_MAX_POSITIONS = 4096  # token-embedding positions beyond this reuse the last one
_CONV_POS_KERNEL = 31
_CONV_POS_GROUPS = 16
_CONVNEXT_KERNEL = 7
_NORM_EPS = 1e-6
_GRN_EPS = 1e-6


@dataclass(frozen=True)
class DiTSizes:
    """Shapes of the DiT; the defaults are the official (non-"big") model."""

    trans_dim: int = 768
    depth: int = 18
    heads: int = 12
    dim_head: int = 64
    ff_mult: int = 2
    conv_layers: int = 4
    text_emb_dim: int = 512
    vocab_size: int = 100000
    mel_dim: int = 80
    condition_dim: int = 80
    speaker_dim: int = 192  # 0 when the speaker embedding does not modulate the adaLN layers


class DiT(nn.Module):
    """Predicts the flow velocity [B, N, mel] from the noisy mel, the condition mel, the token
    embedding, the time step and (through adaLN) the normalised speaker embedding."""

    def __init__(self, sizes: DiTSizes) -> None:
        super().__init__()
        self.sizes = sizes
        dim = sizes.trans_dim
        self.time_embed = _TimestepEmbedding(dim)
        self.text_emb_layer = _TokenEmbedding(sizes.vocab_size, sizes.text_emb_dim, sizes.conv_layers)
        self.emb_concator = _InputProjection(sizes.mel_dim + sizes.condition_dim + sizes.text_emb_dim, dim)
        self.rotary_embed = _RotaryEmbedding(sizes.dim_head)
        self.transformer_blocks = nn.ModuleList(
            [_DiTBlock(dim, sizes.heads, sizes.dim_head, sizes.ff_mult, sizes.speaker_dim) for _ in range(sizes.depth)]
        )
        self.norm_out = _FinalAdaLayerNorm(dim, sizes.speaker_dim)
        self.proj_out = nn.Linear(dim, sizes.mel_dim)

    def embed_tokens(self, tokens: torch.Tensor, frames: int) -> torch.Tensor:
        """Token ids [B, T] -> [B, frames, text_emb_dim]; independent of x and t, so computed once."""
        return self.text_emb_layer(tokens, frames)

    def forward(
        self,
        x: torch.Tensor,  # [B, N, mel] noisy mel at time t
        condition: torch.Tensor,  # [B, N, condition_dim] prompt mel (zeros past the prompt)
        token_embedding: torch.Tensor,  # [B or 1, N, text_emb_dim] from embed_tokens
        time: torch.Tensor,  # [B] flow time in [0, 1]
        speaker: torch.Tensor | None,  # [B, speaker_dim] L2-normalised, or None when speaker_dim == 0
        attention_mask: torch.Tensor | None = None,  # [N, N] bool, True where a frame may attend (block-causal streaming)
    ) -> torch.Tensor:  # [B, N, mel]
        batch, frames = x.shape[0], x.shape[1]
        modulation = self.time_embed(time)  # [B, dim]
        if self.sizes.speaker_dim:
            if speaker is None:
                raise ValueError("this DiT needs a speaker embedding")
            modulation = torch.cat([modulation, speaker.to(modulation.dtype)], dim=-1)
        token_embedding = token_embedding.expand(batch, -1, -1)
        hidden = self.emb_concator(x, condition, token_embedding)  # [B, N, dim]
        cos, sin = self.rotary_embed.cos_sin(frames, hidden.device)  # [N, dim_head] each
        for block in self.transformer_blocks:
            hidden = block(hidden, modulation, cos, sin, attention_mask)
        return self.proj_out(self.norm_out(hidden, modulation))


class _TimestepEmbedding(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.time_mlp = nn.Sequential(nn.Linear(_TIME_FREQ_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, time: torch.Tensor) -> torch.Tensor:  # [B] -> [B, dim]
        half = _TIME_FREQ_DIM // 2
        freqs = torch.exp(torch.arange(half, device=time.device).float() * -(math.log(10000.0) / (half - 1)))
        angles = _TIME_SCALE * time.float()[:, None] * freqs[None]  # [B, half]
        features = torch.cat([angles.sin(), angles.cos()], dim=-1)
        return self.time_mlp(features.to(self.time_mlp[0].weight.dtype))


class _GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2 GRN; the L2 norm runs over the time axis of [B, N, C], as upstream does."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, ord=2, dim=1, keepdim=True)  # [B, 1, C]
        scaled = norm / (norm.mean(dim=-1, keepdim=True) + _GRN_EPS)
        return self.gamma * (x * scaled) + self.beta + x


class _ConvNeXtV2Block(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, _CONVNEXT_KERNEL, padding=_CONVNEXT_KERNEL // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=_NORM_EPS)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.grn = _GlobalResponseNorm(hidden)
        self.pwconv2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, C]
        y = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        y = self.grn(F.gelu(self.pwconv1(self.norm(y))))
        return x + self.pwconv2(y)


class _TokenEmbedding(nn.Module):
    """Speech tokens, nearest-interpolated to the mel frame rate, embedded, plus sinusoidal
    positions and ConvNeXt-V2 blocks."""

    def __init__(self, vocab_size: int, dim: int, conv_layers: int) -> None:
        super().__init__()
        # An explicit (uninitialised) weight skips normal_ init, which on the meta device goes
        # through torch's Python decompositions and costs seconds of imports at load time.
        self.text_embed = nn.Embedding(vocab_size + 1, dim, _weight=torch.empty(vocab_size + 1, dim))
        self.text_blocks = nn.Sequential(*[_ConvNeXtV2Block(dim, dim * 2) for _ in range(conv_layers)])

    def forward(self, tokens: torch.Tensor, frames: int) -> torch.Tensor:  # [B, T] -> [B, frames, C]
        if int(tokens.max()) >= self.text_embed.num_embeddings or int(tokens.min()) < 0:
            raise ValueError(f"speech token out of the flow vocabulary ({self.text_embed.num_embeddings})")
        # nearest interpolation of the ids themselves, exactly as upstream (through float32)
        ids = F.interpolate(tokens[:, None].float(), size=frames, mode="nearest")[:, 0].long()
        hidden = self.text_embed(ids)
        if len(self.text_blocks) == 0:
            return hidden
        hidden = hidden + _token_positions(frames, hidden.shape[-1], hidden.device).to(hidden.dtype)
        return self.text_blocks(hidden)


def _token_positions(frames: int, dim: int, device: torch.device) -> torch.Tensor:
    """[frames, dim]: cos | sin of position x 10000^(-2i/dim), positions clamped to 4095."""
    freqs = 1.0 / (_ROPE_BASE ** (torch.arange(0, dim, 2, device=device)[: dim // 2].float() / dim))
    positions = torch.arange(frames, device=device).clamp(max=_TOKEN_MAX_POSITIONS - 1).float()
    angles = torch.outer(positions, freqs)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class _ConvPositionEmbedding(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        pad = _CONV_POS_KERNEL // 2
        self.conv1d = nn.Sequential(
            nn.Conv1d(dim, dim, _CONV_POS_KERNEL, groups=_CONV_POS_GROUPS, padding=pad),
            nn.Mish(),
            nn.Conv1d(dim, dim, _CONV_POS_KERNEL, groups=_CONV_POS_GROUPS, padding=pad),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, C]
        return self.conv1d(x.transpose(1, 2)).transpose(1, 2)


class _InputProjection(nn.Module):
    """Concatenates noisy mel, condition and token embedding; projects; adds conv positions."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.conv_pos_embed = _ConvPositionEmbedding(dim)

    def forward(self, x: torch.Tensor, condition: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.proj(torch.cat([x, condition, tokens], dim=-1))
        return self.conv_pos_embed(hidden) + hidden


class _RotaryEmbedding(nn.Module):
    """Interleaved-pair rotary angles for one head's width (the buffer is in the official file)."""

    def __init__(self, dim_head: int) -> None:
        super().__init__()
        self.register_buffer("inv_freq", rotary_inv_freq(dim_head))

    def cos_sin(self, frames: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(frames, device=device).float()
        angles = torch.outer(positions, self.inv_freq.float()).repeat_interleave(2, dim=-1)  # [N, dim_head]
        return angles.cos(), angles.sin()


def rotary_inv_freq(dim_head: int) -> torch.Tensor:
    """[dim_head / 2] rotary frequencies, always computed on the CPU (also under a meta-device
    context, where the arithmetic would go through slow Python decompositions)."""
    return 1.0 / (_ROPE_BASE ** (torch.arange(0, dim_head, 2, device="cpu").float() / dim_head))


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates the first cos.shape[-1] channels of x [B, N, inner] in interleaved pairs.

    As upstream, this is applied before the split into heads, so only the first head's channels
    are rotated; the rest pass unchanged.
    """
    width = cos.shape[-1]
    head, rest = x[..., :width].float(), x[..., width:]
    pairs = head.unflatten(-1, (width // 2, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    head = head * cos + rotated * sin
    return torch.cat([head.to(x.dtype), rest], dim=-1)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, frames, _ = x.shape
        query = _apply_rotary(self.to_q(x), cos, sin)
        key = _apply_rotary(self.to_k(x), cos, sin)
        value = self.to_v(x)
        # [B, N, inner] -> [B, H, N, dim_head]
        query, key, value = (t.view(batch, frames, self.heads, -1).transpose(1, 2) for t in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        return self.to_out[0](out.transpose(1, 2).reshape(batch, frames, -1))


class _AdaLayerNormZero(nn.Module):
    """Six modulations (shift, scale, gate for attention and for the feed-forward) from time+speaker."""

    def __init__(self, dim: int, extra_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim + extra_dim, dim * 6)

    def forward(self, modulation: torch.Tensor) -> tuple[torch.Tensor, ...]:  # [B, D] -> 6 x [B, 1, dim]
        return tuple(chunk[:, None] for chunk in self.linear(F.silu(modulation)).chunk(6, dim=-1))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        inner = dim * mult
        # index 1 is upstream's (parameter-free) dropout; kept so the keys read ff.0.0 / ff.2
        self.ff = nn.Sequential(
            nn.Sequential(nn.Linear(dim, inner), nn.GELU(approximate="tanh")), nn.Identity(), nn.Linear(inner, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class _DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: int, extra_dim: int) -> None:
        super().__init__()
        self.attn_norm = _AdaLayerNormZero(dim, extra_dim)
        self.attn = _Attention(dim, heads, dim_head)
        self.ff = _FeedForward(dim, ff_mult)

    def forward(
        self,
        x: torch.Tensor,
        modulation: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        shift_attn, scale_attn, gate_attn, shift_ff, scale_ff, gate_ff = self.attn_norm(modulation)
        width = x.shape[-1]
        normed = F.layer_norm(x, (width,), eps=_NORM_EPS) * (1 + scale_attn) + shift_attn
        x = x + gate_attn * self.attn(normed, cos, sin, mask)
        normed = F.layer_norm(x, (width,), eps=_NORM_EPS) * (1 + scale_ff) + shift_ff
        return x + gate_ff * self.ff(normed)


class _FinalAdaLayerNorm(nn.Module):
    def __init__(self, dim: int, extra_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim + extra_dim, dim * 2)

    def forward(self, x: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(modulation)).chunk(2, dim=-1)  # upstream order: scale first
        return F.layer_norm(x, (x.shape[-1],), eps=_NORM_EPS) * (1 + scale[:, None]) + shift[:, None]
