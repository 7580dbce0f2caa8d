"""Renaming and importing saved voices in Redis: seen at once by every replica, a name taken once."""

import pytest

pytest.importorskip("redis", reason="the redis client is not installed (pip install redis)")

from glmtts.cluster import connect
from glmtts.cluster.voices import RedisVoiceStore
from glmtts.scheduler import DeviceScheduler
from glmtts.settings import Settings
from glmtts.voices import VoiceLibrary, VoiceNameTaken

from .test_redis_server import RedisServer
from .test_voices import FRONTEND, PROMPT, CountingEngine


def replica_library(outputs, url: str, name: str) -> VoiceLibrary:
    store = RedisVoiceStore(connect(url, name))
    settings = Settings(device="cpu", outputs=outputs, voice_cache_size=1)
    library = VoiceLibrary(settings, CountingEngine(), FRONTEND, DeviceScheduler(), "cpu", store)
    library.load()
    return library


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def test_a_rename_on_one_replica_is_seen_on_the_other_and_frees_the_old_name(redis_server, tmp_path):
    first = replica_library(tmp_path / "a", redis_server.url, "a:1")
    second = replica_library(tmp_path / "b", redis_server.url, "b:2")
    alice = first.create(PROMPT.read_bytes(), "One.", "Alice")
    bob = second.create(PROMPT.read_bytes(), "Two.", "Bob")

    first.rename(alice.id, "Carol")
    assert second.get(alice.id).name == "Carol" and second.resolve("carol").key == first.resolve(alice.id).key
    with pytest.raises(VoiceNameTaken):
        second.rename(bob.id, "carol")
    assert second.rename(bob.id, "Alice").name == "Alice"  # the old name is free again, across replicas
    with pytest.raises(VoiceNameTaken):
        first.create(PROMPT.read_bytes(), "Three.", "alice")


def test_a_voice_imported_on_one_replica_is_usable_on_the_other_without_analysis(redis_server, tmp_path):
    first = replica_library(tmp_path / "a", redis_server.url, "a:1")
    second = replica_library(tmp_path / "b", redis_server.url, "b:2")
    _, data = first.export("libri_367")
    analysed = len(first.engine.prepared)
    imported = first.import_voice(data, name="Reader")
    assert len(first.engine.prepared) == analysed
    assert second.resolve("reader").features == first.resolve(imported.id).features
    assert second.engine.prepared == []
