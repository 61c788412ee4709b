"""Update lanes: the weight update of numerics.md §3, one weight per lane per cycle.

- int8 weights: ``W = clamp(W - g, -limit, limit)``, ``limit`` a port (127 for NITI, 64 for
  WAGE's weight range).
- 16-bit master weights (8 fraction bits): ``W16 = clamp(W16 - g, -32767, 32767)`` and the
  forward weight ``W = psto(W16, 8)`` (the pseudo-stochastic rounding of the rescale lanes).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from nitihw.rtl.params import require_int
from nitihw.rtl.rescale import INT8_MAX, RoundingMode, round_up
from nitihw.rtl.schedule import UPDATE_LATENCY

MASTER_LIMIT = 2**15 - 1
MASTER_FRACTION_BITS = 8


def _clamp(m, value, limit, width):
    out = Signal(signed(width))
    m.d.comb += out.eq(Mux(value > limit, limit, Mux(value < -limit, -limit, value)))
    return out


class UpdateLanes(wiring.Component):
    """``lanes`` update lanes behind one valid/ready stream.

    Parameters
    ----------
    lanes : elements per beat.
    master : False for int8 weights; True for 16-bit master weights.

    Members
    -------
    limit : In(unsigned(7))
        int8 lanes only: the clamp bound, ``W = clamp(W - g, -limit, limit)`` (sampled with each
        input beat). The master lanes clamp to ``+-32767``.
    i : In(stream.Signature(struct{w: signed(8 or 16)[lanes], g: signed(8)[lanes]}))
    o : Out(stream.Signature(struct{w: signed(8 or 16)[lanes], w8: signed(8)[lanes]}))
        ``w`` is the updated stored weight; ``w8`` the forward weight (equal to ``w`` for int8).
        ``LATENCY`` cycles after the input beat when not stalled.
    """

    LATENCY = UPDATE_LATENCY

    def __init__(self, lanes: int = 8, master: bool = False):
        require_int(self, "lanes", lanes, 1, 1024)
        self._lanes, self._master = lanes, bool(master)
        ww = 16 if master else 8
        limit = {} if master else {"limit": In(unsigned(7))}
        super().__init__(
            {
                **limit,
                "i": In(
                    stream.Signature(
                        data.StructLayout(
                            {
                                "w": data.ArrayLayout(signed(ww), lanes),
                                "g": data.ArrayLayout(signed(8), lanes),
                            }
                        )
                    )
                ),
                "o": Out(
                    stream.Signature(
                        data.StructLayout(
                            {
                                "w": data.ArrayLayout(signed(ww), lanes),
                                "w8": data.ArrayLayout(signed(8), lanes),
                            }
                        )
                    )
                ),
            }
        )

    lanes = property(lambda self: self._lanes)
    master = property(lambda self: self._master)

    def elaborate(self, platform):
        m = Module()
        n, ww = self._lanes, 16 if self._master else 8
        limit = MASTER_LIMIT if self._master else self.limit
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        v1, v2 = Signal(), Signal()
        w1 = [Signal(signed(ww), name=f"w1_{k}") for k in range(n)]
        out = Signal(self.o.payload.shape())
        with m.If(advance):
            m.d.sync += [v1.eq(self.i.valid), v2.eq(v1)]
            for k in range(n):
                diff = _clamp(m, self.i.payload.w[k] - self.i.payload.g[k], limit, ww + 1)
                m.d.sync += w1[k].eq(diff)
                m.d.sync += out.w[k].eq(w1[k])
                if self._master:
                    neg = w1[k] < 0
                    mag = Signal(16, name=f"mag_{k}")
                    m.d.comb += mag.eq(Mux(neg, -w1[k], w1[k]))
                    q, ups = round_up(mag, MASTER_FRACTION_BITS, 0, 16)
                    total = q + ups[RoundingMode.PSTO]
                    sat = Mux(total > INT8_MAX, INT8_MAX, total)[:8]
                    m.d.sync += out.w8[k].eq(Mux(neg, -sat, sat))
                else:
                    m.d.sync += out.w8[k].eq(w1[k])
        m.d.comb += [self.o.valid.eq(v2), self.o.payload.eq(out)]
        return m
