"""The Mandarin text frontend on our own test set and the public CPP polyphone benchmark: polyphone,
tone sandhi and neutral-tone accuracy, load time, per-sentence cost and memory.

    .venv/bin/python bench/bench_frontend.py [--cpp DIR] [--baseline DIR] [--repeats 3] [--errors]

CPP (Chinese Polyphones with Pinyin, from the g2pM paper: `data/{train,dev,test}.{sent,lb}` of
https://github.com/kakaobrain/g2pM) is read from `--cpp DIR` or $GLMTTS_CPP_DIR; without it the
bench scores the 400 dev-split lines shipped as `tests/data/mandarin/cpp_dev_sample.txt`. A CPP
sentence marks one polyphonic character (U+2581 either side); it is scored on the lexical reading
(before tone sandhi) the frontend gives it in the run of Han characters holding it, strictly and
with neutral tones accepted for the citation tone CPP writes (关系 guān xi5 for guān xì). pypinyin
alone (its phrase and character dictionaries, first-listed readings) and g2pM alone read the same
lines and the everyday polyphone sets.

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
CPP_SAMPLE_NAME = "sample"  # --cpp value for the shipped sample
CPP_SAMPLE = SET_DIR / "cpp_dev_sample.txt"
CPP_MARK = "\u2581"
HAN_RUN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")
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


def _cpp_item(sentence: str, label: str) -> tuple[str, int, str]:
    """A CPP line -> (the run of Han characters holding the marked character, its index there, reading)."""
    before, char, after = sentence.split(CPP_MARK)
    position = len(before)
    text = before + char + after
    run = next(m for m in HAN_RUN_RE.finditer(text) if m.start() <= position < m.end())
    return run.group(0), position - run.start(), label.strip().replace("u:", "v")  # CPP writes ü as u:


def read_cpp(source: Path, split: str = "dev") -> list[tuple[str, int, str]]:
    """CPP's `split` in folder `source` ({split}.sent and {split}.lb), or a sample file of
    sentence<TAB>reading lines -> (Han run, index of the marked character in it, reading)."""
    if source.is_file():
        lines = [
            line.split("\t") for line in source.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")
        ]
        return [_cpp_item(sentence, label) for sentence, label in lines]
    sentences = (source / f"{split}.sent").read_text(encoding="utf-8").splitlines()
    labels = (source / f"{split}.lb").read_text(encoding="utf-8").splitlines()
    if len(sentences) != len(labels):
        raise ValueError(f"{split}: {len(sentences)} sentences but {len(labels)} labels")
    return [_cpp_item(sentence, label) for sentence, label in zip(sentences, labels, strict=True)]


def cpp_sets(cpp: str | None) -> dict[str, list[tuple[str, int, str]]]:
    """The CPP splits to score: test and dev from folder `cpp`, the shipped dev sample for
    CPP_SAMPLE_NAME, none for None."""
    if cpp is None:
        return {}
    if cpp == CPP_SAMPLE_NAME:
        return {"CPP dev sample": read_cpp(CPP_SAMPLE)}
    return {f"CPP {split}": read_cpp(Path(cpp), split) for split in ("test", "dev")}


def neutral_as_citation(got: str, wanted: str) -> bool:
    """A neutral tone read where CPP writes the citation tone (xi5 for xi4)."""
    return got == wanted or (got.endswith("5") and got[:-1] == wanted[:-1])


def score_cpp(items: list[tuple[str, int, str]], read) -> dict:
    """Strict and neutral-insensitive accuracy of `read` (Han run -> readings) on CPP items."""
    strict = lenient = 0
    errors = []
    for text, index, label in items:
        got = read(text)[index]
        strict += got == label
        lenient += neutral_as_citation(got, label)
        if got != label:
            errors.append((text, f"{text[index]}@{index}", got, label))
    return {"strict": strict, "lenient": lenient, "total": len(items), "errors": errors}


def score_readings(cases: list[Case], read) -> dict:
    """An everyday set read by a reader of Han runs (pypinyin or g2pM alone), one reading per character."""
    correct = total = 0
    for case in cases:
        readings = [r for run in HAN_RUN_RE.findall(case.text) for r in read(run)]
        for target in case.targets:
            correct += readings[target.index] in target.readings
            total += 1
    return {"correct": correct, "total": total}


def _pypinyin_reader():
    from pypinyin import Style, lazy_pinyin

    return lambda run: lazy_pinyin(run, style=Style.TONE3, neutral_tone_with_five=True)


def _g2pm_reader():
    from g2pM import G2pM

    model = G2pM()
    return lambda run: [r.replace("u:", "v") for r in model(run, char_split=True)]


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


def worker(variant: str, baseline: str | None, cpp: str | None) -> dict:
    sys.path.insert(0, str(_ROOT))
    from glmtts.memory import rss_mib

    rss_before = rss_mib()
    frontend, load_s, syllables_of, pinyin_to_symbols = _load_frontend(variant, baseline)
    rss_loaded = rss_mib() - rss_before
    polyphones, sandhi = read_set("polyphones.txt"), read_set("sandhi.txt")
    polyphones_heldout, sandhi_heldout = read_set("polyphones_heldout.txt"), read_set("sandhi_heldout.txt")

    def glm_phonemes(text: str) -> str:
        return "".join(segment.glm_text for segment in frontend.text_to_segments(text, use_phoneme=True))

    set_sentences = [case.text for case in polyphones + sandhi + polyphones_heldout + sandhi_heldout]
    frontend.text_to_segments(set_sentences[0])  # first-call effects out of the timing
    return {
        "variant": variant,
        "load_s": load_s,
        "rss_mib": rss_loaded,
        "cpp": {name: score_cpp(items, frontend.g2p.readings) for name, items in cpp_sets(cpp).items()},
        "set_ms": _per_sentence_ms(frontend, set_sentences),
        "plain_ms": _per_sentence_ms(frontend, list(PLAIN_SENTENCES) * 10),
        "polyphones": score(polyphones, glm_phonemes, syllables_of, pinyin_to_symbols),
        "sandhi": score(sandhi, frontend.text_to_phoneme_text, syllables_of, pinyin_to_symbols),
        "polyphones_heldout": score(polyphones_heldout, glm_phonemes, syllables_of, pinyin_to_symbols),
        "sandhi_heldout": score(sandhi_heldout, frontend.text_to_phoneme_text, syllables_of, pinyin_to_symbols),
    }


# ----------------------------------------------------------------------------- driver
def _run_worker(variant: str, baseline: str | None, cpp: str | None) -> dict:
    command = (
        [sys.executable, __file__, "--worker", variant]
        + (["--baseline", baseline] if baseline else [])
        + (["--cpp", cpp] if cpp else [])
    )
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
    parser.add_argument(
        "--cpp", help="folder holding CPP's {test,dev}.{sent,lb} (default: $GLMTTS_CPP_DIR, else the shipped sample)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.baseline, args.cpp), ensure_ascii=False))
        return
    cpp = args.cpp or os.environ.get("GLMTTS_CPP_DIR") or CPP_SAMPLE_NAME
    if cpp == CPP_SAMPLE_NAME:
        print(f"CPP: no --cpp DIR or $GLMTTS_CPP_DIR given; scoring the shipped sample {CPP_SAMPLE.relative_to(_ROOT)}")
    variants = (["baseline"] if args.baseline else []) + ["current"]
    runs: dict[str, list[dict]] = {variant: [] for variant in variants}
    for repeat in range(args.repeats):
        for variant in variants:
            runs[variant].append(_run_worker(variant, args.baseline, cpp if repeat == 0 else None))
    alone = _readers_alone(cpp)
    columns = [(variant, runs[variant]) for variant in variants] + list(alone.items())
    print(f"{'':32}" + "".join(f"{name:>26}" for name, _ in columns))
    rows = [(f"{name}, strict", lambda r, n=name: _cpp_accuracy(r[0]["cpp"][n], "strict")) for name in runs["current"][0]["cpp"]]
    rows += [
        (f"{name}, neutral = citation", lambda r, n=name: _cpp_accuracy(r[0]["cpp"][n], "lenient"))
        for name in runs["current"][0]["cpp"]
    ]
    rows += [
        ("polyphones, dev", lambda r: _accuracy(r[0]["polyphones"])),
        ("polyphones, held-out", lambda r: _accuracy(r[0]["polyphones_heldout"])),
        ("sandhi/neutral/erhua, dev", lambda r: _accuracy(r[0]["sandhi"])),
        ("sandhi/neutral/erhua, held-out", lambda r: _accuracy(r[0]["sandhi_heldout"])),
        ("load time, CPU (median)", lambda r: f"{statistics.median(x['load_s'] for x in r):.3f} s"),
        ("memory the load adds (median)", lambda r: f"{statistics.median(x['rss_mib'] for x in r):.0f} MiB"),
        ("per sentence, test set, CPU", lambda r: f"{statistics.median(x['set_ms'] for x in r):.3f} ms"),
        ("per sentence, plain text, CPU", lambda r: f"{statistics.median(x['plain_ms'] for x in r):.3f} ms"),
        ("sentences/s, plain text, CPU", lambda r: f"{1000 / statistics.median(x['plain_ms'] for x in r):.0f}"),
    ]
    for name, cell in rows:
        print(f"{name:32}" + "".join(f"{_cell(cell, runs):>26}" for _, runs in columns))
    for variant in variants:
        first = runs[variant][0]
        for part in ("", "_heldout"):
            categories = {k: v for k, v in first["sandhi" + part]["per_key"].items() if k.isascii()}
            print(
                f"\n{variant}{part}: sandhi by category: "
                + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(categories.items()))
            )
            chars = first["polyphones" + part]["per_key"]
            weak = sorted((v[0] / v[1], k) for k, v in chars.items() if v[0] < v[1])
            print(
                f"{variant}{part}: {len(chars)} polyphonic characters; below 100 %: "
                + ", ".join(f"{k} {chars[k][0]}/{chars[k][1]}" for _, k in weak)
            )
        if args.errors:
            for kind in ("polyphones", "sandhi", "polyphones_heldout", "sandhi_heldout"):
                for text, where, got, wanted in first[kind]["errors"]:
                    print(f"  {kind}: {text} {where}: got {got}, wanted {wanted}")
            for name, result in first["cpp"].items():
                for text, where, got, wanted in result["errors"]:
                    print(f"  {name}: {text} {where}: got {got}, wanted {wanted}")


def _readers_alone(cpp: str) -> dict[str, list[dict]]:
    """pypinyin alone and g2pM alone on the CPP lines and the everyday polyphone sets (one run each)."""
    out = {}
    sets = {name: read_set(name + ".txt") for name in ("polyphones", "polyphones_heldout")}
    for name, reader in (("pypinyin alone", _pypinyin_reader()), ("g2pM alone", _g2pm_reader())):
        result = {key: score_readings(cases, reader) for key, cases in sets.items()}
        result["cpp"] = {split: score_cpp(items, reader) for split, items in cpp_sets(cpp).items()}
        out[name] = [result]
    return out


def _cell(cell, runs: list[dict]) -> str:
    try:
        return cell(runs)
    except KeyError:  # a figure that column has no part in (sandhi, times for the readers alone)
        return "-"


def _cpp_accuracy(result: dict, kind: str) -> str:
    return f"{100 * result[kind] / result['total']:.2f} % ({result[kind]}/{result['total']})"


if __name__ == "__main__":
    main()
