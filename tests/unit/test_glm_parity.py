"""Parity with upstream GLM-TTS, against arrays its own code produced (tests/data/glm/*_upstream.npz,
rebuilt by tests/data/glm/make_upstream_arrays.py from an upstream checkout and torchaudio).

- HiFT: weight norm folded with `torch._weight_norm`, as upstream's parametrization computes it;
  F0, source and waveform equal upstream's (a hand-written g * v / |v| fold was off by up to an ulp
  in a fifth of the weights: 6e-5 Hz on F0, 1.4e-4 relative on the waveform).
- Prompt features from the prompt's own rate: torchaudio's resampler to 16 kHz for the speech
  tokenizer and CAM++, to 24 / 32 kHz for the prompt mel, Kaldi fbank as torchaudio computes it
  (resampling everything from 24 kHz with soxr was off by up to 0.62 on the prompt mel and 2.2 on
  the fbank for these prompts).
- Flow: the parity mode (guidance as two calls) and the batched mode equal upstream; so does the
  first streaming run (block-causal mask) upstream's `inference_with_cache(is_causal=True)`.

The arrays are reproduced bit for bit with the kernels of the CPU that made them (AVX2); other CPUs'
kernels sum in other orders, so each comparison allows float32 rounding of its own computation
(tests/tolerance.py; each call states its longest contraction K and its gain). HiFT is compared stage
by stage, each from upstream's input to it, so that F0's rounding does not reach the waveform through
the harmonic phase; its end-to-end run must then equal the stages chained, bit for bit. The old
fold's error (an ulp in some weights) is of the same kind as another CPU's, so
test_weight_norm_is_folded_as_torch_computes_it checks the fold itself, exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glmtts.engines.glm.campplus import audio_to_fbank
from glmtts.engines.glm.flow import FlowDecoder, block_causal_mask, mask_block_frames
from glmtts.engines.glm.hift import fold_weight_norm
from glmtts.engines.glm.mel import audio_to_prompt_mel, resample
from glmtts.engines.glm.random_checkpoint import write_random_flow, write_random_hift
from glmtts.engines.glm.vocoder import HiFTVocoder
from tests.tolerance import float32_tolerance

DATA = Path(__file__).resolve().parents[1] / "data" / "glm"
STREAM_BLOCKS = (25, 50, 200)
SAMPLES_PER_FRAME = 480
HIFT_LOG_MAGNITUDE = 4.2  # nats: max |conv_post output| of the tiny HiFT on the stored mel
# The tiny flow's float32 error: K = 176, its longest contraction (the input projection of noisy mel,
# condition and token embedding, 80 + 80 + 16); gain 22 x 2.4: 22 layers in series (2 ConvNeXt blocks
# of 3 in the token embedding, the input projection and 2 conv-position layers, 2 DiT blocks of 6, the
# output projection), each carrying the earlier errors with gain about 1 (normalised, residual), times
# classifier-free guidance's 1.7 + 0.7; the 10 Euler steps add their velocities' errors times dt,
# which sum to 1.
FLOW_CONTRACTION = 80 + 80 + 16
FLOW_GAIN = (1 + 2 * 0.7) * 22


def _arrays(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / name) as data:
        return {key: data[key] for key in data.files}


def test_hift_matches_upstream(tmp_path: Path) -> None:
    path = tmp_path / "hift.pt"
    write_random_hift(path, "tiny", seed=0)
    expected = _arrays("hift_upstream.npz")
    vocoder = HiFTVocoder.load(path, "cpu")
    model = vocoder._model
    mel = torch.from_numpy(expected["mel"])  # [F, 80]
    seed = int(expected["seed"])
    f0 = model.predict_f0(mel.T[None])[0]
    # 5 convolutions (K = 80 mel bins x kernel 3 at most) and a linear read-out in series; ELU's slope <= 1.
    np.testing.assert_allclose(f0.numpy(), expected["f0"], rtol=0, atol=float32_tolerance(expected["f0"], 80 * 3, 6))
    assert (expected["f0"] > 10).mean() > 0.5  # voiced: the harmonic source is exercised
    # Source from upstream's F0: the harmonic phase, up to `phase` radians, is a float32 sum over the
    # frames (K = frames), and sin() reads it with gain `phase` per unit of relative error.
    upstream_f0 = torch.from_numpy(expected["f0"])[None].repeat_interleave(SAMPLES_PER_FRAME, dim=1)[:, :, None]
    source = model.m_source(upstream_f0, torch.Generator().manual_seed(seed))[0, 0]
    harmonics = model.sizes.harmonics + 1
    phase = 2 * np.pi * harmonics * expected["f0"].astype(np.float64).sum() * SAMPLES_PER_FRAME / model.sizes.sample_rate
    atol = float32_tolerance(expected["source"], len(mel), phase)
    np.testing.assert_allclose(source.numpy(), expected["source"], rtol=0, atol=atol)
    # Waveform from upstream's source: K = 80 x 7 (conv_pre) at most; 23 convolutions in series (conv_pre,
    # 3 x (upsampling + 6 in a resblock), conv_post) give the log-magnitudes a relative error, which exp()
    # turns into the waveform's relative error times their size (up to 4.2 nats on this mel).
    audio = model._decode(mel.T[None], torch.from_numpy(expected["source"])[None, None])[0].numpy()
    atol = float32_tolerance(expected["audio"], 80 * 7, 23 * HIFT_LOG_MAGNITUDE)
    np.testing.assert_allclose(audio, expected["audio"], rtol=0, atol=atol)
    # End to end, the stages chained from our own F0: the same arithmetic in this process, bit for bit.
    whole = vocoder.mel_to_audio(mel, torch.Generator().manual_seed(seed))
    our_f0 = f0[None].repeat_interleave(SAMPLES_PER_FRAME, dim=1)[:, :, None]
    chained = model._decode(mel.T[None], model.m_source(our_f0, torch.Generator().manual_seed(seed)))[0]
    assert torch.equal(whole, chained)


def test_weight_norm_is_folded_as_torch_computes_it(tmp_path: Path) -> None:
    path = tmp_path / "hift.pt"
    write_random_hift(path, "tiny", seed=0)
    state = torch.load(path, weights_only=True)
    name = "conv_pre"
    magnitude, direction = state[f"{name}.parametrizations.weight.original0"], state[f"{name}.parametrizations.weight.original1"]
    folded = fold_weight_norm(state, [name], path)[f"{name}.weight"]
    # Bit for bit, in this process. A hand-written g * v / |v| is an ulp off here and there with
    # vectorised kernels (AVX2, AVX-512), equal without them (ATEN_CPU_CAPABILITY=default): so this
    # test fails for such a fold wherever the difference exists, and the parity's tolerances need not.
    assert torch.equal(folded, torch._weight_norm(direction, magnitude, 0))


@pytest.mark.parametrize("rate", [16000, 44100])
def test_prompt_features_from_the_files_own_rate_match_upstream(rate: int) -> None:
    expected = _arrays("prompt_upstream.npz")
    audio = expected[f"audio_{rate}"]
    audio_16k = resample(torch.from_numpy(audio), rate, 16000).numpy()
    # One convolution of K = 475 taps at most (44.1 kHz: 2 x 17 + 441); 16 kHz passes unchanged.
    atol = float32_tolerance(expected[f"audio16k_{rate}"], 475)
    np.testing.assert_allclose(audio_16k, expected[f"audio16k_{rate}"], rtol=0, atol=atol)
    # Log energies: their error is the energies' relative error, which grows in a frame's weak bands
    # with its dynamic range, and these arrays do not keep it (the fbank's means are subtracted). So
    # a fixed 1e-3 nats: 16 times the largest deviation with other kernels (README, "Tests on any
    # CPU"), 600 times below the old resampling's.
    np.testing.assert_allclose(audio_to_fbank(audio_16k), expected[f"fbank_{rate}"], rtol=0, atol=1e-3)  # was 2.2
    for target in (24000, 32000):
        mel = audio_to_prompt_mel(audio, rate, target, "cpu").numpy()
        np.testing.assert_allclose(mel, expected[f"mel{target}_{rate}"], rtol=0, atol=1e-3)  # was 0.62


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> FlowDecoder:
    directory = tmp_path_factory.mktemp("flow")
    write_random_flow(directory, "tiny", seed=0)
    return FlowDecoder.load(directory, "cpu")


def _flow_inputs(expected: dict[str, np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(expected[key]) for key in ("tokens", "prompt_tokens", "prompt_feat", "embedding")]


def test_flow_parity_mode_matches_upstream(flow: FlowDecoder) -> None:
    expected = _arrays("flow_upstream.npz")
    inputs = _flow_inputs(expected)
    seed = int(expected["seed"])
    atol = float32_tolerance(expected["mel"], FLOW_CONTRACTION, FLOW_GAIN)
    two_calls = flow.tokens_to_mel(*inputs, torch.Generator().manual_seed(seed), batched_cfg=False)
    np.testing.assert_allclose(two_calls.numpy(), expected["mel"], rtol=0, atol=atol)
    batched = flow.tokens_to_mel(*inputs, torch.Generator().manual_seed(seed))
    np.testing.assert_allclose(batched.numpy(), expected["mel"], rtol=0, atol=atol)


def test_streaming_mask_and_first_causal_run_match_upstream(flow: FlowDecoder) -> None:
    expected = _arrays("flow_upstream.npz")
    _, prompt_tokens, prompt_feat, embedding = _flow_inputs(expected)
    frames = int(expected["mask_frames"])
    upstream_mask = np.unpackbits(expected["mask"], axis=1)[:, :frames].astype(bool)
    blocks = [mask_block_frames(len(prompt_tokens))] + [mask_block_frames(n) for n in STREAM_BLOCKS]
    assert np.array_equal(block_causal_mask(blocks, frames).numpy(), upstream_mask)
    first_block = torch.from_numpy(expected["long_tokens"])[: STREAM_BLOCKS[0]]
    total = flow.mel_frames_for_tokens(len(prompt_tokens) + len(first_block))
    mel, _ = flow.tokens_to_mel_cached(
        first_block, prompt_tokens, prompt_feat, embedding, generator=torch.Generator().manual_seed(int(expected["seed"])),
        batched_cfg=False, attention_mask=block_causal_mask(blocks, total),
    )  # fmt: skip
    atol = float32_tolerance(expected["causal_mel"], FLOW_CONTRACTION, FLOW_GAIN)
    np.testing.assert_allclose(mel.numpy(), expected["causal_mel"], rtol=0, atol=atol)
