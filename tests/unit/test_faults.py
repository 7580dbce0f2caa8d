"""Fault suite for batch jobs: a crash at every durable step of a batch item (each is an fsync), a torn
manifest line, a real kill -9, and a real small or read-only file system; after a restart and `resume`
the manifest holds every uttid exactly once and every wav is whole."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from glmtts.engines.embedded import EmbeddedEngine
from glmtts.files import StorageError, split_lines
from glmtts.http.errors import response_for
from glmtts.jobs.disk_store import DiskJobQueue
from glmtts.jobs.interface import DONE, FAILED, INTERRUPTED, QUEUED, RUNNING
from glmtts.voices import DiskVoiceStore, VoiceInfo
from tests.unit.test_jobs import PROMPT, VOICES, PacedPipeline, ProcessKilled, jsonl, wait_until

ITEMS = 3
# fsyncs of a job's run: job.json (running), then per item its wav, its SRT, its manifest line and
# job.json, then the zip and job.json (done).
ITEM_FSYNCS = 4
RUN_FSYNCS = 1 + ITEM_FSYNCS * ITEMS + 2
FIRST_MANIFEST_FSYNC = 4


def start(root: Path, pipeline: PacedPipeline) -> DiskJobQueue:
    jobs = DiskJobQueue(pipeline, VOICES, root, [PROMPT.parent])
    jobs.recover()
    jobs.start()
    return jobs


def assert_complete(jobs: DiskJobQueue, folder: Path, count: int = ITEMS) -> None:
    archive = jobs.archive(folder.name)  # with shared state, this writes the manifest if no replica did yet
    uttids = [json.loads(line)["uttid"] for line in split_lines((folder / "manifest.jsonl").read_bytes())]
    assert uttids == [f"u{i}" for i in range(count)]  # every item exactly once, in order
    with zipfile.ZipFile(archive) as bundle:
        for uttid in uttids:
            wav = bundle.read(f"{folder.name}/{uttid}.wav")
            assert wav[:4] == b"RIFF" and len(wav) > 1000


class Killer:
    """Kills the worker (as kill -9 would the process) at its `at`-th fsync once armed; `tear` first
    cuts the file being synced in the middle of its last line."""

    def __init__(self, monkeypatch, at: int, tear: bool = False):
        self.at, self.tear, self.count, self.armed = at, tear, 0, False
        real_fsync = os.fsync

        def fsync(descriptor: int) -> None:
            if self.armed:
                self.count += 1
                if self.count == self.at:
                    if self.tear:
                        size = os.fstat(descriptor).st_size
                        os.ftruncate(descriptor, size - 5)
                    raise ProcessKilled
            real_fsync(descriptor)

        monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the killed worker
@pytest.mark.parametrize("at", range(1, RUN_FSYNCS + 1))
def test_a_crash_at_each_durable_step_then_resume_gives_each_item_once(tmp_path, monkeypatch, at):
    killer = Killer(monkeypatch, at, tear=(at == FIRST_MANIFEST_FSYNC))  # u0's manifest line: torn mid-line
    pipeline = PacedPipeline()
    jobs = start(tmp_path, pipeline)
    job = jobs.submit(jsonl(ITEMS))
    killer.armed = True
    pipeline.allow()
    wait_until(lambda: not jobs._worker.is_alive())
    on_disk = json.loads((tmp_path / job / "job.json").read_text())["status"]
    assert killer.count == at and on_disk in (QUEUED, RUNNING)  # it died mid-job
    killer.armed = False

    restarted = start(tmp_path, PacedPipeline())
    restarted.pipeline.allow()
    assert restarted.progress(job)["status"] == INTERRUPTED
    restarted.resume(job)
    wait_until(lambda: restarted.progress(job)["status"] == DONE)
    assert_complete(restarted, tmp_path / job)
    restarted.shutdown(timeout_s=5)


KILLED_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import glmtts.jobs.disk_store
    from tests.unit.test_faults import start
    from tests.unit.test_jobs import PacedPipeline, jsonl

    real_append = glmtts.jobs.disk_store.append_record

    def append_then_die(log, record):
        if record["uttid"] == "u1":  # half its manifest line reaches the disk, then the process is killed
            log.write('{"uttid": "u1", "sta')
            log.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        real_append(log, record)

    glmtts.jobs.disk_store.append_record = append_then_die
    pipeline = PacedPipeline()
    jobs = start(Path(sys.argv[1]), pipeline)
    print(jobs.submit(jsonl(3)), flush=True)
    pipeline.allow()
    jobs._worker.join()
    """
)


def test_kill_9_mid_manifest_line_then_resume_gives_each_item_once(tmp_path):
    root = Path(__file__).resolve().parents[2]
    child = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, str(tmp_path)], cwd=root, capture_output=True, text=True, timeout=120, check=False
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    job = child.stdout.strip()
    assert (tmp_path / job / "manifest.jsonl").read_bytes().endswith(b'"sta')
    jobs = start(tmp_path, PacedPipeline())
    assert jobs.progress(job)["done"] == 1
    jobs.pipeline.allow()
    jobs.resume(job)
    wait_until(lambda: jobs.progress(job)["status"] == DONE)
    assert_complete(jobs, tmp_path / job)
    jobs.shutdown(timeout_s=5)


