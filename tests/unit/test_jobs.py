"""Saved voices (features codec, store, pipeline registry) and batch jobs (states, order, crash recovery).

The voice store runs on the real Pipeline with a counting stand-in engine; the jobs run on a stand-in
pipeline whose synthesis the tests pace item by item, so every state is reached deterministically.
"""

import json
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from glmtts.engine import Engine
from glmtts.engines.embedded.engine import EmbeddedVoice
from glmtts.engines.embedded.voice_match import MatchParams, VoiceProfile
from glmtts.engines.glm.engine import GLMVoiceFeatures
from glmtts.jobs import (
    CANCELLED,
    DONE,
    INTERRUPTED,
    RUNNING,
    BatchInputError,
    BatchJobs,
    BatchTooLarge,
    JobNotFound,
    JobStateError,
)
from glmtts.pipeline import Pipeline, SynthesisRequest
from glmtts.scheduler import INTERACTIVE, DeviceScheduler
from glmtts.settings import PROJECT_ROOT, Settings
from glmtts.types import PromptVoice, Segment, SegmentAudio, SynthesisError, SynthesisOptions, SynthesisResult
from glmtts.voices import (
    FEATURES_FILE,
    META_FILE,
    PROMPT_FILE,
    FeatureCodecError,
    VoiceExists,
    VoiceNotFound,
    VoiceStore,
    arrays_to_features,
    features_to_arrays,
    load_features,
    save_features,
)

PROMPT = PROJECT_ROOT / "examples" / "prompt" / "libri_367.flac"
RATE = 24000
WAIT_S = 20.0


