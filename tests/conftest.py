"""Shared fixtures; each test folder is a marker (unit, voices, server)."""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
PROMPTS = TESTS.parent / "examples" / "prompt"


def pytest_collection_modifyitems(items):
    for item in items:
        folder = Path(item.fspath).parent.name
        if folder in ("unit", "voices", "server"):
            item.add_marker(folder)


@pytest.fixture(scope="session")
def prompt_paths() -> dict[str, Path]:
    """The four real LibriSpeech prompt voices shipped in examples/prompt."""
    return {p.stem: p for p in sorted(PROMPTS.glob("*.flac"))}


@pytest.fixture(scope="session")
def embedded_service(tmp_path_factory):
    """The real service on the embedded voices, loaded, warmed and serving once for the session."""
    from glmtts.service import build_service
    from glmtts.settings import Settings

    outputs = tmp_path_factory.mktemp("outputs")
    service = build_service(Settings(device="cpu", outputs=outputs))
    service.load()
    service.warmup()
    service.mark_ready()
    yield service
    service.shutdown()
