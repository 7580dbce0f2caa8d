"""The whole service on the embedded voices: mixed text, batches, clearing caches, bad prompts."""

import json
import time
import zipfile

import numpy as np
import pytest

from glmtts.jobs.interface import DONE
from glmtts.pipeline import SynthesisRequest
from glmtts.types import SynthesisError, SynthesisOptions

JOB_TIMEOUT_S = 120


def test_mixed_text_has_both_languages_in_one_output(embedded_service):
    result = embedded_service.pipeline.synthesize(
        SynthesisRequest("我们今天用 Python 写一个 demo。Then we ship it.", "libri_367")
    )
    languages = {run.lang for segment in result.segments for run in segment.runs}
    assert languages == {"zh", "en"}
    assert result.sample_rate == 24000 and 2.0 < result.duration_s < 12.0
    assert np.isfinite(result.audio).all() and np.abs(result.audio).max() <= 1.0
    assert {"frontend", "voice", "synthesis", "voice_match", "total"} <= set(result.timings)


def test_long_text_streams_segment_by_segment(embedded_service):
    text = " ".join(f"This is sentence number {n}." for n in range(1, 9))
    chunks = list(embedded_service.pipeline.synthesize_stream(SynthesisRequest(text)))
    finished = [c.index for c in chunks if c.final]
    assert chunks[0].total >= 2 and finished == list(range(chunks[0].total))
    assert all(len(c.audio) > 0.3 * c.sample_rate for c in chunks if c.first and c.final)


def test_speed_changes_duration(embedded_service):
    text = "Speed control changes how long this sentence takes."
    normal = embedded_service.pipeline.synthesize(SynthesisRequest(text, "libri_1688"))
    fast = embedded_service.pipeline.synthesize(SynthesisRequest(text, "libri_1688", options=SynthesisOptions(speed=1.5)))
    assert fast.duration_s < 0.85 * normal.duration_s


@pytest.mark.parametrize("text", ["", "   ", "🙂🙂🙂"])
def test_unspeakable_text_is_refused(embedded_service, text):
    with pytest.raises(SynthesisError):
        embedded_service.pipeline.synthesize(SynthesisRequest(text))


def test_batch_job_records_failures_and_goes_on(embedded_service):
    good = {"uttid": "a", "prompt_text": "", "prompt_speech": "examples/prompt/libri_367.flac", "syn_text": "First item."}
    lines = [
        json.dumps(good),
        "{broken json",
        json.dumps({**good, "uttid": "empty", "syn_text": "  "}),
        json.dumps({**good, "uttid": "b", "prompt_speech": "libri_1688", "syn_text": "第二条。"}),
    ]
    jobs = embedded_service.jobs
    job_id = jobs.submit("\n".join(lines), name="unit", strict=False)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while jobs.progress(job_id)["status"] != DONE:
        assert time.monotonic() < deadline, jobs.progress(job_id)
        time.sleep(0.1)
    job = embedded_service.settings.batch_dir / job_id
    assert sorted(p.name for p in job.iterdir()) == [
        "a.srt",
        "a.wav",
        "b.srt",
        "b.wav",
        "input.jsonl",
        "items.jsonl",
        "job.json",
        "manifest.jsonl",
    ]
    manifest = [json.loads(x) for x in (job / "manifest.jsonl").read_text().splitlines()]
    assert [m["status"] for m in manifest] == ["ok", "error", "error", "ok"]
    assert manifest[3]["normalized_text"] == "第二条。" and "<|" not in manifest[0]["phonemes"]
    assert "not valid JSON" in manifest[1]["message"] and "empty" in manifest[2]["message"]
    zipped = zipfile.ZipFile(jobs.archive(job_id)).namelist()
    assert sorted(name.split("/")[-1] for name in zipped) == [
        "a.srt",
        "a.wav",
        "b.srt",
        "b.wav",
        "manifest.jsonl",
    ]  # results, not input


def test_clear_caches_keeps_models_warm(embedded_service):
    before, after = embedded_service.clear_caches()
    assert "rss_mib" in before and "rss_mib" in after
    assert embedded_service.status()["cached_voices"] == 0
    result = embedded_service.pipeline.synthesize(SynthesisRequest("Still warm after clearing.", "libri_2414"))
    assert result.duration_s > 0.8


def test_silent_prompt_is_refused(embedded_service, tmp_path):
    import soundfile as sf

    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(16000 * 4, dtype=np.float32), 16000)
    with pytest.raises(SynthesisError, match="silent"):
        embedded_service.pipeline.synthesize(SynthesisRequest("Hello.", path))
