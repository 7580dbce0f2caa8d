"""The UI's Batch tab runs its work as server-side batch jobs: listed, cancelled and resumed from the page,
with each item in the manifest exactly once, and an uploaded prompt kept where a resumed job finds it."""

import json
import time
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT

PROMPT = ROOT / "examples" / "prompt" / "libri_2414.flac"
DEFAULT_OPTIONS = [42, "ras", 25, 0.8, 1.0, 1.0, 24000, True, False]  # seed ... use_phoneme, as the UI sends them
LINES_MODE = "One utterance a line"
SENTENCE = "This line is long enough that each batch item takes a moment to synthesize on the processor."
JOB_TIMEOUT_S = 300
LINES = 10  # enough that a cancel sent after the first item lands before the last


@pytest.fixture(scope="module")
def ui(app_server):
    from gradio_client import Client

    return Client(app_server.url + "/", verbose=False)


def lines_file(tmp_path, count: int) -> str:
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(f"Line {n}. {SENTENCE}" for n in range(1, count + 1)) + "\n", encoding="utf-8")
    return str(path)


def job_named(url: str, name: str) -> dict | None:
    return next((job for job in httpx.get(f"{url}/v1/batch", timeout=30).json()["jobs"] if job["name"] == name), None)


def wait_for(predicate, what: str):
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_lines_in_an_uploaded_voice_run_as_a_listed_job(ui, app_server, tmp_path):
    from gradio_client import handle_file

    args = [handle_file(lines_file(tmp_path, 2)), LINES_MODE, handle_file(str(PROMPT)), None, "", "ui lines", *DEFAULT_OPTIONS]
    table, archive, summary = ui.predict(*args, api_name="/batch")
    job = job_named(app_server.url, "ui lines")
    assert summary.startswith(f"Job {job['id']} done: 2 of 2 items ok"), summary
    assert [row[:2] for row in table["data"]] == [["0001", "ok"], ["0002", "ok"]]
    assert archive.endswith(f"{job['id']}.zip")

    submitted = [json.loads(line) for line in (app_server.outputs / "batch" / job["id"] / "input.jsonl").read_text().splitlines()]
    kept = {Path(line["prompt_speech"]) for line in submitted}
    assert len(kept) == 1 and (kept := kept.pop()).parent == app_server.outputs / "uploads"
    assert kept.read_bytes() == PROMPT.read_bytes()  # a copy in outputs/uploads, not Gradio's temporary file

    shown_table, shown_archive, shown_summary = ui.predict(job["id"], api_name="/show_job")
    assert (shown_table, shown_archive, shown_summary) == (table, archive, summary)


def test_a_job_cancelled_from_the_page_resumes_where_it_stopped(ui, app_server, tmp_path):
    from gradio_client import handle_file

    args = [handle_file(lines_file(tmp_path, LINES)), LINES_MODE, None, "libri_1688", "", "ui resume", *DEFAULT_OPTIONS]
    follower = ui.submit(*args, api_name="/batch")
    job_id = wait_for(
        lambda: (job := job_named(app_server.url, "ui resume")) and job["done"] >= 1 and job["id"], "one finished item"
    )
    assert "the current item stops" in ui.predict(job_id, api_name="/cancel_job")
    cancelled = follower.result(timeout=JOB_TIMEOUT_S)[2]
    assert cancelled.startswith(f"Job {job_id} cancelled") and "Resume it below" in cancelled, cancelled
    finished_before = job_named(app_server.url, "ui resume")["done"]
    assert 1 <= finished_before < LINES

    table, _archive, summary = ui.predict(job_id, api_name="/resume_job")
    assert summary.startswith(f"Job {job_id} done: {LINES} of {LINES} items ok"), summary
    manifest = (app_server.outputs / "batch" / job_id / "manifest.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["uttid"] for line in manifest) == [f"{n:04d}" for n in range(1, LINES + 1)]
    assert [row[1] for row in table["data"]] == ["ok"] * LINES


def test_job_controls_explain_what_they_cannot_do(ui, app_server):
    from gradio_client.exceptions import AppError

    done = job_named(app_server.url, "ui lines")["id"]
    for api_name, job_id, message in [
        ("/resume_job", done, "only interrupted, cancelled, failed jobs can be resumed"),
        ("/cancel_job", done, "only queued or running jobs can be cancelled"),
        ("/resume_job", "no-such-job", "choose a job"),
        ("/show_job", "", "choose a job"),
        ("/show_job", "no-such-job", "there is no batch job"),
    ]:
        with pytest.raises(AppError) as caught:
            ui.predict(job_id, api_name=api_name)
        assert message in str(caught.value).lower(), (api_name, job_id, caught.value)
