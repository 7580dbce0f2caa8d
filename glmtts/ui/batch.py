"""The Batch tab: a batch file becomes a job in the service's queue (the same as /v1/batch), which
the page follows; jobs survive a closed page or a crash and can be shown, resumed or cancelled."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import gradio as gr

from glmtts.files import atomic_output
from glmtts.jobs.batchfile import lines_to_jsonl
from glmtts.jobs.interface import DONE, QUEUED, RUNNING, UNFINISHED, JobNotFound, JobStateError
from glmtts.ui.i18n import TEXTS, label, language_of, page_text
from glmtts.ui.widgets import PRIVATE, USER_ERRORS, PageContext

JOB_POLL_S = 0.5
JSONL_MODE, LINES_MODE = "JSONL (GLM-TTS format)", "One utterance a line"  # the API's values of `mode`
JOB_COLUMNS = ["id", "name", "status", "done", "total", "ok", "errors", "created"]
ITEM_COLUMNS = ["uttid", "status", "seconds", "message"]


def state_name(state: str, language: str) -> str:
    """A job's or item's state in the page's words (a state the table lacks as it is)."""
    key = f"batch.state.{state}"
    return page_text(key, language) if key in TEXTS else state


def table_of(columns: list[str], rows: list[list[object]], language: str) -> dict[str, object]:
    """A Dataframe value whose headers are in the page's language."""
    return {"headers": [page_text(f"batch.column.{column}", language) for column in columns], "data": rows}


def job_summary(job: dict, language: str) -> str:
    """One line saying where a job stands, under its item table."""
    name, state, total, ok, done = job["id"], job["status"], job["total"], job["ok"], job["done"]
    numbers = {"name": name, "total": total, "ok": ok, "done": done}
    if state == QUEUED:
        return page_text("batch.job_queued", language, name=name)
    if state == RUNNING:
        running = job.get("running") or {}
        if job["cancelling"]:
            stopping = page_text("batch.stopping_many" if len(running) > 1 else "batch.stopping_one", language)
            return page_text("batch.job_cancelling", language, stopping=stopping, **numbers)
        items = page_text("batch.separator", language).join(
            page_text("batch.item_on", language, uttid=uttid, where=where) if where else uttid
            for uttid, where in sorted(running.items())
        )
        now = page_text("batch.job_now", language, items=items) if items else ""
        return page_text("batch.job_running", language, now=now, **numbers)
    if state == DONE:
        return page_text("batch.job_done", language, **numbers)
    message = page_text("batch.job_message", language, message=job["message"]) if job["message"] else ""
    return page_text("batch.job_stopped", language, state=state_name(state, language), message=message, **numbers)


class BatchCallbacks:
    """The tab's callbacks over the service's batch jobs: each maps widget values to one jobs call."""

    def __init__(self, ctx: PageContext):
        self.ctx, self.jobs = ctx, ctx.service.jobs

    def _keep_upload(self, path: Path) -> Path:
        """Copy an uploaded prompt into outputs/uploads (by content), where a resumed job finds it again."""
        data = path.read_bytes()
        kept = self.ctx.service.settings.uploads_dir / f"{hashlib.sha256(data).hexdigest()[:16]}{path.suffix.lower()}"
        if not kept.exists():
            with atomic_output(kept) as handle:
                handle.write(data)
        return kept

    def _jsonl(self, file, mode, prompt_audio, voice, prompt_text, language: str) -> str:
        if file is None:
            raise gr.Error(page_text("batch.no_file", language))
        try:
            text = self.ctx.uploaded(file, language).read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise gr.Error(page_text("batch.not_utf8", language)) from error
        if mode == JSONL_MODE:
            return text
        if prompt_audio:
            prompt = str(self._keep_upload(self.ctx.uploaded(prompt_audio, language)))
        else:
            prompt = voice or next(iter(self.ctx.service.voices.names()), None)
        if prompt is None:
            raise gr.Error(page_text("batch.no_voice", language))
        return lines_to_jsonl(text, prompt, prompt_text or "")

    async def run(
        self,
        file: str,
        mode: str = JSONL_MODE,
        prompt_audio: str | None = None,
        voice: str | None = None,
        prompt_text: str | None = None,
        job_name: str | None = None,
        seed: int | None = None,
        sampling: str | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float | None = None,
        speed: float | None = None,
        sample_rate: int | None = None,
        use_cache: bool = True,
        use_phoneme: bool = False,
        page: gr.Request | None = None,
    ):
        """Submit a batch file as a job and follow it: (item rows, zip when done, summary)."""
        language = language_of(page)
        self.ctx.require_ready(language)
        options = self.ctx.options_of(
            seed, sampling, top_k, top_p, temperature, speed, sample_rate, use_cache, use_phoneme, language
        )
        try:
            jsonl = self._jsonl(file, mode, prompt_audio, voice, prompt_text, language)
            job_id = await asyncio.to_thread(self.jobs.submit, jsonl, options, job_name or "", strict=False)
        except USER_ERRORS as error:
            raise gr.Error(str(error)) from error
        except OSError as error:  # an uploaded file that vanished, or a full disk
            raise gr.Error(page_text("batch.not_stored", language, kind=type(error).__name__, error=error)) from error
        async for update in self.follow(job_id, language):
            yield update

    async def follow(self, job_id: str, language: str):
        """(item rows, zip, summary) now, and again as the job moves on, until it stops running."""
        while True:
            try:
                job = self.jobs.progress(job_id)
            except JobNotFound as error:
                raise gr.Error(page_text("batch.no_such_job", language, job=job_id)) from error
            rows = [
                [item["uttid"], state_name(item["status"], language), item.get("duration_s"), item.get("message") or ""]
                for item in job["items"]
            ]
            archive = str(self.jobs.archive(job_id)) if job["status"] == DONE else None
            yield table_of(ITEM_COLUMNS, rows, language), archive, job_summary(job, language)
            if job["status"] not in UNFINISHED:
                return
            await asyncio.sleep(JOB_POLL_S)

    def overview(self, page: gr.Request):
        language = language_of(page)
        listed = self.jobs.list()
        rows = [[state_name(job[c], language) if c == "status" else job[c] for c in JOB_COLUMNS] for job in listed]
        return table_of(JOB_COLUMNS, rows, language), gr.Dropdown(choices=[job["id"] for job in listed])

    def empty_items(self, page: gr.Request):
        """The item table before any job is shown, with headers in the page's language."""
        return table_of(ITEM_COLUMNS, [], language_of(page))

    async def show_job(self, job_id: str, page: gr.Request | None = None):
        """Follow a job: (item rows, zip when done, summary)."""
        language = language_of(page)
        if not job_id:
            raise gr.Error(page_text("batch.choose_job", language))
        async for update in self.follow(job_id, language):
            yield update

    async def resume_job(self, job_id: str, page: gr.Request | None = None):
        """Run a cancelled or interrupted job's remaining items, and follow it."""
        language = language_of(page)
        try:
            self.jobs.resume(job_id or "")
        except JobNotFound as error:
            raise gr.Error(page_text("batch.choose_job", language)) from error
        except JobStateError as error:
            raise gr.Error(str(error)) from error
        async for update in self.follow(job_id, language):
            yield update

    def cancel_job(self, job_id: str, page: gr.Request | None = None) -> str:
        """Cancel a queued or running job (its running item stops)."""
        language = language_of(page)
        try:
            job = self.jobs.cancel(job_id or "")
        except JobNotFound as error:
            raise gr.Error(page_text("batch.choose_job", language)) from error
        except JobStateError as error:
            raise gr.Error(str(error)) from error
        return job_summary(job, language)  # says "cancelling" while its running items stop


