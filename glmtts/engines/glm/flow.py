"""GLM-TTS flow matching: speech tokens + prompt mel + speaker embedding -> 80-bin mel at 50 Hz.

Loads the official `flow/config.yaml` (HyperPyYAML, read as plain data: no tag is executed) and
`flow/flow.pt`, and integrates the DiT's velocity field with Euler steps on a cosine time schedule
and classifier-free guidance, as upstream's `Flow.inference_with_cache` does without streaming.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from glmtts.engines.glm.dit import DiT, DiTSizes, rotary_inv_freq
from glmtts.engines.glm.errors import CheckpointError
from glmtts.engines.glm.state_dict import assign_state_dict, read_torch_state_dict

_LOGGER = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "flow.pt"
_FLOW_SECTION = "flow"
_SIZES_SECTION = "dit_sizes"  # our optional extension; the official file lacks it -> code defaults
_WEIGHTS_WRAPPER_KEY = "model"
_ROTARY_KEY = "estimator.rotary_embed.inv_freq"
SPEAKER_DIM = 192
_BIG_DIT = {"trans_dim": 1024, "depth": 22, "heads": 16}
# Flow arguments that only matter for training.
_TRAINING_ONLY = {"calc_prompt_mel_loss", "loss_type", "use_mdt", "use_wavlm_emb"}


class _TagTolerantLoader(yaml.SafeLoader):
    """YAML loader that reads HyperPyYAML tags (`!new:`, `!name:`, `!ref`, `!apply:` ...) as plain
    mappings, lists and strings: nothing is imported, constructed or called."""


def _construct_tagged(loader: _TagTolerantLoader, _suffix: str, node: yaml.Node) -> object:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_TagTolerantLoader.add_multi_constructor("!", _construct_tagged)


def read_hyperpyyaml(path: Path) -> dict:
    """A HyperPyYAML file as plain data (tags dropped, references left as strings)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"flow config not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_TagTolerantLoader)
    except yaml.YAMLError as error:
        raise CheckpointError(f"cannot parse {path}: {error}") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a YAML mapping")
    return data


@dataclass(frozen=True)
class FlowConfig:
    """Arguments of upstream's `Flow` (defaults as in its code) plus optional DiT size overrides."""

    mel_dim: int = 80
    speech_token_dim: int = 512
    vocab_size: int = 100000
    input_frame_rate: float = 12.5
    mel_framerate: float = 86
    spk_embed_dim: int = 80
    spkr_emb_adaLN: bool = False
    remove_spkr_concat_condition: bool = False
    speech_token_cfg: bool = True
    t_scheduler: str = "cosine"
    big_model: bool = False
    dit_overrides: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: Path) -> FlowConfig:
        data = read_hyperpyyaml(path)
        flow_args = data.get(_FLOW_SECTION)
        if not isinstance(flow_args, dict):
            raise CheckpointError(f"{path}: no '{_FLOW_SECTION}' mapping")
        known = {f.name for f in fields(cls)} - {"dit_overrides"}
        if flow_args.get("use_wavlm_emb"):
            raise CheckpointError(f"{path}: use_wavlm_emb is not supported")
        for key in sorted(set(flow_args) - known - _TRAINING_ONLY):
            _LOGGER.warning("%s: ignoring unknown flow argument %r", path, key)
        overrides = data.get(_SIZES_SECTION) or {}
        allowed = {"trans_dim", "depth", "heads", "dim_head", "ff_mult", "conv_layers"}
        if not isinstance(overrides, dict) or not set(overrides) <= allowed:
            raise CheckpointError(f"{path}: '{_SIZES_SECTION}' may only set {sorted(allowed)}")
        args = {key: value for key, value in flow_args.items() if key in known}
        return cls(**args, dit_overrides={key: int(value) for key, value in overrides.items()})

    def dit_sizes(self) -> DiTSizes:
        sizes = DiTSizes(
            text_emb_dim=self.speech_token_dim,
            vocab_size=self.vocab_size,
            mel_dim=self.mel_dim,
            condition_dim=self.mel_dim if self.remove_spkr_concat_condition else self.mel_dim + self.spk_embed_dim,
            speaker_dim=SPEAKER_DIM if self.spkr_emb_adaLN else 0,
        )
        if self.big_model:
            sizes = replace(sizes, **_BIG_DIT)
        return replace(sizes, **self.dit_overrides)

    def mel_frames_for_tokens(self, n_tokens: int) -> int:
        """Upstream's float arithmetic: int(n / 25 * 50) is 2n - 1 for some n (29, 57, 113, ...)."""
        return int(n_tokens / self.input_frame_rate * self.mel_framerate)


