"""What one segment's synthesis needs: its speech-LM call, built from the prompt history, and the job
that the whole or the streamed run of the segment carries out.

Per segment the LLM reads `[prompt text, target text, <|begin_of_audio|>, prompt speech tokens]`.
With upstream's long-text cache (`use_cache`) each segment's text and speech tokens prompt the next
one (`PromptHistory`); the flow is always conditioned on the original prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from glmtts.engines.glm.llm import GenerationRequest
from glmtts.engines.glm.sampling import SamplingConfig
from glmtts.engines.glm.text_tokenizer import SpeechTokenIds
from glmtts.types import CancelToken

MIN_TOKEN_TEXT_RATIO = 2  # speech tokens per text token, lower bound (end token masked before)
MAX_TOKEN_TEXT_RATIO = 20
MAX_PROMPT_SPEECH_TOKENS = 750  # prompt-history cache: drop old entries beyond this many speech tokens


@dataclass
class SegmentJob:
    """One segment's work: the LLM call, what the flow and the vocoder are conditioned on, the output
    rate and seed, and the request's cancel token. `speech` collects the tokens as they are decoded
    (the prompt history reads them once the segment is done)."""

    request: GenerationRequest
    flow_prompt: torch.Tensor  # [T] long: the prompt's speech tokens (the flow's, transcript or not)
    prompt_mel: torch.Tensor  # [frames, 80] the prompt's mel at `rate`
    speaker_embedding: torch.Tensor  # [192] CAM++ embedding
    rate: int
    seed: int
    cancel: CancelToken | None = None
    speech: list[int] = field(default_factory=list)

    def check(self) -> None:
        """Raise Cancelled when the request was cancelled or is past its time limit."""
        if self.cancel is not None:
            self.cancel.check()


class PromptHistory:
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


def segment_request(
    ids: SpeechTokenIds,
    prompt: tuple[list[int], list[int]],
    text_ids: list[int],
    sampling: SamplingConfig,
    generator: torch.Generator,
    forced_length: int | None,
) -> GenerationRequest:
    """The LLM call of a segment of `text_ids` after `prompt` (text ids, speech tokens from
    `PromptHistory.prompt`), bounded by the token-per-text-token ratios."""
    prompt_text, prompt_speech = prompt
    return GenerationRequest(
        prompt_text + text_ids + [ids.begin_of_audio] + [ids.audio_start + t for t in prompt_speech],
        min_new=int(len(text_ids) * MIN_TOKEN_TEXT_RATIO),
        max_new=int(len(text_ids) * MAX_TOKEN_TEXT_RATIO),
        sampling=sampling,
        generator=generator,
        forced_length=forced_length,
    )
