"""Batch synthesis: GLM-TTS JSONL (or one utterance a line) in, a folder of wavs, a manifest and a zip out.

A line that cannot be parsed or synthesized is recorded with its error and the job goes on; every
finished item is on disk with its manifest line before the next one starts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from glmtts.audio import write_wav
from glmtts.pipeline import Pipeline, SynthesisRequest
from glmtts.scheduler import BATCH
from glmtts.settings import PROJECT_ROOT
from glmtts.types import SynthesisError, SynthesisOptions

_LOGGER = logging.getLogger(__name__)

BATCH_KEYS = ("uttid", "prompt_text", "prompt_speech", "syn_text")
MAX_BATCH_ITEMS = 1000
MAX_BATCH_BYTES = 2 * 1024 * 1024
MANIFEST = "manifest.jsonl"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.\-\u4e00-\u9fff]+")


@dataclass
class BatchItem:
    """One utterance of a batch; `error` is set when the line itself is unusable."""

    line: int
    uttid: str
    syn_text: str = ""
    prompt_text: str = ""
    prompt_speech: Path | str | None = None  # a checked path, or a voice name, or None: the page's voice
    error: str = ""


@dataclass
class ItemOutcome:
    uttid: str
    status: str  # "ok" or "error"
    message: str = ""
    duration_s: float = 0.0
    path: str = ""


def safe_name(name: str, fallback: str) -> str:
    cleaned = _SAFE_NAME.sub("_", name).strip("._")[:80]
    return cleaned or fallback


def confine_path(raw: str, allowed_roots: list[Path]) -> Path:
    """Resolve a prompt path (relative to the project root) and insist it lies in an allowed folder."""
    path = Path(raw).expanduser()
    resolved = (path if path.is_absolute() else PROJECT_ROOT / path).resolve()
    for root in allowed_roots:
        if resolved.is_relative_to(root.resolve()):
            if not resolved.is_file():
                raise SynthesisError(f"prompt_speech {raw!r} does not exist.")
            return resolved
    names = ", ".join(str(r.relative_to(PROJECT_ROOT)) if r.is_relative_to(PROJECT_ROOT) else str(r) for r in allowed_roots)
    raise SynthesisError(f"prompt_speech {raw!r} is outside the allowed folders ({names}).")


def parse_jsonl(text: str, allowed_roots: list[Path]) -> list[BatchItem]:
    """Parse a GLM-TTS batch file; bad lines become items carrying their error."""
    _check_size(text)
    items: list[BatchItem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fallback = f"line{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            items.append(BatchItem(number, fallback, error=f"line {number}: not valid JSON ({error.msg})"))
            continue
        if not isinstance(record, dict):
            items.append(BatchItem(number, fallback, error=f"line {number}: expected a JSON object"))
            continue
        missing = [key for key in BATCH_KEYS if key not in record]
        wrong = [key for key in BATCH_KEYS if key in record and not isinstance(record[key], (str, int))]
        uttid = safe_name(str(record.get("uttid", "")), fallback)
        if missing or wrong:
            problem = f"missing {', '.join(missing)}" if missing else f"{', '.join(wrong)} must be text"
            items.append(BatchItem(number, uttid, error=f"line {number}: {problem}"))
            continue
        item = BatchItem(number, uttid, str(record["syn_text"]), str(record["prompt_text"]))
        try:
            item.prompt_speech = confine_path(str(record["prompt_speech"]), allowed_roots)
        except SynthesisError as error:
            item.error = f"line {number}: {error}"
        items.append(item)
    return _dedupe(_check_count(items))


def parse_lines(text: str, voice: Path | str | None, prompt_text: str = "") -> list[BatchItem]:
    """One utterance a line, all in one prompt voice."""
    _check_size(text)
    items = [
        BatchItem(number, f"{number:04d}", line.strip(), prompt_text, voice)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    return _check_count(items)


def _check_size(text: str) -> None:
    if len(text.encode("utf-8")) > MAX_BATCH_BYTES:
        raise SynthesisError(f"The batch file is larger than {MAX_BATCH_BYTES // 1024 // 1024} MB.")


def _check_count(items: list[BatchItem]) -> list[BatchItem]:
    if not items:
        raise SynthesisError("The batch file holds no utterances.")
    if len(items) > MAX_BATCH_ITEMS:
        raise SynthesisError(f"The batch file holds {len(items)} utterances; the limit is {MAX_BATCH_ITEMS}.")
    return items


def _dedupe(items: list[BatchItem]) -> list[BatchItem]:
    seen: dict[str, int] = {}
    for item in items:
        count = seen.get(item.uttid, 0)
        seen[item.uttid] = count + 1
        if count:
            item.uttid = f"{item.uttid}_{count}"
    return items


def new_job_dir(batch_root: Path, name: str = "") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    job = batch_root / f"{stamp}_{safe_name(name, 'job')}"
    suffix = 1
    while job.exists():
        suffix += 1
        job = batch_root / f"{stamp}_{safe_name(name, 'job')}_{suffix}"
    job.mkdir(parents=True)
    return job


def run_batch(
    pipeline: Pipeline,
    items: list[BatchItem],
    job_dir: Path,
    options: SynthesisOptions,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[list[ItemOutcome], Path]:
    """Synthesize every item into `job_dir`, append its manifest line, then zip the folder."""
    outcomes: list[ItemOutcome] = []
    with (job_dir / MANIFEST).open("a", encoding="utf-8") as log:
        for index, item in enumerate(items):
            if progress:
                progress(index / len(items), f"{index + 1}/{len(items)}: {item.uttid}")
            outcome, record = run_item(pipeline, item, job_dir, options)
            outcomes.append(outcome)
            append_record(log, record)
    if progress:
        progress(1.0, "zipping")
    return outcomes, zip_job(job_dir)


def run_item(pipeline: Pipeline, item: BatchItem, job_dir: Path, options: SynthesisOptions) -> tuple[ItemOutcome, dict]:
    """Synthesize one item into `job_dir/<uttid>.wav` (synced to disk); returns its outcome and manifest record."""
    record: dict[str, object] = {"uttid": item.uttid, "line": item.line, "text": item.syn_text}
    if item.error:
        outcome = ItemOutcome(item.uttid, "error", item.error)
    else:
        try:
            result = pipeline.synthesize(SynthesisRequest(item.syn_text, item.prompt_speech, item.prompt_text, options, BATCH))
            path = write_wav(job_dir / f"{item.uttid}.wav", result.audio, result.sample_rate)
            _fsync_file(path)
            outcome = ItemOutcome(item.uttid, "ok", "", round(result.duration_s, 2), path.name)
            record.update(
                normalized_text=result.normalized_text,
                phonemes=result.phoneme_text,
                rtf=round(result.rtf, 3),
                sample_rate=result.sample_rate,
            )
        except SynthesisError as error:
            outcome = ItemOutcome(item.uttid, "error", str(error))
        except Exception as error:  # one broken item must not stop the job
            _LOGGER.exception("Batch item %s failed", item.uttid)
            outcome = ItemOutcome(item.uttid, "error", f"internal error: {type(error).__name__}: {error}")
    record.update({key: value for key, value in asdict(outcome).items() if key != "uttid"})
    return outcome, record


def append_record(log: TextIO, record: dict) -> None:
    """Append one manifest line and force it to disk, so a crash never loses a finished item."""
    log.write(json.dumps(record, ensure_ascii=False) + "\n")
    log.flush()
    os.fsync(log.fileno())


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def zip_job(job_dir: Path) -> Path:
    """Zip the job folder (hidden temporary files left out) into `<job>.zip` beside it, atomically."""
    archive = job_dir.parent / f"{job_dir.name}.zip"
    partial = archive.with_name(f".{archive.name}.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(job_dir.iterdir()):
            if not path.name.startswith("."):
                bundle.write(path, f"{job_dir.name}/{path.name}")
    os.replace(partial, archive)
    return archive
