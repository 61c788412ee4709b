"""What NITI's own 2021 code computes where it leaves the exact integer contract (profile
``niti-compat``; numerics.md, "Conformance with NITI's code").

NITI's 2021 code (github.com/wangmaolin/niti, commit d097335, run on torch 1.7.0 as its
Dockerfile does) agrees with the golden model on every rounding function and layer step, except
in these places, each reproduced here:

1. **Range in float32.** ``RangeEstimate`` is ``ceil(log2(float32(max|x|)))`` in float32:
   :func:`float32_bitwidth`. One bit short when ``2^k < max|x| <= 2^k + d_k`` (``k >= 21``).
2. **Unsaturated int8 casts.** Where the shift is 0, ``act_calc``/``err_calc`` and
   ``grad_calc`` cast int32 to int8 without clipping: :func:`wrap_int8` (+128 becomes -128; a
   weight-gradient above 127 with ``bitwidth <= mu`` wraps).
3. **The float32 loss.** ``ti_loss.py`` divides with ``/``, which torch 1.7 does in float32:
   :func:`loss_2021`. Its rows do not sum to zero, and the label entry is golden's + 1 whenever
   its fraction is not zero.
4. **True stochastic rounding of the loss error** (``StoShift`` with ``torch.randint``): the
   random integers are an explicit argument of :func:`loss_2021` (the training loop draws them
   with ``counter_hash``; a test can hand it the bits NITI drew).
5. **Convolution sums through float32.** The CUTLASS convolutions' epilogue
   (``LinearCombinationClamp``, float32 compute) rounds every int32 sum to float32 before it is
   written back: :func:`float32_sums` (exact below ``2^24``).

Every function takes and returns arrays of the module ``xp`` (NumPy, or CuPy for the GPU
backend) except :func:`loss_2021`, which runs on the host.
"""

from __future__ import annotations

import functools

import numpy as np

from nitihw.golden import loss as _loss
from nitihw.golden.rounding import shift_round

#: float32's significand: integers up to 2^24 are exact
FLOAT32_EXACT = 1 << 24


def float32_round_int(m: int) -> int:
    """The integer ``float32(m)`` (round to nearest, ties to even) for ``m >= 0``."""
    if m <= FLOAT32_EXACT:
        return m
    drop = m.bit_length() - 24  # bits below float32's 24-bit significand
    q, r = divmod(m, 1 << drop)
    half = 1 << (drop - 1)
    if r > half or (r == half and q & 1):
        q += 1
    return q << drop


@functools.cache
def _log2_threshold(j: int) -> int:
    """The largest integer ``X`` whose float32 ``log2`` rounds to ``j`` (not above it): the
    correctly rounded float32 of ``log2 X`` is ``j`` while ``log2 X - j <= ulp(j) / 2``, with
    ``ulp(j) = 2^(floor(log2 j) - 23)``."""
    from decimal import ROUND_FLOOR, Decimal, localcontext

    with localcontext() as ctx:  # 60 digits here only, not for the caller's decimals
        ctx.prec = 60
        half_ulp = Decimal(2) ** (j.bit_length() - 1 - 24)
        # X <= 2^j * 2^half_ulp; ties are impossible (2^half_ulp is irrational)
        return int((Decimal(2) ** j * Decimal(2) ** half_ulp).to_integral_value(ROUND_FLOOR))


