"""The speech LM: a Llama decoder that continues `[text, <|begin_of_audio|>, speech]` with speech tokens.

Built from `llm/config.json` on the meta device; the weights are memory-mapped from the safetensors
shards named by `model.safetensors.index.json` (or one `model.safetensors`), checked key by key and
shape by shape, and assigned straight to the device and dtype. Decoding is KV-cached, one token per
step, with the sampling of `sampling.py`; `generate_batch` decodes several prompts in one forward
per step (left-padded rows, each with its own lengths, sampling settings and generator).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import LlamaConfig, LlamaForCausalLM, StaticCache
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from glmtts.engines.glm.errors import CheckpointError
from glmtts.engines.glm.sampling import SamplingConfig, sample_token
from glmtts.engines.glm.text_tokenizer import SpeechTokenIds

_LOGGER = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
TIED_HEAD_KEY = "lm_head.weight"
PAD_ID = 0  # fed at left padding and after a row has finished; masked out or ignored, so any id does
# transformers 5 renamed the forward's `past_key_values` to `cache` (the old name goes in 5.40).
_CACHE_ARGUMENT = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


@dataclass
class GenerationRequest:
    """The arguments of one `SpeechLM.generate` call, for decoding several together."""

    prompt_ids: list[int]
    min_new: int
    max_new: int
    sampling: SamplingConfig
    generator: torch.Generator
    forced_length: int | None = None


class SpeechLM:
    """Owns the Llama weights and turns a prompt of ids into speech tokens (ids relative to ats).
    The reference path's SpeechDecoder (decoder.py): each decode allocates its own KV cache."""

    kv_cache_bytes = 0  # nothing held between decodes

    def __init__(self, model: LlamaForCausalLM, speech_ids: SpeechTokenIds, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.speech_ids = speech_ids
        self.device = device
        self.dtype = dtype

    @classmethod
    def load(cls, llm_dir: Path, device: torch.device | str, dtype: torch.dtype, speech_ids: SpeechTokenIds) -> SpeechLM:
        """Build the model from `config.json` and assign the memory-mapped weights strictly."""
        llm_dir = Path(llm_dir)
        device = torch.device(device)
        config = read_config(llm_dir)
        if config.vocab_size <= speech_ids.audio_end:
            raise CheckpointError(
                f"{llm_dir / CONFIG_FILE}: vocab_size {config.vocab_size} does not cover the speech tokens "
                f"(<|audio_32767|> is id {speech_ids.audio_end})"
            )
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
        expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        if config.tie_word_embeddings:
            del expected[TIED_HEAD_KEY]
        state = _read_weights(llm_dir, expected, device, dtype)
        model.load_state_dict(state, strict=False, assign=True)
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        # Non-persistent rotary buffers stay float32 and are computed on the real device.
        model.model.rotary_emb = LlamaRotaryEmbedding(config).to(device)
        left_on_meta = [name for name, tensor in (*model.named_parameters(), *model.named_buffers()) if tensor.is_meta]
        if left_on_meta:
            raise CheckpointError(f"{llm_dir}: no weights for {left_on_meta[0]!r}")
        model.eval().requires_grad_(False)
        _LOGGER.info(
            "Speech LM: %d layers, hidden %d, vocab %d, %s on %s",
            config.num_hidden_layers, config.hidden_size, config.vocab_size, dtype, device,
        )  # fmt: skip
        return cls(model, speech_ids, device, dtype)

    def warmup(self) -> dict[str, float]:
        """Nothing to prepare: transformers' model runs as loaded."""
        return {}

    def describe(self) -> dict[str, object]:
        return {}

    @torch.inference_mode()
    def logits(self, ids: list[int]) -> torch.Tensor:
        """Logits of every position in one pass without a cache: [T, vocab] float32."""
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        return self.model(input_ids=input_ids, use_cache=False).logits[0].float()

    def start(self, prompt_ids: list[int], max_new: int) -> tuple[Decoding, torch.Tensor]:
        """Prefill the prompt, with room for `max_new` more ids; returns the decoding state and the
        next-token logits [vocab] float32."""
        decoding = Decoding(self.model, self.device, len(prompt_ids) + max_new)
        return decoding, decoding.feed(prompt_ids)

    def generate(
        self,
        prompt_ids: list[int],
        min_new: int,
        max_new: int,
        sampling: SamplingConfig,
        generator: torch.Generator,
        forced_length: int | None = None,
    ) -> list[int]:
        """Sample speech tokens after the prompt; ids relative to `<|audio_0|>`.

        Stops at the end token (never before `min_new` tokens) or after `max_new` tokens. With
        `forced_length` (benchmarks) exactly that many tokens are drawn, all from the speech range.
        """
        request = GenerationRequest(prompt_ids, min_new, max_new, sampling, generator, forced_length)
        return [token for chunk in self.stream(request) for token in chunk]

    def stream(self, request: GenerationRequest) -> Iterator[list[int]]:
        """`generate`, yielding each token as soon as it is drawn (as a list of one)."""
        ids = self.speech_ids
        min_new, max_new = request.min_new, request.max_new
        outside_speech = None  # [vocab] bool, forced mode only
        if request.forced_length is not None:
            min_new = max_new = request.forced_length
            outside_speech = self._outside_speech()
        if max_new <= 0:
            return
        with torch.inference_mode():
            decoding, logits = self.start(request.prompt_ids, max_new)
        tokens: list[int] = []
        while len(tokens) < max_new:
            with torch.inference_mode():
                if outside_speech is not None:
                    logits = logits.masked_fill(outside_speech, -math.inf)
                token = sample_token(
                    logits.log_softmax(dim=-1), tokens, ids.end_of_speech, len(tokens) >= min_new, request.sampling,
                    request.generator,
                )  # fmt: skip
                if token == ids.end_of_speech:
                    return
                tokens.append(token)
                if len(tokens) < max_new:
                    logits = decoding.feed([token])
            yield [token - ids.audio_start]

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[list[int]]:
        """`generate` for several prompts in one forward per step; each row stops on its own.

        Rows that have finished keep feeding PAD_ID until the last one stops; their logits are ignored.
        """
        rows: list[list[int]] = [[] for _ in requests]
        for chunks in self.stream_batch(requests):
            for row, chunk in zip(rows, chunks):
                row.extend(chunk)
        return rows

    def stream_batch(
        self, requests: Sequence[GenerationRequest], stopped: Callable[[int], bool] | None = None
    ) -> Iterator[list[list[int]]]:
        """`generate_batch`, yielding each row's new token (or nothing) after every step.
        `stopped(row)` True ends a row early (its caller went away). One request runs `stream`, the
        upstream-exact single-sequence path."""
        if len(requests) == 1:
            for chunk in self.stream(requests[0]):
                yield [chunk]
                if stopped is not None and stopped(0):
                    return
            return
        ids = self.speech_ids
        bounds = [(r.forced_length, r.forced_length) if r.forced_length is not None else (r.min_new, r.max_new) for r in requests]
        outside_speech = self._outside_speech() if any(r.forced_length is not None for r in requests) else None
        tokens: list[list[int]] = [[] for _ in requests]
        active = [max_new > 0 for _, max_new in bounds]
        if not any(active):
            return
        with torch.inference_mode():
            decoding = BatchDecoding(self.model, self.device, [r.prompt_ids for r in requests], max(m for _, m in bounds))
            logits = decoding.prefill()  # [B, vocab]
        while any(active):
            next_ids = [PAD_ID] * len(requests)
            new: list[list[int]] = [[] for _ in requests]
            with torch.inference_mode():
                for row, request in enumerate(requests):
                    if not active[row]:
                        continue
                    if stopped is not None and stopped(row):
                        active[row] = False
                        continue
                    min_new, max_new = bounds[row]
                    row_logits = logits[row]  # [vocab]
                    if request.forced_length is not None:
                        row_logits = row_logits.masked_fill(outside_speech, -math.inf)
                    history = tokens[row]
                    token = sample_token(
                        row_logits.log_softmax(dim=-1), history, ids.end_of_speech, len(history) >= min_new,
                        request.sampling, request.generator,
                    )  # fmt: skip
                    if token == ids.end_of_speech:
                        active[row] = False
                        continue
                    history.append(token)
                    new[row].append(token - ids.audio_start)
                    if len(history) < max_new:
                        next_ids[row] = token
                    else:
                        active[row] = False
                if any(active):
                    logits = decoding.feed(next_ids)
            yield new

    def _outside_speech(self) -> torch.Tensor:
        """[vocab] bool: True for every id that is not a speech token."""
        outside = torch.ones(self.model.config.vocab_size, dtype=torch.bool, device=self.device)
        outside[self.speech_ids.audio_start : self.speech_ids.audio_end + 1] = False
        return outside


class Decoding:
    """One sequence's KV cache and position: feed ids, get the logits after the last one.

    The cache is a StaticCache sized for the whole sequence: on the CPU it decoded as fast as or
    faster than a DynamicCache, which concatenates new keys and values at every step.
    """

    def __init__(self, model: LlamaForCausalLM, device: torch.device, capacity: int):
        self._model = model
        self._device = device
        self._capacity = capacity
        self._length = 0
        self._cache = StaticCache(config=model.config, max_cache_len=capacity)

    @torch.inference_mode()
    def feed(self, ids: list[int]) -> torch.Tensor:
        """Append `ids` to the sequence; logits for the next position: [vocab] float32."""
        if self._length + len(ids) > self._capacity:
            raise ValueError(f"the KV cache holds {self._capacity} positions; {self._length + len(ids)} requested")
        input_ids = torch.tensor([ids], dtype=torch.long, device=self._device)  # [1, n]
        positions = torch.arange(self._length, self._length + len(ids), device=self._device)  # [n]
        self._length += len(ids)
        out = self._model(
            input_ids=input_ids,
            cache_position=positions,
            use_cache=True,
            logits_to_keep=1,
            **{_CACHE_ARGUMENT: self._cache},
        )
        return out.logits[0, -1].float()


class BatchDecoding:
    """Several sequences' KV cache, decoded in step: prompts left-padded to one length, then one id per
    row per step.

    All rows share the cache's column index; row r's position is its column minus its padding, and
    the 2-D attention mask hides the padding columns from every row's queries.
    """

    def __init__(self, model: LlamaForCausalLM, device: torch.device, prompts: list[list[int]], max_new: int):
        self._model = model
        self._device = device
        self._prompt_length = max(len(prompt) for prompt in prompts)
        self._capacity = self._prompt_length + max_new
        self._length = 0  # columns filled so far
        self._input_ids = torch.tensor(
            [[PAD_ID] * (self._prompt_length - len(prompt)) + prompt for prompt in prompts], dtype=torch.long, device=device
        )  # [B, P]
        self._padding = torch.tensor([self._prompt_length - len(prompt) for prompt in prompts], device=device)  # [B]
        columns = torch.arange(self._capacity, device=device)
        self._attention_mask = columns[None, :] >= self._padding[:, None]  # [B, capacity] bool, False on padding
        self._cache = StaticCache(config=model.config, max_cache_len=self._capacity)

    def prefill(self) -> torch.Tensor:
        """Feed the padded prompts; logits for each row's next position: [B, vocab] float32."""
        positions = (torch.arange(self._prompt_length, device=self._device)[None, :] - self._padding[:, None]).clamp(min=0)
        return self._forward(self._input_ids, positions)  # positions: [B, P]

    def feed(self, ids: list[int]) -> torch.Tensor:
        """Append one id to each row; logits for each row's next position: [B, vocab] float32."""
        input_ids = torch.tensor(ids, dtype=torch.long, device=self._device)[:, None]  # [B, 1]
        return self._forward(input_ids, (self._length - self._padding)[:, None])  # positions: [B, 1]

    @torch.inference_mode()
    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if self._length + input_ids.shape[1] > self._capacity:
            raise ValueError(f"the KV cache holds {self._capacity} positions; {self._length + input_ids.shape[1]} requested")
        self._length += input_ids.shape[1]
        out = self._model(
            input_ids=input_ids,
            attention_mask=self._attention_mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{_CACHE_ARGUMENT: self._cache},
        )
        return out.logits[:, -1].float()


def read_config(llm_dir: Path) -> LlamaConfig:
    """Parse `llm/config.json` into a LlamaConfig (sdpa attention)."""
    path = Path(llm_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"missing LLM config {path}")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    if values.get("model_type") != "llama":
        raise CheckpointError(f"{path}: model_type is {values.get('model_type')!r}, expected 'llama'")
    values.pop("torch_dtype", None)
    values.pop("dtype", None)
    config = LlamaConfig(**values)
    config._attn_implementation = "sdpa"
    return config


def _weight_files(llm_dir: Path) -> dict[str, Path]:
    """Key -> shard file, from the index json or the one safetensors file."""
    index_path = llm_dir / INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{index_path}: unreadable weight_map ({error!r})") from error
        return {key: llm_dir / name for key, name in weight_map.items()}
    single = llm_dir / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"missing LLM weights: neither {index_path} nor {single} exists")
    with safe_open(single, framework="pt") as handle:
        return dict.fromkeys(list(handle.keys()), single)


