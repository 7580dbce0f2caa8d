"""The WebUI in Chinese for a Chinese browser, and its language switch, in a real headless Chromium."""

import pytest
from playwright.sync_api import expect

from .test_browser import CHROMIUM, UI_TIMEOUT_MS, browser_page

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def page(app_server, tmp_path_factory):
    # locale: navigator.language and Accept-Language
    with browser_page(app_server.url, tmp_path_factory.mktemp("zh-profile"), locale="zh-CN") as opened:
        yield opened


def test_a_chinese_browser_gets_the_page_in_chinese(page):
    for tab in ["单条合成", "批量合成", "音素", "音色", "系统"]:
        expect(page.get_by_role("tab", name=tab)).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.locator("#single-text")).to_contain_text("要合成的文本")
    expect(page.locator("#single-generate")).to_have_text("生成")
    expect(page.locator("#page-engine")).to_contain_text("引擎", timeout=UI_TIMEOUT_MS)  # written by the server
    expect(page.locator("#page-engine")).to_contain_text("未配置 GLM-TTS 检查点")  # and its status phrases
    expect(page.locator("#language-switch input[value=zh]")).to_be_checked(timeout=UI_TIMEOUT_MS)


def test_the_servers_messages_follow_the_page(page):
    page.locator("#single-text textarea").fill("你好。Hello.")
    page.locator("#single-generate").click()
    expect(page.locator("#single-status")).to_contain_text("完成：", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#single-status")).to_contain_text("秒音频")
    page.get_by_role("tab", name="批量合成").click()
    page.locator("#batch-run").click()  # no file: the page's own error, in Chinese
    expect(page.get_by_text("请先选择批量文件。").first).to_be_visible(timeout=UI_TIMEOUT_MS)


def test_the_switch_turns_the_page_to_english_and_keeps_it(page):
    page.locator("#language-switch").get_by_text("English").click()  # the page reloads in English
    expect(page.get_by_role("tab", name="Single")).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.locator("#single-generate")).to_have_text("Generate", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#page-engine")).to_contain_text("Engine", timeout=UI_TIMEOUT_MS)
    page.reload()
    expect(page.locator("#language-switch input[value=en]")).to_be_checked(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_role("tab", name="Batch")).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-run").click()
    expect(page.get_by_text("Choose a batch file first.").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.locator("#language-switch").get_by_text("中文").click()  # and back
    expect(page.get_by_role("tab", name="单条合成")).to_be_visible(timeout=UI_TIMEOUT_MS)


# What the page shows of a label Gradio did not translate (`I18nData` serialised): the class of bug, on any widget.
UNTRANSLATED = "__i18n__"
SEEN_TEXT_JS = """() => [document.body.innerText, ...[...document.querySelectorAll("*")].flatMap(
    element => ["placeholder", "title", "aria-label", "alt"].map(name => element.getAttribute(name) || ""))].join("\\n")"""


@pytest.mark.parametrize("switch, examples_header", [("中文", "音色"), ("English", "Voice")], ids=["zh", "en"])
def test_every_tab_shows_translated_words_only(page, switch, examples_header):
    page.locator("#language-switch").get_by_text(switch).click()  # reloads the page when it changes the language
    expect(page.locator("#single-examples thead")).to_contain_text(examples_header, timeout=UI_TIMEOUT_MS)
    tabs = page.get_by_role("tab")
    for index in range(tabs.count()):
        tabs.nth(index).click()
        expect(tabs.nth(index)).to_have_attribute("aria-selected", "true", timeout=UI_TIMEOUT_MS)
        assert UNTRANSLATED not in page.evaluate(SEEN_TEXT_JS), tabs.nth(index).inner_text()
