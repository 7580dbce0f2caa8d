"""The voice library: every way a prompt becomes a voice the engine can speak in.

It owns the built-in voices (examples/prompt/*, transcripts beside them), the saved voices
(outputs/voices/<id>/), the voice aliases (OpenAI's names, configs/openai_voices.json), the
in-memory cache of analysed prompts, and the analyses kept on disk so that a restart does not
refit them. The UI, the API, batch parsing and warm-up all resolve voices
here, so a voice saved a second ago is usable everywhere at once.

On disk, per saved voice:
    prompt.wav     the prompt as given, decoded to mono float32 at its own rate (cut to 30 s)
    meta.json      name, prompt_text, created, duration_s, engine and analysis version, content key
    features.npz   that engine's analysis (glmtts.feature_codec)
Built-in analyses live in outputs/cache/voices/<engine>-v<analysis version>/<content key>.npz.
Start-up reads only the saved voices' meta.json; an analysis is decoded (or, for another engine
or analysis version, computed again and stored) the first time the voice is used.

Saved voices live in a VoiceStore: DiskVoiceStore (the folders above, the default) or, when
replicas share state, glmtts.cluster.voices.RedisVoiceStore, which every replica reads at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import shutil
import threading
import unicodedata
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf

from glmtts.audio import content_key, prompt_seconds, read_prompt
from glmtts.engine import Engine
from glmtts.feature_codec import UNREADABLE, FeatureCodecError, arrays_to_features, load_features, save_features
from glmtts.files import MadeElsewhere, atomic_output, made_once, storage_error, storage_writes, write_json
from glmtts.frontend import TextFrontend
from glmtts.frontend.process import FrontendProcess
from glmtts.openai_compat import OPENAI_VOICES, VoiceAliases
from glmtts.scheduler import INTERACTIVE, DeviceScheduler
from glmtts.settings import Settings
from glmtts.types import PromptVoice, SynthesisError
from glmtts.voice_file import SUFFIX as VOICE_FILE_SUFFIX
from glmtts.voice_file import pack_voice, unpack_voice

_LOGGER = logging.getLogger(__name__)

PROMPT_FILE = "prompt.wav"
META_FILE = "meta.json"
FEATURES_FILE = "features.npz"
PROMPT_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")
MAX_SAVED_VOICES = 200
MAX_NAME_CHARS = 80
MAX_PROMPT_TEXT_CHARS = 1000
MAX_REMEMBERED_FILES = 256  # built-in prompt files whose content key is remembered
MAX_LISTED_NAMES = 12  # voice names an "unknown voice" message lists
SLUG_CHARS = 32
VOICE_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{8}$")  # slug of the name + hash of name and prompt
_NEW_PREFIX, _TRASH_PREFIX = ".new-", ".trash-"  # hidden folders of a create or delete in progress
STORED, COMPUTED, PENDING = "stored", "computed", "pending"
# Characters a voice name may not hold, by Unicode category: invisible, look-alike or meaningless.
REFUSED_NAME_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "a format character (zero-width or bidirectional control)",
    "Cs": "a surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned character",
}


class VoiceNotFound(LookupError):
    """No voice has this id."""

    def __init__(self, voice_id: str):
        super().__init__(f"No voice {voice_id[:80]!r}.")


class VoiceExists(ValueError):
    """A saved voice with the same name and prompt already exists."""

    def __init__(self, voice_id: str):
        super().__init__(f"The voice {voice_id!r} already exists (same name and prompt).")
        self.voice_id = voice_id


class VoiceNameError(SynthesisError):
    """A voice name that cannot be a name: refused characters, only whitespace, or too long."""

    param = "name"


class VoiceNameTaken(ValueError):
    """The name is reserved (a built-in voice's or an alias's) or another saved voice has it."""

    param = "name"

    @classmethod
    def in_use(cls, name: str, holder: str) -> VoiceNameTaken:
        return cls(f"A voice named {name!r} exists (id {holder}). Choose another name or delete that voice.")


class VoiceLimit(ValueError):
    """The library holds MAX_SAVED_VOICES voices."""


class BuiltinVoice(PermissionError):
    """Built-in voices cannot be deleted."""


@dataclass
class VoiceInfo:
    """A voice as the API shows it. `features` of a saved voice: stored (decoded from disk),
    computed (analysed in this process), pending (analysed or decoded at its first use)."""

    id: str
    name: str
    prompt_text: str
    created: str  # ISO 8601, UTC ("" for built-ins)
    duration_s: float
    engine: str  # the engine whose analysis is stored
    analysis_version: str = ""
    features: str = PENDING
    builtin: bool = False

    def to_json(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "language": prompt_language(self.prompt_text)}


def prompt_language(text: str) -> str:
    """What a transcript is in: "zh", "en", "zh+en", or "" when it shows neither (no transcript)."""
    chinese = any("\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf" for char in text)
    latin = any("a" <= char.lower() <= "z" for char in text)
    return "+".join(language for language, present in (("zh", chinese), ("en", latin)) if present)


@dataclass
class _SavedVoice:
    info: VoiceInfo
    key: str
    voice: PromptVoice | None = None


class VoiceStore(Protocol):
    """Where saved voices live: their registry (VoiceInfo and content key), prompt audio and analysis.

    The library keeps what it decoded in memory; `changes()` tells it when another replica added,
    changed or removed a voice."""

    def load(self) -> dict[str, tuple[VoiceInfo, str]]:
        """Every saved voice: id -> (info with features PENDING, content key)."""

    def changes(self) -> dict[str, tuple[VoiceInfo, str]] | None:
        """Every saved voice when the registry changed since the last load() or changes(), else None."""

    def read_features(self, voice_id: str, device: str) -> object:
        """The stored analysis; raises one of feature_codec.UNREADABLE when it is missing or damaged."""

    def read_prompt(self, voice_id: str) -> tuple[np.ndarray, int]:
        """The prompt audio: [samples] float32 and its rate."""

    def add(self, info: VoiceInfo, key: str, samples: np.ndarray, rate: int, features: object) -> None:
        """Store a new voice whole or not at all; sets info.engine to "" when the analysis cannot be stored.
        Raises VoiceExists or VoiceLimit where another writer got there first."""

    def update_features(self, info: VoiceInfo, key: str, features: object) -> None:
        """Replace the stored analysis (computed again for this engine) and the info naming its engine."""

    def rename(self, info: VoiceInfo, key: str) -> None:
        """Store the voice's new name (`info.name`); raises VoiceNotFound, or VoiceNameTaken where
        another writer took the name first."""

    def remove(self, voice_id: str) -> None:
        """Delete a voice; raises VoiceNotFound."""


class DiskVoiceStore:
    """Saved voices as folders under outputs/voices/<id>/ (prompt.wav, meta.json, features.npz), one process."""

    def __init__(self, root: Path):
        self.root = root

    def load(self) -> dict[str, tuple[VoiceInfo, str]]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a full or read-only disk: serve the built-ins; a save says why it fails
            _LOGGER.warning("Saved voices: %s", storage_error(error, self.root))
            return {}
        for prefix in (_NEW_PREFIX, _TRASH_PREFIX):  # a create or delete cut short by a crash
            for leftover in self.root.glob(f"{prefix}*"):
                shutil.rmtree(leftover, ignore_errors=True)
        saved: dict[str, tuple[VoiceInfo, str]] = {}
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and VOICE_ID.match(folder.name):
                try:
                    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
                    saved[folder.name] = meta_to_info(folder.name, meta)
                except (OSError, ValueError, KeyError, TypeError) as error:  # a damaged folder must not stop the service
                    _LOGGER.warning("Saved voice %s skipped: %s: %s", folder.name, type(error).__name__, error)
        return saved

    def changes(self) -> None:
        return None  # this process is the only writer

    def read_features(self, voice_id: str, device: str) -> object:
        return load_features(self.root / voice_id / FEATURES_FILE, device)

    def read_prompt(self, voice_id: str) -> tuple[np.ndarray, int]:
        return read_prompt(self.root / voice_id / PROMPT_FILE)

    def add(self, info: VoiceInfo, key: str, samples: np.ndarray, rate: int, features: object) -> None:
        """Write the voice into a hidden folder, then rename it into place. Raises StorageError where the disk refuses."""
        partial = self.root / f"{_NEW_PREFIX}{info.id}-{uuid.uuid4().hex[:8]}"
        try:
            with storage_writes(partial):
                partial.mkdir(parents=True)
            encoded = io.BytesIO()  # in memory: soundfile would hide a full disk behind an AssertionError
            sf.write(encoded, samples, rate, format="WAV", subtype="FLOAT")
            with atomic_output(partial / PROMPT_FILE) as handle:
                handle.write(encoded.getbuffer())
            try:
                save_features(partial / FEATURES_FILE, features)
            except FeatureCodecError as error:  # still usable: analysed again at its first use after a restart
                _LOGGER.warning("Saved voice %s: analysis not stored (%s)", info.id, error)
                info.engine = ""
            _write_meta(partial, info, key)
            with storage_writes(self.root / info.id):
                os.replace(partial, self.root / info.id)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise

    def update_features(self, info: VoiceInfo, key: str, features: object) -> None:
        save_features(self.root / info.id / FEATURES_FILE, features)
        _write_meta(self.root / info.id, info, key)

    def rename(self, info: VoiceInfo, key: str) -> None:
        if not (self.root / info.id).is_dir():
            raise VoiceNotFound(info.id)
        _write_meta(self.root / info.id, info, key)

    def remove(self, voice_id: str) -> None:
        trash = self.root / f"{_TRASH_PREFIX}{voice_id}-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(self.root / voice_id, trash)  # gone from the library at once, even if removal is cut short
        except FileNotFoundError as error:
            raise VoiceNotFound(voice_id) from error
        shutil.rmtree(trash, ignore_errors=True)


def meta_to_info(voice_id: str, meta: dict) -> tuple[VoiceInfo, str]:
    """A saved voice's meta (meta.json, or its copy in shared state) -> (info, content key)."""
    info = VoiceInfo(
        id=voice_id,
        name=str(meta["name"]),
        prompt_text=str(meta["prompt_text"]),
        created=str(meta["created"]),
        duration_s=float(meta["duration_s"]),
        engine=str(meta["engine"]),
        analysis_version=str(meta.get("analysis_version", "1")),
    )
    return info, str(meta["key"])


