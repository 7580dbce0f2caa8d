"""Saved voices: a prompt analysed once, kept under outputs/voices/<id>/ and resident from the start.

On disk, per voice:
    prompt.wav     the prompt decoded to mono at the pipeline's prompt rate (float32, cut to 30 s)
    meta.json      name, prompt_text, created, duration_s, the engine that analysed it, content key
    features.npz   that engine's analysis, written by a small codec without pickle (below)

The codec turns a features object (dataclasses, numpy arrays, torch tensors, numbers, strings,
lists, tuples, dicts) into a flat dict of arrays plus a JSON schema stored beside them, and back.
Decoding only rebuilds dataclasses defined in FEATURE_MODULES. Features from another engine, or
ones that no longer decode, are recomputed from prompt.wav when the voice is first used (at
warm-up), then stored again.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import os
import re
import shutil
import sys
import threading
import unicodedata
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import soundfile as sf

from glmtts.audio import content_key, read_prompt
from glmtts.pipeline import PROMPT_RATE, Pipeline, SavedPrompt
from glmtts.types import PromptVoice, SynthesisError

_LOGGER = logging.getLogger(__name__)

PROMPT_FILE = "prompt.wav"
META_FILE = "meta.json"
FEATURES_FILE = "features.npz"
MAX_SAVED_VOICES = 200
MAX_NAME_CHARS = 80
MAX_PROMPT_TEXT_CHARS = 1000
SLUG_CHARS = 32
VOICE_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{8}$")  # slug of the name + content hash
FEATURES_FORMAT = 1
# Modules whose dataclasses a features file may name; nothing else is ever imported on decode.
FEATURE_MODULES = (
    "glmtts.types",
    "glmtts.engines.embedded.engine",
    "glmtts.engines.embedded.voice_match",
    "glmtts.engines.glm.engine",
)
_SCHEMA_KEY = "__schema__"
_ARRAY_KINDS = "biuf"  # bool, signed, unsigned, float: everything np.load reads without pickle
_TENSOR_VIEWS = {"bfloat16": "int16"}  # torch dtypes numpy lacks, stored bit for bit
# What a damaged or foreign features file raises while it is read and decoded.
_UNREADABLE = (OSError, EOFError, ValueError, KeyError, TypeError, RuntimeError, ImportError, zipfile.BadZipFile)
_NEW_PREFIX, _TRASH_PREFIX = ".new-", ".trash-"  # hidden folders of a create or delete in progress
_STATE_STORED, _STATE_COMPUTED, _STATE_PENDING = "stored", "computed", "pending"


class FeatureCodecError(ValueError):
    """A features object holds something the codec does not store, or a file does not decode."""


class VoiceNotFound(KeyError):
    """No saved voice has this id."""


class VoiceExists(ValueError):
    """A saved voice with the same name and prompt already exists."""

    def __init__(self, voice_id: str):
        super().__init__(f"The voice {voice_id!r} already exists (same name and prompt).")
        self.voice_id = voice_id


class VoiceLimit(ValueError):
    """The store holds MAX_SAVED_VOICES voices."""


# --------------------------------------------------------------------------- codec
def features_to_arrays(features: object) -> dict[str, np.ndarray]:
    """Flatten a features object into named arrays; the schema travels as one uint8 array."""
    arrays: dict[str, np.ndarray] = {}
    schema = {"format": FEATURES_FORMAT, "root": _encode(features, arrays)}
    arrays[_SCHEMA_KEY] = np.frombuffer(json.dumps(schema, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
    return arrays


def arrays_to_features(arrays: Mapping[str, np.ndarray], device: str = "cpu") -> object:
    """Rebuild what features_to_arrays stored; tensors land on `device`."""
    if _SCHEMA_KEY not in arrays:
        raise FeatureCodecError("no schema in the features file")
    schema = json.loads(np.asarray(arrays[_SCHEMA_KEY], dtype=np.uint8).tobytes().decode("utf-8"))
    if not isinstance(schema, dict) or schema.get("format") != FEATURES_FORMAT:
        raise FeatureCodecError(f"unknown features format {schema.get('format') if isinstance(schema, dict) else schema!r}")
    return _decode(schema["root"], arrays, device)


def _encode(value: object, arrays: dict[str, np.ndarray]) -> object:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype.kind not in _ARRAY_KINDS:
            raise FeatureCodecError(f"cannot store arrays of dtype {array.dtype}")
        return {"$": "ndarray", "key": _put(arrays, array), "scalar": isinstance(value, np.generic)}
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype in _TENSOR_VIEWS:
            tensor = tensor.view(getattr(torch, _TENSOR_VIEWS[dtype]))
        try:
            array = tensor.numpy()
        except TypeError as error:
            raise FeatureCodecError(f"cannot store tensors of dtype {dtype}") from error
        return {"$": "tensor", "key": _put(arrays, array), "dtype": dtype}
    if isinstance(value, (list, tuple)):
        return {"$": type(value).__name__, "items": [_encode(item, arrays) for item in value]}
    if isinstance(value, dict):
        return {"$": "dict", "items": [[_encode_key(key), _encode(item, arrays)] for key, item in value.items()]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if cls.__module__ not in FEATURE_MODULES:
            raise FeatureCodecError(f"{cls.__module__}.{cls.__qualname__} is not in an allowed features module")
        fields = {field.name: _encode(getattr(value, field.name), arrays) for field in dataclasses.fields(value)}
        return {"$": "dataclass", "type": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    raise FeatureCodecError(f"cannot store a {type(value).__module__}.{type(value).__qualname__}")


def _encode_key(key: object) -> object:
    if key is None or isinstance(key, (bool, int, float, str)):
        return key
    if isinstance(key, tuple):
        return {"$": "tuple", "items": [_encode_key(item) for item in key]}
    raise FeatureCodecError(f"cannot store a dict key of type {type(key).__name__}")


def _put(arrays: dict[str, np.ndarray], array: np.ndarray) -> str:
    key = f"a{len(arrays)}"
    arrays[key] = array
    return key


def _decode(node: object, arrays: Mapping[str, np.ndarray], device: str) -> object:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if not isinstance(node, dict):
        raise FeatureCodecError(f"unexpected schema node {node!r:.60}")
    kind = node.get("$")
    if kind == "ndarray":
        array = _array(arrays, node["key"])
        return array[()] if node.get("scalar") else array
    if kind == "tensor":
        return _tensor(_array(arrays, node["key"]), str(node["dtype"]), device)
    if kind in ("list", "tuple"):
        items = [_decode(item, arrays, device) for item in node["items"]]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {_hashable(_decode(key, arrays, device)): _decode(item, arrays, device) for key, item in node["items"]}
    if kind == "dataclass":
        return _dataclass(str(node["type"]), {name: _decode(item, arrays, device) for name, item in node["fields"].items()})
    raise FeatureCodecError(f"unknown schema node type {kind!r}")


def _array(arrays: Mapping[str, np.ndarray], key: object) -> np.ndarray:
    if not isinstance(key, str) or key == _SCHEMA_KEY or key not in arrays:
        raise FeatureCodecError(f"missing array {key!r}")
    return np.asarray(arrays[key])


def _hashable(key: object) -> object:
    if isinstance(key, (list, dict)):
        raise FeatureCodecError("a dict key must be a number, a string or a tuple")
    return key


def _tensor(array: np.ndarray, dtype: str, device: str) -> object:
    import torch

    tensor = torch.from_numpy(np.array(array, copy=True))
    if dtype in _TENSOR_VIEWS:
        tensor = tensor.view(getattr(torch, dtype))
    elif str(tensor.dtype).removeprefix("torch.") != dtype:
        raise FeatureCodecError(f"tensor stored as {tensor.dtype}, schema says {dtype}")
    return tensor.to(device)


def _dataclass(qualified: str, values: dict[str, object]) -> object:
    module_name, _, name = qualified.partition(":")
    if module_name not in FEATURE_MODULES or not name.isidentifier():
        raise FeatureCodecError(f"{qualified!r} is not an allowed features class")
    cls = getattr(importlib.import_module(module_name), name, None)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise FeatureCodecError(f"{qualified!r} is not a dataclass")
    fields = dataclasses.fields(cls)
    if {field.name for field in fields} != set(values):
        raise FeatureCodecError(f"{qualified} fields changed: stored {sorted(values)}")
    instance = cls(**{field.name: values[field.name] for field in fields if field.init})
    for field in fields:
        if not field.init:
            object.__setattr__(instance, field.name, values[field.name])
    return instance


def save_features(path: Path, features: object) -> None:
    """Write a features file atomically (a temporary file, synced, then renamed)."""
    arrays = features_to_arrays(features)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def load_features(path: Path, device: str = "cpu") -> object:
    with np.load(path, allow_pickle=False) as stored:
        return arrays_to_features({name: stored[name] for name in stored.files}, device)


# --------------------------------------------------------------------------- store
@dataclass
class VoiceInfo:
    """A saved voice as the API shows it. `features`: stored (decoded from disk at start),
    computed (analysed in this process), pending (analysed at its first use)."""

    id: str
    name: str
    prompt_text: str
    created: str  # ISO 8601, UTC
    duration_s: float
    engine: str  # the engine whose analysis is stored
    features: str = _STATE_PENDING
    builtin: bool = False

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def voice_slug(name: str) -> str:
    """Lower-case ASCII letters and digits joined by hyphens; "voice" when nothing is left."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name).strip("-")[:SLUG_CHARS].strip("-") or "voice"


