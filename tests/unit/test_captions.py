"""Word times and captions (glmtts.captions), their placement in the joined output (pipeline), and the
engines' pure duration-to-word functions: no models."""

from itertools import pairwise

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from glmtts.captions import cues_from_words, estimate_words, srt_from_words, text_words, words_over_spans, write_srt
from glmtts.engines.embedded.english import phoneme_word_spans
from glmtts.engines.embedded.mandarin import syllable_spans
from glmtts.http.security import SecurityMiddleware
from glmtts.pipeline import SEGMENT_PAUSE_SECONDS, result_of
from glmtts.ratelimit import RateLimiter
from glmtts.settings import Settings
from glmtts.types import AudioChunk, Segment, TextRun, WordTime

RATE = 16000
TOLERANCE_S = 1e-6


def assert_well_timed(words: list[WordTime], text: str, duration_s: float) -> None:
    """Every word of the text, in order; each within the audio, none before the one it follows."""
    assert [w.word for w in words] == text_words(text)
    for word in words:
        assert -TOLERANCE_S <= word.start <= word.end <= duration_s + TOLERANCE_S, word
    for before, after in pairwise(words):
        assert before.end <= after.start + TOLERANCE_S, (before, after)


def test_text_words_keep_punctuation_on_words_and_split_han_characters():
    assert text_words("Hello, world! It's 5 p.m. — fine.") == ["Hello,", "world!", "It's", "5", "p.m.—", "fine."]
    assert text_words("twenty four，said doctor Smith。at three") == [
        "twenty",
        "four，",
        "said",
        "doctor",
        "Smith。",
        "at",
        "three",
    ]
    assert text_words("“Quoted” text") == ["“Quoted”", "text"]
    assert text_words("你好，世界。OK") == ["你", "好，", "世", "界。", "OK"]
    assert text_words(" ... !! ") == []


def test_srt_numbers_cues_and_writes_times_with_milliseconds():
    words = [WordTime("Hello", 0.0, 0.4), WordTime("there.", 0.45, 0.9), WordTime("Next", 3661.2344, 3661.5)]
    assert srt_from_words(words) == ("1\n00:00:00,000 --> 00:00:00,900\nHello there.\n\n2\n01:01:01,234 --> 01:01:01,500\nNext\n")
    assert srt_from_words([]) == ""


def test_write_srt_writes_the_file_whole(tmp_path):
    words = [WordTime("你", 0.0, 0.2), WordTime("好。", 0.2, 0.5)]
    path = write_srt(tmp_path / "item.srt", words)
    assert path.read_text(encoding="utf-8") == srt_from_words(words) == "1\n00:00:00,000 --> 00:00:00,500\n你好。\n"
    assert [p.name for p in tmp_path.iterdir()] == ["item.srt"]  # no partial file left


def test_cues_break_at_sentences_long_pauses_and_their_length_limits():
    words = [WordTime(f"word{k}", 0.3 * k, 0.3 * k + 0.25) for k in range(30)]
    cues = cues_from_words(words)
    assert " ".join(text for _, _, text in cues) == " ".join(w.word for w in words)  # nothing lost or repeated
    assert all(len(text) <= 42 and end - start <= 5.0 for start, end, text in cues)
    gap = cues_from_words([WordTime("a", 0, 0.2), WordTime("b", 0.3, 0.5), WordTime("c", 1.2, 1.4)])
    assert [text for *_, text in gap] == ["a b", "c"]
    assert [text for *_, text in cues_from_words([WordTime("Stop.", 0, 0.2), WordTime("Go", 0.25, 0.4)])] == ["Stop.", "Go"]


def test_words_over_spans_pairs_merged_and_split_units():
    spans = [(0.0, 0.5), (0.6, 1.0), (1.1, 1.5)]
    assert words_over_spans(["a", "b", "c"], spans, [3, 3, 3]) == [
        WordTime("a", 0.0, 0.5),
        WordTime("b", 0.6, 1.0),
        WordTime("c", 1.1, 1.5),
    ]
    # espeak's "ʌvðə" for "of the": two words share the middle unit, split by their lengths.
    merged = words_over_spans(["best", "of", "the", "rest"], spans, [4, 4, 4])
    assert merged[0] == WordTime("best", 0.0, 0.5) and merged[-1] == WordTime("rest", 1.1, 1.5)
    assert merged[1].start == pytest.approx(0.6) and merged[2].end == pytest.approx(1.0)
    assert merged[1].end == pytest.approx(merged[2].start) and merged[1].end == pytest.approx(0.6 + 0.4 * 2 / 5)
    # One word that the engine speaks as two units takes both.
    split = words_over_spans(["pay", "fifteen", "now"], [(0, 0.3), (0.4, 0.8), (0.8, 1.1), (1.2, 1.5)], [3, 3, 4, 3])
    assert split == [WordTime("pay", 0, 0.3), WordTime("fifteen", 0.4, 1.1), WordTime("now", 1.2, 1.5)]
    many = [f"w{k}" for k in range(40)]
    assert_well_timed(words_over_spans(many, [(k / 7, (k + 0.8) / 7) for k in range(7)], [1] * 7), " ".join(many), 1.0)


