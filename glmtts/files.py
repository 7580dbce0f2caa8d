"""Durable file writes and JSON lines: the one way this service replaces a file (a crash leaves the old
file or the new one), names a failed write (full, read-only or failing disk), writes and reads JSON
lines (a line ends at "\\n" and nowhere else), and locks a file's making between processes."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

# Why a write failed, said the way a person fixing the machine reads it.
_FAULTS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "no permission",
    errno.EPERM: "no permission",
    errno.EIO: "the device failed (input/output error)",
}
MAKING_POLL_S = 0.05
MAKING_WAIT_S = 120.0  # the longest another process's making is waited for; then it is made here too
# The characters str.splitlines() (and JavaScript, and some editors) end a line at which
# json.dumps(ensure_ascii=False) leaves raw: it escapes every other one (\n \r \v \f \x1c-\x1e are
# control characters below U+0020). A JSON string may carry each as a \\uXXXX escape.
_RAW_LINE_BREAKS = re.compile("[\x85\u2028\u2029]")


class StorageError(OSError):
    """A file could not be written for a reason outside the request (a full, read-only or failing disk,
    permissions): the message names the reason and the file; retrying once it is fixed can succeed."""

    def __init__(self, code: int | None, message: str):
        super().__init__(code, message)

    def __str__(self) -> str:
        return self.strerror


def storage_error(error: OSError, path: Path | str) -> StorageError:
    """`error` raised while writing `path`, as a StorageError that says why (and keeps its errno)."""
    if isinstance(error, StorageError):
        return error
    reason = _FAULTS.get(error.errno or 0) or error.strerror or type(error).__name__
    return StorageError(error.errno, f"{reason} while writing {Path(path).name}")


@contextmanager
def storage_writes(path: Path | str) -> Iterator[None]:
    """Turn an OSError raised in the block into a StorageError naming `path`."""
    try:
        yield
    except OSError as error:
        raise storage_error(error, path) from error


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A hidden temporary path beside `path` for a writer that takes a path: synced and renamed into
    place when the block ends, removed if it fails. Raises StorageError when the disk refuses."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")  # unique: replicas may share the folder
    try:
        with storage_writes(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield partial
            fsync_file(partial)
            os.replace(partial, path)
    except BaseException:
        with suppress(OSError):  # a read-only disk refuses this too; the error raised says why
            partial.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_output(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Write `path` through a hidden temporary file beside it, synced, then renamed into place."""
    encoding = None if "b" in mode else "utf-8"
    with atomic_path(path) as partial, open(partial, mode, encoding=encoding) as handle:
        yield handle


class MadeElsewhere(Exception):
    """Another process (or thread) is making the file now; raised by `making(path, wait=False)`."""


@contextmanager
def making(path: Path, wait: bool = True) -> Iterator[None]:
    """Hold the lock on making `path` (an flock on a `.lock` file beside it) for the block, so that
    processes sharing a folder make each file once: the others wait, then find it made. Without
    `wait`, raises MadeElsewhere where the lock is held. A folder that cannot hold the lock file, or a
    holder that takes longer than MAKING_WAIT_S, leaves the block to run unlocked (work done twice,
    nothing lost); a holder that dies releases the lock with its process."""
    descriptor = _lock_making(path, wait)
    try:
        yield
    finally:
        if descriptor is not None:
            os.close(descriptor)


def made_once(path: Path, find: Callable[[], T | None], make: Callable[[], T], wait: bool = True) -> T:
    """What `find` finds of `path`, else what `make` returns, made under `making(path, wait)`: a process
    that waited for another one's making finds its result and makes nothing."""
    found = find()
    if found is not None:
        return found
    with making(path, wait):
        found = find()
        return make() if found is None else found


def _lock_making(path: Path, wait: bool) -> int | None:
    """The locked descriptor of `path`'s lock file, or None to go on unlocked (see `making`)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    deadline = time.monotonic() + MAKING_WAIT_S
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return descriptor
        except BlockingIOError:
            if wait and time.monotonic() < deadline:
                time.sleep(MAKING_POLL_S)
                continue
            os.close(descriptor)
            if not wait:
                raise MadeElsewhere(path.name) from None
            return None
        except OSError:  # a file system without locks
            os.close(descriptor)
            return None


def write_json(path: Path, value: object) -> None:
    """Replace a JSON file atomically and durably."""
    with atomic_output(path, "w") as handle:
        json.dump(value, handle, ensure_ascii=False, indent=1)


def fsync_file(path: Path) -> None:
    """Force a file already written to disk (batch wavs before their manifest line)."""
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def dumps_line(record: object) -> str:
    """`record` as one JSON line (without its "\\n"): readable UTF-8, with every character that any
    reader could take for a line break escaped."""
    return _RAW_LINE_BREAKS.sub(lambda match: f"\\u{ord(match.group()):04x}", json.dumps(record, ensure_ascii=False))


def split_lines(text: str | bytes) -> list[str]:
    """The lines of a JSON-lines text: split at "\\n" only (a "\\r" before it dropped), never inside a
    line at U+2028 and the like; a final "\\n" ends the last line. Bytes are read as UTF-8."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]
