"""Speaking rate beyond what an engine renders: time-scale modification at an unchanged pitch.

A request may ask for any speed in OpenAI's 0.25-4.0. `split_speed` is the one place that divides
it into the rate the engine renders itself (the nearest one in its `speed_range`: piper's length
scale, FastSpeech2's duration ratios) and the remainder, which `SegmentStretcher` applies to each
segment's audio with WSOLA (waveform-similarity overlap-add, pytsmod): it cuts and re-joins the
waveform where it matches itself, so pitch and voice are kept. It is deterministic: the same audio and
factor give the same samples. (Measured on the embedded English voice through Whisper it was at least
as intelligible as Signalsmith Stretch, which is not deterministic below half speed, and far better than
librosa's phase vocoder; Praat's PSOLA draws random noise and lengthens at most 3x.)
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from glmtts.types import SegmentAudio

# A window of 30 ms (a pitch period or three, half a phone): pytsmod's 1024-sample default, made for
# music, lost twice as many words through Whisper at 0.5x and 2x.
_WSOLA_WINDOW_S = 0.030
_WSOLA_PAD_S = 0.2  # silence after the end: pytsmod reads past the last window and fails on very short audio
_SAME_RATE_TOLERANCE = 1e-6  # a remainder this close to 1 is no stretch at all


def split_speed(speed: float, native_range: tuple[float, float]) -> tuple[float, float]:
    """A requested speed -> (the rate the engine renders, the factor stretched afterwards); their product is `speed`."""
    low, high = native_range
    native = min(max(speed, low), high)
    return native, speed / native


def stretch(audio: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """Mono audio played `factor` times as fast (2.0: half as long) at the same pitch, as float32."""
    from pytsmod import wsola  # on first use: it imports scipy.interpolate, seconds of start-up

    length = round(len(audio) / factor)
    if length == 0:
        return np.zeros(0, dtype=np.float32)
    padded = np.pad(np.asarray(audio, dtype=np.float64), (0, round(_WSOLA_PAD_S * sample_rate)))
    window = round(_WSOLA_WINDOW_S * sample_rate)
    stretched = wsola(padded, 1.0 / factor, win_size=window, syn_hop_size=window // 2, tolerance=window // 2)
    return np.asarray(stretched[:length], dtype=np.float32)


class SegmentStretcher:
    """Applies one request's stretch factor to an engine's stream, a whole segment at a time.

    A segment an engine streams in several pieces is gathered and stretched once, when its last
    piece arrives (a stretch over piece joins would smear them), so a stretched request streams
    segment by segment. Word times are scaled with the audio.
    """

    def __init__(self, factor: float):
        self.factor = factor
        self._pieces: list[SegmentAudio] = []

    @property
    def active(self) -> bool:
        return abs(self.factor - 1.0) > _SAME_RATE_TOLERANCE

    def feed(self, piece: SegmentAudio) -> SegmentAudio | None:
        """The next piece to play, or None while a segment's pieces are gathered."""
        if not self.active:
            return piece
        self._pieces.append(piece)
        if not piece.final:
            return None
        pieces, self._pieces = self._pieces, []
        timings: dict[str, float] = {}
        for part in pieces:
            for stage, seconds in part.timings.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
        start = time.perf_counter()
        audio = stretch(np.concatenate([part.audio for part in pieces]), piece.sample_rate, self.factor)
        timings["tempo"] = time.perf_counter() - start
        words = piece.words if len(pieces) == 1 else None  # engines time whole segments only
        if words is not None:
            words = tuple(word._replace(start=word.start / self.factor, end=word.end / self.factor) for word in words)
        return dataclasses.replace(piece, audio=audio, timings=timings, words=words)
