"""Vocoders for the flow's 80-bin log mel at 50 Hz: HiFT (24 kHz, `hift/hift.pt`) and Vocos2D
(32 kHz, the TorchScript `vocos2d/generator_jit.ckpt`), and their streams.

A stream (`HiFTVocoder.stream`, `Vocos2DVocoder.stream`) turns a mel that grows block by block into
audio. Each call vocodes a window: CONTEXT frames already emitted on the left (their F0 and phase
as they were), the new final frames, and as right context whatever provisional frames the flow has
computed past them. Emitted audio stops RIGHT_MARGIN frames before the end of what is known unless
provisional frames cover that margin, and (HiFT) STATE_MARGIN frames before the end of the final
frames, so the F0 and phase carried into the next window never depend on provisional mel; the last
FADE frames computed past the emitted audio are kept and cross-faded with the next window's audio. When the provisional frames turn out final, the
windows reproduce one pass over the whole mel (the margins cover the networks' receptive fields,
measured: HiFT +-12 frames from the mel, +-10 from the source, +-5 for F0).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from glmtts.engines.glm.errors import CheckpointError
from glmtts.engines.glm.hift import HiFTGenerator, HiFTSizes, fold_weight_norm
from glmtts.engines.glm.noise import NoiseTape
from glmtts.engines.glm.state_dict import assign_state_dict, read_torch_state_dict

_LOGGER = logging.getLogger(__name__)

HIFT_SAMPLE_RATE = 24000
VOCOS_SAMPLE_RATE = 32000
VOCOS_HOP = 640  # samples per mel frame of the Vocos2D generator
# Upstream's MEL_LOGDIFF: the Vocos2D generator was trained on log mels shifted by this constant.
_VOCOS_MEL_OFFSET = -7.847762537473608
MEL_BINS = 80
HIFT_CONTEXT_FRAMES = 16  # left context of a window: the mel / source receptive fields are 12 / 10 frames
HIFT_RIGHT_MARGIN_FRAMES = 18  # F0 (5) + phase interpolation (1) + source (10) frames, rounded up
HIFT_STATE_MARGIN_FRAMES = 6  # F0 (5) + phase interpolation (1): the carried state sees final mel only
VOCOS_CONTEXT_FRAMES = 32  # the official generator is a black box: generous windows
VOCOS_RIGHT_MARGIN_FRAMES = 32
FADE_FRAMES = 2  # audio cross-fade where one window's provisional audio meets the next window's


class HiFTVocoder:
    """Owns the HiFT generator: mel [F, 80] -> 24 kHz audio [F * 480], using the caller's random
    stream for the source phases and noise."""

    sample_rate = HIFT_SAMPLE_RATE

    def __init__(self, model: HiFTGenerator, device: torch.device) -> None:
        self._model = model
        self.device = device

    @classmethod
    def load(cls, path: Path, device: torch.device | str, dtype: torch.dtype = torch.float32) -> HiFTVocoder:
        path = Path(path)
        state = read_torch_state_dict(path)
        sizes = _hift_sizes(state, path)
        with torch.device("meta"):
            model = HiFTGenerator(sizes)
        state = fold_weight_norm(state, model.weight_normed(), path)
        device = torch.device(device)
        assign_state_dict(model, state, path, device, dtype)
        _LOGGER.info("HiFT loaded from %s: %d channels (%s, %s)", path, sizes.base_channels, device, dtype)
        return cls(model, device)

    @torch.inference_mode()
    def mel_to_audio(self, mel: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """[F, 80] -> float32 [F * 480] on the vocoder's device."""
        _check_mel(mel)
        if mel.shape[0] == 0:
            return torch.zeros(0, device=self.device)
        audio = self._model(mel.to(self.device).T[None], generator)  # [1, samples]
        return audio[0].float()

    def stream(self, seed: int) -> HiFTStream:
        """A stream over this vocoder whose source noise comes from a tape seeded with `seed`."""
        return HiFTStream(self._model, self.device, seed)

    def mel_to_audio_seeded(self, mel: torch.Tensor, seed: int) -> np.ndarray:
        """The fast path's whole-utterance vocoding: one window of a stream (float64 phase, tape noise)."""
        stream = self.stream(seed)
        return np.concatenate([stream.push(mel), stream.finish()])


