"""Speech-token sampling as upstream GLM-TTS does it: repetition-aware sampling ("ras") and top-k,
plus greedy decoding for parity tests.

`sample_token` is the reference: it draws with `torch.multinomial` on tensors of the same shape,
dtype and device as upstream, so that a seeded generator reproduces upstream's token stream (one CPU
multinomial draw consumes one exponential variate per candidate). `sample_rows` is the fast path's
version: the same distributions for a batch of rows, all on the device with no host
synchronisation, drawing by inverse CDF from two uniforms per row and step that the caller supplies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from glmtts.types import SynthesisError, SynthesisOptions

METHODS = ("ras", "topk", "greedy")
METHOD_CODES = {method: code for code, method in enumerate(METHODS)}  # per-row codes of `sample_rows`


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

    @classmethod
    def from_options(cls, options: SynthesisOptions) -> SamplingConfig:
        """A request's settings over upstream's defaults; bad settings are the request's error."""
        defaults = cls()
        try:
            return replace(
                defaults,
                method=options.sampling,
                top_k=defaults.top_k if options.top_k is None else options.top_k,
                top_p=defaults.top_p if options.top_p is None else options.top_p,
                temperature=defaults.temperature if options.temperature is None else options.temperature,
            )
        except ValueError as error:
            raise SynthesisError(str(error)) from error


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
    if config.method == "greedy":
        if not allow_end:
            logp = logp.clone()
            logp[end_id] = -math.inf
        return int(logp.argmax())
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


def sample_rows(
    logits: torch.Tensor,  # [B, V] float32
    history: torch.Tensor,  # [B, W] int64: the last W appended ids of each row, -1 where none yet
    allow_end: torch.Tensor,  # [B] bool: each row is past its minimum length
    method: torch.Tensor,  # [B] int64 METHOD_CODES
    top_k: torch.Tensor,  # [B] int64, at most `max_top_k`
    top_p: torch.Tensor,  # [B] float32
    temperature: torch.Tensor,  # [B] float32
    repeats: torch.Tensor,  # [B] float32: RAS redraws when the draw occurs this often in the window
    uniforms: torch.Tensor,  # [B, 2] float32 in [0, 1): the nucleus / top-k draw, the RAS redraw
    end_id: int,
    max_top_k: int,
) -> torch.Tensor:  # [B] int64
    """`sample_token` for every row at once, without leaving the device (no `int()`, no `.cpu()`).

    The distributions are those of `sample_token`: RAS keeps the stable top candidates while the
    running probability before each is below top_p (the crossing one included), draws one, and
    redraws from the whole distribution when the draw repeats within the window; top-k draws from
    the top_k candidates with the end token masked before the minimum length (the reference redraws
    until it is not the end token: the same distribution); greedy takes the argmax. Draws are by
    inverse CDF, so the random stream is not upstream's: this path is reproducible for a seed, not
    token-identical to the reference under sampling.
    """
    logp = logits.log_softmax(dim=-1)
    logp[:, end_id] = torch.where(allow_end, logp[:, end_id], -math.inf)
    probs = (logp / temperature[:, None]).softmax(dim=-1)
    top_values, top_ids = probs.topk(max_top_k, dim=-1)  # [B, K] descending; the first is the argmax
    rank = torch.arange(max_top_k, device=logits.device)[None, :]
    in_top_k = rank < top_k[:, None]
    before = top_values.cumsum(dim=-1) - top_values  # probability before each candidate
    nucleus = in_top_k & (before < top_p[:, None])
    keep = torch.where((method == METHOD_CODES["topk"])[:, None], in_top_k, nucleus)
    first = top_ids.gather(1, _inverse_cdf(top_values * keep, uniforms[:, :1]))[:, 0]
    # The redraw uses the untempered distribution, as the reference does.
    redraw = _inverse_cdf(logp.exp(), uniforms[:, 1:], guard_zeros=False)[:, 0]
    repeated = (history == first[:, None]).sum(dim=-1).float() >= repeats
    token = torch.where((method == METHOD_CODES["ras"]) & repeated, redraw, first)
    return torch.where(method == METHOD_CODES["greedy"], top_ids[:, 0], token)


def _inverse_cdf(weights: torch.Tensor, uniform: torch.Tensor, guard_zeros: bool = True) -> torch.Tensor:
    """[B, N] non-negative weights, [B, 1] uniforms -> [B, 1] indices drawn in proportion to the
    weights: the first index whose running sum exceeds u x total. `u x total` can round up to the
    total; `guard_zeros` then keeps the draw off trailing zero weights (else it is the last index,
    which costs one pass less over a vocabulary-wide row)."""
    running = weights.cumsum(dim=-1)
    index = torch.searchsorted(running, uniform * running[:, -1:], right=True)
    if not guard_zeros:
        return index.clamp(max=weights.shape[-1] - 1)
    last = (weights > 0).long().cumsum(dim=-1).argmax(dim=-1, keepdim=True)  # the last positive weight
    return torch.minimum(index, last)
