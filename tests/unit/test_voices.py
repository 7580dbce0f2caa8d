"""The voice library (built-in, saved and uploaded prompts; analyses kept on disk) and the features codec.

The library runs with a counting stand-in engine and a stand-in frontend, so every analysis is seen.
"""

import concurrent.futures
import io
import json
import logging
import shutil
import threading
import time
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glmtts import files
from glmtts.audio import read_prompt
from glmtts.engine import Engine
from glmtts.engines.embedded.engine import EmbeddedVoice
from glmtts.engines.embedded.voice_match import MatchParams, VoiceProfile
from glmtts.engines.glm.engine import GLMVoiceFeatures
from glmtts.feature_codec import FeatureCodecError, arrays_to_features, features_to_arrays, load_features, save_features
from glmtts.files import MadeElsewhere, making
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
    VoiceNameError,
    VoiceNameTaken,
    VoiceNotFound,
    normalize_voice_name,
    prompt_language,
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


def make_library(
    outputs: Path, engine_name: str = "embedded", analysis_version: str = "1", frontend=FRONTEND, **settings
) -> VoiceLibrary:
    engine = CountingEngine(engine_name, analysis_version)
    settings = Settings(device="cpu", outputs=outputs, voice_cache_size=1, **settings)
    library = VoiceLibrary(settings, engine, frontend, DeviceScheduler(), "cpu")
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


def test_replicas_starting_together_split_the_builtin_analyses(tmp_path):
    """Two libraries on one cache folder (two replicas, as the lock is taken per open file) warm at
    once: each analyses some built-in voices while the other analyses others, and none twice."""
    meeting = threading.Barrier(2, timeout=30)  # both analyse at the same moment, or this breaks

    class MeetingEngine(CountingEngine):
        def prepare_voice(self, audio, sample_rate, prompt_text, key):
            if not self.prepared:
                meeting.wait()
            return super().prepare_voice(audio, sample_rate, prompt_text, key)

    libraries = [make_library(tmp_path) for _ in range(2)]
    for library in libraries:
        library.engine = MeetingEngine()
    warming = [threading.Thread(target=library.warm) for library in libraries]
    for thread in warming:
        thread.start()
    for thread in warming:
        thread.join(60)
    first, second = (library.engine.prepared for library in libraries)
    assert first and second and len(set(first + second)) == len(first + second) == 4
    for name in ("libri_1688", "libri_1998", "libri_2414", "libri_367"):
        assert libraries[0].resolve(name).features == libraries[1].resolve(name).features


def test_a_file_is_made_once_by_those_sharing_its_folder(tmp_path):
    target = tmp_path / "made" / "analysis.npz"
    with making(target):
        with pytest.raises(MadeElsewhere), making(target, wait=False):
            pass
        waited = threading.Event()

        def wait_then_make():
            with making(target):
                waited.set()

        waiter = threading.Thread(target=wait_then_make)
        waiter.start()
        assert not waited.wait(0.3)  # held here: the other waits
    waiter.join(10)
    assert waited.is_set()
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    with making(not_a_folder / "analysis.npz", wait=False):  # no lock file possible: made unlocked
        pass


def test_what_was_made_while_waiting_is_taken_not_made_again(tmp_path, monkeypatch):
    """A second maker arriving while the first makes the file waits for it, then reads it."""
    target = tmp_path / "made.txt"
    made = []

    def make():
        made.append("here")
        target.write_text("made here")
        return "made here"

    def find():
        return target.read_text() if target.exists() else None

    waiting = threading.Event()
    lock_making = files._lock_making

    def signalling_lock(path, wait):
        waiting.set()
        return lock_making(path, wait)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with making(target):  # the first maker holds the lock
            monkeypatch.setattr(files, "_lock_making", signalling_lock)
            second = pool.submit(files.made_once, target, find, make)
            assert waiting.wait(10)  # the second found nothing and waits for the lock
            target.write_text("made by the first")
        assert second.result(10) == "made by the first" and made == []
    assert files.made_once(target, find, make) == "made by the first"  # found without the lock


