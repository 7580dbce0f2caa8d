"""The Phoneme tab: text -> its phoneme sequence (after the replace dictionary), edited, then spoken;
and the replace dictionary itself, validated and saved (in effect at once)."""

from __future__ import annotations

import gradio as gr

from glmtts.files import atomic_output
from glmtts.frontend.replace_dict import parse_replace_dict
from glmtts.types import SynthesisError
from glmtts.ui.examples import PHONEME_EXAMPLES, add_examples
from glmtts.ui.i18n import label, language_of, page_text
from glmtts.ui.single import make_synthesize
from glmtts.ui.widgets import PRIVATE, PageContext, live_player


def validate_replace_dict(text: str, page: gr.Request) -> str:
    language = language_of(page)
    try:
        entries = parse_replace_dict(text)
    except ValueError as error:
        return page_text("phoneme.invalid", language, error=error)
    return page_text("phoneme.valid", language, count=len(entries))


def build_replace_dict_editor(ctx: PageContext) -> None:
    settings = ctx.service.settings

    def save_replace_dict(text: str, page: gr.Request) -> str:
        language = language_of(page)
        try:
            entries = parse_replace_dict(text)
        except ValueError as error:
            raise gr.Error(page_text("phoneme.not_saved", language, error=error)) from error
        with atomic_output(settings.replace_dict, "w") as handle:
            handle.write(text.strip() + "\n")
        ctx.service.frontend.reload_replace_dict()
        return page_text("phoneme.saved", language, count=len(entries), file=settings.replace_dict.name)

    current = settings.replace_dict.read_text(encoding="utf-8") if settings.replace_dict.exists() else ""
    with gr.Accordion(label("phoneme.dict"), open=False):
        dict_text = gr.Code(current, language=None, label=label("phoneme.dict_text"))
        with gr.Row():
            validate = gr.Button(label("phoneme.validate"))
            save = gr.Button(label("phoneme.save"))
        dict_status = gr.Markdown()
        validate.click(validate_replace_dict, dict_text, dict_status, api_visibility=PRIVATE)
        save.click(
            save_replace_dict, dict_text, dict_status, api_visibility=PRIVATE
        )  # a write: the page may, API clients may not


def build_phoneme_tab(ctx: PageContext, demo: gr.Blocks) -> None:
    gr.Markdown(label("phoneme.intro"))

    def to_phonemes(text: str) -> str:
        """Text -> its phoneme sequence, as `synthesize` reads it with use_phoneme=True."""
        try:
            return ctx.service.pipeline.text_to_phoneme_text(text)
        except SynthesisError as error:
            raise gr.Error(str(error)) from error

    upload, voice, prompt_text = ctx.voice_inputs("phoneme")
    text = gr.Textbox(label=label("phoneme.text"), lines=3, elem_id="phoneme-text")
    to_sequence = gr.Button(label("phoneme.to_sequence"))
    sequence = gr.Textbox(label=label("phoneme.sequence"), lines=5, elem_id="phoneme-sequence")
    add_examples(PHONEME_EXAMPLES, [text, voice, sequence], ctx.service.voices.builtin_dir, "phoneme-examples", demo)
    options = ctx.option_inputs()
    generate = gr.Button(label("phoneme.generate"), variant="primary")
    live = live_player("phoneme-live")
    output = gr.Audio(label=label("form.output"), type="filepath", buttons=["download"])
    status = gr.Markdown()
    timings = gr.JSON(visible=False)
    normalized = gr.Textbox(visible=False)
    phoneme_mode = gr.Checkbox(True, visible=False)
    to_sequence.click(to_phonemes, text, sequence, api_name="to_phonemes")
    generate.click(  # the API's /synthesize with use_phoneme=True does the same
        make_synthesize(ctx, live, output, timings, status, normalized),
        [sequence, upload, voice, prompt_text, *options, phoneme_mode],
        [c for c in (live, output, timings, status, normalized) if c is not None],
        api_visibility=PRIVATE,
        show_progress="minimal",
    )
    build_replace_dict_editor(ctx)
