"""Weight initialisation: a one-time float step on the host, then integers (niti.md §7).

Xavier-uniform float weights from the run seed, quantised as the 2021 reference does:
``r = max|w|``, ``e_w = ceil(log2 r) - 7``, ``W = round_half_even(w / r * 127)``. Every backend
receives these same integers. The float32 twin starts from the same float draw ``w``.
"""

from __future__ import annotations

import math

import numpy as np

from nitihw.golden.rounding import value_limit


def xavier_uniform(rng: np.random.Generator, shape: tuple, fan_in: int, fan_out: int):
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def quantize_weights(w: np.ndarray, bits: int = 8) -> tuple[np.ndarray, int]:
    """``(W int8, e_w)`` from float weights: the largest magnitude maps to +-127, or for
    ``bits``-wide operands to ``+-(2^(bits-1) - 1)`` with ``e_w = ceil(log2 r) - (bits - 1)``."""
    r = float(np.max(np.abs(w)))
    if r == 0.0:
        return np.zeros(w.shape, np.int8), 0
    e_w = math.ceil(math.log2(r)) - (bits - 1)
    return np.rint(w / r * value_limit(bits)).astype(np.int8), e_w
