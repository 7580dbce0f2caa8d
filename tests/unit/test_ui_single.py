"""The Single tab's progress line: which segment of how many, and the time left at the pace so far."""

import numpy as np

from glmtts.types import AudioChunk, Segment
from glmtts.ui.single import progress_text

RATE = 24000


def chunk(index: int, total: int, final: bool = True) -> AudioChunk:
    return AudioChunk(index, total, np.zeros(10, np.float32), RATE, Segment("a", (), "a"), {}, final=final)


def test_the_time_left_is_the_pace_so_far_times_the_segments_left():
    assert progress_text(chunk(0, 4), 3.0) == "Speaking… segment 1 of 4 ready; about 9 s left."
    assert progress_text(chunk(2, 4), 6.0) == "Speaking… segment 3 of 4 ready; about 2 s left."
    assert progress_text(chunk(3, 4), 8.0) == "Speaking… segment 4 of 4 ready; about 0 s left."


def test_a_piece_of_a_streamed_segment_counts_the_segments_before_it():
    assert progress_text(chunk(0, 3, final=False), 0.5) == "Speaking… segment 1 of 3 playing; estimating the time left."
    assert progress_text(chunk(1, 3, final=False), 2.0) == "Speaking… segment 2 of 3 playing; about 4 s left."
