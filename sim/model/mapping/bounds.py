"""Lower bounds on a GEMM's off-chip traffic, beside every figure the estimate gives.

- :func:`compulsory_bytes`: every tensor moved once: A and B read (the tensors behind them, not
  an im2col matrix), and the int32 result written and read back once when NITI's rescale must
  wait for its range and it does not fit the ``ofmap`` buffer (written once when not held).
- :func:`io_lower_bound_bytes`: the classic I/O lower bound of a matrix multiplication with a
  fast memory of ``S`` words (Hong and Kung 1981; the constant of Smith et al. 2019):
  ``2 m n k / sqrt(S) - 2 S`` words moved. The buffers are counted as words of the narrowest
  element (more words: a weaker, still valid bound) and each word as that many bytes. It holds
  for a GEMM whose operands are plain matrices; an im2col A is not one (its elements repeat),
  so a convolution gets the compulsory bound only.

:func:`lower_bound_bytes` is the larger of the two.
"""

from __future__ import annotations

import math

from nitihw.sim.model.mapping.mapper import GemmShape, Hierarchy, result_fits


def compulsory_bytes(g: GemmShape, h: Hierarchy) -> int:
    if not g.held:
        out = g.c_tensor
    else:
        out = 0 if result_fits(g, h) else 2 * g.c_tensor
    return g.a_tensor + g.b_tensor + out


def io_lower_bound_bytes(g: GemmShape, h: Hierarchy) -> int:
    """0 for a GEMM whose A or B is not a plain matrix (module docstring)."""
    plain = g.a_tensor == g.m * g.k * g.a_bytes and g.b_tensor == g.k * g.n * g.b_bytes
    if not plain:
        return 0
    word = min(g.a_bytes, g.b_bytes, g.c_bytes)
    s = (h.ifmap + h.filter + h.ofmap) // word
    if s < 1:  # no fast memory: the bound says nothing beyond the compulsory one
        return 0
    words = 2 * g.m * g.n * g.k / math.sqrt(s) - 2 * s
    return max(0, math.floor(words)) * word


def lower_bound_bytes(g: GemmShape, h: Hierarchy) -> int:
    return max(compulsory_bytes(g, h), io_lower_bound_bytes(g, h))
