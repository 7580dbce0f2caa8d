"""Speed beyond an engine's own rates: the split, the stretch, and a stretched stream."""

from types import SimpleNamespace

import numpy as np
import pytest

from glmtts.pipeline import Pipeline, SynthesisRequest
from glmtts.scheduler import DeviceScheduler
from glmtts.tempo import SegmentStretcher, split_speed, stretch
from glmtts.types import Segment, SegmentAudio, SynthesisOptions, WordTime

RATE = 24000


def tone(seconds: float, hz: float = 220.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(round(seconds * RATE)) / RATE)).astype(np.float32)


def peak_hz(audio: np.ndarray) -> float:
    middle = audio[len(audio) // 4 : 3 * len(audio) // 4]
    return float(np.argmax(np.abs(np.fft.rfft(middle)))) * RATE / len(middle)


@pytest.mark.parametrize(
    ("speed", "native_range", "split"),
    [
        (0.25, (0.5, 2.0), (0.5, 0.5)),
        (4.0, (0.5, 2.0), (2.0, 2.0)),
        (1.3, (0.5, 2.0), (1.3, 1.0)),
        (0.25, (1.0, 1.0), (1.0, 0.25)),
        (4.0, (0.25, 4.0), (4.0, 1.0)),
    ],
)
def test_the_engine_renders_what_it_can_and_the_rest_is_stretched(speed, native_range, split):
    native, factor = split_speed(speed, native_range)
    assert (native, factor) == pytest.approx(split) and native * factor == pytest.approx(speed)


@pytest.mark.parametrize("factor", [0.25, 0.5, 2.0, 4.0])
def test_a_stretch_scales_length_keeps_pitch_and_level_and_repeats_exactly(factor):
    audio = tone(1.0)
    stretched = stretch(audio, RATE, factor)
    assert stretched.dtype == np.float32 and len(stretched) == round(len(audio) / factor)
    assert peak_hz(stretched) == pytest.approx(220.0, abs=5.0)
    assert np.abs(stretched[: len(stretched) * 3 // 4]).max() == pytest.approx(0.5, rel=0.1)
    assert np.array_equal(stretched, stretch(audio, RATE, factor))


@pytest.mark.parametrize("samples", [0, 1, 100, 1000])
def test_very_short_audio_is_stretched_too(samples):
    for factor in (0.25, 4.0):
        stretched = stretch(np.full(samples, 0.1, dtype=np.float32), RATE, factor)
        assert len(stretched) == round(samples / factor) and np.isfinite(stretched).all()


def test_a_stream_is_stretched_a_whole_segment_at_a_time_with_its_words():
    stretcher = SegmentStretcher(2.0)
    first = SegmentAudio(tone(0.5), RATE, {"synthesis": 1.0}, final=False)
    last = SegmentAudio(tone(0.5), RATE, {"synthesis": 2.0})
    assert stretcher.feed(first) is None  # gathered until the segment's last piece
    whole = stretcher.feed(last)
    assert whole.final and len(whole.audio) == RATE // 2
    assert whole.timings["synthesis"] == 3.0 and whole.timings["tempo"] >= 0.0
    timed = SegmentAudio(tone(1.0), RATE, words=(WordTime("hello", 0.2, 0.6),))
    assert stretcher.feed(timed).words == (WordTime("hello", 0.1, 0.3),)


def test_at_the_engines_own_rate_pieces_pass_untouched():
    piece = SegmentAudio(tone(0.5), RATE, final=False)
    assert SegmentStretcher(1.0).feed(piece) is piece


class PiecewiseEngine:
    """Renders each word as two pieces of a tone, 0.25 s each at its own speed 1, between its rates 0.5 and 2."""

    name = "piecewise"
    speed_range = (0.5, 2.0)
    sample_rates = (RATE,)

    def __init__(self):
        self.speeds: list[float] = []

    def synthesize_segments(self, segments, voice, options, cancel):
        self.speeds.append(options.speed)
        for _ in segments:
            yield SegmentAudio(tone(0.25 / options.speed), RATE, {"synthesis": 0.001}, final=False)
            yield SegmentAudio(tone(0.25 / options.speed), RATE, {"synthesis": 0.001})


@pytest.mark.parametrize(("speed", "native", "chunks_per_word"), [(0.25, 0.5, 1), (1.5, 1.5, 2), (4.0, 2.0, 1)])
def test_the_pipeline_asks_the_engine_for_its_nearest_rate_and_stretches_the_rest(speed, native, chunks_per_word):
    engine = PiecewiseEngine()
    frontend = SimpleNamespace(text_to_segments=lambda text, **_: [Segment(w, (), w) for w in text.split()])
    pipeline = Pipeline(engine, frontend, SimpleNamespace(resolve=lambda *a: None), DeviceScheduler(), 60)
    request = SynthesisRequest("one two", options=SynthesisOptions(speed=speed))
    chunks = list(pipeline.synthesize_stream(request))
    assert engine.speeds == [native] and len(chunks) == 2 * chunks_per_word
    assert sum(len(chunk.audio) for chunk in chunks) == pytest.approx(2 * 0.5 * RATE / speed, abs=2)
