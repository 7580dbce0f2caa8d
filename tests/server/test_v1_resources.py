"""Saved voices and batch jobs over HTTP, on the app started by start_app.sh (which restarts it after a crash).

The tests share one supervised app and run in file order: the crash test kills the app process
mid-job and checks what the restarted process knows about the voices and jobs made before.
"""

import io
import json
import os
import signal
import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from .conftest import ROOT, START_TIMEOUT_S, free_port, is_ready, speak, wait_for

PROMPTS = ROOT / "examples" / "prompt"
JOB_TIMEOUT_S = 300
SENTENCE = "This sentence is long enough that each batch item takes a moment to synthesize on the processor."


@dataclass
class SupervisedApp:
    url: str
    outputs: Path
    supervisor: subprocess.Popen
    log: Path

    def app_process(self) -> psutil.Process | None:
        """The python app.py process under the start_app.sh supervisor (not the supervisor itself)."""
        for child in psutil.Process(self.supervisor.pid).children(recursive=True):
            try:
                if "app.py" in child.cmdline() and "python" in Path(child.cmdline()[0]).name:
                    return child
            except psutil.NoSuchProcess:
                continue
        return None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    outputs = tmp_path_factory.mktemp("v1-outputs")
    port = free_port()
    log = outputs / "supervisor.log"
    with log.open("w") as sink:
        supervisor = subprocess.Popen(
            ["bash", "start_app.sh", "--port", str(port), "--device", "cpu", "--outputs", str(outputs)],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GLMTTS_CKPT": ""},
            start_new_session=True,  # its own process group, ended as a whole below
        )
    app = SupervisedApp(f"http://127.0.0.1:{port}", outputs, supervisor, log)
    try:
        wait_for(lambda: supervisor.poll() is not None or is_ready(app.url), START_TIMEOUT_S, "the app to be ready")
        assert supervisor.poll() is None, app.log_text()[-3000:]
        yield app
    finally:
        os.killpg(supervisor.pid, signal.SIGTERM)
        try:
            supervisor.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(supervisor.pid, signal.SIGKILL)


def create_voice(url: str, prompt: Path, name: str, prompt_text: str = "") -> httpx.Response:
    files = {"file": (prompt.name, prompt.read_bytes(), "audio/flac")}
    return httpx.post(f"{url}/v1/voices", files=files, data={"prompt_text": prompt_text, "name": name}, timeout=300)


def batch_lines(count: int, prefix: str, prompt: Path) -> str:
    return "\n".join(
        json.dumps(
            {"uttid": f"{prefix}{i}", "prompt_text": "", "prompt_speech": str(prompt), "syn_text": f"Item {i}. {SENTENCE}"}
        )
        for i in range(count)
    )


def page_client(url: str):
    from gradio_client import Client

    return Client(url + "/", verbose=False)


def submit_from_the_page(url: str, prompt: Path, name: str, folder: Path) -> str:
    """A three-line batch in an uploaded voice, submitted on the Batch tab; returns its job id."""
    from gradio_client import handle_file

    lines = folder / "lines.txt"
    lines.write_text("\n".join(f"Page line {n}. {SENTENCE}" for n in range(3)), encoding="utf-8")
    options = [42, "ras", 25, 0.8, 1.0, 1.0, 24000, True, False]  # as the page sends them
    args = [handle_file(str(lines)), "One utterance a line", handle_file(str(prompt)), None, "", name, *options]
    page_client(url).submit(*args, api_name="/batch")

    def listed() -> list[str]:
        return [job["id"] for job in httpx.get(f"{url}/v1/batch").json()["jobs"] if job["name"] == name]

    return wait_for(listed, 60, "the page's job")[0]


