"""The text frontend's own process: same answers and errors as in-process, restarted when killed,
gone when the app is; admission (a bounded number of calls, cancellation, a short text answered
beside long ones); the frontend's cost linear in the text's length on every input; and the faster
cache of jieba's dictionary it loads."""

import concurrent.futures
import itertools
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager

import psutil
import pytest

from glmtts import files
from glmtts.frontend import TextFrontend, en_numbers, normalize, phonemes, process, replace_dict, split, text_utils
from glmtts.frontend.g2p_zh import _import_jieba, _word_counts
from glmtts.frontend.normalize import WETEXT_MAX_CHARS
from glmtts.frontend.process import FrontendBusy, FrontendProcess
from glmtts.frontend.replace_dict import ReplaceDictError
from glmtts.http.errors import response_for
from glmtts.types import Cancelled, CancelToken, SynthesisError

from ..conftest import TESTS

TEXTS = ["今天是2024年3月5日，气温-3.5度。", "Dr. Smith paid $12.50 for 3 books.", "我们去 Starbucks 喝咖啡吧！还书给他。"]
EXIT_WAIT_S = 30
WAIT_S = 60  # for a state that comes within a second or two on an idle machine
SHORT_CALL_S = 5.0  # a short text's answer while long ones are in flight (about 0.1 s on an idle machine)
LONG = ("1你" * 40 + "。") * 240  # 19,440 characters, all numbers for the grammars: seconds of work


