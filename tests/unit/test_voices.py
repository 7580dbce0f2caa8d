"""The voice library (built-in, saved and uploaded prompts; analyses kept on disk) and the features codec.

The library runs with a counting stand-in engine and a stand-in frontend, so every analysis is seen.
"""

import json
import time
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
from glmtts.feature_codec import FeatureCodecError, arrays_to_features, features_to_arrays, load_features, save_features
from glmtts.scheduler import DeviceScheduler
from glmtts.settings import PROJECT_ROOT, Settings
from glmtts.types import PromptVoice, Segment, SegmentAudio, SynthesisError
from glmtts.voices import (
    FEATURES_FILE,
    META_FILE,
    PROMPT_FILE,
    BuiltinVoice,
    VoiceExists,
    VoiceLibrary,
    VoiceNotFound,
)

PROMPT = PROJECT_ROOT / "examples" / "prompt" / "libri_367.flac"
RATE = 24000


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



# --------------------------------------------------------------------------- library
class CountingEngine(Engine):
    """Stands in for an engine: analyses a prompt into EmbeddedVoice features and counts analyses."""

    sample_rates = (RATE,)

    def __init__(self, name: str = "embedded", analysis_version: str = "1"):
        self.name = name
        self.analysis_version = analysis_version
        self.prepared: list[str] = []

    def load(self, device):
        pass

    def prepare_voice(self, audio, sample_rate, prompt_text, key):
        self.prepared.append(key)
        return PromptVoice(key, prompt_text, embedded_voice(len(audio)), len(audio) / sample_rate)

    def synthesize_segments(self, segments, voice, options, cancel=None):
        for _ in segments:
            yield SegmentAudio(np.full(RATE // 10, 0.1, np.float32), RATE)


FRONTEND = SimpleNamespace(text_to_segments=lambda text: [Segment(text, (), text)])


def make_library(outputs: Path, engine_name: str = "embedded", analysis_version: str = "1") -> VoiceLibrary:
    engine = CountingEngine(engine_name, analysis_version)
    library = VoiceLibrary(Settings(device="cpu", outputs=outputs, voice_cache_size=1), engine, FRONTEND, DeviceScheduler(), "cpu")
    library.load()
    return library


def test_saved_voice_is_stored_reloaded_without_analysis_and_deleted(tmp_path):
    library = make_library(tmp_path)
    info = library.create(PROMPT.read_bytes(), " He was a man of fifty. ", "Alice Smith")
    assert info.id.startswith("alice-smith-") and info.features == "computed" and info.prompt_text == "He was a man of fifty."
    folder = tmp_path / "voices" / info.id
    assert {p.name for p in folder.iterdir()} == {PROMPT_FILE, META_FILE, FEATURES_FILE}
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["engine"] == "embedded" and meta["name"] == "Alice Smith" and 1.0 < meta["duration_s"] <= 30.0
    with pytest.raises(VoiceExists):
        library.create(PROMPT.read_bytes(), "He was a man of fifty.", "Alice Smith")
    with pytest.raises(SynthesisError):
        library.create(b"not audio at all", "", "noise")
    assert len(library.engine.prepared) == 1
    created = library.resolve(info.id).features

    # A restart: a new library lists the voice at once and decodes its analysis at first use, never refitting.
    restarted = make_library(tmp_path)
    assert info.id in restarted.names() and restarted.get(info.id).features == "pending"
    for voice in ("libri_1688", "libri_1998", info.id, "libri_2414", "Alice Smith"):  # LRU of size 1 churns meanwhile
        voice = restarted.resolve(voice)
    assert restarted.get(info.id).features == "stored" and voice.features == created
    assert meta["key"] not in restarted.engine.prepared

    restarted.delete(info.id)
    assert not folder.exists() and info.id not in restarted.names()
    with pytest.raises(VoiceNotFound):
        restarted.get(info.id)
    with pytest.raises(SynthesisError, match="There is no voice"):
        restarted.resolve(info.id)
    with pytest.raises(BuiltinVoice):
        restarted.delete("libri_367")


def test_features_from_another_engine_or_version_are_recomputed_once_at_first_use(tmp_path):
    first = make_library(tmp_path, engine_name="glm-tts")
    info = first.create(PROMPT.read_bytes(), "A saved voice.", "")
    assert info.id.startswith("voice-")
    folder = tmp_path / "voices" / info.id
    key = json.loads((folder / META_FILE).read_text())["key"]

    second = make_library(tmp_path, engine_name="embedded")
    assert second.get(info.id).features == "pending" and second.get(info.id).engine == "glm-tts"
    second.warm()  # built-ins only: a saved voice waits for its first use
    assert key not in second.engine.prepared
    second.resolve(info.id)
    second.resolve(info.id)
    assert second.engine.prepared.count(key) == 1
    assert second.get(info.id).features == "computed" and json.loads((folder / META_FILE).read_text())["engine"] == "embedded"

    third = make_library(tmp_path, engine_name="embedded")
    third.resolve(info.id)
    assert third.get(info.id).features == "stored" and third.engine.prepared == []

    newer = make_library(tmp_path, engine_name="embedded", analysis_version="2")
    newer.resolve(info.id)
    assert newer.engine.prepared == [key]

    (folder / FEATURES_FILE).write_bytes(b"damaged")  # undecodable: analysed again, not fatal
    fourth = make_library(tmp_path, engine_name="embedded", analysis_version="2")
    fourth.resolve(info.id)
    fourth.resolve(info.id)
    assert fourth.engine.prepared == [key]


def test_builtin_analyses_are_kept_on_disk_per_engine_version(tmp_path):
    first = make_library(tmp_path)
    first.warm()
    assert len(first.engine.prepared) == 4
    second = make_library(tmp_path)
    second.warm()
    assert second.engine.prepared == []  # a restart refits nothing
    assert second.resolve("libri_367").features == first.resolve("libri_367").features
    other = make_library(tmp_path, analysis_version="2")
    other.warm()
    assert len(other.engine.prepared) == 4


def test_different_non_ascii_names_with_one_prompt_are_different_voices(tmp_path):
    library = make_library(tmp_path)
    zhang = library.create(PROMPT.read_bytes(), "", "张三")
    li = library.create(PROMPT.read_bytes(), "", "李四")
    assert zhang.id != li.id and zhang.id.startswith("voice-") and li.id.startswith("voice-")
    assert library.resolve("张三") is library.resolve(zhang.id)
    with pytest.raises(VoiceExists):
        library.create(PROMPT.read_bytes(), "", "张三")
    with pytest.raises(SynthesisError, match="control characters"):
        library.create(PROMPT.read_bytes(), "", "bad\x00name")


def test_two_hundred_saved_voices_load_in_no_time_and_analyse_nothing(tmp_path):
    library = make_library(tmp_path)
    info = library.create(PROMPT.read_bytes(), "", "original")
    source = tmp_path / "voices" / info.id
    meta = json.loads((source / META_FILE).read_text())
    for number in range(199):
        folder = tmp_path / "voices" / f"copy-{number:08x}"
        folder.mkdir()
        for name in (PROMPT_FILE, FEATURES_FILE):
            (folder / name).write_bytes((source / name).read_bytes())
        (folder / META_FILE).write_text(json.dumps({**meta, "name": f"copy {number}"}))
    start = time.perf_counter()
    restarted = make_library(tmp_path)
    seconds = time.perf_counter() - start
    assert len(restarted.names()) == 4 + 200 and restarted.engine.prepared == []
    assert seconds < 2.0, f"loading 200 saved voices took {seconds:.2f} s"
