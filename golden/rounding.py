"""The integer primitives of numerics.md §2: bit-width, shift, shift-rounding, saturation.

Every rounding rule in nitihw exists here, once. The RTL rescale lanes, the GPU kernels and the
cycle model are all checked against these functions.
"""

from __future__ import annotations

import numpy as np

from nitihw.golden import scalars

#: The symmetric int8 range: -128 never appears.
INT8_MAX = 127

#: Operand widths the integer training profiles take (numerics.md §2, "Operand width").
OPERAND_BITS = range(2, 9)


def value_limit(bits: int = 8) -> int:
    """The largest magnitude of a ``bits``-wide operand: ``2^(bits-1) - 1`` (127 for int8).

    The range is symmetric, so the most negative two's-complement value never appears."""
    if bits not in OPERAND_BITS:
        raise ValueError(f"operand bits must be in 2..8, got {bits!r}")
    return (1 << (bits - 1)) - 1


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
    return magnitude_bitwidth(max_abs(x))


def magnitude_bitwidth(m: int) -> int:
    """:func:`bitwidth` of a tensor whose largest magnitude is ``m``."""
    return 0 if m == 0 else (m - 1).bit_length()


def range_shift(x_or_bitwidth, bits: int = 7):
    """The rescale shift of numerics.md §2: ``max(bitwidth(x) - bits, 0)``.

    The smallest shift that brings the tensor into ``bits`` magnitude bits. Accepts a tensor or
    an already computed bit-width (an int, or a :class:`~nitihw.golden.scalars.StepInt` a
    device keeps: the shift is then computed there too), so the range unit's output can be fed
    in directly.

    Example: a tensor whose largest magnitude is 1004 has bit-width 10 and shift 3.
    """
    if isinstance(x_or_bitwidth, scalars.StepInt):
        return scalars.maximum(x_or_bitwidth - bits, 0)
    bw = int(x_or_bitwidth) if scalars.is_host_int(x_or_bitwidth) else bitwidth(x_or_bitwidth)
    return max(bw - bits, 0)


def saturate(x: np.ndarray, limit: int = INT8_MAX) -> np.ndarray:
    """Clamp to the symmetric range ``[-limit, limit]`` (int8 by default), returned as int8
    when ``limit <= 127``, otherwise as int64. Example: ``saturate([128, -200]) == [127, -127]``."""
    out = np.clip(np.asarray(x), -limit, limit)
    return out.astype(np.int8 if limit <= INT8_MAX else np.int64)


def trunc_div(x, d) -> np.ndarray:
    """Integer division rounding toward zero (C's ``/``; NumPy's ``//`` floors), as int64.

    ``d`` is a positive integer or an array of them, broadcast against ``x``. This is the one
    division NITRO-D needs (its scaling layer, LeakyReLU and IntegerSGD).
    Example: ``trunc_div([7, -7], 2) == [3, -3]``.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"trunc_div needs an integer array, got dtype {x.dtype}")
    d = np.asarray(d, np.int64)
    if d.size and int(d.min()) < 1:
        raise ValueError(f"trunc_div needs positive divisors, got {int(d.min())}")
    x = x.astype(np.int64)
    q = np.abs(x) // d
    return np.where(x < 0, -q, q)


def wrap(x, bits: int) -> np.ndarray:
    """Two's-complement wrap to ``bits`` (what an int32 NumPy array does silently), as int64."""
    x = np.asarray(x).astype(np.int64)
    half = np.int64(1) << np.int64(bits - 1)
    return ((x + half) & ((half << np.int64(1)) - 1)) - half


def _signed_work_type(x: np.ndarray) -> np.ndarray:
    """x as int32 when every value fits (the common case: 32-bit accumulators), else int64."""
    if x.dtype.kind == "i" and x.dtype.itemsize in (4, 8):
        return x
    if x.dtype.kind == "u" and x.dtype.itemsize >= 4:
        if x.size and int(x.max()) >= 2**63:
            raise ValueError("shift_round: values above 2**63 - 1 are not supported")
        return x.astype(np.int64)
    return x.astype(np.int32)


