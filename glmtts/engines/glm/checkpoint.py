"""The official GLM-TTS checkpoint layout: where each file lives and a cheap check that all are there.

`validate_checkpoint` only tests that files exist and that the small configs parse, so the app can
choose its engine at start-up in milliseconds; the loaders check keys and shapes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from glmtts.engines.glm.errors import CheckpointError

_LOGGER = logging.getLogger(__name__)

LLM_DIR = "llm"
SPEECH_TOKENIZER_DIR = "speech_tokenizer"
TEXT_TOKENIZER_DIR = "vq32k-phoneme-tokenizer"
FLOW_DIR = "flow"
HIFT_FILE = "hift/hift.pt"
VOCOS_FILE = "vocos2d/generator_jit.ckpt"
CAMPPLUS_NAME = "campplus.onnx"
# Where CAM++ is looked for: upstream ships it in the code repository's frontend/, not with the weights.
CAMPPLUS_PLACES = (CAMPPLUS_NAME, f"frontend/{CAMPPLUS_NAME}", f"../frontend/{CAMPPLUS_NAME}")
JSON_CONFIGS = (
    f"{LLM_DIR}/config.json",
    f"{SPEECH_TOKENIZER_DIR}/config.json",
    f"{SPEECH_TOKENIZER_DIR}/preprocessor_config.json",
    f"{TEXT_TOKENIZER_DIR}/tokenizer_config.json",
)
OTHER_FILES = (
    f"{SPEECH_TOKENIZER_DIR}/model.safetensors",
    f"{TEXT_TOKENIZER_DIR}/tokenizer.model",
    f"{FLOW_DIR}/config.yaml",
    f"{FLOW_DIR}/flow.pt",
    HIFT_FILE,
    VOCOS_FILE,
)
LLM_INDEX = f"{LLM_DIR}/model.safetensors.index.json"
LLM_SINGLE = f"{LLM_DIR}/model.safetensors"
_WINDOW = 64 * 1024  # bytes analysis_fingerprint reads at three places of each file


def find_campplus(root: Path) -> Path:
    """The CAM++ ONNX file: root/campplus.onnx, root/frontend/, or the code repo's frontend/ beside root."""
    root = Path(root)
    for relative in CAMPPLUS_PLACES:
        path = root / relative
        if path.is_file():
            return path.resolve()
    raise CheckpointError(
        f"missing {CAMPPLUS_NAME}: looked in " + ", ".join(str(root / relative) for relative in CAMPPLUS_PLACES)
    )


def validate_checkpoint(root: Path) -> None:
    """Raise CheckpointError naming the first missing or unreadable file of the official layout."""
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint root {root} is not a directory")
    for relative in JSON_CONFIGS:
        _read_json(root / relative)
    for relative in OTHER_FILES:
        if not (root / relative).is_file():
            raise CheckpointError(f"missing checkpoint file {root / relative}")
    for shard in _llm_shards(root):
        if not shard.is_file():
            raise CheckpointError(f"missing LLM weight shard {shard}")
    find_campplus(root)


def describe_checkpoint(root: Path) -> dict[str, object]:
    """Facts for the status panel: the root, the LLM shape and each part's size on disk in MiB."""
    root = Path(root)
    llm = _read_json(root / LLM_DIR / "config.json")
    parts = {
        "llm": sum(path.stat().st_size for path in _llm_shards(root)),
        "speech_tokenizer": (root / SPEECH_TOKENIZER_DIR / "model.safetensors").stat().st_size,
        "flow": (root / FLOW_DIR / "flow.pt").stat().st_size,
        "hift": (root / HIFT_FILE).stat().st_size,
        "vocos2d": (root / VOCOS_FILE).stat().st_size,
        "campplus": find_campplus(root).stat().st_size,
    }
    return {
        "checkpoint": str(root),
        "llm_layers": llm.get("num_hidden_layers"),
        "llm_hidden": llm.get("hidden_size"),
        "llm_vocab": llm.get("vocab_size"),
        "disk_mib": {name: round(size / 2**20, 1) for name, size in parts.items()},
    }


def analysis_fingerprint(root: Path) -> str:
    """12 hex digits that change with the parts a prompt's analysis comes from (the text and speech
    tokenizers, CAM++), so analyses kept on disk or with a saved voice are redone for another checkpoint.
    Read in milliseconds, whatever the size: each file's name and size and three 64 KiB windows of it."""
    root = Path(root)
    parts = sorted((root / TEXT_TOKENIZER_DIR).rglob("*")) + sorted((root / SPEECH_TOKENIZER_DIR).rglob("*"))
    digest = hashlib.sha256()
    for path in [*parts, find_campplus(root)]:
        if not path.is_file():
            continue
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as handle:
            for offset in (0, size // 2, max(0, size - _WINDOW)):
                handle.seek(offset)
                digest.update(handle.read(_WINDOW))
    return digest.hexdigest()[:12]


def _llm_shards(root: Path) -> list[Path]:
    index_path = root / LLM_INDEX
    if index_path.is_file():
        weight_map = _read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index_path}: no weight_map")
        return [root / LLM_DIR / name for name in sorted(set(weight_map.values()))]
    if (root / LLM_SINGLE).is_file():
        return [root / LLM_SINGLE]
    raise CheckpointError(f"missing checkpoint file {index_path}")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint file {path}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable JSON ({error})") from error
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return value
