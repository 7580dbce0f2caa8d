"""Examples for the WebUI's Single and Phoneme tabs: texts in each language with a built-in voice.

A click fills the form and starts nothing; an example whose voice this server lacks is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import gradio as gr

from glmtts.ui.i18n import DEFAULT_LANGUAGE, label, language_of, page_text
from glmtts.voices import PROMPT_EXTENSIONS


class Example(NamedTuple):
    language: str
    text: str
    voice: str
    phonemes: str = ""  # the Phoneme tab's editable sequence; empty: made from the text with "Text → phonemes"


SINGLE_EXAMPLES = [
    Example("English", "The quick brown fox jumps over the lazy dog, then naps in the afternoon sun.", "libri_367"),
    Example("English", "Welcome! Give me a few seconds of a voice, and I will read any text in it.", "libri_2414"),
    Example("Chinese", "今天天气很好，我们一起去公园散步吧。", "libri_1688"),
    Example("Chinese", "欢迎使用零样本语音合成，只需几秒钟的声音就能克隆一个音色。", "libri_1998"),
    Example("Mixed", "我今天用 GLM-TTS 做了一个 demo，效果 really good！", "libri_2414"),
]
PHONEME_EXAMPLES = [
    Example("Chinese", "他在台上弹琴，琴弦断了一根。", "libri_1688"),
    Example("English", "Please read the record before you record a new one.", "libri_367"),
    Example(
        "Phoneme tokens",
        "琴弦的声音。Say hello to everyone.",
        "libri_1998",
        "琴<|X|><|IAN2|>的声音。Say [[arpa: HH AH0 L OW1]] to everyone.",
    ),
]


def shipped_voices(prompt_dir: Path) -> list[str]:
    """The built-in voices' names from their prompt files, known before the voices have loaded."""
    if not prompt_dir.is_dir():
        return []
    return sorted(path.stem for path in prompt_dir.iterdir() if path.is_file() and path.suffix.lower() in PROMPT_EXTENSIONS)


def add_examples(examples: list[Example], inputs: list, prompt_dir: Path, elem_id: str, demo: gr.Blocks) -> None:
    """A table of `examples` under the form: a row gives `inputs` (text, voice[, phonemes]) its values.

    The page is built while the voices load: an example is offered when its prompt file is in `prompt_dir`.
    Its column headers are in the page's language: Gradio translates no table header, so the server
    writes them when the page loads."""
    shipped = shipped_voices(prompt_dir)
    rows = [[example.text, example.voice, example.phonemes][: len(inputs)] for example in examples if example.voice in shipped]
    if not rows:
        return
    table = gr.Examples(
        rows,
        inputs,
        label=label("form.examples"),
        cache_examples=False,
        run_on_click=False,
        api_name=elem_id.replace("-", "_"),
        api_visibility="private",
        elem_id=elem_id,
    ).dataset
    header_keys = [f"examples.column.{column}" for column in ("text", "voice", "phonemes")][: len(inputs)]
    table.headers = [page_text(key, DEFAULT_LANGUAGE) for key in header_keys]

    def headers(request: gr.Request) -> gr.Dataset:
        return gr.Dataset(headers=[page_text(key, language_of(request)) for key in header_keys])

    demo.load(headers, None, table, api_visibility="private")
