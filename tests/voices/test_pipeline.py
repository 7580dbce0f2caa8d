"""The whole pipeline on the embedded voices: mixed text, batches, clearing caches, bad prompts."""

import json
import time
import zipfile

import numpy as np
import pytest

from glmtts.jobs import DONE, BatchJobs
from glmtts.pipeline import SynthesisRequest
from glmtts.types import SynthesisError, SynthesisOptions

JOB_TIMEOUT_S = 120


def test_mixed_text_has_both_languages_in_one_output(embedded_pipeline):
    result = embedded_pipeline.synthesize(SynthesisRequest("我们今天用 Python 写一个 demo。Then we ship it.", "libri_367"))
    languages = {run.lang for segment in result.segments for run in segment.runs}
    assert languages == {"zh", "en"}
    assert result.sample_rate == 24000 and 2.0 < result.duration_s < 12.0
    assert np.isfinite(result.audio).all() and np.abs(result.audio).max() <= 1.0
    assert {"frontend", "voice", "synthesis", "voice_match", "total"} <= set(result.timings)


def test_long_text_streams_segment_by_segment_with_progress(embedded_pipeline):
    text = " ".join(f"This is sentence number {n}." for n in range(1, 9))
    seen = []
    chunks = list(embedded_pipeline.synthesize_stream(SynthesisRequest(text), progress=lambda f, m: seen.append(f)))
    assert len(chunks) >= 2 and [c.index for c in chunks] == list(range(len(chunks)))
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert all(len(c.audio) > 0.3 * c.sample_rate for c in chunks)


def test_speed_changes_duration(embedded_pipeline):
    text = "Speed control changes how long this sentence takes."
    normal = embedded_pipeline.synthesize(SynthesisRequest(text, "libri_1688"))
    fast = embedded_pipeline.synthesize(SynthesisRequest(text, "libri_1688", options=SynthesisOptions(speed=1.5)))
    assert fast.duration_s < 0.85 * normal.duration_s


@pytest.mark.parametrize("text", ["", "   ", "🙂🙂🙂"])
def test_unspeakable_text_is_refused(embedded_pipeline, text):
    with pytest.raises(SynthesisError):
        embedded_pipeline.synthesize(SynthesisRequest(text))


def test_batch_job_records_failures_and_goes_on(embedded_pipeline):
    good = {"uttid": "a", "prompt_text": "", "prompt_speech": "examples/prompt/libri_367.flac", "syn_text": "First item."}
    lines = [
        json.dumps(good),
        "{broken json",
        json.dumps({**good, "uttid": "empty", "syn_text": "  "}),
        json.dumps({**good, "uttid": "b", "prompt_speech": "libri_1688", "syn_text": "第二条。"}),
    ]
    jobs = BatchJobs(embedded_pipeline, embedded_pipeline.settings.batch_dir)
    job_id = jobs.submit("\n".join(lines), name="unit", strict=False)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while jobs.progress(job_id)["status"] != DONE:
        assert time.monotonic() < deadline, jobs.progress(job_id)
        time.sleep(0.1)
    jobs.shutdown()
    job = embedded_pipeline.settings.batch_dir / job_id
    assert sorted(p.name for p in job.iterdir()) == ["a.wav", "b.wav", "input.jsonl", "job.json", "manifest.jsonl"]
    manifest = [json.loads(x) for x in (job / "manifest.jsonl").read_text().splitlines()]
    assert [m["status"] for m in manifest] == ["ok", "error", "error", "ok"]
    assert manifest[3]["normalized_text"] == "第二条。" and "<|" not in manifest[0]["phonemes"]
    assert "not valid JSON" in manifest[1]["message"] and "empty" in manifest[2]["message"]
    assert len(zipfile.ZipFile(jobs.archive(job_id)).namelist()) == 5


def test_clear_caches_keeps_models_warm(embedded_pipeline):
    before, after = embedded_pipeline.clear_caches()
    assert "rss_mib" in before and "rss_mib" in after
    assert embedded_pipeline.status()["cached_voices"] == 0
    result = embedded_pipeline.synthesize(SynthesisRequest("Still warm after clearing.", "libri_2414"))
    assert result.duration_s > 0.8


def test_silent_prompt_is_refused(embedded_pipeline, tmp_path):
    import soundfile as sf

    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(16000 * 4, dtype=np.float32), 16000)
    with pytest.raises(SynthesisError, match="silent"):
        embedded_pipeline.synthesize(SynthesisRequest("Hello.", path))
