"""Memory per request stays bounded and comes back: hostile text and uploads against the running app.

Generous limits (the benchmark bench/bench_service.py prints the figures): a request may grow the
process by at most PEAK_LIMIT_MIB while it runs, and the process returns to within AFTER_LIMIT_MIB
of where it was once the request is over.
"""

import io
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from glmtts import memory

from .conftest import ROOT

PEAK_LIMIT_MIB = 900
AFTER_LIMIT_MIB = 300
SETTLE_S = 1.0
PROMPT = ROOT / "examples" / "prompt" / "libri_367.flac"


class PeakRss:
    def __init__(self, pid: int):
        self.pid = pid
        self.before = self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def rss(self) -> float:
        """The app's and its children's (the text frontend's process) together."""
        return memory.rss_mib(self.pid, children=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.rss())

    def stop(self) -> tuple[float, float]:
        """(peak growth, growth after settling) in MiB."""
        time.sleep(SETTLE_S)
        self._stop.set()
        self._thread.join()
        return self.peak - self.before, self.rss() - self.before


@pytest.fixture(scope="module")
def app_pid(app_server) -> int:
    return httpx.get(f"{app_server.url}/v1/status").json()["pid"]


def two_hours_of_silence_after_speech() -> bytes:
    speech, rate = sf.read(PROMPT, dtype="float32")
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", rate, 1, format="FLAC") as sound:
        sound.write(speech[: rate * 4])
        minute = np.zeros(rate * 60, dtype=np.float32)
        for _ in range(120):
            sound.write(minute)
    return buffer.getvalue()


def test_a_long_word_without_breaks_is_cut_and_streamed_in_bounded_memory(app_server, app_pid):
    rss = PeakRss(app_pid)
    started = time.perf_counter()
    first_s = None
    with httpx.stream(
        "POST",
        f"{app_server.url}/v1/audio/speech",
        json={"input": "a" * 4000, "stream": True, "response_format": "pcm"},
        timeout=600,
    ) as response:
        assert response.status_code == 200 and response.headers.get("x-text-hard-split") == "1"
        assert int(response.headers["x-segments"]) >= 4
        received = 0
        for data in response.iter_raw():
            first_s = first_s or time.perf_counter() - started
            received += len(data)
    peak, after = rss.stop()
    print(
        f"4,000-char word: first audio {first_s:.2f} s, {received / 48000:.1f} s of audio; peak +{peak:.0f} MiB, after +{after:.0f} MiB"
    )
    assert received > 48000
    assert peak < PEAK_LIMIT_MIB and after < AFTER_LIMIT_MIB


def test_a_two_hour_upload_is_decoded_only_as_far_as_it_is_used(app_server, app_pid):
    data = two_hours_of_silence_after_speech()
    rss = PeakRss(app_pid)
    response = httpx.post(f"{app_server.url}/v1/voices", files={"file": ("long.flac", data)}, data={"name": "long"}, timeout=300)
    peak, after = rss.stop()
    print(f"2-hour FLAC ({len(data) / 2**20:.1f} MB): {response.status_code}; peak +{peak:.0f} MiB, after +{after:.0f} MiB")
    assert response.status_code in (201, 400), response.text
    if response.status_code == 201:
        assert response.json()["duration_s"] <= 30.0
        httpx.delete(f"{app_server.url}/v1/voices/{response.json()['id']}")
    assert peak < 400 and after < AFTER_LIMIT_MIB
