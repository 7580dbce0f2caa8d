"""Saved voices in Redis: every replica sees a voice as soon as any replica saved it.

Keys:
    glmtts:voices           hash: voice id -> meta JSON (name, prompt_text, created, duration_s,
                            engine, analysis_version, key), the same fields as meta.json on disk
    glmtts:voices:version   counter, raised by every add, update, rename and delete
    glmtts:voices:names     hash: name_key of a voice's name -> its id (set only if absent, so that
                            of two replicas saving one name at once, one wins)
    glmtts:voice:<id>       hash: prompt (the prompt as a float32 wav), features (the analysis as
                            an .npz, glmtts.feature_codec), name_key

A replica asks for the version before each lookup (one round trip) and reads the registry again
only when it moved. Decoded analyses stay in the replica's memory; a replica that has not used a
voice yet decodes the stored analysis, and refits only for another engine or analysis version (and
then stores its analysis for the others). Adding checks "exists" and the voice limit in the same
script that writes, so two replicas saving at once cannot both win.
"""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import soundfile as sf

from glmtts.audio import read_prompt
from glmtts.cluster import KEY_PREFIX, SharedState
from glmtts.feature_codec import FeatureCodecError, arrays_to_features, features_to_arrays
from glmtts.voices import (
    MAX_SAVED_VOICES,
    VoiceExists,
    VoiceInfo,
    VoiceLimit,
    VoiceNameTaken,
    VoiceNotFound,
    info_to_meta,
    meta_to_info,
    name_key,
)

_LOGGER = logging.getLogger(__name__)

REGISTRY = KEY_PREFIX + "voices"
VERSION = KEY_PREFIX + "voices:version"
NAMES = KEY_PREFIX + "voices:names"
PROMPT_FIELD, FEATURES_FIELD = b"prompt", b"features"