def _repeated(unit: str):
    return lambda length: (unit * (length // len(unit) + 1))[:length]


# Inputs whose cost once grew faster than their length (quadratic regexes, whole runs given to the grammars).
PATHOLOGICAL = {
    "digits": _repeated("1234567890"),
    "。 run": _repeated("。"),
    "1你 run": _repeated("1你"),
    "dates and money": _repeated("2024年3月5日花了¥12.50，"),
    "numbers among words": _repeated("call 555 1234 now "),
    "a list of years": lambda length: ("in " + "1999 and " * length)[:length],
    "spaces and a dot": lambda length: " " * (length - 2) + "a.",
    "markdown openers": _repeated("![a]("),
    "spaces in [[...]]": lambda length: "[[" + " " * (length - 5) + "x]]",
    "one long dotted name": lambda length: "a." * (length // 2 - 2) + "com",
    "sites and files": _repeated("see www.a.com/x and b.py "),
    "codes among Chinese": _repeated("房间号是302，CA1234，301室"),
}


# Inputs whose cost is almost all the grammars' (seconds): the bound on their pieces is tested instead of time.
GRAMMAR_BOUND = {"1你 run", "dates and money"}


def wait_until(predicate, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.005)


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
    app = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False)
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


def test_frontends_starting_together_build_the_word_counts_once(tmp_path, monkeypatch):
    """The second frontend, arriving while the first builds jieba's dictionary, waits and reads it."""
    jieba = _import_jieba()
    first_building, second_waiting = threading.Event(), threading.Event()
    built = []

    def tokenizer(name):
        made = jieba.Tokenizer()
        build = made.gen_pfdict

        def counted(dictionary):
            built.append(name)
            first_building.set()
            assert second_waiting.wait(30)
            return build(dictionary)

        made.gen_pfdict = counted
        return made

    lock_making, lockers = files._lock_making, []

    def signalling_lock(path, wait):
        lockers.append(path)
        if len(lockers) == 2:
            second_waiting.set()
        return lock_making(path, wait)

    monkeypatch.setattr(files, "_lock_making", signalling_lock)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(_word_counts, jieba, tokenizer("first"), tmp_path)
        assert first_building.wait(30)
        second = pool.submit(_word_counts, jieba, tokenizer("second"), tmp_path)
        assert first.result(60) == second.result(60)
    assert built == ["first"]


# --------------------------------------------------------------------------------- admission
@contextmanager
def long_calls(frontend: FrontendProcess, count: int):
    """`count` calls on LONG in flight; on exit their client leaves, and the child stops them."""
    token = CancelToken()

    def call() -> None:
        try:
            frontend.text_to_segments(LONG, cancel=token)
        except Cancelled:
            pass

    threads = [threading.Thread(target=call, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: frontend.in_flight == count)
        yield
    finally:
        token.cancel()
        for thread in threads:
            thread.join(WAIT_S)
        wait_until(lambda: frontend.in_flight == 0)


def test_past_max_calls_a_call_is_refused_at_once_with_429_and_retry_after(child, monkeypatch):
    monkeypatch.setattr(process, "MAX_CALLS", 2)
    with long_calls(child, 2):
        start = time.monotonic()
        with pytest.raises(FrontendBusy) as busy:
            child.text_to_segments(TEXTS[0])
        refused_s = time.monotonic() - start
    assert refused_s < 1.0
    response = response_for(busy.value)  # the HTTP layer's answer
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1


def test_a_cancelled_call_never_reaches_the_child(child, monkeypatch):
    sent = []
    monkeypatch.setattr(process._Child, "send", lambda _child, call, limit=None: sent.append(call))
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        child.text_to_segments(TEXTS[0], cancel=token)
    with pytest.raises(Cancelled):
        child.text_to_phoneme_text(TEXTS[0], cancel=token)
    assert sent == []


def test_a_call_whose_client_left_returns_at_once_and_the_child_stops_it(child):
    token = CancelToken()
    left: dict[str, object] = {}

    def call() -> None:
        try:
            child.text_to_segments(LONG, cancel=token)
        except Cancelled as error:
            left.update(error=error, at=time.monotonic())

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    wait_until(lambda: child.in_flight == 1)
    (held,) = child._child.calls.values()  # the child's reply still lands here after the caller left
    token.cancel()
    cancelled_at = time.monotonic()
    thread.join(WAIT_S)
    assert isinstance(left["error"], Cancelled) and left["at"] - cancelled_at < 1.0
    assert held.done.wait(WAIT_S)
    status, value = held.reply
    assert status == "error" and isinstance(value, Cancelled)  # stopped part-way, not run to its end


def test_a_short_call_is_answered_within_seconds_while_long_ones_are_in_flight(child, in_process):
    with long_calls(child, process.MAX_CALLS - 1):
        start = time.monotonic()
        segments = child.text_to_segments(TEXTS[2])
        short_s = time.monotonic() - start
        beside = child.in_flight
    assert segments == in_process.text_to_segments(TEXTS[2])
    assert beside == process.MAX_CALLS - 1  # answered while they still ran, not after them
    assert short_s < SHORT_CALL_S


# --------------------------------------------------------------------------------- linear cost
def _cpu_s(frontend: TextFrontend, text: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        try:
            frontend.text_to_segments(text)
        except SynthesisError:
            pass  # nothing to speak: the cost of finding that out counts
        best = min(best, time.process_time() - start)
    return best


@pytest.mark.parametrize("name", sorted(set(PATHOLOGICAL) - GRAMMAR_BOUND))
def test_the_frontend_cost_is_linear_in_the_text_length(in_process, name):
    """Four times the text costs about four times as much (a quadratic part would make it 16)."""
    small = _cpu_s(in_process, PATHOLOGICAL[name](2000), repeats=3)
    large = _cpu_s(in_process, PATHOLOGICAL[name](8000), repeats=2)
    assert large < 8 * max(small, 0.005), f"{small:.3f} s at 2k, {large:.3f} s at 8k characters"


def test_the_grammars_get_bounded_pieces_of_any_text(in_process, monkeypatch):
    """wetext's cost per character grows with its input: no call may get more than WETEXT_MAX_CHARS."""
    sizes: list[int] = []
    grammars = in_process.normalizer._tn
    monkeypatch.setattr(in_process.normalizer, "_tn", lambda text, lang: sizes.append(len(text)) or grammars(text, lang))
    for name, make in PATHOLOGICAL.items():
        sizes.clear()
        text = make(8000)
        try:
            in_process.text_to_segments(text)
        except SynthesisError:
            pass
        assert max(sizes, default=0) <= WETEXT_MAX_CHARS and sum(sizes) <= 2 * len(text), name


def test_a_number_too_long_to_read_as_one_is_spelled_digit_by_digit(in_process):
    assert in_process.normalizer.normalize_sentence("数字" + "12" * 20 + "。") == "数字" + "一二" * 20 + "。"
    assert in_process.normalizer.normalize_sentence("Code " + "12" * 20 + ".") == "Code" + " one two" * 20 + "."


def _patterns():
    """Every compiled pattern of the frontend's text modules, named."""
    for module in (normalize, split, en_numbers, phonemes, replace_dict, text_utils):
        for name, value in vars(module).items():
            values = value if isinstance(value, tuple) else (value,)
            for each in values:
                pattern = each[0] if isinstance(each, tuple) and each else each
                if isinstance(pattern, re.Pattern):
                    yield f"{module.__name__}.{name}", pattern


def _sub_s(pattern: re.Pattern, text: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        pattern.sub("", text)
        best = min(best, time.perf_counter() - start)
    return best


def test_every_pattern_runs_in_linear_time_on_repeated_input():
    """Generated attacks: each pattern on every one- and two-character unit of its own characters
    (and a letter, a digit, a Han character, a space, a line end) repeated to 1k, 4k and 16k
    characters: a linear pattern takes about 4 times as long at each step, a quadratic one 16."""
    slow = []
    for name, pattern in _patterns():
        own = {ch for ch in pattern.pattern if ch.isprintable() and not ch.isalnum()} - set("\\^$*+?{}()|[]")
        alphabet = sorted(own | set("a1你 \n"))
        for unit in itertools.chain(alphabet, map("".join, itertools.product(alphabet, repeat=2))):
            times = {}
            for length, repeats in ((4000, 1), (4000, 3), (1000, 3), (16000, 2)):
                times[length] = _sub_s(pattern, unit * (length // len(unit)), repeats)
                if times[4000] < 0.002 or times[4000] > 0.5 or (length == 1000 and times[4000] < 10 * times[1000]):
                    break  # fast, or linear from 1k to 4k: no quadratic cost here; or slow already
            if times[4000] > 0.5 or times.get(16000, 0) > 10 * times[4000]:
                slow.append(f"{name} on {unit!r}: {times} (seconds at each length)")
    assert not slow, slow
