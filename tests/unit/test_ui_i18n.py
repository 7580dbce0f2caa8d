"""The page's words: one table, both languages for every key, the language a request reads, and
no English left in the page's widgets outside the table."""

import re
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from gradio.i18n import I18nData
from gradio.routes import Request

from glmtts.service import LOCAL_DISK, NO_CHECKPOINT
from glmtts.types import AudioChunk, Segment
from glmtts.ui.batch import job_summary
from glmtts.ui.i18n import LANGUAGES, PAGE_I18N, TEXTS, label, language_of, page_text, placeholders
from glmtts.ui.single import progress_text
from glmtts.ui.system import status_rows

UI_DIR = Path(__file__).resolve().parents[2] / "glmtts" / "ui"
# Keys the code builds from data (a status key, a job state, a column name) rather than names literally.
BUILT_KEYS = re.compile(
    r"^(system\.(field|group|section|column)|batch\.(state|column)|voices\.(column|language)|examples\.column|server)\."
)


@pytest.mark.parametrize("key", sorted(TEXTS))
def test_every_key_has_both_languages_with_the_same_placeholders(key):
    texts = TEXTS[key]
    assert set(texts) == set(LANGUAGES)
    assert all(texts[language].strip() for language in LANGUAGES)
    assert placeholders(texts["zh"]) == placeholders(texts["en"])


def test_the_chinese_is_chinese():
    """A zh text that is the English one is a missed translation (names and codes aside)."""
    same = {key for key, texts in TEXTS.items() if texts["zh"] == texts["en"]}
    assert same == {"form.top_k", "form.top_p", "batch.column.uttid"}


def test_the_browser_gets_every_label_without_placeholders_and_with_literal_braces():
    zh = PAGE_I18N.translations_dict["zh"]
    assert zh["tab.single"] == "单条合成"
    assert zh["phoneme.dict_text"] == '每行一条 {"原文": "替换"}'
    assert "single.done" not in zh  # a template the callbacks fill in
    with pytest.raises(ValueError, match="placeholders"):
        label("single.done")
    assert isinstance(label("tab.batch"), I18nData)


def test_every_key_the_code_names_exists_and_every_key_is_used():
    code = "\n".join(path.read_text(encoding="utf-8") for path in UI_DIR.glob("*.py"))
    named = set(re.findall(r"""(?:label|page_text)\(\s*"([a-z0-9_.+]+)\"""", code))
    named |= set(re.findall(r""""([a-z]+\.[a-z0-9_.+]+)" if """, code)) | set(
        re.findall(r""" else "([a-z]+\.[a-z0-9_.+]+)\"""", code)
    )
    named |= set(re.findall(r"""\("(tab\.[a-z]+)", build_""", code))
    assert named - set(TEXTS) == set()
    unused = {key for key in TEXTS if key not in named and not BUILT_KEYS.match(key)}
    assert unused == set()


