"""The Gradio WebUI: thin callbacks that turn widget values into requests to the service.

Files a callback returns are copied into Gradio's cache and served from there, to the session
that asked; nothing under outputs/ is served by path.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from glmtts.audio import write_wav
from glmtts.batch import lines_to_jsonl
from glmtts.encoders import encode_audio
from glmtts.files import atomic_output
from glmtts.frontend.replace_dict import parse_replace_dict
from glmtts.jobs import DONE, UNFINISHED, JobLimit, JobNotFound, JobStateError
from glmtts.options import check_options
from glmtts.pipeline import SynthesisRequest, playable
from glmtts.scheduler import QueueFull, QueueTimeout
from glmtts.service import Service
from glmtts.types import Cancelled, SynthesisError, SynthesisOptions
from glmtts.ui_examples import PHONEME_EXAMPLES, SINGLE_EXAMPLES, add_examples, shipped_voices
from glmtts.ui_system import build_system_tab

_LOGGER = logging.getLogger(__name__)

# Gradio encodes streamed audio with an ffmpeg process; without one the live player is left out.
LIVE_PLAYBACK = shutil.which("ffmpeg") is not None
JOB_POLL_S = 0.5
JSONL_MODE, LINES_MODE = "JSONL (GLM-TTS format)", "One utterance a line"
JOB_COLUMNS = ["id", "name", "status", "done", "total", "ok", "errors", "created"]
# The sampling widgets' starting values: a value left there is sent as None (the model's default).
SAMPLING_DEFAULTS = {"sampling": "ras", "top_k": 25, "top_p": 0.8, "temperature": 1.0}
USER_ERRORS = (SynthesisError, JobLimit, QueueFull, QueueTimeout, Cancelled)


def build_ui(service: Service) -> gr.Blocks:
    """The UI; batch work goes to the service's jobs, the same queue as /v1/batch, so it survives a closed page or a crash."""
    engine, pipeline, jobs, settings = service.engine, service.pipeline, service.jobs, service.settings
    voices = service.voices.names() or shipped_voices(service.voices.builtin_dir)  # the page is built while they load
    singles_dir = settings.outputs / "single"
    upload_root = Path(get_upload_folder()).resolve()

    def require_ready() -> None:
        if not service.warm:
            raise gr.Error("The model is still warming up; try again in a few seconds.")

    def uploaded(path: str) -> Path:
        """A file the browser uploaded: it must lie in Gradio's upload folder, never elsewhere on the server."""
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(upload_root):
            raise gr.Error("Upload the file through the page; paths on the server are not accepted.")
        return resolved

    def prompt_of(upload: str | None, voice: str | None) -> Path | str | None:
        return uploaded(upload) if upload else (voice or None)

    def options_of(seed, sampling, top_k, top_p, temperature, speed, sample_rate, use_cache, use_phoneme) -> SynthesisOptions:
        if seed is None:
            raise gr.Error("Give a seed (a whole number).")
        values = {"sampling": sampling, "top_k": top_k, "top_p": top_p, "temperature": temperature}
        untouched = {name: None for name, value in values.items() if value == SAMPLING_DEFAULTS[name]}
        raw = {**values, **untouched, "seed": seed, "speed": speed, "sample_rate": sample_rate}
        try:
            return check_options(engine, {**raw, "use_cache": bool(use_cache), "use_phoneme": bool(use_phoneme)})
        except SynthesisError as error:
            raise gr.Error(str(error)) from error

    def make_synthesize(live: gr.Audio | None, output: gr.Audio, timings: gr.JSON, status: gr.Markdown, normalized: gr.Textbox):
        """A callback that plays each segment on `live` as it finishes, then gives the whole file.

        It maps the page to a speech session: Gradio closes the generator of an event the user
        stopped or whose page closed, and the `finally` cancels the session."""

        async def synthesize(text, upload, voice, prompt_text, *option_values):
            require_ready()
            options = options_of(*option_values)
            session = service.start_speech(
                SynthesisRequest(text, prompt_of(upload, voice), prompt_text or "", options), keep=True
            )
            try:
                async for chunk in session:
                    update = {status: f"Speaking… segment {chunk.index + 1} of {chunk.total} ready."}
                    if live is not None:
                        update[live] = encode_audio(playable(chunk), chunk.sample_rate, "wav")
                    yield update
                result = await session.result()
            except USER_ERRORS as error:  # TimeLimitExceeded included
                raise gr.Error(str(error)) from error
            finally:
                session.cancel()
            name = f"{time.strftime('%Y%m%d-%H%M%S')}_{options.seed}.wav"
            path = await asyncio.to_thread(write_wav, singles_dir / name, result.audio, result.sample_rate)
            summary = {stage: round(seconds, 3) for stage, seconds in result.timings.items()}
            first_audio_s = session.first_audio_s
            summary.update(first_audio_s=round(first_audio_s, 3), audio_s=round(result.duration_s, 2), rtf=round(result.rtf, 3))
            notes = "".join(f" Note: {note}." for note in result.notes)
            yield {
                output: str(path),
                timings: summary,
                status: f"Done: {result.duration_s:.1f} s of audio in {result.timings['total']:.2f} s (RTF {result.rtf:.3f}, "
                f"first audio after {first_audio_s:.2f} s), {len(result.segments)} segment(s).{notes}",
                normalized: result.normalized_text,
            }

        return synthesize

    def keep_upload(path: Path) -> Path:
        """Copy an uploaded prompt into outputs/uploads (by content), where a resumed job finds it again."""
        data = path.read_bytes()
        kept = settings.uploads_dir / f"{hashlib.sha256(data).hexdigest()[:16]}{path.suffix.lower()}"
        if not kept.exists():
            with atomic_output(kept) as handle:
                handle.write(data)
        return kept

    def batch_jsonl(file, mode, upload, voice, prompt_text) -> str:
        if file is None:
            raise gr.Error("Choose a batch file first.")
        try:
            text = uploaded(file).read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise gr.Error("The batch file is not UTF-8 text.") from error
        if mode == JSONL_MODE:
            return text
        prompt = str(keep_upload(uploaded(upload))) if upload else voice or next(iter(service.voices.names()), None)
        if prompt is None:
            raise gr.Error("Give a prompt voice for the utterances: upload one or choose a voice.")
        return lines_to_jsonl(text, prompt, prompt_text or "")

    async def run_batch_job(file, mode, upload, voice, prompt_text, job_name, *option_values):
        require_ready()
        options = options_of(*option_values)
        try:
            jsonl = batch_jsonl(file, mode, upload, voice, prompt_text)
            job_id = await asyncio.to_thread(jobs.submit, jsonl, options, job_name or "", strict=False)
        except USER_ERRORS as error:
            raise gr.Error(str(error)) from error
        except OSError as error:  # an uploaded file that vanished, or a full disk
            raise gr.Error(f"The batch could not be stored ({type(error).__name__}: {error}).") from error
        async for update in follow_job(job_id):
            yield update

    async def follow_job(job_id: str):
        """(item rows, zip, summary) now, and again as the job moves on, until it stops running."""
        while True:
            try:
                job = jobs.progress(job_id)
            except JobNotFound as error:
                raise gr.Error(f"There is no batch job {job_id!r}.") from error
            rows = [[i["uttid"], i["status"], i.get("duration_s"), i.get("message") or ""] for i in job["items"]]
            archive = str(jobs.archive(job_id)) if job["status"] == DONE else None
            yield rows, archive, job_summary(job)
            if job["status"] not in UNFINISHED:
                return
            await asyncio.sleep(JOB_POLL_S)

    def job_summary(job: dict) -> str:
        name, status, total, ok = job["id"], job["status"], job["total"], job["ok"]
        if status == "queued":
            return f"Job {name} is queued behind the batch jobs submitted before it."
        if status == "running":
            current = f"; now: {job['current']}" if job["current"] else ""
            return f"Job {name} running: {job['done']} of {total} finished ({ok} ok){current}."
        if status == DONE:
            return f"Job {name} done: {ok} of {total} items ok; files in outputs/batch/{name}/."
        message = f" ({job['message']})" if job["message"] else ""
        return f"Job {name} {status}{message}: {job['done']} of {total} finished, {ok} ok. Resume it below to run the rest."

    def jobs_overview():
        listed = jobs.list()
        rows = [[job[column] for column in JOB_COLUMNS] for job in listed]
        return rows, gr.Dropdown(choices=[job["id"] for job in listed])

    def pick_job(selected: gr.SelectData) -> str:
        return selected.row_value[0]  # a click anywhere in a job's row chooses that job

    async def resume_job(job_id):
        try:
            jobs.resume(job_id or "")
        except JobNotFound as error:
            raise gr.Error("Choose a job from the list first.") from error
        except JobStateError as error:
            raise gr.Error(str(error)) from error
        async for update in follow_job(job_id):
            yield update

    async def show_job(job_id):
        if not job_id:
            raise gr.Error("Choose a job from the list first.")
        async for update in follow_job(job_id):
            yield update

    def cancel_job(job_id):
        try:
            job = jobs.cancel(job_id or "")
        except JobNotFound as error:
            raise gr.Error("Choose a job from the list first.") from error
        except JobStateError as error:
            raise gr.Error(str(error)) from error
        return "Cancelling: the current item stops." if job["cancelling"] else job_summary(job)

    def to_phonemes(text):
        try:
            return pipeline.text_to_phoneme_text(text)
        except SynthesisError as error:
            raise gr.Error(str(error)) from error

    def replace_dict_text() -> str:
        path = settings.replace_dict
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def validate_replace_dict(text):
        try:
            entries = parse_replace_dict(text)
        except ValueError as error:
            return f"Invalid:\n{error}"
        return f"Valid: {len(entries)} entries."

    def save_replace_dict(text):
        try:
            entries = parse_replace_dict(text)
        except ValueError as error:
            raise gr.Error(f"Not saved: {error}") from error
        with atomic_output(settings.replace_dict, "w") as handle:
            handle.write(text.strip() + "\n")
        service.frontend.reload_replace_dict()
        return f"Saved {len(entries)} entries to {settings.replace_dict.name}; in effect now."

    with gr.Blocks(title="GLM-TTS warm WebUI") as demo:
        gr.Markdown(
            f"## Zero-shot TTS, always warm\nEngine **{engine.name}** on **{service.device}** "
            f"({service.engine_reason}). Give 3 to 10 s of a voice and any Chinese, English or mixed text."
        )

        voice_choices: list[gr.Dropdown] = []

        def voice_inputs(tab: str):
            with gr.Row():
                upload = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Prompt voice (upload or record)")
                with gr.Column():
                    voice = gr.Dropdown(  # custom values: voices saved after the page was built (checked by the library)
                        voices,
                        value=voices[0] if voices else None,
                        label="…or a built-in or saved voice",
                        allow_custom_value=True,
                        elem_id=f"{tab}-voice",
                    )
                    prompt_text = gr.Textbox(label="Prompt transcript (optional)", lines=2)
            voice_choices.append(voice)
            return upload, voice, prompt_text

        def live_player(elem_id: str) -> gr.Audio | None:
            if not LIVE_PLAYBACK:
                return None
            return gr.Audio(
                label="Live (plays as each sentence finishes)",
                streaming=True,
                autoplay=True,
                interactive=False,
                buttons=[],
                elem_id=elem_id,
            )

        def option_inputs():
            with gr.Accordion("Advanced settings", open=False):
                with gr.Row():
                    seed = gr.Number(42, label="Seed", precision=0)
                    low, high = engine.speed_range
                    speed = (
                        gr.Slider(low, high, 1.0, step=0.05, label="Speed")
                        if low < high
                        else gr.Number(low, label="Speed (the model sets its own pace)", interactive=False)
                    )
                    sample_rate = gr.Dropdown(list(engine.sample_rates), value=engine.sample_rates[0], label="Sample rate")
                with gr.Row(visible=engine.samples):
                    sampling = gr.Radio(["ras", "topk"], value=SAMPLING_DEFAULTS["sampling"], label="Sampling method")
                    top_k = gr.Slider(1, 100, SAMPLING_DEFAULTS["top_k"], step=1, label="Top-k")
                    top_p = gr.Slider(0.1, 1.0, SAMPLING_DEFAULTS["top_p"], step=0.05, label="Top-p")
                    temperature = gr.Slider(0.1, 2.0, SAMPLING_DEFAULTS["temperature"], step=0.05, label="Temperature")
                    use_cache = gr.Checkbox(True, label="Prompt-history cache for long text")
            return [seed, sampling, top_k, top_p, temperature, speed, sample_rate, use_cache]

        with gr.Tab("Single"):
            upload, voice, prompt_text = voice_inputs("single")
            text = gr.Textbox(label="Text to speak", lines=4, elem_id="single-text", placeholder="你好，世界! Hello world.")
            add_examples(SINGLE_EXAMPLES, [text, voice], service.voices.builtin_dir, "single-examples")
            options = option_inputs()
            use_phoneme = gr.Checkbox(False, label="Honour phoneme tokens in the text (<|SH|><|ANG1|>, [[ipa: ...]])")
            generate = gr.Button("Generate", variant="primary", elem_id="single-generate")
            live = live_player("single-live")
            output = gr.Audio(label="Output (whole file)", type="filepath", elem_id="single-output", buttons=["download"])
            status = gr.Markdown(elem_id="single-status")
            with gr.Accordion("Timings and normalized text", open=False):
                timings = gr.JSON(label="Timings (seconds)")
                normalized = gr.Textbox(label="Normalized text", interactive=False)
            generate.click(
                make_synthesize(live, output, timings, status, normalized),
                [text, upload, voice, prompt_text, *options, use_phoneme],
                [c for c in (live, output, timings, status, normalized) if c is not None],
                api_name="synthesize",
                show_progress="minimal",
            )

        with gr.Tab("Batch"):
            gr.Markdown(
                "A JSONL in the GLM-TTS format (`uttid`, `prompt_text`, `prompt_speech`, `syn_text`; `prompt_speech` "
                "is a voice name or a path inside `examples/`, `outputs/uploads/` or `outputs/voices/`), or a text "
                "file with one utterance a line spoken in the voice chosen below. Jobs run on the server: closing "
                "the page does not stop them, and a job cut short by a restart can be resumed under *Jobs*."
            )
            batch_file = gr.File(label="Batch file", file_types=[".jsonl", ".txt"], type="filepath", elem_id="batch-file")
            mode = gr.Radio([JSONL_MODE, LINES_MODE], value=JSONL_MODE, label="Format")
            b_upload, b_voice, b_prompt_text = voice_inputs("batch")
            job_name = gr.Textbox(label="Job name (optional)")
            b_options = option_inputs()
            b_use_phoneme = gr.Checkbox(False, label="Honour phoneme tokens")
            run = gr.Button("Run batch", variant="primary", elem_id="batch-run")
            summary = gr.Markdown(elem_id="batch-summary")
            table = gr.Dataframe(headers=["uttid", "status", "seconds", "message"], label="Items", interactive=False)
            archive = gr.File(label="Download all (zip)", elem_id="batch-zip")
            job_view = [table, archive, summary]
            with gr.Accordion("Jobs", open=False):
                jobs_table = gr.Dataframe(headers=JOB_COLUMNS, label="Batch jobs on this server, newest first", interactive=False)
                with gr.Row():
                    job_choice = gr.Dropdown(
                        [], label="Job", allow_custom_value=True, scale=2, min_width=260, elem_id="job-choice"
                    )
                    refresh_jobs = gr.Button("Refresh")
                    show = gr.Button("Show")
                    resume = gr.Button("Resume", elem_id="job-resume")
                    cancel = gr.Button("Cancel", variant="stop")
            jobs_list = [jobs_table, job_choice]
            run.click(
                run_batch_job,
                [batch_file, mode, b_upload, b_voice, b_prompt_text, job_name, *b_options, b_use_phoneme],
                job_view,
                api_name="batch",
                concurrency_limit=None,  # the job runs in the batch queue; this only follows it
            ).then(jobs_overview, None, jobs_list)
            refresh_jobs.click(jobs_overview, None, jobs_list)
            jobs_table.select(pick_job, None, job_choice)
            show.click(show_job, job_choice, job_view, api_name="show_job", concurrency_limit=None)
            resume.click(resume_job, job_choice, job_view, api_name="resume_job", concurrency_limit=None).then(
                jobs_overview, None, jobs_list
            )
            cancel.click(cancel_job, job_choice, summary, api_name="cancel_job").then(jobs_overview, None, jobs_list)
            demo.load(jobs_overview, None, jobs_list)

        with gr.Tab("Phoneme"):
            gr.Markdown(
                "Turn text into its phoneme sequence (after the replace dictionary), edit the tokens, and "
                "synthesize from the edited sequence. Chinese: `<|X|><|IAN2|>`; English: `[[arpa: HH AH0 L OW1]]` "
                "or `[[ipa: həˈloʊ]]`."
            )
            p_upload, p_voice, p_prompt_text = voice_inputs("phoneme")
            p_text = gr.Textbox(label="Text", lines=3, elem_id="phoneme-text")
            to_ph = gr.Button("Text → phonemes")
            p_sequence = gr.Textbox(label="Phoneme sequence (editable)", lines=5, elem_id="phoneme-sequence")
            add_examples(PHONEME_EXAMPLES, [p_text, p_voice, p_sequence], service.voices.builtin_dir, "phoneme-examples")
            p_options = option_inputs()
            p_generate = gr.Button("Synthesize from phonemes", variant="primary")
            p_live = live_player("phoneme-live")
            p_output = gr.Audio(label="Output (whole file)", type="filepath", buttons=["download"])
            p_status = gr.Markdown()
            p_timings = gr.JSON(visible=False)
            p_normalized = gr.Textbox(visible=False)
            to_ph.click(to_phonemes, p_text, p_sequence, api_name="to_phonemes")
            phoneme_mode = gr.Checkbox(True, visible=False)
            p_generate.click(
                make_synthesize(p_live, p_output, p_timings, p_status, p_normalized),
                [p_sequence, p_upload, p_voice, p_prompt_text, *p_options, phoneme_mode],
                [c for c in (p_live, p_output, p_timings, p_status, p_normalized) if c is not None],
                api_name="synthesize_phonemes",
                show_progress="minimal",
            )
            with gr.Accordion("Replace dictionary (configs/G2P_replace_dict.jsonl)", open=False):
                dict_text = gr.Code(replace_dict_text(), language=None, label='One {"surface": "replacement"} a line')
                with gr.Row():
                    validate = gr.Button("Validate")
                    save = gr.Button("Save")
                dict_status = gr.Markdown()
                validate.click(validate_replace_dict, dict_text, dict_status)
                save.click(save_replace_dict, dict_text, dict_status)

        with gr.Tab("System"):
            build_system_tab(service, demo)

        def current_voices():  # the voices loaded (and saved through /v1/voices) since the page was built
            names = service.voices.names()
            return [gr.Dropdown(choices=names, value=names[0] if names else None)] * len(voice_choices)

        demo.load(current_voices, None, voice_choices)
    return demo