def test_different_non_ascii_names_with_one_prompt_are_different_voices(tmp_path):
    library = make_library(tmp_path)
    zhang = library.create(PROMPT.read_bytes(), "", "张三")
    li = library.create(PROMPT.read_bytes(), "", "李四")
    assert zhang.id != li.id and zhang.id.startswith("voice-") and li.id.startswith("voice-")
    assert library.resolve("张三") is library.resolve(zhang.id)
    with pytest.raises(VoiceExists):
        library.create(PROMPT.read_bytes(), "", "张三")
    with pytest.raises(SynthesisError, match="control character, U\\+0000, at position 4"):
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
    start = time.process_time()  # CPU time, whatever else the machine runs
    restarted = make_library(tmp_path)
    seconds = time.process_time() - start
    assert len(restarted.names()) == 4 + 200 and restarted.engine.prepared == []
    assert seconds < 2.0, f"loading 200 saved voices took {seconds:.2f} s of CPU"


# --------------------------------------------------------------------------- names
def saved_folders(outputs: Path) -> list[str]:
    return sorted(folder.name for folder in (outputs / "voices").iterdir())


def test_names_are_nfkc_normalized_compared_case_folded_and_refused_with_what_and_where(tmp_path):
    library = make_library(tmp_path)
    cafe = library.create(PROMPT.read_bytes(), "", "Caf\u00e9")
    assert library.create(PROMPT.read_bytes(), "One.", "\ufb01ne   voice ").name == "fine voice"  # ligature, spaces
    for look_alike in ("Cafe\u0301", "CAF\u00c9", "caf\u00e9", " Caf\uff45\u0301"):  # NFD, case, full-width e
        with pytest.raises(VoiceNameTaken, match=f"A voice named .* exists \\(id {cafe.id}\\)"):
            library.create(PROMPT.read_bytes(), "Another prompt.", look_alike)
    assert library.resolve("CAFE\u0301") is library.resolve(cafe.id)
    before = saved_folders(tmp_path)
    refused = {
        "ab\u200bc": "format character .*U\\+200B, at position 3",  # zero-width space
        "\u202eevil": "format character .*U\\+202E, at position 1",  # right-to-left override
        "tab\there": "control character, U\\+0009, at position 4",
        "x\ue000": "private-use character, U\\+E000, at position 2",
        "\u0378": "unassigned character, U\\+0378, at position 1",
        "a\ud800": "surrogate, U\\+D800, at position 2",
        " \u3000 ": "only whitespace",
        "n" * 81: "81 characters; the limit is 80",
    }
    for name, message in refused.items():
        with pytest.raises(VoiceNameError, match=message):
            library.create(PROMPT.read_bytes(), "Refused.", name)
    assert saved_folders(tmp_path) == before and len(library.describe()) == 4 + 2


def test_builtin_and_alias_names_are_reserved_and_win_over_saved_names(tmp_path):
    aliases = tmp_path / "aliases.json"
    aliases.write_text(json.dumps({"alloy": "libri_1998", "Narrator": "libri_367"}))
    library = make_library(tmp_path, voice_aliases=aliases)
    reserved = {"libri_1998": "a built-in voice", "LIBRI_1998": "a built-in voice", "Alloy": "an alias of 'libri_1998'",
                "narrator": "an alias of 'libri_367'", "shimmer": "an OpenAI voice name"}  # fmt: skip
    for name, what in reserved.items():
        with pytest.raises(VoiceNameTaken, match=f"The name {name!r} is reserved: it is {what}"):
            library.create(PROMPT.read_bytes(), "", name)
    assert not any((tmp_path / "voices").iterdir())


