"""The GLM-TTS engine: text tokens -> speech LM -> flow -> vocoder, in the prompt speaker's voice.

Every stage is loaded once onto one device by `load()`. Per segment the LLM reads
`[prompt text, target text, <|begin_of_audio|>, prompt speech tokens]` and samples speech tokens;
the flow turns them into mel frames conditioned on the original prompt; HiFT (24 kHz) or Vocos2D
(32 kHz) makes the waveform. One seeded generator per segment drives the LLM, then the flow, then
the vocoder, as upstream's global seed does. With `max_batch` above 1, the LLM calls of concurrent
requests are decoded together (batcher.py); flow and vocoder run per request.
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
from glmtts.engines.glm.flow import FlowDecoder
from glmtts.engines.glm.llm import SpeechLM
from glmtts.engines.glm.mel import audio_to_prompt_mel
from glmtts.engines.glm.sampling import SamplingConfig
from glmtts.engines.glm.speech_tokenizer import SpeechTokenizer
from glmtts.engines.glm.text_tokenizer import TextTokenizer
from glmtts.engines.glm.vocoder import HiFTVocoder, Vocos2DVocoder
from glmtts.types import PromptVoice, Segment, SegmentAudio, SynthesisError, SynthesisOptions

_LOGGER = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
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

    def __init__(self, ckpt_root: Path, dtype: str | None = None, max_batch: int | None = None):
        """`max_batch` None: CUDA_MAX_BATCH on a CUDA device, else 1 (decided by `load`)."""
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.ckpt_root = Path(ckpt_root)
        self._dtype_name = dtype
        self._max_batch_setting = max_batch
        self.max_batch = max_batch or 1
        self.batcher: DecodeBatcher | None = None  # set by load() when max_batch > 1
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None
        self.load_seconds: dict[str, float] = {}

    # ----------------------------------------------------------------- lifecycle
    def load(self, device: str) -> None:
        """Load every stage onto `device`: LLM and flow in the engine dtype, the rest in float32."""
        checkpoint.validate_checkpoint(self.ckpt_root)
        self.device = torch.device(device)
        self.dtype = _resolve_dtype(self._dtype_name, self.device)
        root = self.ckpt_root
        timed = self._timed_load
        self.tokenizer = timed("text_tokenizer", TextTokenizer.load, root / checkpoint.TEXT_TOKENIZER_DIR)
        self.llm = timed("llm", SpeechLM.load, root / checkpoint.LLM_DIR, self.device, self.dtype, self.tokenizer.speech_ids)
        self.speech_tokenizer = timed(
            "speech_tokenizer", SpeechTokenizer.load, root / checkpoint.SPEECH_TOKENIZER_DIR, self.device
        )
        self.speaker = timed("campplus", CamPlusSpeaker.load, checkpoint.find_campplus(root), self.device)
        self.flow = timed("flow", FlowDecoder.load, root / checkpoint.FLOW_DIR, self.device, self.dtype)
        self.vocoders: dict[int, HiFTVocoder | Vocos2DVocoder] = {
            HIFT_RATE: timed("hift", HiFTVocoder.load, root / checkpoint.HIFT_FILE, self.device),
            VOCOS_RATE: timed("vocos2d", Vocos2DVocoder.load, root / checkpoint.VOCOS_FILE, self.device),
        }
        self.max_batch = self._max_batch_setting or (CUDA_MAX_BATCH if self.device.type == "cuda" else 1)
        self.batcher = DecodeBatcher(self.llm, self.max_batch) if self.max_batch > 1 else None
        seconds = sum(self.load_seconds.values())
        _LOGGER.info("GLM-TTS loaded on %s (%s, max batch %d) in %.1f s", self.device, self.dtype, self.max_batch, seconds)

    def warmup(self, voice: PromptVoice, segments_by_language: dict[str, list[Segment]]) -> None:
        """One short synthesis per language at each rate, with a fixed LLM length (WARMUP_TOKENS)."""
        for rate in self.sample_rates:
            options = SynthesisOptions(sample_rate=rate, forced_tokens_per_segment=WARMUP_TOKENS)
            for segments in segments_by_language.values():
                for _ in self.synthesize_segments(segments[:1], voice, options):
                    pass

    # ----------------------------------------------------------------- prompts
    def prepare_voice(self, audio: np.ndarray, sample_rate: int, prompt_text: str, key: str) -> PromptVoice:
        """Speech tokens, speaker embedding and 24/32 kHz prompt mels of a prompt, plus its transcript's ids."""
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
        self, segments: list[Segment], voice: PromptVoice, options: SynthesisOptions
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
            text_ids = self.tokenizer.encode(segment.glm_text)
            generator = torch.Generator(device=self.device).manual_seed(options.seed)
            prompt_text, prompt_tokens = history.prompt(len(text_ids), options.use_cache)
            llm_input = prompt_text + text_ids + [ids.begin_of_audio] + [ids.audio_start + t for t in prompt_tokens]
            start = time.perf_counter()
            generate = self.batcher.generate if self.batcher is not None else self.llm.generate
            tokens = generate(
                llm_input,
                min_new=int(len(text_ids) * MIN_TOKEN_TEXT_RATIO),
                max_new=int(len(text_ids) * MAX_TOKEN_TEXT_RATIO),
                sampling=sampling,
                generator=generator,
                forced_length=options.forced_tokens_per_segment,
            )
            llm_s = time.perf_counter() - start
            speech = [t for t in tokens if 0 <= t < ids.codebook_size]
            if len(speech) < len(tokens):
                _LOGGER.warning("Dropped %d generated ids outside the speech tokens", len(tokens) - len(speech))
            history.append(text_ids, speech)
            audio, flow_s, vocoder_s = self._tokens_to_audio(speech, flow_prompt, features, rate, generator)
            yield SegmentAudio(
                audio=audio,
                sample_rate=rate,
                timings={"llm": llm_s, "flow": flow_s, "vocoder": vocoder_s},
                info={"speech_tokens": len(speech)},
            )

    def _tokens_to_audio(
        self,
        speech: list[int],
        flow_prompt: torch.Tensor,
        features: GLMVoiceFeatures,
        rate: int,
        generator: torch.Generator,
    ) -> tuple[np.ndarray, float, float]:
        if not speech:
            _LOGGER.warning("No speech tokens for a segment; it is silent")
            return np.zeros(0, dtype=np.float32), 0.0, 0.0
        start = time.perf_counter()
        mel = self.flow.tokens_to_mel(
            torch.tensor(speech, dtype=torch.long),
            flow_prompt,
            features.prompt_mels[rate],
            features.speaker_embedding,
            generator,
        )  # [F, 80]
        _synchronize(self.device)
        flow_s = time.perf_counter() - start
        start = time.perf_counter()
        audio = self.vocoders[rate].mel_to_audio(mel, generator).cpu().numpy().astype(np.float32)
        return audio, flow_s, time.perf_counter() - start

    # ----------------------------------------------------------------- memory and status
    def memory_report(self) -> dict[str, float]:
        """VRAM allocated/reserved on CUDA and the weight bytes of each stage, in MiB."""
        report: dict[str, float] = {}
        if self.device is None:
            return report
        if self.device.type == "cuda":
            report["vram_allocated"] = torch.cuda.memory_allocated(self.device) / _MIB
            report["vram_reserved"] = torch.cuda.memory_reserved(self.device) / _MIB
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
        facts["dtype"] = str(self.dtype).removeprefix("torch.") if self.dtype else self._dtype_name
        facts["device"] = str(self.device) if self.device else None
        facts["max_batch"] = self.max_batch
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


def _resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """The requested dtype, else bf16 on a CUDA device that supports it, else float32."""
    if name is not None:
        return DTYPES[name]
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
