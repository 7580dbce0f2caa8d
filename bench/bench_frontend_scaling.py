"""How the text frontend's cost grows with the text's length, on ordinary and pathological inputs.

    .venv/bin/python bench/bench_frontend_scaling.py [--lengths 1000 4000 16000 20000] [--only NAME ...]
                                                   [--root DIR]

For each input it prints the CPU time of `TextFrontend.text_to_segments` per 1,000 characters at
each length, the time at the longest length, and the ratio of the times at 16k and 1k characters
(linear cost gives about 16). Times are the process's CPU time (`time.process_time`), the least of
a few runs (one run past 8,000 characters), after the frontend has loaded, so other work on a
shared machine disturbs them little. A text the frontend refuses (nothing left to speak) counts with
the time it took to refuse it. An input that took over SLOW_S at one length shows "-" at longer ones.

`--root DIR` measures another checkout's frontend (for example the code before a change:
`git worktree add /tmp/old HEAD`), with this same script.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]

ZH_SENTENCES = (
    "今天天气非常好，我们一起去公园散步。湖边的柳树已经发芽了，孩子们在草地上放风筝。"
    "语音合成系统可以把文字转换成自然流畅的声音。这家餐厅的菜很有名，周末经常要排队。"
    "会议定在下午三点，请大家准时参加。他每天早上六点起床，先跑步再吃早饭。"
)
EN_SENTENCES = (
    "The meeting starts at half past three, and everyone is welcome to join us in the main hall. "
    "Please call me tomorrow; I will be at home all day, reading the reports you sent last week. "
)
MIXED = "我们明天用 Python 写一个 demo，预算是$12.50，会议在3:30开始。Привет! "


def _repeat(unit: str) -> Callable[[int], str]:
    return lambda length: (unit * (length // len(unit) + 1))[:length]


INPUTS: dict[str, Callable[[int], str]] = {
    "ordinary Chinese": _repeat(ZH_SENTENCES),
    "ordinary English": _repeat(EN_SENTENCES),
    "mixed scripts": _repeat(MIXED),
    "digits": _repeat("1234567890"),
    "。 run": _repeat("。"),
    "1你 run": _repeat("1你"),
    "word without spaces": _repeat("abcdefghijklmnopqrstuvwxyz"),
    "emoji": _repeat("😀👍🏽好"),
    "spaces and a dot": lambda length: " " * (length - 2) + "a.",
    "markdown openers": _repeat("![a]("),
    "dates and money": _repeat("2024年3月5日花了¥12.50，"),
    "a list of years": lambda length: ("in " + "1999 and " * (length // 9))[:length],
    "spaces in [[...]]": lambda length: "[[" + " " * (length - 5) + "x]]",
}
SLOW_S = 20.0  # an input that took this long at one length is not measured at longer ones


def _cost_s(frontend, text: str) -> tuple[float, str]:
    """CPU seconds of one call, the least of a few runs, and the name of any error but a refusal."""
    best, failure = float("inf"), ""
    for _ in range(1 if len(text) > 8000 else 3):
        start = time.process_time()
        try:
            frontend.text_to_segments(text)
        except Exception as error:  # a refusal is an answer too (its cost counts); others are named
            if type(error).__name__ != "SynthesisError":
                failure = type(error).__name__
        best = min(best, time.process_time() - start)
    return best, failure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 4000, 16000, 20000])
    parser.add_argument("--only", nargs="+", choices=sorted(INPUTS), help="measure only these inputs")
    parser.add_argument("--root", type=Path, default=_ROOT, help="the checkout whose frontend is measured")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    from glmtts.frontend import TextFrontend

    frontend = TextFrontend()
    frontend.load()
    lengths = sorted(args.lengths)
    print(f"frontend from {args.root.resolve()}; CPU ms per 1k characters")
    header = "".join(f"{length // 1000:>7}k" for length in lengths)
    print(f"{'input':<22}{header}   s at {lengths[-1] // 1000}k   16k/1k")
    for name in args.only or INPUTS:
        costs: dict[int, float] = {}
        failures = set()
        for length in lengths:
            costs[length], failure = _cost_s(frontend, INPUTS[name](length))
            failures.add(f"{failure} at {length // 1000}k" if failure else "")
            if costs[length] > SLOW_S:
                break
        per_k = "".join(f"{costs[length] / length * 1e6:>8.1f}" if length in costs else f"{'-':>8}" for length in lengths)
        ratio = costs[16000] / max(costs[1000], 1e-6) if {1000, 16000} <= costs.keys() else float("nan")
        longest = f"{costs[lengths[-1]]:>7.2f}" if lengths[-1] in costs else f"{'-':>7}"
        print(f"{name:<22}{per_k}   {longest}   {ratio:>6.1f}  {' '.join(sorted(failures))}".rstrip(), flush=True)


if __name__ == "__main__":
    main()
