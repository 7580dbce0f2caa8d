"""Two replicas of the app sharing one Redis and one outputs folder, as behind a load balancer.

Replica A runs under start_app.sh (its supervisor), replica B as a plain process; both get
GLMTTS_REDIS_URL of a redis-server this module starts (AOF synced at every write) and a short batch
lease. The tests run in file order on the same replicas: a voice saved on A speaks on B; a job
submitted to A is worked by both and downloadable from B; A and its supervisor are killed with
SIGKILL mid-job and B finishes A's leased item; Redis is killed with SIGKILL mid-job and restarted
and nothing finished is lost. Skipped only where redis-server is not installed (.ci/run installs it).
"""

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
import soundfile

from ..unit.test_redis_server import RedisServer, redis
from .conftest import ROOT, START_TIMEOUT_S, free_port, is_ready, launched_app, speak, wait_for

PROMPTS = ROOT / "examples" / "prompt"
LEASE_S = 6
JOB_TIMEOUT_S = 300
SENTENCE = "This sentence is long enough that each batch item takes a moment to synthesize on the processor."


def batch_lines(count: int, prefix: str) -> str:
    prompt = str(PROMPTS / "libri_367.flac")
    return "\n".join(
        json.dumps({"uttid": f"{prefix}{i}", "prompt_text": "", "prompt_speech": prompt, "syn_text": f"Item {i}. {SENTENCE}"})
        for i in range(count)
    )


