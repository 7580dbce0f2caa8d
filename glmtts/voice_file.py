"""A saved voice as one file, to take it to another machine: a zip of three members.

    voice.json     {"format": "glmtts-voice", "version": 1, name, prompt_text, created, duration_s,
                    engine, analysis_version}
    prompt.wav     the prompt as saved (mono float32 at its own rate)
    features.npz   the analysis for `engine` at `analysis_version` (glmtts.feature_codec arrays, no
                   pickle); absent when it could not be stored

Reading trusts nothing in the file: only these members, each read to at most its own limit
whatever the zip's directory claims, the JSON's fields checked by type and length. The importer
checks the prompt and the name as any new voice's, and uses the analysis only where it was made
by the engine and analysis version that read it.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from glmtts.audio import PROMPT_MAX_BYTES
from glmtts.feature_codec import features_to_arrays
from glmtts.types import SynthesisError

FORMAT, VERSION = "glmtts-voice", 1
SUFFIX = ".voice.zip"
META_MEMBER, PROMPT_MEMBER, FEATURES_MEMBER = "voice.json", "prompt.wav", "features.npz"
MEMBER_LIMITS = {META_MEMBER: 64 * 1024, PROMPT_MEMBER: PROMPT_MAX_BYTES, FEATURES_MEMBER: 32 * 1024 * 1024}
ARRAYS_LIMIT = 128 * 1024 * 1024  # the analysis' arrays once decompressed
MAX_FILE_BYTES = sum(MEMBER_LIMITS.values()) + 64 * 1024  # the members and the zip's own records
_TEXT_FIELDS = ("name", "prompt_text", "created", "engine", "analysis_version")


class VoiceFileError(SynthesisError):
    """The file is not a voice exported by this service, or it is damaged."""

    param = "file"


@dataclass
class VoiceFile:
    """What a voice file holds, checked for shape (the prompt is decoded by the importer)."""

    name: str
    prompt_text: str
    created: str
    engine: str
    analysis_version: str
    prompt: bytes  # a wav file
    features: dict[str, np.ndarray] | None  # the codec's arrays, None when absent


def pack_voice(meta: dict[str, object], samples: np.ndarray, rate: int, features: object | None) -> bytes:
    """A voice (its meta, prompt samples and analysis, or None) -> the bytes of a voice file."""
    prompt = io.BytesIO()
    sf.write(prompt, samples, rate, format="WAV", subtype="FLOAT")
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(META_MEMBER, json.dumps({"format": FORMAT, "version": VERSION, **meta}, ensure_ascii=False, indent=1))
        archive.writestr(PROMPT_MEMBER, prompt.getvalue())
        if features is not None:
            arrays = io.BytesIO()
            np.savez(arrays, **features_to_arrays(features))
            archive.writestr(FEATURES_MEMBER, arrays.getvalue())
    return packed.getvalue()


def unpack_voice(data: bytes) -> VoiceFile:
    """The bytes of a voice file -> its contents; raises VoiceFileError for anything else."""
    if len(data) > MAX_FILE_BYTES:
        raise VoiceFileError(f"A voice file is at most {MAX_FILE_BYTES // 2**20} MB; this one is larger.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {info.filename for info in archive.infolist()}
            if unknown := members - set(MEMBER_LIMITS):
                raise VoiceFileError(f"Not a voice file: it holds {min(unknown)[:40]!r}.")
            if missing := {META_MEMBER, PROMPT_MEMBER} - members:
                raise VoiceFileError(f"Not a voice file: {min(missing)} is missing.")
            read = {name: _read_member(archive, name) for name in members}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError) as error:
        raise VoiceFileError(f"Not a voice file ({type(error).__name__}: a zip made by the voice export).") from error
    meta = _read_meta(read[META_MEMBER])
    features = _read_arrays(read[FEATURES_MEMBER]) if FEATURES_MEMBER in read else None
    return VoiceFile(**{field: meta[field] for field in _TEXT_FIELDS}, prompt=read[PROMPT_MEMBER], features=features)


def _read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes, read to one byte past its limit, so a forged size in the directory changes nothing."""
    limit = MEMBER_LIMITS[name]
    with archive.open(name) as member:
        content = member.read(limit + 1)
    if len(content) > limit:
        raise VoiceFileError(f"{name} in the voice file is larger than {limit // 1024} KiB.")
    return content


def _read_meta(raw: bytes) -> dict[str, str]:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise VoiceFileError(f"{META_MEMBER} in the voice file is not JSON.") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise VoiceFileError(f"Not a voice file: {META_MEMBER} does not name the format {FORMAT!r}.")
    if meta.get("version") != VERSION:
        raise VoiceFileError(f"A voice file of version {meta.get('version')!r}; this service reads version {VERSION}.")
    for field in _TEXT_FIELDS:
        if not isinstance(meta.get(field, ""), str):
            raise VoiceFileError(f"{META_MEMBER}: {field} must be text.")
    return {field: meta.get(field, "") for field in _TEXT_FIELDS}


def _read_arrays(raw: bytes) -> dict[str, np.ndarray] | None:
    """The analysis' arrays (an .npz is a zip of .npy files, each read within what is left of
    ARRAYS_LIMIT), or None when they do not load: the prompt is then analysed again."""
    arrays, budget = {}, ARRAYS_LIMIT
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    content = member.read(budget + 1)
                budget -= len(content)
                if budget < 0 or not info.filename.endswith(".npy"):
                    return None
                arrays[info.filename.removesuffix(".npy")] = np.lib.format.read_array(io.BytesIO(content), allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError):
        return None
    return arrays
