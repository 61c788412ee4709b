"""The range unit: the bit-width of a whole tensor, seen tile by tile (numerics.md §2).

``bitwidth(T) = (max|T| - 1).bit_length()`` needs no maximum: ``bit_length`` is monotone, so it
is the bit length of the OR of ``|x| - 1`` over the nonzero elements. For ``x > 0`` that is
``x - 1``; for ``x < 0`` it is ``-x - 1 = ~x``: no adder on the negative side, and
``|INT_MIN|`` needs no extra bit. One running OR register per unit covers any number of tiles.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from nitihw.rtl.params import require_int

TARGET_BITS = 7  # requantisation keeps 7 magnitude bits


class RangeUnit(wiring.Component):
    """Running bit-width and overflow count over ``lanes`` accumulators per cycle.

    Parameters
    ----------
    lanes : elements observed per cycle.
    acc_bits : accumulator width.

    Members
    -------
    clear : In(1)
        Start a new tensor (takes effect at the clock edge; an observation in the same cycle
        is the first of the new tensor).
    valid : In(1)
        ``value`` / ``overflow`` hold an observation this cycle.
    value : In(signed(acc_bits)).array(lanes)
    overflow : In(1).array(lanes)
        Per element: its exact sum lay outside the accumulator range.
    bitwidth : Out(range(acc_bits + 1))
        Bit-width of everything observed since ``clear`` (combinational from the register:
        valid the cycle after the last observation).
    shift : Out(range(acc_bits + 1))
        ``max(bitwidth - 7, 0)``: the requantisation shift.
    overflow_count : Out(32)
        Number of overflowed elements observed since ``clear`` (saturates at 2^32 - 1).
    max_magnitude : Out(unsigned(acc_bits))
        The exact ``max |x|`` since ``clear`` (for range rules that need more than the bit
        length, e.g. WAGE's ``round(log2 max)``).
    """

    def __init__(self, lanes: int, acc_bits: int = 32):
        require_int(self, "lanes", lanes, 1, 1024)
        require_int(self, "acc_bits", acc_bits, 2, 48)
        self._lanes, self._acc_bits = lanes, acc_bits
        super().__init__(
            {
                "clear": In(1),
                "valid": In(1),
                "value": In(signed(acc_bits)).array(lanes),
                "overflow": In(1).array(lanes),
                "bitwidth": Out(range(acc_bits + 1)),
                "shift": Out(range(acc_bits + 1)),
                "overflow_count": Out(32),
                "max_magnitude": Out(unsigned(acc_bits)),
            }
        )

    lanes = property(lambda self: self._lanes)
    acc_bits = property(lambda self: self._acc_bits)

    def elaborate(self, platform):
        m = Module()
        w = self._acc_bits
        ored = Signal(unsigned(w))
        count = Signal(32)
        maxr = Signal(unsigned(w))
        observed = Signal(unsigned(w))
        m.d.comb += observed.eq(0)
        flags = []
        biggest = Signal(unsigned(w), name="biggest_0")
        for k in range(self._lanes):
            x = self.value[k]
            below = Signal(unsigned(w), name=f"below_{k}")  # |x| - 1, or 0 for x == 0
            m.d.comb += below.eq(Mux(x < 0, ~x, Mux(x == 0, 0, x - 1)))
            observed = observed | below
            flags.append(self.overflow[k])
            mag = Signal(unsigned(w), name=f"mag_{k}")
            m.d.comb += mag.eq(Mux(x < 0, -x, x))
            if k == 0:
                m.d.comb += biggest.eq(mag)
            else:
                nxt = Signal(unsigned(w), name=f"biggest_{k}")
                m.d.comb += nxt.eq(Mux(mag > biggest, mag, biggest))
                biggest = nxt
        new_count = sum(flags[1:], flags[0]) if flags else 0
        base_or = Mux(self.clear, 0, ored)
        base_count = Mux(self.clear, 0, count)
        base_max = Mux(self.clear, 0, maxr)
        with m.If(self.valid):
            m.d.sync += [
                ored.eq(base_or | observed),
                maxr.eq(Mux(biggest > base_max, biggest, base_max)),
            ]
            total = Signal(33)
            m.d.comb += total.eq(base_count + new_count)
            m.d.sync += count.eq(Mux(total[32], 0xFFFF_FFFF, total[:32]))
        with m.Elif(self.clear):
            m.d.sync += [ored.eq(0), count.eq(0), maxr.eq(0)]
        # bit length of the OR: a priority encoder
        bw = Signal(range(w + 1))
        for bit in range(w):
            with m.If(ored[bit]):
                m.d.comb += bw.eq(bit + 1)
        m.d.comb += [
            self.bitwidth.eq(bw),
            self.shift.eq(Mux(bw > TARGET_BITS, bw - TARGET_BITS, 0)),
            self.overflow_count.eq(count),
            self.max_magnitude.eq(maxr),
        ]
        return m