def wait_until(predicate, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --------------------------------------------------------------------------- codec
def embedded_voice(seed: int = 0) -> EmbeddedVoice:
    rng = np.random.default_rng(seed)
    profile = VoiceProfile(
        f0_median_hz=float(rng.uniform(90, 250)),
        f0_range_st=1.7,
        pitch_floor_hz=61.9,
        pitch_ceiling_hz=148.3,
        vocal_tract_cm=16.25,
        speech_rate=4.1,
        spectrum_db=tuple(float(x) for x in rng.normal(size=24)),
        embedding=rng.normal(size=256).astype(np.float32),
    )
    params = {
        "en": MatchParams(
            1.1457725115053, 150.8, 1.42, 0.97, 61.9, 148.3, tuple(float(x) for x in rng.normal(size=24)), 0.49, 0.61
        ),
        "zh": MatchParams(),
    }
    return EmbeddedVoice(profile, params, 4.34)


def test_codec_round_trips_embedded_voice_exactly(tmp_path):
    voice = embedded_voice()
    path = tmp_path / FEATURES_FILE
    save_features(path, voice)
    back = load_features(path)
    assert type(back) is EmbeddedVoice and type(back.profile) is VoiceProfile
    assert back == voice  # every compared field, floats bit for bit, tuples stay tuples
    assert isinstance(back.profile.spectrum_db, tuple) and isinstance(back.params["en"].eq_gains_db, tuple)
    assert back.params["zh"].eq_gains_db == () and back.params["zh"].is_identity
    np.testing.assert_array_equal(back.profile.embedding, voice.profile.embedding)
    assert back.profile.embedding.dtype == np.float32
    with np.load(path, allow_pickle=False) as stored:  # plain arrays only: readable without pickle
        assert all(stored[name].dtype != object for name in stored.files)


def test_codec_round_trips_glm_features_with_tensors():
    features = GLMVoiceFeatures(
        prompt_text_ids=[5, 17, 9],
        speech_tokens=list(range(60)),
        speaker_embedding=torch.randn(192),
        prompt_mels={24000: torch.randn(40, 80), 32000: torch.randn(40, 80).to(torch.bfloat16)},
    )
    back = arrays_to_features(features_to_arrays(features), device="cpu")
    assert type(back) is GLMVoiceFeatures
    assert back.prompt_text_ids == [5, 17, 9] and back.speech_tokens == list(range(60))
    assert torch.equal(back.speaker_embedding, features.speaker_embedding)
    assert set(back.prompt_mels) == {24000, 32000}  # int keys stay ints
    assert back.prompt_mels[32000].dtype == torch.bfloat16
    assert torch.equal(back.prompt_mels[32000], features.prompt_mels[32000])
    assert torch.equal(back.prompt_mels[24000], features.prompt_mels[24000])


@dataclass
class Foreign:
    x: int


def test_codec_refuses_what_it_cannot_store_or_should_not_import():
    with pytest.raises(FeatureCodecError, match="cannot store"):
        features_to_arrays({"f": lambda: 0})
    with pytest.raises(FeatureCodecError, match="dtype object"):
        features_to_arrays(np.array([object()], dtype=object))
    with pytest.raises(FeatureCodecError, match="not in an allowed"):
        features_to_arrays(Foreign(1))
    arrays = features_to_arrays(embedded_voice())
    schema = json.loads(arrays["__schema__"].tobytes())
    schema["root"]["type"] = "os:system"  # a crafted file naming something outside the allow-list
    arrays["__schema__"] = np.frombuffer(json.dumps(schema).encode(), dtype=np.uint8)
    with pytest.raises(FeatureCodecError, match="not an allowed"):
        arrays_to_features(arrays)
    schema["root"]["type"] = "glmtts.engines.embedded.engine:EmbeddedEngine"  # allowed module, not a dataclass
    arrays["__schema__"] = np.frombuffer(json.dumps(schema).encode(), dtype=np.uint8)
    with pytest.raises(FeatureCodecError, match="not a dataclass"):
        arrays_to_features(arrays)


# --------------------------------------------------------------------------- saved voices
class CountingEngine(Engine):
    """Stands in for an engine: analyses a prompt into EmbeddedVoice features and counts analyses."""

    sample_rates = (RATE,)

    def __init__(self, name: str = "embedded"):
        self.name = name
        self.prepared: list[str] = []
        self.used: list[object] = []

    def load(self, device):
        pass

    def prepare_voice(self, audio, sample_rate, prompt_text, key):
        self.prepared.append(key)
        return PromptVoice(key, prompt_text, embedded_voice(len(audio)), len(audio) / sample_rate)

    def synthesize_segments(self, segments, voice, options):
        for _ in segments:
            self.used.append(voice.features)
            yield SegmentAudio(np.full(RATE // 10, 0.1, np.float32), RATE)


def make_pipeline(outputs: Path, engine_name: str = "embedded") -> Pipeline:
    pipeline = Pipeline(Settings(device="cpu", outputs=outputs, voice_cache_size=1), CountingEngine(engine_name), "test")
    pipeline.load()
    pipeline.ready = True
    return pipeline


def test_saved_voice_is_stored_reloaded_without_analysis_and_deleted(tmp_path):
    pipeline = make_pipeline(tmp_path)
    store = VoiceStore(pipeline.settings.voices_dir, pipeline)
    store.load_all()
    info = store.create(PROMPT.read_bytes(), " He was a man of fifty. ", "Alice Smith")
    assert info.id.startswith("alice-smith-") and info.features == "computed" and info.prompt_text == "He was a man of fifty."
    folder = pipeline.settings.voices_dir / info.id
    assert {p.name for p in folder.iterdir()} == {PROMPT_FILE, META_FILE, FEATURES_FILE}
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["engine"] == "embedded" and meta["name"] == "Alice Smith" and 1.0 < meta["duration_s"] <= 30.0
    with pytest.raises(VoiceExists):
        store.create(PROMPT.read_bytes(), "He was a man of fifty.", "Alice Smith")
    with pytest.raises(SynthesisError):
        store.create(b"not audio at all", "", "noise")
    assert len(pipeline.engine.prepared) == 1
    created = pipeline.saved_voice(info.id).voice.features

    # A restart: a new pipeline and store find the voice, resident, with nothing analysed.
    restarted = make_pipeline(tmp_path)
    store = VoiceStore(restarted.settings.voices_dir, restarted)
    [loaded] = store.load_all()
    assert loaded.id == info.id and loaded.features == "stored"
    assert info.id in restarted.builtin_voices()
    for voice in ("libri_1688", "libri_1998", info.id, "libri_2414", info.id):  # LRU of size 1 churns meanwhile
        restarted.synthesize(SynthesisRequest("Hello there.", voice))
    assert len(restarted.engine.prepared) == 3 and meta["key"] not in restarted.engine.prepared  # the built-ins only
    assert restarted.engine.used[2] == created and restarted.engine.used[4] == created

    store.delete(info.id)
    assert not folder.exists() and info.id not in restarted.builtin_voices()
    with pytest.raises(VoiceNotFound):
        store.get(info.id)
    with pytest.raises(SynthesisError, match="Unknown voice"):
        restarted.synthesize(SynthesisRequest("Hello.", info.id))


def test_features_from_another_engine_are_recomputed_once_and_stored(tmp_path):
    first = make_pipeline(tmp_path, engine_name="glm-tts")
    info = VoiceStore(first.settings.voices_dir, first).create(PROMPT.read_bytes(), "A saved voice.", "")
    assert info.id.startswith("voice-")
    folder = first.settings.voices_dir / info.id
    key = json.loads((folder / META_FILE).read_text())["key"]

    second = make_pipeline(tmp_path, engine_name="embedded")
    store = VoiceStore(second.settings.voices_dir, second)
    [pending] = store.load_all()
    assert pending.features == "pending" and pending.engine == "glm-tts"
    second.warmup()  # analyses every voice a request may name, the saved one included
    assert second.engine.prepared.count(key) == 1
    assert store.get(info.id).features == "computed" and store.get(info.id).engine == "embedded"
    assert json.loads((folder / META_FILE).read_text())["engine"] == "embedded"

    third = make_pipeline(tmp_path, engine_name="embedded")
    [stored] = VoiceStore(third.settings.voices_dir, third).load_all()
    assert stored.features == "stored"

    (folder / FEATURES_FILE).write_bytes(b"damaged")  # undecodable: analysed again, not fatal
    fourth = make_pipeline(tmp_path, engine_name="embedded")
    [damaged] = VoiceStore(fourth.settings.voices_dir, fourth).load_all()
    assert damaged.features == "pending"
    fourth.synthesize(SynthesisRequest("Hi.", info.id))
    fourth.synthesize(SynthesisRequest("Hi.", info.id))
    assert fourth.engine.prepared == [key]


# --------------------------------------------------------------------------- batch jobs
class ProcessKilled(BaseException):
    """Ends the worker thread mid-item with nothing written, as a kill -9 of the process would."""


class PacedPipeline:
    """Stands in for the pipeline: each synthesis waits for a permit from the test."""

    def __init__(self):
        self.ready = True
        self.engine = SimpleNamespace(name="paced", sample_rates=(RATE,))
        self.scheduler = DeviceScheduler()
        self.permits = threading.Semaphore(0)
        self.calls: list[str] = []
        self.crash = threading.Event()  # when set, the next synthesis dies like the process would

    def builtin_voices(self) -> dict[str, Path]:
        return {"libri_367": PROMPT}

    def allow(self, count: int = 1000) -> None:
        for _ in range(count):
            self.permits.release()

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        self.calls.append(request.text)
        self.permits.acquire()
        if self.crash.is_set():
            raise ProcessKilled
        if request.text.startswith("bad"):
            raise SynthesisError("cannot say that")
        audio = 0.1 * np.sin(np.linspace(0, 440 * 2 * np.pi, RATE // 5)).astype(np.float32)
        return SynthesisResult(audio, RATE, [Segment(request.text, (), request.text)], {"total": 0.01}, "paced")


def jsonl(count: int, prefix: str = "u", bad: tuple[int, ...] = ()) -> str:
    return "\n".join(
        json.dumps(
            {
                "uttid": f"{prefix}{i}",
                "prompt_text": "",
                "prompt_speech": str(PROMPT),
                "syn_text": f"{'bad' if i in bad else 'text'} {prefix}{i}",
            }
        )
        for i in range(count)
    )


@pytest.fixture
def make_jobs(tmp_path):
    made = []

    def build(pipeline):
        jobs = BatchJobs(pipeline, tmp_path / "batch", [PROMPT.parent])
        jobs.recover()
        made.append((jobs, pipeline))
        return jobs

    yield build
    for jobs, pipeline in made:
        pipeline.allow()
        jobs.shutdown(timeout_s=5)


def manifest_uttids(folder: Path) -> list[str]:
    return [json.loads(line)["uttid"] for line in (folder / "manifest.jsonl").read_text().splitlines()]


def test_job_runs_items_in_order_records_errors_and_zips(make_jobs, tmp_path):
    pipeline = PacedPipeline()
    jobs = make_jobs(pipeline)
    first = jobs.submit(jsonl(3, "a", bad=(1,)), SynthesisOptions(seed=7), "first job")
    second = jobs.submit(jsonl(2, "b"), name="second")
    assert jobs.progress(second)["status"] == "queued"
    with pytest.raises(JobStateError, match="zip"):
        jobs.archive(first)
    pipeline.allow()
    wait_until(lambda: jobs.progress(second)["status"] == DONE)
    assert pipeline.calls == ["text a0", "bad a1", "text a2", "text b0", "text b1"]  # one job after the other
    progress = jobs.progress(first)
    assert (progress["status"], progress["done"], progress["ok"], progress["errors"]) == (DONE, 3, 2, 1)
    assert [item["status"] for item in progress["items"]] == ["ok", "error", "ok"]
    assert progress["items"][1]["message"] == "cannot say that" and progress["options"]["seed"] == 7
    folder = tmp_path / "batch" / first
    state = json.loads((folder / "job.json").read_text())
    assert state["status"] == DONE and state["done"] == 3 and state["finished"]
    with zipfile.ZipFile(jobs.archive(first)) as bundle:
        names = {Path(name).name for name in bundle.namelist()}
    assert names == {"a0.wav", "a2.wav", "manifest.jsonl", "input.jsonl", "job.json"}
    assert [job["id"] for job in jobs.list()] == [second, first]


def test_submit_rejects_bad_input_with_the_line(make_jobs):
    jobs = make_jobs(PacedPipeline())
    with pytest.raises(BatchInputError, match="line 2: not valid JSON"):
        jobs.submit(jsonl(1) + "\n{broken")
    with pytest.raises(BatchInputError, match="line 1: .*outside the allowed folders"):
        jobs.submit(json.dumps({"uttid": "x", "prompt_text": "", "prompt_speech": "/etc/passwd", "syn_text": "hi"}))
    with pytest.raises(BatchTooLarge):
        jobs.submit(jsonl(1001))
    with pytest.raises(BatchInputError, match="Sample rate"):
        jobs.submit(jsonl(1), SynthesisOptions(sample_rate=8000))
    with pytest.raises(JobNotFound):
        jobs.progress("nope")
    assert jobs.list() == []


def test_lenient_submit_keeps_bad_lines_as_error_items_and_runs_the_rest(make_jobs):
    pipeline = PacedPipeline()
    jobs = make_jobs(pipeline)
    by_name = json.dumps({"uttid": "named", "prompt_text": "", "prompt_speech": "libri_367", "syn_text": "text named"})
    job = jobs.submit("\n".join([jsonl(1), "{broken", by_name]), strict=False)
    pipeline.allow()
    wait_until(lambda: jobs.progress(job)["status"] == DONE)
    items = jobs.progress(job)["items"]
    assert [(item["uttid"], item["status"]) for item in items] == [("u0", "ok"), ("line2", "error"), ("named", "ok")]
    assert "line 2: not valid JSON" in items[1]["message"]
    assert pipeline.calls == ["text u0", "text named"]


def test_cancel_stops_after_the_current_item_and_resume_finishes(make_jobs, tmp_path):
    pipeline = PacedPipeline()
    jobs = make_jobs(pipeline)
    job = jobs.submit(jsonl(5))
    pipeline.allow(1)
    wait_until(lambda: jobs.progress(job)["current"] == "u1")
    cancelling = jobs.cancel(job)
    assert cancelling["status"] == RUNNING and cancelling["cancelling"]
    pipeline.allow(1)
    wait_until(lambda: jobs.progress(job)["status"] == CANCELLED)
    assert jobs.progress(job)["done"] == 2 and len(pipeline.calls) == 2
    with pytest.raises(JobStateError):
        jobs.cancel(job)
    jobs.resume(job)
    pipeline.allow()
    wait_until(lambda: jobs.progress(job)["status"] == DONE)
    assert manifest_uttids(tmp_path / "batch" / job) == ["u0", "u1", "u2", "u3", "u4"]
    with pytest.raises(JobStateError, match="only interrupted"):
        jobs.resume(job)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the killed worker
def test_crash_mid_job_then_recover_and_resume_runs_each_item_once(make_jobs, tmp_path):
    pipeline = PacedPipeline()
    jobs = make_jobs(pipeline)
    job = jobs.submit(jsonl(6))
    queued = jobs.submit(jsonl(2, "q"))
    pipeline.allow(3)
    wait_until(lambda: jobs.progress(job)["current"] == "u3")
    pipeline.crash.set()
    pipeline.allow(1)  # the process dies while u3 is being synthesized
    folder = tmp_path / "batch" / job
    wait_until(lambda: not jobs._worker.is_alive())
    (folder / "u3.wav").write_bytes(b"RIFF\x00partial")  # torn writes of the dying process
    with (folder / "manifest.jsonl").open("a") as manifest:
        manifest.write('{"uttid": "u3", "sta')
    assert json.loads((folder / "job.json").read_text())["status"] == RUNNING

    restarted = PacedPipeline()
    jobs = make_jobs(restarted)  # recover() runs at start
    progress = jobs.progress(job)
    assert progress["status"] == INTERRUPTED and progress["done"] == 3
    assert "3 of 6" in progress["message"]
    assert [item["status"] for item in progress["items"]] == ["ok", "ok", "ok", "pending", "pending", "pending"]
    assert jobs.progress(queued)["status"] == INTERRUPTED
    restarted.allow()
    time.sleep(0.2)
    assert restarted.calls == []  # nothing runs before a resume (auto_resume is off)
    jobs.resume(job)
    wait_until(lambda: jobs.progress(job)["status"] == DONE)
    assert restarted.calls == ["text u3", "text u4", "text u5"]
    assert manifest_uttids(folder) == ["u0", "u1", "u2", "u3", "u4", "u5"]
    with zipfile.ZipFile(jobs.archive(job)) as bundle:
        wavs = sorted(Path(name).name for name in bundle.namelist() if name.endswith(".wav"))
        assert wavs == [f"u{i}.wav" for i in range(6)]
        assert bundle.read(f"{job}/u3.wav")[:4] == b"RIFF" and len(bundle.read(f"{job}/u3.wav")) > 1000


def test_interactive_requests_go_before_the_next_batch_item(make_jobs):
    pipeline = PacedPipeline()
    jobs = make_jobs(pipeline)
    order: list[str] = []
    release = threading.Event()
    holding = threading.Event()

    def interactive(name: str, hold: bool) -> None:
        with pipeline.scheduler.slot(INTERACTIVE):
            order.append(name)
            if hold:
                holding.set()
                release.wait(WAIT_S)

    first = threading.Thread(target=interactive, args=("first", True))
    first.start()
    holding.wait(WAIT_S)
    pipeline.allow()
    job = jobs.submit(jsonl(1))
    wait_until(lambda: pipeline.scheduler.waiting == 1)  # the batch item waits for the device
    second = threading.Thread(target=interactive, args=("second", False))
    second.start()
    wait_until(lambda: pipeline.scheduler.waiting == 2)
    release.set()
    wait_until(lambda: jobs.progress(job)["status"] == DONE)
    first.join()
    second.join()
    assert order == ["first", "second"] and pipeline.calls == ["text u0"]
