"""Batch synthesis: GLM-TTS JSONL (or one utterance a line) in, a folder of wavs, a manifest and a zip out.

A line that cannot be parsed or synthesized is recorded with its error and the job goes on; every
finished item is on disk with its manifest line before the next one starts. Two lines whose uttids
name the same file (also after they are made safe as file names) refuse the whole file: each
accepted line gets its own wav and exactly one manifest line.

Lines: a JSONL file's lines end at "\n" (or "\r\n") only; a text file of one utterance a line also
ends lines at a lone "\r" (an old Mac file), but never at U+2028, U+0085 and the like, which may sit
inside an utterance. Records are written with glmtts.files.dumps_line, read with split_lines.

A write the disk refuses (full, read-only, failing) is a StorageError naming why: raised, not
recorded, since the item did not fail by itself and runs again once the disk is fixed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import unicodedata
import zipfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from glmtts.audio import write_wav
from glmtts.files import StorageError, atomic_output, dumps_line, split_lines, storage_writes
from glmtts.pipeline import Pipeline, SynthesisRequest
from glmtts.scheduler import BATCH, QueueFull, QueueTimeout
from glmtts.settings import PROJECT_ROOT
from glmtts.types import Cancelled, CancelToken, SynthesisError, SynthesisOptions, TimeLimitExceeded

_LOGGER = logging.getLogger(__name__)

BATCH_KEYS = ("uttid", "prompt_text", "prompt_speech", "syn_text")
MAX_BATCH_ITEMS = 1000
MAX_BATCH_BYTES = 2 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024
MAX_PATH_CHARS = 1024
MANIFEST = "manifest.jsonl"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.\-\u4e00-\u9fff]+")
_TEXT_LINE_END = re.compile(r"\r\n|\r|\n")  # a text file's line ends (see the module docstring)


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
    """
    _check_size(text)
    items: list[BatchItem] = []
    for number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        fallback = f"line{number}"
        if len(line.encode("utf-8")) > MAX_LINE_BYTES:
            items.append(BatchItem(number, fallback, error=f"line {number}: longer than {MAX_LINE_BYTES // 1024} KB"))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            items.append(BatchItem(number, fallback, error=f"line {number}: not valid JSON ({error.msg})"))
            continue
        except RecursionError:
            items.append(BatchItem(number, fallback, error=f"line {number}: nested too deeply (a line is one flat object)"))
            continue
        if not isinstance(record, dict):
            items.append(BatchItem(number, fallback, error=f"line {number}: expected a JSON object"))
            continue
        missing = [key for key in BATCH_KEYS if key not in record]
        wrong = [key for key in BATCH_KEYS if key in record and not isinstance(record[key], (str, int))]
        raw_uttid = str(record.get("uttid", ""))
        uttid = safe_name(raw_uttid, fallback)
        if missing or wrong:
            problem = f"missing {', '.join(missing)}" if missing else f"{', '.join(wrong)} must be text"
            items.append(BatchItem(number, uttid, error=f"line {number}: {problem}", raw_uttid=raw_uttid))
            continue
        item = BatchItem(number, uttid, str(record["syn_text"]), str(record["prompt_text"]), raw_uttid=raw_uttid)
        prompt = str(record["prompt_speech"])
        try:
            item.prompt_speech = prompt if prompt in voice_names else confine_path(prompt, allowed_roots)
        except SynthesisError as error:
            if "/" in prompt or "\\" in prompt or len(prompt) > MAX_PATH_CHARS:
                item.error = f"line {number}: {error}"
            else:
                item.error = f"line {number}: there is no voice {prompt!r} (and no such file in the allowed folders)."
        items.append(item)
    _check_count(len(items))
    return items


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
    if len(text.encode("utf-8")) > MAX_BATCH_BYTES:
        raise SynthesisError(f"The batch file is larger than {MAX_BATCH_BYTES // 1024 // 1024} MB.")


