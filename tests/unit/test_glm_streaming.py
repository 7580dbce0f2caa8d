"""Real streaming on a tiny random checkpoint (CPU): tokens become audio block by block while the LLM
decodes; the joined pieces match the same segment made in one pass up to what the block boundaries
change, and the joins carry no click.

Figures on this checkpoint (300 tokens, 12 s): the mel the stream decides differs from the one-pass
mel by 1.2 % (mean |difference| / mean |mel|), most of it near the first block's look-ahead. Through
Vocos (deterministic) the audio's log spectrum differs by 0.025 dB on average (2.3 dB between two
seeds) and the samples by 0.3 %. HiFT's output cannot be compared that way on random weights: its
harmonic phase integrates F0, and the random network turns a 1e-3 change of the mel into a log-mel
change larger than a different seed's; so for HiFT the tests check that the stream reproduces one
pass over the mel it decided (exactly away from joins, within 0.7 dB at them).
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from glmtts.engines.glm.engine import GLMTTSEngine
from glmtts.engines.glm.flow import block_causal_mask, mask_block_frames
from glmtts.engines.glm.noise import NoiseTape, derive_seed
from glmtts.engines.glm.random_checkpoint import write_random_checkpoint
from glmtts.engines.glm.streaming import SegmentStreamer, StreamSchedule, tokens_to_audio_whole
from glmtts.types import Cancelled, CancelToken, PromptVoice, Segment, SynthesisOptions, TextRun

RATE = 24000
TOKENS = 300
SEED = 7
PUSH = 7  # tokens per push, as an LLM yields them


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> GLMTTSEngine:
    ckpt = write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt", "tiny")
    engine = GLMTTSEngine(ckpt, decode="fast")
    engine.load("cpu")
    return engine


@pytest.fixture(scope="module")
def voice(engine: GLMTTSEngine) -> PromptVoice:
    t = np.arange(3 * RATE) / RATE
    audio = 0.3 * np.sin(2 * np.pi * (150 + 40 * np.sin(2 * np.pi * 2 * t)) * t)
    audio += 0.01 * np.random.default_rng(0).standard_normal(audio.size)
    return engine.prepare_voice(audio.astype(np.float32), RATE, "Hello there, my friend.", "stream-voice")


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, 32768, (TOKENS,), generator=torch.Generator().manual_seed(0))


def _stream(
    engine: GLMTTSEngine, voice: PromptVoice, tokens: torch.Tensor, rate: int, **schedule
) -> tuple[SegmentStreamer, list[np.ndarray]]:
    features = voice.features
    streamer = SegmentStreamer(
        engine.flow, engine.vocoders[rate], torch.tensor(features.speech_tokens), features.prompt_mels[rate],
        features.speaker_embedding, SEED, StreamSchedule(**schedule),
    )  # fmt: skip
    pieces = [streamer.push(tokens[i : i + PUSH].tolist()) for i in range(0, len(tokens), PUSH)]
    pieces.append(streamer.finish())
    return streamer, pieces


def _whole(engine: GLMTTSEngine, voice: PromptVoice, tokens: torch.Tensor, rate: int, seed: int = SEED) -> np.ndarray:
    features = voice.features
    audio, _, _ = tokens_to_audio_whole(
        engine.flow, engine.vocoders[rate], tokens, torch.tensor(features.speech_tokens), features.prompt_mels[rate],
        features.speaker_embedding, seed,
    )  # fmt: skip
    return audio


def _log_spectrum(audio: np.ndarray, size: int = 512, hop: int = 128) -> torch.Tensor:
    spectrum = torch.stft(torch.from_numpy(audio), size, hop, window=torch.hann_window(size), return_complex=True)
    return 20 * torch.log10(spectrum.abs() + 1e-5)


def _band_db(audio: np.ndarray, centers: list[int], rate: int, low_hz: float = 4000, size: int = 256) -> np.ndarray:
    """Energy (dB) above `low_hz` of the `size`-sample window centred on each position: a click at a
    join is broadband, so it shows there."""
    window = np.hanning(size)
    band = np.fft.rfftfreq(size, 1 / rate) >= low_hz
    return np.array([
        10 * np.log10((np.abs(np.fft.rfft(audio[c - size // 2 : c + size // 2] * window))[band] ** 2).sum() + 1e-12)
        for c in centers
    ])  # fmt: skip


def _lsd(a: np.ndarray, b: np.ndarray, centers: list[int], rate: int, size: int = 240) -> np.ndarray:
    """Log-spectral distance (dB, above 2 kHz) between a and b in the window centred on each position."""
    window = np.hanning(size)
    band = np.fft.rfftfreq(size, 1 / rate) >= 2000

    def spectrum(x: np.ndarray, c: int) -> np.ndarray:
        return 20 * np.log10(np.abs(np.fft.rfft(x[c - size // 2 : c + size // 2] * window))[band] + 1e-7)

    return np.array([np.sqrt(np.mean((spectrum(a, c) - spectrum(b, c)) ** 2)) for c in centers])


def test_noise_tape_rows_do_not_depend_on_reading_order() -> None:
    whole = NoiseTape(5, 80, block_rows=64).rows(0, 300)
    pieces = NoiseTape(5, 80, block_rows=64)
    late = pieces.rows(250, 300)
    assert torch.equal(torch.cat([pieces.rows(0, 100), pieces.rows(100, 250), late]), whole)
    assert not torch.equal(NoiseTape(6, 80).rows(0, 300), whole)
    assert derive_seed(42, "flow") != derive_seed(42, "vocoder") != derive_seed(43, "vocoder")


def test_block_causal_mask_follows_upstreams_rule() -> None:
    blocks = [mask_block_frames(n) for n in (13, 25, 50, 200)]
    assert blocks == [89, 172, 344, 1378]  # upstream converts as if tokens were 12.5 Hz and frames 86 Hz
    small = [4, 3, 6]
    mask = block_causal_mask(small, 20)
    sizes, ends = small + [6] * 5, np.cumsum(small + [6] * 5)
    for frame in range(20):
        block = int(np.searchsorted(ends, frame, side="right"))
        size, end = sizes[block], int(ends[block])
        minimum = int(size / 2) if size <= 172 else int(size / 1.5)
        visible = end + max(0, minimum - (end - 1 - frame))
        assert mask[frame].tolist() == [column < visible for column in range(20)], frame


@pytest.mark.parametrize("rate", [24000, 32000])
def test_vocoder_windows_reproduce_one_pass(engine: GLMTTSEngine, rate: int) -> None:
    vocoder = engine.vocoders[rate]
    mel = torch.randn(233, 80, generator=torch.Generator().manual_seed(1)) - 5.0
    stream = vocoder.stream(11)
    pieces = [stream.push(mel[i : i + 37], mel[i + 37 :]) for i in range(0, len(mel), 37)]
    pieces.append(stream.finish())
    whole = vocoder.mel_to_audio_seeded(mel, 11)
    joined = np.concatenate(pieces)
    assert len(joined) == len(whole) == len(mel) * (480 if rate == 24000 else 640)
    np.testing.assert_allclose(joined, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("rate", [24000, 32000])
def test_streamed_segment_matches_the_whole_within_block_effects(
    engine: GLMTTSEngine, voice: PromptVoice, tokens: torch.Tensor, rate: int
) -> None:
    streamer, pieces = _stream(engine, voice, tokens, rate)
    streamed = np.concatenate(pieces)
    whole = _whole(engine, voice, tokens, rate)
    assert len(streamed) == len(whole)
    # Mel: what the stream decided against the one-pass flow (same noise, full attention).
    features = voice.features
    prompt = torch.tensor(features.speech_tokens)
    frames = engine.flow.mel_frames_for_tokens(prompt.numel() + TOKENS)
    noise = NoiseTape(derive_seed(SEED, "flow"), 80, block_rows=256).rows(0, frames)
    one_pass = engine.flow.tokens_to_mel(tokens, prompt, features.prompt_mels[rate], features.speaker_embedding, noise=noise)
    decided = streamer._vocoder._final
    relative = float((decided - one_pass).abs().mean() / one_pass.abs().mean())
    assert relative < 0.03  # measured 0.012
    if rate == 24000:
        return  # HiFT: see the module doc and test_joins_have_no_clicks
    # Audio through the deterministic vocoder: log spectra against the distance between two seeds.
    distance = float((_log_spectrum(streamed) - _log_spectrum(whole)).abs().mean())
    between_seeds = float((_log_spectrum(_whole(engine, voice, tokens, rate, SEED + 1)) - _log_spectrum(whole)).abs().mean())
    assert distance < 0.1 and distance < 0.05 * between_seeds  # measured 0.025 / 2.3 dB
    assert np.abs(streamed - whole).mean() < 0.01 * np.abs(whole).mean()  # measured 0.3 %


@pytest.mark.parametrize("rate", [24000, 32000])
def test_joins_have_no_clicks(engine: GLMTTSEngine, voice: PromptVoice, tokens: torch.Tensor, rate: int) -> None:
    """At every join between pieces, the streamed audio's spectrum is that of one vocoder pass over the
    same mel (away from joins the two are the same audio); vocoding each piece's mel on its own (a
    naive stream) is not: its joins show edge artefacts several dB strong."""
    streamer, pieces = _stream(engine, voice, tokens, rate)
    lengths = [len(piece) for piece in pieces if len(piece)]
    joins = [int(j) for j in np.cumsum(lengths)[:-1]]
    assert len(joins) >= 3
    mel = streamer._vocoder._final
    vocoder = engine.vocoders[rate]
    hop = len(np.concatenate(pieces)) // len(mel)
    seed = derive_seed(SEED, "vocoder")
    one_pass = vocoder.mel_to_audio_seeded(mel, seed)
    streamed = np.concatenate(pieces)
    elsewhere = list(range(2000, len(streamed) - 2000, 1499))
    # measured: HiFT <= 0.05 dB / 0.78 dB / 0.005 dB, Vocos <= 0.001 / 0.007 / 0.0 dB
    assert np.abs(_band_db(streamed, joins, rate) - _band_db(one_pass, joins, rate)).max() < 0.5
    assert _lsd(streamed, one_pass, joins, rate).max() < 1.5
    assert np.median(_lsd(streamed, one_pass, elsewhere, rate)) < 0.05
    bounds = [0] + [j // hop for j in joins] + [len(mel)]
    naive = np.concatenate([vocoder.mel_to_audio_seeded(mel[a:b], seed) for a, b in itertools.pairwise(bounds)])
    assert _lsd(naive, one_pass, joins, rate).min() > 5.0  # measured 7-12 dB: the test sees such joins


def test_mel_fades_join_consecutive_runs(engine: GLMTTSEngine, voice: PromptVoice, tokens: torch.Tensor) -> None:
    streamer, _ = _stream(engine, voice, tokens, RATE)
    assert streamer.blocks_run == 4  # blocks end at 25, 75, 275 tokens, then the rest
    assert streamer.mel_joins == [21, 95, 345]  # decided ends (50 - 24, 150 - 50, 550 - 200 frames) less the fade


def test_first_audio_arrives_after_the_first_block(engine: GLMTTSEngine, voice: PromptVoice, tokens: torch.Tensor) -> None:
    features = voice.features
    streamer = SegmentStreamer(
        engine.flow, engine.vocoders[RATE], torch.tensor(features.speech_tokens), features.prompt_mels[RATE],
        features.speaker_embedding, SEED,
    )  # fmt: skip
    assert len(streamer.push(tokens[:24].tolist())) == 0
    first = streamer.push(tokens[24:25].tolist())
    # The first block (25 tokens = 50 frames, 12 tokens held back as look-ahead) decides 26 frames;
    # less the 5-frame fade and HiFT's 6-frame state margin: 15 frames, 0.3 s.
    assert 0.25 < len(first) / RATE < 0.5  # measured 0.30 s


def _segments(*texts: str) -> list[Segment]:
    return [Segment(text=text, runs=(TextRun("en", text),), glm_text=text) for text in texts]


@pytest.mark.parametrize("decode", ["fast", "reference"])
def test_engine_streams_pieces_of_a_segment(engine: GLMTTSEngine, voice: PromptVoice, decode: str, tmp_path: Path) -> None:
    if decode == "reference":
        engine = GLMTTSEngine(engine.ckpt_root, decode="reference")
        engine.load("cpu")
    options = SynthesisOptions(seed=3, forced_tokens_per_segment=120)
    pieces = list(engine.synthesize_segments(_segments("hello world today.", "see you."), voice, options))
    finals = [piece.final for piece in pieces]
    assert finals.count(True) == 2 and finals[-1] and len(pieces) > 3
    first_segment = pieces[: finals.index(True) + 1]
    assert sum(len(piece.audio) for piece in first_segment) == 120 * 2 * 480
    assert first_segment[-1].info == {"speech_tokens": 120, "flow_blocks": 3}
    assert all(set(piece.timings) == {"llm", "flow", "vocoder"} for piece in pieces)
    whole = list(engine.synthesize_segments(_segments("hello world today."), voice, replace(options, stream=False)))
    assert len(whole) == 1 and len(whole[0].audio) == 120 * 2 * 480


def test_a_cancelled_request_stops_inside_its_segment(engine: GLMTTSEngine, voice: PromptVoice) -> None:
    cancel = CancelToken()
    pieces = engine.synthesize_segments(
        _segments("hello world today."), voice, SynthesisOptions(forced_tokens_per_segment=280), cancel
    )
    first = next(pieces)
    assert not first.final
    cancel.cancel()
    with pytest.raises(Cancelled):
        next(pieces)


def test_streamed_requests_may_interleave_on_the_fast_path(engine: GLMTTSEngine, voice: PromptVoice) -> None:
    """The pipeline gives the device to other requests between the pieces of a streamed one: a second
    request runs to its end while the first is paused inside its segment."""
    assert engine.max_batch == 1 and engine.batcher is not None  # the fast path decodes in the worker
    options = SynthesisOptions(seed=1, forced_tokens_per_segment=120)
    first = engine.synthesize_segments(_segments("hello world today."), voice, options)
    head = next(first)
    other = list(engine.synthesize_segments(_segments("see you."), voice, SynthesisOptions(seed=2, forced_tokens_per_segment=60)))
    assert sum(len(piece.audio) for piece in other) == 60 * 2 * 480
    rest = list(first)
    assert len(head.audio) + sum(len(piece.audio) for piece in rest) == 120 * 2 * 480
