"""Divide lanes: NITRO-D's truncating divisions by constants, one element per lane per cycle.

NITRO-D divides by numbers that are not powers of two (its scaling layer by ``2^8 * fan_in``,
IntegerSGD by ``lr_inv * amp`` and ``decay_inv``). A divisor is constant for a whole tensor,
so each lane multiplies by its reciprocal instead of dividing: for ``0 <= m < 2^N`` and
``l = ceil(log2 d)``, ``floor(m / d) == (m * M) >> (N + l)`` with ``M = ceil(2^(N+l) / d)``
(Granlund and Montgomery, 1994, theorem 4.2: it holds because ``M * d - 2^(N+l) < d <= 2^l``).
``M`` has ``N + 1`` bits. The result is exactly :func:`nitihw.golden.rounding.trunc_div`,
applied to the magnitude with the sign put back.

Every beat gives two results (the Datapath returns the one its command asks for):

- scale: ``y = saturate(trunc_div(x, d0))`` to int8 (the NITRO scaling layer);
- sgd: ``w' = wrap32(w - trunc_div(g, d0) - trunc_div(w, d1))`` (IntegerSGD; no decay term
  when ``decay`` is 0).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from nitihw.rtl.params import require_int
from nitihw.rtl.schedule import DIVIDE_LATENCY

DIV_BITS = 32  # magnitudes below 2^32: every int32 value, |INT32_MIN| included
MAGIC_BITS = DIV_BITS + 1
SHIFT_BITS = 7  # N + l <= 32 + 32
INT8_MAX = 127


def divider_constants(d: int, bits: int = DIV_BITS) -> tuple[int, int]:
    """``(M, shift)`` with ``floor(m / d) == (m * M) >> shift`` for every ``0 <= m < 2^bits``.

    Example: ``divider_constants(3) == (5726623062, 33)``.
    """
    if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d < 1 << bits:
        raise ValueError(f"divisor must be an integer in 1..{(1 << bits) - 1}, got {d!r}")
    ceil_log2 = (d - 1).bit_length()
    shift = bits + ceil_log2
    return -(-(1 << shift) // d), shift


def _magic_quotient(m, magic, shift):
    return ((m * magic) >> shift)[:DIV_BITS]


class DivideLanes(wiring.Component):
    """``lanes`` divide lanes behind one valid/ready stream.

    Members
    -------
    magic0, shift0 : In  the constants of divisor ``d0`` (:func:`divider_constants`)
    magic1, shift1 : In  the constants of ``d1`` (sgd's weight decay)
    decay : In(1)        sgd: subtract the decay term. All five are sampled with each beat.
    i : In(stream.Signature(struct{x: signed(32)[lanes], w: signed(32)[lanes]}))
        scale reads ``x``; sgd reads ``x`` as the gradient ``g`` and ``w`` as the weight.
    o : Out(stream.Signature(struct{q: signed(8)[lanes], w: signed(32)[lanes]}))
        scale: ``q``; sgd: ``w``. ``LATENCY`` cycles after the input beat when not stalled.
    """

    LATENCY = DIVIDE_LATENCY

    def __init__(self, lanes: int = 8):
        require_int(self, "lanes", lanes, 1, 1024)
        self._lanes = lanes
        word = data.ArrayLayout(signed(DIV_BITS), lanes)
        super().__init__(
            {
                "magic0": In(unsigned(MAGIC_BITS)),
                "shift0": In(unsigned(SHIFT_BITS)),
                "magic1": In(unsigned(MAGIC_BITS)),
                "shift1": In(unsigned(SHIFT_BITS)),
                "decay": In(1),
                "i": In(stream.Signature(data.StructLayout({"x": word, "w": word}))),
                "o": Out(
                    stream.Signature(
                        data.StructLayout({"q": data.ArrayLayout(signed(8), lanes), "w": word})
                    )
                ),
            }
        )

    lanes = property(lambda self: self._lanes)

    def elaborate(self, platform):
        m = Module()
        n = self._lanes
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        v1, v2, v3 = Signal(), Signal(), Signal()
        out = Signal(self.o.payload.shape())
        # the constants travel with the beat they were sampled with
        c = {
            name: Signal.like(getattr(self, name), name=f"{name}_1")
            for name in ("magic0", "shift0", "magic1", "shift1", "decay")
        }
        with m.If(advance):
            m.d.sync += [v1.eq(self.i.valid), v2.eq(v1), v3.eq(v2)]
            m.d.sync += [reg.eq(getattr(self, name)) for name, reg in c.items()]
            for k in range(n):
                x, w = self.i.payload.x[k], self.i.payload.w[k]
                # stage 1: signs and magnitudes, the constants sampled with the beat
                negx, negw = Signal(name=f"negx_{k}"), Signal(name=f"negw_{k}")
                magx = Signal(unsigned(DIV_BITS), name=f"magx_{k}")
                magw = Signal(unsigned(DIV_BITS), name=f"magw_{k}")
                w1 = Signal(signed(DIV_BITS), name=f"w1_{k}")
                m.d.sync += [
                    negx.eq(x < 0),
                    negw.eq(w < 0),
                    magx.eq(Mux(x < 0, -x, x)),
                    magw.eq(Mux(w < 0, -w, w)),
                    w1.eq(w),
                ]
                # stage 2: the two quotients, signed
                q0 = Signal(signed(DIV_BITS + 1), name=f"q0_{k}")
                q1 = Signal(signed(DIV_BITS + 1), name=f"q1_{k}")
                w2 = Signal(signed(DIV_BITS), name=f"w2_{k}")
                a0 = _magic_quotient(magx, c["magic0"], c["shift0"])
                a1 = _magic_quotient(magw, c["magic1"], c["shift1"])
                m.d.sync += [
                    q0.eq(Mux(negx, -a0, a0)),
                    q1.eq(Mux(c["decay"], Mux(negw, -a1, a1), 0)),
                    w2.eq(w1),
                ]
                # stage 3: saturate (scale) or subtract and wrap (sgd)
                sat = Mux(q0 > INT8_MAX, INT8_MAX, Mux(q0 < -INT8_MAX, -INT8_MAX, q0))
                m.d.sync += [
                    out.q[k].eq(sat[:8]),
                    out.w[k].eq((w2 - q0 - q1)[:DIV_BITS]),
                ]
        m.d.comb += [self.o.valid.eq(v3), self.o.payload.eq(out)]
        return m


__all__ = ["DivideLanes", "divider_constants"]