def info_to_meta(info: VoiceInfo, key: str) -> dict[str, object]:
    return {
        "name": info.name,
        "prompt_text": info.prompt_text,
        "created": info.created,
        "duration_s": info.duration_s,
        "engine": info.engine,
        "analysis_version": info.analysis_version,
        "key": key,
    }


def voice_slug(name: str) -> str:
    """Lower-case ASCII letters and digits joined by hyphens; "voice" when nothing is left."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name).strip("-")[:SLUG_CHARS].strip("-") or "voice"


def voice_id(name: str, key: str) -> str:
    """The id of a saved voice: its name's slug plus a hash of the whole name and the prompt's content."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\0" + key.encode("ascii")).hexdigest()
    return f"{voice_slug(name)}-{digest[:8]}"


def normalize_voice_name(name: str) -> str:
    """A requested voice name -> the name stored: NFKC, each run of whitespace one space, trimmed.

    Raises VoiceNameError for a name with a character of REFUSED_NAME_CATEGORIES (its position counts
    from 1 in the name as given), a name of whitespace only, or one over MAX_NAME_CHARS. "" stays ""
    (no name given)."""
    for position, char in enumerate(name, 1):
        kind = REFUSED_NAME_CATEGORIES.get(unicodedata.category(char))
        if kind:
            raise VoiceNameError(
                f"The voice name holds {kind}, U+{ord(char):04X}, at position {position}; names may not hold "
                "control, format, surrogate, private-use or unassigned characters."
            )
    normalized = " ".join(unicodedata.normalize("NFKC", name).split())
    if name and not normalized:
        raise VoiceNameError("The voice name is only whitespace; give a name or none.")
    if len(normalized) > MAX_NAME_CHARS:
        raise VoiceNameError(f"The voice name has {len(normalized)} characters; the limit is {MAX_NAME_CHARS}.")
    return normalized


