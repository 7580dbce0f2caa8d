"""Durable file writes: the one way this service replaces a file (a crash leaves the old file or the new one)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A hidden temporary path beside `path` for a writer that takes a path: synced and renamed into
    place when the block ends, removed if it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")  # unique: replicas may share the folder
    try:
        yield partial
        fsync_file(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_output(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Write `path` through a hidden temporary file beside it, synced, then renamed into place."""
    encoding = None if "b" in mode else "utf-8"
    with atomic_path(path) as partial, open(partial, mode, encoding=encoding) as handle:
        yield handle


def write_json(path: Path, value: object) -> None:
    """Replace a JSON file atomically and durably."""
    with atomic_output(path, "w") as handle:
        json.dump(value, handle, ensure_ascii=False, indent=1)


def fsync_file(path: Path) -> None:
    """Force a file already written to disk (batch wavs before their manifest line)."""
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