class _FlowModule(nn.Module):
    """Parameter container with upstream's top-level names (`estimator.`, `spk_embed_affine_layer.`)."""

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        if not config.remove_spkr_concat_condition:
            self.spk_embed_affine_layer = nn.Linear(SPEAKER_DIM, config.spk_embed_dim)
        self.estimator = DiT(config.dit_sizes())


@dataclass
class FlowStepCache:
    """The ODE state entering each Euler step of one flow run, [1, N, 80] per step (upstream's
    `last_step_cache`): a stream pins the frames it has decided to these in its next run."""

    states: list[torch.Tensor]


# Upstream's DiT converts the block sizes of its streaming mask from tokens to frames as if tokens
# were 12.5 Hz and frames 22050 / 256 Hz (a leftover of an older model): 25 tokens -> 172 frames,
# where the 25 Hz model has 50. Kept, so the mask is the one the official code builds.
MASK_TOKEN_RATE = 12.5
MASK_FRAME_RATE = 22050 / 256
_MASK_SMALL_BLOCK = 172  # frames: blocks up to this size look ahead at least half a block, larger ones 1 / 1.5


def mask_block_frames(tokens: int) -> int:
    """A streaming block of `tokens` tokens in frames of the attention mask (upstream's conversion)."""
    return int(tokens / MASK_TOKEN_RATE * MASK_FRAME_RATE)


