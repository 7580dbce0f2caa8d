"""GLM-TTS streaming through the HTTP API: one long single-sentence request on a tiny random checkpoint
(CPU) delivers its first audio bytes within the first third of the whole response time, because the
engine turns tokens into audio block by block while the LLM still decodes."""

from __future__ import annotations

import time

import httpx
import pytest

from glmtts.engines.glm.random_checkpoint import write_random_checkpoint

from .conftest import launched_app

# One sentence the frontend keeps as one segment; the tiny random LLM rarely draws the end token, so
# it speaks the most the text allows (20 speech tokens a text token): about 25 s of audio.
LONG_SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank"
PCM_RATE = 24000
PCM_BYTES_PER_SAMPLE = 2


@pytest.fixture(scope="module")
def glm_app(tmp_path_factory: pytest.TempPathFactory):
    ckpt = write_random_checkpoint(tmp_path_factory.mktemp("glm-ckpt") / "ckpt", "tiny")
    outputs = tmp_path_factory.mktemp("glm-outputs")
    with launched_app(outputs, GLMTTS_CKPT=str(ckpt)) as (url, _codes):
        yield url


def test_a_long_sentence_streams_its_first_audio_within_the_first_third(glm_app: str) -> None:
    body = {"input": LONG_SENTENCE, "voice": "libri_1688", "stream": True, "response_format": "pcm"}
    first_audio_s = None
    received = 0
    start = time.perf_counter()
    with httpx.stream("POST", f"{glm_app}/v1/audio/speech", json=body, timeout=600) as response:
        assert response.status_code == 200, response.read()
        for chunk in response.iter_bytes():
            if chunk and first_audio_s is None:
                first_audio_s = time.perf_counter() - start
            received += len(chunk)
    total_s = time.perf_counter() - start
    audio_s = received / PCM_BYTES_PER_SAMPLE / PCM_RATE
    print(f"first audio after {first_audio_s:.2f} s of {total_s:.2f} s; {audio_s:.1f} s of audio")
    assert audio_s > 5.0, f"only {audio_s:.1f} s of audio"
    assert first_audio_s is not None and first_audio_s < total_s / 3, (
        f"first audio after {first_audio_s:.2f} s of {total_s:.2f} s ({audio_s:.1f} s of audio)"
    )


def test_the_status_names_the_decode_path(glm_app: str) -> None:
    status = httpx.get(f"{glm_app}/v1/status", timeout=30).json()
    assert "reference" in str(status)  # the CPU default; the fast path is the default on CUDA
