"""The speech LM's decode path built for speed: a lean Llama step over a static KV cache, sampling on
the device, and no host synchronisation per token (gpt-fast's shape).

The reference path (`SpeechLM.generate`) runs transformers' Llama, samples on the host with
`torch.multinomial` (upstream's random stream) and reads every id back with `int()`. This path reads
the same weights (the projections of a layer fused into one matrix whose slices the transformers
model keeps using, so no weight is stored twice) and does, per step, everything on the device:

- one `StaticDecoder` per (rows, capacity) bucket, over a KV cache allocated once for `max_batch`
  rows of `max_positions` (prompt + generated) and viewed by every bucket; each row has its own
  positions, so rows of different prompt lengths need no padding;
- a step = sample from the last logits (`sampling.sample_rows`: RAS nucleus over the top
  candidates, the repetition-window redraw, the end mask before the minimum length; top-k; greedy),
  append, feed the appended id through the model, keep its logits. Uniforms come from each row's own
  seeded generator, drawn SYNC_EVERY steps at a time, so a row's tokens do not depend on the rows
  decoded beside it;
- the host looks at the device every SYNC_EVERY steps: one transfer of the ids appended since
  (and the done flags); a row that ended keeps stepping harmlessly until its batch stops;
- the step is captured once per bucket: a CUDA graph on a GPU (of the eager step by default, of the
  torch.compile'd step with capture "compile"), plain or compiled on the CPU. `warmup()` captures
  every bucket, so no request ever pays a compile; a capture that fails raises CaptureError there
  (the engine then rebuilds this decoder with the eager step).

Prefill runs eagerly, one row at a time, writing that row's cache positions.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from glmtts.engines.glm.choices import CAPTURES
from glmtts.engines.glm.llm import GenerationRequest, SpeechLM
from glmtts.engines.glm.sampling import METHOD_CODES, SamplingConfig, sample_rows

_LOGGER = logging.getLogger(__name__)

SYNC_EVERY = 16  # decode steps between two looks of the host at the device
MAX_TOP_K = 128  # candidates the device sampler ranks; larger top_k settings are capped to it
CAPACITY_BUCKETS = (512, 1024, 2048, 4096, 8192)  # positions per row of the captured steps
DEFAULT_MAX_POSITIONS = 4096  # prompt + generated ids one row may hold (the KV cache's length)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32)  # rows of the captured steps (and max_batch): a batch takes the next size up
WARMUP_PROMPT = 8
_RAS_WINDOW = SamplingConfig().window


def default_capture(device: torch.device) -> str:
    """A CUDA graph of the eager step on CUDA (captured in milliseconds per shape; "compile" adds
    torch.compile's fusion at a compile per shape), the plain step elsewhere."""
    return "graphs" if device.type == "cuda" else "eager"


@dataclass(frozen=True)
class _Layer:
    input_norm: torch.Tensor  # [H]
    qkv: torch.Tensor  # [(Hq + 2 Hkv) D, H]
    out: torch.Tensor  # [H, Hq D]
    post_norm: torch.Tensor  # [H]
    gate_up: torch.Tensor  # [2 F, H]
    down: torch.Tensor  # [H, F]


class LlamaWeights:
    """The Llama tensors the lean step reads, fused per layer; the transformers model is re-pointed
    at slices of the fused matrices, so both paths share one copy of every weight."""

    def __init__(self, model: nn.Module):
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        self.vocab = config.vocab_size
        self.max_positions = config.max_position_embeddings
        self.embed = model.model.embed_tokens.weight  # [V, H]
        self.norm = model.model.norm.weight
        self.head = model.lm_head.weight  # tied: the embedding
        self.inv_freq = model.model.rotary_emb.inv_freq.float()  # [D / 2]
        self.layers = [self._fuse(layer) for layer in model.model.layers]
        self.dtype = self.embed.dtype
        self.device = self.embed.device

    @staticmethod
    def _fuse(layer: nn.Module) -> _Layer:
        attention, mlp = layer.self_attn, layer.mlp
        if any(getattr(m, "bias", None) is not None for m in (attention.q_proj, attention.o_proj, mlp.gate_proj)):
            raise ValueError("the fast decode path supports Llama layers without biases only")
        qkv = _fuse_into(attention.q_proj, attention.k_proj, attention.v_proj)
        gate_up = _fuse_into(mlp.gate_proj, mlp.up_proj)
        return _Layer(
            layer.input_layernorm.weight, qkv, attention.o_proj.weight, layer.post_attention_layernorm.weight, gate_up,
            mlp.down_proj.weight,
        )  # fmt: skip


def _fuse_into(*linears: nn.Linear) -> torch.Tensor:
    """Concatenate the weights of `linears` along the output dim; each module keeps a view of its rows."""
    weights = [linear.weight for linear in linears]
    if _consecutive(weights):  # fused by an earlier FastDecoder on the same model
        return _span(weights)
    fused = torch.cat([weight.detach() for weight in weights])
    start = 0
    for linear, weight in zip(linears, weights):
        linear.weight = nn.Parameter(fused[start : start + weight.shape[0]], requires_grad=False)
        start += weight.shape[0]
    return fused


def _consecutive(weights: list[torch.Tensor]) -> bool:
    """Whether the weights already are consecutive slices of one buffer (fused before)."""
    expected = weights[0].data_ptr()
    storage = weights[0].untyped_storage().data_ptr()
    for weight in weights:
        same_storage = weight.untyped_storage().data_ptr() == storage
        if not same_storage or not weight.is_contiguous() or weight.data_ptr() != expected:
            return False
        expected += weight.numel() * weight.element_size()
    return True


def _span(weights: list[torch.Tensor]) -> torch.Tensor:
    rows = sum(w.shape[0] for w in weights)
    first = weights[0]
    return first.as_strided((rows, first.shape[1]), first.stride())


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm: normalised in float32, then times the weight in the input dtype."""
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' apply_rotary_pos_emb on one tensor (rotate_half layout)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class StaticDecoder:
    """The static state of one decode bucket (`rows` x `capacity` positions) and its step.

    Tensors never change address after construction, so the step can be captured once (CUDA graph)
    and replayed; `load` writes a new batch into them in place.
    """

    def __init__(
        self,
        weights: LlamaWeights,
        rows: int,
        capacity: int,
        keys: torch.Tensor,  # [L, rows_max, Hkv, positions_max, D] shared by every bucket
        values: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],  # cos, sin [positions_max, D] in the weights' dtype
        end_id: int,
        outside_speech: torch.Tensor,  # [V] bool
        capture: str,
    ):
        self.weights = weights
        self.rows = rows
        self.capacity = capacity
        device = weights.device
        self.device = device
        self._keys = [keys[layer, :rows, :, :capacity] for layer in range(keys.shape[0])]  # [B, Hkv, S, D] views
        self._values = [values[layer, :rows, :, :capacity] for layer in range(values.shape[0])]
        self._cos, self._sin = rotary
        self._end_id = end_id
        self._outside = outside_speech
        self._capture = capture
        long = {"dtype": torch.long, "device": device}
        self._row_index = torch.arange(rows, **long)
        self._columns = torch.arange(capacity, **long)
        # Per-row state, rewritten in place by `load`.
        self.logits = torch.zeros(rows, weights.vocab, dtype=torch.float32, device=device)
        self.prompt_length = torch.ones(rows, **long)
        self.count = torch.zeros(rows, **long)
        self.done = torch.ones(rows, dtype=torch.bool, device=device)
        self.min_new = torch.zeros(rows, **long)
        self.max_new = torch.zeros(rows, **long)
        self.bias = torch.zeros(rows, weights.vocab, dtype=torch.float32, device=device)  # -inf off the speech ids when forced
        self.method = torch.zeros(rows, **long)
        self.top_k = torch.ones(rows, **long)
        self.top_p = torch.ones(rows, dtype=torch.float32, device=device)
        self.temperature = torch.ones(rows, dtype=torch.float32, device=device)
        self.repeats = torch.ones(rows, dtype=torch.float32, device=device)
        self.history = torch.full((rows, _RAS_WINDOW), -1, **long)
        self.uniforms = torch.zeros(rows, SYNC_EVERY, 2, dtype=torch.float32, device=device)
        self.tick = torch.zeros(1, **long)
        self.recent = torch.full((rows, SYNC_EVERY), -1, **long)  # ids appended since the last poll, -1 = none
        self._generators: list[torch.Generator | None] = [None] * rows
        self._top_k_cap = min(MAX_TOP_K, weights.vocab)
        self._step: Callable[[], None] = self._step_eager
        self._graph: object | None = None

    # ------------------------------------------------------------------ per batch
    @torch.inference_mode()
    def load(self, requests: Sequence[GenerationRequest]) -> None:
        """Prefill each request's prompt into its row and set its bounds and sampling; rows beyond
        the requests are done from the start."""
        if len(requests) > self.rows:
            raise ValueError(f"{len(requests)} requests for a decoder of {self.rows} rows")
        prompt_lengths, bounds, settings = [], [], []
        for row in range(self.rows):
            if row < len(requests):
                request = requests[row]
                min_new, max_new = _bounds(request)
                if len(request.prompt_ids) + max_new > self.capacity:
                    raise ValueError(f"a row of {len(request.prompt_ids)} + {max_new} positions exceeds {self.capacity}")
                if request.sampling.window != _RAS_WINDOW:
                    raise ValueError(f"the fast decode path checks a RAS window of {_RAS_WINDOW}, not {request.sampling.window}")
                self._prefill(row, request.prompt_ids)
                sampling = request.sampling
                prompt_lengths.append(len(request.prompt_ids))
                bounds.append((min_new, max_new, request.forced_length is not None))
                top_k = min(sampling.top_k, self._top_k_cap)
                settings.append(
                    (METHOD_CODES[sampling.method], top_k, sampling.top_p, sampling.temperature, sampling.window * sampling.tau)
                )
                self._generators[row] = request.generator
            else:
                prompt_lengths.append(1)
                bounds.append((0, 0, False))
                settings.append((METHOD_CODES["greedy"], 1, 1.0, 1.0, 1.0))
                self._generators[row] = None
        self.prompt_length.copy_(torch.tensor(prompt_lengths))
        self.count.zero_()
        self.min_new.copy_(torch.tensor([b[0] for b in bounds]))
        self.max_new.copy_(torch.tensor([b[1] for b in bounds]))
        forced = torch.tensor([b[2] for b in bounds], device=self.device)
        self.bias.copy_(torch.where(forced[:, None] & self._outside[None, :], -math.inf, 0.0))
        self.done.copy_(self.max_new <= 0)
        self.method.copy_(torch.tensor([s[0] for s in settings]))
        self.top_k.copy_(torch.tensor([s[1] for s in settings]))
        self.top_p.copy_(torch.tensor([s[2] for s in settings], dtype=torch.float32))
        self.temperature.copy_(torch.tensor([s[3] for s in settings], dtype=torch.float32))
        self.repeats.copy_(torch.tensor([s[4] for s in settings], dtype=torch.float32))
        self.history.fill_(-1)
        self.recent.fill_(-1)

    @torch.inference_mode()
    def run(self, steps: int = SYNC_EVERY) -> None:
        """Draw the next SYNC_EVERY uniforms of every row, then run `steps` (<= SYNC_EVERY) steps."""
        for row, generator in enumerate(self._generators):
            if generator is not None:
                draw = torch.rand((SYNC_EVERY, 2), generator=generator, device=generator.device)
                self.uniforms[row].copy_(draw, non_blocking=True)
        self.tick.zero_()
        for _ in range(steps):
            if self._graph is not None:
                self._graph.replay()
            else:
                self._step()

    def poll(self) -> tuple[list[list[int]], list[bool]]:
        """One transfer from the device: each row's ids appended since the last poll, its done flag."""
        host = torch.cat([self.recent.flatten(), self.done.long()]).tolist()
        recent, done = host[: self.rows * SYNC_EVERY], host[self.rows * SYNC_EVERY :]
        tokens = [[t for t in recent[r * SYNC_EVERY : (r + 1) * SYNC_EVERY] if t >= 0] for r in range(self.rows)]
        return tokens, [bool(d) for d in done]

    def stop(self, row: int) -> None:
        """End a row early (its caller went away)."""
        self.done[row] = True
        self._generators[row] = None

    # ------------------------------------------------------------------ capture
    def capture(self) -> None:
        """Capture the step: compile it (capture "compile"), and record a CUDA graph on CUDA."""
        if self._capture == "compile":
            _raise_recompile_limit()
            self._step = torch.compile(self._step_eager, fullgraph=True, dynamic=False)
        warm_request = GenerationRequest([0] * WARMUP_PROMPT, 0, 1, SamplingConfig(), _generator_like(self.device))
        self.load([warm_request] * self.rows)
        if self.device.type != "cuda":
            with torch.inference_mode():
                self._step()  # compiles now, not at the first request
            return
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(stream):
            for _ in range(3):
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            self._step()
        self._graph = graph

    # ------------------------------------------------------------------ the model
    def _step_eager(self) -> None:
        """Sample from `logits`, append, feed the appended id; all in place, nothing leaves the device."""
        uniforms = self.uniforms.index_select(1, self.tick)[:, 0]  # [B, 2]
        token = sample_rows(
            self.logits + self.bias, self.history, self.count >= self.min_new, self.method, self.top_k, self.top_p, self.temperature,
            self.repeats, uniforms, self._end_id, self._top_k_cap,
        )  # fmt: skip
        active = ~self.done
        append = active & (token != self._end_id)
        slot = (self.count % _RAS_WINDOW)[:, None]
        self.history.scatter_(1, slot, torch.where(append[:, None], token[:, None], self.history.gather(1, slot)))
        self.recent.index_copy_(1, self.tick, torch.where(append, token, -1)[:, None])
        self.count.add_(append.long())
        self.done.copy_(self.done | (active & ~append) | (self.count >= self.max_new))
        self.tick.add_(1)
        position = (self.prompt_length + self.count - 1).clamp(0, self.capacity - 1)
        self.logits.copy_(self._forward(torch.where(append, token, 0), position))

    def _forward(self, ids: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """One id per row at its own position -> next-token logits [B, V] float32."""
        w = self.weights
        rows, heads, kv_heads, dim = self.rows, w.heads, w.kv_heads, w.head_dim
        q_size, kv_size = heads * dim, kv_heads * dim
        x = F.embedding(ids, w.embed)  # [B, H]
        cos = self._cos.index_select(0, position)[:, None]  # [B, 1, D] in the weights' dtype
        sin = self._sin.index_select(0, position)[:, None]
        visible = (self._columns[None, :] <= position[:, None])[:, None, None, :]  # [B, 1, 1, S]
        for layer, keys, values in zip(w.layers, self._keys, self._values):
            qkv = F.linear(_rms_norm(x, layer.input_norm, w.eps), layer.qkv)
            rotated = _rotate(qkv[:, : q_size + kv_size].view(rows, heads + kv_heads, dim), cos, sin)  # queries, keys
            keys[self._row_index, :, position] = rotated[:, heads:]
            values[self._row_index, :, position] = qkv[:, q_size + kv_size :].view(rows, kv_heads, dim)
            grouped = rotated[:, :heads].reshape(rows, kv_heads, heads // kv_heads, dim)  # a kv head's queries side by side
            attended = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=visible)  # [B, Hkv, G, D]
            x = x + F.linear(attended.reshape(rows, q_size), layer.out)
            gate, up = F.linear(_rms_norm(x, layer.post_norm, w.eps), layer.gate_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer.down)
        return F.linear(_rms_norm(x, w.norm, w.eps), w.head).float()

    def _prefill(self, row: int, prompt_ids: list[int]) -> None:
        """Run a prompt through the model (causal), write its keys and values into `row`, keep the
        last position's logits."""
        w = self.weights
        heads, kv_heads, dim = w.heads, w.kv_heads, w.head_dim
        q_size, kv_size = heads * dim, kv_heads * dim
        length = len(prompt_ids)
        ids = torch.tensor(prompt_ids, dtype=torch.long, device=self.device)
        x = F.embedding(ids, w.embed)[None]  # [1, P, H]
        cos = self._cos[:length]  # [P, D]
        sin = self._sin[:length]
        group = heads // kv_heads
        for layer, keys, values in zip(w.layers, self._keys, self._values):
            qkv = F.linear(_rms_norm(x, layer.input_norm, w.eps), layer.qkv)[0]  # [P, ...]
            query = _rotate(qkv[:, :q_size].view(length, heads, dim).transpose(0, 1), cos, sin)  # [Hq, P, D]
            key = _rotate(qkv[:, q_size : q_size + kv_size].view(length, kv_heads, dim).transpose(0, 1), cos, sin)
            value = qkv[:, q_size + kv_size :].view(length, kv_heads, dim).transpose(0, 1)  # [Hkv, P, D]
            keys[row, :, :length] = key
            values[row, :, :length] = value
            attended = F.scaled_dot_product_attention(
                query[None], key.repeat_interleave(group, 0)[None], value.repeat_interleave(group, 0)[None], is_causal=True
            )[0]  # [Hq, P, D]
            x = x + F.linear(attended.transpose(0, 1).reshape(1, length, q_size), layer.out)
            gate, up = F.linear(_rms_norm(x, layer.post_norm, w.eps), layer.gate_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer.down)
        self.logits[row] = F.linear(_rms_norm(x[0, -1], w.norm, w.eps), w.head).float()


class CaptureError(RuntimeError):
    """The step capture (`capture` "graphs" or "compile") failed at warm-up; the cause is chained."""

    def __init__(self, capture: str):
        super().__init__(f"{capture} step capture failed")
        self.capture = capture


class FastDecoder:
    """Owns the static KV cache and the captured decode buckets in front of one SpeechLM, and turns
    prompts into speech tokens (ids relative to `<|audio_0|>`), streamed SYNC_EVERY steps at a time.
    The fast path's SpeechDecoder (decoder.py)."""

    def __init__(
        self,
        llm: SpeechLM,
        max_batch: int = 1,
        max_positions: int = DEFAULT_MAX_POSITIONS,
        capture: str | None = None,
    ):
        if capture is not None and capture not in CAPTURES:
            raise ValueError(f"capture must be one of {CAPTURES}, not {capture!r}")
        self.llm = llm
        self.device = llm.device
        self.weights = LlamaWeights(llm.model)
        self.max_batch = max_batch
        self.max_positions = min(max_positions, self.weights.max_positions)
        self.capture = capture or default_capture(self.device)
        if self.capture == "graphs" and self.device.type != "cuda":
            self.capture = "eager"
        self.buckets = _capacity_buckets(self.max_positions)
        self.batch_sizes = sorted({size for size in ROW_BUCKETS if size < max_batch} | {max_batch})
        w = self.weights
        shape = (len(w.layers), max_batch, w.kv_heads, self.buckets[-1], w.head_dim)
        self._keys = torch.zeros(shape, dtype=w.dtype, device=self.device)
        self._values = torch.zeros(shape, dtype=w.dtype, device=self.device)
        positions = torch.arange(self.buckets[-1], device=self.device, dtype=torch.float32)
        angles = positions[:, None] * w.inv_freq.to(self.device)[None, :]  # as transformers: position x inv_freq in fp32
        doubled = torch.cat([angles, angles], dim=-1)
        self._rotary = (doubled.cos().to(w.dtype), doubled.sin().to(w.dtype))  # as transformers casts them
        ids = llm.speech_ids
        self._outside = torch.ones(w.vocab, dtype=torch.bool, device=self.device)
        self._outside[ids.audio_start : ids.audio_end + 1] = False
        self._decoders: dict[tuple[int, int], StaticDecoder] = {}
        self._lock = threading.Lock()

    @property
    def kv_cache_bytes(self) -> int:
        return 2 * self._keys.numel() * self._keys.element_size()

    def fits(self, requests: Sequence[GenerationRequest]) -> bool:
        """Whether the static cache holds these requests (else the caller decodes them on the reference path)."""
        return len(requests) <= self.max_batch and max(_need(r) for r in requests) <= self.buckets[-1]

    def warmup(self) -> dict[str, float]:
        """Build and capture every bucket a request can meet; a capture that fails raises CaptureError."""
        start = time.perf_counter()
        try:
            with self._lock:
                for rows in self.batch_sizes:
                    for capacity in self.buckets:
                        self._decoder(rows, capacity)
        except Exception as error:
            if self.capture == "eager":
                raise
            raise CaptureError(self.capture) from error
        seconds = time.perf_counter() - start
        _LOGGER.info(
            "Fast decode: %d buckets (%s rows x %s positions, %s) ready in %.1f s; KV cache %.0f MiB",
            len(self._decoders), self.batch_sizes, list(self.buckets), self.capture, seconds, self.kv_cache_bytes / 2**20,
        )  # fmt: skip
        return {"decode_capture": seconds}

    def describe(self) -> dict[str, object]:
        return {
            "decode_capture": self.capture,
            "decode_sync_every": SYNC_EVERY,
            "decode_buckets": {"rows": self.batch_sizes, "positions": list(self.buckets)},
            "kv_cache_mib": round(self.kv_cache_bytes / 2**20, 1),
        }

    def stream(self, request: GenerationRequest) -> Iterator[list[int]]:
        """One request's tokens, SYNC_EVERY steps at a time (the engine decodes through the batcher)."""
        for chunks in self.stream_batch([request]):
            if chunks[0]:
                yield chunks[0]

    def generate(self, request: GenerationRequest) -> list[int]:
        return [token for chunk in self.stream_batch([request]) for token in chunk[0]]

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[list[int]]:
        rows: list[list[int]] = [[] for _ in requests]
        for chunks in self.stream_batch(requests):
            for row, chunk in zip(rows, chunks):
                row.extend(chunk)
        return rows

    def stream_batch(
        self, requests: Sequence[GenerationRequest], stopped: Callable[[int], bool] | None = None
    ) -> Iterator[list[list[int]]]:
        """Decode `requests` together; yield each row's new tokens every SYNC_EVERY steps until all
        rows have ended. `stopped(row)` True ends a row early."""
        if not requests:
            return
        if not self.fits(requests):
            _LOGGER.warning(
                "A decode needs more than the %d positions of the fast path's cache; using the reference path", self.buckets[-1]
            )
            yield from self.llm.stream_batch(requests, stopped)
            return
        with self._lock:
            rows = next(size for size in self.batch_sizes if size >= len(requests))
            capacity = next(size for size in self.buckets if size >= max(_need(r) for r in requests))
            decoder = self._decoder(rows, capacity)
            decoder.load(requests)
            start = self.llm.speech_ids.audio_start
            ended = [False] * len(requests)
            while True:
                decoder.run()
                tokens, done = decoder.poll()
                yield [[token - start for token in row] for row in tokens[: len(requests)]]
                ended = done[: len(requests)]
                if all(ended):
                    return
                if stopped is not None:
                    for row in range(len(requests)):
                        if not ended[row] and stopped(row):
                            decoder.stop(row)

    def _decoder(self, rows: int, capacity: int) -> StaticDecoder:
        key = (rows, capacity)
        decoder = self._decoders.get(key)
        if decoder is None:
            decoder = StaticDecoder(
                self.weights, rows, capacity, self._keys, self._values, self._rotary, self.llm.speech_ids.end_of_speech,
                self._outside, self.capture,
            )  # fmt: skip
            if self.capture != "eager":
                decoder.capture()  # may raise: the engine's warm-up then falls back to the eager step
            self._decoders[key] = decoder
        return decoder


def _bounds(request: GenerationRequest) -> tuple[int, int]:
    if request.forced_length is not None:
        return request.forced_length, request.forced_length
    return request.min_new, max(request.max_new, 0)


def _need(request: GenerationRequest) -> int:
    return len(request.prompt_ids) + _bounds(request)[1]


def _capacity_buckets(max_positions: int) -> tuple[int, ...]:
    buckets = tuple(size for size in CAPACITY_BUCKETS if size < max_positions) + (max_positions,)
    return buckets


def _generator_like(device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(0)


def _raise_recompile_limit() -> None:
    """Each bucket is one more compiled variant of the same step; let dynamo keep them all."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), 64))
