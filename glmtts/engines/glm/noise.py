"""Seeded noise addressed by position, for the flow and the vocoder when they run in blocks.

Upstream draws the flow's noise and the vocoder's source noise from the global random stream after
the LLM has finished. A stream that turns tokens into audio while the LLM still decodes cannot do
that, so the fast and streaming paths draw them from tapes instead: row r of a tape is the same
whatever was read before it, so audio made block by block and audio made in one pass see the same
noise, and a seed gives the same audio run to run (and on CPU and GPU alike: tapes are drawn on the
CPU).
"""

from __future__ import annotations

import hashlib

import torch

DEFAULT_BLOCK_ROWS = 1024


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one purpose ("flow", "vocoder", ...) derived from a request's seed."""
    digest = hashlib.sha256(f"{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class NoiseTape:
    """Standard-normal rows [width] of an endless tape, drawn in blocks of `block_rows` from its own
    CPU generator; `rows(start, end)` gives the same values whatever was read before."""

    def __init__(self, seed: int, width: int, block_rows: int = DEFAULT_BLOCK_ROWS):
        if width < 1 or block_rows < 1:
            raise ValueError(f"bad tape shape: width {width}, block rows {block_rows}")
        self.width = width
        self.block_rows = block_rows
        self._generator = torch.Generator().manual_seed(seed)
        self._blocks: list[torch.Tensor | None] = []

    def rows(self, start: int, end: int) -> torch.Tensor:
        """[end - start, width] float32 on the CPU."""
        if not 0 <= start <= end:
            raise ValueError(f"bad tape range {start}:{end}")
        while len(self._blocks) * self.block_rows < end:
            self._blocks.append(torch.randn((self.block_rows, self.width), generator=self._generator))
        first, last = start // self.block_rows, -(-end // self.block_rows)
        blocks = self._blocks[first:last]
        if any(block is None for block in blocks):
            raise ValueError(f"rows before {start} were released")
        joined = torch.cat(blocks) if blocks else torch.zeros(0, self.width)
        offset = start - first * self.block_rows
        return joined[offset : offset + end - start]

    def release_before(self, row: int) -> None:
        """Free the blocks that hold only rows before `row` (a stream will not read them again)."""
        for index in range(min(row // self.block_rows, len(self._blocks))):
            self._blocks[index] = None
