"""The Mandarin text frontend on our own test set: polyphone, tone sandhi and neutral-tone accuracy,
load time and per-sentence cost.

    .venv/bin/python bench/bench_frontend.py [--baseline DIR] [--repeats 3] [--errors]

The set is `tests/data/mandarin/`: `polyphones.txt` (sentences with each polyphonic character's
dictionary reading marked `[字:reading]`) and `sandhi.txt` (the same marks for readings as spoken:
一, 不, third-tone sandhi, neutral tones, erhua), the development part the rules were written
against, and `*_heldout.txt`, written after the rules were frozen. Polyphones are scored on the dictionary readings the
frontend gives GLM-TTS in phoneme mode (`text_to_segments(..., use_phoneme=True)`), sandhi on the
sequence the Phoneme tab shows and the Mandarin voice reads (`text_to_phoneme_text`).

`--baseline DIR` also measures another copy of the frontend, a package `glmtts_frontend_before` in
DIR (the frontend before a change, with its imports renamed), in the same run. Every measurement runs
in a fresh process, variants alternating, so load times include the imports and share no cache.
Times are the process's CPU time (`time.process_time`), which other work on a shared machine
disturbs far less than wall time; the frontend is single-threaded, so on an idle machine the two agree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
SET_DIR = _ROOT / "tests" / "data" / "mandarin"
_MARK_RE = re.compile(r"\[(.):([a-z0-9|]+)\]")
_TOKENS_RE = re.compile(r"(?:<\|[^<>|]*\|>)+")
_HAN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
ERHUA = "r"  # a mark's reading for an erhua 儿: no syllable of its own

# Text without polyphone density, for the per-sentence cost of ordinary input (written for this bench).
PLAIN_SENTENCES = (
    "今天天气非常好，我们一起去公园散步。",
    "湖边的柳树已经发芽了，孩子们在草地上放风筝。",
    "语音合成系统可以把文字转换成自然流畅的声音。",
    "这家餐厅的菜很有名，周末经常要排队。",
    "我们明天用 Python 写一个 demo 吧。",
    "会议定在下午三点，请大家准时参加。",
    "春天来了，花园里开满了五颜六色的花。",
    "他每天早上六点起床，先跑步再吃早饭。",
    "The meeting starts at 3:30 pm and costs $12.50 per person.",
    "Please call me tomorrow, I will be at home all day.",
)


@dataclass(frozen=True)
class Target:
    """One marked character: its position among the sentence's Han characters and accepted readings."""

    char: str
    index: int
    readings: tuple[str, ...]


@dataclass(frozen=True)
class Case:
    category: str
    text: str  # without marks
    targets: tuple[Target, ...]


def parse_marked(line: str, category: str = "") -> Case:
    """ "他[还:hai2]没" -> Case("还"..., text "他还没", targets at Han index 1)."""
    targets: list[Target] = []
    text_parts: list[str] = []
    han_count = 0
    position = 0
    for match in _MARK_RE.finditer(line):
        before = line[position : match.start()]
        text_parts.append(before)
        han_count += len(_HAN_RE.findall(before))
        char, readings = match.group(1), tuple(match.group(2).split("|"))
        targets.append(Target(char, han_count, readings))
        text_parts.append(char)
        han_count += 1
        position = match.end()
    text_parts.append(line[position:])
    return Case(category, "".join(text_parts), tuple(targets))


