"""Real streaming inside a segment: speech tokens -> mel -> audio block by block while the LLM decodes.

Upstream's pieces (`Flow.inference_with_cache` with its block-causal mask and step cache, blocks of
25 / 50 / 200 tokens with look-ahead 12 / 25 / 100, a 0.1 s fade) are run here as the tokens arrive:

- when the LLM has produced the tokens of the next block, the flow runs over the prompt and every
  token so far with upstream's block-causal mask; the ODE state of the frames decided by earlier runs
  is pinned at every step to what it was (the step cache), so the new frames meet the context the
  audio already played was made from;
- the last `lookahead` tokens' frames of a run are provisional: they are recomputed by the next run;
- where one run's decided frames meet the next run's, the mel is cross-faded over FADE_FRAMES (0.1 s);
- the vocoder stream (vocoder.py) turns the decided mel into audio in windows that continue the
  phase and noise of the audio before them, with the provisional frames as right context.

The flow's noise and the vocoder's source noise come from tapes seeded from the request's seed
(noise.py), so a streamed segment and the same segment made in one pass (`tokens_to_audio_whole`)
share every random draw; they differ only by what the block boundaries change (mask, look-ahead,
fades), which tests/unit/test_glm_streaming.py measures.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from glmtts.engines.glm.flow import FlowDecoder, FlowStepCache, block_causal_mask, mask_block_frames
from glmtts.engines.glm.noise import NoiseTape, derive_seed
from glmtts.engines.glm.vocoder import HiFTVocoder, Vocos2DVocoder

_LOGGER = logging.getLogger(__name__)

FADE_FRAMES = 5  # upstream's 0.1 s fade, at 50 frames per second
FLOW_SEED_PURPOSE = "flow"
VOCODER_SEED_PURPOSE = "vocoder"


@dataclass(frozen=True)
class StreamSchedule:
    """Block sizes and look-aheads in speech tokens (the last of each repeats); upstream's defaults."""

    block_tokens: tuple[int, ...] = (25, 50, 200)
    lookahead_tokens: tuple[int, ...] = (12, 25, 100)
    fade_frames: int = FADE_FRAMES

    def __post_init__(self) -> None:
        if len(self.block_tokens) != len(self.lookahead_tokens) or not self.block_tokens:
            raise ValueError("block_tokens and lookahead_tokens need the same, non-zero length")
        if any(b < 1 for b in self.block_tokens) or any(not 0 <= a < b for a, b in zip(self.lookahead_tokens, self.block_tokens)):
            raise ValueError("each block needs at least one token and a look-ahead shorter than itself")

    def block_end(self, index: int) -> int:
        """Tokens needed before run `index` (0-based): the sum of the first index + 1 block sizes."""
        sizes = self.block_tokens
        if index < len(sizes):
            return sum(sizes[: index + 1])
        return sum(sizes) + (index + 1 - len(sizes)) * sizes[-1]

    def lookahead(self, index: int) -> int:
        return self.lookahead_tokens[min(index, len(self.lookahead_tokens) - 1)]


@dataclass
class StreamTimings:
    flow_s: float = 0.0
    vocoder_s: float = 0.0

    def take(self) -> dict[str, float]:
        """The seconds spent since the last take, by stage."""
        taken = {"flow": self.flow_s, "vocoder": self.vocoder_s}
        self.flow_s = self.vocoder_s = 0.0
        return taken


