"""Shared state in Redis: voices, batch jobs and rate limits seen alike by two "replicas" in one process.

Each test gets a fresh redis-server on a free loopback port (test_redis_server.RedisServer). Skipped
only where redis-server is not installed (`apt-get install redis-server`; .ci/run installs it).
"""

import dataclasses
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

redis = pytest.importorskip("redis", reason="the redis client is not installed (pip install redis)")

from glmtts.cluster import SharedStateUnavailable, connect
from glmtts.cluster.ratelimit import RedisRateLimiter
from glmtts.cluster.voices import RedisVoiceStore
from glmtts.http.errors import response_for
from glmtts.jobs.interface import CANCELLED, DONE, RUNNING, JobStateError
from glmtts.jobs.redis_store import STREAM, RedisJobQueue
from glmtts.scheduler import DeviceScheduler
from glmtts.settings import Settings
from glmtts.types import SynthesisError
from glmtts.voices import VoiceExists, VoiceLibrary, VoiceNameTaken

from .test_jobs import PROMPT, VOICES, PacedPipeline, jsonl, wait_until
from .test_redis_server import RedisServer, free_port
from .test_voices import FRONTEND, CountingEngine


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- voices
def replica_library(outputs: Path, url: str, name: str, engine_name: str = "embedded", version: str = "1") -> VoiceLibrary:
    settings = Settings(device="cpu", outputs=outputs, voice_cache_size=1)
    store = RedisVoiceStore(connect(url, name))
    library = VoiceLibrary(settings, CountingEngine(engine_name, version), FRONTEND, DeviceScheduler(), "cpu", store)
    library.load()
    return library


def test_a_voice_saved_on_one_replica_is_known_and_decoded_on_the_other(redis_server, tmp_path):
    first = replica_library(tmp_path / "a", redis_server.url, "a:1")
    second = replica_library(tmp_path / "b", redis_server.url, "b:2")
    info = first.create(PROMPT.read_bytes(), "He was a man of fifty.", "Alice Smith")
    assert not (tmp_path / "a" / "voices" / info.id).exists()  # in Redis, not on one replica's disk

    assert info.id in second.names() and second.get(info.id).features == "pending"
    assert second.get(info.id).name == "Alice Smith"
    voice = second.resolve("Alice Smith")
    assert second.engine.prepared == [] and second.get(info.id).features == "stored"  # decoded, never refitted
    assert voice.features == first.resolve(info.id).features and voice.prompt_text == "He was a man of fifty."
    with pytest.raises(VoiceExists):
        second.create(PROMPT.read_bytes(), "He was a man of fifty.", "Alice Smith")

    second.delete(info.id)
    assert info.id not in first.names()
    with pytest.raises(SynthesisError, match="There is no voice"):
        first.resolve(info.id)


def test_another_engine_version_refits_once_and_stores_it_for_the_others(redis_server, tmp_path):
    old = replica_library(tmp_path / "a", redis_server.url, "a:1", version="1")
    info = old.create(PROMPT.read_bytes(), "", "Bob")
    newer = replica_library(tmp_path / "b", redis_server.url, "b:2", version="2")
    newer.resolve(info.id)
    assert len(newer.engine.prepared) == 1 and newer.get(info.id).features == "computed"
    third = replica_library(tmp_path / "c", redis_server.url, "c:3", version="2")
    third.resolve(info.id)
    assert third.engine.prepared == [] and third.get(info.id).features == "stored"


def test_a_name_is_taken_once_across_replicas_and_freed_by_delete(redis_server, tmp_path):
    first = replica_library(tmp_path / "a", redis_server.url, "a:1")
    second = replica_library(tmp_path / "b", redis_server.url, "b:2")
    info = first.create(PROMPT.read_bytes(), "One.", "Alice")
    with pytest.raises(VoiceNameTaken, match=f"exists \\(id {info.id}\\)"):
        second.create(PROMPT.read_bytes(), "Two.", "ALICE")
    # A replica that saves before it saw the other's voice: Redis sets the name only if it is absent.
    racing = dataclasses.replace(info, id="alice-0000000f", name="alice")
    with pytest.raises(VoiceNameTaken, match=f"exists \\(id {info.id}\\)"):
        second.store.add(racing, "another-key", np.zeros(24000, np.float32), 24000, first.resolve(info.id).features)
    assert second.names() == first.names() and "alice-0000000f" not in first.names()
    first.delete(info.id)
    again = second.create(PROMPT.read_bytes(), "Two.", "alice")
    assert first.resolve("Alice").prompt_text == "Two." and first.get(again.id).name == "alice"


