"""The Voices tab: keep a cloned voice from the page, hear it, rename or delete it, and move it to
another machine as one file (glmtts.voice_file), with the rules of /v1/voices (names, limits, the key).

Every change refreshes the voice lists of the other tabs at once.
"""

from __future__ import annotations

import secrets
from contextlib import contextmanager
from pathlib import Path

import gradio as gr

from glmtts.files import StorageError
from glmtts.types import SynthesisError
from glmtts.ui.i18n import TEXTS, label, language_of, page_text
from glmtts.ui.widgets import PRIVATE, PageContext
from glmtts.voices import BuiltinVoice, VoiceExists, VoiceInfo, VoiceLimit, VoiceNameTaken, VoiceNotFound

VOICE_ERRORS = (SynthesisError, VoiceExists, VoiceNameTaken, VoiceLimit, BuiltinVoice, VoiceNotFound, StorageError)
COLUMNS = ["name", "id", "kind", "language", "seconds", "saved"]


def voice_row(info: VoiceInfo, language: str) -> list[object]:
    kind = page_text("voices.builtin" if info.builtin else "voices.saved_kind", language)
    spoken = f"voices.language.{info.to_json()['language']}"  # what the prompt speaks: en, zh, zh+en or unknown
    saved = info.created.replace("T", " ").removesuffix("+00:00")
    duration = round(info.duration_s, 1) if info.duration_s else None
    return [info.name, info.id, kind, page_text(spoken, language) if spoken in TEXTS else "—", duration, saved]


def voice_table(described: list[VoiceInfo], language: str) -> dict[str, object]:
    """The voices as a Dataframe value, headers in the page's language."""
    headers = [page_text(f"voices.column.{column}", language) for column in COLUMNS]
    return {"headers": headers, "data": [voice_row(info, language) for info in described]}


def voice_label(info: VoiceInfo) -> str:
    return info.name if info.builtin or info.name == info.id else f"{info.name} ({info.id})"


class VoiceCallbacks:
    """The tab's actions over the voice library; each answers a status line and the refreshed lists."""

    def __init__(self, ctx: PageContext, table: gr.Dataframe, chosen: gr.Dropdown, status: gr.Markdown):
        self.ctx = ctx
        self.library = ctx.service.voices
        self.lists = [status, table, chosen, *ctx.voice_dropdowns]

    def refreshed(self, message: str, language: str, chosen: str | None = None) -> list[object]:
        """(status, table, the tab's choice, every other tab's voice list) after a change."""
        described = self.library.describe()
        choices = [(voice_label(info), info.id) for info in described]
        ids = [info.id for info in described]
        chosen = chosen if chosen in ids else (ids[0] if ids else None)
        others = [gr.Dropdown(choices=self.library.names())] * len(self.ctx.voice_dropdowns)
        table = voice_table(described, language)
        return [message, table, gr.Dropdown(choices=choices, value=chosen), *others]

    def show(self, page: gr.Request) -> list[object]:
        """(status, table, the tab's choice) when the page loads (the other lists load themselves)."""
        return self.refreshed("", language_of(page))[:3]

    def save(self, prompt_audio: str | None, name: str, transcript: str, page: gr.Request) -> list[object]:
        language = language_of(page)
        self.ctx.require_ready(language)
        if not prompt_audio:
            raise gr.Error(page_text("voices.need_prompt", language))
        with _as_page_error():
            prompt = self.ctx.uploaded(prompt_audio, language).read_bytes()
            info = self.library.create(prompt, transcript or "", name or "")
        return self.refreshed(page_text("voices.saved", language, name=info.name, id=info.id), language, info.id)

    def rename(self, voice_id: str | None, new_name: str, page: gr.Request) -> list[object]:
        language = language_of(page)
        with _as_page_error():
            info = self.library.rename(_chosen(voice_id, language), new_name or "")
        return self.refreshed(page_text("voices.renamed", language, name=info.name), language, info.id)

    def delete(self, voice_id: str | None, page: gr.Request) -> list[object]:
        language = language_of(page)
        with _as_page_error():
            self.library.delete(_chosen(voice_id, language))
        return self.refreshed(page_text("voices.deleted", language, id=voice_id), language)

    def import_file(self, path: str | None, name: str, page: gr.Request) -> list[object]:
        language = language_of(page)
        self.ctx.require_ready(language)
        if not path:
            raise gr.Error(page_text("voices.need_file", language))
        with _as_page_error():
            info = self.library.import_voice(self.ctx.uploaded(path, language).read_bytes(), name or "")
        return self.refreshed(page_text("voices.imported", language, name=info.name, id=info.id), language, info.id)

    def play(self, voice_id: str | None, page: gr.Request):
        """The chosen voice's prompt, to hear what it sounds like: (rate, samples) for the player."""
        with _as_page_error():
            samples, rate = self.library.prompt_audio(_chosen(voice_id, language_of(page)))
        return rate, samples

    def export(self, voice_id: str | None, into: gr.File, language: str) -> str:
        """The chosen voice as one file in `into`'s Gradio cache, served to this session only."""
        self.ctx.require_ready(language)
        with _as_page_error():
            filename, data = self.library.export(_chosen(voice_id, language))
            path = Path(into.GRADIO_CACHE) / secrets.token_hex(16) / filename
            path.parent.mkdir(parents=True)
            path.write_bytes(data)
        return str(path)


