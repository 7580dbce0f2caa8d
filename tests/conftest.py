"""Shared fixtures; each test folder is a marker (unit, voices, server)."""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
PROMPTS = TESTS.parent / "examples" / "prompt"


FOLDERS = ("server", "voices", "unit")  # the run's order: the files with the longest set-ups first, so
# pytest-xdist's workers (.ci/run) end together on the many short unit tests


def pytest_collection_modifyitems(items):
    for item in items:
        folder = Path(item.fspath).parent.name
        if folder in FOLDERS:
            item.add_marker(folder)
    items.sort(key=lambda item: FOLDERS.index(folder) if (folder := Path(item.fspath).parent.name) in FOLDERS else len(FOLDERS))


@pytest.fixture(scope="session")
def prompt_paths() -> dict[str, Path]:
    """The four real LibriSpeech prompt voices shipped in examples/prompt."""
    return {p.stem: p for p in sorted(PROMPTS.glob("*.flac"))}


@pytest.fixture(scope="session", autouse=True)
def shared_cache(tmp_path_factory) -> Iterator[Path]:
    """One cache folder (GLMTTS_CACHE: voice analyses, jieba's dictionary, optimized graphs) for every
    service and app the session starts, as replicas may share one: the built-in voices are fitted once,
    not once per app (nor per pytest-xdist worker). A test about the cache itself gives its own."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    cache = root / "shared-cache"
    cache.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GLMTTS_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def embedded_service(tmp_path_factory, shared_cache):
    """The real service on the embedded voices, loaded, warmed and serving once for the session."""
    from glmtts.service import build_service
    from glmtts.settings import Settings

    outputs = tmp_path_factory.mktemp("outputs")
    service = build_service(Settings(device="cpu", outputs=outputs, cache=shared_cache))
    service.load()
    service.warmup()
    service.mark_ready()
    yield service
    service.shutdown()
