"""The GLM-TTS text tokenizer: ChatGLM4 byte-level BPE on tiktoken plus the added tokens.

The official folder `vq32k-phoneme-tokenizer/` holds `tokenizer.model` (one line per BPE token:
base64 bytes, space, rank) and `tokenizer_config.json`, whose `added_tokens_decoder` maps ids to
the added tokens: the ChatGLM4 specials (`<|endoftext|>`, `<|user|>`, ...), `<|begin_of_audio|>`,
the phoneme tokens (`<|SH|>`, `<|ANG1|>`, ...) and the speech tokens `<|audio_0|>` ...
`<|audio_32767|>`. Upstream's remote-code tokenizer gives tiktoken no special tokens at all:
added tokens are cut out of the text first (leftmost, longest match), every piece between them
goes through plain BPE, and no prefix tokens are added. We do the same without executing the
checkpoint's Python.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import tiktoken

from glmtts.engines.glm.errors import CheckpointError

_LOGGER = logging.getLogger(__name__)

RANKS_FILE = "tokenizer.model"
CONFIG_FILE = "tokenizer_config.json"
ADDED_TOKENS_FILE = "added_tokens.json"  # older HF layout: {"content": id}
# ChatGLM4's pre-tokenizer pattern (tokenization_chatglm.py of the checkpoint).
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
AUDIO_TOKEN = "<|audio_{}|>"
BEGIN_OF_AUDIO = "<|begin_of_audio|>"
END_OF_SPEECH = "<|user|>"  # upstream stops speech generation at the `<|user|>` turn marker
PAD = "<|endoftext|>"
SPEECH_CODEBOOK = 32768


@dataclass(frozen=True)
class SpeechTokenIds:
    """The ids the speech LM needs: the speech-token range, where speech starts and ends."""

    audio_start: int  # <|audio_0|>, "ats"
    audio_end: int  # <|audio_32767|>, inclusive
    begin_of_audio: int
    end_of_speech: int  # <|user|>
    pad: int

    @property
    def codebook_size(self) -> int:
        return self.audio_end - self.audio_start + 1


class TextTokenizer:
    """Text (with inline phoneme and special tokens) -> ids, as upstream's ChatGLM4Tokenizer."""

    def __init__(self, ranks: dict[bytes, int], added: dict[str, int], strip: dict[str, tuple[bool, bool]]):
        self._bpe = tiktoken.Encoding(name="glm-tts", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens={})
        self._added = added
        self._strip = strip  # content -> (lstrip, rstrip), from the added-token config
        self._lengths_by_first: dict[str, tuple[int, ...]] = {}
        for content in added:
            lengths = set(self._lengths_by_first.get(content[0], ()))
            lengths.add(len(content))
            self._lengths_by_first[content[0]] = tuple(sorted(lengths, reverse=True))
        self._id_to_bytes = {rank: token for token, rank in ranks.items()}
        self._id_to_added = {token_id: content for content, token_id in added.items()}
        self.speech_ids = SpeechTokenIds(
            audio_start=self._require(AUDIO_TOKEN.format(0)),
            audio_end=self._require(AUDIO_TOKEN.format(SPEECH_CODEBOOK - 1)),
            begin_of_audio=self._require(BEGIN_OF_AUDIO),
            end_of_speech=self._require(END_OF_SPEECH),
            pad=self._require(PAD),
        )
        if self.speech_ids.codebook_size != SPEECH_CODEBOOK:
            raise CheckpointError(
                f"{CONFIG_FILE}: speech tokens are not contiguous "
                f"({AUDIO_TOKEN.format(0)}={self.speech_ids.audio_start}, "
                f"{AUDIO_TOKEN.format(SPEECH_CODEBOOK - 1)}={self.speech_ids.audio_end})"
            )

    @classmethod
    def load(cls, directory: Path) -> TextTokenizer:
        """Read `tokenizer.model` and the added tokens from `directory`; no checkpoint code runs."""
        directory = Path(directory)
        ranks = _read_ranks(directory / RANKS_FILE)
        added, strip = _read_added_tokens(directory)
        _LOGGER.info("Text tokenizer: %d BPE ranks, %d added tokens", len(ranks), len(added))
        return cls(ranks, added, strip)

    @property
    def audio_0_id(self) -> int:
        return self.speech_ids.audio_start

    @property
    def begin_of_audio_id(self) -> int:
        return self.speech_ids.begin_of_audio

    @property
    def end_of_speech_id(self) -> int:
        return self.speech_ids.end_of_speech

    @property
    def pad_id(self) -> int:
        return self.speech_ids.pad

    @property
    def size(self) -> int:
        """One more than the largest id."""
        return max(max(self._id_to_bytes), max(self._id_to_added)) + 1

    def token_id(self, content: str) -> int | None:
        """The id of an added token such as "<|SH|>", or None."""
        return self._added.get(content)

    def encode(self, text: str) -> list[int]:
        """Text -> ids: added tokens become their ids, the text between them goes through BPE."""
        ids: list[int] = []
        pending = 0  # start of the text not yet encoded
        position = 0
        strip_next = False
        while position < len(text):
            content = self._added_at(text, position)
            if content is None:
                position += 1
                continue
            lstrip, rstrip = self._strip.get(content, (False, False))
            piece = text[pending:position]
            piece = piece.lstrip() if strip_next else piece
            ids.extend(self._bpe.encode_ordinary(piece.rstrip() if lstrip else piece))
            ids.append(self._added[content])
            position += len(content)
            pending = position
            strip_next = rstrip
        piece = text[pending:]
        ids.extend(self._bpe.encode_ordinary(piece.lstrip() if strip_next else piece))
        return ids

    def decode(self, ids: list[int]) -> str:
        """Ids -> text (added tokens written out); for logs and tests."""
        parts: list[str] = []
        pending = b""
        for token_id in ids:
            if token_id in self._id_to_added:
                parts.append(pending.decode("utf-8", errors="replace"))
                parts.append(self._id_to_added[token_id])
                pending = b""
            else:
                pending += self._id_to_bytes[token_id]
        parts.append(pending.decode("utf-8", errors="replace"))
        return "".join(parts)

    def _added_at(self, text: str, position: int) -> str | None:
        for length in self._lengths_by_first.get(text[position], ()):
            candidate = text[position : position + length]
            if candidate in self._added:
                return candidate
        return None

    def _require(self, content: str) -> int:
        if content not in self._added:
            raise CheckpointError(f"{CONFIG_FILE}: the added token {content!r} is missing")
        return self._added[content]