def name_key(name: str) -> str:
    """What names are compared by: NFKC, case-folded (NFKC again, as casefolding may denormalize), spaces collapsed."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return " ".join(folded.split())


class VoiceLibrary:
    """Resolves prompts (voice names, files, uploads) to analysed voices; saves, lists and deletes voices."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        frontend: TextFrontend | FrontendProcess,
        scheduler: DeviceScheduler,
        device: str,
        store: VoiceStore | None = None,
    ):
        self.root = settings.voices_dir
        self.store: VoiceStore = store or DiskVoiceStore(self.root)
        self.builtin_dir = settings.examples / "prompt"
        self.engine = engine
        self.frontend = frontend
        self.scheduler = scheduler
        self.device = device
        self.cache_size = settings.voice_cache_size
        self._aliases_path = settings.voice_aliases
        self.aliases = VoiceAliases()
        self._analyses = settings.cache_dir / "voices"
        self._builtin: dict[str, Path] = {}
        self._saved: dict[str, _SavedVoice] = {}
        self._named: dict[str, list[str]] = {}  # name_key -> ids of the saved voices of that name, oldest first
        self._recent: OrderedDict[str, PromptVoice] = OrderedDict()  # content key -> voice, least recent first
        self._file_keys: dict[tuple, str] = {}  # a built-in file's (path, size, mtime, transcript) -> content key
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- start
    def load(self) -> None:
        """Find the built-in voices and read the saved voices' meta.json (analyses wait for first use)."""
        if self.builtin_dir.is_dir():
            self._builtin = {
                path.stem: path
                for path in sorted(self.builtin_dir.iterdir())
                if path.is_file() and path.suffix.lower() in PROMPT_EXTENSIONS
            }
        saved = self.store.load()
        with self._lock:
            self._merge(saved)
        self.aliases = VoiceAliases.load(self._aliases_path, self.names())
        self._warn_conflicting_names()
        _LOGGER.info("Voices: %d built-in, %d saved", len(self._builtin), len(self._saved))

    def warm(self) -> None:
        """Analyse every built-in voice, from the analyses on disk where they fit the engine. Processes
        starting together on one cache folder (replicas) share the work: a voice another one is
        analysing is left to it, and read from disk once this one has analysed the rest."""
        elsewhere = []
        for name, path in self._builtin.items():
            try:
                self._prompt_voice(path, _transcript(path), INTERACTIVE, persist=True, wait=False)
            except MadeElsewhere:
                elsewhere.append(name)
        for name in elsewhere:
            self.resolve(name)

    def _merge(self, saved: dict[str, tuple[VoiceInfo, str]]) -> None:
        """Take the store's saved voices, keeping what this process decoded for voices that did not change."""
        merged: dict[str, _SavedVoice] = {}
        for voice_id, (info, key) in saved.items():
            known = self._saved.get(voice_id)
            if known is not None and known.key == key:
                known.info = dataclasses.replace(info, features=known.info.features)  # a rename or refit elsewhere
                merged[voice_id] = known
            else:
                merged[voice_id] = _SavedVoice(info, key)
        self._saved = merged
        self._named = {}
        for info in sorted((entry.info for entry in merged.values()), key=lambda info: (info.created, info.id)):
            self._named.setdefault(name_key(info.name), []).append(info.id)

    def _reserved_names(self) -> dict[str, str]:
        """name_key -> what has the name, for every name a saved voice may not take: built-ins and aliases."""
        reserved = {name_key(alias): "an OpenAI voice name" for alias in OPENAI_VOICES}
        reserved |= {name_key(alias): f"an alias of {target!r}" for alias, target in self.aliases.mapping.items()}
        return reserved | {name_key(name): "a built-in voice" for name in self._builtin}

    def _warn_conflicting_names(self) -> None:
        """Saved voices from before names were checked may share a name or take a reserved one: usable by id only."""
        reserved = self._reserved_names()
        with self._lock:
            for key, ids in self._named.items():
                if key in reserved:
                    _LOGGER.warning("Saved voice(s) %s: the name is %s, which wins; use the id", ", ".join(ids), reserved[key])
                elif len(ids) > 1:
                    _LOGGER.warning("Saved voices %s share one name: each is usable by its id only", ", ".join(ids))

    def _sync(self) -> None:
        """Pick up voices other replicas saved, changed or deleted (nothing to do on local disk)."""
        saved = self.store.changes()
        if saved is not None:
            with self._lock:
                self._merge(saved)

    # ----------------------------------------------------------------- lookups
    def names(self) -> list[str]:
        """Every voice a request may name: the built-in ones, then the saved ones by id."""
        self._sync()
        with self._lock:
            return [*self._builtin, *self._saved]

    def known_names(self) -> list[str]:
        """Every name a request may give: the voices and their aliases."""
        return [*self.names(), *self.aliases.mapping]

    def describe(self) -> list[VoiceInfo]:
        """The built-in voices, then the saved ones (oldest first)."""
        self._sync()
        with self._lock:
            saved = sorted((entry.info for entry in self._saved.values()), key=lambda info: (info.created, info.id))
        return [self._builtin_info(name) for name in self._builtin] + saved

    def listing(self) -> list[tuple[str, str]]:
        """Every name `voice` may take, with a label: (id, name) of the built-in and saved voices, then
        (alias, "alias (target)") of each alias no voice of the same name hides."""
        voices = [(info.id, info.name) for info in self.describe()]
        hidden = {voice_id for voice_id, _ in voices}
        return voices + [(alias, f"{alias} ({target})") for alias, target in self.aliases.mapping.items() if alias not in hidden]

    def get(self, name: str) -> VoiceInfo:
        self._sync()
        with self._lock:
            if name in self._builtin:
                return self._builtin_info(name)
            if name in self._saved:
                return self._saved[name].info
        raise VoiceNotFound(name)

    def _builtin_info(self, name: str) -> VoiceInfo:
        path = self._builtin[name]
        return VoiceInfo(
            name, name, _transcript(path), "", prompt_seconds(path), self.engine.name, self.engine.analysis_version, STORED, True
        )

    def resolve(
        self, prompt: str | Path | bytes | None = None, prompt_text: str = "", priority: int = INTERACTIVE
    ) -> PromptVoice:
        """A voice name (built-in, saved id or saved name), a checked file path, raw audio bytes, or
        None for the default voice -> the analysed voice. Raises SynthesisError for unusable prompts."""
        if prompt is None:
            if not self._builtin:
                raise SynthesisError("Give a prompt voice: no built-in voice is installed.")
            prompt = next(iter(self._builtin))
        if isinstance(prompt, str):
            prompt = self.aliases.resolve(prompt, self.names())
            saved = self._find_saved(prompt)
            if saved is not None:
                return self._saved_voice(saved, priority)
            if prompt not in self._builtin:
                raise SynthesisError(self.unknown_voice_message(prompt))
            prompt = self._builtin[prompt]
            prompt_text = prompt_text.strip() or _transcript(prompt)
            return self._prompt_voice(prompt, prompt_text, priority, persist=True)
        return self._prompt_voice(prompt, prompt_text.strip(), priority, persist=False)

    def unknown_voice_message(self, name: str) -> str:
        names = self.names()
        listed = ", ".join(names[:MAX_LISTED_NAMES]) + (
            f" and {len(names) - MAX_LISTED_NAMES} more" if len(names) > MAX_LISTED_NAMES else ""
        )
        shown = name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS] + "…"
        return f"There is no voice {shown!r}; voices: {listed or 'none'}."

    def _find_saved(self, name: str) -> _SavedVoice | None:
        """A saved voice by id, else by name (compared by name_key) unless a built-in or alias has the name."""
        self._sync()
        key = name_key(name)
        with self._lock:
            if name in self._saved:
                return self._saved[name]
            ids = [] if key in self._reserved_names() else self._named.get(key, [])
            if len(ids) > 1:
                raise SynthesisError(
                    f"{len(ids)} saved voices are named {name[:MAX_NAME_CHARS]!r} ({', '.join(ids)}); give one's id."
                )
            return self._saved[ids[0]] if ids else None

    # ----------------------------------------------------------------- analysis
    def _analyse(self, audio: np.ndarray, rate: int, prompt_text: str, key: str, priority: int) -> PromptVoice:
        """Engine analysis on the device; the transcript is normalized the way target text is."""
        try:
            segments = self.frontend.text_to_segments(prompt_text) if prompt_text else []
        except SynthesisError:  # nothing speakable in the transcript: treat it as absent
            segments = []
        with self.scheduler.slot(priority):
            return self.engine.prepare_voice(audio, rate, " ".join(s.text for s in segments), key)

    def _prompt_voice(
        self, prompt: Path | bytes, prompt_text: str, priority: int, persist: bool, wait: bool = True
    ) -> PromptVoice:
        """A prompt file or upload: from the in-memory cache, the analyses on disk (`persist`), or analysed now.

        A built-in file unchanged since it was last read (same size and mtime) is not decoded and hashed
        again: its content key is remembered (the largest cost of a warm request outside the engine).
        An analysis kept on disk is made once by the processes sharing the folder: while another one
        makes it, this one waits for it, or raises MadeElsewhere without `wait`."""
        stamp = _file_stamp(prompt, prompt_text) if persist else None
        cached = self._cached(self._file_keys.get(stamp)) if stamp else None
        if cached is not None:
            return cached
        try:
            audio, rate = read_prompt(prompt)
        except OSError as error:
            raise SynthesisError(f"The prompt file could not be read ({type(error).__name__}).") from error
        key = self._analysis_key(audio, prompt_text)
        if stamp:
            if len(self._file_keys) >= MAX_REMEMBERED_FILES:  # transcripts come from requests: keep it bounded
                self._file_keys.clear()
            self._file_keys[stamp] = key
        cached = self._cached(key)
        if cached is not None:
            return cached
        if persist:
            stored = self._stored_path(key)

            def analyse_and_store() -> PromptVoice:
                made = self._analyse(audio, rate, prompt_text, key, priority)
                self._store_analysis(stored, made)
                return made

            voice = made_once(stored, lambda: self._load_analysis(stored), analyse_and_store, wait)
        else:  # two requests with the same new prompt may both analyse it; the results are equal
            voice = self._analyse(audio, rate, prompt_text, key, priority)
        with self._lock:
            self._recent[key] = voice
            while len(self._recent) > self.cache_size:
                self._recent.popitem(last=False)
        return voice

    def _analysis_key(self, audio: np.ndarray, prompt_text: str) -> str:
        """The key analyses are kept under: the content key, of the audio alone where the engine's
        analysis ignores the transcript (so a prompt under another transcript is not analysed again)."""
        return content_key(audio, prompt_text if self.engine.analysis_reads_text else "")

    def _stored_path(self, analysis_key: str) -> Path:
        return self._analyses / f"{self.engine.name}-v{self.engine.analysis_version}" / f"{analysis_key}.npz"

    def _known_analysis(self, audio: np.ndarray, prompt_text: str, key: str) -> PromptVoice | None:
        """The analysis a new saved voice (content `key`) can take over: the one already made of its prompt,
        in memory or kept on disk for a built-in voice, where the engine would analyse it the same."""
        analysis_key = self._analysis_key(audio, prompt_text)
        known = self._cached(analysis_key) or self._load_analysis(self._stored_path(analysis_key))
        return None if known is None else dataclasses.replace(known, key=key, prompt_text=prompt_text)

    def _cached(self, key: str | None) -> PromptVoice | None:
        """The analysed prompt of this content key from the in-memory cache (now the most recent), or None."""
        with self._lock:
            if key not in self._recent:
                return None
            self._recent.move_to_end(key)
            return self._recent[key]

    def _saved_voice(self, saved: _SavedVoice, priority: int) -> PromptVoice:
        if saved.voice is not None:
            return saved.voice
        info = saved.info
        voice = None
        if (info.engine, info.analysis_version) == (self.engine.name, self.engine.analysis_version):
            try:
                voice = PromptVoice(saved.key, info.prompt_text, self.store.read_features(info.id, self.device), info.duration_s)
                info.features = STORED
            except UNREADABLE as error:
                _LOGGER.warning("Saved voice %s: stored analysis unusable (%s); analysing it again", info.id, error)
        if voice is None:
            audio, rate = self.store.read_prompt(info.id)
            voice = self._analyse(audio, rate, info.prompt_text, saved.key, priority)
            info.features, info.engine, info.analysis_version = COMPUTED, self.engine.name, self.engine.analysis_version
            try:
                self.store.update_features(info, saved.key, voice.features)
            except (OSError, FeatureCodecError) as error:
                _LOGGER.warning("Saved voice %s: analysis kept in memory only (%s)", info.id, error)
        with self._lock:
            saved.voice = saved.voice or voice
        return saved.voice

    def _load_analysis(self, path: Path) -> PromptVoice | None:
        if not path.is_file():
            return None
        try:
            voice = load_features(path, self.device)
        except UNREADABLE as error:
            _LOGGER.warning("Stored analysis %s unusable (%s); analysing again", path.name, error)
            return None
        return voice if isinstance(voice, PromptVoice) else None

    @staticmethod
    def _store_analysis(path: Path, voice: PromptVoice) -> None:
        try:
            save_features(path, voice)
        except (OSError, FeatureCodecError) as error:
            _LOGGER.warning("Analysis of %s kept in memory only (%s)", voice.key[:8], error)

    def clear_cache(self) -> None:
        """Forget analysed uploads (built-ins come back from disk; saved voices stay resident)."""
        with self._lock:
            self._recent.clear()

    @property
    def cached(self) -> int:
        return len(self._recent)

    @property
    def saved_count(self) -> int:
        self._sync()
        return len(self._saved)

    # ----------------------------------------------------------------- saved voices
    def create(self, audio: bytes, prompt_text: str, name: str) -> VoiceInfo:
        """Check and analyse a prompt, then save it; raises SynthesisError for unusable input."""
        name, prompt_text = normalize_voice_name(name), _checked_prompt_text(prompt_text)
        samples, rate = read_prompt(audio)  # [samples] float32 at the file's rate
        key = content_key(samples, prompt_text)
        new_id = voice_id(name, key)
        self._sync()
        self._check_free(new_id, name or new_id)
        voice = self._known_analysis(samples, prompt_text, key) or self._analyse(samples, rate, prompt_text, key, INTERACTIVE)
        return self._add(new_id, name or new_id, prompt_text, samples, rate, voice)

    def import_voice(self, data: bytes, name: str = "") -> VoiceInfo:
        """Save a voice from a voice file (glmtts.voice_file), under `name` or the name it was exported
        with. The file's analysis is used where this engine and analysis version made it; otherwise,
        or when it does not decode, the prompt is analysed again."""
        exported = unpack_voice(data)
        name = normalize_voice_name(name or exported.name)
        prompt_text = _checked_prompt_text(exported.prompt_text)
        samples, rate = read_prompt(exported.prompt)
        key = content_key(samples, prompt_text)
        new_id = voice_id(name, key)
        self._sync()
        self._check_free(new_id, name or new_id)
        voice = None
        if exported.features is not None and (exported.engine, exported.analysis_version) == self._analysis_kind:
            try:
                features = arrays_to_features(exported.features, self.device)
                voice = PromptVoice(key, prompt_text, features, round(len(samples) / rate, 3))
            except UNREADABLE as error:
                _LOGGER.warning("Imported voice %s: its analysis does not decode (%s); analysing again", new_id, error)
        voice = (
            voice
            or self._known_analysis(samples, prompt_text, key)
            or self._analyse(samples, rate, prompt_text, key, INTERACTIVE)
        )
        return self._add(new_id, name or new_id, prompt_text, samples, rate, voice)

    def _add(self, new_id: str, name: str, prompt_text: str, samples: np.ndarray, rate: int, voice: PromptVoice) -> VoiceInfo:
        info = VoiceInfo(
            id=new_id,
            name=name,
            prompt_text=prompt_text,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            duration_s=round(len(samples) / rate, 3),
            engine=self.engine.name,
            analysis_version=self.engine.analysis_version,
            features=COMPUTED,
        )
        with self._lock:  # checked and added under one lock: of two saves of one name, one wins
            self._sync()
            self._check_free(new_id, info.name)
            self.store.add(info, voice.key, samples, rate, voice.features)
            self._saved[new_id] = _SavedVoice(info, voice.key, voice)
            self._named.setdefault(name_key(info.name), []).append(new_id)
        _LOGGER.info("Saved voice %s (%.1f s prompt)", new_id, info.duration_s)
        return info

    def export(self, name: str) -> tuple[str, bytes]:
        """A voice (built-in or saved) as one file: (a file name for it, the bytes of glmtts.voice_file)."""
        info = self.get(name)
        samples, rate = self.prompt_audio(info.id)
        features = self.resolve(info.id).features
        meta = {field: getattr(info, field) for field in ("name", "prompt_text", "created", "engine", "analysis_version")}
        meta["engine"], meta["analysis_version"] = self._analysis_kind  # resolve() analysed it for this engine
        try:
            data = pack_voice(meta, samples, rate, features)
        except FeatureCodecError as error:  # still a voice: the importer analyses the prompt
            _LOGGER.warning("Voice %s exported without its analysis (%s)", info.id, error)
            data = pack_voice(meta, samples, rate, None)
        return f"{voice_slug(info.name)}{VOICE_FILE_SUFFIX}", data

    def prompt_audio(self, name: str) -> tuple[np.ndarray, int]:
        """A voice's prompt as stored: [samples] float32 and its rate (what the Voices tab plays)."""
        self._sync()
        with self._lock:
            builtin, saved = self._builtin.get(name), name in self._saved
        if builtin is not None:
            return read_prompt(builtin)
        if saved:
            return self.store.read_prompt(name)
        raise VoiceNotFound(name)

    def rename(self, name: str, new_name: str) -> VoiceInfo:
        """Give a saved voice another name (its id stays); the same rules as a new voice's name."""
        new_name = normalize_voice_name(new_name)
        if not new_name:
            raise VoiceNameError("Give the new name.")
        with self._lock:
            self._sync()
            if name in self._builtin:
                raise BuiltinVoice(f"{name!r} is a built-in voice and cannot be renamed.")
            saved = self._saved.get(name)
            if saved is None:
                raise VoiceNotFound(name)
            old_key, new_key = name_key(saved.info.name), name_key(new_name)
            if new_key != old_key:
                self._check_name(new_name)
            renamed = dataclasses.replace(saved.info, name=new_name)
            self.store.rename(renamed, saved.key)
            saved.info = renamed
            self._named[old_key].remove(name)
            self._named.setdefault(new_key, []).append(name)
        _LOGGER.info("Renamed saved voice %s", name)
        return renamed

    def delete(self, name: str) -> None:
        self._sync()
        with self._lock:
            if name in self._builtin:
                raise BuiltinVoice(f"{name!r} is a built-in voice and cannot be deleted.")
            if name not in self._saved:
                raise VoiceNotFound(name)
            self.store.remove(name)
            info = self._saved.pop(name).info
            self._named[name_key(info.name)].remove(name)
        _LOGGER.info("Deleted saved voice %s", name)

    @property
    def _analysis_kind(self) -> tuple[str, str]:
        return self.engine.name, self.engine.analysis_version

    def _check_free(self, new_id: str, name: str) -> None:
        """Raises VoiceExists, VoiceNameTaken (a reserved name, or another voice's name or id) or VoiceLimit."""
        if new_id in self._saved:
            raise VoiceExists(new_id)
        self._check_name(name)
        if len(self._saved) >= MAX_SAVED_VOICES:
            raise VoiceLimit(f"{MAX_SAVED_VOICES} voices are saved already; delete one first.")

    def _check_name(self, name: str) -> None:
        """Raises VoiceNameTaken for a reserved name or another saved voice's name or id."""
        key = name_key(name)
        reserved = self._reserved_names().get(key)
        if reserved:
            raise VoiceNameTaken(f"The name {name!r} is reserved: it is {reserved}. Choose another name.")
        holders = self._named.get(key) or ([key] if key in self._saved else [])
        if holders:
            raise VoiceNameTaken.in_use(name, holders[0])


