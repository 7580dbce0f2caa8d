"""Read a torch checkpoint in the legacy (pre-1.6, non-zip) format into numpy arrays, without torch.

Importing torch costs seconds of start-up; the speaker encoder's bundled weights are in this format.
Only float tensors in an ordered dict are accepted, any other global is refused (as torch's
`weights_only` loading does), and every tensor must lie inside its storage.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

# torch's legacy (pre-1.6, non-zip) checkpoint format: pickles of a magic number, the protocol
# version, system info, the object (tensors name their storages by key), the storage keys; then per
# key an 8-byte element count and the raw data.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


_STORAGE_TYPES = {"FloatStorage": _StorageType(np.dtype("<f4"))}


@dataclass
class _Storage:
    """A storage named in the object pickle; its data follow the pickles."""

    key: str
    dtype: np.dtype
    size: int  # elements
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorView:
    """What torch's `_rebuild_tensor_v2` would make a tensor of: a strided view of a storage."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements

    @classmethod
    def rebuild(cls, storage: object, offset: object, shape: object, strides: object, *_: object) -> _TensorView:
        """Stands in for `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`."""
        if not (
            isinstance(storage, _Storage)
            and isinstance(shape, tuple)
            and isinstance(strides, tuple)
            and len(shape) == len(strides)
            and all(type(n) is int and n >= 0 for n in (offset, *shape, *strides))
        ):
            raise pickle.UnpicklingError("malformed tensor in the weights file")
        return cls(storage, offset, shape, strides)

    def to_array(self) -> np.ndarray:
        """A contiguous copy of the view, which must lie inside its storage's data."""
        data = self.storage.data
        last = self.offset + sum((n - 1) * stride for n, stride in zip(self.shape, self.strides))
        if data is None or (math.prod(self.shape) > 0 and last >= len(data)):
            raise ValueError(f"tensor outside its storage {self.storage.key} in the weights file")
        strides = tuple(stride * data.itemsize for stride in self.strides)
        return np.lib.stride_tricks.as_strided(data[self.offset :], self.shape, strides, writeable=False).copy()


class _LegacyUnpickler(pickle.Unpickler):
    """Unpickles with numpy stand-ins for torch's tensors, refusing any other global (like weights_only)."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _TensorView.rebuild
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid: object) -> _Storage:
        kind, storage_type, key, _location, size, view = pid if isinstance(pid, tuple) and len(pid) == 6 else (None,) * 6
        if kind != "storage" or not isinstance(storage_type, _StorageType) or type(size) is not int or view is not None:
            raise pickle.UnpicklingError(f"unsupported storage {pid!r} in the weights file")
        storage = self._storages.setdefault(key, _Storage(key, storage_type.dtype, size))
        if (storage.dtype, storage.size) != (storage_type.dtype, size):
            raise pickle.UnpicklingError(f"storage {key} is named with two types or sizes")
        return storage


def _read_exactly(handle: BinaryIO, n_bytes: int) -> bytes:
    data = handle.read(n_bytes)
    if len(data) != n_bytes:
        raise ValueError("the weights file is truncated")
    return data


def read_legacy_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """The `model_state` of a torch checkpoint in the legacy format, as numpy arrays, without torch."""
    storages: dict[str, _Storage] = {}
    with path.open("rb") as handle:
        magic, protocol, sys_info = (_LegacyUnpickler(handle, storages).load() for _ in range(3))
        if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL or not sys_info.get("little_endian"):
            raise ValueError(f"{path} is not a little-endian torch checkpoint in the legacy format")
        model_state = _LegacyUnpickler(handle, storages).load()["model_state"]
        if not all(isinstance(view, _TensorView) for view in model_state.values()):
            raise ValueError(f"{path}: model_state holds more than tensors")
        wanted = {view.storage.key for view in model_state.values()}
        for key in _LegacyUnpickler(handle, storages).load():
            storage = storages[key]
            if int.from_bytes(_read_exactly(handle, 8), "little") != storage.size:
                raise ValueError(f"{path}: storage {key} has the wrong size")
            n_bytes = storage.size * storage.dtype.itemsize
            if key in wanted:
                storage.data = np.frombuffer(_read_exactly(handle, n_bytes), storage.dtype)
            else:
                handle.seek(n_bytes, io.SEEK_CUR)
    return {name: view.to_array() for name, view in model_state.items()}
