"""Batch jobs shared by replicas: specs, states and results in Redis, items spread over every replica.

Work distribution is a Redis Streams consumer group, Redis's own at-least-once queue: every item
of a job is one stream entry; each replica's worker reads one entry at a time (XREADGROUP), so an
idle replica takes the next item while a busy one finishes its own. An entry read is pending
against its reader until acknowledged, and the reader renews that lease (XCLAIM of its own entry,
which resets the entry's idle time) every third of the lease while the item runs. A replica that
dies stops renewing: once the entry has been idle for a whole lease, any worker takes it over
(XAUTOCLAIM) and runs the item again. An entry delivered more than MAX_DELIVERIES times (its
replica died each time) is recorded as an error instead of run again.

Exactly once in the manifest: a worker writes the item's wav (synced) in a folder of its own,
renames it into the job folder, then records the result in one script that sets it only if the
item has none yet (HSETNX), appends the uttid to the manifest order, acknowledges and deletes the
entry, and marks the job done when the last item is in. A re-run after a lost lease therefore
never adds a second line. The manifest and the zip are written from Redis into the shared job
folder by the replica that recorded the last item, or by whichever replica serves the download.

Keys:
    glmtts:batch:items          stream: one entry per item to run (job, uttid, generation);
                                consumer group "workers", one consumer per replica process
    glmtts:jobs                 sorted set: job ids by creation time (ms)
    glmtts:jobs:active          set: ids of queued and running jobs
    glmtts:job:<id>             hash: id, name, status, created, started, finished, message,
                                options (JSON), uttids (JSON), total, ok, items (JSON: the
                                items as parsed at submit, what workers run), generation
                                (raised by each resume), cancelling
    glmtts:job:<id>:results     hash: uttid -> manifest record (JSON)
    glmtts:job:<id>:order       list: uttids in the order they finished (the manifest's lines)
    glmtts:job:<id>:running     hash: uttid -> {replica, consumer, entry, expires (ms)}
    glmtts:job:<id>:archive     lock held while one replica writes the manifest and the zip
Files (the outputs folder every replica mounts): outputs/batch/<id>/input.jsonl, <uttid>.wav,
manifest.jsonl, and outputs/batch/<id>.zip once done.

States as on local disk (glmtts.jobs.interface), except `interrupted`: a job whose replica died goes on
elsewhere instead. Cancel stops taking the job's items at once and the job is cancelled when no
item of it runs any more; resume queues the missing items again under a new generation (entries
of the old one are dropped when read).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

from redis.exceptions import LockError, ResponseError

from glmtts.cluster import KEY_PREFIX, UNAVAILABLE, SharedState
from glmtts.files import dumps_line
from glmtts.jobs.batchfile import BatchItem, check_batch, parse_jsonl, safe_name
from glmtts.jobs.interface import (
    CANCELLED,
    DONE,
    MAX_UNFINISHED_JOBS,
    QUEUED,
    RESUMABLE,
    RUNNING,
    JobLimit,
    JobNotFound,
    JobStateError,
    job_progress,
    job_summary,
    now,
    options_from_stored,
)
from glmtts.jobs.manifest import new_job_dirs, write_manifest, zip_job
from glmtts.jobs.runner import ItemRunner
from glmtts.options import options_to_dict
from glmtts.pipeline import Pipeline
from glmtts.types import SynthesisOptions
from glmtts.voices import VoiceLibrary

_LOGGER = logging.getLogger(__name__)

STREAM = KEY_PREFIX + "batch:items"
GROUP = "workers"
JOBS = KEY_PREFIX + "jobs"
ACTIVE = KEY_PREFIX + "jobs:active"
BLOCK_MS = 1000  # an idle worker's read waits this long, then looks for expired leases again
MAX_DELIVERIES = 5  # an item whose replica died this often is recorded as an error, not run again
DEFER_MAX_S = 5.0  # a replica busy with interactive requests leaves new items to the others this long
RETRY_MAX_S = 5.0  # longest wait between tries while Redis is unreachable
ARCHIVE_LOCK_S = 600  # writing a zip of up to 1000 wavs takes far less
CONSUMER_IDLE_S = 600  # a consumer with nothing pending, idle this long, belongs to a process that ended
HOUSEKEEPING_S = 60.0
PARSED_JOBS_KEPT = 8  # jobs whose items a worker keeps read
WORK_DIR_PREFIX = ".work-"
SUMMARY_FIELDS = ("id", "name", "status", "created", "started", "finished", "message", "options", "total", "ok", "cancelling")

_LUA_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- items running under a lease still renewed; markers whose lease ran out are dropped
local function live_running(running)
  local now = now_ms()
  local entries = redis.call('HGETALL', running)
  local live = 0
  for i = 1, #entries, 2 do
    if cjson.decode(entries[i + 1])['expires'] > now then live = live + 1 else redis.call('HDEL', running, entries[i]) end
  end
  return live
end
-- a cancelling job with nothing running any more is cancelled; returns the job's status
local function settle(job, running, active, job_id, finished)
  local status = redis.call('HGET', job, 'status')
  if status == 'running' and redis.call('HGET', job, 'cancelling') == '1' and live_running(running) == 0 then
    redis.call('HSET', job, 'status', 'cancelled', 'finished', finished, 'cancelling', '0')
    redis.call('SREM', active, job_id)
    return 'cancelled'
  end
  return status or 'gone'
end
"""
# KEYS: job, jobs, active, stream; ARGV: id, created ms, unfinished limit, uttids JSON, field, value, ...
_SUBMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[3]) then return 'limit' end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
for _, uttid in ipairs(cjson.decode(ARGV[4])) do
  redis.call('XADD', KEYS[4], '*', 'job', ARGV[1], 'uttid', uttid, 'generation', '1')
