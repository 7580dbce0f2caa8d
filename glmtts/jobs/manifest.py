"""A job's folder on disk: its name, the manifest (one synced line per finished item) and the zip.

Both stores write results here (every replica mounts the same outputs folder). The manifest is the
truth about what finished on local disk: a last line cut short by a crash is ignored when read and
cut off before the next append, so that item runs again. A write the disk refuses raises
StorageError naming why.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from glmtts.files import atomic_output, dumps_line, split_lines, storage_error, storage_writes
from glmtts.jobs.batchfile import MAX_LINE_BYTES
from glmtts.jobs.interface import JobStateError, job_name_stem
from glmtts.jobs.runner import ITEM_FILE_SUFFIXES

_LOGGER = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
MAX_SAME_SECOND_JOBS = 999  # jobs of one name started within one second


def new_job_dirs(batch_root: Path, name: str) -> Iterator[Path]:
    """Fresh job folders `<time>_<name>[_<n>]`, each made here (mkdir is atomic, on a shared disk too):
    the caller takes the first it can register. The folder's name is the job's id."""
    stamp, stem = time.strftime("%Y%m%d-%H%M%S"), job_name_stem(name)
    for suffix in range(1, MAX_SAME_SECOND_JOBS + 1):
        folder = batch_root / (f"{stamp}_{stem}" + (f"_{suffix}" if suffix > 1 else ""))
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError as error:
            raise storage_error(error, folder) from error
        yield folder
    raise JobStateError("No free job id; try again in a second.")


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


def read_manifest(folder: Path) -> dict[str, dict]:
    """Finished items by uttid (the first line of each counts). A last line cut short by a crash is
    ignored (open_manifest cuts it off before the next append); nothing is written here."""
    path = folder / MANIFEST
    if not path.exists():
        return {}
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        _LOGGER.warning("Job %s: ignoring a partial manifest line (%d bytes)", folder.name, len(data) - len(complete))
    records: dict[str, dict] = {}
    for line in split_lines(complete):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            _LOGGER.warning("Job %s: unreadable manifest line skipped", folder.name)
            continue
        if isinstance(record, dict) and isinstance(record.get("uttid"), str):
            records.setdefault(record["uttid"], record)
    return records


def write_manifest(folder: Path, records: Iterable[dict]) -> None:
    """The whole manifest at once, replaced atomically (the Redis store writes it from the shared state)."""
    with atomic_output(folder / MANIFEST, "w") as manifest:
        for record in records:
            manifest.write(dumps_line(record) + "\n")


def zip_job(job_dir: Path) -> Path:
    """Zip the job's results (the items' files and the manifest, not its input or state) into
    `<job>.zip` beside it, atomically."""
    archive = job_dir.parent / f"{job_dir.name}.zip"
    with atomic_output(archive) as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(job_dir.iterdir()):
            if path.suffix in ITEM_FILE_SUFFIXES or path.name == MANIFEST:
                bundle.write(path, f"{job_dir.name}/{path.name}")
    return archive