# --------------------------------------------------------------------------- a real small file system
@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs (needs root and mount; skipped where the sandbox forbids it)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path, leave_bytes: int) -> Path:
    """Fill the disk up to `leave_bytes` free."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave_bytes))
    return filler


def test_a_full_disk_names_enospc_stops_early_and_resume_finishes(small_disk):
    pipeline = PacedPipeline()
    jobs = start(small_disk / "batch", pipeline)
    job = jobs.submit(jsonl(8))
    filler = fill(small_disk, 24 * 1024)  # room for about two items (a wav is 9.6 kB)
    pipeline.allow()
    wait_until(lambda: jobs.progress(job)["status"] == FAILED)
    progress = jobs.progress(job)
    assert "no space left on the device while writing" in progress["message"], progress["message"]
    failed = [item for item in progress["items"] if item["status"] == "error"]
    assert len(failed) == 1 and "no space left on the device" in failed[0]["message"]
    assert len(pipeline.calls) < 8  # stopped at the first refused write
    filler.unlink()
    jobs.resume(job)
    wait_until(lambda: jobs.progress(job)["status"] == DONE)
    assert_complete(jobs, small_disk / "batch" / job, 8)
    jobs.shutdown(timeout_s=5)


def test_start_on_a_read_only_disk_serves_and_saving_says_why(small_disk):
    pipeline = PacedPipeline()
    jobs = start(small_disk / "batch", pipeline)
    job = jobs.submit(jsonl(2))
    jobs.shutdown(timeout_s=0.01)  # the process ends with the job queued on disk
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    restarted = start(small_disk / "batch", PacedPipeline())
    assert restarted.progress(job)["status"] == INTERRUPTED
    with pytest.raises(OSError) as refused:
        restarted.submit(jsonl(1, "new"))
    assert refused.value.errno == errno.EROFS and "read-only" in str(refused.value)
    restarted.shutdown(timeout_s=5)


# --------------------------------------------------------------------------- voices and start-up
def saved_voice_parts():
    info = VoiceInfo("mine-0123abcd", "mine", "", "2026-01-01T00:00:00+00:00", 1.0, "embedded")
    return info, "key", np.zeros(16000, np.float32), 16000, None


@pytest.mark.parametrize("at", [1, 2])  # the fsyncs of a save: prompt.wav, meta.json (then the folder's rename)
def test_a_crash_at_each_step_of_a_voice_save_leaves_it_whole_or_absent(tmp_path, monkeypatch, at):
    killer = Killer(monkeypatch, at)
    store = DiskVoiceStore(tmp_path / "voices")
    store.load()
    killer.armed = True
    monkeypatch.setattr("glmtts.voices.shutil", SimpleNamespace(rmtree=lambda *args, **kwargs: None))  # a kill cleans nothing
    with pytest.raises(ProcessKilled):
        store.add(*saved_voice_parts())
    assert [path.name[:5] for path in (tmp_path / "voices").iterdir()] == [".new-"]  # the half-made voice, as a kill leaves it
    monkeypatch.undo()
    assert DiskVoiceStore(tmp_path / "voices").load() == {}  # after the restart: not there, and no leftovers
    assert list((tmp_path / "voices").iterdir()) == []
    store.add(*saved_voice_parts())  # saved whole once it can be
    assert list(DiskVoiceStore(tmp_path / "voices").load()) == ["mine-0123abcd"]


def test_a_voice_save_on_a_full_disk_answers_507_and_leaves_nothing(small_disk):
    store = DiskVoiceStore(small_disk / "voices")
    store.load()
    fill(small_disk, 8 * 1024)  # less than the prompt's 64 kB
    with pytest.raises(StorageError) as refused:
        store.add(*saved_voice_parts())
    assert refused.value.errno == errno.ENOSPC and "no space left on the device while writing prompt.wav" in str(refused.value)
    assert list((small_disk / "voices").iterdir()) == []  # no half-made voice
    response = response_for(refused.value)
    assert response.status_code == 507 and b"no space left on the device" in response.body


def test_the_engine_and_stores_load_on_a_read_only_outputs_disk(small_disk, caplog):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    engine = EmbeddedEngine(small_disk / "cache")  # every cache it writes is refused
    engine.load("cpu")
    assert engine.english.text_to_audio("Hello.", seed=0).size > 0
    assert DiskVoiceStore(small_disk / "voices").load() == {}
    refused = [record.getMessage() for record in caplog.records if "read-only" in record.getMessage()]
    assert len(refused) >= 3, refused  # one warning per cache skipped, each saying why


def test_with_shared_state_a_disk_fault_stops_the_job_and_resume_runs_the_item_again(tmp_path, monkeypatch):
    pytest.importorskip("redis", reason="the redis client is not installed")
    from glmtts.cluster import connect
    from glmtts.jobs.redis_store import RedisJobQueue
    from tests.unit.test_jobs import Disk
    from tests.unit.test_redis_server import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    disk, pipeline = Disk(monkeypatch), PacedPipeline()
    jobs = RedisJobQueue(pipeline, VOICES, tmp_path / "batch", [PROMPT.parent], connect(server.url, "a:1"))
    try:
        jobs.recover()
        jobs.start()
        job = jobs.submit(jsonl(4))
        pipeline.allow(1)
        wait_until(lambda: jobs.progress(job)["done"] == 1 and len(pipeline.calls) == 2)  # u1 waits for its permit
        disk.fault = errno.ENOSPC
        pipeline.allow(1)
        wait_until(lambda: jobs.progress(job)["status"] == FAILED)
        progress = jobs.progress(job)
        assert "stopped at item u1: no space left on the device while writing u1.wav" in progress["message"]
        assert [item["status"] for item in progress["items"]] == ["ok", "error", "pending", "pending"]
        disk.fault = None
        jobs.resume(job)
        pipeline.allow()
        wait_until(lambda: jobs.progress(job)["status"] == DONE)
        assert_complete(jobs, tmp_path / "batch" / job, 4)
        assert len(pipeline.calls) == 5  # u1 twice: before the fault was fixed, and after
    finally:
        pipeline.allow()
        jobs.shutdown(timeout_s=5)
        server.stop()
