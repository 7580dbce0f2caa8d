"""The Gradio WebUI: a tab per task, each a module of thin callbacks over the service.

Files a callback returns are served from Gradio's cache, to the session that asked; nothing under
outputs/ is served by path. The API Gradio clients see is the events given an `api_name`
(synthesize, to_phonemes, batch, show_job, resume_job, cancel_job); the page's other events are private.
The page speaks English or Chinese, by the browser's language or its switch (glmtts/ui/i18n.py).
"""

from __future__ import annotations

import gradio as gr

from glmtts.service import Service
from glmtts.ui.batch import build_batch_tab
from glmtts.ui.i18n import PAGE_I18N, add_language_switch, label, language_of, page_text, server_phrase
from glmtts.ui.phoneme import build_phoneme_tab
from glmtts.ui.single import build_single_tab
from glmtts.ui.system import build_system_tab
from glmtts.ui.voices import build_voices_tab
from glmtts.ui.widgets import LIVE_PLAYBACK, PRIVATE, PageContext

__all__ = ["LIVE_PLAYBACK", "PAGE_I18N", "build_ui"]


def build_ui(service: Service) -> gr.Blocks:
    """The page; batch work goes to the service's jobs, the same queue as /v1/batch, so it survives a closed page or a crash.

    Its words are in English and Chinese: mount it with `i18n=PAGE_I18N` (glmtts.ui.i18n)."""
    ctx = PageContext(service)
    # (title's i18n key, builder(ctx, demo)) in page order: a new tab is one more line here (and its title in i18n.py).
    tabs = [
        ("tab.single", build_single_tab),
        ("tab.batch", build_batch_tab),
        ("tab.phoneme", build_phoneme_tab),
        ("tab.voices", build_voices_tab),  # after the tabs whose voice lists it refreshes
        ("tab.system", build_system_tab),
    ]

    def engine_line(page: gr.Request) -> str:
        language = language_of(page)
        reason = server_phrase(service.engine_reason, language)
        return page_text("page.engine", language, engine=service.engine.name, device=service.device, reason=reason)

    with gr.Blocks(title="GLM-TTS warm WebUI") as demo:
        with gr.Row(equal_height=True):
            with gr.Column(scale=1):
                gr.Markdown(label("page.intro"))
                engine = gr.Markdown(elem_id="page-engine")
            add_language_switch(demo)
        for title, build_tab in tabs:
            with gr.Tab(label(title)):
                build_tab(ctx, demo)
        demo.load(engine_line, None, engine, api_visibility=PRIVATE)
        demo.load(ctx.current_voices, None, ctx.voice_dropdowns, api_visibility=PRIVATE)
    return demo
