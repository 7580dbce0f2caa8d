"""The GLM-TTS engine: text tokens -> speech LM -> flow -> vocoder, in the prompt speaker's voice.

Every stage is loaded once onto one device by `load()`. Per segment the LLM reads
`[prompt text, target text, <|begin_of_audio|>, prompt speech tokens]` and samples speech tokens;
the flow turns them into mel frames conditioned on the original prompt; HiFT (24 kHz) or Vocos2D
(32 kHz) makes the waveform. With `max_batch` above 1, the LLM calls of concurrent requests are
decoded together (batcher.py); flow and vocoder run per request.

Two decode paths (`decode`), chosen once at load: the decoder (decoder.py) and what turns a whole
segment's tokens into audio. "reference" is upstream's computation, the parity oracle and the CPU
default: transformers' Llama, host-side sampling, and one seeded generator per segment that drives
the LLM, then the flow (its two guidance branches as two calls), then the vocoder, as upstream's
global seed does. "fast" (the CUDA default, fast_decode.py) decodes on a static KV cache with
on-device sampling and a captured step; its flow and vocoder draw their noise from tapes seeded
from the request's seed (noise.py).

Streaming (`stream`, per request when the options carry it): the flow and the vocoder turn tokens
into audio block by block while the LLM still decodes (streaming.py), and each segment comes out
in several pieces. A non-streamed segment on the reference path stays upstream-exact.

Each segment's LLM call and job come from segment.py (prompt history); warm-up and its fallbacks
(eager step, float32) from warmup.py.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from glmtts.engines.glm.decoder import SpeechDecoder
from glmtts.engines.glm.fast_decode import DEFAULT_MAX_POSITIONS, FastDecoder
from glmtts.engines.glm.flow import FlowDecoder
from glmtts.engines.glm.llm import SpeechLM
from glmtts.engines.glm.mel import audio_to_prompt_mel
from glmtts.engines.glm.sampling import SamplingConfig
from glmtts.engines.glm.segment import PromptHistory, SegmentJob, segment_request
from glmtts.engines.glm.speech_tokenizer import SpeechTokenizer
from glmtts.engines.glm.streaming import SegmentStreamer, StreamSchedule, tokens_to_audio_whole
from glmtts.engines.glm.text_tokenizer import TextTokenizer
from glmtts.engines.glm.vocoder import HiFTVocoder, Vocos2DVocoder
from glmtts.engines.glm.warmup import warm_up
from glmtts.types import CancelToken, PromptVoice, Segment, SegmentAudio, SynthesisError, SynthesisOptions

_LOGGER = logging.getLogger(__name__)

TORCH_DTYPES = dict(zip(DTYPES, (torch.float32, torch.bfloat16, torch.float16), strict=True))
HIFT_RATE = 24000
VOCOS_RATE = 32000
DEFAULT_RATE = HIFT_RATE
PROMPT_TEXT_SUFFIX = " "  # upstream tokenizes the prompt transcript with one trailing space
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


class GLMTTSEngine(Engine):
    """Owns the GLM-TTS stages on one device and synthesizes segments in a prompt's voice: loads them
    and picks the decode path once (`load`), analyses prompts (`prepare_voice`), runs each segment
    whole or streamed (`synthesize_segments`) and reports memory and facts for /v1/status."""

    name = "glm-tts"
    sample_rates = (HIFT_RATE, VOCOS_RATE)
    samples = True
    speed_range = (1.0, 1.0)  # no rate control: the LLM sets the pace, as upstream's does
    # 2: prompts arrive at their file's own rate and each consumer resamples from it (was: from 24 kHz).
    # `load` appends the checkpoint's analysis fingerprint: another checkpoint's analyses are not reused.
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
        self.decoder: SpeechDecoder | None = None  # set by load(): the LLM (reference) or a FastDecoder over it
        self.batcher: DecodeBatcher | None = None  # set by load(): max_batch > 1, or the fast path
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
        self.analysis_version = f"{GLMTTSEngine.analysis_version}-{checkpoint.analysis_fingerprint(root)}"
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
        """The one choice of the decode path: its decoder, the batcher in front of it, and how a whole
        segment's tokens become audio. The fast path always decodes in the batcher's worker thread: its
        static state serves one decode at a time, and a streamed request pauses between pieces while
        others may start."""
        if self.decode == "fast":
            self.decoder = self._timed_load(
                "fast_decode", FastDecoder, self.llm, self.max_batch, self._max_positions, self._capture
            )
            self._whole_audio = self._seeded_audio
        else:
            self.decoder = self.llm
            self._whole_audio = self._upstream_audio
        if self.decode == "reference" and self.max_batch == 1:
            self.batcher = None
        elif self.batcher is None:
            self.batcher = DecodeBatcher(self.decoder, self.max_batch)
        else:  # rebuilt after a fallback: the batcher's worker reads its decoder per batch
            self.batcher.decoder = self.decoder
        self._token_source: DecodeBatcher | SpeechDecoder = self.batcher or self.decoder

    def warmup(self, voice: PromptVoice, segments_by_language: dict[str, list[Segment]]) -> None:
        """Capture every decode shape, then synthesize a little per language and rate (warmup.py); a
        failed optimisation falls back (`use_eager_step`, `reload_in_fp32`) instead of failing."""
        warm_up(self, voice, segments_by_language)

    def use_eager_step(self) -> None:
        """Fallback: rebuild the fast decoder with the eager step (its capture failed)."""
        self._capture = "eager"
        self._build_decode_path()

    def reload_in_fp32(self) -> None:
        """Fallback: the LLM and the flow again, in float32; the old ones go first (their memory with them)."""
        self.llm = self.flow = self.decoder = None
        if self.batcher is not None:
            self.batcher.decoder = None  # _build_decode_path hands it the new decoder
        self.release_caches()
        self.dtype = torch.float32
        self._load_llm_and_flow()

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
        sampling = SamplingConfig.from_options(options)
        run_segment = self._stream_segment if stream else self._whole_segment
        # Without a transcript the prompt's speech tokens would not match any text: leave them out.
        history = PromptHistory(features.prompt_text_ids, features.speech_tokens if features.prompt_text_ids else [])
        flow_prompt = torch.tensor(features.speech_tokens, dtype=torch.long)
        for segment in segments:
            if cancel is not None:
                cancel.check()
            text_ids = self.tokenizer.encode(segment.glm_text)
            generator = torch.Generator(device=self.device).manual_seed(options.seed)
            prompt = history.prompt(len(text_ids), options.use_cache)
            job = SegmentJob(
                request=segment_request(
                    self.tokenizer.speech_ids, prompt, text_ids, sampling, generator, options.forced_tokens_per_segment
                ),
                flow_prompt=flow_prompt,
                prompt_mel=features.prompt_mels[rate],
                speaker_embedding=features.speaker_embedding,
                rate=rate,
                seed=options.seed,
                cancel=cancel,
            )
            yield from run_segment(job)
            history.append(text_ids, job.speech)

    def _whole_segment(self, job: SegmentJob) -> Iterator[SegmentAudio]:
        """All tokens, then the flow and the vocoder in one pass: one piece."""
        start = time.perf_counter()
        for chunk in self._token_source.stream(job.request):
            job.speech.extend(self._speech_only(chunk))
            job.check()
        llm_s = time.perf_counter() - start
        if job.speech:
            audio, flow_s, vocoder_s = self._whole_audio(job)
        else:
            _LOGGER.warning("No speech tokens for a segment; it is silent")
            audio, flow_s, vocoder_s = np.zeros(0, dtype=np.float32), 0.0, 0.0
        yield SegmentAudio(
            audio=audio,
            sample_rate=job.rate,
            timings={"llm": llm_s, "flow": flow_s, "vocoder": vocoder_s},
            info={"speech_tokens": len(job.speech)},
        )

    def _stream_segment(self, job: SegmentJob) -> Iterator[SegmentAudio]:
        """Tokens into audio block by block while the LLM decodes: pieces with `final=False`, then the
        segment's last piece."""
        streamer = SegmentStreamer(
            self.flow, self.vocoders[job.rate], job.flow_prompt, job.prompt_mel, job.speaker_embedding, job.seed,
            self.schedule,
        )  # fmt: skip
        llm_s = 0.0
        start = time.perf_counter()
        for chunk in self._token_source.stream(job.request):
            llm_s += time.perf_counter() - start
            new = self._speech_only(chunk)
            job.speech.extend(new)
            job.check()
            audio = streamer.push(new) if new else np.zeros(0, dtype=np.float32)
            if len(audio):
                timings = {"llm": llm_s, **streamer.timings.take()}
                yield SegmentAudio(audio=audio, sample_rate=job.rate, timings=timings, final=False)
                llm_s = 0.0
                job.check()
            start = time.perf_counter()
        llm_s += time.perf_counter() - start
        if not job.speech:
            _LOGGER.warning("No speech tokens for a segment; it is silent")
        audio = streamer.finish()
        yield SegmentAudio(
            audio=audio,
            sample_rate=job.rate,
            timings={"llm": llm_s, **streamer.timings.take()},
            info={"speech_tokens": len(job.speech), "flow_blocks": streamer.blocks_run},
        )

    def _speech_only(self, tokens: list[int]) -> list[int]:
        speech = [t for t in tokens if 0 <= t < self.tokenizer.speech_ids.codebook_size]
        if len(speech) < len(tokens):
            _LOGGER.warning("Dropped %d generated ids outside the speech tokens", len(tokens) - len(speech))
        return speech

    def _upstream_audio(self, job: SegmentJob) -> tuple[np.ndarray, float, float]:
        """The reference path's whole segment: upstream's flow (guidance as two calls) and vocoder,
        continuing the segment's generator, as upstream's global seed does. (audio, flow s, vocoder s)"""
        start = time.perf_counter()
        tokens = torch.tensor(job.speech, dtype=torch.long)
        generator = job.request.generator
        mel = self.flow.tokens_to_mel(
            tokens, job.flow_prompt, job.prompt_mel, job.speaker_embedding, generator, batched_cfg=False
        )  # [F, 80]
        _synchronize(self.device)
        flow_s = time.perf_counter() - start
        start = time.perf_counter()
        audio = self.vocoders[job.rate].mel_to_audio(mel, generator).cpu().numpy().astype(np.float32)
        return audio, flow_s, time.perf_counter() - start

    def _seeded_audio(self, job: SegmentJob) -> tuple[np.ndarray, float, float]:
        """The fast path's whole segment: one pass with the streamed path's seeded noise (streaming.py)."""
        tokens = torch.tensor(job.speech, dtype=torch.long)
        return tokens_to_audio_whole(
            self.flow, self.vocoders[job.rate], tokens, job.flow_prompt, job.prompt_mel, job.speaker_embedding, job.seed
        )

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
        if self.decoder is not None and self.decoder.kv_cache_bytes:
            report["kv_cache"] = self.decoder.kv_cache_bytes / _MIB
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
        if self.decoder is not None:
            facts.update(self.decoder.describe())
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


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """The requested dtype, else bf16 on a CUDA device that supports it, else float32."""
    if name is not None:
        return TORCH_DTYPES[name]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


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