def _check_count(count: int) -> None:
    if not count:
        raise SynthesisError("The batch file holds no utterances.")
    if count > MAX_BATCH_ITEMS:
        raise SynthesisError(f"The batch file holds {count} utterances; the limit is {MAX_BATCH_ITEMS}.")


def new_job_dir(batch_root: Path, name: str = "") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    job = batch_root / f"{stamp}_{safe_name(name, 'job')}"
    suffix = 1
    while job.exists():
        suffix += 1
        job = batch_root / f"{stamp}_{safe_name(name, 'job')}_{suffix}"
    with storage_writes(job):
        job.mkdir(parents=True)
    return job


def run_item(
    pipeline: Pipeline, item: BatchItem, job_dir: Path, options: SynthesisOptions, cancel: CancelToken | None = None
) -> dict[str, object]:
    """Synthesize one item into `job_dir/<uttid>.wav` (synced to disk); returns its manifest record.

    A busy device (QueueFull, QueueTimeout) is raised, for the caller to wait and retry the item; a
    disk that refuses the wav raises StorageError, for the caller to stop the job; a `cancel` token
    that was set (the job was cancelled) raises Cancelled within a segment and records nothing.
    """
    record: dict[str, object] = {"uttid": item.uttid, "line": item.line, "text": item.syn_text}
    if item.error:
        return {**record, "status": "error", "message": item.error}
    try:
        result = pipeline.synthesize(
            SynthesisRequest(item.syn_text, item.prompt_speech, item.prompt_text, options, BATCH), cancel
        )
        path = write_wav(job_dir / f"{item.uttid}.wav", result.audio, result.sample_rate)
    except (SynthesisError, TimeLimitExceeded) as error:  # the item's own failure (its time limit included)
        return {**record, "status": "error", "message": str(error)}
    except (QueueFull, QueueTimeout, StorageError, Cancelled):  # the caller's to handle: see above
        raise
    except Exception as error:  # one broken item must not stop the job
        _LOGGER.exception("Batch item %s failed", item.uttid)
        return {**record, "status": "error", "message": f"internal error: {type(error).__name__}: {error}"}
    return {
        **record,
        "normalized_text": result.normalized_text,
        "phonemes": result.phoneme_text,
        "rtf": round(result.rtf, 3),
        "sample_rate": result.sample_rate,
        "status": "ok",
        "message": "; ".join(result.notes),
        "duration_s": round(result.duration_s, 2),
        "path": path.name,
    }


def append_record(log: TextIO, record: dict) -> None:
    """Append one manifest line and force it to disk, so a crash never loses a finished item."""
    with storage_writes(MANIFEST):
        log.write(dumps_line(record) + "\n")
        log.flush()
        os.fsync(log.fileno())


def open_manifest(job_dir: Path) -> TextIO:
    """The job's manifest opened for appending, after cutting off a last line a crash left unfinished
    (the item runs again; appending after it would spoil the next line too)."""
    path = job_dir / MANIFEST
    with storage_writes(path):
        with path.open("a+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size:
                handle.seek(max(0, size - MAX_LINE_BYTES * 8))
                tail = handle.read()
                cut = size - len(tail) + tail.rfind(b"\n") + 1
                if cut != size:
                    _LOGGER.warning("Job %s: dropping a partial manifest line (%d bytes)", job_dir.name, size - cut)
                    handle.truncate(cut)
                    os.fsync(handle.fileno())
        return path.open("a", encoding="utf-8")


def zip_job(job_dir: Path) -> Path:
    """Zip the job's results (wavs and manifest, not its input) into `<job>.zip` beside it, atomically."""
    archive = job_dir.parent / f"{job_dir.name}.zip"
    with atomic_output(archive) as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(job_dir.iterdir()):
            if path.suffix == ".wav" or path.name == MANIFEST:
                bundle.write(path, f"{job_dir.name}/{path.name}")
    return archive