def float32_bitwidth(m: int) -> int:
    """NITI's ``TensorBitwidth``: ``ceil(log2(float32(m)))`` computed in float32, for a
    tensor whose largest magnitude is ``m`` (0 for ``m == 0``).

    ``m`` is rounded to float32, then ``log2`` is correctly rounded to float32 and its ceiling
    taken. That equals the exact ``(m - 1).bit_length()`` except when ``2^k < float32(m) <=
    2^k * 2^(ulp(k)/2)``: then it is ``k``, one bit short. The smallest such ``k`` is 21
    (``2,097,153``: 21, golden 22); ``d_k``, the largest excess, is 1, 2, 5 for ``k`` = 21, 22,
    23 and 703 for ``k = 30`` (float32's own rounding of ``m`` above ``2^24`` included).
    """
    m = int(m)
    if m < 0:
        raise ValueError(f"a magnitude is >= 0, got {m}")
    if m == 0:
        return 0
    x = float32_round_int(m)
    j = x.bit_length() - 1  # 2^j <= x < 2^(j+1)
    if x == 1 << j or x <= _log2_threshold(j):
        return j
    return j + 1


def wrap_int8(x, xp=np):
    """torch's ``int32.type(torch.int8)``: the low 8 bits, two's complement (128 -> -128)."""
    return xp.asarray(x).astype(xp.int8)


def float32_sums(acc, xp=np):
    """Integer sums as CUTLASS's float32 epilogue writes them back: rounded to the nearest
    float32 (ties to even), so exact up to ``2^24`` and the low bits lost above."""
    acc = xp.asarray(acc)
    return acc.astype(xp.float32).astype(xp.int64)


def _f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def loss_2021_q(logits, exponent: int, labels) -> np.ndarray:
    """The ``int32`` tensor NITI's 2021 ``TiLoss`` hands to ``StoShift``: the integer
    formulation of :func:`nitihw.golden.loss.cross_entropy_error` with every ``/`` done as
    torch 1.7 does it (true division in float32), step for step:

    - ``e > -7``: ``s = a * 47274 / 2^15`` (float32), scaled by ``2^e`` (float32), the row max
      moved to 10, clipped at 0, ``P = 2^s - 1`` (float32, fractional exponents);
    - ``e <= -7``: ``P = 2^(1-2e) + a 2^(1-e) + a^2`` in int64 (wrapping as torch's int64 does);
    - ``S = rowsum(trunc(P))`` (int64); ``Q = P * 2^11 / S`` in float32;
      ``Q[b, t] -= rowsum(trunc(Q))``; ``.type(int32)`` truncates toward zero.

    ``2^s`` is computed in float64 and rounded to float32 (correctly rounded); NITI's came from
    the platform's ``powf``, which may differ in the last place.
    """
    a = np.asarray(logits).astype(np.int64)
    labels = np.asarray(labels)
    e = int(exponent)
    rows = np.arange(a.shape[0])
    with np.errstate(over="ignore"):
        if e > -7:
            s = _f32(a * 47274) / np.float32(2**15)
            s = s * np.float32(2.0**e) if e >= 0 else s / np.float32(2.0**-e)
            offset = s.max(axis=1) - np.float32(10)
            s = s - offset[:, None]
            s = np.maximum(s, np.float32(0))
            p = _f32(np.exp2(s.astype(np.float64))) - np.float32(1)
            total = np.trunc(p).astype(np.int64).sum(axis=1)
            q = p * np.float32(2**11) / _f32(total)[:, None]
        else:
            p = np.int64(2) ** np.int64(1 - 2 * e) + a * np.int64(2) ** np.int64(1 - e) + a * a
            total = p.sum(axis=1)
            q = _f32(p * np.int64(2**11)) / _f32(total)[:, None]
    q = q.astype(np.float32)
    q[rows, labels] -= _f32(np.trunc(q).astype(np.int64).sum(axis=1))
    return np.trunc(q).astype(np.int32)


def loss_2021(logits, exponent: int, labels, rand) -> np.ndarray:
    """NITI 2021's loss error: :func:`loss_2021_q` then ``StoShift(Q, 4)`` with ``rand``,
    uniform integers in ``[0, 16)`` per element (the ``torch.randint`` draw). int8 (B, C)."""
    q = loss_2021_q(logits, exponent, labels)
    return shift_round(q, _loss.ERROR_SHIFT, "sto", np.asarray(rand))
