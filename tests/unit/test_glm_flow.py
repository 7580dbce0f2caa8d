"""GLM-TTS flow and vocoders on tiny random checkpoints: prompt mel, sampling, shapes, loading."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch

from glmtts.engines.glm.errors import CheckpointError
from glmtts.engines.glm.flow import FlowConfig, FlowDecoder, _FlowModule, read_hyperpyyaml
from glmtts.engines.glm.hift import HiFTGenerator, HiFTSizes
from glmtts.engines.glm.mel import audio_to_prompt_mel, resample
from glmtts.engines.glm.random_checkpoint import write_random_flow, write_random_hift, write_random_vocos
from glmtts.engines.glm.vocoder import HiFTVocoder, Vocos2DVocoder
from tests.tolerance import float32_tolerance
from tests.unit.test_glm_parity import FLOW_CONTRACTION, FLOW_GAIN

TOKENS = 32768
OFFICIAL_CONFIG = (
    "flow: !new:flow.flow.Flow\n"
    "    spkr_emb_adaLN: True\n"
    "    speech_token_cfg: False\n"
    "    remove_spkr_concat_condition: True\n"
    "    mel_dim: 80\n"
    "    mel_framerate: 50\n"
    "    input_frame_rate: 25\n"
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("glm_tiny")
    write_random_flow(root / "flow", "tiny")
    write_random_hift(root / "hift" / "hift.pt", "tiny")
    write_random_vocos(root / "vocos2d" / "generator_jit.ckpt", "tiny")
    return root


@pytest.fixture(scope="module")
def flow(ckpt: Path) -> FlowDecoder:
    return FlowDecoder.load(ckpt / "flow", "cpu", torch.float32)


def _inputs(n_tokens: int, n_prompt: int, prompt_frames: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, TOKENS, (n_tokens,), generator=g),
        torch.randint(0, TOKENS, (n_prompt,), generator=g),
        torch.randn(prompt_frames, 80, generator=g) - 5.0,
        torch.randn(192, generator=g),
    )


def _test_signal(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t) + 0.05 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


@pytest.mark.parametrize(("rate", "n_fft", "hop"), [(24000, 1920, 480), (32000, 2560, 640)])
def test_prompt_mel_matches_librosa_reference(rate: int, n_fft: int, hop: int) -> None:
    audio = _test_signal(1.234, rate)
    mel = audio_to_prompt_mel(audio, rate, rate, "cpu")

    padded = np.pad(audio, (n_fft - hop) // 2, mode="reflect")
    spec = librosa.stft(padded, n_fft=n_fft, hop_length=hop, win_length=n_fft, window="hann", center=False)
    magnitude = np.sqrt(np.abs(spec) ** 2 + 1e-9)
    filters = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=80, fmin=0, fmax=8000)
    reference = np.log(np.maximum(filters @ magnitude, 1e-5)).T

    assert mel.shape == (audio.size // hop, 80) == reference.shape
    assert mel.dtype == torch.float32
    np.testing.assert_allclose(mel.numpy(), reference, atol=2e-3, rtol=0)


@pytest.mark.parametrize("target", [24000, 32000])
def test_prompt_mel_is_50_frames_per_second_from_any_rate(target: int) -> None:
    for source in (16000, 44100, 48000):
        mel = audio_to_prompt_mel(_test_signal(2.0, source), source, target, "cpu")
        assert mel.shape == (100, 80)


def test_resampler_reproduces_band_limited_tones_and_removes_aliases() -> None:
    t16 = np.arange(16000) / 16000
    up = resample(torch.from_numpy(np.sin(2 * np.pi * 440 * t16)).float(), 16000, 24000).numpy()
    t24 = np.arange(24000) / 24000
    assert up.size == 24000
    interior = slice(200, -200)
    np.testing.assert_allclose(up[interior], np.sin(2 * np.pi * 440 * t24)[interior], atol=2e-3)

    t48 = np.arange(48000) / 48000
    alias = resample(torch.from_numpy(np.sin(2 * np.pi * 15000 * t48)).float(), 48000, 24000).numpy()
    assert alias.size == 24000
    assert np.abs(alias[interior]).max() < 0.01  # 15 kHz is above the new Nyquist: filtered out


def test_frame_count_follows_upstream_float_arithmetic(flow: FlowDecoder) -> None:
    official = FlowConfig(input_frame_rate=25, mel_framerate=50)
    assert [official.mel_frames_for_tokens(n) for n in (28, 29, 30, 57, 113)] == [56, 57, 60, 113, 225]
    tokens, prompt_tokens, prompt_mel, speaker = _inputs(17, 12, 24)  # 29 tokens -> 57 frames
    mel = flow.tokens_to_mel(tokens, prompt_tokens, prompt_mel, speaker, torch.Generator().manual_seed(1))
    assert mel.shape == (57 - 24, 80)


def test_single_noise_draw_and_guidance_combination(flow: FlowDecoder, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens, prompt_tokens, prompt_mel, speaker = _inputs(20, 10, 20)
    frames = flow.mel_frames_for_tokens(30)
    calls = []

    def fake_dit(x, condition, token_embedding, time, speaker_in, mask=None):
        assert mask is None  # full attention outside streaming
        calls.append((x.clone(), condition.clone(), token_embedding.clone(), time.clone(), speaker_in.clone()))
        return condition + speaker_in[:, None, :80] + 1.0  # [B, N, 80]

    monkeypatch.setattr(flow.dit, "forward", fake_dit)
    generator = torch.Generator().manual_seed(7)
    mel = flow.tokens_to_mel(tokens, prompt_tokens, prompt_mel, speaker, generator, steps=1, cfg_strength=0.7)

    replay = torch.Generator().manual_seed(7)
    noise = torch.randn((1, frames, 80), generator=replay)
    assert torch.equal(generator.get_state(), replay.get_state())  # exactly one draw of frames x 80
    assert len(calls) == 1
    x, condition, token_embedding, time, speaker_in = calls[0]
    assert torch.equal(x[0], noise[0]) and torch.equal(x[1], noise[0])
    assert torch.equal(time, torch.zeros(2))
    normalized = speaker / speaker.norm()
    assert torch.allclose(speaker_in[0], normalized) and torch.equal(speaker_in[1], torch.zeros(192))
    assert torch.equal(condition[0, :20], prompt_mel) and not condition[0, 20:].any()
    assert not condition[1].any()  # unconditional branch: no prompt mel, no speaker...
    assert token_embedding.shape[0] == 1  # ...but the same speech tokens (speech_token_cfg False)

    conditional = condition[0] + normalized[None, :80] + 1.0
    unconditional = torch.ones(frames, 80)
    expected = noise[0] + 1.7 * conditional - 0.7 * unconditional  # one Euler step, dt = 1
    assert mel.shape == (frames - 20, 80)
    torch.testing.assert_close(mel, expected[20:], rtol=1e-6, atol=1e-5)


def test_parity_mode_runs_the_guidance_branches_as_two_calls(flow: FlowDecoder, monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = _inputs(12, 6, 12)
    batched = flow.tokens_to_mel(*inputs, torch.Generator().manual_seed(5))
    two_calls = flow.tokens_to_mel(*inputs, torch.Generator().manual_seed(5), batched_cfg=False)
    # The same arithmetic, batched or not, up to float32 rounding inside the DiT (a batch of two may
    # take other kernels): the flow's own tolerance, as in test_glm_parity.
    torch.testing.assert_close(two_calls, batched, rtol=0, atol=float32_tolerance(batched.numpy(), FLOW_CONTRACTION, FLOW_GAIN))
    batches = []
    forward = flow.dit.forward
    monkeypatch.setattr(flow.dit, "forward", lambda x, *rest: (batches.append(x.shape[0]), forward(x, *rest))[1])
    flow.tokens_to_mel(*inputs, torch.Generator().manual_seed(5), steps=2, batched_cfg=False)
    assert batches == [1, 1, 1, 1]
    batches.clear()
    flow.tokens_to_mel(*inputs, torch.Generator().manual_seed(5), steps=2)
    assert batches == [2, 2]


def test_given_noise_replaces_the_draw(flow: FlowDecoder) -> None:
    inputs = _inputs(10, 5, 10)
    frames = flow.mel_frames_for_tokens(15)
    generator = torch.Generator().manual_seed(9)
    drawn = flow.tokens_to_mel(*inputs, generator)
    noise = torch.randn((1, frames, 80), generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(flow.tokens_to_mel(*inputs, noise=noise[0]), drawn, rtol=0, atol=0)
    with pytest.raises(ValueError, match="exactly one"):
        flow.tokens_to_mel(*inputs)


def test_cosine_schedule_and_step_count(flow: FlowDecoder, monkeypatch: pytest.MonkeyPatch) -> None:
    times = []
    monkeypatch.setattr(flow.dit, "forward", lambda x, c, e, t, s, m=None: (times.append(float(t[0])), torch.zeros_like(x))[1])
    flow.tokens_to_mel(*_inputs(5, 5, 10), torch.Generator().manual_seed(0))
    expected = [1 - math.cos(i / 10 * math.pi / 2) for i in range(10)]
    assert times == pytest.approx(expected, abs=1e-6)


def test_tiny_chain_shapes_and_seed_determinism(ckpt: Path, flow: FlowDecoder) -> None:
    hift = HiFTVocoder.load(ckpt / "hift" / "hift.pt", "cpu", torch.float32)
    vocos = Vocos2DVocoder.load(ckpt / "vocos2d" / "generator_jit.ckpt", "cpu")
    assert (hift.sample_rate, vocos.sample_rate) == (24000, 32000)
    inputs = _inputs(40, 25, 50)

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        mel = flow.tokens_to_mel(*inputs, generator)
        return mel, hift.mel_to_audio(mel, generator), vocos.mel_to_audio(mel, generator)

    mel, audio24, audio32 = run(42)
    frames = int(65 / 25 * 50) - 50
    assert mel.shape == (frames, 80) and torch.isfinite(mel).all()
    assert audio24.shape == (frames * 480,) and audio32.shape == (frames * 640,)
    assert torch.isfinite(audio24).all() and audio24.abs().max() <= 0.99 and audio24.abs().mean() > 1e-3
    assert torch.isfinite(audio32).all()
    again = run(42)
    assert all(torch.equal(a, b) for a, b in zip((mel, audio24, audio32), again))
    other_mel, other24, _ = run(43)
    assert not torch.equal(mel, other_mel) and not torch.equal(audio24, other24)


def test_hift_consumes_source_draws_in_upstream_order(ckpt: Path) -> None:
    hift = HiFTVocoder.load(ckpt / "hift" / "hift.pt", "cpu")
    frames = 6
    generator = torch.Generator().manual_seed(3)
    hift.mel_to_audio(torch.zeros(frames, 80), generator)
    replay = torch.Generator().manual_seed(3)
    length = frames * 480
    torch.rand((1, 9), generator=replay)
    torch.empty((1, 9, length)).transpose(1, 2).normal_(generator=replay)
    torch.randn((1, length, 1), generator=replay)
    assert torch.equal(generator.get_state(), replay.get_state())


def test_hift_accepts_legacy_weight_norm_names(ckpt: Path, tmp_path: Path) -> None:
    state = torch.load(ckpt / "hift" / "hift.pt", weights_only=True)
    renames = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    legacy = {}
    for key, value in state.items():
        for new_style, old_style in renames.items():
            key = key.replace(new_style, old_style)
        legacy[key] = value
    assert any(key.endswith("weight_g") for key in legacy)
    torch.save(legacy, tmp_path / "hift.pt")
    mel = torch.randn(5, 80) - 4
    a = HiFTVocoder.load(ckpt / "hift" / "hift.pt", "cpu").mel_to_audio(mel, torch.Generator().manual_seed(0))
    b = HiFTVocoder.load(tmp_path / "hift.pt", "cpu").mel_to_audio(mel, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_flow_weights_may_be_wrapped_in_model_key(ckpt: Path, flow: FlowDecoder, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text((ckpt / "flow" / "config.yaml").read_text())
    state = torch.load(ckpt / "flow" / "flow.pt", weights_only=True)
    torch.save({"model": state}, tmp_path / "flow.pt")
    wrapped = FlowDecoder.load(tmp_path, "cpu")
    inputs = _inputs(10, 5, 10)
    a = flow.tokens_to_mel(*inputs, torch.Generator().manual_seed(0))
    b = wrapped.tokens_to_mel(*inputs, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_strict_loading_names_file_and_key(ckpt: Path, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text((ckpt / "flow" / "config.yaml").read_text())
    with pytest.raises(CheckpointError, match=r"flow\.pt"):
        FlowDecoder.load(tmp_path, "cpu")

    state = torch.load(ckpt / "flow" / "flow.pt", weights_only=True)
    dropped = "estimator.transformer_blocks.1.attn.to_k.weight"
    torch.save(OrderedDict((k, v) for k, v in state.items() if k != dropped), tmp_path / "flow.pt")
    with pytest.raises(CheckpointError, match=rf"flow\.pt.*{dropped}"):
        FlowDecoder.load(tmp_path, "cpu")

    state["estimator.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "flow.pt")
    with pytest.raises(CheckpointError, match=r"estimator\.extra\.weight"):
        FlowDecoder.load(tmp_path, "cpu")

    hift = torch.load(ckpt / "hift" / "hift.pt", weights_only=True)
    hift["conv_post.bias"] = torch.zeros(3)
    torch.save(hift, tmp_path / "hift.pt")
    with pytest.raises(CheckpointError, match=r"hift\.pt.*conv_post\.bias.*shape"):
        HiFTVocoder.load(tmp_path / "hift.pt", "cpu")
    with pytest.raises(CheckpointError, match=r"generator_jit\.ckpt"):
        Vocos2DVocoder.load(tmp_path / "generator_jit.ckpt", "cpu")


def test_yaml_loader_reads_tags_as_data_without_executing(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    config = tmp_path / "config.yaml"
    config.write_text(
        OFFICIAL_CONFIG + f"side_effect: !apply:os.system ['touch {marker}']\n"
        "constructor: !name:no_such_module.NoSuchClass\n"
        "reference: !ref <flow>\n"
    )
    data = read_hyperpyyaml(config)
    assert not marker.exists()
    assert data["side_effect"] == [f"touch {marker}"]
    assert data["constructor"] == "" and data["reference"] == "<flow>"
    parsed = FlowConfig.from_yaml(config)
    assert (parsed.spkr_emb_adaLN, parsed.speech_token_cfg, parsed.remove_spkr_concat_condition) == (True, False, True)
    assert parsed.mel_frames_for_tokens(29) == 57
    sizes = parsed.dit_sizes()
    assert (sizes.trans_dim, sizes.depth, sizes.heads, sizes.ff_mult, sizes.conv_layers) == (768, 18, 12, 2, 4)
    assert (sizes.text_emb_dim, sizes.vocab_size, sizes.condition_dim, sizes.speaker_dim) == (512, 100000, 80, 192)


def test_full_size_layouts_match_the_official_files(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(OFFICIAL_CONFIG)
    with torch.device("meta"):
        flow_state = _FlowModule(FlowConfig.from_yaml(tmp_path / "config.yaml")).state_dict()
        hift = HiFTGenerator(HiFTSizes())
    # 225.3 M parameters: the 0.9 GB fp32 flow.pt
    assert len(flow_state) == 308 and sum(v.numel() for v in flow_state.values()) == 225_299_824
    assert flow_state["estimator.text_emb_layer.text_embed.weight"].shape == (100001, 512)
    assert flow_state["estimator.transformer_blocks.17.attn_norm.linear.weight"].shape == (4608, 960)
    assert flow_state["estimator.emb_concator.proj.weight"].shape == (768, 672)
    # hift.pt: 328 tensors, 20,821,295 values once weight norm is stored as two tensors per conv
    names = hift.weight_normed()
    hift_state = hift.state_dict()
    stored = len(hift_state) + len(names)
    values = sum(v.numel() for v in hift_state.values()) + sum(hift_state[f"{n}.weight"].shape[0] for n in names)
    assert (stored, values) == (328, 20_821_295)