def read_set(name: str) -> list[Case]:
    """tests/data/mandarin/<name>: '#' comments; polyphones one sentence a line, sandhi category<TAB>sentence."""
    cases = []
    for raw in (SET_DIR / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        category, _, sentence = line.rpartition("\t")
        case = parse_marked(sentence, category)
        if not case.targets:
            raise ValueError(f"{name}: no [字:reading] mark in {line!r}")
        cases.append(case)
    return cases


def phoneme_items(phoneme_text: str, syllables_of) -> list[tuple[str, ...] | str]:
    """A phoneme text -> one item per spoken Han position: a syllable's symbols, or a Han character
    left as it is (the frontend writes an erhua 儿 as the character)."""
    items: list[tuple[str, ...] | str] = []
    position = 0
    for match in _TOKENS_RE.finditer(phoneme_text):
        items.extend(_HAN_RE.findall(phoneme_text[position : match.start()]))
        items.extend(syllable.symbols for syllable in syllables_of(match.group(0)))
        position = match.end()
    items.extend(_HAN_RE.findall(phoneme_text[position:]))
    return items


def score(cases: list[Case], to_phoneme_text, syllables_of, pinyin_to_symbols) -> dict:
    """Correct / total per category and per character, and the errors (sentence, char, got, wanted)."""
    per_key: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    errors: list[tuple[str, str, str, str]] = []
    correct = total = 0
    for case in cases:
        items = phoneme_items(to_phoneme_text(case.text), syllables_of)
        han = _HAN_RE.findall(case.text)
        aligned = len(items) == len(han)
        for target in case.targets:
            got = items[target.index] if aligned else None
            wanted = [("儿" if r == ERHUA else pinyin_to_symbols(r)) for r in target.readings]
            ok = got is not None and any(got == w for w in wanted)
            for key in {case.category or target.char, target.char}:
                per_key[key][0] += ok
                per_key[key][1] += 1
            correct += ok
            total += 1
            if not ok:
                shown = "unaligned" if got is None else (got if isinstance(got, str) else " ".join(got))
                errors.append((case.text, f"{target.char}@{target.index}", shown, "|".join(target.readings)))
    return {"correct": correct, "total": total, "per_key": dict(per_key), "errors": errors}


# ----------------------------------------------------------------------------- worker
def _load_frontend(variant: str, baseline: str | None):
    sys.path.insert(0, str(_ROOT))
    start = time.process_time()
    if variant == "baseline":
        sys.path.insert(0, baseline)
        import glmtts_frontend_before as package
        from glmtts_frontend_before.g2p_zh import pinyin_to_symbols
        from glmtts_frontend_before.phonemes import tokens_to_syllables
    else:
        import glmtts.frontend as package
        from glmtts.frontend.g2p_zh import pinyin_to_symbols
        from glmtts.frontend.phonemes import tokens_to_syllables
    frontend = package.TextFrontend()
    frontend.load()
    return frontend, time.process_time() - start, tokens_to_syllables, pinyin_to_symbols


def _per_sentence_ms(frontend, sentences: list[str], passes: int = 3) -> float:
    best = float("inf")
    for _ in range(passes):
        start = time.process_time()
        for sentence in sentences:
            frontend.text_to_segments(sentence)
        best = min(best, (time.process_time() - start) / len(sentences))
    return best * 1000


def worker(variant: str, baseline: str | None) -> dict:
    frontend, load_s, syllables_of, pinyin_to_symbols = _load_frontend(variant, baseline)
    polyphones, sandhi = read_set("polyphones.txt"), read_set("sandhi.txt")
    polyphones_heldout, sandhi_heldout = read_set("polyphones_heldout.txt"), read_set("sandhi_heldout.txt")

    def glm_phonemes(text: str) -> str:
        return "".join(segment.glm_text for segment in frontend.text_to_segments(text, use_phoneme=True))

    set_sentences = [case.text for case in polyphones + sandhi + polyphones_heldout + sandhi_heldout]
    frontend.text_to_segments(set_sentences[0])  # first-call effects out of the timing
    return {
        "variant": variant,
        "load_s": load_s,
        "set_ms": _per_sentence_ms(frontend, set_sentences),
        "plain_ms": _per_sentence_ms(frontend, list(PLAIN_SENTENCES) * 10),
        "polyphones": score(polyphones, glm_phonemes, syllables_of, pinyin_to_symbols),
        "sandhi": score(sandhi, frontend.text_to_phoneme_text, syllables_of, pinyin_to_symbols),
        "polyphones_heldout": score(polyphones_heldout, glm_phonemes, syllables_of, pinyin_to_symbols),
        "sandhi_heldout": score(sandhi_heldout, frontend.text_to_phoneme_text, syllables_of, pinyin_to_symbols),
    }


# ----------------------------------------------------------------------------- driver
def _run_worker(variant: str, baseline: str | None) -> dict:
    command = [sys.executable, __file__, "--worker", variant] + (["--baseline", baseline] if baseline else [])
    env = dict(os.environ, ORT_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1")
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env, cwd=str(_ROOT))
    return json.loads(out.stdout.strip().splitlines()[-1])


def _accuracy(result: dict) -> str:
    return f"{100 * result['correct'] / result['total']:.1f} % ({result['correct']}/{result['total']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="folder holding a package glmtts_frontend_before to compare with")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per variant")
    parser.add_argument("--errors", action="store_true", help="list every wrong reading")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.baseline), ensure_ascii=False))
        return
    variants = (["baseline"] if args.baseline else []) + ["current"]
    runs: dict[str, list[dict]] = {variant: [] for variant in variants}
    for _ in range(args.repeats):
        for variant in variants:
            runs[variant].append(_run_worker(variant, args.baseline))
    print(f"{'':32}" + "".join(f"{variant:>26}" for variant in variants))
    rows = [
        ("polyphones, dev", lambda r: _accuracy(r[0]["polyphones"])),
        ("polyphones, held-out", lambda r: _accuracy(r[0]["polyphones_heldout"])),
        ("sandhi/neutral/erhua, dev", lambda r: _accuracy(r[0]["sandhi"])),
        ("sandhi/neutral/erhua, held-out", lambda r: _accuracy(r[0]["sandhi_heldout"])),
        ("load time, CPU (median)", lambda r: f"{statistics.median(x['load_s'] for x in r):.3f} s"),
        ("per sentence, test set, CPU", lambda r: f"{statistics.median(x['set_ms'] for x in r):.3f} ms"),
        ("per sentence, plain text, CPU", lambda r: f"{statistics.median(x['plain_ms'] for x in r):.3f} ms"),
    ]
    for name, cell in rows:
        print(f"{name:32}" + "".join(f"{cell(runs[variant]):>26}" for variant in variants))
    for variant in variants:
        first = runs[variant][0]
        for part in ("", "_heldout"):
            categories = {k: v for k, v in first["sandhi" + part]["per_key"].items() if k.isascii()}
            print(f"\n{variant}{part}: sandhi by category: " + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(categories.items())))
            chars = first["polyphones" + part]["per_key"]
            weak = sorted((v[0] / v[1], k) for k, v in chars.items() if v[0] < v[1])
            print(f"{variant}{part}: {len(chars)} polyphonic characters; below 100 %: " + ", ".join(f"{k} {chars[k][0]}/{chars[k][1]}" for _, k in weak))
        if args.errors:
            for kind in ("polyphones", "sandhi", "polyphones_heldout", "sandhi_heldout"):
                for text, where, got, wanted in first[kind]["errors"]:
                    print(f"  {kind}: {text} {where}: got {got}, wanted {wanted}")


if __name__ == "__main__":
    main()
