"""The GLM-TTS engine: text tokens -> speech LM -> flow -> vocoder, in the prompt speaker's voice.

Every stage is loaded once onto one device by `load()`. Per segment the LLM reads
`[prompt text, target text, <|begin_of_audio|>, prompt speech tokens]` and samples speech tokens;
the flow turns them into mel frames conditioned on the original prompt; HiFT (24 kHz) or Vocos2D
(32 kHz) makes the waveform. With `max_batch` above 1, the LLM calls of concurrent requests are
decoded together (batcher.py); flow and vocoder run per request.

Two decode paths (`decode`): "reference" is upstream's computation, the parity oracle and the CPU
default: transformers' Llama, host-side sampling, and one seeded generator per segment that drives
the LLM, then the flow (its two guidance branches as two calls), then the vocoder, as upstream's
global seed does. "fast" (the CUDA default, fast_decode.py) decodes on a static KV cache with
on-device sampling and a captured step; its flow and vocoder draw their noise from tapes seeded
from the request's seed (noise.py).

Streaming (`stream`, per request when the options carry it): the flow and the vocoder turn tokens
into audio block by block while the LLM still decodes (streaming.py), and each segment comes out
in several pieces. A non-streamed segment on the reference path stays upstream-exact.

An optimisation that fails at warm-up does not fail start-up: a step capture (CUDA graphs,
torch.compile) that raises falls back to the eager step, and bf16/fp16 that raises or makes
non-finite audio reloads the LLM and the flow in fp32; each fallback is logged and described.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from glmtts.engine import Engine
from glmtts.engines.glm import checkpoint
from glmtts.engines.glm.batcher import DecodeBatcher
from glmtts.engines.glm.campplus import CamPlusSpeaker
from glmtts.engines.glm.choices import CAPTURES, DECODES, DTYPES
from glmtts.engines.glm.fast_decode import DEFAULT_MAX_POSITIONS, SYNC_EVERY, FastDecoder
from glmtts.engines.glm.flow import FlowDecoder
from glmtts.engines.glm.llm import GenerationRequest, SpeechLM
from glmtts.engines.glm.mel import audio_to_prompt_mel
from glmtts.engines.glm.sampling import SamplingConfig
from glmtts.engines.glm.speech_tokenizer import SpeechTokenizer
from glmtts.engines.glm.streaming import SegmentStreamer, StreamSchedule, tokens_to_audio_whole
from glmtts.engines.glm.text_tokenizer import TextTokenizer
from glmtts.engines.glm.vocoder import HiFTVocoder, Vocos2DVocoder
from glmtts.types import CancelToken, PromptVoice, Segment, SegmentAudio, SynthesisError, SynthesisOptions

_LOGGER = logging.getLogger(__name__)

TORCH_DTYPES = dict(zip(DTYPES, (torch.float32, torch.bfloat16, torch.float16), strict=True))
HIFT_RATE = 24000
VOCOS_RATE = 32000
DEFAULT_RATE = HIFT_RATE
MIN_TOKEN_TEXT_RATIO = 2  # speech tokens per text token, lower bound (end token masked before)
MAX_TOKEN_TEXT_RATIO = 20
MAX_PROMPT_SPEECH_TOKENS = 750  # prompt-history cache: drop old entries beyond this many speech tokens
PROMPT_TEXT_SUFFIX = " "  # upstream tokenizes the prompt transcript with one trailing space
WARMUP_TOKENS = 25  # one second of speech per warm-up synthesis
CUDA_MAX_BATCH = 4  # requests decoded together on a CUDA device unless configured
_MIB = 2**20
_Stage = TypeVar("_Stage")


@dataclass
class GLMVoiceFeatures:
    """A prompt analysed for GLM-TTS; cached by the pipeline, read-only afterwards."""

    prompt_text_ids: list[int]  # tokens of the transcript + " "; empty when no transcript was given
    speech_tokens: list[int]  # prompt speech tokens, 25 per second, ids relative to <|audio_0|>
    speaker_embedding: torch.Tensor  # [192] float32 CAM++ embedding on the engine's device
    prompt_mels: dict[int, torch.Tensor]  # output rate -> [frames, 80] prompt mel at 50 frames/s


class _PromptHistory:
    """Upstream's long-text cache: each segment's text and speech tokens prompt the next one.

    Entry 0 is the original prompt. Before a segment, entries from the second on are dropped while
    the cached speech tokens plus the estimate for the new segment exceed MAX_PROMPT_SPEECH_TOKENS.
    """

    def __init__(self, text_ids: list[int], speech_tokens: list[int]):
        self._entries: list[tuple[list[int], list[int]]] = [(text_ids, speech_tokens)]

    def prompt(self, target_tokens: int, use_cache: bool) -> tuple[list[int], list[int]]:
        """(prompt text ids, prompt speech tokens) for a segment of `target_tokens` text tokens."""
        if not use_cache or len(self._entries) == 1:
            return self._entries[0]
        text_count = sum(len(text) for text, _ in self._entries)
        ratio = sum(len(speech) for _, speech in self._entries) / (text_count or 1)
        estimate = int(ratio * target_tokens)
        while len(self._entries) > 1 and sum(len(s) for _, s in self._entries) + estimate > MAX_PROMPT_SPEECH_TOKENS:
            del self._entries[1]
        text = [token for entry, _ in self._entries for token in entry]
        speech = [token for _, entry in self._entries for token in entry]
        return text, speech

    def append(self, text_ids: list[int], speech_tokens: list[int]) -> None:
        self._entries.append((text_ids, speech_tokens))


class GLMTTSEngine(Engine):
    """Owns the GLM-TTS stages on one device and synthesizes segments in a prompt's voice."""

    name = "glm-tts"
    sample_rates = (HIFT_RATE, VOCOS_RATE)
    samples = True
    speed_range = (1.0, 1.0)  # no rate control: the LLM sets the pace, as upstream's does
    # 2: prompts arrive at their file's own rate and each consumer resamples from it (was: from 24 kHz).
    analysis_version = "2"

    def __init__(
        self,
        ckpt_root: Path,
        dtype: str | None = None,
        max_batch: int | None = None,
        decode: str | None = None,
        stream: bool = True,
        capture: str | None = None,
        max_positions: int = DEFAULT_MAX_POSITIONS,
    ):
        """`max_batch` None: CUDA_MAX_BATCH on a CUDA device, else 1; `decode` None: "fast" on a CUDA
        device, else "reference" (both decided by `load`). `stream`: whether a request whose options
        do not say streams inside its segments. `capture` (fast path): "compile", "graphs" or
        "eager" (None: a CUDA graph of the eager step on CUDA, eager on the CPU). `max_positions`: prompt +
        generated ids the fast path's KV cache holds per row."""
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if decode is not None and decode not in DECODES:
            raise ValueError(f"decode must be one of {DECODES}, not {decode!r}")
        if capture is not None and capture not in CAPTURES:
            raise ValueError(f"capture must be one of {CAPTURES}, not {capture!r}")
        self.ckpt_root = Path(ckpt_root)
        self._dtype_name = dtype
        self._max_batch_setting = max_batch
        self._decode_setting = decode
        self._capture = capture  # None: the fast path's default for the device; "eager" after a failed capture
        self._max_positions = max_positions
        self.stream_default = stream
        self.max_batch = max_batch or 1
        self.decode = decode or "reference"
        self.batcher: DecodeBatcher | None = None  # set by load(): max_batch > 1, or the fast path
        self.fast: FastDecoder | None = None  # set by load() on the fast path
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None
        self.load_seconds: dict[str, float] = {}
        self.fallbacks: list[str] = []  # what warm-up fell back from, and why
        self.schedule = StreamSchedule()

    # ----------------------------------------------------------------- lifecycle
    def auto_device(self) -> str:
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"

    def load(self, device: str) -> None:
        """Load every stage onto `device`: LLM and flow in the engine dtype, the rest in float32."""
        checkpoint.validate_checkpoint(self.ckpt_root)
        self.device = torch.device(device)
        self.dtype = _resolve_dtype(self._dtype_name, self.device)
        root = self.ckpt_root
        timed = self._timed_load
        self.tokenizer = timed("text_tokenizer", TextTokenizer.load, root / checkpoint.TEXT_TOKENIZER_DIR)
        self.speech_tokenizer = timed(
            "speech_tokenizer", SpeechTokenizer.load, root / checkpoint.SPEECH_TOKENIZER_DIR, self.device
        )
        self.speaker = timed("campplus", CamPlusSpeaker.load, checkpoint.find_campplus(root), self.device)
        self.vocoders: dict[int, HiFTVocoder | Vocos2DVocoder] = {
            HIFT_RATE: timed("hift", HiFTVocoder.load, root / checkpoint.HIFT_FILE, self.device),
            VOCOS_RATE: timed("vocos2d", Vocos2DVocoder.load, root / checkpoint.VOCOS_FILE, self.device),
        }
        self.max_batch = self._max_batch_setting or (CUDA_MAX_BATCH if self.device.type == "cuda" else 1)
        self.decode = self._decode_setting or ("fast" if self.device.type == "cuda" else "reference")
        self._load_llm_and_flow()
        seconds = sum(self.load_seconds.values())
        _LOGGER.info(
            "GLM-TTS loaded on %s (%s, %s decode, max batch %d) in %.1f s",
            self.device, self.dtype, self.decode, self.max_batch, seconds,
        )  # fmt: skip

    def _load_llm_and_flow(self) -> None:
        """The stages in the engine dtype (the LLM, the flow) and the decode path in front of the LLM."""
        timed = self._timed_load
        llm_dir, flow_dir = self.ckpt_root / checkpoint.LLM_DIR, self.ckpt_root / checkpoint.FLOW_DIR
        self.llm = timed("llm", SpeechLM.load, llm_dir, self.device, self.dtype, self.tokenizer.speech_ids)
        self.flow = timed("flow", FlowDecoder.load, flow_dir, self.device, self.dtype)
        self._build_decode_path()

    def _build_decode_path(self) -> None:
        """The fast decoder (fast path) and the batcher in front of the decoder. The fast path always
        decodes in the batcher's worker thread: its static state serves one decode at a time, and a
        streamed request pauses between pieces while others may start."""
        self.fast = None
        if self.decode == "fast":
            self.fast = self._timed_load("fast_decode", FastDecoder, self.llm, self.max_batch, self._max_positions, self._capture)
        decoder = self.fast or self.llm
        if self.fast is None and self.max_batch == 1:
            self.batcher = None
        elif self.batcher is None:
            self.batcher = DecodeBatcher(decoder, self.max_batch)
        else:  # rebuilt after a fallback: the batcher's worker reads its decoder per batch
            self.batcher.decoder = decoder

    def warmup(self, voice: PromptVoice, segments_by_language: dict[str, list[Segment]]) -> None:
        """Capture every decode shape of the fast path, then one short synthesis per language at each
        rate, whole and streamed, with a fixed LLM length (WARMUP_TOKENS). A failed step capture falls
        back to the eager step, a failed or non-finite bf16/fp16 run to fp32, and warm-up starts over."""
        while True:
            try:
                return self._warm(voice, segments_by_language)
            except _CaptureError as error:
                self._fall_back(f"{self.fast.capture} step capture failed", error.__cause__, "the eager step")
                self._capture = "eager"
                self._build_decode_path()
            except Exception as error:
                if self.dtype == torch.float32:
                    raise
                self._fall_back(f"{_dtype_name(self.dtype)} warm-up failed", error, "float32")
                self._reload_in_fp32()

    def _reload_in_fp32(self) -> None:
        """The LLM and the flow again, in float32; the old ones go first (their memory with them)."""
        self.llm = self.flow = self.fast = None
        if self.batcher is not None:
            self.batcher.decoder = None  # _build_decode_path hands it the new decoder
        self.release_caches()
        self.dtype = torch.float32
        self._load_llm_and_flow()

    def _warm(self, voice: PromptVoice, segments_by_language: dict[str, list[Segment]]) -> None:
        if self.fast is not None:
            try:
                self.fast.warmup()
            except Exception as error:
                if self.fast.capture == "eager":
                    raise
                raise _CaptureError from error
            self.load_seconds["decode_capture"] = self.fast.capture_seconds
        for rate in self.sample_rates:
            options = SynthesisOptions(sample_rate=rate, forced_tokens_per_segment=WARMUP_TOKENS)
            for segments in segments_by_language.values():
                for stream in (False, True):
                    for piece in self._synthesize(segments[:1], voice, options, None, stream):
                        if not np.isfinite(piece.audio).all():
                            raise FloatingPointError(f"non-finite audio at {rate} Hz")

    def _fall_back(self, what: str, error: BaseException | None, instead: str) -> None:
        """Log a fallback with its traceback, and keep its reason (first line of the error) for `describe`."""
        lines = str(error).strip().splitlines()
        reason = f"{what} ({type(error).__name__}: {lines[0][:200] if lines else ''}); using {instead}"
        _LOGGER.warning("GLM-TTS warm-up: %s", reason, exc_info=error)
        self.fallbacks.append(reason)

    # ----------------------------------------------------------------- prompts
    def prepare_voice(self, audio: np.ndarray, sample_rate: int, prompt_text: str, key: str) -> PromptVoice:
        """Speech tokens, speaker embedding and 24/32 kHz prompt mels of a prompt, plus its transcript's ids.

        `audio` is at the file's own rate; each consumer resamples from it once, as upstream's loaders
        do (speech tokens and CAM++ at 16 kHz, the prompt mels at 24 and 32 kHz)."""
        self._require_loaded()
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size == 0:
            raise SynthesisError("The prompt audio is empty.")
        transcript = " ".join(prompt_text.split())
        if not transcript:
            _LOGGER.warning("Prompt %s has no transcript: the LLM is not prompted with its speech tokens", key[:12])
        speech_tokens = self.speech_tokenizer.audio_to_tokens(audio, sample_rate)  # [T]
        if speech_tokens.numel() == 0:
            raise SynthesisError("The prompt audio is too short to analyse.")
        embedding = self.speaker.audio_to_embedding(audio, sample_rate)  # [192]
        features = GLMVoiceFeatures(
            prompt_text_ids=self.tokenizer.encode(transcript + PROMPT_TEXT_SUFFIX) if transcript else [],
            speech_tokens=speech_tokens.tolist(),
            speaker_embedding=torch.from_numpy(embedding).to(self.device),
            prompt_mels={rate: audio_to_prompt_mel(audio, sample_rate, rate, self.device) for rate in self.sample_rates},
        )
        return PromptVoice(key=key, prompt_text=transcript, features=features, duration_s=audio.size / sample_rate)

    # ----------------------------------------------------------------- synthesis
    def synthesize_segments(
        self, segments: list[Segment], voice: PromptVoice, options: SynthesisOptions, cancel: CancelToken | None = None
    ) -> Iterator[SegmentAudio]:
        """Each segment's audio: one piece, or several (`final=False` on all but the last) when the
        request streams (`options.stream` when the options carry it, else the engine's default)."""
        stream = options.stream
        return self._synthesize(segments, voice, options, cancel, self.stream_default if stream is None else bool(stream))

    def _synthesize(
        self,
        segments: list[Segment],
        voice: PromptVoice,
        options: SynthesisOptions,
        cancel: CancelToken | None,
        stream: bool,
    ) -> Iterator[SegmentAudio]:
        self._require_loaded()
        features = voice.features
        if not isinstance(features, GLMVoiceFeatures):
            raise SynthesisError("This voice was analysed by another engine; analyse it again.")
        rate = options.sample_rate or DEFAULT_RATE
        if rate not in self.vocoders:
            raise SynthesisError(f"GLM-TTS offers {', '.join(map(str, self.sample_rates))} Hz, not {rate}.")
        sampling = _sampling_config(options)
        ids = self.tokenizer.speech_ids
        # Without a transcript the prompt's speech tokens would not match any text: leave them out.
        prompt_speech = features.speech_tokens if features.prompt_text_ids else []
        history = _PromptHistory(features.prompt_text_ids, prompt_speech)
        flow_prompt = torch.tensor(features.speech_tokens, dtype=torch.long)
        for segment in segments:
            _check(cancel)
            text_ids = self.tokenizer.encode(segment.glm_text)
            generator = torch.Generator(device=self.device).manual_seed(options.seed)
            prompt_text, prompt_tokens = history.prompt(len(text_ids), options.use_cache)
            request = GenerationRequest(
                prompt_text + text_ids + [ids.begin_of_audio] + [ids.audio_start + t for t in prompt_tokens],
                min_new=int(len(text_ids) * MIN_TOKEN_TEXT_RATIO),
                max_new=int(len(text_ids) * MAX_TOKEN_TEXT_RATIO),
                sampling=sampling,
                generator=generator,
                forced_length=options.forced_tokens_per_segment,
            )
            speech: list[int] = []
            if stream:
                pieces = self._stream_segment(request, flow_prompt, features, rate, options.seed, cancel, speech)
            else:
                pieces = self._whole_segment(request, flow_prompt, features, rate, options.seed, cancel, speech)
            yield from pieces
            history.append(text_ids, speech)

    def _whole_segment(
        self,
        request: GenerationRequest,
        flow_prompt: torch.Tensor,
        features: GLMVoiceFeatures,
        rate: int,
        seed: int,
        cancel: CancelToken | None,
        speech: list[int],
    ) -> Iterator[SegmentAudio]:
        """All tokens, then the flow and the vocoder in one pass: one piece."""
        start = time.perf_counter()
        for chunk in self._token_chunks(request):
            speech.extend(self._speech_only(chunk))
            _check(cancel)
        llm_s = time.perf_counter() - start
        if not speech:
            _LOGGER.warning("No speech tokens for a segment; it is silent")
            audio, flow_s, vocoder_s = np.zeros(0, dtype=np.float32), 0.0, 0.0
        elif self.decode == "reference":  # upstream: the segment's generator goes on into the flow and the vocoder
            audio, flow_s, vocoder_s = self._tokens_to_audio(speech, flow_prompt, features, rate, request.generator)
        else:
            audio, flow_s, vocoder_s = tokens_to_audio_whole(
                self.flow, self.vocoders[rate], torch.tensor(speech, dtype=torch.long), flow_prompt,
                features.prompt_mels[rate], features.speaker_embedding, seed,
            )  # fmt: skip
        yield SegmentAudio(
            audio=audio,
            sample_rate=rate,
            timings={"llm": llm_s, "flow": flow_s, "vocoder": vocoder_s},
            info={"speech_tokens": len(speech)},
        )

    def _stream_segment(
        self,
        request: GenerationRequest,
        flow_prompt: torch.Tensor,
        features: GLMVoiceFeatures,
        rate: int,
        seed: int,
        cancel: CancelToken | None,
        speech: list[int],
    ) -> Iterator[SegmentAudio]:
        """Tokens into audio block by block while the LLM decodes: pieces with `final=False`, then the
        segment's last piece."""
        streamer = SegmentStreamer(
            self.flow, self.vocoders[rate], flow_prompt, features.prompt_mels[rate], features.speaker_embedding, seed,
            self.schedule,
        )  # fmt: skip
        llm_s = 0.0
        start = time.perf_counter()
        for chunk in self._token_chunks(request):
            llm_s += time.perf_counter() - start
            new = self._speech_only(chunk)
            speech.extend(new)
            _check(cancel)
            audio = streamer.push(new) if new else np.zeros(0, dtype=np.float32)
            if len(audio):
                yield SegmentAudio(audio=audio, sample_rate=rate, timings={"llm": llm_s, **streamer.timings.take()}, final=False)
                llm_s = 0.0
                _check(cancel)
            start = time.perf_counter()
        llm_s += time.perf_counter() - start
        if not speech:
            _LOGGER.warning("No speech tokens for a segment; it is silent")
        audio = streamer.finish()
        yield SegmentAudio(
            audio=audio,
            sample_rate=rate,
            timings={"llm": llm_s, **streamer.timings.take()},
            info={"speech_tokens": len(speech), "flow_blocks": streamer.blocks_run},
        )

    def _token_chunks(self, request: GenerationRequest) -> Iterator[list[int]]:
        """The request's tokens (relative to `<|audio_0|>`) in chunks as the decode path yields them."""
        if self.batcher is not None:
            return self.batcher.stream(request)
        return self.llm.stream(request)

    def _speech_only(self, tokens: list[int]) -> list[int]:
        speech = [t for t in tokens if 0 <= t < self.tokenizer.speech_ids.codebook_size]
        if len(speech) < len(tokens):
            _LOGGER.warning("Dropped %d generated ids outside the speech tokens", len(tokens) - len(speech))
        return speech

    def _tokens_to_audio(
        self,
        speech: list[int],
        flow_prompt: torch.Tensor,
        features: GLMVoiceFeatures,
        rate: int,
        generator: torch.Generator,
    ) -> tuple[np.ndarray, float, float]:
        """Upstream's flow (guidance as two calls) and vocoder, continuing the segment's generator."""
        start = time.perf_counter()
        mel = self.flow.tokens_to_mel(
            torch.tensor(speech, dtype=torch.long),
            flow_prompt,
            features.prompt_mels[rate],
            features.speaker_embedding,
            generator,
            batched_cfg=False,
        )  # [F, 80]
        _synchronize(self.device)
        flow_s = time.perf_counter() - start
        start = time.perf_counter()
        audio = self.vocoders[rate].mel_to_audio(mel, generator).cpu().numpy().astype(np.float32)
        return audio, flow_s, time.perf_counter() - start

    # ----------------------------------------------------------------- memory and status
    def memory_report(self) -> dict[str, float]:
        """VRAM allocated/reserved/peak on CUDA, the fast path's KV cache and the weight bytes of each
        stage, in MiB."""
        report: dict[str, float] = {}
        if self.device is None:
            return report
        if self.device.type == "cuda":
            report["vram_allocated"] = torch.cuda.memory_allocated(self.device) / _MIB
            report["vram_reserved"] = torch.cuda.memory_reserved(self.device) / _MIB
            report["vram_peak"] = torch.cuda.max_memory_allocated(self.device) / _MIB
        if self.fast is not None:
            report["kv_cache"] = self.fast.kv_cache_bytes / _MIB
        stages = {
            "llm": self.llm,
            "speech_tokenizer": self.speech_tokenizer,
            "flow": self.flow,
            "hift": self.vocoders[HIFT_RATE],
            "vocos2d": self.vocoders[VOCOS_RATE],
        }
        for name, stage in stages.items():
            report[f"weights_{name}"] = _weight_bytes(stage) / _MIB
        return report

    def release_caches(self) -> None:
        gc.collect()
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.empty_cache()

    def describe(self) -> dict[str, object]:
        facts = super().describe()
        facts.update(checkpoint.describe_checkpoint(self.ckpt_root))
        facts["dtype"] = _dtype_name(self.dtype) if self.dtype else self._dtype_name
        facts["device"] = str(self.device) if self.device else None
        facts["max_batch"] = self.max_batch
        facts["decode"] = self.decode
        facts["stream"] = self.stream_default
        if self.fast is not None:
            facts["decode_capture"] = self.fast.capture
            facts["decode_sync_every"] = SYNC_EVERY
            facts["decode_buckets"] = {"rows": self.fast.batch_sizes, "positions": list(self.fast.buckets)}
            facts["kv_cache_mib"] = round(self.fast.kv_cache_bytes / _MIB, 1)
        facts["fallbacks"] = list(self.fallbacks)
        facts["load_seconds"] = {name: round(seconds, 2) for name, seconds in self.load_seconds.items()}
        return facts

    # ----------------------------------------------------------------- helpers
    def _timed_load(self, name: str, loader: Callable[..., _Stage], *args: object) -> _Stage:
        start = time.perf_counter()
        stage = loader(*args)
        _synchronize(self.device)
        self.load_seconds[name] = time.perf_counter() - start
        return stage

    def _require_loaded(self) -> None:
        if self.device is None:
            raise RuntimeError("GLMTTSEngine.load(device) must be called first")


class _CaptureError(Exception):
    """The fast path's step capture failed at warm-up (the cause is chained)."""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check(cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.check()


def _resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """The requested dtype, else bf16 on a CUDA device that supports it, else float32."""
    if name is not None:
        return TORCH_DTYPES[name]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _sampling_config(options: SynthesisOptions) -> SamplingConfig:
    """The request's settings over upstream's defaults."""
    defaults = SamplingConfig()
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


def _synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _weight_bytes(stage: object) -> int:
    """Parameter and buffer bytes of the modules a stage object holds."""
    total = 0
    for value in vars(stage).values():
        if isinstance(value, (nn.Module, torch.jit.ScriptModule)):
            tensors = [*value.parameters(), *value.buffers()]
            total += sum(t.numel() * t.element_size() for t in tensors)
    return total