def _chosen(voice_id: str | None, language: str) -> str:
    if not voice_id:
        raise gr.Error(page_text("voices.need_choice", language))
    return voice_id


@contextmanager
def _as_page_error():
    """Library refusals (names, limits, a full disk) shown on the page as the API words them."""
    try:
        yield
    except (*VOICE_ERRORS, OSError) as error:
        raise gr.Error(str(error)) from error


def build_voices_tab(ctx: PageContext, demo: gr.Blocks) -> None:
    gr.Markdown(label("voices.intro"))
    with gr.Row():
        with gr.Column():
            prompt = gr.Audio(
                sources=["upload", "microphone"], type="filepath", label=label("voices.prompt"), elem_id="voices-prompt"
            )
            name = gr.Textbox(label=label("voices.name"), max_lines=1, elem_id="voices-name")
            transcript = gr.Textbox(label=label("voices.transcript"), lines=2, elem_id="voices-transcript")
            save = gr.Button(label("voices.save"), variant="primary", elem_id="voices-save")
        with gr.Column():
            chosen = gr.Dropdown(label=label("voices.chosen"), elem_id="voices-chosen")
            play = gr.Button(label("voices.play"), elem_id="voices-play")
            heard = gr.Audio(label=label("voices.heard"), interactive=False, elem_id="voices-heard")
            new_name = gr.Textbox(label=label("voices.new_name"), max_lines=1, elem_id="voices-new-name")
            with gr.Row():
                rename = gr.Button(label("voices.rename"), elem_id="voices-rename")
                delete = gr.Button(label("voices.delete"), variant="stop", elem_id="voices-delete")
                export = gr.Button(label("voices.export"), elem_id="voices-export")
            exported = gr.File(label=label("voices.exported"), interactive=False, elem_id="voices-exported")
    with gr.Accordion(label("voices.import_section"), open=False):
        voice_file = gr.File(label=label("voices.file"), file_types=[".zip"], type="filepath", elem_id="voices-file")
        imported_name = gr.Textbox(label=label("voices.imported_name"), max_lines=1)
        import_button = gr.Button(label("voices.import"), elem_id="voices-import")
    status = gr.Markdown(elem_id="voices-status")
    table = gr.Dataframe(voice_table([], "en"), interactive=False, elem_id="voices-table")  # the page's language on load

    callbacks = VoiceCallbacks(ctx, table, chosen, status)
    private = {"api_visibility": PRIVATE}  # the page's own writes; API clients use /v1/voices
    save.click(callbacks.save, [prompt, name, transcript], callbacks.lists, **private)
    rename.click(callbacks.rename, [chosen, new_name], callbacks.lists, **private)
    delete.click(callbacks.delete, chosen, callbacks.lists, **private)
    import_button.click(callbacks.import_file, [voice_file, imported_name], callbacks.lists, **private)
    play.click(callbacks.play, chosen, heard, **private)

    def export_chosen(voice_id: str | None, page: gr.Request) -> str:
        return callbacks.export(voice_id, exported, language_of(page))

    export.click(export_chosen, chosen, exported, **private)
    demo.load(callbacks.show, None, callbacks.lists[:3], **private)