def job_state(url: str, job_id: str) -> dict:
    response = httpx.get(f"{url}/v1/batch/{job_id}", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def submit(url: str, count: int, prefix: str) -> str:
    response = httpx.post(f"{url}/v1/batch", json={"jsonl": batch_lines(count, prefix), "name": prefix}, timeout=60)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def zipped_manifest(url: str, job_id: str) -> tuple[list[str], list[dict]]:
    download = httpx.get(f"{url}/v1/batch/{job_id}/download", timeout=120)
    assert download.status_code == 200, download.text
    with zipfile.ZipFile(io.BytesIO(download.content)) as bundle:
        wavs = sorted(Path(name).name for name in bundle.namelist() if name.endswith(".wav"))
        manifest = [json.loads(line) for line in bundle.read(f"{job_id}/manifest.jsonl").decode().splitlines()]
    return wavs, manifest


class Replicas:
    """The two replicas and the Redis they share."""

    def __init__(
        self, redis_server: RedisServer, outputs: Path, url_a: str, supervisor_a: subprocess.Popen, url_b: str, log_a: Path
    ):
        self.redis = redis_server
        self.outputs = outputs
        self.url_a, self.supervisor_a, self.url_b = url_a, supervisor_a, url_b
        self.log_a, self.log_b = log_a, outputs / "app.log"  # B's log: where launched_app puts it
        self.name_a = httpx.get(f"{url_a}/v1/status", timeout=30).json()["replica"]
        self.name_b = httpx.get(f"{url_b}/v1/status", timeout=30).json()["replica"]

    def kill_a(self) -> None:
        """SIGKILL to A's supervisor and the app under it: nothing restarts A."""
        os.killpg(self.supervisor_a.pid, signal.SIGKILL)
        self.supervisor_a.wait(30)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    folder = tmp_path_factory.mktemp("replicas")
    redis_server = RedisServer(folder / "redis").start()
    outputs = folder / "outputs"  # one folder for both, as a ReadWriteMany volume would be
    outputs.mkdir()
    env = {"GLMTTS_REDIS_URL": redis_server.url, "GLMTTS_BATCH_LEASE_S": str(LEASE_S)}
    port_a = free_port()
    log_a = folder / "replica-a.log"
    with log_a.open("w") as sink:
        supervisor_a = subprocess.Popen(
            ["bash", "start_app.sh", "--port", str(port_a), "--device", "cpu", "--outputs", str(outputs)],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GLMTTS_CKPT": "", **env},
            start_new_session=True,  # its own process group: killed as a whole
        )
    url_a = f"http://127.0.0.1:{port_a}"
    try:
        # B starts once A is ready: it reads the built-in voices' analyses A stored in the shared folder
        # instead of fitting them again at the same time on the same two cores.
        wait_for(lambda: supervisor_a.poll() is not None or is_ready(url_a), START_TIMEOUT_S, "replica A to be ready")
        assert supervisor_a.poll() is None, log_a.read_text()[-3000:]
        with launched_app(outputs, **env) as (url_b, _codes):
            running = Replicas(redis_server, outputs, url_a, supervisor_a, url_b, log_a)
            yield running
    finally:
        if supervisor_a.poll() is None:
            os.killpg(supervisor_a.pid, signal.SIGTERM)
            try:
                supervisor_a.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(supervisor_a.pid, signal.SIGKILL)
        redis_server.stop()


def test_a_voice_saved_on_one_replica_speaks_on_the_other_without_refitting(replicas):
    url_a, url_b = replicas.url_a, replicas.url_b
    assert replicas.name_a != replicas.name_b and replicas.name_a.endswith(f":{url_a.rsplit(':', 1)[1]}")
    audio, rate = soundfile.read(PROMPTS / "libri_1998.flac", dtype="float32")
    prompt = io.BytesIO()
    soundfile.write(prompt, audio[: 5 * rate], rate, format="WAV")  # not a built-in voice's audio: A fits it
    files = {"file": ("narrator.wav", prompt.getvalue(), "audio/wav")}
    created = httpx.post(f"{url_a}/v1/voices", files=files, data={"name": "Shared Narrator"}, timeout=300)
    assert created.status_code == 201, created.text
    voice = created.json()

    seen = httpx.get(f"{url_b}/v1/voices/{voice['id']}", timeout=30)
    assert seen.status_code == 200 and seen.json()["features"] == "pending" and seen.json()["name"] == "Shared Narrator"
    assert voice["id"] in {v["id"] for v in httpx.get(f"{url_b}/v1/voices", timeout=30).json()["voices"]}
    spoken = speak(url_b, "A voice saved on the other replica speaks here.", voice="Shared Narrator")
    assert spoken.status_code == 200 and spoken.content[:4] == b"RIFF" and len(spoken.content) > 20000
    assert httpx.get(f"{url_b}/v1/voices/{voice['id']}", timeout=30).json()["features"] == "stored"
    key = json.loads(redis.Redis(port=replicas.redis.port).hget("glmtts:voices", voice["id"]))["key"]
    assert f"Voice {key[:8]} fitted" in replicas.log_a.read_text(errors="replace")  # analysed once, on A
    assert f"Voice {key[:8]} fitted" not in replicas.log_b.read_text(errors="replace")  # B decoded A's analysis
    assert httpx.get(f"{url_b}/v1/status", timeout=30).json()["saved_voices"] == 1

    assert httpx.delete(f"{url_b}/v1/voices/{voice['id']}", timeout=30).status_code == 200
    assert httpx.get(f"{url_a}/v1/voices/{voice['id']}", timeout=30).status_code == 404


def test_a_job_submitted_to_one_replica_is_worked_by_both_and_served_by_either(replicas):
    url_a, url_b = replicas.url_a, replicas.url_b
    job_id = submit(url_a, 12, "s")
    assert job_state(url_b, job_id)["total"] == 12  # known to B at once
    metrics = httpx.get(f"{url_b}/metrics", timeout=30).text
    assert "glmtts_batch_items_pending" in metrics and "glmtts_shared_state_up 1.0" in metrics
    done = wait_for(lambda: (s := job_state(url_b, job_id))["status"] == "done" and s, JOB_TIMEOUT_S, "the job to finish")
    assert (done["ok"], done["errors"]) == (12, 0)
    assert {item["replica"] for item in done["items"]} == {replicas.name_a, replicas.name_b}
    assert job_state(url_a, job_id)["items"] == done["items"]  # the same answer on every replica

    wavs, manifest = zipped_manifest(url_b, job_id)
    assert wavs == sorted(f"s{i}.wav" for i in range(12))
    assert sorted(line["uttid"] for line in manifest) == sorted(f"s{i}" for i in range(12))
    assert {line["replica"] for line in manifest} == {replicas.name_a, replicas.name_b}
    assert httpx.get(f"{url_a}/v1/batch", timeout=30).json()["jobs"][0]["id"] == job_id  # newest first


def test_killing_a_replica_mid_job_leaves_its_leased_item_to_the_other(replicas):
    url_a, url_b = replicas.url_a, replicas.url_b
    job_id = submit(url_a, 10, "k")

    def a_is_running_an_item_after_some_finished() -> bool:
        state = job_state(url_b, job_id)
        return state["done"] >= 2 and replicas.name_a in state["running"].values()

    wait_for(a_is_running_an_item_after_some_finished, JOB_TIMEOUT_S, "replica A to run an item")
    replicas.kill_a()
    leased = [uttid for uttid, name in job_state(url_b, job_id)["running"].items() if name == replicas.name_a]
    assert leased, "replica A held no item when it was killed"

    done = wait_for(lambda: (s := job_state(url_b, job_id))["status"] == "done" and s, JOB_TIMEOUT_S, "B to finish the job")
    assert (done["ok"], done["errors"]) == (10, 0)
    by_uttid = {item["uttid"]: item for item in done["items"]}
    assert all(by_uttid[uttid]["replica"] == replicas.name_b for uttid in leased)
    wavs, manifest = zipped_manifest(url_b, job_id)
    assert wavs == sorted(f"k{i}.wav" for i in range(10))
    assert sorted(line["uttid"] for line in manifest) == sorted(f"k{i}" for i in range(10))  # each exactly once


def test_redis_killed_and_restarted_mid_job_loses_no_finished_item(replicas):
    url_b = replicas.url_b
    job_id = submit(url_b, 8, "r")
    before = wait_for(lambda: (s := job_state(url_b, job_id))["done"] >= 2 and s, JOB_TIMEOUT_S, "two finished items")
    finished_before = {item["uttid"] for item in before["items"] if item["status"] == "ok"}
    replicas.redis.kill()

    started = time.monotonic()
    unavailable = httpx.get(f"{url_b}/v1/batch/{job_id}", timeout=30)
    assert unavailable.status_code == 503 and "Redis" in unavailable.json()["detail"] and unavailable.headers["retry-after"]
    assert time.monotonic() - started < 10.0  # a clear answer, never a hang
    assert httpx.get(f"{url_b}/health", timeout=10).status_code == 200
    time.sleep(2.0)  # the worker meanwhile finishes its item and waits to record it
    replicas.redis.start()

    done = wait_for(lambda: (s := job_state(url_b, job_id))["status"] == "done" and s, JOB_TIMEOUT_S, "the job after the restart")
    assert (done["ok"], done["errors"]) == (8, 0)
    assert finished_before <= {item["uttid"] for item in done["items"] if item["status"] == "ok"}
    wavs, manifest = zipped_manifest(url_b, job_id)
    assert wavs == sorted(f"r{i}.wav" for i in range(8))
    assert sorted(line["uttid"] for line in manifest) == sorted(f"r{i}" for i in range(8))


def test_an_unreachable_redis_at_start_up_is_a_clear_error(tmp_path):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [sys.executable, "app.py", "--port", str(free_port()), "--device", "cpu", "--outputs", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=START_TIMEOUT_S,
        env={**os.environ, "GLMTTS_CKPT": "", "GLMTTS_REDIS_URL": dead},
    )
    assert result.returncode != 0
    assert f"Start-up failed: SharedStateUnavailable: Redis at {dead} (GLMTTS_REDIS_URL) is unreachable" in result.stderr