class MeetingFrontend:
    """Holds each prompt's analysis until `parties` of them are under way: saves that passed the first name check together."""

    def __init__(self, parties: int):
        self.barrier = threading.Barrier(parties, timeout=30)

    def text_to_segments(self, text):
        self.barrier.wait()
        return FRONTEND.text_to_segments(text)


def test_of_simultaneous_saves_of_one_name_exactly_one_wins(tmp_path):
    parties = 4
    library = make_library(tmp_path, frontend=MeetingFrontend(parties))
    outcomes: list[object] = [None] * parties

    def save(number: int) -> None:
        try:
            outcomes[number] = library.create(PROMPT.read_bytes(), f"Prompt number {number}.", "Twin" if number % 2 else "twin")
        except VoiceNameTaken as error:
            outcomes[number] = error

    threads = [threading.Thread(target=save, args=(number,)) for number in range(parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    saved = [outcome for outcome in outcomes if not isinstance(outcome, VoiceNameTaken)]
    assert len(saved) == 1 and len(library.engine.prepared) == parties, outcomes
    assert saved_folders(tmp_path) == [saved[0].id] and library.resolve("TWIN") is library.resolve(saved[0].id)


def test_saved_voices_with_conflicting_names_from_before_load_warn_and_stay_reachable_by_id(tmp_path, caplog):
    library = make_library(tmp_path)
    original = library.create(PROMPT.read_bytes(), "", "original")
    source = tmp_path / "voices" / original.id
    meta = json.loads((source / META_FILE).read_text())
    legacy = {"twin-0000000a": "twin", "twin-0000000b": "Twin", "alloy-0000000c": "alloy", "libri-0000000d": "libri_1998"}
    for number, (folder_name, name) in enumerate(legacy.items()):  # as an older version saved them, unchecked
        folder = tmp_path / "voices" / folder_name
        folder.mkdir()
        (folder / PROMPT_FILE).write_bytes((source / PROMPT_FILE).read_bytes())
        (folder / META_FILE).write_text(
            json.dumps({**meta, "name": name, "created": f"2020-01-0{number + 1}", "engine": "other"})
        )
    with caplog.at_level(logging.WARNING, logger="glmtts.voices"):
        restarted = make_library(tmp_path)
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert "twin-0000000a, twin-0000000b share one name" in warned
    assert "alloy-0000000c: the name is an alias of 'libri_1998'" in warned and "libri-0000000d: the name is a built-in" in warned
    for folder_name in legacy:
        assert restarted.resolve(folder_name).key == meta["key"]
    with pytest.raises(SynthesisError, match="2 saved voices are named 'twin' \\(twin-0000000a, twin-0000000b\\); give one's id"):
        restarted.resolve("twin")
    assert restarted.resolve("alloy") is restarted.resolve("libri_1998") is not restarted.resolve("libri-0000000d")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(st.characters(codec=None, exclude_categories=()), max_size=90))
def test_any_unicode_name_is_stored_normalized_and_found_or_refused_leaving_nothing(tmp_path, name):
    library = make_library(tmp_path)
    try:
        info = library.create(PROMPT.read_bytes(), "", name)
    except VoiceNameTaken:  # a built-in's or alias's name, by chance
        assert not any((tmp_path / "voices").iterdir())
        return
    except VoiceNameError:
        assert not any((tmp_path / "voices").iterdir())
        assert any(unicodedata.category(c).startswith("C") for c in name) or not name.strip() or len(name) > 80 or len(
            unicodedata.normalize("NFKC", name)) > 80  # fmt: skip
        return
    try:
        assert info.name == (normalize_voice_name(name) or info.id) and len(info.name) <= 80
        assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in info.name)
        assert [voice.name for voice in make_library(tmp_path).describe() if not voice.builtin] == [info.name]
        assert library.get(info.id) == info and library.resolve(name or info.id) is library.resolve(info.id)
    finally:
        library.delete(info.id)


