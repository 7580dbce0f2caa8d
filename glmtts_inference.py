"""Batch inference from the command line, compatible with upstream GLM-TTS's CLI.

    python glmtts_inference.py --data example_zh --exp_name _test --use_cache --phoneme --sample_rate 24000

`--data` is a JSONL path or a name under examples/. Output goes to
outputs/pretrain<exp_name>/<data>/<uttid>.wav plus text_compare.jsonl, as upstream writes it. Loads
once and runs every line; a failing line is reported and skipped. Without a checkpoint (`--ckpt` or
GLMTTS_CKPT) it runs the embedded engine. The engine's flags and environment variables are app.py's.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import logging
import sys
from pathlib import Path

from glmtts.files import dumps_line
from glmtts.jobs.batchfile import parse_jsonl, uttid_collisions
from glmtts.jobs.runner import FIX_DISK, ItemRunner
from glmtts.options import check_options
from glmtts.service import build_service
from glmtts.settings import Settings, add_engine_arguments
from glmtts.types import SynthesisError

_LOGGER = logging.getLogger("glmtts_inference")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Upstream's flags, then the engine's (--ckpt, --device, --dtype, --decode ...) as app.py reads them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="example_zh", help="a JSONL path, or a name under examples/ (example_zh)")
    parser.add_argument("--exp_name", default="_test", help="suffix of the output folder outputs/pretrain<exp_name>")
    parser.add_argument("--use_cache", action="store_true", help="carry earlier segments as prompt history (long text)")
    parser.add_argument("--use_phoneme", "--phoneme", dest="use_phoneme", action="store_true", help="phoneme mode")
    parser.add_argument("--sample_rate", type=int, default=24000, choices=[24000, 32000])
    parser.add_argument("--seed", type=int, default=42)
    add_engine_arguments(parser)
    return parser.parse_args(argv)


def resolve_data(data: str, examples: Path) -> Path:
    candidates = [Path(data), examples / data, examples / f"{data}.jsonl"]
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise SystemExit(f"--data {data!r}: no such file, nor examples/{data}.jsonl")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    settings = Settings.from_namespace(args)
    data = resolve_data(args.data, settings.examples)
    service = build_service(settings)
    service.load()
    try:
        options = check_options(
            service.engine,
            {"seed": args.seed, "sample_rate": args.sample_rate, "use_cache": args.use_cache, "use_phoneme": args.use_phoneme},
        )
        items = parse_jsonl(
            data.read_text(encoding="utf-8"), [*settings.allowed_roots, data.parent], service.voices.known_names()
        )
    except SynthesisError as error:
        raise SystemExit(f"{data.name}: {error}") from error
    if collisions := uttid_collisions(items):
        raise SystemExit(f"{data.name}: " + "; ".join(collisions))
    _LOGGER.info("Engine %s on %s (%s)", service.engine.name, service.device, service.engine_reason)
    out_dir = settings.outputs / f"pretrain{args.exp_name}" / data.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    runner = ItemRunner(service.pipeline, options, out_dir)  # the batch jobs' item runner: no time limit here

    failures = 0
    with (out_dir / "text_compare.jsonl").open("w", encoding="utf-8") as compare:
        for number, item in enumerate(items, start=1):
            outcome = runner.run(item)
            record, result = outcome.record, outcome.result
            if record.get("transient"):  # the disk refused: every later line would fail the same way
                raise SystemExit(
                    f"[{number}/{len(items)}] {item.uttid}: {str(record['message']).removesuffix(FIX_DISK)}; stopped"
                )
            if result is None:
                failures += 1
                _LOGGER.error("[%d/%d] %s skipped: %s", number, len(items), item.uttid, record["message"])
                continue
            compared = {
                "uttid": item.uttid,
                "syn_text": item.syn_text,
                "normalized_text": [segment.text for segment in result.segments],
                "phoneme_text": [segment.glm_text for segment in result.segments],
            }
            compare.write(dumps_line(compared) + "\n")
            _LOGGER.info(
                "[%d/%d] %s: %.1f s of audio, RTF %.3f -> %s",
                number,
                len(items),
                item.uttid,
                result.duration_s,
                result.rtf,
                out_dir / str(record["path"]),
            )
    print(f"{len(items) - failures} of {len(items)} written to {out_dir}")
    return 1 if failures == len(items) else 0


if __name__ == "__main__":
    sys.exit(main())
