"""The WebUI in a real headless Chromium: generate speech, then run a batch to a downloaded zip."""

import io
import json
import shutil
import zipfile
from urllib.parse import urljoin

import httpx
import pytest
import soundfile as sf

from .conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
UI_TIMEOUT_MS = 240_000

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def page(app_server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            accept_downloads=True,
        )
        page = browser.new_page()
        open_page(page, app_server.url)
        yield page
        browser.close()


def open_page(page, url: str) -> None:
    """Load the UI and wait for its first text box (never for network idle: the page polls)."""
    page.goto(url)
    page.locator("#single-text textarea").wait_for(state="visible", timeout=UI_TIMEOUT_MS)


def fetch(app_server, href: str) -> bytes:
    response = httpx.get(urljoin(app_server.url + "/", href), timeout=60)
    response.raise_for_status()
    return response.content


def test_generate_plays_audio(page, app_server):
    page.locator("#single-text textarea").fill("Hello from the browser test. 你好，浏览器。")
    page.locator("#single-generate").click()
    page.locator("#single-status").get_by_text("Done").wait_for(timeout=UI_TIMEOUT_MS)
    download = page.locator("#single-output a[data-testid=download-link]")
    download.wait_for(state="attached", timeout=UI_TIMEOUT_MS)
    samples, rate = sf.read(io.BytesIO(fetch(app_server, download.get_attribute("href"))))
    assert rate == 24000 and len(samples) / rate > 1.5
    player = page.locator("#single-output audio[src]").first  # locators pierce the player's shadow DOM
    playable = player.evaluate(
        """async (el) => {
            el.muted = true;
            if (el.readyState < 1) await new Promise(r => el.addEventListener('loadedmetadata', r, {once: true}));
            return {duration: el.duration, error: el.error && el.error.code};
        }"""
    )
    assert playable["error"] is None and playable["duration"] > 1.5


def test_batch_runs_to_a_zip(page, app_server, tmp_path):
    lines = [
        {
            "uttid": "en",
            "prompt_text": "",
            "prompt_speech": "examples/prompt/libri_367.flac",
            "syn_text": "One small batch line.",
        },
        {"uttid": "bad", "prompt_text": "", "prompt_speech": "../../etc/passwd", "syn_text": "never spoken"},
        {"uttid": "zh", "prompt_text": "", "prompt_speech": "examples/prompt/libri_1688.flac", "syn_text": "批量合成测试。"},
    ]
    batch = tmp_path / "job.jsonl"
    batch.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines), encoding="utf-8")
    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-file input[type=file]").set_input_files(str(batch))
    page.locator("#batch-run").click()
    page.locator("#batch-summary").get_by_text("2 of 3 items ok").wait_for(timeout=UI_TIMEOUT_MS)
    link = page.locator("#batch-zip a").first
    link.wait_for(timeout=UI_TIMEOUT_MS)
    archive = zipfile.ZipFile(io.BytesIO(fetch(app_server, link.get_attribute("href"))))
    names = sorted(name.split("/")[-1] for name in archive.namelist())
    assert names == ["en.wav", "manifest.jsonl", "zh.wav"]
    manifest = [
        json.loads(x) for x in archive.read(next(n for n in archive.namelist() if n.endswith("manifest.jsonl"))).splitlines()
    ]
    assert [m["status"] for m in manifest] == ["ok", "error", "ok"]
    assert "outside the allowed folders" in manifest[1]["message"]


def test_a_voice_saved_over_http_is_offered_after_a_reload(page, app_server):
    prompt = ROOT / "examples" / "prompt" / "libri_1998.flac"
    files = {"file": (prompt.name, prompt.read_bytes(), "audio/flac")}
    created = httpx.post(f"{app_server.url}/v1/voices", files=files, data={"name": "Browser Voice"}, timeout=300)
    assert created.status_code == 201, created.text
    voice_id = created.json()["id"]
    try:
        page.reload()
        page.locator("#single-text textarea").wait_for(state="visible", timeout=UI_TIMEOUT_MS)
        page.get_by_role("tab", name="Single").click()
        page.locator("#single-voice input").click()
        page.get_by_role("option", name=voice_id).wait_for(timeout=UI_TIMEOUT_MS)
    finally:
        httpx.delete(f"{app_server.url}/v1/voices/{voice_id}", timeout=60)


def test_the_system_tab_shows_a_status_table_and_clears_caches(page):
    page.get_by_role("tab", name="System").click()
    status = page.locator("#system-status")
    status.get_by_text("rss_mib").first.wait_for(timeout=UI_TIMEOUT_MS)
    status.get_by_text("engine_reason").first.wait_for(timeout=UI_TIMEOUT_MS)
    page.locator("#system-memory").wait_for(state="visible", timeout=UI_TIMEOUT_MS)
    page.locator("#clear-vram").click()
    page.locator("#cleared").get_by_text("rss_mib").first.wait_for(state="attached", timeout=UI_TIMEOUT_MS)
