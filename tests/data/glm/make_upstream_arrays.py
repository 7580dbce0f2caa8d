"""Rebuild the *_upstream.npz arrays of tests/unit/test_glm_parity.py with upstream GLM-TTS's own code.

    python tests/data/glm/make_upstream_arrays.py /path/to/GLM-TTS [/path/to/extra/site-packages]

Needs an upstream checkout (github.com/zai-org/GLM-TTS, revision c5dc7ae), torchaudio (only its pure
Python `functional.resample`, `transforms.Resample` and `compliance.kaldi` are used), einops and
x_transformers 1.42.26 importable (the optional second argument is put on sys.path first). The tiny
HiFT and flow weights are this repository's random writers at seed 0, so the tests rebuild the same
weights. Runs on the CPU, single-threaded.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent
ROOT = OUT.parents[2]
HIFT_SEED = 1234
FLOW_SEED = 77
PROMPT_RATES = (16000, 44100)
STREAM_BLOCKS = [25, 50, 200]


def main() -> None:
    upstream = Path(sys.argv[1]).resolve()
    sys.path[:0] = [*sys.argv[2:], str(upstream), str(ROOT)]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        hift_arrays(scratch)
        prompt_arrays()
        flow_arrays(scratch)


def hift_arrays(scratch: Path) -> None:
    from cosyvoice.hifigan_cosy2.f0_predictor import ConvRNNF0Predictor
    from cosyvoice.hifigan_cosy2.generator import HiFTGenerator

    from glmtts.engines.glm.random_checkpoint import write_random_hift

    write_random_hift(scratch / "hift.pt", "tiny", seed=0)
    hift = HiFTGenerator(
        in_channels=80, base_channels=32, nb_harmonics=8, sampling_rate=24000, nsf_alpha=0.1, nsf_sigma=0.003,
        nsf_voiced_threshold=10, upsample_rates=[8, 5, 3], upsample_kernel_sizes=[16, 11, 7],
        istft_params={"n_fft": 16, "hop_len": 4}, resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5]] * 3, source_resblock_kernel_sizes=[7, 7, 11],
        source_resblock_dilation_sizes=[[1, 3, 5]] * 3, lrelu_slope=0.1, audio_limit=0.99,
        f0_predictor=ConvRNNF0Predictor(num_class=1, in_channels=80, cond_channels=32),
    )  # fmt: skip
    hift.load_state_dict(torch.load(scratch / "hift.pt"))
    hift.eval()
    mel = torch.randn(1, 80, 12, generator=torch.Generator().manual_seed(11)) * 1.5 - 5.0
    with torch.no_grad():
        f0 = hift.f0_predictor(mel)
        torch.manual_seed(HIFT_SEED)
        audio, source = hift.inference(mel)
    np.savez_compressed(
        OUT / "hift_upstream.npz", mel=mel[0].T.numpy(), seed=HIFT_SEED, f0=f0[0].numpy(), source=source[0, 0].numpy(),
        audio=audio[0].numpy(),
    )  # fmt: skip


def prompt_arrays() -> None:
    import torchaudio
    import utils.audio as upstream_audio
    from torchaudio.compliance import kaldi

    rng = np.random.default_rng(5)

    def voice(seconds: float, rate: int) -> np.ndarray:
        t = np.arange(int(seconds * rate)) / rate
        pitch = 140 + 50 * np.sin(2 * np.pi * 0.8 * t)
        tone = np.sin(2 * np.pi * np.cumsum(pitch) / rate) * (0.55 + 0.45 * np.sin(2 * np.pi * 3 * t))
        return (0.4 * tone + 0.03 * rng.standard_normal(len(t))).astype(np.float32)

    arrays = {}
    for rate in PROMPT_RATES:
        audio = voice(1.0, rate)
        wave = torch.from_numpy(audio)[None]
        wave_16k = torchaudio.transforms.Resample(rate, 16000)(wave) if rate != 16000 else wave
        fbank = kaldi.fbank(wave_16k, num_mel_bins=80, dither=0, sample_frequency=16000)
        arrays[f"audio_{rate}"] = audio
        arrays[f"audio16k_{rate}"] = wave_16k[0].numpy()
        arrays[f"fbank_{rate}"] = (fbank - fbank.mean(0, keepdim=True)).numpy()
        for target, (n_fft, hop) in {24000: (1920, 480), 32000: (2560, 640)}.items():
            resampled = torchaudio.transforms.Resample(rate, target)(wave)
            upstream_audio.mel_basis.clear()  # upstream caches its filters by fmax only, not by rate
            upstream_audio.hann_window.clear()
            mel = upstream_audio.mel_spectrogram(
                resampled, n_fft=n_fft, num_mels=80, sampling_rate=target, hop_size=hop, win_size=n_fft, fmin=0,
                fmax=8000, center=False,
            )  # fmt: skip
            arrays[f"mel{target}_{rate}"] = mel[0].T.numpy()
    np.savez_compressed(OUT / "prompt_upstream.npz", **arrays)


def flow_arrays(scratch: Path) -> None:
    from flow.dit import DiT
    from flow.flow import Flow
    from utils import block_mask_util

    from glmtts.engines.glm.random_checkpoint import write_random_flow

    write_random_flow(scratch / "flow", "tiny", seed=0)
    flow = Flow(
        spkr_emb_adaLN=True, speech_token_cfg=False, remove_spkr_concat_condition=True, mel_dim=80, mel_framerate=50,
        input_frame_rate=25, vocab_size=32768, speech_token_dim=16,
    )  # fmt: skip
    flow.estimator = DiT(  # the tiny sizes of our random config's dit_sizes
        trans_dim=64, depth=2, heads=2, dim_head=32, ff_mult=2, text_emb_dim=16, conv_layers=2, mel_dim=80,
        text_vocab_size=32768, condition_dim=80, spkr_emb_adaLN=True, wav_lm_emb=False,
    )  # fmt: skip
    flow.load_state_dict(torch.load(scratch / "flow" / "flow.pt"))
    flow.eval()
    generator = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 32768, (1, 21), generator=generator)
    prompt_tokens = torch.randint(0, 32768, (1, 13), generator=generator)
    prompt_feat = torch.randn(1, 26, 80, generator=generator) - 5.0
    embedding = torch.randn(1, 192, generator=generator)
    torch.manual_seed(FLOW_SEED)
    mel, _ = flow.inference_with_cache(token=tokens, prompt_token=prompt_tokens, prompt_feat=prompt_feat, embedding=embedding)
    long_tokens = torch.randint(0, 32768, (1, 40), generator=torch.Generator().manual_seed(4))
    torch.manual_seed(FLOW_SEED)
    causal, _ = flow.inference_with_cache(
        token=long_tokens[:, : STREAM_BLOCKS[0]], prompt_token=prompt_tokens, prompt_feat=prompt_feat, embedding=embedding,
        is_causal=True, block_pattern=[prompt_tokens.shape[1]] + STREAM_BLOCKS,
    )  # fmt: skip
    frames = 160
    mask = block_mask_util.create([int(n / 12.5 * 22050 / 256) for n in [prompt_tokens.shape[1]] + STREAM_BLOCKS], frames)
    np.savez_compressed(
        OUT / "flow_upstream.npz", tokens=tokens[0].numpy(), prompt_tokens=prompt_tokens[0].numpy(),
        prompt_feat=prompt_feat[0].numpy(), embedding=embedding[0].numpy(), seed=FLOW_SEED, mel=mel[0].T.numpy(),
        long_tokens=long_tokens[0].numpy(), causal_mel=causal[0].T.numpy(),
        mask=np.packbits(mask.numpy().astype(bool), axis=1), mask_frames=frames,
    )  # fmt: skip


if __name__ == "__main__":
    main()
