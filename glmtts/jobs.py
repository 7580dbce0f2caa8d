"""Batch jobs as resources: queued, run one at a time in the background, and resumable after a crash.

On disk, per job (outputs/batch/<job>/, the id is the folder name):
    input.jsonl     the submitted GLM-TTS JSONL, as given
    job.json        status, counts, times, options and the uttids in order (replaced atomically)
    <uttid>.wav     each finished item, synced to disk before its manifest line is written
    manifest.jsonl  one line per finished item (ok or error), appended and synced (glmtts.files.dumps_line)
and outputs/batch/<job>.zip once the job is done.

The manifest is the truth about what finished. A job found `queued` or `running` at start was cut
short by a crash: it becomes `interrupted`, and `resume` runs only the items the manifest lacks, so
the final manifest holds every item exactly once. A last line cut short by a crash is ignored when
read and cut off before the next append: that item runs again.

A disk that refuses a write (full, read-only, failing: a StorageError) stops the job at once as
`failed`, with the reason in the job's message and the item's; that item is kept in memory only, so
`resume` (once the disk is fixed) runs it again. Where job.json cannot be written (also at start on a
full or read-only disk) the state is kept in memory and the service goes on.

States: queued -> running -> done | cancelled | failed; queued -> cancelled;
(crash) queued | running -> interrupted; interrupted | cancelled | failed -(resume)-> queued.

With shared state (GLMTTS_REDIS_URL), glmtts.cluster.jobs.RedisBatchJobs takes this class's place
with the same public API, the same checks (check_batch) and the same item code (glmtts.batch).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import re
import shutil
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from glmtts.batch import (
    MANIFEST,
    MAX_BATCH_BYTES,
    MAX_BATCH_ITEMS,
    BatchItem,
    append_record,
    new_job_dir,
    open_manifest,
    parse_jsonl,
    run_item,
    uttid_collisions,
    zip_job,
)
from glmtts.files import StorageError, atomic_output, split_lines, write_json
from glmtts.options import check_options, options_to_dict
from glmtts.pipeline import Pipeline
from glmtts.scheduler import QueueFull, QueueTimeout
from glmtts.types import Cancelled, CancelToken, SynthesisError, SynthesisOptions
from glmtts.voices import VoiceLibrary

_LOGGER = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, CANCELLED, INTERRUPTED, FAILED = "queued", "running", "done", "cancelled", "interrupted", "failed"
UNFINISHED = (QUEUED, RUNNING)
RESUMABLE = (INTERRUPTED, CANCELLED, FAILED)
INPUT_FILE = "input.jsonl"
JOB_FILE = "job.json"
MAX_UNFINISHED_JOBS = 16
MAX_REPORTED_ERRORS = 5
MAX_NAME_CHARS = 80
ITEM_FIELDS = ("uttid", "line", "status", "message", "duration_s", "path", "replica")  # an item as progress shows it
BUSY_RETRY_S = 2.0  # wait before asking the device again when the queue was full
FIX_DISK = "; free space or fix the disk, then resume the job"  # after a StorageError's message
_JOB_NAME = re.compile(r"[^A-Za-z0-9_-]+")


class JobNotFound(LookupError):
    """No job has this id."""

    def __init__(self, job_id: str):
        super().__init__(f"No batch job {job_id[:80]!r}.")


class JobStateError(RuntimeError):
    """The operation does not apply to the job in its current state."""


class JobLimit(RuntimeError):
    """Too many jobs are waiting or running."""


class BatchInputError(SynthesisError):
    """The submitted batch file is unusable; `errors` lists the bad lines."""

    def __init__(self, message: str, errors: list[str] | None = None):
        super().__init__(message)
        self.errors = errors or []


class BatchTooLarge(BatchInputError):
    """The batch file exceeds MAX_BATCH_BYTES or MAX_BATCH_ITEMS."""


@dataclass
class JobState:
    """What job.json holds."""

    id: str
    name: str
    status: str
    uttids: list[str]
    options: dict[str, object]
    created: str
    started: str | None = None
    finished: str | None = None
    message: str = ""


@dataclass
class _Job:
    state: JobState
    folder: Path
    records: dict[str, dict] = field(default_factory=dict)  # uttid -> manifest record
    current: str | None = None  # uttid being synthesized
    cancel: threading.Event = field(default_factory=threading.Event)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_batch(
    jsonl: str, name: str, allowed_roots: list[Path], voice_names: list[str], strict: bool = True
) -> tuple[str, list[BatchItem]]:
    """The checks every submitted batch passes: (the job name tidied, the parsed items).

    `strict`: any bad line rejects the whole file. Otherwise bad lines become error items and only
    colliding uttids refuse the file (each line must get its own file)."""
    name = " ".join(name.split())
    if len(name) > MAX_NAME_CHARS:
        raise BatchInputError(f"The job name has {len(name)} characters; the limit is {MAX_NAME_CHARS}.")
    size = len(jsonl.encode("utf-8"))
    if size > MAX_BATCH_BYTES:
        raise BatchTooLarge(f"The batch file has {size / 2**20:.1f} MB; the limit is {MAX_BATCH_BYTES / 2**20:g} MB.")
    count = sum(1 for line in split_lines(jsonl) if line.strip())
    if count > MAX_BATCH_ITEMS:
        raise BatchTooLarge(f"The batch file holds {count} utterances; the limit is {MAX_BATCH_ITEMS}.")
    items = parse_jsonl(jsonl, allowed_roots, voice_names)
    collisions = uttid_collisions(items)
    errors = collisions or [item.error for item in items if item.error]
    if errors and (strict or collisions):
        more = f" (and {len(errors) - MAX_REPORTED_ERRORS} more)" if len(errors) > MAX_REPORTED_ERRORS else ""
        raise BatchInputError("; ".join(errors[:MAX_REPORTED_ERRORS]) + more, errors)
    return name, items


def job_name_stem(name: str) -> str:
    """The part of a job's id (its folder name) that comes from the job's name."""
    return _JOB_NAME.sub("_", name).strip("_")[:40] or "job"


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


class BatchJobs:
    """Owns the batch jobs under `batch_root` and the one worker thread that runs them in order.

    Items run at BATCH priority through the pipeline, so interactive requests waiting for the
    device go first between segments. Jobs may be submitted at any time; the worker runs them
    once `start()` was called (after warm-up). `auto_resume` resumes interrupted jobs at start (off
    by default: a job that crashed the service would otherwise crash it again at every restart).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        voices: VoiceLibrary,
        batch_root: Path,
        allowed_roots: list[Path],
        auto_resume: bool = False,
        replica: str = "",
    ):
        self.pipeline = pipeline
        self.replica = replica  # recorded in each manifest line when set
        self.voices = voices
        self.root = batch_root
        self.allowed_roots = allowed_roots
        self.auto_resume = auto_resume
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.RLock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._started = False
        self._stopping = threading.Event()
        self._recovered = False

    # ----------------------------------------------------------------- start and stop
    def recover(self) -> list[str]:
        """Load every job on disk (once per process); unfinished ones become interrupted.

        Returns the ids of the interrupted jobs; with `auto_resume` they are queued again (and run
        once the worker starts).
        """
        with self._lock:
            if self._recovered:
                return []
            self._recovered = True
            interrupted = []
            folders = sorted(self.root.iterdir()) if self.root.is_dir() else []
            for folder in folders:
                if not (folder / JOB_FILE).is_file():
                    continue  # a folder of the UI's batch tab, or not a job at all
                try:
                    job = self._load(folder)
                except (OSError, ValueError, TypeError) as error:  # a damaged job must not stop the service
                    _LOGGER.warning("Batch job %s skipped: %s: %s", folder.name, type(error).__name__, error)
                    continue
                self._jobs[job.state.id] = job
                if job.state.status in UNFINISHED:
                    done = len(job.records)
                    job.state.status = INTERRUPTED
                    job.state.message = f"interrupted by a restart after {done} of {len(job.state.uttids)} items"
                    self._save(job)
                    interrupted.append(job.state.id)
                    _LOGGER.warning("Batch job %s %s", job.state.id, job.state.message)
        if self.auto_resume:
            for job_id in interrupted:
                self.resume(job_id)
        return interrupted

    def _load(self, folder: Path) -> _Job:
        raw = json.loads((folder / JOB_FILE).read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(JobState)}
        state = JobState(**{name: value for name, value in raw.items() if name in known})
        if state.id != folder.name:
            raise ValueError(f"job.json names {state.id!r}")
        return _Job(state, folder, read_manifest(folder))

    def start(self) -> None:
        """Start running queued jobs (the service calls this once it is warm)."""
        with self._lock:
            self._started = True
            self._ensure_worker()

    def _ensure_worker(self) -> None:
        if self._started and (self._worker is None or not self._worker.is_alive()):
            self._worker = threading.Thread(target=self._work, name="batch-jobs", daemon=True)
            self._worker.start()

    def shutdown(self, timeout_s: float = 60.0) -> None:
        """Stop the worker after its current item; a running job stays `running` on disk (as after a crash)."""
        self._stopping.set()
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout_s)

    # ----------------------------------------------------------------- operations
    def submit(self, jsonl: str, options: SynthesisOptions | None = None, name: str = "", strict: bool = True) -> str:
        """Check a GLM-TTS JSONL, store it and queue the job. `options` come from check_options.

        `strict`: any bad line rejects the whole file. Otherwise bad lines become error items in the
        manifest and the rest run (the UI's way: the table shows what was wrong with each line).
        Lines whose uttids collide are refused either way: each line must get its own file.
        """
        options = options or SynthesisOptions()
        name, items = check_batch(jsonl, name, self.allowed_roots, self.voices.known_names(), strict)
        with self._lock:
            if sum(job.state.status in UNFINISHED for job in self._jobs.values()) >= MAX_UNFINISHED_JOBS:
                raise JobLimit(f"{MAX_UNFINISHED_JOBS} batch jobs are waiting or running; try again later.")
            folder = new_job_dir(self.root, job_name_stem(name))
            state = JobState(
                folder.name, name or folder.name, QUEUED, [item.uttid for item in items], options_to_dict(options), _now()
            )
            job = _Job(state, folder)
            try:
                with atomic_output(folder / INPUT_FILE, "w") as handle:
                    handle.write(jsonl)
                self._save(job, required=True)
            except StorageError:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            self._jobs[state.id] = job
            self._ensure_worker()
        self._queue.put(state.id)
        _LOGGER.info("Batch job %s queued: %d items", state.id, len(items))
        return state.id

    def cancel(self, job_id: str) -> dict[str, object]:
        """A queued job is cancelled at once; a running one stops its current item within a segment (unrecorded)."""
        with self._lock:
            job = self._get(job_id)
            if job.state.status == QUEUED:
                job.state.status, job.state.finished = CANCELLED, _now()
                self._save(job)
            elif job.state.status == RUNNING:
                job.cancel.set()
            else:
                raise JobStateError(f"Job {job_id} is {job.state.status}; only queued or running jobs can be cancelled.")
            return self._progress(job)

    def resume(self, job_id: str) -> dict[str, object]:
        """Queue an interrupted, cancelled or failed job again; it runs only the unfinished items."""
        with self._lock:
            job = self._get(job_id)
            if job.state.status not in RESUMABLE:
                raise JobStateError(f"Job {job_id} is {job.state.status}; only {', '.join(RESUMABLE)} jobs can be resumed.")
            job.state.status, job.state.finished, job.state.message = QUEUED, None, ""
            job.records = {uttid: record for uttid, record in job.records.items() if not record.get("transient")}
            job.cancel.clear()
            self._save(job)
            self._ensure_worker()
        self._queue.put(job_id)
        _LOGGER.info(
            "Batch job %s resumed: %d of %d items left", job_id, len(job.state.uttids) - len(job.records), len(job.state.uttids)
        )
        return self.progress(job_id)

    def progress(self, job_id: str) -> dict[str, object]:
        """Status, counts and every item (ok, error, running or pending)."""
        with self._lock:
            return self._progress(self._get(job_id))

    def pending_items(self) -> int:
        """Items of queued and running jobs not finished yet (the queue depth an autoscaler reads)."""
        with self._lock:
            return sum(len(job.state.uttids) - len(job.records) for job in self._jobs.values() if job.state.status in UNFINISHED)

    def list(self) -> list[dict[str, object]]:
        """Every job, newest first, without the per-item list."""
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda job: (job.state.created, job.state.id), reverse=True)
            return [self._summary(job) for job in jobs]

    def archive(self, job_id: str) -> Path:
        """The zip of a finished job."""
        with self._lock:
            job = self._get(job_id)
            archive = job.folder.parent / f"{job.folder.name}.zip"
            if job.state.status != DONE or not archive.is_file():
                raise JobStateError(f"Job {job_id} is {job.state.status}; the zip is ready when it is done.")
            return archive

    def _get(self, job_id: str) -> _Job:
        if job_id not in self._jobs:
            raise JobNotFound(job_id)
        return self._jobs[job_id]

    def _summary(self, job: _Job) -> dict[str, object]:
        state = job.state
        ok = sum(record.get("status") == "ok" for record in job.records.values())
        return {
            "id": state.id,
            "name": state.name,
            "status": state.status,
            "total": len(state.uttids),
            "done": len(job.records),
            "ok": ok,
            "errors": len(job.records) - ok,
            "current": job.current,
            "cancelling": job.cancel.is_set() and state.status == RUNNING,
            "created": state.created,
            "started": state.started,
            "finished": state.finished,
            "message": state.message,
            "options": state.options,
        }

    def _progress(self, job: _Job) -> dict[str, object]:
        items = []
        for uttid in job.state.uttids:
            record = job.records.get(uttid)
            if record is None:
                items.append({"uttid": uttid, "status": "running" if uttid == job.current else "pending"})
            else:
                items.append({key: record.get(key) for key in ITEM_FIELDS})
        return {**self._summary(job), "items": items}

    def _save(self, job: _Job, required: bool = False) -> None:
        """Write job.json; where the disk refuses, the state is kept in memory (unless `required`)."""
        summary = self._summary(job)
        state = {**dataclasses.asdict(job.state), **{k: summary[k] for k in ("total", "done", "ok", "errors")}}
        try:
            write_json(job.folder / JOB_FILE, state)
        except StorageError as error:
            if required:
                raise
            _LOGGER.warning("Batch job %s: state kept in memory only (%s)", job.state.id, error)

    # ----------------------------------------------------------------- the worker
    def _work(self) -> None:
        while not self._stopping.is_set():
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None or job.state.status != QUEUED:
                    continue  # cancelled while it waited
                job.state.status = RUNNING
                job.state.started = job.state.started or _now()
                self._save(job)
            try:
                self._run(job)
            except Exception as error:  # the disk or the input file failed, not an item
                _LOGGER.exception("Batch job %s failed", job_id)
                with self._lock:
                    job.current = None
                    job.state.status, job.state.finished = FAILED, _now()
                    named = isinstance(error, StorageError)  # its message says what failed and why
                    job.state.message = f"{error}{FIX_DISK}" if named else f"{type(error).__name__}: {error}"
                    self._save(job)

    def _run(self, job: _Job) -> None:
        jsonl = (job.folder / INPUT_FILE).read_text(encoding="utf-8")
        items = parse_jsonl(jsonl, self.allowed_roots, self.voices.known_names())
        options = check_options(self.pipeline.engine, job.state.options)  # stored by an older version, maybe
        with open_manifest(job.folder) as log:
            for item in items:
                if item.uttid in job.records:
                    continue  # finished before a crash or a cancel
                if job.cancel.is_set() or self._stopping.is_set():
                    break
                with self._lock:
                    job.current = item.uttid
                record = self._run_item(job, item, options)
                if record is None:
                    break
                if self.replica:
                    record["replica"] = self.replica
                try:
                    append_record(log, record)
                except StorageError as error:
                    self._stop_on_storage_error(job, item, error)
                with self._lock:
                    job.records[item.uttid] = record
                    job.current = None
                    self._save(job)
        with self._lock:
            job.current = None
            if self._stopping.is_set() and not job.cancel.is_set():
                return  # stays `running` on disk: the next start marks it interrupted
            if job.cancel.is_set():
                job.state.status = CANCELLED
            else:
                zip_job(job.folder)
                job.state.status = DONE
            job.state.finished = _now()
            self._save(job)
        _LOGGER.info("Batch job %s %s: %d of %d items", job.state.id, job.state.status, len(job.records), len(job.state.uttids))

    def _stop_on_storage_error(self, job: _Job, item: BatchItem, error: StorageError) -> None:
        """Record the item as failed by the disk (in memory: resume runs it again) and stop the job."""
        record = {"uttid": item.uttid, "line": item.line, "status": "error", "message": f"{error}{FIX_DISK}", "transient": True}
        with self._lock:
            job.records[item.uttid] = record
        raise StorageError(error.errno, f"stopped at item {item.uttid}: {error}") from error

    def _run_item(self, job: _Job, item: BatchItem, options: SynthesisOptions) -> dict | None:
        """One item; waits out a busy device. None when stopped or cancelled meanwhile; a refused write stops the job."""
        while True:
            try:
                return run_item(
                    self.pipeline, item, job.folder, options, CancelToken(self.pipeline.request_timeout_s, job.cancel)
                )
            except Cancelled:  # the job was cancelled: the item stopped unrecorded, `resume` runs it again
                return None
            except StorageError as error:
                self._stop_on_storage_error(job, item, error)
            except (QueueFull, QueueTimeout) as error:
                _LOGGER.info("Batch job %s waits for the device: %s", job.state.id, error)
                if job.cancel.wait(BUSY_RETRY_S) or self._stopping.is_set():
                    return None