def block_causal_mask(block_frames: list[int], frames: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[frames, frames] bool: upstream's block-causal pattern. Blocks of `block_frames` (the last size
    repeated) follow each other; a frame sees every frame up to the end of its own block and, near the
    end of a block, at least `min_future` frames ahead (half the block, or 1 / 1.5 of blocks over 172
    frames)."""
    if not block_frames or frames <= 0:
        raise ValueError("need at least one block and one frame")
    sizes = list(block_frames)
    while sum(sizes) < frames:
        sizes.append(block_frames[-1])
    sizes_t = torch.tensor(sizes, dtype=torch.long)
    ends = sizes_t.cumsum(0)
    index = torch.arange(frames)
    block = torch.searchsorted(ends, index, right=True)  # the first block whose end is past the frame
    size = sizes_t[block]
    end = ends[block]
    look_future = end - 1 - index
    min_future = torch.where(size <= _MASK_SMALL_BLOCK, (size.double() / 2).long(), (size.double() / 1.5).long())
    visible_end = end + (min_future - look_future).clamp(min=0)
    return (torch.arange(frames)[None, :] < visible_end[:, None]).to(device)


class FlowDecoder:
    """Owns the flow DiT and turns speech tokens into mel frames for one prompt voice."""

    def __init__(self, module: _FlowModule, config: FlowConfig, device: torch.device, dtype: torch.dtype) -> None:
        self._module = module
        self.config = config
        self.device = device
        self.dtype = dtype

    @property
    def dit(self) -> DiT:
        return self._module.estimator

    @classmethod
    def load(cls, flow_dir: Path, device: torch.device | str, dtype: torch.dtype = torch.float32) -> FlowDecoder:
        flow_dir = Path(flow_dir)
        config = FlowConfig.from_yaml(flow_dir / CONFIG_FILE)
        weights = flow_dir / WEIGHTS_FILE
        state = read_torch_state_dict(weights, wrapper_key=_WEIGHTS_WRAPPER_KEY)
        with torch.device("meta"):
            module = _FlowModule(config)
        # The rotary frequencies are a buffer derived from the head width; accept a file without it.
        inv_freq = state.get(_ROTARY_KEY)
        if inv_freq is None:
            inv_freq = rotary_inv_freq(config.dit_sizes().dim_head)
            state[_ROTARY_KEY] = inv_freq
        device = torch.device(device)
        assign_state_dict(module, state, weights, device, dtype)
        module.estimator.rotary_embed.inv_freq = inv_freq.float().to(device)  # keep fp32 under fp16/bf16
        sizes = config.dit_sizes()
        _LOGGER.info(
            "flow loaded from %s: DiT %d x %d, %d heads, vocab %d (%s, %s)",
            flow_dir,
            sizes.depth,
            sizes.trans_dim,
            sizes.heads,
            sizes.vocab_size,
            device,
            dtype,
        )
        return cls(module, config, device, dtype)

    def mel_frames_for_tokens(self, n_tokens: int) -> int:
        return self.config.mel_frames_for_tokens(n_tokens)

    def tokens_to_mel(
        self,
        tokens: torch.Tensor,  # [T] speech-token ids (25 Hz)
        prompt_tokens: torch.Tensor,  # [Tp]
        prompt_mel: torch.Tensor,  # [Fp, 80] from audio_to_prompt_mel
        speaker_embedding: torch.Tensor,  # [192] CAM++ embedding (normalised here)
        generator: torch.Generator | None = None,
        steps: int = 10,
        cfg_strength: float = 0.7,
        *,
        noise: torch.Tensor | None = None,  # [N, 80] instead of a draw from `generator`
        batched_cfg: bool = True,
    ) -> torch.Tensor:  # [F, 80] float32, prompt frames cut
        """Euler-integrates the flow from one noise draw [1, frames, 80] (the only use of
        `generator`; or the given `noise`) with guidance: v = (1 + s) v(cond) - s v(uncond), where
        the unconditional branch has no prompt mel and no speaker (and no tokens if the config's
        speech_token_cfg). `batched_cfg` runs both branches as one batch of two (faster); False runs
        them as two calls, as upstream does (the parity mode: the mel differs by ~2e-7)."""
        mel, _ = self.tokens_to_mel_cached(
            tokens, prompt_tokens, prompt_mel, speaker_embedding, generator=generator, noise=noise, steps=steps,
            cfg_strength=cfg_strength, batched_cfg=batched_cfg,
        )  # fmt: skip
        return mel

    @torch.inference_mode()
    def tokens_to_mel_cached(
        self,
        tokens: torch.Tensor,  # [T]
        prompt_tokens: torch.Tensor,  # [Tp]
        prompt_mel: torch.Tensor,  # [Fp, 80]
        speaker_embedding: torch.Tensor,  # [192]
        *,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,  # [N, 80]
        steps: int = 10,
        cfg_strength: float = 0.7,
        batched_cfg: bool = True,
        attention_mask: torch.Tensor | None = None,  # [N, N] bool: block-causal streaming
        cache: FlowStepCache | None = None,  # a previous run's step states...
        pinned_frames: int = 0,  # ...whose first frames are pinned at every step (upstream's step cache)
        keep_cache: bool = False,
    ) -> tuple[torch.Tensor, FlowStepCache | None]:
        """`tokens_to_mel` as upstream's `inference_with_cache`: optionally with an attention mask,
        and with the state entering every step overwritten on the first `pinned_frames` frames by
        `cache` (the frames a stream has already decided), returning this run's step states."""
        if tokens.numel() == 0:
            raise ValueError("no speech tokens to decode")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if (generator is None) == (noise is None):
            raise ValueError("give exactly one of generator and noise")
        mel_dim = self.config.mel_dim
        if prompt_mel.ndim != 2 or prompt_mel.shape[1] != mel_dim:
            raise ValueError(f"prompt mel must be [frames, {mel_dim}], got {tuple(prompt_mel.shape)}")
        device = self.device
        all_tokens = torch.cat([prompt_tokens.reshape(-1), tokens.reshape(-1)]).to(device, torch.long)[None]
        frames = self.mel_frames_for_tokens(all_tokens.shape[1])
        prompt_frames = prompt_mel.shape[0]

        condition = torch.zeros(1, frames, mel_dim, device=device)  # [1, N, 80]
        copied = min(prompt_frames, frames)
        if copied:
            condition[0, :copied] = prompt_mel[-copied:].to(device, torch.float32)
        speaker = F.normalize(torch.as_tensor(speaker_embedding).float().reshape(1, -1).to(device), dim=1)
        if not self.config.remove_spkr_concat_condition:
            projected = self._module.spk_embed_affine_layer(speaker.to(self.dtype)).float()  # [1, spk_embed_dim]
            condition = torch.cat([condition, projected[:, None].expand(-1, frames, -1)], dim=-1)

        if noise is None:
            noise = torch.randn((1, frames, mel_dim), generator=generator, device=generator.device, dtype=torch.float32)
        noise = noise.reshape(1, -1, mel_dim)
        if noise.shape[1] != frames:
            raise ValueError(f"noise has {noise.shape[1]} frames, the tokens make {frames}")
        x = noise.to(device, torch.float32)  # [1, N, 80], the ODE state stays float32

        guided = cfg_strength > 0
        token_embedding = self.dit.embed_tokens(all_tokens, frames)  # [1, N, E]
        uncond_tokens = token_embedding
        if guided and self.config.speech_token_cfg:
            uncond_tokens = self.dit.embed_tokens(torch.zeros_like(all_tokens), frames)
        condition = condition.to(self.dtype)
        speaker = speaker.to(self.dtype)
        if guided and batched_cfg:
            token_embedding = (
                torch.cat([token_embedding, uncond_tokens]) if uncond_tokens is not token_embedding else token_embedding
            )
            condition = torch.cat([condition, torch.zeros_like(condition)])  # [2, N, C]
            speaker = torch.cat([speaker, torch.zeros_like(speaker)])  # [2, 192]
        mask = None if attention_mask is None else attention_mask.to(device)

        def velocity_of(state: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            state = state.to(self.dtype)
            if not guided:
                return self.dit(state, condition, token_embedding, t[None], speaker, mask).float()
            if batched_cfg:
                both = self.dit(state.expand(2, -1, -1), condition, token_embedding, t.expand(2), speaker, mask).float()
                cond, uncond = both[:1], both[1:]
            else:  # upstream: two calls
                cond = self.dit(state, condition, token_embedding, t[None], speaker, mask).float()
                uncond = self.dit(
                    state, torch.zeros_like(condition), uncond_tokens, t[None], torch.zeros_like(speaker), mask
                ).float()
            return (1.0 + cfg_strength) * cond - cfg_strength * uncond

        states: list[torch.Tensor] = []
        schedule = self._time_schedule(steps)  # [steps + 1]
        t = schedule[0]
        dt = schedule[1] - schedule[0]
        for step in range(1, steps + 1):
            if cache is not None and pinned_frames > 0:
                cached = cache.states[step - 1]
                pinned = min(frames, pinned_frames, cached.shape[1])
                x[:, :pinned] = cached[:, :pinned]
            if keep_cache:
                states.append(x.clone())
            x = x + dt * velocity_of(x, t)
            # Upstream accumulates t and derives each dt from it; same float32 arithmetic here.
            t = t + dt
            if step < steps:
                dt = schedule[step + 1] - t
        return x[0, prompt_frames:], (FlowStepCache(states) if keep_cache else None)

    def _time_schedule(self, steps: int) -> torch.Tensor:
        span = torch.linspace(0, 1, steps + 1, device=self.device)
        if self.config.t_scheduler == "cosine":
            span = 1 - torch.cos(span * 0.5 * math.pi)
        return span
