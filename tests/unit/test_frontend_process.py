"""The text frontend's own process: same answers and errors as in-process, restarted when killed,
gone when the app is; and the faster cache of jieba's dictionary it loads."""

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from glmtts.frontend import TextFrontend, process
from glmtts.frontend.g2p_zh import _import_jieba, _word_counts
from glmtts.frontend.process import FrontendProcess
from glmtts.frontend.replace_dict import ReplaceDictError
from glmtts.types import SynthesisError

from ..conftest import TESTS

TEXTS = ["今天是2024年3月5日，气温-3.5度。", "Dr. Smith paid $12.50 for 3 books.", "我们去 Starbucks 喝咖啡吧！还书给他。"]
EXIT_WAIT_S = 30


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def in_process(cache_dir) -> TextFrontend:
    frontend = TextFrontend(None, cache_dir)
    frontend.load()
    return frontend


@pytest.fixture(scope="module")
def child(cache_dir, in_process):
    frontend = FrontendProcess(None, cache_dir)
    frontend.load()
    yield frontend
    frontend.close()


def test_the_process_answers_as_the_frontend_does(child, in_process):
    for text in TEXTS:
        assert child.text_to_segments(text) == in_process.text_to_segments(text)
        assert child.text_to_segments(text, use_phoneme=True) == in_process.text_to_segments(text, use_phoneme=True)
        assert child.text_to_phoneme_text(text) == in_process.text_to_phoneme_text(text)
    assert child.reload_replace_dict() == 0
    assert child.load_s > 0 and child.rss_mib() > 50


def test_errors_come_back_as_the_frontend_raised_them(child):
    with pytest.raises(SynthesisError, match="Japanese kana"):
        child.text_to_segments("こんにちは")
    assert child.text_to_segments("好的")  # and the process goes on


def test_a_killed_process_is_started_again_and_the_call_answered(child, in_process):
    old = child.pid
    os.kill(old, signal.SIGKILL)
    psutil.Process(old).wait(EXIT_WAIT_S)
    assert child.text_to_segments(TEXTS[0]) == in_process.text_to_segments(TEXTS[0])
    assert child.pid != old


def test_a_call_that_runs_too_long_is_stopped_and_the_next_one_answered(child, in_process, monkeypatch):
    monkeypatch.setattr(process, "CALL_TIMEOUT_S", 0.001)
    old = child.pid
    with pytest.raises(SynthesisError, match="could not be prepared"):
        child.text_to_segments("今天天气很好，我们一起去公园散步吧。" * 300)
    monkeypatch.undo()
    assert child.pid != old and not psutil.pid_exists(old)
    assert child.text_to_segments(TEXTS[1]) == in_process.text_to_segments(TEXTS[1])


def test_the_process_exits_with_the_app(cache_dir):
    """kill -9 of the app: the child sees its connection close and exits by itself."""
    code = f"""
        import os, sys
        sys.path.insert(0, {str(TESTS.parent)!r})
        from pathlib import Path
        from glmtts.frontend.process import FrontendProcess
        frontend = FrontendProcess(None, Path({str(cache_dir)!r}))
        frontend.load()
        print(frontend.pid, flush=True)
        os.kill(os.getpid(), 9)
    """
    app = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert app.returncode == -signal.SIGKILL, app.stderr
    try:
        psutil.Process(int(app.stdout.split()[0])).wait(EXIT_WAIT_S)  # raises TimeoutExpired while it lives
    except psutil.NoSuchProcess:
        pass  # gone already


def test_a_failed_load_is_raised_by_load(tmp_path, cache_dir):
    bad = tmp_path / "replace.jsonl"
    bad.write_text("not json\n", encoding="utf-8")
    frontend = FrontendProcess(bad, cache_dir)
    try:
        with pytest.raises(ReplaceDictError) as raised:
            frontend.load()
        assert raised.value.problems and str(bad) in str(raised.value)
    finally:
        frontend.close()


def test_the_word_count_cache_holds_what_jieba_builds(tmp_path):
    jieba = _import_jieba()
    tokenizer = jieba.Tokenizer()
    expected = tokenizer.gen_pfdict(tokenizer.get_dict_file())
    assert _word_counts(jieba, tokenizer, tmp_path) == expected  # built, then cached
    (cache,) = tmp_path.glob("jieba-words-*")
    assert _word_counts(jieba, tokenizer, tmp_path) == expected  # read from the cache
    cache.write_bytes(cache.read_bytes()[:1000])  # damaged: built again
    assert _word_counts(jieba, tokenizer, tmp_path) == expected
