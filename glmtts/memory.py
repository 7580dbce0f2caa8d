"""Process memory: resident size, and handing freed heap pages back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import psutil

_MIB = 2**20


def rss_mib(pid: int | None = None, children: bool = False) -> float:
    """Resident size of a process (this one by default), with its children's when asked; 0 for one
    that is gone."""
    try:
        process = psutil.Process(pid)
        processes = [process, *process.children(recursive=True)] if children else [process]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for each in processes:
        try:
            total += each.memory_info().rss
        except psutil.NoSuchProcess:  # a child that just exited
            pass
    return total / _MIB


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