def _checked_prompt_text(prompt_text: str) -> str:
    prompt_text = prompt_text.strip()
    if any(unicodedata.category(c) == "Cc" for c in prompt_text.replace("\n", " ")):
        raise SynthesisError("The prompt text must not hold control characters.")
    if len(prompt_text) > MAX_PROMPT_TEXT_CHARS:
        raise SynthesisError(f"The prompt text has {len(prompt_text)} characters; the limit is {MAX_PROMPT_TEXT_CHARS}.")
    return prompt_text


def _file_stamp(prompt: Path | bytes, prompt_text: str) -> tuple | None:
    """What tells a prompt file unchanged: its path, size, mtime and the transcript used with it."""
    if isinstance(prompt, bytes):
        return None
    try:
        stat = Path(prompt).stat()
    except OSError:
        return None  # read_prompt says why
    return (str(prompt), stat.st_size, stat.st_mtime_ns, prompt_text)


def _transcript(path: Path) -> str:
    """A built-in voice's transcript, shipped beside it as <name>.txt."""
    transcript = path.with_suffix(".txt")
    return transcript.read_text(encoding="utf-8").strip() if transcript.is_file() else ""


def _write_meta(folder: Path, info: VoiceInfo, key: str) -> None:
    write_json(folder / META_FILE, info_to_meta(info, key))
