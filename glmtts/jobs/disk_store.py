"""Batch jobs on local disk: queued, run one at a time in the background, resumable after a crash.

Per job (outputs/batch/<job>/, the id is the folder name):
    input.jsonl     the submitted GLM-TTS JSONL, as given (for people reading the folder)
    items.jsonl     the items as parsed at submit, one record a line: what the worker runs
    job.json        status, counts, times, options and the uttids in order (replaced atomically)
    <uttid>.wav     each finished item's files, synced to disk before its manifest line is written
    manifest.jsonl  one line per finished item (ok or error), appended and synced
and outputs/batch/<job>.zip once the job is done.

The manifest is the truth about what finished. A job found `queued` or `running` at start was cut
short by a crash: it becomes `interrupted`, and `resume` runs only the items the manifest lacks, so
the final manifest holds every item exactly once.

A disk that refuses a write (a StorageError) stops the job at once as `failed`, with the reason in
the job's message and the item's; that item is kept in memory only, so `resume` (once the disk is
fixed) runs it again. Where job.json cannot be written (also at start on a full or read-only disk)
the state is kept in memory and the service goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from glmtts.files import StorageError, atomic_output, dumps_line, split_lines, write_json
from glmtts.jobs.batchfile import BatchItem, check_batch, parse_jsonl
from glmtts.jobs.interface import (
    CANCELLED,
    DONE,
    FAILED,
    INTERRUPTED,
    MAX_UNFINISHED_JOBS,
    QUEUED,
    RESUMABLE,
    RUNNING,
    UNFINISHED,
    JobLimit,
    JobNotFound,
    JobStateError,
    job_progress,
    job_summary,
    now,
    options_from_stored,
)
from glmtts.jobs.manifest import append_record, new_job_dirs, open_manifest, read_manifest, zip_job
from glmtts.jobs.runner import FIX_DISK, ItemRunner, stop_message, storage_failure
from glmtts.options import options_to_dict
from glmtts.pipeline import Pipeline
from glmtts.types import SynthesisOptions
from glmtts.voices import VoiceLibrary

_LOGGER = logging.getLogger(__name__)

INPUT_FILE = "input.jsonl"
ITEMS_FILE = "items.jsonl"
JOB_FILE = "job.json"


@dataclass
class JobState:
    """What job.json holds (options as options_to_dict writes them)."""

    id: str
    name: str
    status: str
    uttids: list[str]
    options: SynthesisOptions
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


class DiskJobQueue:
    """Owns the batch jobs under `batch_root` and the one worker thread that runs them in order.

    Items run at BATCH priority through the pipeline (glmtts.jobs.runner), so interactive requests
    waiting for the device go first between segments. Jobs may be submitted at any time; the worker
    runs them once `start()` was called (after warm-up). `auto_resume` resumes interrupted jobs at
    start (off by default: a job that crashed the service would otherwise crash it again at every restart).
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
        state.options = options_from_stored(raw.get("options") or {})
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
        """Check a GLM-TTS JSONL, store it with its parsed items and queue the job. `options` come
        from check_options.

        `strict`: any bad line rejects the whole file. Otherwise bad lines become error items in the
        manifest and the rest run (the UI's way: the table shows what was wrong with each line).
        Lines whose uttids collide are refused either way: each line must get its own file.
        """
        name, items = check_batch(jsonl, name, self.allowed_roots, self.voices.known_names(), strict)
        with self._lock:
            if sum(job.state.status in UNFINISHED for job in self._jobs.values()) >= MAX_UNFINISHED_JOBS:
                raise JobLimit
            folder = next(new_job_dirs(self.root, name))
            uttids = [item.uttid for item in items]
            state = JobState(folder.name, name or folder.name, QUEUED, uttids, options or SynthesisOptions(), now())
            job = _Job(state, folder)
            try:
                with atomic_output(folder / INPUT_FILE, "w") as handle:
                    handle.write(jsonl)
                with atomic_output(folder / ITEMS_FILE, "w") as handle:
                    handle.writelines(dumps_line(item.to_record()) + "\n" for item in items)
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
                job.state.status, job.state.finished = CANCELLED, now()
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

    def _running(self, job: _Job) -> dict[str, str]:
        return {job.current: self.replica} if job.current else {}

    def _summary(self, job: _Job) -> dict[str, object]:
        state = job.state
        fields = {**vars(state), "cancelling": job.cancel.is_set()}
        ok = sum(record.get("status") == "ok" for record in job.records.values())
        return job_summary(fields, options_to_dict(state.options), len(state.uttids), len(job.records), ok, self._running(job))

    def _progress(self, job: _Job) -> dict[str, object]:
        return job_progress(self._summary(job), job.state.uttids, job.records, self._running(job))

    def _save(self, job: _Job, required: bool = False) -> None:
        """Write job.json; where the disk refuses, the state is kept in memory (unless `required`)."""
        summary = self._summary(job)
        state = {**dataclasses.asdict(job.state), "options": summary["options"]}
        try:
            write_json(job.folder / JOB_FILE, {**state, **{k: summary[k] for k in ("total", "done", "ok", "errors")}})
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
                job.state.started = job.state.started or now()
                self._save(job)
            try:
                self._run(job)
            except Exception as error:  # the disk or the stored items failed, not an item
                _LOGGER.exception("Batch job %s failed", job_id)
                named = isinstance(error, StorageError)  # its message says what failed and why
                self._finish(job, FAILED, f"{error}{FIX_DISK}" if named else f"{type(error).__name__}: {error}")

    def _items(self, job: _Job) -> list[BatchItem]:
        """The items stored at submit (a job stored before items were kept parsed: its input, parsed now)."""
        path = job.folder / ITEMS_FILE
        if not path.exists():
            jsonl = (job.folder / INPUT_FILE).read_text(encoding="utf-8")
            return parse_jsonl(jsonl, self.allowed_roots, self.voices.known_names())
        return [BatchItem.from_record(json.loads(line)) for line in split_lines(path.read_bytes())]

    def _run(self, job: _Job) -> None:
        runner = ItemRunner(
            self.pipeline,
            job.state.options,
            job.folder,
            self.pipeline.request_timeout_s,
            job.cancel,
            lambda seconds: job.cancel.wait(seconds) or self._stopping.is_set(),
        )
        with open_manifest(job.folder) as log:
            for item in self._items(job):
                if item.uttid in job.records:
                    continue  # finished before a crash or a cancel
                if job.cancel.is_set() or self._stopping.is_set():
                    break
                with self._lock:
                    job.current = item.uttid
                outcome = runner.run(item)
                if outcome is None:
                    break
                record = {**outcome.record, "replica": self.replica} if self.replica else outcome.record
                if not record.get("transient"):
                    try:
                        append_record(log, record)
                    except StorageError as error:
                        record = storage_failure(item, error)
                with self._lock:
                    job.records[item.uttid] = record
                    job.current = None
                    if not record.get("transient"):
                        self._save(job)
                if record.get("transient"):  # the disk refused: stop here, resume runs the item again
                    self._finish(job, FAILED, stop_message(record))
                    return
        if self._stopping.is_set() and not job.cancel.is_set():
            with self._lock:
                job.current = None
            return  # stays `running` on disk: the next start marks it interrupted
        if job.cancel.is_set():
            self._finish(job, CANCELLED)
        else:
            zip_job(job.folder)
            self._finish(job, DONE)

    def _finish(self, job: _Job, status: str, message: str = "") -> None:
        with self._lock:
            job.current = None
            job.state.status, job.state.finished = status, now()
            job.state.message = message or job.state.message
            self._save(job)
        _LOGGER.info("Batch job %s %s: %d of %d items", job.state.id, status, len(job.records), len(job.state.uttids))
