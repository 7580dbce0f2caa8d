"""The batch-job queue every store offers (disk: disk_store.py, Redis: redis_store.py): states,
errors, the progress a job reports and the one text that shows it.

States: queued -> running -> done | cancelled | failed; queued -> cancelled;
(crash, local disk only) queued | running -> interrupted; interrupted | cancelled | failed -(resume)-> queued.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from glmtts.options import OPTION_NAMES
from glmtts.types import SynthesisOptions

QUEUED, RUNNING, DONE, CANCELLED, INTERRUPTED, FAILED = "queued", "running", "done", "cancelled", "interrupted", "failed"
UNFINISHED = (QUEUED, RUNNING)
RESUMABLE = (INTERRUPTED, CANCELLED, FAILED)
MAX_UNFINISHED_JOBS = 16
ITEM_FIELDS = ("uttid", "line", "status", "message", "duration_s", "path", "replica")  # an item as progress shows it
_JOB_NAME = re.compile(r"[^A-Za-z0-9_-]+")


class JobNotFound(LookupError):
    """No job has this id."""

    def __init__(self, job_id: str):
        super().__init__(f"No batch job {job_id[:80]!r}.")


class JobStateError(RuntimeError):
    """The operation does not apply to the job in its current state."""


class JobLimit(RuntimeError):
    """Too many jobs are waiting or running."""

    def __init__(self):
        super().__init__(f"{MAX_UNFINISHED_JOBS} batch jobs are waiting or running; try again later.")


class JobQueue(Protocol):
    """Batch jobs as resources: submitted, followed, cancelled, resumed and downloaded by id.

    Lifecycle: `recover()` at load (what a crash left), `start()` once the service is warm (the
    worker), `shutdown()` at exit. Progress is the dict `job_progress` makes; `list()` gives summaries.
    """

    def recover(self) -> list[str]: ...
    def start(self) -> None: ...
    def shutdown(self, timeout_s: float = 60.0) -> None: ...
    def submit(self, jsonl: str, options: SynthesisOptions | None = None, name: str = "", strict: bool = True) -> str: ...
    def cancel(self, job_id: str) -> dict[str, object]: ...
    def resume(self, job_id: str) -> dict[str, object]: ...
    def progress(self, job_id: str) -> dict[str, object]: ...
    def pending_items(self) -> int: ...
    def list(self) -> list[dict[str, object]]: ...
    def archive(self, job_id: str) -> Path: ...


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def job_name_stem(name: str) -> str:
    """The part of a job's id (its folder name) that comes from the job's name."""
    return _JOB_NAME.sub("_", name).strip("_")[:40] or "job"


def options_from_stored(stored: Mapping[str, object]) -> SynthesisOptions:
    """The options a job stored with glmtts.options.options_to_dict (checked at submit; names another
    version stored and this one does not know are left out)."""
    return SynthesisOptions(**{name: value for name, value in stored.items() if name in OPTION_NAMES})


# --------------------------------------------------------------------------- progress
def job_summary(
    fields: Mapping[str, object], options: Mapping[str, object], total: int, done: int, ok: int, running: Mapping[str, str]
) -> dict[str, object]:
    """A job without its items, as every store reports it. `fields`: id, name, status, created, started,
    finished, message, cancelling (bool); `running`: uttid -> replica of the items running now."""
    status = fields["status"]
    return {
        "id": fields["id"],
        "name": fields["name"],
        "status": status,
        "total": total,
        "done": done,
        "ok": ok,
        "errors": done - ok,
        "current": min(running, default=None),
        "running": dict(running),
        "cancelling": bool(fields["cancelling"]) and status == RUNNING,
        "created": fields["created"],
        "started": fields["started"] or None,
        "finished": fields["finished"] or None,
        "message": fields["message"],
        "options": dict(options),
    }


def job_progress(
    summary: dict[str, object], uttids: list[str], records: Mapping[str, dict], running: Mapping[str, str]
) -> dict[str, object]:
    """The summary plus every item in input order: its manifest record, or running (where), or pending."""
    items = []
    for uttid in uttids:
        record = records.get(uttid)
        if record is not None:
            items.append({key: record.get(key) for key in ITEM_FIELDS})
        elif uttid in running:
            items.append({"uttid": uttid, "status": "running", "replica": running[uttid] or None})
        else:
            items.append({"uttid": uttid, "status": "pending"})
    return {**summary, "items": items}