@pytest.mark.parametrize(
    ("cookies", "accept", "language"),
    [
        ({}, "zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ({}, "zh-TW", "zh"),
        ({}, "en-US,en;q=0.9,zh;q=0.8", "en"),
        ({}, "fr-FR,zh;q=0.9", "en"),  # the first language decides, as in the browser
        ({}, "", "en"),
        ({"glmtts_lang": "en"}, "zh-CN", "en"),  # the switch wins over the browser
        ({"glmtts_lang": "zh"}, "en-US", "zh"),
        ({"glmtts_lang": "<script>"}, "zh-CN", "zh"),  # an unknown choice is ignored
    ],
)
def test_a_request_reads_the_switch_then_the_browsers_first_language(cookies, accept, language):
    request = Request(headers={"accept-language": accept} if accept else {}, cookies=cookies)
    assert language_of(request) == language


def test_no_request_or_no_hint_reads_english():
    assert language_of(None) == "en"
    assert language_of(Request()) == "en"


def test_a_language_the_table_lacks_reads_english():
    assert page_text("single.stopped", "fr") == "Stopped."


def chunk(index: int, total: int, final: bool = True) -> AudioChunk:
    return AudioChunk(index, total, np.zeros(10, np.float32), 24000, Segment("a", (), "a"), {}, final=final)


def test_the_progress_line_in_chinese():
    assert progress_text(chunk(0, 4), 3.0, "zh") == "合成中… 第 1/4 段已就绪；预计还需 9 秒。"
    assert progress_text(chunk(0, 3, final=False), 0.5, "zh") == "合成中… 正在播放第 1/3 段；正在估算剩余时间。"


BASE_JOB = {"id": "j", "total": 3, "done": 1, "ok": 1, "cancelling": False, "running": {}, "message": ""}


@pytest.mark.parametrize(
    ("fields", "english", "chinese"),
    [
        (
            {"status": "queued"},
            "Job j is queued behind the batch jobs submitted before it.",
            "任务 j 正在排队，等待先提交的批量任务。",
        ),
        (
            {"status": "running", "running": {"u2": "b:2", "u1": "a:1"}},
            "Job j running: 1 of 3 finished (1 ok); now: u1 on a:1, u2 on b:2.",
            "任务 j 运行中：已完成 1/3（成功 1 条）；正在处理：u1（a:1）、u2（b:2）。",
        ),
        (
            {"status": "running", "running": {"u1": ""}},
            "Job j running: 1 of 3 finished (1 ok); now: u1.",
            "任务 j 运行中：已完成 1/3（成功 1 条）；正在处理：u1。",
        ),
        (
            {"status": "running", "cancelling": True},
            "Job j cancelling: the current item stops; 1 of 3 finished.",
            "任务 j 正在取消：当前条目即将停止；已完成 1/3。",
        ),
        (
            {"status": "running", "cancelling": True, "running": {"u1": "a:1", "u2": "b:2"}},
            "Job j cancelling: the items running now stop; 1 of 3 finished.",
            "任务 j 正在取消：正在运行的条目即将停止；已完成 1/3。",
        ),
        (
            {"status": "done"},
            "Job j done: 1 of 3 items ok; files in outputs/batch/j/.",
            "任务 j 已完成：3 条中 1 条成功；文件在 outputs/batch/j/。",
        ),
        (
            {"status": "failed", "message": "disk full"},
            "Job j failed (disk full): 1 of 3 finished, 1 ok. Resume it below to run the rest.",
            "任务 j 失败（disk full）：已完成 1/3，成功 1 条。可在下方继续运行其余条目。",
        ),
    ],
)
def test_a_jobs_summary_in_both_languages(fields, english, chinese):
    assert job_summary({**BASE_JOB, **fields}, "en") == english
    assert job_summary({**BASE_JOB, **fields}, "zh") == chinese


def test_the_system_status_in_chinese():
    status = {"ready": True, "engine_reason": NO_CHECKPOINT, "shared_state": LOCAL_DISK, "replica": "vm:7860"}
    table = status_rows({**status, "timings": {"engine_load_s": 2.5, "tokenizer_load_s": 1.0}, "new_key": []}, "zh")
    assert list(table.columns) == ["分组", "项目", "数值"]
    assert table.values.tolist() == [
        ["引擎", "就绪", "是"],
        ["引擎", "选用此引擎的原因", "未配置 GLM-TTS 检查点，可用 GLMTTS_CKPT 设置"],  # the server's fixed phrases
        ["引擎", "副本", "vm:7860"],  # other text as it is
        ["引擎", "共享状态", "本地磁盘"],
        ["耗时", "引擎加载", "2.5 s"],
        ["耗时", "Tokenizer load", "1.0 s"],  # a key the page does not know keeps its name from the key
        ["其他", "New key", "无"],
    ]


@pytest.fixture(scope="module")
def page_blocks(tmp_path_factory):
    from glmtts.engines.embedded import EmbeddedEngine
    from glmtts.service import Service
    from glmtts.settings import Settings
    from glmtts.ui import build_ui

    root = tmp_path_factory.mktemp("page")
    service = Service(Settings(outputs=root), EmbeddedEngine(root / "cache"), "test", SimpleNamespace(close=lambda: None))
    return build_ui(service).blocks.values()


def test_no_english_is_left_in_the_pages_widgets(page_blocks):
    """Every label, button and Markdown the page builds comes from the table (values a callback fills aside)."""
    plain = []
    for block in page_blocks:
        words = [getattr(block, name, None) for name in ("label", "info", "placeholder")]
        if isinstance(block, (gr.Button, gr.Markdown)):
            words.append(block.value)
        words = [str(w) for w in words if w is not None and not isinstance(w, I18nData)]
        plain += [(type(block).__name__, w) for w in words if "__i18n__" not in w and re.search("[A-Za-z]{3}", w)]
    assert plain == [("Textbox", "你好，世界! Hello world.")]  # the text box's example text, in both languages