end
return 'ok'
"""
# KEYS: job, results, running; ARGV: uttid, generation, lease ms, entry, started, replica, consumer
_START = (
    _LUA_COMMON
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'gone' end
if redis.call('HGET', KEYS[1], 'generation') ~= ARGV[2] then return 'stale' end
if (status ~= 'queued' and status ~= 'running') or redis.call('HGET', KEYS[1], 'cancelling') == '1' then return 'stopped' end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 'finished' end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running')
  if (redis.call('HGET', KEYS[1], 'started') or '') == '' then redis.call('HSET', KEYS[1], 'started', ARGV[5]) end
end
local marker = {replica = ARGV[6], consumer = ARGV[7], entry = ARGV[4], expires = now_ms() + tonumber(ARGV[3])}
redis.call('HSET', KEYS[3], ARGV[1], cjson.encode(marker))
return 'run'
"""
)
# KEYS: stream, running; ARGV: group, consumer, entry, uttid, lease ms
_RENEW = (
    _LUA_COMMON
    + """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
local raw = redis.call('HGET', KEYS[2], ARGV[4])
if raw then
  local marker = cjson.decode(raw)
  if marker['entry'] == ARGV[3] then
    marker['expires'] = now_ms() + tonumber(ARGV[5])
    redis.call('HSET', KEYS[2], ARGV[4], cjson.encode(marker))
  end
end
return 1
"""
)
# KEYS: job, results, running, order, stream, active;
# ARGV: uttid, record, ok (1/0), entry, group, finished, job id, stop (1/0: a refused write), the job's message
_RECORD = (
    _LUA_COMMON
    + """
local added = redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
if added == 1 then
  redis.call('RPUSH', KEYS[4], ARGV[1])
  if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'ok', 1) end
end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('XACK', KEYS[5], ARGV[5], ARGV[4])
redis.call('XDEL', KEYS[5], ARGV[4])
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {added, 'gone'} end
if ARGV[8] == '1' and (status == 'running' or status == 'queued') then  -- the disk refused: stop the job
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished', ARGV[6], 'message', ARGV[9], 'cancelling', '0')
  redis.call('SREM', KEYS[6], ARGV[7])
  return {added, 'failed'}
end
if (status == 'running' or status == 'queued') and redis.call('HLEN', KEYS[2]) >= tonumber(redis.call('HGET', KEYS[1], 'total')) then
  redis.call('HSET', KEYS[1], 'status', 'done', 'finished', ARGV[6], 'cancelling', '0')
  redis.call('SREM', KEYS[6], ARGV[7])
  return {added, 'done'}
end
return {added, settle(KEYS[1], KEYS[3], KEYS[6], ARGV[7], ARGV[6])}
"""
)
# KEYS: job, running, stream, active; ARGV: uttid, entry, group, finished, job id
_DROP = (
    _LUA_COMMON
    + """
redis.call('XACK', KEYS[3], ARGV[3], ARGV[2])
redis.call('XDEL', KEYS[3], ARGV[2])
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if raw and cjson.decode(raw)['entry'] == ARGV[2] then redis.call('HDEL', KEYS[2], ARGV[1]) end
return settle(KEYS[1], KEYS[2], KEYS[4], ARGV[5], ARGV[4])
"""
)
# KEYS: stream, running; ARGV: group, consumer, entry, uttid, lease ms. Hands an entry back at once (shutdown).
_RELEASE = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[5], 'JUSTID')
local raw = redis.call('HGET', KEYS[2], ARGV[4])
if raw and cjson.decode(raw)['entry'] == ARGV[3] then redis.call('HDEL', KEYS[2], ARGV[4]) end
return 1
"""
# KEYS: job, running, active; ARGV: finished, job id
_CANCEL = (
    _LUA_COMMON
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'gone', ''} end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished', ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[2])
  return {'ok', 'cancelled'}
end
if status == 'running' then
  redis.call('HSET', KEYS[1], 'cancelling', '1')
  return {'ok', settle(KEYS[1], KEYS[2], KEYS[3], ARGV[2], ARGV[1])}
end
return {'refused', status}
"""
)
# KEYS: job, results, active, stream, order; ARGV: job id, finished
_RESUME = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'gone', ''} end
if status ~= 'interrupted' and status ~= 'cancelled' and status ~= 'failed' then return {'refused', status} end
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'finished', '', 'message', '', 'cancelling', '0')
redis.call('SADD', KEYS[3], ARGV[1])
local queued = 0
for _, uttid in ipairs(cjson.decode(redis.call('HGET', KEYS[1], 'uttids'))) do
  local raw = redis.call('HGET', KEYS[2], uttid)
  if raw and cjson.decode(raw)['transient'] then  -- failed by a refused write: runs again
    redis.call('HDEL', KEYS[2], uttid)
    redis.call('LREM', KEYS[5], 0, uttid)
    raw = false
  end
  if not raw then
    redis.call('XADD', KEYS[4], '*', 'job', ARGV[1], 'uttid', uttid, 'generation', tostring(generation))
    queued = queued + 1
  end
