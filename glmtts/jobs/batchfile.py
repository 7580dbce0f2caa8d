"""Batch files: GLM-TTS JSONL (or one utterance a line) in, checked items out, parsed once at submit.

A line that cannot be parsed is an item carrying its error (the job goes on without it, or a strict
submit refuses the file). Two lines whose uttids name the same file (also after they are made safe
as file names) refuse the whole file: each accepted line gets its own wav and one manifest line.

Lines: a JSONL file's lines end at "\\n" (or "\\r\\n") only; a text file of one utterance a line also
ends lines at a lone "\\r" (an old Mac file), but never at U+2028, U+0085 and the like, which may sit
inside an utterance. Items are stored as records (`BatchItem.to_record`) and run from there: the
worker never parses the file again.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from glmtts.files import dumps_line, split_lines
from glmtts.settings import PROJECT_ROOT
from glmtts.types import SynthesisError

BATCH_KEYS = ("uttid", "prompt_text", "prompt_speech", "syn_text")
MAX_BATCH_ITEMS = 1000
MAX_BATCH_BYTES = 2 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024
MAX_PATH_CHARS = 1024
MAX_NAME_CHARS = 80  # a job's name
MAX_REPORTED_ERRORS = 5  # bad lines named in one refusal
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.\-\u4e00-\u9fff]+")
_TEXT_LINE_END = re.compile(r"\r\n|\r|\n")  # a text file's line ends (see the module docstring)


class BatchInputError(SynthesisError):
    """The submitted batch file is unusable; `errors` lists the bad lines."""

    def __init__(self, message: str, errors: list[str] | None = None):
        super().__init__(message)
        self.errors = errors or []


class BatchTooLarge(BatchInputError):
    """The batch file exceeds MAX_BATCH_BYTES or MAX_BATCH_ITEMS."""


@dataclass
class BatchItem:
    """One utterance of a batch; `error` is set when the line itself is unusable."""

    line: int
    uttid: str  # the file name stem: the given uttid made safe
    syn_text: str = ""
    prompt_text: str = ""
    prompt_speech: Path | str | None = None  # a checked path, or a voice name, or None: the page's voice
    error: str = ""
    raw_uttid: str = ""  # as given in the file

    def to_record(self) -> dict[str, object]:
        """The item as stored with its job (a path and a voice name stay apart: a str prompt is a voice)."""
        record = {key: value for key, value in vars(self).items() if key != "prompt_speech"}
        if isinstance(self.prompt_speech, Path):
            record["prompt_file"] = str(self.prompt_speech)
        elif self.prompt_speech is not None:
            record["voice"] = self.prompt_speech
        return record

    @classmethod
    def from_record(cls, record: dict[str, object]) -> BatchItem:
        """An item stored by `to_record` (written by this service at submit, after every check)."""
        prompt = Path(record["prompt_file"]) if "prompt_file" in record else record.get("voice")
        fields = {key: value for key, value in record.items() if key not in ("prompt_file", "voice")}
        return cls(**fields, prompt_speech=prompt)


def safe_name(name: str, fallback: str) -> str:
    cleaned = _SAFE_NAME.sub("_", name).strip("._")[:80]
    return cleaned or fallback


def confine_path(raw: str, allowed_roots: list[Path]) -> Path:
    """Resolve a prompt path (relative to the project root) and insist it lies in an allowed folder."""
    if len(raw) > MAX_PATH_CHARS or any(unicodedata.category(c) == "Cc" for c in raw):
        raise SynthesisError(f"prompt_speech is not a usable path (over {MAX_PATH_CHARS} characters or control characters).")
    try:
        path = Path(raw).expanduser()
        resolved = (path if path.is_absolute() else PROJECT_ROOT / path).resolve()
        is_file = resolved.is_file()
    except (OSError, ValueError, RuntimeError) as error:  # a name too long for the file system, a loop of links
        raise SynthesisError(f"prompt_speech {raw[:80]!r} is not a usable path ({type(error).__name__}).") from error
    for root in allowed_roots:
        if resolved.is_relative_to(root.resolve()):
            if not is_file:
                raise SynthesisError(f"prompt_speech {raw!r} does not exist.")
            return resolved
    names = ", ".join(str(r.relative_to(PROJECT_ROOT)) if r.is_relative_to(PROJECT_ROOT) else str(r) for r in allowed_roots)
    raise SynthesisError(f"prompt_speech {raw!r} is outside the allowed folders ({names}).")


def parse_jsonl(text: str, allowed_roots: list[Path], voice_names: Collection[str] = ()) -> list[BatchItem]:
    """Parse a GLM-TTS batch file; bad lines become items carrying their error.

    `prompt_speech` is a file path inside `allowed_roots`, or one of `voice_names` (a built-in or saved voice).
    Raises BatchTooLarge before parsing a file over the limits, BatchInputError for one without utterances.
    """
    _check_size(text)
    lines = split_lines(text)
    _check_count(sum(1 for line in lines if line.strip()))
    return [_parse_line(number, line, allowed_roots, voice_names) for number, line in enumerate(lines, start=1) if line.strip()]


def _parse_line(number: int, line: str, allowed_roots: list[Path], voice_names: Collection[str]) -> BatchItem:
    fallback = f"line{number}"
    if len(line.encode("utf-8")) > MAX_LINE_BYTES:
        return BatchItem(number, fallback, error=f"line {number}: longer than {MAX_LINE_BYTES // 1024} KB")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return BatchItem(number, fallback, error=f"line {number}: not valid JSON ({error.msg})")
    except RecursionError:
        return BatchItem(number, fallback, error=f"line {number}: nested too deeply (a line is one flat object)")
    if not isinstance(record, dict):
        return BatchItem(number, fallback, error=f"line {number}: expected a JSON object")
    missing = [key for key in BATCH_KEYS if key not in record]
    wrong = [key for key in BATCH_KEYS if key in record and not isinstance(record[key], (str, int))]
    raw_uttid = str(record.get("uttid", ""))
    uttid = safe_name(raw_uttid, fallback)
    if missing or wrong:
        problem = f"missing {', '.join(missing)}" if missing else f"{', '.join(wrong)} must be text"
        return BatchItem(number, uttid, error=f"line {number}: {problem}", raw_uttid=raw_uttid)
    item = BatchItem(number, uttid, str(record["syn_text"]), str(record["prompt_text"]), raw_uttid=raw_uttid)
    prompt = str(record["prompt_speech"])
    try:
        item.prompt_speech = prompt if prompt in voice_names else confine_path(prompt, allowed_roots)
    except SynthesisError as error:
        if "/" in prompt or "\\" in prompt or len(prompt) > MAX_PATH_CHARS:
            item.error = f"line {number}: {error}"
        else:
            item.error = f"line {number}: there is no voice {prompt!r} (and no such file in the allowed folders)."
    return item


def uttid_collisions(items: list[BatchItem]) -> list[str]:
    """One message per file name that two or more lines would write (their uttids, made safe, collide)."""
    lines: dict[str, list[BatchItem]] = {}
    for item in items:
        lines.setdefault(item.uttid.lower(), []).append(item)  # case-insensitive file systems
    return [
        f"lines {', '.join(str(i.line) for i in same)} all name the file {same[0].uttid}.wav "
        f"(uttids {', '.join(sorted({repr(i.raw_uttid) for i in same}))}); give each line its own uttid"
        for same in lines.values()
        if len(same) > 1
    ]


def check_batch(
    jsonl: str, name: str, allowed_roots: list[Path], voice_names: Collection[str], strict: bool = True
) -> tuple[str, list[BatchItem]]:
    """The checks every submitted batch passes: (the job name tidied, the parsed items).

    `strict`: any bad line rejects the whole file. Otherwise bad lines become error items and only
    colliding uttids refuse the file (each line must get its own file)."""
    name = " ".join(name.split())
    if len(name) > MAX_NAME_CHARS:
        raise BatchInputError(f"The job name has {len(name)} characters; the limit is {MAX_NAME_CHARS}.")
    items = parse_jsonl(jsonl, allowed_roots, voice_names)
    collisions = uttid_collisions(items)
    errors = collisions or [item.error for item in items if item.error]
    if errors and (strict or collisions):
        more = f" (and {len(errors) - MAX_REPORTED_ERRORS} more)" if len(errors) > MAX_REPORTED_ERRORS else ""
        raise BatchInputError("; ".join(errors[:MAX_REPORTED_ERRORS]) + more, errors)
    return name, items


def lines_to_jsonl(text: str, prompt_speech: str, prompt_text: str = "") -> str:
    """A GLM-TTS JSONL from one utterance a line, all in one prompt voice (a path or a voice name)."""
    _check_size(text)
    lines = _TEXT_LINE_END.split(text.removesuffix("\n").removesuffix("\r"))
    utterances = [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]
    _check_count(len(utterances))
    records = [
        {"uttid": f"{number:04d}", "prompt_text": prompt_text, "prompt_speech": prompt_speech, "syn_text": line}
        for number, line in utterances
    ]
    return "".join(dumps_line(record) + "\n" for record in records)


def _check_size(text: str) -> None:
    size = len(text.encode("utf-8"))
    if size > MAX_BATCH_BYTES:
        raise BatchTooLarge(
            f"The batch file is larger than the limit: it has {size / 2**20:.1f} MB; the limit is {MAX_BATCH_BYTES / 2**20:g} MB."
        )


def _check_count(count: int) -> None:
    if not count:
        raise BatchInputError("The batch file holds no utterances.")
    if count > MAX_BATCH_ITEMS:
        raise BatchTooLarge(f"The batch file holds {count} utterances; the limit is {MAX_BATCH_ITEMS}.")