# --------------------------------------------------------------------------- moving, renaming and hearing voices
def test_a_voice_exported_here_imports_elsewhere_with_its_analysis_and_its_name(tmp_path):
    here = make_library(tmp_path / "here")
    info = here.create(PROMPT.read_bytes(), "He was a man of fifty.", "Alice")
    filename, data = here.export(info.id)
    assert filename == "alice.voice.zip"

    there = make_library(tmp_path / "there")
    imported = there.import_voice(data)
    assert (imported.name, imported.prompt_text, imported.duration_s) == ("Alice", info.prompt_text, info.duration_s)
    assert there.engine.prepared == []  # same engine and analysis version: the file's analysis is used
    assert there.resolve("alice").features == here.resolve(info.id).features
    samples, rate = there.prompt_audio(imported.id)
    original, original_rate = here.prompt_audio(info.id)
    assert rate == original_rate and np.array_equal(samples, original)
    with pytest.raises(VoiceExists):  # the same name and prompt again
        there.import_voice(data)
    assert there.import_voice(data, name="Alice 2").name == "Alice 2"
    with pytest.raises(VoiceNameTaken):
        there.import_voice(data, name="libri_367")

    elsewhere = make_library(tmp_path / "glm", engine_name="glm-tts")  # another engine: analysed again, once
    elsewhere.import_voice(data)
    assert len(elsewhere.engine.prepared) == 1


def test_builtin_voices_export_and_every_voice_plays_its_prompt(tmp_path):
    library = make_library(tmp_path)
    filename, data = library.export("libri_367")
    assert filename == "libri-367.voice.zip"
    assert library.import_voice(data, name="Reader").prompt_text == library.get("libri_367").prompt_text
    samples, rate = library.prompt_audio("libri_367")
    assert samples.dtype == np.float32 and 3 < len(samples) / rate < 31
    with pytest.raises(VoiceNotFound):
        library.prompt_audio("nobody")


def corrupt_zips(data: bytes) -> dict[str, bytes]:
    """Voice files damaged one way each: what an attacker or a bad copy sends."""

    def rezip(edit) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
            members = {name: source.read(name) for name in source.namelist()}
            for name, content in edit(members).items():
                target.writestr(name, content)
        return out.getvalue()

    meta = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("voice.json"))
    return {
        "not a zip": b"PK\x03\x04 not really",
        "stranger": rezip(lambda m: {**m, "../../etc/passwd": b"x"}),
        "no prompt": rezip(lambda m: {k: v for k, v in m.items() if k != "prompt.wav"}),
        "other format": rezip(lambda m: {**m, "voice.json": json.dumps({**meta, "format": "x"})}),
        "newer version": rezip(lambda m: {**m, "voice.json": json.dumps({**meta, "version": 99})}),
        "name not text": rezip(lambda m: {**m, "voice.json": json.dumps({**meta, "name": ["a"]})}),
        "bomb": rezip(lambda m: {**m, "voice.json": b" " * (65 * 1024)}),
        "bad name": rezip(lambda m: {**m, "voice.json": json.dumps({**meta, "name": "a\u202eb"})}),
        "not audio": rezip(lambda m: {**m, "prompt.wav": b"RIFF...."}),
    }


def test_damaged_or_hostile_voice_files_are_refused_and_leave_nothing(tmp_path):
    library = make_library(tmp_path)
    _, data = library.export("libri_367")
    for damage, damaged in corrupt_zips(data).items():
        with pytest.raises(SynthesisError) as refused:
            library.import_voice(damaged)
        assert str(refused.value), damage
        assert library.saved_count == 0, damage
    assert not any((tmp_path / "voices").iterdir())


def test_an_undecodable_analysis_in_the_file_is_analysed_again(tmp_path):
    library = make_library(tmp_path)
    _, data = library.export("libri_367")
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            target.writestr(name, b"garbage" if name == "features.npz" else source.read(name))
    library.clear_cache()
    shutil.rmtree(tmp_path / "cache")  # nothing else known of this prompt: only its own analysis could serve
    prepared = len(library.engine.prepared)
    library.import_voice(out.getvalue(), name="Again")
    assert len(library.engine.prepared) == prepared + 1


