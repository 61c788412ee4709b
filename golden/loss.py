"""NITI's integer cross-entropy error (numerics.md §3, "Loss").

The softmax is taken in base 2 with integer exponents, normalised to 2^11, and the one-hot
target is subtracted so each row sums to exactly zero; the result is rounded to int8 with a
fixed shift of 4 (for ``b``-bit operands, ``12 - b``: the shift of numerics.md §2 for a
tensor of bit-width 11). There is no division by the batch size: the weight-gradient shift
renormalises the scale.
"""

from __future__ import annotations

import numpy as np

from nitihw.golden.rounding import shift_round, value_limit

LOG2E_Q15 = 47274  # round(log2(e) * 2^15) = 1.442688 * 2^15
SOFTMAX_BITS = 11
ERROR_SHIFT = 4  # for int8 errors; error_shift(bits) in general


def error_shift(bits: int = 8) -> int:
    """The loss error's fixed shift for ``bits``-wide operands: ``Q`` has magnitudes up to
    ``2^11`` (bit-width 11), so ``range_shift`` gives ``11 - (bits - 1)``; 4 for int8."""
    return SOFTMAX_BITS + 1 - bits


def _trunc_shift(x: np.ndarray, s: int) -> np.ndarray:
    """trunc(x / 2^s), truncation toward zero (sign-magnitude)."""
    return np.sign(x) * (np.abs(x) >> s)


def softmax_q11(logits, exponent: int) -> np.ndarray:
    """The unnormalised integer ``P`` of numerics.md §3 for int8 ``logits`` at ``exponent``."""
    a = np.asarray(logits).astype(np.int64)
    e = int(exponent)
    if e > -7:
        s = _trunc_shift(a * LOG2E_Q15, 15)
        if e >= 0:
            # Only differences to the row max matter and any difference of 2^4 or more already
            # lands below zero (clipped to 0), so capping e keeps the result exact and int64-safe.
            s = s << min(e, 16)
        else:
            s = _trunc_shift(s, -e)
        s = s - (s.max(axis=1, keepdims=True) - 10)
        s = np.maximum(s, 0)
        return (np.int64(1) << s) - 1
    if e >= -20:
        return (np.int64(1) << (1 - 2 * e)) + a * (np.int64(1) << (1 - e)) + a * a
    # Very small exponents: the exact values outgrow int64, so use Python integers.
    ao = a.astype(object)
    return (1 << (1 - 2 * e)) + ao * (1 << (1 - e)) + ao * ao


def cross_entropy_error(
    logits, exponent: int, labels, rounding: str = "psto", rand=None, bits: int = 8
):
    """Integer cross-entropy error of int8 ``logits`` (B, C) at ``exponent`` for ``labels`` (B,).

    ``S = rowsum(P)``; ``Q = floor(P * 2^11 / S)``; ``Q[b, t_b] -= rowsum(Q[b])``;
    ``err = shift_round(Q, 4, rounding, rand)``. Profile ``niti`` rounds with ``psto``;
    ``niti-ref`` with ``sto`` (``rand``: uniform integers in [0, 16) per element). With
    ``bits``-wide operands the shift is :func:`error_shift` and the error saturates to
    ``value_limit(bits)``.

    Example: logits ``[[100, -20, 60, 127, 0]]``, exponent -4, label 2 give
    ``P = [255, 0, 15, 1023, 0]``, ``Q = [403, 0, -2023, 1620, 0]`` before the final shift.
    Returns int8 (B, C).
    """
    a = np.asarray(logits)
    if a.ndim != 2:
        raise ValueError(f"logits must be (batch, classes), got shape {a.shape}")
    labels = np.asarray(labels)
    if labels.shape != (a.shape[0],):
        raise ValueError(f"labels must have shape ({a.shape[0]},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= a.shape[1]):
        raise ValueError(f"labels must be in [0, {a.shape[1]}), got {labels.min()}..{labels.max()}")
    p = softmax_q11(a, exponent)
    total = p.sum(axis=1, keepdims=True)
    q = (p << SOFTMAX_BITS) // total if p.dtype != object else (p * 2**SOFTMAX_BITS) // total
    rows = np.arange(a.shape[0])
    q[rows, labels] -= q.sum(axis=1)
    return shift_round(q.astype(np.int64), error_shift(bits), rounding, rand, value_limit(bits))