class SegmentStreamer:
    """Owns one segment's streaming state: tokens so far, the flow's step cache, the decided mel and
    the vocoder stream. `push` tokens as the LLM yields them; each call returns the audio now ready."""

    def __init__(
        self,
        flow: FlowDecoder,
        vocoder: HiFTVocoder | Vocos2DVocoder,
        prompt_tokens: torch.Tensor,  # [Tp] the flow's prompt tokens
        prompt_mel: torch.Tensor,  # [Fp, 80] at the vocoder's rate
        speaker_embedding: torch.Tensor,  # [192]
        seed: int,
        schedule: StreamSchedule | None = None,
        batched_cfg: bool = True,
    ) -> None:
        self.flow = flow
        self.schedule = schedule or StreamSchedule()
        self._prompt_tokens = prompt_tokens.reshape(-1).long()
        self._prompt_mel = prompt_mel
        self._speaker = speaker_embedding
        self._batched_cfg = batched_cfg
        self._noise = NoiseTape(derive_seed(seed, FLOW_SEED_PURPOSE), flow.config.mel_dim, block_rows=256)
        self._vocoder = vocoder.stream(derive_seed(seed, VOCODER_SEED_PURPOSE))
        self._frames_per_token = flow.config.mel_framerate / flow.config.input_frame_rate
        prompt_count = self._prompt_tokens.numel()
        self._mask_blocks = [mask_block_frames(prompt_count)] + [mask_block_frames(n) for n in self.schedule.block_tokens]
        self._tokens: list[int] = []
        self._runs = 0  # flow runs so far
        self._cache: FlowStepCache | None = None
        self._decided = 0  # generated frames decided (pinned): handed to the vocoder or held for the fade
        self._held: torch.Tensor | None = None  # [fade, 80] the last decided frames, to fade into the next run
        self._last_run: tuple[int, torch.Tensor] | None = None  # (tokens, mel [M, 80]) of the last run
        self.timings = StreamTimings()
        self.blocks_run = 0
        self.mel_joins: list[int] = []  # generated frames where one run's mel was faded into the next

    def push(self, tokens: list[int]) -> np.ndarray:
        """Add speech tokens; run the flow for every block now complete; the audio now ready."""
        self._tokens.extend(tokens)
        pieces = []
        while len(self._tokens) >= self.schedule.block_end(self._runs):
            pieces.append(self._run(self.schedule.block_end(self._runs), final=False))
        return _join(pieces)

    def finish(self) -> np.ndarray:
        """All tokens are in: decide the rest of the mel and return the rest of the audio."""
        pieces = []
        if self._tokens:
            if self._last_run is not None and self._last_run[0] == len(self._tokens):
                pieces.append(self._decide(self._last_run[1], final=True))  # its provisional frames saw every token
            else:
                pieces.append(self._run(len(self._tokens), final=True))
        start = time.perf_counter()
        pieces.append(self._vocoder.finish())
        self.timings.vocoder_s += time.perf_counter() - start
        return _join(pieces)

    def _run(self, count: int, final: bool) -> np.ndarray:
        """One flow run over the prompt and the first `count` tokens; hands the newly decided mel on."""
        start = time.perf_counter()
        flow = self.flow
        total_frames = flow.mel_frames_for_tokens(self._prompt_tokens.numel() + count)
        prompt_frames = self._prompt_mel.shape[0]
        mask = block_causal_mask(self._mask_blocks, total_frames, flow.device)
        mel, cache = flow.tokens_to_mel_cached(
            torch.tensor(self._tokens[:count], dtype=torch.long),
            self._prompt_tokens,
            self._prompt_mel,
            self._speaker,
            noise=self._noise.rows(0, total_frames),
            batched_cfg=self._batched_cfg,
            attention_mask=mask,
            cache=self._cache,
            pinned_frames=prompt_frames + self._decided,
            keep_cache=not final,
        )  # [M, 80]
        _synchronize(flow.device)
        self.timings.flow_s += time.perf_counter() - start
        self._cache = cache
        lookahead = 0 if final else int(self.schedule.lookahead(self._runs) * self._frames_per_token)
        self._runs += 1
        self.blocks_run += 1
        self._last_run = (count, mel)
        return self._decide(mel, final, lookahead)

    def _decide(self, mel: torch.Tensor, final: bool, lookahead: int = 0) -> np.ndarray:
        """Frames up to `len(mel) - lookahead` become decided; all but the last FADE_FRAMES go to
        the vocoder (the first ones faded with the previous run's held frames)."""
        fade = self.schedule.fade_frames
        decided = len(mel) if final else max(self._decided, len(mel) - lookahead)
        out = []
        held_start = self._decided - (0 if self._held is None else len(self._held))
        if self._held is not None:
            count = len(self._held)
            self.mel_joins.append(held_start)
            new = mel[held_start : held_start + count]
            ramp = (torch.arange(1, count + 1, device=mel.device, dtype=torch.float32) / (count + 1))[:, None]
            out.append(self._held * (1 - ramp) + new * ramp)
            self._held = None
        release = decided if final else max(self._decided, decided - fade)
        out.append(mel[self._decided : release])
        if not final and release < decided:
            self._held = mel[release:decided]
        self._decided = decided
        ready = torch.cat(out) if out else mel[:0]
        provisional = None if final else mel[release:]
        start = time.perf_counter()
        audio = self._vocoder.push(ready, provisional)
        self.timings.vocoder_s += time.perf_counter() - start
        return audio


def tokens_to_audio_whole(
    flow: FlowDecoder,
    vocoder: HiFTVocoder | Vocos2DVocoder,
    tokens: torch.Tensor,  # [T]
    prompt_tokens: torch.Tensor,
    prompt_mel: torch.Tensor,
    speaker_embedding: torch.Tensor,
    seed: int,
    batched_cfg: bool = True,
) -> tuple[np.ndarray, float, float]:
    """A segment in one pass with the streaming path's random draws (flow noise and vocoder noise from
    the seed's tapes, float64 phase): the fast path's non-streamed synthesis. Returns (audio, flow s,
    vocoder s)."""
    start = time.perf_counter()
    frames = flow.mel_frames_for_tokens(prompt_tokens.numel() + tokens.numel())
    noise = NoiseTape(derive_seed(seed, FLOW_SEED_PURPOSE), flow.config.mel_dim, block_rows=256).rows(0, frames)
    mel = flow.tokens_to_mel(tokens, prompt_tokens, prompt_mel, speaker_embedding, noise=noise, batched_cfg=batched_cfg)
    _synchronize(flow.device)
    flow_s = time.perf_counter() - start
    start = time.perf_counter()
    audio = vocoder.mel_to_audio_seeded(mel, derive_seed(seed, VOCODER_SEED_PURPOSE))
    return audio, flow_s, time.perf_counter() - start


def _join(pieces: list[np.ndarray]) -> np.ndarray:
    pieces = [piece for piece in pieces if len(piece)]
    return np.concatenate(pieces).astype(np.float32, copy=False) if pieces else np.zeros(0, dtype=np.float32)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