# KEYS: registry, version, voice hash, names; ARGV: id, meta, limit, prompt wav, features ("" when not stored), name_key
_ADD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'exists' end
local holder = redis.call('HGET', KEYS[4], ARGV[6])
if holder then return 'name:' .. holder end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 'limit' end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'prompt', ARGV[4], 'name_key', ARGV[6])
redis.call('HSET', KEYS[4], ARGV[6], ARGV[1])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[3], 'features', ARGV[5]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 'ok'
"""
# KEYS: registry, version, voice hash; ARGV: id, meta, features
_UPDATE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[3], 'features', ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 1
"""
# KEYS: registry, version, voice hash, names; ARGV: id, meta, new name_key
_RENAME = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 'missing' end
local holder = redis.call('HGET', KEYS[4], ARGV[3])
if holder and holder ~= ARGV[1] then return 'name:' .. holder end
local old = redis.call('HGET', KEYS[3], 'name_key')
if old and redis.call('HGET', KEYS[4], old) == ARGV[1] then redis.call('HDEL', KEYS[4], old) end
redis.call('HSET', KEYS[4], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[3], 'name_key', ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 'ok'
"""
# KEYS: registry, version, voice hash, names; ARGV: id
_REMOVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
local name = redis.call('HGET', KEYS[3], 'name_key')
if name and redis.call('HGET', KEYS[4], name) == ARGV[1] then redis.call('HDEL', KEYS[4], name) end
redis.call('DEL', KEYS[3])
redis.call('INCR', KEYS[2])
return 1
"""


def voice_key(voice_id: str) -> str:
    return f"{KEY_PREFIX}voice:{voice_id}"


def features_to_bytes(features: object) -> bytes:
    """An analysis as the bytes of an .npz (the codec's arrays, no pickle)."""
    buffer = io.BytesIO()
    np.savez(buffer, **features_to_arrays(features))
    return buffer.getvalue()


def bytes_to_features(data: bytes, device: str) -> object:
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        return arrays_to_features({name: stored[name] for name in stored.files}, device)


class RedisVoiceStore:
    """The VoiceStore (glmtts.voices) of replicas that share state: registry, prompts and analyses in Redis."""

    def __init__(self, shared: SharedState):
        self.client = shared.client
        self._seen_version: bytes | None = None
        self._add = self.client.register_script(_ADD)
        self._update = self.client.register_script(_UPDATE)
        self._rename = self.client.register_script(_RENAME)
        self._remove = self.client.register_script(_REMOVE)

    def load(self) -> dict[str, tuple[VoiceInfo, str]]:
        with self.client.pipeline(transaction=True) as pipe:
            version, registry = pipe.get(VERSION).hgetall(REGISTRY).execute()
        self._seen_version = version or b"0"
        saved: dict[str, tuple[VoiceInfo, str]] = {}
        for raw_id, raw_meta in sorted(registry.items()):
            voice_id = raw_id.decode("utf-8")
            try:
                saved[voice_id] = meta_to_info(voice_id, json.loads(raw_meta))
            except (ValueError, KeyError, TypeError) as error:  # a damaged entry must not stop the service
                _LOGGER.warning("Saved voice %s skipped: %s: %s", voice_id, type(error).__name__, error)
        return saved

    def changes(self) -> dict[str, tuple[VoiceInfo, str]] | None:
        if self._seen_version is None:  # not loaded yet (Service.load checks Redis first): nothing to tell
            return None
        if (self.client.get(VERSION) or b"0") == self._seen_version:
            return None
        return self.load()

    def read_features(self, voice_id: str, device: str) -> object:
        data = self.client.hget(voice_key(voice_id), FEATURES_FIELD)
        if not data:
            raise KeyError(f"no stored analysis for {voice_id}")
        return bytes_to_features(data, device)

    def read_prompt(self, voice_id: str) -> tuple[np.ndarray, int]:
        data = self.client.hget(voice_key(voice_id), PROMPT_FIELD)
        if not data:
            raise VoiceNotFound(voice_id)
        return read_prompt(data)

    def add(self, info: VoiceInfo, key: str, samples: np.ndarray, rate: int, features: object) -> None:
        prompt = io.BytesIO()
        sf.write(prompt, samples, rate, format="WAV", subtype="FLOAT")
        try:
            stored = features_to_bytes(features)
        except FeatureCodecError as error:  # still usable: analysed again at its first use elsewhere
            _LOGGER.warning("Saved voice %s: analysis not stored (%s)", info.id, error)
            info.engine, stored = "", b""
        meta = json.dumps(info_to_meta(info, key), ensure_ascii=False)
        outcome = self._add(
            keys=[REGISTRY, VERSION, voice_key(info.id), NAMES],
            args=[info.id, meta, MAX_SAVED_VOICES, prompt.getvalue(), stored, name_key(info.name)],
        )
        if outcome == b"exists":
            raise VoiceExists(info.id)
        if outcome.startswith(b"name:"):
            raise VoiceNameTaken.in_use(info.name, outcome.removeprefix(b"name:").decode())
        if outcome == b"limit":
            raise VoiceLimit(f"{MAX_SAVED_VOICES} voices are saved already; delete one first.")

    def update_features(self, info: VoiceInfo, key: str, features: object) -> None:
        meta = json.dumps(info_to_meta(info, key), ensure_ascii=False)
        self._update(keys=[REGISTRY, VERSION, voice_key(info.id)], args=[info.id, meta, features_to_bytes(features)])

    def rename(self, info: VoiceInfo, key: str) -> None:
        meta = json.dumps(info_to_meta(info, key), ensure_ascii=False)
        outcome = self._rename(keys=[REGISTRY, VERSION, voice_key(info.id), NAMES], args=[info.id, meta, name_key(info.name)])
        if outcome == b"missing":
            raise VoiceNotFound(info.id)
        if outcome.startswith(b"name:"):
            raise VoiceNameTaken.in_use(info.name, outcome.removeprefix(b"name:").decode())

    def remove(self, voice_id: str) -> None:
        if not self._remove(keys=[REGISTRY, VERSION, voice_key(voice_id), NAMES], args=[voice_id]):
            raise VoiceNotFound(voice_id)
