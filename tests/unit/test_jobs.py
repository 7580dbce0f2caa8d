"""Batch jobs: states, order, collisions, cancellation and crash recovery.

The jobs run on a stand-in pipeline whose synthesis the tests pace item by item, so every state is
reached deterministically.
"""

import errno
import json
import os
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from glmtts.files import StorageError, split_lines
from glmtts.jobs.batchfile import BatchInputError, BatchTooLarge
from glmtts.jobs.disk_store import DiskJobQueue
from glmtts.jobs.interface import CANCELLED, DONE, INTERRUPTED, RUNNING, JobNotFound, JobStateError
from glmtts.pipeline import SynthesisRequest
from glmtts.scheduler import INTERACTIVE, DeviceScheduler
from glmtts.settings import PROJECT_ROOT
from glmtts.types import Segment, SynthesisError, SynthesisOptions, SynthesisResult

PROMPT = PROJECT_ROOT / "examples" / "prompt" / "libri_367.flac"
RATE = 24000
WAIT_S = 20.0


def wait_until(predicate, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --------------------------------------------------------------------------- batch jobs
class ProcessKilled(BaseException):
    """Ends the worker thread mid-item with nothing written, as a kill -9 of the process would."""


class PacedPipeline:
    """Stands in for the pipeline: each synthesis waits for a permit from the test."""

    def __init__(self):
        self.engine = SimpleNamespace(name="paced", sample_rates=(RATE,), speed_range=(0.5, 2.0))
        self.scheduler = DeviceScheduler()
        self.permits = threading.Semaphore(0)
        self.calls: list[str] = []
        self.crash = threading.Event()  # when set, the next synthesis dies like the process would
        self.request_timeout_s = 60.0

    def allow(self, count: int = 1000) -> None:
        for _ in range(count):
            self.permits.release()

    def synthesize(self, request: SynthesisRequest, cancel=None) -> SynthesisResult:
        with self.scheduler.slot(request.priority):
            return self._synthesize(request)

    def _synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        self.calls.append(request.text)
        self.permits.acquire()
        if self.crash.is_set():
            raise ProcessKilled
        if request.text.startswith("bad"):
            raise SynthesisError("cannot say that")
        audio = 0.1 * np.sin(np.linspace(0, 440 * 2 * np.pi, RATE // 5)).astype(np.float32)
        return SynthesisResult(audio, RATE, [Segment(request.text, (), request.text)], {"total": 0.01}, "paced")


def jsonl(count: int, prefix: str = "u", bad: tuple[int, ...] = ()) -> str:
    return "\n".join(
        json.dumps(
            {
                "uttid": f"{prefix}{i}",
                "prompt_text": "",
                "prompt_speech": str(PROMPT),
                "syn_text": f"{'bad' if i in bad else 'text'} {prefix}{i}",
            }
        )
        for i in range(count)
    )


def line_for(uttid: str) -> str:
    return json.dumps({"uttid": uttid, "prompt_text": "", "prompt_speech": str(PROMPT), "syn_text": f"text {uttid}"})


VOICES = SimpleNamespace(known_names=lambda: ["libri_367"])


@pytest.fixture
def make_jobs(tmp_path):
    made = []

    def build(pipeline):
        jobs = DiskJobQueue(pipeline, VOICES, tmp_path / "batch", [PROMPT.parent])
        jobs.recover()
        jobs.start()
        made.append((jobs, pipeline))
        return jobs

    yield build
    for jobs, pipeline in made:
        pipeline.allow()
        jobs.shutdown(timeout_s=5)


def manifest_uttids(folder: Path) -> list[str]:
    return [json.loads(line)["uttid"] for line in split_lines((folder / "manifest.jsonl").read_bytes())]


def test_job_runs_items_in_order_records_errors_and_zips(make_jobs, tmp_path):
    pipeline = PacedPipeline()
    jobs = make_jobs(pipeline)
    first = jobs.submit(jsonl(3, "a", bad=(1,)), SynthesisOptions(seed=7), "first job")
    second = jobs.submit(jsonl(2, "b"), name="second")
    assert jobs.progress(second)["status"] == "queued"
    with pytest.raises(JobStateError, match="zip"):
        jobs.archive(first)
    pipeline.allow()
    wait_until(lambda: jobs.progress(second)["status"] == DONE)
    assert pipeline.calls == ["text a0", "bad a1", "text a2", "text b0", "text b1"]  # one job after the other
    progress = jobs.progress(first)
    assert (progress["status"], progress["done"], progress["ok"], progress["errors"]) == (DONE, 3, 2, 1)
    assert [item["status"] for item in progress["items"]] == ["ok", "error", "ok"]
    assert progress["items"][1]["message"] == "cannot say that" and progress["options"]["seed"] == 7
    folder = tmp_path / "batch" / first
    state = json.loads((folder / "job.json").read_text())
    assert state["status"] == DONE and state["done"] == 3 and state["finished"]
    with zipfile.ZipFile(jobs.archive(first)) as bundle:
        names = {Path(name).name for name in bundle.namelist()}
    assert names == {
        "a0.wav",
        "a0.srt",
        "a2.wav",
        "a2.srt",
        "manifest.jsonl",
    }  # results only: the input and state stay on the server
    assert [job["id"] for job in jobs.list()] == [second, first]


def test_the_worker_runs_the_items_stored_at_submit_and_never_parses_the_file_again(make_jobs, tmp_path):
    pipeline = PacedPipeline()
    voices = ["libri_367"]
    jobs = DiskJobQueue(pipeline, SimpleNamespace(known_names=lambda: voices), tmp_path / "batch", [PROMPT.parent])
    by_name = json.dumps({"uttid": "named", "prompt_text": "", "prompt_speech": "libri_367", "syn_text": "text named"})
    job = jobs.submit(jsonl(1) + "\n" + by_name, SynthesisOptions(seed=11))
    folder = tmp_path / "batch" / job
    (folder / "input.jsonl").write_text("{not the file that was submitted")
    voices.clear()  # a voice removed after submit: the item still names it, the pipeline decides
    seen = []
    synthesize = pipeline.synthesize
    pipeline.synthesize = lambda request, cancel=None: (seen.append(request), synthesize(request, cancel))[1]
    jobs.start()
    pipeline.allow()
    wait_until(lambda: jobs.progress(job)["status"] == DONE)
    jobs.shutdown(timeout_s=5)
    assert [(r.text, r.prompt, r.options.seed) for r in seen] == [("text u0", PROMPT, 11), ("text named", "libri_367", 11)]
    assert [json.loads(line)["uttid"] for line in split_lines((folder / "items.jsonl").read_bytes())] == ["u0", "named"]


def test_submit_rejects_bad_input_with_the_line(make_jobs):
    jobs = make_jobs(PacedPipeline())
    with pytest.raises(BatchInputError, match="line 2: not valid JSON"):
        jobs.submit(jsonl(1) + "\n{broken")
    with pytest.raises(BatchInputError, match="line 1: .*outside the allowed folders"):
        jobs.submit(json.dumps({"uttid": "x", "prompt_text": "", "prompt_speech": "/etc/passwd", "syn_text": "hi"}))
    with pytest.raises(BatchTooLarge):
        jobs.submit(jsonl(1001))
    with pytest.raises(BatchInputError, match="lines 2, 3 all name the file a.wav"):
        jobs.submit("\n".join(line_for(uttid) for uttid in ("a_1", "a", "a")))
    with pytest.raises(BatchInputError, match="own uttid"):  # refused even where bad lines would be kept
        jobs.submit(jsonl(1) + "\n" + jsonl(1), strict=False)
    with pytest.raises(JobNotFound):
        jobs.progress("nope")
    assert jobs.list() == []


def test_lenient_submit_keeps_bad_lines_as_error_items_and_runs_the_rest(make_jobs):
    pipeline = PacedPipeline()
    jobs = make_jobs(pipeline)
    by_name = json.dumps({"uttid": "named", "prompt_text": "", "prompt_speech": "libri_367", "syn_text": "text named"})
    job = jobs.submit("\n".join([jsonl(1), "{broken", by_name]), strict=False)
    pipeline.allow()
    wait_until(lambda: jobs.progress(job)["status"] == DONE)
    items = jobs.progress(job)["items"]
    assert [(item["uttid"], item["status"]) for item in items] == [("u0", "ok"), ("line2", "error"), ("named", "ok")]
    assert "line 2: not valid JSON" in items[1]["message"]
    assert pipeline.calls == ["text u0", "text named"]


def test_cancel_stops_after_the_current_item_and_resume_finishes(make_jobs, tmp_path):
    pipeline = PacedPipeline()
    jobs = make_jobs(pipeline)
    job = jobs.submit(jsonl(5))
    pipeline.allow(1)
    wait_until(lambda: jobs.progress(job)["current"] == "u1")
    cancelling = jobs.cancel(job)
    assert cancelling["status"] == RUNNING and cancelling["cancelling"]
    pipeline.allow(1)
    wait_until(lambda: jobs.progress(job)["status"] == CANCELLED)
    assert jobs.progress(job)["done"] == 2 and len(pipeline.calls) == 2
    with pytest.raises(JobStateError):
        jobs.cancel(job)
    jobs.resume(job)
    pipeline.allow()
    wait_until(lambda: jobs.progress(job)["status"] == DONE)
    assert manifest_uttids(tmp_path / "batch" / job) == ["u0", "u1", "u2", "u3", "u4"]
    with pytest.raises(JobStateError, match="only interrupted"):
        jobs.resume(job)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the killed worker
def test_crash_mid_job_then_recover_and_resume_runs_each_item_once(make_jobs, tmp_path):
    pipeline = PacedPipeline()
    jobs = make_jobs(pipeline)
    job = jobs.submit(jsonl(6))
    queued = jobs.submit(jsonl(2, "q"))
    pipeline.allow(3)
    wait_until(lambda: jobs.progress(job)["current"] == "u3")
    pipeline.crash.set()
    pipeline.allow(1)  # the process dies while u3 is being synthesized
    folder = tmp_path / "batch" / job
    wait_until(lambda: not jobs._worker.is_alive())
    (folder / "u3.wav").write_bytes(b"RIFF\x00partial")  # torn writes of the dying process
    with (folder / "manifest.jsonl").open("a") as manifest:
        manifest.write('{"uttid": "u3", "sta')
    assert json.loads((folder / "job.json").read_text())["status"] == RUNNING

    restarted = PacedPipeline()
    jobs = make_jobs(restarted)  # recover() runs at start
    progress = jobs.progress(job)
    assert progress["status"] == INTERRUPTED and progress["done"] == 3
    assert "3 of 6" in progress["message"]
    assert [item["status"] for item in progress["items"]] == ["ok", "ok", "ok", "pending", "pending", "pending"]
    assert jobs.progress(queued)["status"] == INTERRUPTED
    restarted.allow()
    time.sleep(0.2)
    assert restarted.calls == []  # nothing runs before a resume (auto_resume is off)
    jobs.resume(job)
    wait_until(lambda: jobs.progress(job)["status"] == DONE)
    assert restarted.calls == ["text u3", "text u4", "text u5"]
    assert manifest_uttids(folder) == ["u0", "u1", "u2", "u3", "u4", "u5"]
    with zipfile.ZipFile(jobs.archive(job)) as bundle:
        wavs = sorted(Path(name).name for name in bundle.namelist() if name.endswith(".wav"))
        assert wavs == [f"u{i}.wav" for i in range(6)]
        assert bundle.read(f"{job}/u3.wav")[:4] == b"RIFF" and len(bundle.read(f"{job}/u3.wav")) > 1000


def test_interactive_requests_go_before_the_next_batch_item(make_jobs):
    pipeline = PacedPipeline()
    jobs = make_jobs(pipeline)
    order: list[str] = []
    release = threading.Event()
    holding = threading.Event()

    def interactive(name: str, hold: bool) -> None:
        with pipeline.scheduler.slot(INTERACTIVE):
            order.append(name)
            if hold:
                holding.set()
                release.wait(WAIT_S)

    first = threading.Thread(target=interactive, args=("first", True))
    first.start()
    holding.wait(WAIT_S)
    pipeline.allow()
    job = jobs.submit(jsonl(1))
    wait_until(lambda: pipeline.scheduler.waiting == 1)  # the batch item waits for the device
    second = threading.Thread(target=interactive, args=("second", False))
    second.start()
    wait_until(lambda: pipeline.scheduler.waiting == 2)
    release.set()
    wait_until(lambda: jobs.progress(job)["status"] == DONE)
    first.join()
    second.join()
    assert order == ["first", "second"] and pipeline.calls == ["text u0"]


# --------------------------------------------------------------------------- line breaks and disk faults
class Disk:
    """Makes every durable write (each goes through os.fsync) fail with `errno` while `fault` is set."""

    def __init__(self, monkeypatch):
        self.fault: int | None = None
        real_fsync = os.fsync

        def fsync(descriptor: int) -> None:
            if self.fault is not None:
                raise OSError(self.fault, os.strerror(self.fault))
            real_fsync(descriptor)

        monkeypatch.setattr(os, "fsync", fsync)


@pytest.fixture
def disk(monkeypatch):
    return Disk(monkeypatch)


def test_texts_with_line_separators_survive_a_restart(make_jobs, tmp_path):
    pipeline = PacedPipeline()
    jobs = make_jobs(pipeline)
    texts = ["one\u2028two", "three\u2029four", "five\x85six", "seven\x0beight\x0cnine\x1c"]
    lines = [
        json.dumps({"uttid": f"u{i}", "prompt_text": "", "prompt_speech": str(PROMPT), "syn_text": text})
        for i, text in enumerate(texts)
    ]
    job = jobs.submit("\n".join(lines).replace("\\u2028", "\u2028"))  # a raw U+2028 inside a string is valid JSONL
    pipeline.allow()
    wait_until(lambda: jobs.progress(job)["status"] == DONE)
    assert pipeline.calls == texts
    restarted = make_jobs(PacedPipeline())
    progress = restarted.progress(job)
    assert (progress["status"], progress["done"], progress["ok"]) == (DONE, 4, 4)
    manifest = (tmp_path / "batch" / job / "manifest.jsonl").read_text(encoding="utf-8")
    assert [json.loads(line)["text"] for line in manifest.splitlines()] == texts  # even str.splitlines() reads 4 lines


@pytest.mark.parametrize(
    ("fault", "reason"), [(errno.ENOSPC, "no space left on the device"), (errno.EIO, "the device failed (input/output error)")]
)
def test_a_disk_fault_stops_the_job_names_it_and_resume_runs_the_item_again(make_jobs, tmp_path, disk, fault, reason):
    pipeline = PacedPipeline()
    jobs = make_jobs(pipeline)
    job = jobs.submit(jsonl(5))
    pipeline.allow(2)
    wait_until(lambda: jobs.progress(job)["done"] == 2 and jobs.progress(job)["current"] == "u2")
    disk.fault = fault
    pipeline.allow(1)
    wait_until(lambda: jobs.progress(job)["status"] == "failed")
    progress = jobs.progress(job)
    assert f"stopped at item u2: {reason} while writing u2.wav" in progress["message"] and "resume" in progress["message"]
    assert [item["status"] for item in progress["items"]] == ["ok", "ok", "error", "pending", "pending"]
    assert reason in progress["items"][2]["message"]
    assert len(pipeline.calls) == 3  # stopped at the first refused write, not burnt through every item

    disk.fault = None  # space freed
    jobs.resume(job)
    pipeline.allow()
    wait_until(lambda: jobs.progress(job)["status"] == DONE)
    assert pipeline.calls[3:] == ["text u2", "text u3", "text u4"]
    assert manifest_uttids(tmp_path / "batch" / job) == ["u0", "u1", "u2", "u3", "u4"]


def test_start_and_serve_on_a_disk_that_refuses_writes(make_jobs, tmp_path, disk):
    pipeline = PacedPipeline()
    jobs = make_jobs(pipeline)
    job = jobs.submit(jsonl(3))
    pipeline.allow(1)
    wait_until(lambda: jobs.progress(job)["current"] == "u1")
    jobs.shutdown(timeout_s=0.01)  # the process ends with the job running on disk
    disk.fault = errno.EROFS
    restarted = make_jobs(PacedPipeline())  # recover() cannot rewrite job.json: it keeps the state in memory
    assert restarted.progress(job)["status"] == INTERRUPTED
    with pytest.raises(StorageError, match="read-only while writing input.jsonl"):
        restarted.submit(jsonl(1, "new"))
    assert [listed["id"] for listed in restarted.list()] == [job]  # nothing half-made is left behind