def pick_job(selected: gr.SelectData) -> str:
    return selected.row_value[0]  # a click anywhere in a job's row chooses that job


def build_batch_tab(ctx: PageContext, demo: gr.Blocks) -> None:
    gr.Markdown(label("batch.intro"))
    callbacks = BatchCallbacks(ctx)
    batch_file = gr.File(label=label("batch.file"), file_types=[".jsonl", ".txt"], type="filepath", elem_id="batch-file")
    modes = [(label("batch.mode_jsonl"), JSONL_MODE), (label("batch.mode_lines"), LINES_MODE)]
    mode = gr.Radio(modes, value=JSONL_MODE, label=label("batch.format"))
    upload, voice, prompt_text = ctx.voice_inputs("batch")
    job_name = gr.Textbox(label=label("batch.job_name"))
    options = ctx.option_inputs()
    use_phoneme = gr.Checkbox(False, label=label("batch.use_phoneme"))
    run = gr.Button(label("batch.run"), variant="primary", elem_id="batch-run")
    summary = gr.Markdown(elem_id="batch-summary")
    table = gr.Dataframe(headers=ITEM_COLUMNS, label=label("batch.items"), interactive=False)
    archive = gr.File(label=label("batch.zip"), elem_id="batch-zip")
    job_view = [table, archive, summary]
    with gr.Accordion(label("batch.jobs"), open=False):
        jobs_table = gr.Dataframe(headers=JOB_COLUMNS, label=label("batch.jobs_table"), interactive=False)
        with gr.Row():
            job_choice = gr.Dropdown(
                [], label=label("batch.job"), allow_custom_value=True, scale=2, min_width=260, elem_id="job-choice"
            )
            refresh_jobs = gr.Button(label("batch.refresh"))
            show = gr.Button(label("batch.show"))
            resume = gr.Button(label("batch.resume"), elem_id="job-resume")
            cancel = gr.Button(label("batch.cancel"), variant="stop")
    jobs_list = [jobs_table, job_choice]
    overview = {"fn": callbacks.overview, "inputs": None, "outputs": jobs_list, "api_visibility": PRIVATE}
    following = {"concurrency_limit": None}  # the job runs in the batch queue; these only follow it
    run.click(
        callbacks.run,
        [batch_file, mode, upload, voice, prompt_text, job_name, *options, use_phoneme],
        job_view,
        api_name="batch",
        **following,
    ).then(**overview)
    refresh_jobs.click(**overview)
    jobs_table.select(pick_job, None, job_choice, api_visibility=PRIVATE)
    show.click(callbacks.show_job, job_choice, job_view, api_name="show_job", **following)
    resume.click(callbacks.resume_job, job_choice, job_view, api_name="resume_job", **following).then(**overview)
    cancel.click(callbacks.cancel_job, job_choice, summary, api_name="cancel_job").then(**overview)
    demo.load(**overview)
    demo.load(callbacks.empty_items, None, table, api_visibility=PRIVATE)