def _read_weights(
    llm_dir: Path, expected: dict[str, tuple[int, ...]], device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    files = _weight_files(llm_dir)
    missing = [key for key in expected if key not in files]
    if missing:
        raise CheckpointError(f"{llm_dir / INDEX_FILE}: missing key {missing[0]!r} ({len(missing)} missing)")
    unexpected = [key for key in files if key not in expected]
    if unexpected:
        raise CheckpointError(f"{llm_dir}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected)")
    by_file: dict[Path, list[str]] = defaultdict(list)
    for key, path in files.items():
        by_file[path].append(key)
    state: dict[str, torch.Tensor] = {}
    for path, keys in sorted(by_file.items()):
        if not path.is_file():
            raise CheckpointError(f"missing LLM weight shard {path} (holds {keys[0]!r})")
        try:
            with safe_open(path, framework="pt", device="cpu") as handle:
                present = set(handle.keys())
                for key in keys:
                    if key not in present:
                        raise CheckpointError(f"{path}: missing key {key!r} (the index puts it in this shard)")
                    shape = tuple(handle.get_slice(key).get_shape())
                    if shape != expected[key]:
                        raise CheckpointError(f"{path}: key {key!r} has shape {shape}, expected {expected[key]}")
                    state[key] = handle.get_tensor(key).to(device=device, dtype=dtype)
        except SafetensorError as error:  # truncated or not a safetensors file
            raise CheckpointError(f"{path}: unreadable safetensors file ({error})") from error
    return state
