"""GLM-TTS prompt analysis: Whisper features, the WhisperVQ speech tokenizer and the CAM++ speaker model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import WhisperFeatureExtractor

from glmtts.engines.glm.campplus import EMBEDDING_DIM, CamPlusSpeaker, audio_to_fbank
from glmtts.engines.glm.errors import CheckpointError
from glmtts.engines.glm.random_checkpoint import write_random_campplus, write_random_speech_tokenizer
from glmtts.engines.glm.speech_tokenizer import SpeechTokenizer, block_causal_mask
from glmtts.engines.glm.whisper_features import whisper_log_mel

RATE = 16000
CODES = 32768
TOKENS_PER_SECOND = 25
BLOCK_TOKENS = 100  # 200 encoder frames at 50 Hz, pooled by 2


def _voice(seconds: float, rate: int = RATE, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """A speech-like test signal: a gliding, amplitude-modulated tone over a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 150 + 60 * np.sin(2 * np.pi * 0.7 * t + seed)
    tone = np.sin(2 * np.pi * np.cumsum(pitch) / rate) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    return (level * tone + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


# --- Whisper features -------------------------------------------------------------------------


@pytest.mark.parametrize("length", [RATE * 3 + 123, 640 * 11, RATE * 30])
def test_whisper_log_mel_matches_transformers(length: int) -> None:
    extractor = WhisperFeatureExtractor(feature_size=128)
    audio = _voice(length / RATE)
    audio[length // 3 : length // 2] = 0.0  # digital silence: the 8-decade floor binds there
    expected = extractor(audio, sampling_rate=RATE, padding="longest", return_tensors="np").input_features[0]
    ours = whisper_log_mel(audio, "cpu").numpy()
    assert ours.shape == (128, length // 160) == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_whisper_log_mel_of_padded_audio_matches_padded_extractor() -> None:
    extractor = WhisperFeatureExtractor(feature_size=128)
    audio = _voice(2.37)
    padded_length = math.ceil(len(audio) / 640) * 640
    expected = extractor(audio, sampling_rate=RATE, padding="longest", pad_to_multiple_of=640, return_tensors="np")
    ours = whisper_log_mel(np.pad(audio, (0, padded_length - len(audio))), "cpu").numpy()
    np.testing.assert_allclose(ours, expected.input_features[0], atol=1e-5)


# --- Kaldi fbank for CAM++ ----------------------------------------------------------------------


def _kaldi_fbank_reference(audio: np.ndarray) -> np.ndarray:
    """Kaldi's fbank recipe in float64 numpy (what torchaudio.compliance.kaldi.fbank computes upstream)."""
    length, shift, n_fft, bins = 400, 160, 512, 80
    x = audio.astype(np.float64)
    count = 1 + (len(x) - length) // shift
    frames = np.stack([x[i * shift : i * shift + length] for i in range(count)])
    frames = frames - frames.mean(axis=1, keepdims=True)  # DC removal
    frames = np.concatenate([frames[:, :1] * (1 - 0.97), frames[:, 1:] - 0.97 * frames[:, :-1]], axis=1)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / (length - 1))) ** 0.85  # povey
    power = np.abs(np.fft.rfft(frames * window, n=n_fft)) ** 2  # [count, 257]

    def mel(f: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    low, high = mel(20.0), mel(RATE / 2)
    delta = (high - low) / (bins + 1)
    bin_mel = mel(np.arange(n_fft // 2) * RATE / n_fft)
    filters = np.zeros((bins, n_fft // 2 + 1))
    for b in range(bins):
        left, center, right = low + b * delta, low + (b + 1) * delta, low + (b + 2) * delta
        rising, falling = (bin_mel - left) / (center - left), (right - bin_mel) / (right - center)
        inside = (bin_mel > left) & (bin_mel < right)
        filters[b, : n_fft // 2] = np.where(inside, np.where(bin_mel <= center, rising, falling), 0.0)
    return np.log(np.maximum(power @ filters.T, np.finfo(np.float32).eps))


def test_fbank_matches_kaldi_recipe_with_mean_subtraction() -> None:
    audio = _voice(2.0, seed=3)
    audio[RATE // 2 : RATE] = 0.0  # digital silence: any dither would show there
    reference = _kaldi_fbank_reference(audio)
    ours = audio_to_fbank(audio)
    assert ours.shape == (1 + (len(audio) - 400) // 160, 80) == reference.shape
    np.testing.assert_allclose(ours, reference - reference.mean(axis=0, keepdims=True), atol=2e-3)
    np.testing.assert_allclose(ours.mean(axis=0), 0.0, atol=1e-4)


# --- Speech tokenizer ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory):
    return write_random_speech_tokenizer(tmp_path_factory.mktemp("speech_tokenizer"), "tiny")


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir) -> SpeechTokenizer:
    return SpeechTokenizer.load(tiny_tokenizer_dir, "cpu")


@pytest.mark.parametrize(("samples", "rate"), [(RATE * 3, RATE), (RATE * 3 + 1, RATE), (24000 * 5, 24000), (1000, RATE)])
def test_tokens_at_25_per_second_in_range(tokenizer: SpeechTokenizer, samples: int, rate: int) -> None:
    tokens = tokenizer.audio_to_tokens(_voice(samples / rate, rate)[:samples], rate)
    assert tokens.dtype == torch.int64 and tokens.ndim == 1
    assert len(tokens) == math.ceil(samples / rate * TOKENS_PER_SECOND)
    assert int(tokens.min()) >= 0 and int(tokens.max()) < CODES


def test_tokens_vary_with_content_and_are_deterministic(tokenizer: SpeechTokenizer, tiny_tokenizer_dir) -> None:
    audio = _voice(4.0)
    first = tokenizer.audio_to_tokens(audio, RATE)
    assert len(set(first.tolist())) > 10
    assert torch.equal(first, tokenizer.audio_to_tokens(audio, RATE))
    assert torch.equal(first, SpeechTokenizer.load(tiny_tokenizer_dir, "cpu").audio_to_tokens(audio, RATE))
    assert not torch.equal(first, tokenizer.audio_to_tokens(_voice(4.0, seed=7), RATE))


def test_long_audio_is_tokenized_in_30_second_chunks(tokenizer: SpeechTokenizer) -> None:
    audio = _voice(65.0)
    tokens = tokenizer.audio_to_tokens(audio, RATE)
    assert len(tokens) == 65 * TOKENS_PER_SECOND
    first_chunk = tokenizer.audio_to_tokens(audio[: 30 * RATE], RATE)
    assert torch.equal(tokens[: 30 * TOKENS_PER_SECOND], first_chunk)


def test_block_causal_mask_rule() -> None:
    frames, valid, block = 7, 6, 3
    mask = block_causal_mask(frames, valid, block, "cpu")
    for query in range(frames):
        for key in range(frames):
            seen = (key <= query or key // block == query // block) and key < valid
            assert bool(mask[query, key]) == seen, (query, key)


def test_late_audio_does_not_change_earlier_blocks(tokenizer: SpeechTokenizer) -> None:
    audio = _voice(12.0, level=0.5)  # the loudest part stays in front, so the feature floor is unchanged
    changed = audio.copy()
    changed[9 * RATE :] = _voice(3.0, seed=5, level=0.2)
    before, after = tokenizer.audio_to_tokens(audio, RATE), tokenizer.audio_to_tokens(changed, RATE)
    assert len(before) == len(after) == 300
    assert torch.equal(before[: 2 * BLOCK_TOKENS], after[: 2 * BLOCK_TOKENS])  # blocks 0 and 1
    assert not torch.equal(before[9 * TOKENS_PER_SECOND :], after[9 * TOKENS_PER_SECOND :])
    # Later frames do see earlier blocks: a change in block 0 reaches later tokens.
    early = audio.copy()
    early[RATE // 2 : RATE] = _voice(0.5, seed=9, level=0.2)
    assert not torch.equal(before[BLOCK_TOKENS:], tokenizer.audio_to_tokens(early, RATE)[BLOCK_TOKENS:])


def test_writer_is_deterministic_for_a_seed(tmp_path, tiny_tokenizer_dir) -> None:
    again = load_file(str(write_random_speech_tokenizer(tmp_path / "same", "tiny") / "model.safetensors"))
    reference = load_file(str(tiny_tokenizer_dir / "model.safetensors"))
    assert again.keys() == reference.keys()
    assert all(torch.equal(again[key], reference[key]) for key in reference)
    other = load_file(str(write_random_speech_tokenizer(tmp_path / "other", "tiny", seed=1) / "model.safetensors"))
    assert not torch.equal(other["model.encoder.codebook.weight"], reference["model.encoder.codebook.weight"])


def _rewrite(directory, change) -> None:
    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


@pytest.fixture()
def tokenizer_copy(tmp_path, tiny_tokenizer_dir):
    copy = tmp_path / "speech_tokenizer"
    copy.mkdir()
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        (copy / name).write_bytes((tiny_tokenizer_dir / name).read_bytes())
    return copy


@pytest.mark.parametrize("name", ["config.json", "preprocessor_config.json", "model.safetensors"])
def test_missing_tokenizer_file_is_named(tokenizer_copy, name: str) -> None:
    (tokenizer_copy / name).unlink()
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        SpeechTokenizer.load(tokenizer_copy, "cpu")


def test_corrupt_weights_file_is_named(tokenizer_copy) -> None:
    (tokenizer_copy / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        SpeechTokenizer.load(tokenizer_copy, "cpu")


def test_missing_key_is_named(tokenizer_copy) -> None:
    _rewrite(tokenizer_copy, lambda tensors: tensors.pop("model.encoder.layers.1.fc2.bias"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*model\.encoder\.layers\.1\.fc2\.bias"):
        SpeechTokenizer.load(tokenizer_copy, "cpu")


def test_unexpected_key_and_bad_shape_are_named(tokenizer_copy) -> None:
    _rewrite(tokenizer_copy, lambda tensors: tensors.update({"model.encoder.layers.4.fc1.bias": torch.zeros(128)}))
    with pytest.raises(CheckpointError, match=r"unexpected key model\.encoder\.layers\.4\.fc1\.bias"):
        SpeechTokenizer.load(tokenizer_copy, "cpu")
    _rewrite(tokenizer_copy, lambda tensors: tensors.pop("model.encoder.layers.4.fc1.bias"))
    _rewrite(tokenizer_copy, lambda tensors: tensors.update({"model.encoder.codebook.weight": torch.zeros(CODES, 16)}))
    with pytest.raises(CheckpointError, match=r"model\.encoder\.codebook\.weight has shape \[32768, 16\]"):
        SpeechTokenizer.load(tokenizer_copy, "cpu")


def test_unused_official_keys_are_ignored(tokenizer_copy, tokenizer: SpeechTokenizer) -> None:
    """Layers past quantize_position (2 of 4 in tiny) and the final layer norm may be in the file."""
    extra = {"model.encoder.layers.3.fc1.bias": torch.zeros(128), "model.encoder.layer_norm.weight": torch.ones(32)}
    _rewrite(tokenizer_copy, lambda tensors: tensors.update(extra))
    audio = _voice(2.0)
    loaded = SpeechTokenizer.load(tokenizer_copy, "cpu")
    assert torch.equal(loaded.audio_to_tokens(audio, RATE), tokenizer.audio_to_tokens(audio, RATE))


# --- CAM++ --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def speaker(tmp_path_factory: pytest.TempPathFactory) -> CamPlusSpeaker:
    return CamPlusSpeaker.load(write_random_campplus(tmp_path_factory.mktemp("frontend") / "campplus.onnx", "tiny"), "cpu")


def test_campplus_embedding_is_192_finite_and_deterministic(speaker: CamPlusSpeaker) -> None:
    audio = _voice(3.0, rate=24000)
    embedding = speaker.audio_to_embedding(audio, 24000)
    assert embedding.shape == (EMBEDDING_DIM,) and embedding.dtype == np.float32
    assert np.all(np.isfinite(embedding)) and np.linalg.norm(embedding) > 0
    np.testing.assert_array_equal(embedding, speaker.audio_to_embedding(audio, 24000))
    assert not np.allclose(embedding, speaker.audio_to_embedding(_voice(3.0, rate=24000, seed=4), 24000))


def test_campplus_load_errors_name_the_file(tmp_path) -> None:
    missing = tmp_path / "frontend" / "campplus.onnx"
    with pytest.raises(CheckpointError, match=r"frontend/campplus\.onnx"):
        CamPlusSpeaker.load(missing, "cpu")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(CheckpointError, match=r"broken\.onnx"):
        CamPlusSpeaker.load(broken, "cpu")
