"""What the page's tabs share: the page's hold on the service and the widgets every tab repeats."""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from glmtts.jobs.interface import JobLimit
from glmtts.openai_compat import OPENAI_SPEED_MAX, OPENAI_SPEED_MIN
from glmtts.options import check_options
from glmtts.scheduler import QueueFull, QueueTimeout
from glmtts.service import Service
from glmtts.types import Cancelled, SynthesisError, SynthesisOptions
from glmtts.ui.examples import shipped_voices
from glmtts.ui.i18n import label, page_text

# Gradio encodes streamed audio with an ffmpeg process; without one the live player is left out.
LIVE_PLAYBACK = shutil.which("ffmpeg") is not None
# The sampling widgets' starting values: a value left there is sent as None (the model's default).
SAMPLING_DEFAULTS = {"sampling": "ras", "top_k": 25, "top_p": 0.8, "temperature": 1.0}
USER_ERRORS = (SynthesisError, JobLimit, QueueFull, QueueTimeout, Cancelled)
PRIVATE = "private"  # an event the page uses and API clients do not see (Gradio's api_visibility)


class PageContext:
    """The page's hold on the service: readiness, uploads kept inside Gradio's upload folder, options
    checked against the engine, and the voice and option widgets each tab repeats (the voice
    dropdowns are refreshed on every page load, with the voices saved since the page was built)."""

    def __init__(self, service: Service):
        self.service = service
        self.engine = service.engine
        self.voices = service.voices.names() or shipped_voices(service.voices.builtin_dir)  # built while they load
        self.upload_root = Path(get_upload_folder()).resolve()
        self.voice_dropdowns: list[gr.Dropdown] = []

    def require_ready(self, language: str) -> None:
        if not self.service.warm:
            raise gr.Error(page_text("form.warming_up", language))

    def uploaded(self, path: str, language: str) -> Path:
        """A file the browser uploaded: it must lie in Gradio's upload folder, never elsewhere on the server."""
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.upload_root):
            raise gr.Error(page_text("form.upload_only", language))
        return resolved

    def prompt_of(self, upload: str | None, voice: str | None, language: str) -> Path | str | None:
        return self.uploaded(upload, language) if upload else (voice or None)

    def options_of(
        self, seed, sampling, top_k, top_p, temperature, speed, sample_rate, use_cache, use_phoneme, language: str
    ) -> SynthesisOptions:
        """Widget values -> checked options; a sampling value left at its widget's start is the model's default."""
        if seed is None:
            raise gr.Error(page_text("form.seed_missing", language))
        values = {"sampling": sampling, "top_k": top_k, "top_p": top_p, "temperature": temperature}
        untouched = {name: None for name, value in values.items() if value == SAMPLING_DEFAULTS[name]}
        raw = {**values, **untouched, "seed": seed, "speed": speed, "sample_rate": sample_rate}
        try:
            return check_options(self.engine, {**raw, "use_cache": bool(use_cache), "use_phoneme": bool(use_phoneme)})
        except SynthesisError as error:
            raise gr.Error(str(error)) from error

    def voice_inputs(self, tab: str) -> tuple[gr.Audio, gr.Dropdown, gr.Textbox]:
        """(prompt upload, voice, prompt transcript) in a row."""
        with gr.Row():
            upload = gr.Audio(sources=["upload", "microphone"], type="filepath", label=label("form.prompt_audio"))
            with gr.Column():
                voice = gr.Dropdown(  # custom values: voices saved after the page was built (checked by the library)
                    self.voices,
                    value=self.voices[0] if self.voices else None,
                    label=label("form.voice"),
                    allow_custom_value=True,
                    elem_id=f"{tab}-voice",
                )
                prompt_text = gr.Textbox(label=label("form.prompt_text"), lines=2)
        self.voice_dropdowns.append(voice)
        return upload, voice, prompt_text

    def option_inputs(self) -> list[gr.components.Component]:
        """[seed, sampling, top_k, top_p, temperature, speed, sample_rate, use_cache] in an accordion."""
        engine = self.engine
        with gr.Accordion(label("form.advanced"), open=False):
            with gr.Row():
                seed = gr.Number(42, label=label("form.seed"), precision=0)
                speed = gr.Slider(OPENAI_SPEED_MIN, OPENAI_SPEED_MAX, 1.0, step=0.05, label=label("form.speed"))
                sample_rate = gr.Dropdown(
                    list(engine.sample_rates), value=engine.sample_rates[0], label=label("form.sample_rate")
                )
            with gr.Row(visible=engine.samples):
                sampling = gr.Radio(["ras", "topk"], value=SAMPLING_DEFAULTS["sampling"], label=label("form.sampling"))
                top_k = gr.Slider(1, 100, SAMPLING_DEFAULTS["top_k"], step=1, label=label("form.top_k"))
                top_p = gr.Slider(0.1, 1.0, SAMPLING_DEFAULTS["top_p"], step=0.05, label=label("form.top_p"))
                temperature = gr.Slider(0.1, 2.0, SAMPLING_DEFAULTS["temperature"], step=0.05, label=label("form.temperature"))
                use_cache = gr.Checkbox(True, label=label("form.use_cache"))
        return [seed, sampling, top_k, top_p, temperature, speed, sample_rate, use_cache]

    def current_voices(self) -> list[gr.Dropdown]:
        """The voices loaded (and saved through /v1/voices) since the page was built, for every voice dropdown."""
        names = self.service.voices.names()
        return [gr.Dropdown(choices=names, value=names[0] if names else None)] * len(self.voice_dropdowns)


def live_player(elem_id: str) -> gr.Audio | None:
    """A player that starts with the first segment and plays each one as it arrives (None without ffmpeg)."""
    if not LIVE_PLAYBACK:
        return None
    return gr.Audio(
        label=label("form.live"),
        streaming=True,
        autoplay=True,
        interactive=False,
        buttons=[],
        elem_id=elem_id,
    )
