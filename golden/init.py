"""Weight initialisation: a one-time float step on the host, then integers (niti.md §7).

Xavier-uniform float weights from the run seed, quantised as the 2021 reference does:
``r = max|w|``, ``e_w = ceil(log2 r) - 7``, ``W = round_half_even(w / r * 127)``. Every backend
receives these same integers. The float32 twin starts from the same float draw ``w``.
"""

from __future__ import annotations

import math

import numpy as np

from nitihw.golden import models as M
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


def init_float_weights(spec: M.ModelSpec, seed: int) -> list[np.ndarray]:
    """Xavier-uniform float weights of every weight layer, in layer order, from ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for _i, layer, in_shape, out_shape in M.layer_shapes(spec):
        if isinstance(layer, M.Conv):
            k, cin, cout = layer.kernel, in_shape[2], layer.out_channels
            out.append(xavier_uniform(rng, (cout, k, k, cin), cin * k * k, cout * k * k))
        elif isinstance(layer, M.Linear):
            out.append(xavier_uniform(rng, (out_shape[0], in_shape[0]), in_shape[0], out_shape[0]))
    return out
