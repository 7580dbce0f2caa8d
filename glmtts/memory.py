"""Process memory: resident size, and handing freed heap pages back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import psutil

_MIB = 2**20


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / _MIB


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def trim() -> None:
    """Return free heap memory to the system (glibc keeps freed pages of big requests otherwise)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
