"""The specification the proofs hold the Datapath's blocks to, written from docs/numerics.md.

Each function builds, as Amaranth expressions, what numerics.md says a block must give for
one element, in the plainest form of the rule, not the hardware's:

- :func:`shift_round`: numerics.md §2, ``sign(x) * min(q + up, limit)`` with ``q`` and ``r``
  the quotient and remainder of ``|x|`` by ``2^s`` (``r`` found by subtraction, not by a
  mask) and ``up`` from the mode's row of the table;
- :func:`shift_left`: ``sign(x) * min(|x| * 2^s, limit)`` in a vector wide enough for every
  shift (the lanes compare ``|x|`` with ``limit >> s`` instead);
- :func:`update`, :func:`master_update`: numerics.md §3's clamps, and ``psto(W16, 8)``;
- :func:`bitwidth`: ``(max|T| - 1).bit_length()`` as the number of powers of two below
  ``max|T|`` (the range unit ORs ``|x| - 1`` instead).

Nothing here is used by the RTL; the RTL uses nothing here. :mod:`nitihw.sim.prove.harness`
puts each block beside its rule and asks a solver whether any input tells them apart.
"""

from __future__ import annotations

from amaranth import Cat, Const, Mux

from nitihw.rtl.rescale import RoundingMode

#: the master weights' bound and fraction bits (numerics.md §3)
MASTER_LIMIT = 2**15 - 1
MASTER_FRACTION_BITS = 8


def magnitude(x, width: int):
    """``(negative, |x|)`` of a signed ``width``-bit value; ``|x|`` has ``width`` bits
    (``|INT_MIN| = 2^(width-1)`` fits)."""
    neg = x < 0
    return neg, Mux(neg, -x, x).as_unsigned()[:width]


def rounds_up(mode, q, r, s, rand, max_shift: int):
    """``up`` of numerics.md §2's table for remainder ``r`` of a shift by ``s`` (``q`` the
    quotient), each mode's row as written there; ``{mode: up}`` and the selected bit."""
    wide = max_shift + 2
    pow_s = Const(1, wide) << s  # 2^s
    two_r = Cat(Const(0, 1), r)  # 2r: compared with 2^s, no half needed
    h = s >> 1  # s // 2
    p = r >> h
    big_r = r - (p << h)  # r mod 2^h, by subtraction
    big_r = Mux(s[0], big_r << 1, big_r)  # if s is odd: R = 2R
    ups = {
        RoundingMode.ROUND: (s != 0) & (two_r >= pow_s),  # r >= 2^(s-1)
        RoundingMode.PSTO: p > big_r,
        RoundingMode.TRUNC: Const(0, 1),
        RoundingMode.STO: r > rand,
        RoundingMode.RNE: (s != 0) & ((two_r > pow_s) | ((two_r == pow_s) & q[0])),
    }
    up = Const(0, 1)
    for code, bit in ups.items():
        up = Mux(mode == code, bit, up)
    return ups, up


def shift_round(x, s, mode, rand, *, width: int, max_shift: int, limit: int):
    """numerics.md §2 for one signed ``width``-bit ``x``: ``(result, {mode: up}, saturated)``;
    ``result`` is ``sign(x) * min(q + up, limit)``, ``q = |x| >> s``, ``r = |x| - q * 2^s``."""
    neg, m = magnitude(x, width)
    q = m >> s
    r = (m - (q << s))[:width]
    ups, up = rounds_up(mode, q, r, s, rand, max_shift)
    total = q + up
    saturated = total > limit
    mag = Mux(saturated, limit, total)
    return Mux(neg, -mag, mag).as_signed()[:8].as_signed(), ups, saturated


def shift_left(x, s, *, width: int, max_shift: int, limit: int):
    """WAGE's left shift: ``sign(x) * min(|x| * 2^s, limit)``, exact: ``(result, saturated)``."""
    neg, m = magnitude(x, width)
    wide = Cat(m, Const(0, max_shift + 1)) << s  # never loses a bit
    saturated = wide > limit
    mag = Mux(saturated, limit, wide[:8])
    return Mux(neg, -mag, mag).as_signed()[:8].as_signed(), saturated


def clamp(value, bound):
    """``clamp(value, -bound, bound)`` of a signed value."""
    return Mux(value > bound, bound, Mux(value < -bound, -bound, value))


def update(w, g, limit):
    """numerics.md §3, int8 weights: ``W = clamp(W - g, -limit, limit)``."""
    diff = w.as_signed() - g.as_signed()  # 9 bits: no wrap
    return clamp(diff, limit.as_unsigned())


def master_update(w16, g):
    """16-bit master weights: ``W16 = clamp(W16 - g, -32767, 32767)`` and the forward weight
    ``psto(W16, 8)`` (at most 128 before the clamp to 127): ``(W16, W8)``."""
    w = clamp(w16.as_signed() - g.as_signed(), MASTER_LIMIT)
    w8, _, _ = shift_round(
        w,
        Const(MASTER_FRACTION_BITS, 4),
        Const(RoundingMode.PSTO.value, 3),
        Const(0, 1),
        width=17,
        max_shift=MASTER_FRACTION_BITS,
        limit=127,
    )
    return w, w8


def bitwidth(max_magnitude, width: int):
    """``0 if M == 0 else (M - 1).bit_length()`` for ``M = max_magnitude`` (``width`` bits),
    as the number of ``k`` with ``2^k < M``."""
    count = Const(0, range(width + 1))
    for k in range(width):
        count = count + (max_magnitude > (1 << k))
    return count


__all__ = [
    "MASTER_FRACTION_BITS",
    "MASTER_LIMIT",
    "bitwidth",
    "clamp",
    "magnitude",
    "master_update",
    "rounds_up",
    "shift_left",
    "shift_round",
    "update",
]