# --------------------------------------------------------------------------- batch jobs
@pytest.fixture
def replicas(tmp_path, redis_server):
    """Build RedisJobQueue "replicas" sharing one Redis and one batch folder; shut them down after."""
    made = []

    def build(name: str, lease_s: float = 30.0, pipeline: PacedPipeline | None = None):
        pipeline = pipeline or PacedPipeline()
        jobs = RedisJobQueue(pipeline, VOICES, tmp_path / "batch", [PROMPT.parent], connect(redis_server.url, name), lease_s)
        jobs.recover()
        jobs.start()
        made.append((jobs, pipeline))
        return jobs, pipeline

    yield build
    for jobs, pipeline in made:
        pipeline.allow()
        jobs.shutdown(timeout_s=5)


def manifest_lines(archive: Path, job_id: str) -> list[dict]:
    with zipfile.ZipFile(archive) as bundle:
        return [json.loads(line) for line in bundle.read(f"{job_id}/manifest.jsonl").decode().splitlines()]


def test_items_spread_over_replicas_and_every_replica_shows_and_zips_the_job(replicas, tmp_path):
    first, first_pipeline = replicas("a:1")
    second, second_pipeline = replicas("b:2")
    job = first.submit(jsonl(8, bad=(3,)), name="spread")
    assert second.progress(job)["status"] in ("queued", RUNNING)
    wait_until(lambda: len(first_pipeline.calls) == 1 and len(second_pipeline.calls) == 1)  # one item each, at once
    first_pipeline.allow()
    second_pipeline.allow()
    wait_until(lambda: second.progress(job)["status"] == DONE)
    progress = first.progress(job)
    assert (progress["done"], progress["ok"], progress["errors"]) == (8, 7, 1)
    assert {item["replica"] for item in progress["items"]} == {"a:1", "b:2"}
    assert progress == {**second.progress(job)}
    assert sorted(first_pipeline.calls + second_pipeline.calls) == sorted(f"{'bad' if i == 3 else 'text'} u{i}" for i in range(8))

    lines = manifest_lines(second.archive(job), job)
    assert sorted(line["uttid"] for line in lines) == [f"u{i}" for i in range(8)]
    assert {line["replica"] for line in lines} == {"a:1", "b:2"}
    folder = tmp_path / "batch" / job
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["input.jsonl", "manifest.jsonl"] + [f"u{i}{suffix}" for i in range(8) if i != 3 for suffix in (".wav", ".srt")]
    )
    assert [summary["id"] for summary in second.list()] == [job] and first.pending_items() == 0


def test_a_job_is_stored_with_its_items_parsed_once_and_workers_run_those(replicas, redis_server):
    jobs, pipeline = replicas("a:1")
    job = jobs.submit(jsonl(2), name="stored")
    client = redis.Redis.from_url(redis_server.url)
    stored = json.loads(client.hget(f"glmtts:job:{job}", "items"))
    assert [record["uttid"] for record in stored] == ["u0", "u1"] and Path(stored[0]["prompt_file"]) == PROMPT.resolve()
    assert client.hget(f"glmtts:job:{job}", "input") is None  # the file is not kept to be parsed again
    pipeline.allow()
    wait_until(lambda: jobs.progress(job)["status"] == DONE)
    assert [item["status"] for item in jobs.progress(job)["items"]] == ["ok", "ok"]


def test_an_item_of_a_dead_replica_runs_elsewhere_once_its_lease_runs_out(replicas, redis_server):
    client = redis.Redis.from_url(redis_server.url)
    survivor, pipeline = replicas("b:2", lease_s=1.0)
    job = survivor.submit(jsonl(3), name="lease")
    # While the survivor runs u0, a replica takes u1 and dies: it never renews nor acknowledges it.
    wait_until(lambda: survivor.progress(job)["current"] == "u0")
    ghost = client.xreadgroup("workers", "ghost:9#1", {STREAM: ">"}, count=1)
    (_, [(_entry_id, fields)]) = ghost[0]
    assert fields[b"uttid"] == b"u1"
    pipeline.allow()
    wait_until(lambda: survivor.progress(job)["status"] == DONE)
    items = survivor.progress(job)["items"]
    assert [(item["uttid"], item["status"], item["replica"]) for item in items] == [(f"u{i}", "ok", "b:2") for i in range(3)]
    assert client.xlen(STREAM) == 0 and client.xpending(STREAM, "workers")["pending"] == 0


def test_a_result_is_recorded_once_when_two_replicas_ran_the_same_item(replicas, redis_server):
    jobs, _pipeline = replicas("a:1")
    jobs.shutdown()  # this test plays the worker's steps itself
    job = jobs.submit(jsonl(2), name="twice")
    client = redis.Redis.from_url(redis_server.url)
    entry = jobs._next_entry()
    assert entry.uttid == "u0"
    # Replica a's lease ran out while it still worked; replica b took the entry over; both finish it.
    jobs._record(entry, {"uttid": "u0", "status": "ok", "replica": "b:2"})
    jobs._record(entry, {"uttid": "u0", "status": "ok", "replica": "a:1"})
    assert client.lrange(f"glmtts:job:{job}:order", 0, -1) == [b"u0"]
    assert json.loads(client.hget(f"glmtts:job:{job}:results", "u0"))["replica"] == "b:2"
    assert jobs.progress(job)["done"] == 1 and client.xlen(STREAM) == 1  # u1 still queued