def job_state(url: str, job_id: str) -> dict:
    response = httpx.get(f"{url}/v1/batch/{job_id}", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def wait_job(url: str, job_id: str, status: str) -> dict:
    return wait_for(lambda: (state := job_state(url, job_id))["status"] == status and state, JOB_TIMEOUT_S, f"job {status}")


def test_saved_voice_is_created_listed_and_spoken(supervised):
    url = supervised.url
    created = create_voice(url, PROMPTS / "libri_1998.flac", "Narrator One")
    assert created.status_code == 201, created.text
    voice = created.json()
    assert voice["id"].startswith("narrator-one-") and voice["builtin"] is False and voice["features"] == "computed"
    assert created.headers["location"] == f"/v1/voices/{voice['id']}"
    assert (supervised.outputs / "voices" / voice["id"] / "prompt.wav").is_file()

    listed = httpx.get(f"{url}/v1/voices").json()["voices"]
    assert {"libri_367", voice["id"]} <= {v["id"] for v in listed}
    assert [v["builtin"] for v in listed if v["id"] == "libri_367"] == [True]
    assert httpx.get(f"{url}/v1/voices/{voice['id']}").json()["name"] == "Narrator One"
    open_webui = httpx.get(f"{url}/v1/audio/voices").json()["voices"]  # Open WebUI's listing has saved voices too
    assert {"id": voice["id"], "name": "Narrator One"} in open_webui and {"id": "libri_367", "name": "libri_367"} in open_webui

    spoken = speak(url, "A saved voice speaks.", voice=voice["id"])
    assert spoken.status_code == 200 and spoken.content[:4] == b"RIFF" and len(spoken.content) > 20000

    assert create_voice(url, PROMPTS / "libri_1998.flac", "Narrator One").status_code == 409
    not_audio = httpx.post(f"{url}/v1/voices", files={"file": ("x.wav", b"definitely not audio")}, timeout=60)
    assert not_audio.status_code == 400 and "decoded" in not_audio.text
    no_file = httpx.post(f"{url}/v1/voices", data={"name": "x"}, timeout=60)
    assert no_file.status_code == 415 and "'file'" in no_file.text
    zhang = create_voice(url, PROMPTS / "libri_1998.flac", "张三")
    li = create_voice(url, PROMPTS / "libri_1998.flac", "李四")
    assert zhang.status_code == li.status_code == 201 and zhang.json()["id"] != li.json()["id"]
    assert speak(url, "Named in Chinese.", voice="李四").status_code == 200
    huge = httpx.post(f"{url}/v1/voices", files={"file": ("big.wav", b"\0" * (21 * 2**20))}, timeout=60)
    assert huge.status_code == 413
    assert httpx.get(f"{url}/v1/voices/nobody-00000000").status_code == 404
    assert httpx.delete(f"{url}/v1/voices/libri_367").status_code == 403
    assert httpx.delete(f"{url}/v1/voices/nobody-00000000").status_code == 404


def test_voice_names_are_checked_reserved_and_taken_once(supervised):
    url = supervised.url
    for reserved in ("alloy", "LIBRI_1998", "Shimmer"):  # an OpenAI alias, a built-in, case-folded
        refused = create_voice(url, PROMPTS / "libri_367.flac", reserved)
        assert refused.status_code == 409 and "is reserved" in refused.json()["detail"], refused.text
    for look_alike in ("narrator one", "Narrator\u00a0One", "Ｎarrator One"):  # case, no-break space, full width
        refused = create_voice(url, PROMPTS / "libri_367.flac", look_alike)
        assert refused.status_code == 409 and "A voice named" in refused.json()["detail"] and "(id narrator-one-" in refused.text
    for invisible, where in (("Nar\u200brator", "U+200B, at position 4"), ("\u202eNarrator", "U+202E, at position 1")):
        refused = create_voice(url, PROMPTS / "libri_367.flac", invisible)
        assert refused.status_code == 400 and where in refused.json()["detail"] and refused.json()["error"]["param"] == "name"

    # Four saves of one new name at once, each with another prompt: exactly one 201.
    prompts = sorted(PROMPTS.glob("*.flac"))
    with ThreadPoolExecutor(len(prompts)) as pool:
        statuses = sorted(pool.map(lambda prompt: create_voice(url, prompt, "Twin Voice").status_code, prompts))
    assert statuses == [201] + [409] * (len(prompts) - 1)
    names = [voice["name"] for voice in httpx.get(f"{url}/v1/voices").json()["voices"]]
    assert names.count("Twin Voice") == 1 and len(set(names)) == len(names)
    assert speak(url, "The alias is the built-in voice.", voice="alloy").status_code == 200


def test_batch_job_runs_to_a_zip_and_bad_input_is_refused(supervised):
    url, prompt = supervised.url, PROMPTS / "libri_367.flac"
    first = httpx.post(f"{url}/v1/batch", json={"jsonl": batch_lines(2, "a", prompt), "name": "two", "seed": 3}, timeout=60)
    assert first.status_code == 202, first.text
    upload = {"file": ("one.jsonl", batch_lines(1, "b", prompt).encode())}
    second = httpx.post(f"{url}/v1/batch", files=upload, data={"name": "uploaded"}, timeout=60)
    assert second.status_code == 202, second.text
    first_id, second_id = first.json()["id"], second.json()["id"]

    cancelled = httpx.post(f"{url}/v1/batch/{second_id}/cancel", timeout=30)  # still queued behind the first
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert httpx.get(f"{url}/v1/batch/{second_id}/download").status_code == 409
    done = wait_job(url, first_id, "done")
    assert (done["ok"], done["errors"], done["options"]["seed"]) == (2, 0, 3)
    assert httpx.post(f"{url}/v1/batch/{second_id}/resume", timeout=30).status_code == 202
    wait_job(url, second_id, "done")

    download = httpx.get(f"{url}/v1/batch/{first_id}/download", timeout=60)
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(download.content)) as bundle:
        names = {Path(name).name for name in bundle.namelist()}
        manifest = [json.loads(line) for line in bundle.read(f"{first_id}/manifest.jsonl").decode().splitlines()]
    assert names == {"a0.wav", "a0.srt", "a1.wav", "a1.srt", "manifest.jsonl"}
    assert [record["uttid"] for record in manifest] == ["a0", "a1"] and all(r["status"] == "ok" for r in manifest)
    assert {first_id, second_id} <= {job["id"] for job in httpx.get(f"{url}/v1/batch").json()["jobs"]}

    malformed = httpx.post(f"{url}/v1/batch", json={"jsonl": batch_lines(1, "c", prompt) + "\n{oops"}, timeout=30)
    assert malformed.status_code == 400 and "line 2" in malformed.text
    outside = json.dumps({"uttid": "x", "prompt_text": "", "prompt_speech": "/etc/hostname", "syn_text": "hi"})
    escaped = httpx.post(f"{url}/v1/batch", json={"jsonl": outside}, timeout=30)
    assert escaped.status_code == 400 and "outside the allowed folders" in escaped.text
    too_many = httpx.post(f"{url}/v1/batch", json={"jsonl": batch_lines(1001, "d", prompt)}, timeout=60)
    assert too_many.status_code == 413
    assert httpx.post(f"{url}/v1/batch", json={"jsonl": "", "colour": "red"}, timeout=30).status_code == 422
    assert httpx.post(f"{url}/v1/batch", content=b"hello", headers={"content-type": "text/plain"}).status_code == 415
    assert httpx.get(f"{url}/v1/batch/no-such-job").status_code == 404
    assert httpx.post(f"{url}/v1/batch/{first_id}/cancel").status_code == 409