@pytest.mark.parametrize("reads_text", [True, False])
def test_a_voice_saved_from_an_analysed_prompt_takes_over_its_analysis(tmp_path, reads_text):
    """A built-in voice's audio saved as a voice is not analysed again where the engine would analyse it
    the same: under the same transcript, or under any where the engine ignores it (the embedded one)."""
    library = make_library(tmp_path)
    library.engine.analysis_reads_text = reads_text
    library.resolve(PROMPT.stem)
    prepared = len(library.engine.prepared)
    same = library.create(PROMPT.read_bytes(), PROMPT.with_suffix(".txt").read_text().strip(), "Same words")
    other = library.create(PROMPT.read_bytes(), "Other words.", "Other words")
    assert len(library.engine.prepared) == prepared + (1 if reads_text else 0)
    assert library.resolve(same.id).key != library.resolve(other.id).key  # each voice keeps its own content key
    assert library.resolve(other.id).prompt_text == "Other words." and library.get(other.id).features == "computed"
    restarted = make_library(tmp_path)
    assert restarted.resolve(other.id).prompt_text == "Other words." and restarted.engine.prepared == []


def test_a_rename_follows_the_name_rules_keeps_the_id_and_survives_a_restart(tmp_path):
    library = make_library(tmp_path)
    first = library.create(PROMPT.read_bytes(), "One.", "First")
    second = library.create(PROMPT.read_bytes(), "Two.", "Second")
    renamed = library.rename(first.id, "  Ｆｉｒｓｔ   Take ")
    assert (renamed.id, renamed.name) == (first.id, "First Take")
    assert library.resolve("first take").key == library.resolve(first.id).key
    with pytest.raises(SynthesisError, match="There is no voice"):
        library.resolve("First")
    assert library.rename(first.id, "FIRST TAKE").name == "FIRST TAKE"  # the same name in another case
    for taken in ("second", "libri_367", "alloy"):
        with pytest.raises(VoiceNameTaken):
            library.rename(first.id, taken)
    with pytest.raises(VoiceNameError):
        library.rename(first.id, "   ")
    with pytest.raises(BuiltinVoice):
        library.rename("libri_367", "Mine")
    with pytest.raises(VoiceNotFound):
        library.rename("nobody-00000000", "Mine")
    assert make_library(tmp_path).get(first.id).name == "FIRST TAKE"
    assert library.get(second.id).name == "Second"


def test_the_prompt_language_is_told_from_the_transcript():
    assert [prompt_language(t) for t in ("Hello there.", "你好。", "我用 GPU 跑。", "", "1 2 3")] == ["en", "zh", "zh+en", "", ""]


def test_a_builtin_file_is_decoded_once_until_it_changes(tmp_path, monkeypatch):
    library = make_library(tmp_path)
    library.resolve("libri_367")
    reads = []
    real_read = read_prompt
    monkeypatch.setattr("glmtts.voices.read_prompt", lambda source, *a: reads.append(source) or real_read(source, *a))
    first = library.resolve("libri_367")
    assert library.resolve("libri_367") is first and reads == []  # a warm request reads no audio
    for n in range(300):  # transcripts a request may give: the remembered keys stay bounded
        library.resolve("libri_367", f"transcript {n}")
    assert len(library._file_keys) <= 256


def test_a_builtin_voice_lists_the_length_of_its_prompt(tmp_path):
    library = make_library(tmp_path)
    listed = library.get("libri_367").duration_s
    audio, rate = read_prompt(PROMPT)
    assert listed == pytest.approx(len(audio) / rate, abs=1e-3) and listed > 3
    assert library.resolve("libri_367").duration_s == pytest.approx(listed, abs=1e-3)  # as the analysis says
