"""The WebUI in a real headless Chromium: generate speech, then run a batch to a downloaded zip."""

import io
import json
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
import soundfile as sf
from playwright.sync_api import expect

from .conftest import ROOT, wait_for

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
STOP_TIMEOUT_S = 120
# Enough segments that the synthesis is still running when Stop is clicked after the first one.
LONG_TEXT = " ".join(f"Sentence {n} of this long request keeps the synthesis busy for a while." for n in range(1, 31))

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")


@contextmanager
def browser_page(url: str, profile: Path, **context) -> Iterator:
    """A page of Debian's Chromium (headless, a profile of its own) opened on the UI at `url`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, accept_downloads=True, **context
        )
        page = browser.new_page()
        open_page(page, url)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def page(app_server, tmp_path_factory):
    with browser_page(app_server.url, tmp_path_factory.mktemp("chromium-profile")) as opened:
        yield opened


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
    assert names == ["en.srt", "en.wav", "manifest.jsonl", "zh.srt", "zh.wav"]
    captions = archive.read(next(n for n in archive.namelist() if n.endswith("en.srt"))).decode()
    assert captions.startswith("1\n00:00:00,") and "batch line" in captions  # the item's words, timed
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


def syntheses_started(app_server) -> float:
    """Syntheses finished (their RTF observations) plus those in progress, from /metrics."""
    text = fetch(app_server, "/metrics").decode()
    names = ("glmtts_synthesis_rtf_count", "glmtts_syntheses_active")
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(names))


def test_clicking_an_example_fills_the_form_and_speaks_nothing(page, app_server):
    open_page(page, app_server.url)  # a fresh page: no output from the tests before
    started = syntheses_started(app_server)
    examples = page.locator("#single-examples")
    expect(examples).to_contain_text("libri_1688", timeout=UI_TIMEOUT_MS)  # each example shows its voice
    examples.get_by_text("今天天气很好").first.click()
    expect(page.locator("#single-text textarea")).to_have_value("今天天气很好，我们一起去公园散步吧。", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#single-voice input")).to_have_value("libri_1688", timeout=UI_TIMEOUT_MS)
    screenshot(page, "single-examples.png")
    # A request that goes after the click through the same queue: once it answers, a synthesis the
    # click had started would be running or done.
    page.get_by_role("tab", name="Phoneme").click()
    page.locator("#phoneme-examples").get_by_text("Please read the record").first.click()
    page.locator("#phoneme-text textarea").wait_for(state="visible", timeout=UI_TIMEOUT_MS)
    page.get_by_role("button", name="Text → phonemes").click()
    expect(page.locator("#phoneme-sequence textarea")).not_to_have_value("", timeout=UI_TIMEOUT_MS)
    assert syntheses_started(app_server) == started
    page.get_by_role("tab", name="Single").click()
    expect(page.locator("#single-output audio")).to_have_count(0)
    expect(page.locator("#single-status")).to_have_text("")


def test_the_phoneme_examples_include_phoneme_tokens(page):
    page.get_by_role("tab", name="Phoneme").click()
    page.locator("#phoneme-examples").get_by_text("琴弦的声音").first.click()
    expect(page.locator("#phoneme-sequence textarea")).to_have_value(
        "琴<|X|><|IAN2|>的声音。Say [[arpa: HH AH0 L OW1]] to everyone.", timeout=UI_TIMEOUT_MS
    )
    expect(page.locator("#phoneme-voice input")).to_have_value("libri_1998", timeout=UI_TIMEOUT_MS)


def metric(app_server, name: str) -> float:
    text = fetch(app_server, "/metrics").decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_single_shows_its_progress_and_stop_cancels_the_synthesis(page, app_server):
    open_page(page, app_server.url)
    finished = metric(app_server, "glmtts_synthesis_rtf_count")
    page.locator("#single-text textarea").fill(LONG_TEXT)
    page.locator("#single-generate").click()
    status = page.locator("#single-status")
    expect(status).to_contain_text(re.compile(r"segment \d+ of \d+ \w+; about \d+ s left"), timeout=UI_TIMEOUT_MS)
    total = int(re.search(r"of (\d+)", status.inner_text()).group(1))
    assert total >= 10, status.inner_text()
    page.locator("#single-stop").click()
    # The status's own text (Gradio's tracker beside it once showed "Error" for the cancelled event).
    expect(status.get_by_role("paragraph")).to_have_text("Stopped.", timeout=UI_TIMEOUT_MS)
    wait_for(lambda: metric(app_server, "glmtts_syntheses_active") == 0, STOP_TIMEOUT_S, "the stopped synthesis to end")
    assert metric(app_server, "glmtts_synthesis_rtf_count") == finished  # it ended without finishing
    expect(page.locator("#single-output audio")).to_have_count(0)


def test_the_system_tab_reads_as_labelled_rows_with_units(page):
    page.get_by_role("tab", name="System").click()
    status = page.locator("#system-status")
    status.get_by_text("Engine load").first.wait_for(timeout=UI_TIMEOUT_MS)
    for header in ("Group", "What", "Value"):
        expect(status.get_by_role("columnheader", name=header)).to_have_count(1)
    text = status.inner_text()
    for shown in ("Engine", "Timings", "Memory", "Queue", "Voices", "Server process", "Requests waiting for the device"):
        assert shown in text
    assert re.search(r"\b\d+\.\d s\b", text) and re.search(r"\b[\d,]+ MiB\b", text)
    assert not re.search(r"\w\.\w+_|_mib|_s\b", text), "status keys are shown as they are named in code"
    page.locator("#system-memory").wait_for(state="visible", timeout=UI_TIMEOUT_MS)
    screenshot(page, "system-tab.png")


def test_memory_before_and_after_shows_after_clear_with_named_columns(page):
    page.get_by_role("tab", name="System").click()
    cleared = page.locator("#cleared")
    expect(cleared).to_be_hidden()
    page.locator("#clear-vram").click()
    cleared.get_by_text("Server process").first.wait_for(timeout=UI_TIMEOUT_MS)
    for header in ("What", "Before (MiB)", "After (MiB)"):
        expect(cleared.get_by_role("columnheader", name=header)).to_have_count(1)
    assert "rss_mib" not in cleared.inner_text()


def test_the_page_and_the_api_page_load_nothing_from_another_site(page, app_server):
    """Both work offline, and no other site's script runs on this origin: every request goes here."""
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    open_page(page, app_server.url)
    page.get_by_role("tab", name="Voices").click()  # a tab's widgets load as it opens
    page.goto(f"{app_server.url}/docs")
    page.locator(".swagger-ui .info .title").wait_for(timeout=UI_TIMEOUT_MS)  # drawn by the script served here
    elsewhere = [url for url in requested if not url.startswith((app_server.url, "data:", "blob:"))]
    assert len(requested) > 10 and elsewhere == []
    open_page(page, app_server.url)


def screenshot(page, name: str) -> None:
    """A picture of the page for a person to look at, when GLMTTS_SCREENSHOTS names a folder."""
    folder = os.environ.get("GLMTTS_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name), full_page=True)
