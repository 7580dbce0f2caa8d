"""Captioned speech (Kokoro-FastAPI's /dev/captioned_speech) on the running app: whole and streamed."""

import base64
import io
import json
from itertools import pairwise

import httpx
import numpy as np
import pytest
import soundfile as sf

from glmtts.captions import text_words

TEXT = (  # two segments or more
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It is easy to tell the depth of a well. These days a chicken leg is a rare dish. "
    "Rice is often served in round bowls. The juice of lemons makes fine punch."
)
URL = "/dev/captioned_speech"


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<i2").astype(np.float32) / 32767


def assert_well_timed(timestamps: list[dict], duration_s: float) -> None:
    assert [t["word"] for t in timestamps] == text_words(TEXT)
    assert all(0.0 <= t["start_time"] <= t["end_time"] <= duration_s + 1e-3 for t in timestamps), timestamps
    assert all(a["end_time"] <= b["start_time"] + 1e-3 for a, b in pairwise(timestamps)), timestamps


def test_whole_answer_has_the_audio_and_every_word_timed(app_server):
    response = httpx.post(f"{app_server.url}{URL}", json={"input": TEXT, "response_format": "wav", "stream": False}, timeout=300)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"audio", "audio_format", "timestamps"} and body["audio_format"] == "audio/wav"
    audio, rate = sf.read(io.BytesIO(base64.b64decode(body["audio"])), dtype="float32")
    assert rate == int(response.headers["x-sample-rate"]) and np.abs(audio).max() > 0.05
    assert_well_timed(body["timestamps"], len(audio) / rate)
    assert body["timestamps"][-1]["end_time"] > 0.8 * len(audio) / rate  # the words reach the end of the speech


def test_stream_sends_a_line_per_segment_with_absolute_times(app_server):
    request = {"input": TEXT, "response_format": "pcm"}  # unset "stream": streamed, as in Kokoro-FastAPI
    with httpx.stream("POST", f"{app_server.url}{URL}", json=request, timeout=300) as response:
        assert response.status_code == 200, response.read()
        lines = [json.loads(line) for line in response.iter_lines() if line]
        rate = int(response.headers["x-sample-rate"])
    assert len(lines) >= 2 and all(line["audio_format"] == "audio/pcm" for line in lines)
    pieces = [pcm(base64.b64decode(line["audio"])) for line in lines]
    timestamps = [t for line in lines for t in line["timestamps"]]
    assert_well_timed(timestamps, sum(map(len, pieces)) / rate)
    start = 0.0
    for line, piece in zip(lines, pieces, strict=True):  # each line's words lie in its own audio
        end = start + len(piece) / rate
        assert all(start - 1e-3 <= t["start_time"] <= t["end_time"] <= end + 1e-3 for t in line["timestamps"])
        start = end
    whole = httpx.post(f"{app_server.url}{URL}", json={**request, "stream": False}, timeout=300).json()
    np.testing.assert_allclose(np.concatenate(pieces), pcm(base64.b64decode(whole["audio"])), atol=2 / 32767)
    assert [t["word"] for t in whole["timestamps"]] == [t["word"] for t in timestamps]
    np.testing.assert_allclose([t["start_time"] for t in whole["timestamps"]], [t["start_time"] for t in timestamps], atol=2e-3)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": TEXT, "response_format": "ogg-vorbis"}, "response_format"),
        ({"input": TEXT, "stream_format": "sse"}, "stream_format"),
        ({"input": TEXT, "speed": "fast"}, None),
        ({"input": "😀😀", "stream": False}, None),
    ],
)
def test_bad_requests_get_a_4xx(app_server, body, field):
    response = httpx.post(f"{app_server.url}{URL}", json=body, timeout=60)
    assert 400 <= response.status_code < 500, response.text
    if field:
        assert field in response.text
