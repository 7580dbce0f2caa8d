"""Speech-token sampling as upstream GLM-TTS does it: repetition-aware sampling ("ras") and top-k.

Both draw with `torch.multinomial` on tensors of the same shape, dtype and device as upstream, so
that a seeded generator reproduces upstream's token stream (one CPU multinomial draw consumes one
exponential variate per candidate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

METHODS = ("ras", "topk")


@dataclass(frozen=True)
class SamplingConfig:
    """Per-request sampling settings; the defaults are upstream's."""

    method: str = "ras"
    top_k: int = 25
    top_p: float = 0.8
    temperature: float = 1.0
    window: int = 10  # RAS: how many recent tokens are checked for a repeat
    tau: float = 0.1  # RAS: redraw when the draw occurs at least window * tau times in the window

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"sampling method must be one of {METHODS}, not {self.method!r}")
        if self.top_k < 1 or not 0.0 < self.top_p <= 1.0 or self.temperature <= 0.0:
            raise ValueError(f"bad sampling settings: top_k={self.top_k}, top_p={self.top_p}, T={self.temperature}")


def sample_token(
    logp: torch.Tensor,
    history: list[int],
    end_id: int,
    allow_end: bool,
    config: SamplingConfig,
    generator: torch.Generator,
) -> int:
    """Draw the next id from log-probabilities `logp` [vocab] (float32).

    `history` holds the ids appended so far (RAS checks its tail); before the minimum length
    (`allow_end` False) the end token is masked (RAS) or redrawn (top-k).
    """
    if config.method == "topk":
        return _top_k(logp, end_id, allow_end, config, generator)
    if not allow_end:
        logp = logp.clone()
        logp[end_id] = -math.inf
    token = _nucleus(logp, config, generator)
    recent = history[-config.window :]
    if recent.count(token) >= config.window * config.tau:
        token = int(logp.softmax(dim=0).multinomial(1, replacement=True, generator=generator))
    return token


def _nucleus(logp: torch.Tensor, config: SamplingConfig, generator: torch.Generator) -> int:
    """Top-p / top-k candidates in stable descending order; the one crossing top_p is included."""
    probs = (logp / config.temperature).softmax(dim=0)
    candidates, order = _stable_top(probs, config.top_k)
    values = candidates.cpu().numpy()
    # Upstream accumulates one float32 at a time and checks before adding.
    total = np.float32(0.0)
    threshold = np.float32(config.top_p)
    count = 0
    while count < len(values) and total < threshold:
        total = np.float32(total + values[count])
        count += 1
    chosen = candidates[:count].clone()
    return int(order[int(chosen.multinomial(1, replacement=True, generator=generator))])


def _stable_top(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `k` entries of a stable descending sort of `probs`, without sorting all of it.

    Every entry tied with the k-th largest value is gathered (in index order), so ties come out
    exactly as a full stable sort orders them.
    """
    k = min(k, probs.numel())
    kth = probs.topk(k).values[-1]
    index = torch.nonzero(probs >= kth).squeeze(1)  # ascending ids
    values, order = probs[index].sort(descending=True, stable=True)
    return values[:k], index[order[:k]]


def _top_k(logp: torch.Tensor, end_id: int, allow_end: bool, config: SamplingConfig, generator: torch.Generator) -> int:
    probs, ids = (logp / config.temperature).softmax(dim=-1).topk(config.top_k)
    if not allow_end and float(probs[ids != end_id].sum()) == 0.0:
        raise ValueError("top-k sampling: only the end token has probability before the minimum length")
    while True:
        token = int(ids[probs.multinomial(1, replacement=True, generator=generator)])
        if allow_end or token != end_id:
            return token