class Vocos2DVocoder:
    """Owns the official TorchScript Vocos2D generator: mel [F, 80] -> 32 kHz audio."""

    sample_rate = VOCOS_SAMPLE_RATE

    def __init__(self, model: torch.jit.ScriptModule, device: torch.device) -> None:
        self._model = model
        self.device = device

    @classmethod
    def load(cls, path: Path, device: torch.device | str) -> Vocos2DVocoder:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"Vocos2D generator not found: {path}")
        device = torch.device(device)
        try:
            model = torch.jit.load(str(path), map_location=device)
        except RuntimeError as error:
            raise CheckpointError(f"cannot load TorchScript generator {path}: {error}") from error
        _LOGGER.info("Vocos2D loaded from %s (%s)", path, device)
        return cls(model.eval(), device)

    @torch.inference_mode()
    def mel_to_audio(self, mel: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[F, 80] -> float32 [samples] (F * 640 for our random generator). Deterministic: the
        generator is accepted for interface parity and not used."""
        _check_mel(mel)
        if mel.shape[0] == 0:
            return torch.zeros(0, device=self.device)
        frames = mel.to(self.device, torch.float32)[None]  # [1, F, 80]: the generator's layout
        if frames.shape[1] == 1:  # as upstream: a single frame is doubled
            frames = torch.cat([frames, frames], dim=1)
        audio = self._model(frames + _VOCOS_MEL_OFFSET)  # [1, samples]
        return audio.reshape(-1).float()

    def stream(self, seed: int | None = None) -> VocosStream:
        """A stream over this vocoder (deterministic: `seed` is accepted for interface parity)."""
        return VocosStream(self, self.device)

    def mel_to_audio_seeded(self, mel: torch.Tensor, seed: int | None = None) -> np.ndarray:
        return self.mel_to_audio(mel).cpu().numpy().astype(np.float32)


class _WindowedStream:
    """The bookkeeping shared by the vocoder streams: mel so far, what was emitted, the cross-fade tail."""

    context_frames = 0
    right_margin_frames = 0
    state_margin_frames = 0
    samples_per_frame = 0

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._final = torch.zeros(0, MEL_BINS, device=device)  # [T, 80] mel that will not change
        self._emitted = 0  # frames of audio handed out
        self._tail = np.zeros(0, dtype=np.float32)  # provisional audio just past the emitted frames

    def push(self, final: torch.Tensor, provisional: torch.Tensor | None = None) -> np.ndarray:
        """Add `final` mel frames [n, 80]; `provisional` [m, 80] frames past them serve as right
        context. Returns the audio that is now ready (maybe none)."""
        _check_mel(final)
        self._final = torch.cat([self._final, final.to(self.device, torch.float32)])
        known = self._final.shape[0]
        right = 0 if provisional is None else provisional.shape[0]
        until = min(known - (self.state_margin_frames if right else 0), known + right - self.right_margin_frames)
        if until <= self._emitted:
            return np.zeros(0, dtype=np.float32)
        mel = self._final if provisional is None else torch.cat([self._final, provisional.to(self.device, torch.float32)])
        return self._emit(mel, until, final=False)

    def finish(self) -> np.ndarray:
        """The rest of the audio, to the end of the final mel."""
        if self._final.shape[0] <= self._emitted:
            tail, self._tail = self._tail, np.zeros(0, dtype=np.float32)
            return tail[:0]
        return self._emit(self._final, self._final.shape[0], final=True)

    def _emit(self, mel: torch.Tensor, until: int, final: bool) -> np.ndarray:
        start = max(0, self._emitted - self.context_frames)
        window = self._window_audio(mel, start)  # audio of frames [start, len(mel))
        up = self.samples_per_frame
        offset = (self._emitted - start) * up
        audio = window[offset : (until - start) * up].copy()
        fade = min(len(self._tail), len(audio))
        if fade:
            ramp = (np.arange(1, fade + 1, dtype=np.float32) / (fade + 1)).astype(np.float32)
            audio[:fade] = self._tail[:fade] * (1 - ramp) + audio[:fade] * ramp
        self._tail = np.zeros(0, dtype=np.float32) if final else window[(until - start) * up : (until - start + FADE_FRAMES) * up]
        self._emitted = until
        return audio

    def _window_audio(self, mel: torch.Tensor, start: int) -> np.ndarray:
        raise NotImplementedError


class HiFTStream(_WindowedStream):
    """HiFT over a growing mel: windows continue the F0, the accumulated harmonic phase and the
    tape noise of the frames before them."""

    context_frames = HIFT_CONTEXT_FRAMES
    right_margin_frames = HIFT_RIGHT_MARGIN_FRAMES
    state_margin_frames = HIFT_STATE_MARGIN_FRAMES

    def __init__(self, model: HiFTGenerator, device: torch.device, seed: int) -> None:
        super().__init__(device)
        self._model = model
        sizes = model.sizes
        self.samples_per_frame = sizes.samples_per_frame
        channels = sizes.harmonics + 1
        self._tape = NoiseTape(seed, channels, block_rows=self.samples_per_frame * 50)
        self._f0 = torch.zeros(0, device=device)  # [emitted] Hz as used for the emitted audio
        self._cumulative = torch.zeros(0, channels, dtype=torch.float64, device=device)  # cycles through each frame

    @torch.inference_mode()
    def _window_audio(self, mel: torch.Tensor, start: int) -> np.ndarray:
        emitted = self._emitted
        up = self.samples_per_frame
        window = mel[start:].T[None]  # [1, 80, Fw]
        f0 = self._model.predict_f0(window)[0]  # [Fw]
        known = emitted - start
        f0[:known] = self._f0[start:emitted]  # the context frames as they were emitted
        cycles = self._model.frame_cycles(f0).double()  # [Fw, H+1]
        before = self._cumulative[emitted - 1] if emitted else torch.zeros_like(cycles[0])
        cumulative = torch.cat([self._cumulative[start:emitted], before + cycles[known:].cumsum(0)])
        noise = self._tape.rows(start * up, mel.shape[0] * up).to(self.device)
        audio = self._model.window_to_audio(window, f0[None], cumulative[None], noise[None])[0]
        # Keep what the next window needs of the frames emitted now (the caller emits up to `until`).
        self._f0 = torch.cat([self._f0[:emitted], f0[known:]])
        self._cumulative = torch.cat([self._cumulative[:emitted], cumulative[known:]])
        self._tape.release_before(max(0, emitted - self.context_frames) * up)
        return audio.float().cpu().numpy()

    def _emit(self, mel: torch.Tensor, until: int, final: bool) -> np.ndarray:
        audio = super()._emit(mel, until, final)
        self._f0 = self._f0[:until]
        self._cumulative = self._cumulative[:until]
        return audio


class VocosStream(_WindowedStream):
    """Vocos2D over a growing mel, in overlapping windows (the generator is stateless)."""

    context_frames = VOCOS_CONTEXT_FRAMES
    right_margin_frames = VOCOS_RIGHT_MARGIN_FRAMES

    def __init__(self, vocoder: Vocos2DVocoder, device: torch.device) -> None:
        super().__init__(device)
        self._vocoder = vocoder
        self.samples_per_frame = VOCOS_HOP

    def _window_audio(self, mel: torch.Tensor, start: int) -> np.ndarray:
        audio = self._vocoder.mel_to_audio(mel[start:]).cpu().numpy().astype(np.float32)
        frames = mel.shape[0] - start
        if frames > 1 and len(audio) != frames * VOCOS_HOP:
            raise CheckpointError(f"Vocos2D gave {len(audio)} samples for {frames} frames; streaming needs {VOCOS_HOP} a frame")
        return audio


def _check_mel(mel: torch.Tensor) -> None:
    if mel.ndim != 2 or mel.shape[1] != MEL_BINS:
        raise ValueError(f"mel must be [frames, {MEL_BINS}], got {tuple(mel.shape)}")


def _hift_sizes(state: dict[str, torch.Tensor], path: Path) -> HiFTSizes:
    """Channel widths read from the weights (conv_pre and the first F0 conv); the rest is fixed."""
    widths = []
    for name in ("conv_pre", "f0_predictor.condnet.0"):
        keys = [f"{name}.parametrizations.weight.original1", f"{name}.weight_v"]
        found = next((state[key] for key in keys if key in state), None)
        if found is None:
            raise CheckpointError(f"{path}: missing key {keys[0]!r}")
        widths.append(int(found.shape[0]))
    return HiFTSizes(base_channels=widths[0], f0_channels=widths[1])
