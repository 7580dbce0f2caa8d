"""Engine analyses (features) stored as plain arrays: a small codec without pickle.

The codec turns a features object (dataclasses, numpy arrays, torch tensors, numbers, strings,
lists, tuples, dicts) into a flat dict of arrays plus a JSON schema stored beside them, and back.
Decoding only rebuilds dataclasses defined in FEATURE_MODULES.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from glmtts.files import atomic_output

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
UNREADABLE = (OSError, EOFError, ValueError, KeyError, TypeError, RuntimeError, ImportError, zipfile.BadZipFile)


class FeatureCodecError(ValueError):
    """A features object holds something the codec does not store, or a file does not decode."""


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
    """Write a features file atomically."""
    arrays = features_to_arrays(features)
    with atomic_output(path) as handle:
        np.savez(handle, **arrays)


def load_features(path: Path, device: str = "cpu") -> object:
    with np.load(path, allow_pickle=False) as stored:
        return arrays_to_features({name: stored[name] for name in stored.files}, device)