def _read_ranks(path: Path) -> dict[bytes, int]:
    if not path.is_file():
        raise CheckpointError(f"missing tokenizer file {path}")
    ranks: dict[bytes, int] = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            token, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
        except (IndexError, ValueError) as error:
            raise CheckpointError(f"{path}:{line_number}: expected 'base64-token rank' ({error})") from error
        ranks[token] = rank
    missing_bytes = [value for value in range(256) if bytes([value]) not in ranks]
    if missing_bytes:  # only matters if text ever contains them (0xC0, 0xF5-0xFF never occur in UTF-8)
        _LOGGER.warning("%s: %d single bytes have no rank, first %#04x", path, len(missing_bytes), missing_bytes[0])
    if len(set(ranks.values())) != len(ranks):
        raise CheckpointError(f"{path}: duplicate ranks")
    return ranks


def _read_added_tokens(directory: Path) -> tuple[dict[str, int], dict[str, tuple[bool, bool]]]:
    """Added tokens from `tokenizer_config.json` (`added_tokens_decoder`) or `added_tokens.json`."""
    added: dict[str, int] = {}
    strip: dict[str, tuple[bool, bool]] = {}
    config_path = directory / CONFIG_FILE
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            for id_text, entry in config.get("added_tokens_decoder", {}).items():
                added[entry["content"]] = int(id_text)
                strip[entry["content"]] = (bool(entry.get("lstrip", False)), bool(entry.get("rstrip", False)))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(f"{config_path}: unreadable added_tokens_decoder ({error!r})") from error
    legacy_path = directory / ADDED_TOKENS_FILE
    if legacy_path.is_file():
        try:
            for content, token_id in json.loads(legacy_path.read_text(encoding="utf-8")).items():
                added.setdefault(content, int(token_id))
        except (ValueError, TypeError, AttributeError) as error:
            raise CheckpointError(f"{legacy_path}: unreadable ({error!r})") from error
    if not added:
        raise CheckpointError(f"missing tokenizer file {config_path} (it lists the special and phoneme tokens)")
    return added, strip