end
if queued == 0 then
  redis.call('HSET', KEYS[1], 'status', 'done', 'finished', ARGV[2])
  redis.call('SREM', KEYS[3], ARGV[1])
end
return {'ok', tostring(queued)}
"""


def job_key(job_id: str, part: str = "") -> str:
    return f"{KEY_PREFIX}job:{job_id}" + (f":{part}" if part else "")


def _text(value: bytes | str | None) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else (value or "")


@dataclass
class _Entry:
    """One stream entry: an item to run, as this worker holds it."""

    id: str
    job: str
    uttid: str
    generation: str
    deliveries: int = 1


@dataclass
class _JobWork:
    """What a worker needs to run a job's items, read once per job and generation."""

    items: dict[str, BatchItem]
    runner: ItemRunner


class RedisJobQueue:
    """The job queue (glmtts.jobs.interface.JobQueue) over Redis: any replica submits, shows, cancels
    and resumes any job, and every replica's worker runs items of every job (see the module docstring).

    Items run at BATCH priority through this replica's pipeline, so its interactive requests go
    first, as with local jobs.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        voices: VoiceLibrary,
        batch_root: Path,
        allowed_roots: list[Path],
        shared: SharedState,
        lease_s: float = 30.0,
    ):
        self.pipeline = pipeline
        self.voices = voices
        self.root = batch_root
        self.allowed_roots = allowed_roots
        self.client = shared.client
        self.replica = shared.replica
        self.consumer = f"{shared.replica}#{os.getpid()}-{uuid4().hex[:6]}"  # a new consumer per process
        self.lease_ms = int(lease_s * 1000)
        self._scripts = {
            name: self.client.register_script(source)
            for name, source in (
                ("submit", _SUBMIT),
                ("start", _START),
                ("renew", _RENEW),
                ("record", _RECORD),
                ("drop", _DROP),
                ("release", _RELEASE),
                ("cancel", _CANCEL),
                ("resume", _RESUME),
            )
        }
        self._jobs_read: OrderedDict[tuple[str, str], _JobWork] = OrderedDict()
        self._inflight: _Entry | None = None  # the entry this replica's worker holds
        self._inflight_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._renewer: threading.Thread | None = None
        self._started = False
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._last_housekeeping = 0.0

    # ----------------------------------------------------------------- start and stop
    def recover(self) -> list[str]:
        """Nothing to mark interrupted: an item whose replica died runs elsewhere once its lease runs out."""
        active = self.client.scard(ACTIVE)
        if active:
            _LOGGER.info("Shared batch queue: %d jobs queued or running, %d items pending", active, self.pending_items())
        return []

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            self._worker = threading.Thread(target=self._work, name="batch-jobs", daemon=True)
            self._renewer = threading.Thread(target=self._renew_leases, name="batch-leases", daemon=True)
            self._worker.start()
            self._renewer.start()

    def shutdown(self, timeout_s: float = 60.0) -> None:
        """Stop after the current item; an item still running then is handed back for another replica."""
        self._stopping.set()
        if self._worker is not None:
            self._worker.join(timeout_s)
        with self._inflight_lock:
            entry = self._inflight
        if entry is not None:
            try:
                self._release(entry)
            except UNAVAILABLE:
                pass  # its lease runs out instead

    # ----------------------------------------------------------------- operations
    def submit(self, jsonl: str, options: SynthesisOptions | None = None, name: str = "", strict: bool = True) -> str:
        """Check a GLM-TTS JSONL (glmtts.jobs.batchfile.check_batch), store its parsed items and queue
        them for every replica."""
        name, items = check_batch(jsonl, name, self.allowed_roots, self.voices.known_names(), strict)
        uttids = [item.uttid for item in items]
        created = now()
        stored_items = json.dumps([item.to_record() for item in items], ensure_ascii=False)
        for folder in new_job_dirs(self.root, name):  # the id is taken on the shared disk first
            job_id = folder.name
            fields = {
                "id": job_id,
                "name": name or job_id,
                "status": QUEUED,
                "created": created,
                "started": "",
                "finished": "",
                "message": "",
                "options": json.dumps(options_to_dict(options or SynthesisOptions())),
                "uttids": json.dumps(uttids, ensure_ascii=False),
                "total": len(uttids),
                "ok": 0,
                "items": stored_items,
                "generation": 1,
                "cancelling": 0,
            }
            flat = [value for pair in fields.items() for value in pair]
            keys = [job_key(job_id), JOBS, ACTIVE, STREAM]
            try:
                outcome = self._scripts["submit"](
                    keys=keys, args=[job_id, int(time.time() * 1000), MAX_UNFINISHED_JOBS, fields["uttids"], *flat]
                )
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            if outcome == b"ok":
                break
            shutil.rmtree(folder, ignore_errors=True)
            if outcome == b"limit":
                raise JobLimit
        try:
            (folder / "input.jsonl").write_text(jsonl, encoding="utf-8")  # for people reading the folder; Redis holds the job
        except OSError as error:
            _LOGGER.warning("Batch job %s: input.jsonl not written beside its results (%s)", job_id, error)
        _LOGGER.info("Batch job %s queued for every replica: %d items", job_id, len(uttids))
        return job_id

    def cancel(self, job_id: str) -> dict[str, object]:
        """A queued job is cancelled at once; a running one once its items running now have finished."""
        outcome, status = self._scripts["cancel"](
            keys=[job_key(job_id), job_key(job_id, "running"), ACTIVE], args=[now(), job_id]
        )
        if outcome == b"gone":
            raise JobNotFound(job_id)
        if outcome == b"refused":
            raise JobStateError(f"Job {job_id} is {_text(status)}; only queued or running jobs can be cancelled.")
        return self.progress(job_id)

    def resume(self, job_id: str) -> dict[str, object]:
        """Queue an interrupted, cancelled or failed job again; only its unfinished items run."""
        keys = [job_key(job_id), job_key(job_id, "results"), ACTIVE, STREAM, job_key(job_id, "order")]
        outcome, detail = self._scripts["resume"](keys=keys, args=[job_id, now()])
        if outcome == b"gone":
            raise JobNotFound(job_id)
        if outcome == b"refused":
            raise JobStateError(f"Job {job_id} is {_text(detail)}; only {', '.join(RESUMABLE)} jobs can be resumed.")
        _LOGGER.info("Batch job %s resumed: %s items queued again", job_id, _text(detail))
        return self.progress(job_id)

    def progress(self, job_id: str) -> dict[str, object]:
        """Status, counts and every item (ok, error, running on which replica, or pending)."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hmget(job_key(job_id), [*SUMMARY_FIELDS, "uttids"])
            pipe.hgetall(job_key(job_id, "results"))
            pipe.hgetall(job_key(job_id, "running"))
            pipe.time()
            values, results, running, (seconds, micros) = pipe.execute()
        if values[0] is None:
            raise JobNotFound(job_id)
        now_ms = seconds * 1000 + micros // 1000
        live = self._live(running, now_ms)
        summary = self._summary(values[: len(SUMMARY_FIELDS)], len(results), live)
        records = {_text(uttid): json.loads(record) for uttid, record in results.items()}
        return job_progress(summary, json.loads(values[-1]), records, live)

    def pending_items(self) -> int:
        """Items queued or running on any replica: the shared queue's depth (what an autoscaler reads)."""
        return int(self.client.xlen(STREAM))

    def list(self) -> list[dict[str, object]]:
        """Every job, newest first, without the per-item list."""
        job_ids = [_text(job_id) for job_id in self.client.zrevrange(JOBS, 0, -1)]
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(job_key(job_id), list(SUMMARY_FIELDS))
                pipe.hlen(job_key(job_id, "results"))
                pipe.hgetall(job_key(job_id, "running"))
            pipe.time()
            replies = pipe.execute()
        seconds, micros = replies[-1]
        now_ms = seconds * 1000 + micros // 1000
        jobs = []
        for index in range(len(job_ids)):
            values, done, running = replies[3 * index : 3 * index + 3]
            if values[0] is not None:
                jobs.append(self._summary(values, done, self._live(running, now_ms)))
        return jobs

    def archive(self, job_id: str) -> Path:
        """The zip of a finished job, written from the shared state first if no replica has yet."""
        status = self.client.hget(job_key(job_id), "status")
        if status is None:
            raise JobNotFound(job_id)
        if _text(status) != DONE:
            raise JobStateError(f"Job {job_id} is {_text(status)}; the zip is ready when it is done.")
        archive = self.root / f"{job_id}.zip"
        return archive if archive.is_file() else self._write_archive(job_id)

    # ----------------------------------------------------------------- reading the shared state
    @staticmethod
    def _live(running: dict[bytes, bytes], now_ms: int) -> dict[str, str]:
        """uttid -> replica of the items whose lease is still being renewed."""
        live = {}
        for uttid, raw in running.items():
            marker = json.loads(raw)
            if marker.get("expires", 0) > now_ms:
                live[_text(uttid)] = marker.get("replica", "")
        return live

    @staticmethod
    def _summary(values: list[bytes | None], done: int, live: dict[str, str]) -> dict[str, object]:
        fields: dict[str, object] = dict(zip(SUMMARY_FIELDS, (_text(value) for value in values), strict=True))
        fields["cancelling"] = fields["cancelling"] == "1"
        options = json.loads(fields["options"] or "{}")
        return job_summary(fields, options, int(fields["total"] or 0), done, int(fields["ok"] or 0), live)

    # ----------------------------------------------------------------- the worker
    def _work(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                entry = self._next_entry()
                if entry is None:
                    self._housekeeping()
                else:
                    self._handle(entry)
                if failures:
                    _LOGGER.info("Shared state reachable again; the batch worker goes on")
                failures = 0
            except UNAVAILABLE as error:
                if not failures:
                    _LOGGER.warning("Shared state unreachable (%s: %s); the batch worker retries", type(error).__name__, error)
                failures += 1
                self._stopping.wait(min(RETRY_MAX_S, 0.2 * 2**failures))
            except Exception:  # never let one bad entry stop this replica's worker
                _LOGGER.exception("Batch worker error")
                self._stopping.wait(1.0)

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def _next_entry(self) -> _Entry | None:
        """An entry whose lease ran out, else a new one (waiting up to BLOCK_MS), else None."""
        try:
            claimed = self.client.xautoclaim(STREAM, GROUP, self.consumer, self.lease_ms, "0-0", count=1)
            if claimed[1]:
                entry_id, fields = claimed[1][0]
                pending = self.client.xpending_range(STREAM, GROUP, entry_id, entry_id, 1)
                deliveries = int(pending[0]["times_delivered"]) if pending else 1
                entry = self._entry(entry_id, fields, deliveries)
                _LOGGER.warning("Batch item %s of job %s taken over after its lease ran out", entry.uttid, entry.job)
                return entry
            if self._defer_to_interactive():
                return None
            read = self.client.xreadgroup(GROUP, self.consumer, {STREAM: ">"}, count=1, block=BLOCK_MS)
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            self._ensure_group()  # a new Redis, or the stream was removed
            return None
        for _stream, entries in read or []:
            for entry_id, fields in entries:
                return self._entry(entry_id, fields, 1)
        return None

    @staticmethod
    def _entry(entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> _Entry:
        return _Entry(
            _text(entry_id), _text(fields.get(b"job")), _text(fields.get(b"uttid")), _text(fields.get(b"generation")), deliveries
        )

    def _defer_to_interactive(self) -> bool:
        """While interactive requests wait for this replica's device, leave new items to other replicas
        (for up to DEFER_MAX_S; then take one anyway: it waits in the scheduler behind them)."""
        scheduler = getattr(self.pipeline, "scheduler", None)
        deadline = time.monotonic() + DEFER_MAX_S
        while scheduler is not None and scheduler.waiting > 0 and time.monotonic() < deadline:
            if self._stopping.wait(0.1):
                return True
        return False

    def _handle(self, entry: _Entry) -> None:
        job, running = job_key(entry.job), job_key(entry.job, "running")
        args = [entry.uttid, entry.generation, self.lease_ms, entry.id, now(), self.replica, self.consumer]
        outcome = self._scripts["start"](keys=[job, job_key(entry.job, "results"), running], args=args)
        if outcome != b"run":
            self._drop(entry)
            return
        with self._inflight_lock:
            self._inflight = entry
        try:
            record = self._run(entry)
            if record is None:  # stopping (handed back below, by shutdown) or cancelled (dropped)
                if not self._stopping.is_set():
                    self._drop(entry)
                return
            record["replica"] = self.replica
            if self._record(entry, record) == b"done":
                self._write_archive(entry.job)
            with self._inflight_lock:
                self._inflight = None
        except BaseException:
            if not self._stopping.is_set():
                with self._inflight_lock:
                    self._inflight = None
            raise

    def _run(self, entry: _Entry) -> dict | None:
        """The item's manifest record; None when this replica stops or the job is cancelled meanwhile."""
        if entry.deliveries > MAX_DELIVERIES:
            message = f"not run again: the replicas running it stopped {entry.deliveries - 1} times (crashed or killed)"
            _LOGGER.error("Batch item %s of job %s %s", entry.uttid, entry.job, message)
            return {"uttid": entry.uttid, "status": "error", "message": message}
        work = self._job_work(entry.job, entry.generation)
        item = work.items.get(entry.uttid)
        if item is None:
            return {"uttid": entry.uttid, "status": "error", "message": "not in the job's input"}
        staging = work.runner.folder / f"{WORK_DIR_PREFIX}{safe_name(self.consumer, 'worker')}"  # this process's own files
        outcome = work.runner.run(item, staging)  # a transient record (the disk refused) stops the job: see _RECORD
        return None if outcome is None else outcome.record

    def _job_work(self, job_id: str, generation: str) -> _JobWork:
        cached = self._jobs_read.get((job_id, generation))
        if cached is not None:
            return cached
        stored_items, options, jsonl = self.client.hmget(job_key(job_id), ["items", "options", "input"])
        if stored_items is None:  # submitted before items were stored parsed
            items = parse_jsonl(_text(jsonl), self.allowed_roots, self.voices.known_names())
        else:
            items = [BatchItem.from_record(record) for record in json.loads(stored_items)]
        runner = ItemRunner(
            self.pipeline,
            options_from_stored(json.loads(_text(options) or "{}")),
            self.root / job_id,
            self.pipeline.request_timeout_s,
            wait_busy=lambda seconds: self._stopping.wait(seconds) or self._cancelling(job_id),
        )
        work = _JobWork({item.uttid: item for item in items}, runner)
        self._jobs_read[(job_id, generation)] = work
        while len(self._jobs_read) > PARSED_JOBS_KEPT:
            self._jobs_read.popitem(last=False)
        return work

    def _cancelling(self, job_id: str) -> bool:
        try:
            status, cancelling = self.client.hmget(job_key(job_id), ["status", "cancelling"])
        except UNAVAILABLE:
            return False
        return _text(cancelling) == "1" or _text(status) not in (QUEUED, RUNNING)

    def _record(self, entry: _Entry, record: dict) -> bytes:
        """Record a finished item once (see the module docstring); retried while Redis is unreachable."""
        keys = [
            job_key(entry.job),
            job_key(entry.job, "results"),
            job_key(entry.job, "running"),
            job_key(entry.job, "order"),
            STREAM,
            ACTIVE,
        ]
        args = [entry.uttid, dumps_line(record), int(record.get("status") == "ok"), entry.id, GROUP]
        stop = [int(bool(record.get("transient"))), f"stopped at item {entry.uttid}: {record.get('message', '')}"]
        delay = 0.2
        while True:
            try:
                added, status = self._scripts["record"](keys=keys, args=[*args, now(), entry.job, *stop])
                break
            except UNAVAILABLE as error:
                if delay == 0.2:
                    _LOGGER.warning(
                        "Batch item %s of job %s finished; recording it waits for Redis (%s)", entry.uttid, entry.job, error
                    )
                if self._stopping.wait(delay):
                    raise  # not recorded: its lease runs out and another replica makes it again
                delay = min(RETRY_MAX_S, delay * 2)
        if not added:
            _LOGGER.info("Batch item %s of job %s was recorded by another replica first", entry.uttid, entry.job)
        if status in (DONE.encode(), CANCELLED.encode()):
            _LOGGER.info("Batch job %s %s", entry.job, _text(status))
        return status

    def _drop(self, entry: _Entry) -> None:
        """Acknowledge an entry that is not to run (finished, cancelled, or of an older generation)."""
        keys = [job_key(entry.job), job_key(entry.job, "running"), STREAM, ACTIVE]
        self._scripts["drop"](keys=keys, args=[entry.uttid, entry.id, GROUP, now(), entry.job])

    def _release(self, entry: _Entry) -> None:
        """Hand an entry back at once (this replica stops before finishing it)."""
        keys = [STREAM, job_key(entry.job, "running")]
        if self._scripts["release"](keys=keys, args=[GROUP, self.consumer, entry.id, entry.uttid, self.lease_ms]):
            _LOGGER.info("Batch item %s of job %s handed back for another replica", entry.uttid, entry.job)

    def _renew_leases(self) -> None:
        """Renew the lease of the entry the worker holds, every third of the lease, while the worker lives."""
        while self._worker is not None and self._worker.is_alive():
            time.sleep(self.lease_ms / 3000)
            with self._inflight_lock:
                entry = self._inflight
            if entry is None:
                continue
            keys = [STREAM, job_key(entry.job, "running")]
            try:
                if not self._scripts["renew"](keys=keys, args=[GROUP, self.consumer, entry.id, entry.uttid, self.lease_ms]):
                    _LOGGER.warning("Batch item %s of job %s: lease lost to another replica", entry.uttid, entry.job)
            except UNAVAILABLE:
                pass  # retried at the next renewal; a lease outlives a short outage

    def _write_archive(self, job_id: str) -> Path:
        """manifest.jsonl (in finishing order) and the zip, written once under a lock every replica honours."""
        folder, archive = self.root / job_id, self.root / f"{job_id}.zip"
        try:
            with self.client.lock(job_key(job_id, "archive"), timeout=ARCHIVE_LOCK_S, blocking_timeout=ARCHIVE_LOCK_S):
                if archive.is_file():
                    return archive
                with self.client.pipeline(transaction=True) as pipe:
                    order, results = pipe.lrange(job_key(job_id, "order"), 0, -1).hgetall(job_key(job_id, "results")).execute()
                # encoded again: records of an older version may hold raw line breaks
                write_manifest(folder, (json.loads(results[uttid]) for uttid in order))
                for private in folder.glob(f"{WORK_DIR_PREFIX}*"):  # before the zip appears: whoever sees it sees a tidy folder
                    shutil.rmtree(private, ignore_errors=True)
                zip_job(folder)
        except LockError as error:
            raise JobStateError(f"Job {job_id}: its zip is still being written; try again shortly.") from error
        _LOGGER.info("Batch job %s: manifest and zip written (%d items)", job_id, len(order))
        return archive

    def _housekeeping(self) -> None:
        """Now and then: forget consumers of processes that ended (nothing pending, idle for long)."""
        if time.monotonic() - self._last_housekeeping < HOUSEKEEPING_S:
            return
        self._last_housekeeping = time.monotonic()
        for consumer in self.client.xinfo_consumers(STREAM, GROUP):
            name = _text(consumer["name"])
            if name != self.consumer and int(consumer["pending"]) == 0 and int(consumer["idle"]) > CONSUMER_IDLE_S * 1000:
                self.client.xgroup_delconsumer(STREAM, GROUP, name)