def test_crash_mid_job_restart_resume_and_saved_voice_survive(supervised, tmp_path):
    url, prompt = supervised.url, PROMPTS / "libri_2414.flac"
    voice = create_voice(url, PROMPTS / "libri_1688.flac", "Survivor", "A prompt with its transcript.").json()
    key = json.loads((supervised.outputs / "voices" / voice["id"] / "meta.json").read_text())["key"]
    done_before = {job["id"] for job in httpx.get(f"{url}/v1/batch").json()["jobs"] if job["status"] == "done"}
    job_id = httpx.post(f"{url}/v1/batch", json={"jsonl": batch_lines(8, "u", prompt), "name": "crash"}, timeout=60).json()["id"]
    page_job_id = submit_from_the_page(url, prompt, "page crash", tmp_path)  # queued behind the first

    wait_for(lambda: job_state(url, job_id)["done"] >= 2, JOB_TIMEOUT_S, "two finished items")
    victim = supervised.app_process()
    assert victim is not None
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    assert supervised.supervisor.poll() is None  # the supervisor lives on and restarts the app
    restarted = wait_for(
        lambda: (p := supervised.app_process()) is not None and p.pid != victim.pid and is_ready(url) and p,
        START_TIMEOUT_S,
        "the restarted app",
    )
    assert restarted.pid != victim.pid

    interrupted = job_state(url, job_id)
    assert interrupted["status"] == "interrupted", interrupted
    finished = [item["uttid"] for item in interrupted["items"] if item["status"] == "ok"]
    assert 2 <= interrupted["done"] == len(finished) < 8
    assert finished == [f"u{i}" for i in range(len(finished))]
    jobs_after = {job["id"]: job["status"] for job in httpx.get(f"{url}/v1/batch").json()["jobs"]}
    assert all(jobs_after[job] == "done" for job in done_before)

    # The saved voice came back: listed at once, its stored analysis decoded at first use, never refitted.
    reloaded = httpx.get(f"{url}/v1/voices/{voice['id']}").json()
    assert reloaded["features"] == "pending" and reloaded["prompt_text"] == "A prompt with its transcript."
    assert speak(url, "Back after a crash.", voice=voice["id"]).status_code == 200
    assert httpx.get(f"{url}/v1/voices/{voice['id']}").json()["features"] == "stored"
    assert f"Voice {key[:8]} fitted" not in supervised.log_text().rsplit("start_app: server died", 1)[1]

    assert httpx.post(f"{url}/v1/batch/{job_id}/resume", timeout=30).status_code == 202
    wait_job(url, job_id, "done")
    # The page's job, queued at the crash, resumes from the page; its uploaded prompt was kept.
    assert job_state(url, page_job_id)["status"] == "interrupted"
    *_, summary = page_client(url).predict(page_job_id, api_name="/resume_job")
    assert summary.startswith(f"Job {page_job_id} done: 3 of 3 items ok"), summary
    manifest = (supervised.outputs / "batch" / job_id / "manifest.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["uttid"] for line in manifest) == [f"u{i}" for i in range(8)]
    with zipfile.ZipFile(io.BytesIO(httpx.get(f"{url}/v1/batch/{job_id}/download", timeout=60).content)) as bundle:
        wavs = sorted(Path(name).name for name in bundle.namelist() if name.endswith(".wav"))
    assert wavs == [f"u{i}.wav" for i in range(8)]

    assert httpx.delete(f"{url}/v1/voices/{voice['id']}").status_code == 200
    assert httpx.get(f"{url}/v1/voices/{voice['id']}").status_code == 404
    assert not (supervised.outputs / "voices" / voice["id"]).exists()
    assert speak(url, "Gone.", voice=voice["id"]).status_code == 400


def test_files_under_outputs_are_never_served_by_path(supervised):
    """Gradio's file route serves what a session's callbacks returned, not logs, prompts, job inputs or zips."""
    url, outputs = supervised.url, supervised.outputs
    private = [path for pattern in ("voices/*/*", "batch/*/input.jsonl", "batch/*/job.json", "batch/*.zip", "uploads/*",
                                    "single/*.wav")
               for path in outputs.glob(pattern)]  # fmt: skip
    private += Path(os.environ.get("GLMTTS_CACHE") or outputs / "cache").glob("**/*.npz")  # the app's cache
    private += list((ROOT / "outputs" / "logs").glob("*.log"))[:2]
    assert len(private) >= 6, private
    for path in private:
        for route in ("/gradio_api/file=", "/file="):
            response = httpx.get(f"{url}{route}{path}", timeout=30)
            assert response.status_code in (403, 404), f"{route}{path}: {response.status_code}"