def shift_round(x, shift: int, mode: str, rand=None, limit: int = INT8_MAX) -> np.ndarray:
    """Shift right by ``shift`` with rounding, saturating to int8 (numerics.md §2).

    Works in sign-magnitude: ``m = |x|``, ``q = m >> s``, ``r = m & (2^s - 1)``, and the result
    is ``sign(x) * min(q + up, limit)``, ``limit`` 127 unless a narrower operand width asks for
    less (:func:`value_limit`). With ``s == 0`` the result is ``clamp(x, -limit, limit)``.
    ``up`` is, per ``mode``:

    - ``round``: ``r >= 2^(s-1)`` (round half away from zero).
    - ``psto``: ``h = s // 2``, ``P = r >> h``, ``R = r & (2^h - 1)``, ``R = 2R`` if ``s`` is odd;
      ``up = P > R`` (NITI's deterministic pseudo-stochastic rounding).
    - ``trunc``: never (truncation toward zero).
    - ``sto``: ``r > rand``, where ``rand`` holds uniform integers in ``[0, 2^s)``, one per element
      (draw them with :func:`nitihw.golden.counter_hash`).
    - ``rne``: round half to even.

    A negative ``shift`` is a left shift (WAGE scales small tensors up): exact, so the mode
    does not matter, then saturated: ``sign(x) * min(|x| << -shift, limit)``.

    Parameters
    ----------
    x : integer array (any integer dtype)
    shift : int in -62..62 (negative: left shift)
    mode : one of :data:`ROUNDING_MODES`
    rand : integer array of ``x``'s shape, only for ``sto``
    limit : int in 1..127, the saturation bound (``value_limit(bits)`` for ``bits``-wide operands)

    Examples: ``round(1004, 3) = 126``, ``round(-5, 1) = -3``, ``psto(1012, 4) = 64``,
    ``psto(7, 2) = 1``, ``psto(-1012, 4) = -64``.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"shift_round needs an integer array, got dtype {x.dtype}")
    s = int(shift)
    if s != shift or s < -62 or s > 62:
        raise ValueError(f"shift must be an integer in -62..62, got {shift!r}")
    if mode not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; expected one of {ROUNDING_MODES}")
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or not 0 < limit < 128:
        raise ValueError(f"limit must be an integer in 1..127, got {limit!r}")
    if mode == "sto":
        if rand is None:
            raise ValueError("mode 'sto' needs rand: uniform integers in [0, 2**shift)")
        rand = np.asarray(rand)
        if rand.shape != x.shape:
            raise ValueError(f"rand has shape {rand.shape}, expected {x.shape}")
    limit = int(limit)
    if s == 0:
        return saturate(x, limit)
    if x.ndim == 0:  # NumPy turns 0-d results into scalars, which cannot be written in place
        one = None if rand is None else rand.reshape(1)
        return shift_round(x.reshape(1), s, mode, one, limit).reshape(())
    if s < 0:  # |x| << L <= limit exactly when |x| <= limit >> L
        big = np.abs(x.astype(np.int64))
        mag = np.where(big > (limit >> -s), limit, big << min(-s, 7)).astype(np.int8)
        return _signed(mag, x)

    x = _signed_work_type(x)
    ut = np.dtype(f"u{x.dtype.itemsize}").type
    if s >= 8 * x.dtype.itemsize:  # every magnitude is below 2^s: q = 0, r = m
        x = x.astype(np.int64)
        ut = np.uint64
    m = np.abs(x).view(ut.__name__)  # |INT_MIN| is right as unsigned
    if mode == "round":
        # q + (r >= 2^(s-1)) == (m + 2^(s-1)) >> s, and m + 2^(s-1) < 2^bits as unsigned
        q = m + ut(1 << (s - 1))
        q >>= ut(s)
    else:
        q = m >> ut(s)
        r = m & ut((1 << s) - 1)
        if mode == "psto":
            h = s // 2
            rr = r & ut((1 << h) - 1)
            if s % 2:
                rr <<= ut(1)
            up = (r >> ut(h)) > rr
        elif mode == "trunc":
            up = None
        elif mode == "sto":
            up = r > rand.astype(ut)
        else:  # rne
            half = ut(1 << (s - 1))
            up = (r > half) | ((r == half) & ((q & ut(1)) == 1))
        if up is not None:
            q += up
    np.minimum(q, ut(limit), out=q)
    return _signed(q.astype(np.int8), x)


def _signed(mag: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``sign(x) * mag`` for int8 magnitudes, in place and branch-free: with ``n = -1`` where
    ``x < 0`` and ``0`` elsewhere, ``(mag ^ n) - n`` is ``-mag`` or ``mag``."""
    n = (x < 0).view(np.int8)
    np.negative(n, out=n)
    mag ^= n
    mag -= n
    return mag
