"""The Voices tab in a real headless Chromium: a voice cloned on the page is saved, heard, offered in
every tab, renamed, exported, deleted and imported back, all without the API."""

import io
import zipfile

import pytest
from playwright.sync_api import expect

from .conftest import ROOT
from .test_browser import CHROMIUM, UI_TIMEOUT_MS, browser_page, fetch, open_page, screenshot

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
PROMPT = ROOT / "examples" / "prompt" / "libri_1998.flac"


@pytest.fixture(scope="module")
def page(app_server, tmp_path_factory):
    with browser_page(app_server.url, tmp_path_factory.mktemp("voices-profile")) as opened:
        yield opened


def offered(page, tab: str, voice_id: str, present: bool = True) -> None:
    """Open `tab`'s voice list and see `voice_id` among its options (or not)."""
    page.get_by_role("tab", name=tab.capitalize()).click()
    page.locator(f"#{tab}-voice input").click()
    option = page.get_by_role("option", name=voice_id)
    if present:
        option.wait_for(timeout=UI_TIMEOUT_MS)
    else:
        expect(option).to_have_count(0, timeout=UI_TIMEOUT_MS)
    page.keyboard.press("Escape")


def cell(table, text: str):
    """The table cell that shows `text` (a cell holds its text twice: shown, and for editing)."""
    return table.get_by_role("gridcell", name=text, exact=True)


def act(page, button: str, status_text: str) -> None:
    page.locator(f"#voices-{button}").click()
    page.locator("#voices-status").get_by_text(status_text).wait_for(timeout=UI_TIMEOUT_MS)


def test_a_voice_cloned_on_the_page_goes_everywhere_and_travels_as_a_file(page, app_server, tmp_path):
    page.get_by_role("tab", name="Voices").click()
    page.locator("#voices-prompt input[type=file]").set_input_files(str(PROMPT))
    page.locator("#voices-name input").fill("Page Voice")
    page.locator("#voices-transcript textarea").fill("A prompt saved from the page.")
    act(page, "save", "Saved")
    table = page.locator("#voices-table")
    expect(cell(table, "Page Voice")).to_be_visible(timeout=UI_TIMEOUT_MS)
    voice_id = page.locator("#voices-status code").inner_text()
    assert voice_id.startswith("page-voice-")

    page.locator("#voices-play").click()
    page.locator("#voices-heard audio[src]").first.wait_for(state="attached", timeout=UI_TIMEOUT_MS)
    screenshot(page, "voices-tab.png")

    for tab in ("single", "batch", "phoneme"):
        offered(page, tab, voice_id)

    page.get_by_role("tab", name="Voices").click()
    page.locator("#voices-new-name input").fill("Renamed Voice")
    act(page, "rename", "Renamed to")
    expect(cell(table, "Renamed Voice")).to_be_visible(timeout=UI_TIMEOUT_MS)

    page.locator("#voices-export").click()
    link = page.locator("#voices-exported a").first
    link.wait_for(timeout=UI_TIMEOUT_MS)
    exported = fetch(app_server, link.get_attribute("href"))
    assert set(zipfile.ZipFile(io.BytesIO(exported)).namelist()) == {"voice.json", "prompt.wav", "features.npz"}
    voice_file = tmp_path / "renamed-voice.voice.zip"
    voice_file.write_bytes(exported)

    act(page, "delete", "Deleted")
    expect(cell(table, "Renamed Voice")).to_have_count(0, timeout=UI_TIMEOUT_MS)
    offered(page, "single", voice_id, present=False)

    page.get_by_role("tab", name="Voices").click()
    page.get_by_text("Import a voice file").click()
    page.locator("#voices-file input[type=file]").set_input_files(str(voice_file))
    act(page, "import", "Imported")
    expect(cell(table, "Renamed Voice")).to_be_visible(timeout=UI_TIMEOUT_MS)
    offered(page, "phoneme", page.locator("#voices-status code").inner_text())


def test_a_name_already_taken_is_refused_on_the_page_as_in_the_api(page, app_server):
    open_page(page, app_server.url)  # a fresh form: the prompt widget empty again
    page.get_by_role("tab", name="Voices").click()
    page.locator("#voices-prompt input[type=file]").set_input_files(str(PROMPT))
    page.locator("#voices-name input").fill("alloy")
    page.locator("#voices-save").click()
    page.get_by_text("reserved").first.wait_for(timeout=UI_TIMEOUT_MS)
