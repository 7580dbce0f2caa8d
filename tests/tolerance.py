"""Tolerances for float32 results compared with arrays that another machine's run produced.

Where the arithmetic is the same, a CPU gives the same bits every time; another CPU may not. A
different SIMD width, BLAS or oneDNN kernel, or thread count sums the K products of a dot product or
convolution in another order, and each order rounds differently. Reordering a float32 sum of K terms
of magnitude S moves its result by about sqrt(K) * eps32 * S (rounding errors of the partial sums
add like a random walk; Higham and Mary, "A new approach to probabilistic rounding error analysis",
2019), K * eps32 * S at the very worst, with eps32 = 2^-23. A network of several such stages in
series adds each stage's error and carries it through the later stages, each multiplying it by at
most its gain (its largest slope): `depth_gain` counts the stages times that gain, and any other
amplification the computation has (a phase that sin() reads, guidance weights), as each caller
states beside its call.

So the tolerance is depth_gain * sqrt(K) * eps32 * max|reference|, K the longest contraction of the
computation. Against the stored GLM-TTS arrays, with the kernels of other CPUs (README, "Tests on
any CPU"; an AVX-512/AMX machine included), the deviations stayed 4 to 200 times below it; a weight
of the wrong sign, a missing scale or a frame off by one moved the results 2 to 10,000 times above.
"""

from __future__ import annotations

import math

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 2^-23


def float32_tolerance(reference: np.ndarray, accumulations: int, depth_gain: float = 1.0) -> float:
    """Absolute tolerance for a float32 result that a reordered computation may reproduce: K =
    `accumulations` terms per sum, `depth_gain` as the module doc says, scaled by max|reference|."""
    scale = float(np.max(np.abs(reference)))
    return depth_gain * math.sqrt(accumulations) * EPS32 * scale
