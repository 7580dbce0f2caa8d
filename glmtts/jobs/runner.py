"""The one way a batch item runs, for both job stores and the CLI: synthesized at BATCH priority,
its files written into the job's folder, its manifest record returned.

An item that fails by itself (an unusable line or prompt, its time limit, an engine error) is a
record with status "error", and the job goes on. A busy device (QueueFull, QueueTimeout) is waited
out. A job cancelled meanwhile stops the item within a segment, unrecorded (`run` returns None). A
write the disk refuses (full, read-only, failing: StorageError) is a `transient` error record: the
store stops the job and never writes that record to the manifest, so `resume` runs the item again
once the disk is fixed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from glmtts.audio import write_wav
from glmtts.captions import write_srt
from glmtts.files import StorageError, storage_writes
from glmtts.jobs.batchfile import BatchItem
from glmtts.pipeline import Pipeline, SynthesisRequest
from glmtts.scheduler import BATCH, QueueFull, QueueTimeout
from glmtts.types import Cancelled, CancelToken, SynthesisError, SynthesisOptions, SynthesisResult, TimeLimitExceeded

_LOGGER = logging.getLogger(__name__)

ITEM_FILE_SUFFIXES = (".wav", ".srt")  # the files an item leaves in its job folder: they and the manifest make the zip
BUSY_RETRY_S = 2.0  # wait before asking the device again when the queue was full
FIX_DISK = "; free space or fix the disk, then resume the job"  # after a StorageError's message


@dataclass
class ItemOutcome:
    """An item that ran: its manifest record, and the synthesis when it succeeded."""

    record: dict[str, object]
    result: SynthesisResult | None = None


def write_item_files(folder: Path, item: BatchItem, result: SynthesisResult) -> list[Path]:
    """Every file of a finished item, each written whole and synced into `folder`, the wav first.

    The wav and its captions (SRT, from the engine's word times); a further file is written here with
    its suffix in ITEM_FILE_SUFFIXES, and reaches the job folder and the zip as the wav does."""
    return [
        write_wav(folder / f"{item.uttid}.wav", result.audio, result.sample_rate),
        write_srt(folder / f"{item.uttid}.srt", result.words),
    ]


def storage_failure(item: BatchItem, error: StorageError) -> dict[str, object]:
    """The record of an item the disk refused: transient (kept out of the manifest, run again by resume)."""
    return {"uttid": item.uttid, "line": item.line, "status": "error", "message": f"{error}{FIX_DISK}", "transient": True}


def stop_message(record: dict[str, object]) -> str:
    """The message of a job a transient record stopped."""
    return f"stopped at item {record['uttid']}: {record['message']}"


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


@dataclass
class ItemRunner:
    """Runs one job's items one at a time into `folder` with the job's options (see the module docstring)."""

    pipeline: Pipeline
    options: SynthesisOptions
    folder: Path
    time_limit_s: float | None = None  # each item's (the request time limit); None: no limit
    cancel: threading.Event = field(default_factory=threading.Event)  # set: the running item stops, unrecorded
    wait_busy: Callable[[float], bool] = _sleep  # waits that long for a busy device; True: stop trying

    def run(self, item: BatchItem, staging: Path | None = None) -> ItemOutcome | None:
        """The item's outcome; None when the job was cancelled or stopped meanwhile.

        `staging`: a folder of this process's own to write into first, each file then renamed into
        `folder` (replicas that run the same item never see each other's unfinished files)."""
        while True:
            try:
                return self._run_once(item, staging)
            except Cancelled:  # the job was cancelled: the item stopped unrecorded, `resume` runs it again
                return None
            except (QueueFull, QueueTimeout) as error:
                _LOGGER.info("Batch item %s waits for the device: %s", item.uttid, error)
                if self.wait_busy(BUSY_RETRY_S):
                    return None

    def _run_once(self, item: BatchItem, staging: Path | None) -> ItemOutcome:
        record: dict[str, object] = {"uttid": item.uttid, "line": item.line, "text": item.syn_text}
        if item.error:
            return ItemOutcome({**record, "status": "error", "message": item.error})
        request = SynthesisRequest(item.syn_text, item.prompt_speech, item.prompt_text, self.options, BATCH)
        try:
            result = self.pipeline.synthesize(request, CancelToken(self.time_limit_s, self.cancel))
            files = write_item_files(staging or self.folder, item, result)
            for path in files if staging is not None else ():
                with storage_writes(path):
                    os.replace(path, self.folder / path.name)  # whole and synced; a rename never leaves half a file
        except (SynthesisError, TimeLimitExceeded) as error:  # the item's own failure (its time limit included)
            return ItemOutcome({**record, "status": "error", "message": str(error)})
        except StorageError as error:
            _LOGGER.error("Batch item %s: %s", item.uttid, error)
            return ItemOutcome(storage_failure(item, error))
        except (QueueFull, QueueTimeout, Cancelled):  # run()'s to handle
            raise
        except Exception as error:  # one broken item must not stop the job
            _LOGGER.exception("Batch item %s failed", item.uttid)
            return ItemOutcome({**record, "status": "error", "message": f"internal error: {type(error).__name__}: {error}"})
        ok = {
            "normalized_text": result.normalized_text,
            "phonemes": result.phoneme_text,
            "rtf": round(result.rtf, 3),
            "sample_rate": result.sample_rate,
            "status": "ok",
            "message": "; ".join(result.notes),
            "duration_s": round(result.duration_s, 2),
            "path": files[0].name,
        }
        return ItemOutcome({**record, **ok}, result)
