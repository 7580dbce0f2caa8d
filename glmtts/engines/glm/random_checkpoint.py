"""A complete GLM-TTS checkpoint of random weights in the official layout, for tests and benchmarks.

    python -m glmtts.engines.glm.random_checkpoint OUT_DIR --size tiny|full

"tiny" builds in seconds and takes a few tens of MB; "full" has the official shapes (about 9 GB,
the LLM alone 6.2 GB in fp32).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from glmtts.engines.glm import checkpoint
from glmtts.engines.glm.campplus import write_random_campplus
from glmtts.engines.glm.flow import write_random_flow
from glmtts.engines.glm.llm import write_random_llm
from glmtts.engines.glm.speech_tokenizer import write_random_speech_tokenizer
from glmtts.engines.glm.text_tokenizer import TextTokenizer, vocab_size_for, write_random_tokenizer
from glmtts.engines.glm.vocoder import write_random_hift, write_random_vocos

_LOGGER = logging.getLogger(__name__)

SIZES = ("tiny", "full")
CAMPPLUS_PATH = f"frontend/{checkpoint.CAMPPLUS_NAME}"


def write_random_checkpoint(root: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write every part under `root` (created if needed); returns `root`."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = root / checkpoint.TEXT_TOKENIZER_DIR
    write_random_tokenizer(tokenizer_dir, size, seed=seed)
    vocab_size = vocab_size_for(size, TextTokenizer.load(tokenizer_dir).size)
    write_random_llm(root / checkpoint.LLM_DIR, size, vocab_size, seed=seed)
    write_random_speech_tokenizer(root / checkpoint.SPEECH_TOKENIZER_DIR, size, seed=seed)
    write_random_flow(root / checkpoint.FLOW_DIR, size, seed=seed)
    write_random_hift(root / checkpoint.HIFT_FILE, size, seed=seed)
    write_random_vocos(root / checkpoint.VOCOS_FILE, size, seed=seed)
    write_random_campplus(root / CAMPPLUS_PATH, size, seed=seed)
    checkpoint.validate_checkpoint(root)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    write_random_checkpoint(args.out_dir, args.size, args.seed)
    total = sum(path.stat().st_size for path in args.out_dir.rglob("*") if path.is_file())
    print(f"{args.size} checkpoint in {args.out_dir}: {total / 2**20:.1f} MiB, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