def bursts(durations: list[float], pauses: list[float], lead: float = 0.2) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Noise bursts (words) separated by silences; returns the audio and each burst's (start, end)."""
    rng = np.random.default_rng(0)
    pieces, spans, t = [np.zeros(int(lead * RATE), np.float32)], [], lead
    for duration, pause in zip(durations, pauses, strict=True):
        pieces += [0.3 * rng.standard_normal(int(duration * RATE)).astype(np.float32), np.zeros(int(pause * RATE), np.float32)]
        spans.append((t, t + duration))
        t += duration + pause
    return np.concatenate(pieces), spans


def test_estimate_snaps_word_boundaries_to_the_pauses_between_them():
    text = "The cat, sleeping quietly, dreamed of extraordinary adventures."
    lengths = [0.15, 0.2, 0.45, 0.4, 0.45, 0.15, 0.8, 0.6]  # far from proportional to their letters
    audio, spans = bursts(lengths, [0.15] * len(lengths))
    words = estimate_words(text, audio, RATE)
    assert_well_timed(words, text, len(audio) / RATE)
    errors = [abs(w.start - a) for w, (a, _) in zip(words, spans)] + [abs(w.end - b) for w, (_, b) in zip(words, spans)]
    assert np.median(errors) < 0.02 and max(errors) < 0.05


def test_estimate_spreads_words_without_pauses_by_their_length():
    text = "a quick brown fox"
    audio, _ = bursts([2.0], [0.3])
    words = estimate_words(text, audio, RATE)
    assert_well_timed(words, text, len(audio) / RATE)
    assert words[0].start == pytest.approx(0.2, abs=0.02) and words[-1].end == pytest.approx(2.2, abs=0.02)
    assert words[1].end - words[1].start == pytest.approx(5 / 3 * (words[3].end - words[3].start), rel=0.05)
    assert estimate_words(text, np.zeros(RATE, np.float32), RATE) == [WordTime(w, 0.0, 0.0) for w in text.split()]
    assert estimate_words("", audio, RATE) == []


def test_result_words_are_placed_after_earlier_segments_and_pauses():
    def chunk(index: int, text: str, seconds: float, words) -> AudioChunk:
        segment = Segment(text, (TextRun("en", text),), text)
        audio = np.full(int(seconds * RATE), 0.1, np.float32)
        return AudioChunk(index, 2, audio, RATE, segment, {}, words=words)

    first = chunk(0, "One two.", 1.0, (WordTime("One", 0.1, 0.4), WordTime("two.", 0.5, 0.9)))
    second = chunk(1, "Three", 0.5, None)  # no engine durations: estimated from the audio
    result = result_of([first, second], 1.0, "test")
    assert result.words[:2] == [WordTime("One", 0.1, 0.4), WordTime("two.", 0.5, 0.9)]
    start = 1.0 + SEGMENT_PAUSE_SECONDS
    assert result.words[2].word == "Three"
    assert result.words[2].start == pytest.approx(start, abs=0.011) and result.words[2].end == pytest.approx(
        start + 0.5, abs=0.011
    )
    assert_well_timed(result.words, "One two. Three", result.duration_s)


def test_piper_durations_become_word_spans():
    id_map = {"^": [1], "_": [0], "$": [2], " ": [3], "a": [4], "b": [5], ",": [6], "ˈ": [7]}
    phonemes = list("ˈab, a")
    # ids: ^ _ ˈ _ a _ b _ , _ ␠ _ a _ $
    frames = np.array([1, 0, 1, 0, 3, 1, 4, 0, 6, 0, 2, 1, 5, 0, 1], dtype=np.float32)
    assert phoneme_word_spans(phonemes, frames, id_map) == [(1, 10, 3), (19, 24, 1)]


def test_fastspeech2_durations_become_syllable_spans():
    symbols = ["sil", "n", "i3", "#0", "h", "ao3", "#3", "sh", "iii4", "sil", "eos"]
    frames = np.array([3, 4, 3, 10, 4, 10, 14, 6, 8, 7, 1])
    spans = syllable_spans(symbols, frames, duration_s=float(frames.sum()) / 100)
    np.testing.assert_allclose(spans, [(0.03, 0.10), (0.20, 0.34), (0.48, 0.62)], atol=1e-9)


def test_captioned_speech_is_rate_limited_like_speech():
    app = FastAPI()
    app.add_middleware(SecurityMiddleware, settings=Settings(rate_limit=1), limiter=RateLimiter(1, lambda: 1000.0))

    @app.post("/dev/captioned_speech")
    def captioned():
        return {}

    with TestClient(app, base_url="http://127.0.0.1:7860") as http:
        assert [http.post("/dev/captioned_speech").status_code for _ in range(2)] == [200, 429]