def test_cancel_on_one_replica_stops_the_other_after_its_item_and_resume_finishes(replicas):
    first, first_pipeline = replicas("a:1")
    second, second_pipeline = replicas("b:2")
    job = second.submit(jsonl(6), name="stop")
    wait_until(lambda: len(first_pipeline.calls) + len(second_pipeline.calls) == 2)
    cancelling = first.cancel(job)
    assert cancelling["status"] == RUNNING and cancelling["cancelling"]
    first_pipeline.allow()
    second_pipeline.allow()
    wait_until(lambda: second.progress(job)["status"] == CANCELLED)
    assert second.progress(job)["done"] == 2
    with pytest.raises(JobStateError):
        second.cancel(job)
    with pytest.raises(JobStateError, match="zip"):
        second.archive(job)
    first.resume(job)
    wait_until(lambda: second.progress(job)["status"] == DONE)
    lines = manifest_lines(first.archive(job), job)
    assert sorted(line["uttid"] for line in lines) == [f"u{i}" for i in range(6)]
    assert len(first_pipeline.calls) + len(second_pipeline.calls) == 6


def test_redis_killed_and_restarted_mid_job_loses_nothing_and_the_job_goes_on(replicas, redis_server):
    jobs, pipeline = replicas("a:1", lease_s=5.0)  # an item taken as Redis went down comes back after its lease
    job = jobs.submit(jsonl(6), name="outage")
    pipeline.allow(2)
    wait_until(lambda: jobs.progress(job)["done"] == 2)
    before = {item["uttid"] for item in jobs.progress(job)["items"] if item["status"] == "ok"}
    redis_server.kill()
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError) as raised:
        jobs.progress(job)
    assert time.monotonic() - started < 5.0  # a clear error, never a hang
    response = response_for(raised.value)
    assert response.status_code == 503 and b"Redis" in response.body and response.headers["retry-after"]
    pipeline.allow(1)  # an item finishes while Redis is down: recorded once it is back
    time.sleep(1.0)
    redis_server.start()
    pipeline.allow()
    wait_until(lambda: jobs.progress(job)["status"] == DONE, timeout=60)
    progress = jobs.progress(job)
    assert before <= {item["uttid"] for item in progress["items"] if item["status"] == "ok"}
    assert progress["ok"] == 6
    assert sorted(line["uttid"] for line in manifest_lines(jobs.archive(job), job)) == [f"u{i}" for i in range(6)]


def test_unreachable_redis_is_a_clear_start_up_error_in_seconds():
    shared = connect(f"redis://:secret@127.0.0.1:{free_port()}/0", "a:1")
    started = time.monotonic()
    with pytest.raises(SharedStateUnavailable, match=r"redis://:\*\*\*@127\.0\.0\.1:\d+/0 \(GLMTTS_REDIS_URL\) is unreachable"):
        shared.check()
    assert time.monotonic() - started < 5.0


# --------------------------------------------------------------------------- rate limits
def test_rate_limit_buckets_are_shared_by_replicas(redis_server):
    first = RedisRateLimiter(3, connect(redis_server.url, "a:1"))
    second = RedisRateLimiter(3, connect(redis_server.url, "b:2"))
    assert [first.acquire("ip:1.2.3.4"), second.acquire("ip:1.2.3.4"), first.acquire("ip:1.2.3.4")] == [0.0, 0.0, 0.0]
    wait_s = second.acquire("ip:1.2.3.4")
    assert 0 < wait_s <= 20.0  # 3 a minute: the next token in at most 20 s
    assert first.acquire("ip:5.6.7.8") == 0.0  # another client has its own bucket
    redis_server.kill()
    with pytest.raises(SharedStateUnavailable):
        first.acquire("ip:1.2.3.4")


def test_the_security_middleware_of_two_replicas_shares_one_limit_and_answers_503_without_redis(redis_server):
    from .test_security import client, make_app

    replica_a = make_app(rate_limit=2, redis_url=redis_server.url, replica="a:1")
    replica_b = make_app(rate_limit=2, redis_url=redis_server.url, replica="b:2")
    with client(replica_a) as first, client(replica_b) as second:
        assert [first.post("/v1/echo").status_code, second.post("/v1/echo").status_code] == [200, 200]
        limited = first.post("/v1/echo")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) <= 30
        assert second.post("/v1/echo").status_code == 429  # the same client, on the other replica
        assert second.get("/v1/status").status_code == 200  # reads cost no token and need no Redis
        redis_server.kill()
        started = time.monotonic()
        down = first.post("/v1/echo")
        assert down.status_code == 503 and "Redis" in down.json()["detail"] and down.headers["retry-after"]
        assert time.monotonic() - started < 5.0
