"""The integer primitives of numerics.md §2: bit-width, shift, shift-rounding, saturation.

Every rounding rule in nitihw exists here, once. The RTL rescale lanes, the GPU kernels and the
cycle model are all checked against these functions.
"""

from __future__ import annotations

import numpy as np

#: The symmetric int8 range: -128 never appears.
INT8_MAX = 127

#: Shift-rounding modes (numerics.md §2).
ROUNDING_MODES = ("round", "psto", "trunc", "sto", "rne")


def max_abs(x: np.ndarray) -> int:
    """Largest magnitude in ``x`` as a Python int (0 for an empty array).

    Computed as ``max(max(x), -min(x))`` so no ``abs`` temporary is made and the most negative
    value of a signed dtype does not wrap.
    """
    x = np.asarray(x)
    if x.size == 0:
        return 0
    return max(int(x.max()), -int(x.min()))


def bitwidth(x: np.ndarray) -> int:
    """Bit-width of a tensor: ``0 if max|x| == 0 else (max|x| - 1).bit_length()``.

    This is the exact integer form of the reference's ``ceil(log2(max|x|))`` (which differs in
    float32 above 2^21). Note ``max|x| <= 2**bitwidth(x)``, with equality possible.

    Example: ``bitwidth([1]) == 0``, ``bitwidth([-128]) == 7``, ``bitwidth([129]) == 8``.
    """
    m = max_abs(x)
    return 0 if m == 0 else (m - 1).bit_length()


def range_shift(x_or_bitwidth, bits: int = 7) -> int:
    """The rescale shift of numerics.md §2: ``max(bitwidth(x) - bits, 0)``.

    The smallest shift that brings the tensor into ``bits`` magnitude bits. Accepts a tensor or
    an already computed bit-width (an int), so the range unit's output can be fed in directly.

    Example: a tensor whose largest magnitude is 1004 has bit-width 10 and shift 3.
    """
    bw = x_or_bitwidth if isinstance(x_or_bitwidth, int) else bitwidth(x_or_bitwidth)
    return max(bw - bits, 0)


def saturate(x: np.ndarray, limit: int = INT8_MAX) -> np.ndarray:
    """Clamp to the symmetric range ``[-limit, limit]`` (int8 by default), returned as int8
    when ``limit <= 127``, otherwise as int64. Example: ``saturate([128, -200]) == [127, -127]``."""
    out = np.clip(np.asarray(x), -limit, limit)
    return out.astype(np.int8 if limit <= INT8_MAX else np.int64)


def _unsigned_magnitude(x: np.ndarray) -> np.ndarray:
    """|x| as the unsigned type of the same width (so |INT_MIN| is right)."""
    m = np.abs(x)
    return m.view(np.dtype(f"u{x.dtype.itemsize}"))


def shift_round(x, shift: int, mode: str, rand=None) -> np.ndarray:
    """Shift right by ``shift`` with rounding, saturating to int8 (numerics.md §2).

    Works in sign-magnitude: ``m = |x|``, ``q = m >> s``, ``r = m & (2^s - 1)``, and the result
    is ``sign(x) * min(q + up, 127)``. With ``s == 0`` the result is ``clamp(x, -127, 127)``.
    ``up`` is, per ``mode``:

    - ``round``: ``r >= 2^(s-1)`` (round half away from zero).
    - ``psto``: ``h = s // 2``, ``P = r >> h``, ``R = r & (2^h - 1)``, ``R = 2R`` if ``s`` is odd;
      ``up = P > R`` (NITI's deterministic pseudo-stochastic rounding).
    - ``trunc``: never (truncation toward zero).
    - ``sto``: ``r > rand``, where ``rand`` holds uniform integers in ``[0, 2^s)``, one per element
      (draw them with :func:`nitihw.golden.counter_hash`).
    - ``rne``: round half to even.

    Parameters
    ----------
    x : integer array (any signed integer dtype)
    shift : int >= 0
    mode : one of :data:`ROUNDING_MODES`
    rand : integer array of ``x``'s shape, only for ``sto``

    Examples: ``round(1004, 3) = 126``, ``round(-5, 1) = -3``, ``psto(1012, 4) = 64``,
    ``psto(7, 2) = 1``, ``psto(-1012, 4) = -64``.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"shift_round needs an integer array, got dtype {x.dtype}")
    if x.dtype.kind == "u" or x.dtype.itemsize < 8:
        x = x.astype(np.int64)
    s = int(shift)
    if s != shift or s < 0 or s > 62:
        raise ValueError(f"shift must be an integer in 0..62, got {shift!r}")
    if mode not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; expected one of {ROUNDING_MODES}")
    if mode == "sto":
        if rand is None:
            raise ValueError("mode 'sto' needs rand: uniform integers in [0, 2**shift)")
        rand = np.asarray(rand)
        if rand.shape != x.shape:
            raise ValueError(f"rand has shape {rand.shape}, expected {x.shape}")
    if s == 0:
        return saturate(x)

    m = _unsigned_magnitude(x)
    q = m >> np.uint64(s)
    r = m & np.uint64((1 << s) - 1)
    if mode == "round":
        up = r >= np.uint64(1 << (s - 1))
    elif mode == "psto":
        h = s // 2
        p = r >> np.uint64(h)
        rr = r & np.uint64((1 << h) - 1)
        if s % 2:
            rr = rr << np.uint64(1)
        up = p > rr
    elif mode == "trunc":
        up = False
    elif mode == "sto":
        up = r > rand.astype(np.uint64)
    else:  # rne
        half = np.uint64(1 << (s - 1))
        up = (r > half) | ((r == half) & ((q & np.uint64(1)) == 1))
    mag = np.minimum(q + np.asarray(up, dtype=np.uint64), np.uint64(INT8_MAX)).astype(np.int8)
    return np.where(x < 0, -mag, mag).astype(np.int8)
