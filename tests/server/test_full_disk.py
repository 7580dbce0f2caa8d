"""The app started as a real process on a full outputs disk (a small tmpfs, filled): it starts and
serves, recovers the job a crash left running without rewriting it, and a save answers 507 saying why.
Needs root and `mount` (skipped where the sandbox forbids them)."""

import json
import os
import shutil
import subprocess
import sys

import httpx
import pytest

from .conftest import ROOT, START_TIMEOUT_S, free_port, is_ready, speak, wait_for

JOB = "20260101-000000_crashed"
PROMPT = ROOT / "examples" / "prompt" / "libri_367.flac"


@pytest.fixture
def full_disk(tmp_path, shared_cache):
    """A 4 MiB tmpfs holding a job a crash left running and the session's cached analyses of all but one
    built-in voice (that one is analysed and its store refused), then filled to the last byte."""
    disk = tmp_path / "outputs"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    job = disk / "batch" / JOB
    job.mkdir(parents=True)
    line = {"uttid": "a", "prompt_text": "", "prompt_speech": "libri_367", "syn_text": "Hello."}
    (job / "input.jsonl").write_text(json.dumps(line) + "\n")
    state = {
        "id": JOB,
        "name": "crashed",
        "status": "running",
        "uttids": ["a"],
        "options": {},
        "created": "2026-01-01T00:00:00+00:00",
    }
    (job / "job.json").write_text(json.dumps(state))
    for cached in [*shared_cache.glob("embedded-references-*.npz"), *sorted(shared_cache.glob("voices/embedded-*/*.npz"))[1:]]:
        seeded = disk / "cache" / cached.relative_to(shared_cache)
        seeded.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, seeded)
    with (disk / "filler").open("wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass  # full
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_the_app_starts_and_serves_on_a_full_outputs_disk(full_disk, tmp_path):
    port, log_path = free_port(), tmp_path / "app.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port), "--device", "cpu", "--outputs", str(full_disk)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GLMTTS_CKPT": "", "GLMTTS_CACHE": ""},  # its caches on the full disk too
        )
    try:
        wait_for(lambda: process.poll() is not None or is_ready(url), START_TIMEOUT_S, "the app to become ready")
        assert process.poll() is None, log_path.read_text()[-3000:]
        assert speak(url, "The disk is full, and the service still speaks.").status_code == 200
        job = httpx.get(f"{url}/v1/batch/{JOB}", timeout=30).json()
        assert job["status"] == "interrupted"  # in memory: job.json could not be rewritten
        files = {"file": (PROMPT.name, PROMPT.read_bytes(), "audio/flac")}
        saved = httpx.post(f"{url}/v1/voices", files=files, data={"name": "full"}, timeout=300)
        assert saved.status_code == 507 and "no space left on the device" in saved.json()["detail"], saved.text
        batch = httpx.post(f"{url}/v1/batch", json={"jsonl": (full_disk / "batch" / JOB / "input.jsonl").read_text()}, timeout=60)
        assert batch.status_code == 507 and "no space left on the device" in batch.json()["detail"], batch.text
        assert "no space left on the device" in log_path.read_text()  # each skipped cache says why
    finally:
        process.terminate()
        process.wait(timeout=30)
