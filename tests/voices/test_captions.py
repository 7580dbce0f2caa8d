"""Word times from the embedded engine's own durations, on the real voices: every word present, in
order, inside the audio, and where Whisper hears them."""

from itertools import pairwise

import numpy as np
import pytest
import soundfile as sf

from glmtts.captions import text_words
from glmtts.types import Segment, SynthesisOptions, TextRun
from tests.voices.asr import WHISPER_RATE, _model

ENGLISH = "She opened the window, looked at the rain, and decided to stay at home with a good book."
MANDARIN = "今天天气很好，这儿真美。"
MANDARIN_PHONEMES = tuple("J IN1 T IAN1 T IAN1 Q I4 H EN3 H AO3 , ZH ER4 ZH EN1 M EI3 .".split())  # 这儿: one syllable


@pytest.fixture(scope="module")
def engine_and_voice(tmp_path_factory, prompt_paths):
    from glmtts.engines.embedded import EmbeddedEngine

    engine = EmbeddedEngine(tmp_path_factory.mktemp("embedded-cache"))
    engine.load("cpu")
    prompt = prompt_paths["libri_1688"]
    audio, rate = sf.read(prompt, dtype="float32")
    return engine, engine.prepare_voice(audio, rate, prompt.with_suffix(".txt").read_text().strip(), "test")


def spoken(engine_and_voice, *runs: TextRun):
    engine, voice = engine_and_voice
    text = " ".join(run.text for run in runs)
    (piece,) = engine.synthesize_segments([Segment(text, runs, text)], voice, SynthesisOptions(seed=3))
    return text, piece


def assert_well_timed(words, text: str, duration_s: float) -> None:
    assert [w.word for w in words] == text_words(text)
    assert all(0.0 <= w.start <= w.end <= duration_s + 1e-6 for w in words), words
    assert all(a.end <= b.start + 1e-6 for a, b in pairwise(words)), words


def test_english_words_are_where_whisper_hears_them(engine_and_voice):
    from scipy.signal import resample_poly

    text, piece = spoken(engine_and_voice, TextRun("en", ENGLISH))
    assert_well_timed(piece.words, text, len(piece.audio) / piece.sample_rate)
    audio16 = resample_poly(piece.audio, WHISPER_RATE // 8000, piece.sample_rate // 8000).astype(np.float32)
    segments, _ = _model().transcribe(audio16, language="en", beam_size=5, word_timestamps=True)
    heard = {w.word.strip().lower().strip(",."): w for s in segments for w in s.words}
    starts = [(w.start, heard[w.word.lower().strip(",.")].start) for w in piece.words if w.word.lower().strip(",.") in heard]
    assert len(starts) >= len(piece.words) // 2
    differences = np.array([ours - theirs for ours, theirs in starts])
    # Whisper places words late by a common offset; around it, the starts agree within a few frames.
    assert abs(np.median(differences)) < 0.15
    assert np.median(np.abs(differences - np.median(differences))) < 0.08


def test_mandarin_and_mixed_segments_time_every_word(engine_and_voice):
    text, piece = spoken(engine_and_voice, TextRun("zh", MANDARIN, MANDARIN_PHONEMES))
    assert_well_timed(piece.words, text, len(piece.audio) / piece.sample_rate)
    assert piece.words[0].start > 0.0 and piece.words[-1].end > 0.5 * len(piece.audio) / piece.sample_rate
    text, piece = spoken(engine_and_voice, TextRun("en", "Hello there."), TextRun("zh", MANDARIN, MANDARIN_PHONEMES))
    assert_well_timed(piece.words, text, len(piece.audio) / piece.sample_rate)
    english_end = piece.words[1].end
    assert piece.words[2].start >= english_end  # the Mandarin run starts after the English one
