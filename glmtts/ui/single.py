"""The Single tab: one text spoken through a speech session, played segment by segment, with its
progress, a Stop button, and the whole file at the end.

`make_synthesize` is the page's one mapping to `Service.start_speech`; the Phoneme tab uses it too.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import gradio as gr

from glmtts.audio import write_wav
from glmtts.encoders import encode_audio
from glmtts.pipeline import SynthesisRequest, playable
from glmtts.types import AudioChunk, SynthesisResult
from glmtts.ui.examples import SINGLE_EXAMPLES, add_examples
from glmtts.ui.i18n import label, language_of, page_text
from glmtts.ui.widgets import USER_ERRORS, PageContext, live_player


def progress_text(chunk: AudioChunk, elapsed_s: float, language: str = "en") -> str:
    """Which segment is out of how many, and the time left at the pace so far (segments come in order)."""
    segment = "single.segment_ready" if chunk.final else "single.segment_playing"
    position = page_text(segment, language, index=chunk.index + 1, total=chunk.total)
    done = chunk.index + chunk.final
    if done == 0:
        return page_text("single.estimating", language, position=position)
    left_s = elapsed_s / done * (chunk.total - done)
    return page_text("single.time_left", language, position=position, seconds=left_s)


def done_text(result: SynthesisResult, first_audio_s: float, language: str) -> str:
    notes = "".join(page_text("single.note", language, note=note) for note in result.notes)
    return page_text(
        "single.done",
        language,
        duration=result.duration_s,
        total=result.timings["total"],
        rtf=result.rtf,
        first=first_audio_s,
        segments=len(result.segments),
        notes=notes,
    )


def make_synthesize(ctx: PageContext, live: gr.Audio | None, output: gr.Audio, timings: gr.JSON, status, normalized):
    """A callback that plays each segment on `live` as it finishes, then gives the whole file.

    It maps the page to a speech session: Gradio closes the generator of an event the user
    stopped or whose page closed, and the `finally` closes the session, which cancels it. The
    file is written once, into `output`'s Gradio cache, which serves it as it is (no copy).
    """

    async def synthesize(
        text: str,
        prompt_audio: str | None = None,
        voice: str | None = None,
        prompt_text: str | None = None,
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
        """Speak `text` in a voice; streams each segment, then returns the whole wav.

        Args:
            text: what to speak (Chinese, English or mixed).
            prompt_audio: 3 to 10 s of a voice to clone; when given, `voice` is ignored.
            voice: a built-in voice or a saved voice's id.
            prompt_text: what `prompt_audio` says (optional; it helps the model).
            seed: the random seed; the same text, voice and seed give the same audio.
            sampling: "ras" or "topk".
            top_k: candidates kept when sampling each token.
            top_p: probability mass kept when sampling each token.
            temperature: sampling temperature.
            speed: speaking speed, where the engine offers it.
            sample_rate: the output's sample rate in Hz.
            use_cache: carry the prompt history across the segments of a long text.
            use_phoneme: honour phoneme tokens in the text (<|SH|><|ANG1|>, [[ipa: ...]]).
        """
        language = language_of(page)  # the page's language (Gradio passes the request; API clients read English)
        ctx.require_ready(language)
        options = ctx.options_of(seed, sampling, top_k, top_p, temperature, speed, sample_rate, use_cache, use_phoneme, language)
        request = SynthesisRequest(text, ctx.prompt_of(prompt_audio, voice, language), prompt_text or "", options)
        session = ctx.service.start_speech(request, keep=True)
        started = time.perf_counter()
        try:
            async for chunk in session:
                update = {status: progress_text(chunk, time.perf_counter() - started, language)}
                if live is not None:
                    update[live] = encode_audio(playable(chunk), chunk.sample_rate, "wav")
                yield update
            result = await session.result()
        except USER_ERRORS as error:  # TimeLimitExceeded included
            raise gr.Error(str(error)) from error
        finally:
            session.close()
        name = f"{time.strftime('%Y%m%d-%H%M%S')}_{options.seed}.wav"
        path = Path(output.GRADIO_CACHE) / secrets.token_hex(16) / name
        try:
            await asyncio.to_thread(write_wav, path, result.audio, result.sample_rate)
        except OSError as error:  # a full disk: StorageError says which
            raise gr.Error(page_text("single.not_stored", language, error=error)) from error
        summary = {stage: round(seconds, 3) for stage, seconds in result.timings.items()}
        first_audio_s = session.first_audio_s
        summary.update(first_audio_s=round(first_audio_s, 3), audio_s=round(result.duration_s, 2), rtf=round(result.rtf, 3))
        yield {
            output: str(path),
            timings: summary,
            status: done_text(result, first_audio_s, language),
            normalized: result.normalized_text,
        }

    return synthesize


def build_single_tab(ctx: PageContext, demo: gr.Blocks) -> None:
    upload, voice, prompt_text = ctx.voice_inputs("single")
    text = gr.Textbox(label=label("single.text"), lines=4, elem_id="single-text", placeholder="你好，世界! Hello world.")
    add_examples(SINGLE_EXAMPLES, [text, voice], ctx.service.voices.builtin_dir, "single-examples", demo)
    options = ctx.option_inputs()
    use_phoneme = gr.Checkbox(False, label=label("single.use_phoneme"))
    with gr.Row():
        generate = gr.Button(label("single.generate"), variant="primary", elem_id="single-generate", scale=3)
        stop = gr.Button(label("single.stop"), variant="stop", elem_id="single-stop", scale=1)
    live = live_player("single-live")
    output = gr.Audio(label=label("form.output"), type="filepath", elem_id="single-output", buttons=["download"])
    status = gr.Markdown(elem_id="single-status")
    with gr.Accordion(label("single.details"), open=False):
        timings = gr.JSON(label=label("single.timings"))
        normalized = gr.Textbox(label=label("single.normalized"), interactive=False)
    speaking = generate.click(
        make_synthesize(ctx, live, output, timings, status, normalized),
        [text, upload, voice, prompt_text, *options, use_phoneme],
        [c for c in (live, output, timings, status, normalized) if c is not None],
        api_name="synthesize",
        show_progress="minimal",
    )

    def stopped(page: gr.Request) -> str:
        return page_text("single.stopped", language_of(page))

    stop.click(stopped, None, status, cancels=[speaking], api_visibility="private")