class VoiceStore:
    """Creates, lists and deletes saved voices on disk and keeps the pipeline's registry in step."""

    def __init__(self, root: Path, pipeline: Pipeline):
        self.root = root
        self.pipeline = pipeline
        self._infos: dict[str, VoiceInfo] = {}
        self._lock = threading.Lock()
        self._loaded = False

    # ----------------------------------------------------------------- start
    def load_all(self) -> list[VoiceInfo]:
        """Register every saved voice with the pipeline, its stored analysis decoded (once per process).

        Voices whose features cannot be used are registered without them; the pipeline analyses
        them at warm-up (or first use) and this store writes the result back.
        """
        with self._lock:
            if self._loaded:
                return list(self._infos.values())
            self._loaded = True
            self.root.mkdir(parents=True, exist_ok=True)
            for prefix in (_NEW_PREFIX, _TRASH_PREFIX):  # a create or delete cut short by a crash
                for leftover in self.root.glob(f"{prefix}*"):
                    shutil.rmtree(leftover, ignore_errors=True)
            for folder in sorted(self.root.iterdir()):
                if folder.is_dir() and VOICE_ID.match(folder.name):
                    try:
                        self._load_one(folder)
                    except (OSError, ValueError, KeyError, TypeError) as error:  # a damaged folder must not stop the service
                        _LOGGER.warning("Saved voice %s skipped: %s: %s", folder.name, type(error).__name__, error)
            infos = list(self._infos.values())
        stored = sum(info.features == _STATE_STORED for info in infos)
        _LOGGER.info(
            "Saved voices: %d loaded from stored features, %d to analyse from their prompts", stored, len(infos) - stored
        )
        return infos

    def _load_one(self, folder: Path) -> None:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        info = VoiceInfo(
            id=folder.name,
            name=str(meta["name"]),
            prompt_text=str(meta["prompt_text"]),
            created=str(meta["created"]),
            duration_s=float(meta["duration_s"]),
            engine=str(meta["engine"]),
        )
        voice = None
        if info.engine != self.pipeline.engine.name:
            _LOGGER.info(
                "Saved voice %s was analysed by %s; analysing it again for %s", info.id, info.engine, self.pipeline.engine.name
            )
        else:
            try:
                features = load_features(folder / FEATURES_FILE, self.pipeline.device)
                voice = PromptVoice(str(meta["key"]), info.prompt_text, features, info.duration_s)
                info.features = _STATE_STORED
            except _UNREADABLE as error:
                _LOGGER.warning(
                    "Saved voice %s: stored features unusable (%s: %s); analysing it again", info.id, type(error).__name__, error
                )
        self._infos[info.id] = info
        self.pipeline.register_saved_voice(
            info.id, SavedPrompt(folder / PROMPT_FILE, info.prompt_text, voice, functools.partial(self._store_analysis, info.id))
        )

    def _store_analysis(self, voice_id: str, voice: PromptVoice) -> None:
        """Called by the pipeline after it analysed a saved voice: keep the result for the next start."""
        info = self._infos.get(voice_id)
        folder = self.root / voice_id
        if info is None or not folder.is_dir():
            return
        info.features, info.engine = _STATE_COMPUTED, self.pipeline.engine.name
        try:
            save_features(folder / FEATURES_FILE, voice.features)
            self._write_meta(folder, info, voice.key)
        except (OSError, FeatureCodecError) as error:
            _LOGGER.warning("Saved voice %s: analysis kept in memory only (%s)", voice_id, error)

    # ----------------------------------------------------------------- operations
    def create(self, audio: bytes, prompt_text: str, name: str) -> VoiceInfo:
        """Check and analyse a prompt, then save it; raises SynthesisError for unusable input."""
        name, prompt_text = " ".join(name.split()), prompt_text.strip()
        if len(name) > MAX_NAME_CHARS:
            raise SynthesisError(f"The voice name has {len(name)} characters; the limit is {MAX_NAME_CHARS}.")
        if len(prompt_text) > MAX_PROMPT_TEXT_CHARS:
            raise SynthesisError(f"The prompt text has {len(prompt_text)} characters; the limit is {MAX_PROMPT_TEXT_CHARS}.")
        samples, rate = read_prompt(audio, PROMPT_RATE)  # [samples] float32 at PROMPT_RATE
        key = content_key(samples, prompt_text)
        voice_id = f"{voice_slug(name)}-{key[:8]}"
        self._check_free(voice_id)
        voice = self.pipeline.prepare_prompt(samples, rate, prompt_text)
        info = VoiceInfo(
            id=voice_id,
            name=name or voice_id,
            prompt_text=prompt_text,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            duration_s=round(len(samples) / rate, 3),
            engine=self.pipeline.engine.name,
            features=_STATE_COMPUTED,
        )
        with self._lock:
            self._check_free(voice_id)
            folder = self._write_new(info, samples, rate, voice)
            self._infos[voice_id] = info
            self.pipeline.register_saved_voice(
                voice_id, SavedPrompt(folder / PROMPT_FILE, prompt_text, voice, functools.partial(self._store_analysis, voice_id))
            )
        _LOGGER.info("Saved voice %s (%.1f s prompt)", voice_id, info.duration_s)
        return info

    def list(self) -> list[VoiceInfo]:
        with self._lock:
            return sorted(self._infos.values(), key=lambda info: (info.created, info.id))

    def get(self, voice_id: str) -> VoiceInfo:
        with self._lock:
            if voice_id not in self._infos:
                raise VoiceNotFound(voice_id)
            return self._infos[voice_id]

    def delete(self, voice_id: str) -> None:
        with self._lock:
            if voice_id not in self._infos:
                raise VoiceNotFound(voice_id)
            del self._infos[voice_id]
            self.pipeline.unregister_saved_voice(voice_id)
            trash = self.root / f"{_TRASH_PREFIX}{voice_id}-{uuid.uuid4().hex[:8]}"
            os.replace(self.root / voice_id, trash)  # gone from the store at once, even if removal is cut short
        shutil.rmtree(trash, ignore_errors=True)
        _LOGGER.info("Deleted saved voice %s", voice_id)

    # ----------------------------------------------------------------- files
    def _check_free(self, voice_id: str) -> None:
        if voice_id in self._infos:
            raise VoiceExists(voice_id)
        if len(self._infos) >= MAX_SAVED_VOICES:
            raise VoiceLimit(f"{MAX_SAVED_VOICES} voices are saved already; delete one first.")

    def _write_new(self, info: VoiceInfo, samples: np.ndarray, rate: int, voice: PromptVoice) -> Path:
        """Write the voice into a hidden folder, then rename it into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.root / f"{_NEW_PREFIX}{info.id}-{uuid.uuid4().hex[:8]}"
        partial.mkdir()
        try:
            sf.write(partial / PROMPT_FILE, samples, rate, subtype="FLOAT")
            try:
                save_features(partial / FEATURES_FILE, voice.features)
            except FeatureCodecError as error:  # still usable: analysed again at the next start
                _LOGGER.warning("Saved voice %s: features not stored (%s)", info.id, error)
                info.engine = ""
            self._write_meta(partial, info, voice.key)
            folder = self.root / info.id
            os.replace(partial, folder)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return folder

    @staticmethod
    def _write_meta(folder: Path, info: VoiceInfo, key: str) -> None:
        meta = {
            "name": info.name,
            "prompt_text": info.prompt_text,
            "created": info.created,
            "duration_s": info.duration_s,
            "engine": info.engine,
            "key": key,
            "features_format": FEATURES_FORMAT,
        }
        partial = folder / f".{META_FILE}.partial"
        with partial.open("w", encoding="utf-8") as handle:
            json.dump(meta, handle, ensure_ascii=False, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, folder / META_FILE)
