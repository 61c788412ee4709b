"""The range unit: the bit-width of a whole tensor, seen tile by tile (numerics.md §2).

``bitwidth(T) = (max|T| - 1).bit_length()`` needs no maximum: ``bit_length`` is monotone, so it
is the bit length of the OR of ``|x| - 1`` over the nonzero elements. For ``x > 0`` that is
``x - 1``; for ``x < 0`` it is ``-x - 1 = ~x``: no adder on the negative side, and
``|INT_MIN|`` needs no extra bit. One running OR register per unit covers any number of tiles.

The unit is pipelined so that no path is longer than one comparison (docs/datapath.md): its
inputs are registered as they arrive (so the Datapath's drain adder and the per-lane
``|x| - 1`` are never in one cycle: that was the ECP5 build's critical path, docs/synth.md),
a register stage after the per-lane ``|x| - 1`` / ``|x|``, then a binary reduction tree over the
lanes with a register after every level (OR, max and flag count side by side), then the running
registers, whose OR's bit length (a log-depth priority encoder) is the ``bitwidth`` output. An
observation is in the outputs :func:`nitihw.rtl.schedule.range_latency` cycles after it is
presented; ``busy`` is high while one is on its way.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from nitihw.rtl.params import require_int
from nitihw.rtl.schedule import range_levels

TARGET_BITS = 7  # requantisation keeps 7 magnitude bits (int8; b - 1 for b-bit operands)


def bit_length(m, x, name: str):
    """Combinational bit length of unsigned ``x`` as a binary tree of (any-bit, mux) levels:
    ``log2(width)`` levels deep instead of a chain of ``width`` priority muxes."""

    def rec(lo: int, hi: int):
        # returns (any bit set in x[lo:hi], bit length of x[lo:hi] relative to lo)
        if hi - lo == 1:
            return x[lo], x[lo]
        mid = (lo + hi + 1) // 2
        any_lo, len_lo = rec(lo, mid)
        any_hi, len_hi = rec(mid, hi)
        return any_lo | any_hi, Mux(any_hi, len_hi + (mid - lo), len_lo)

    out = Signal(range(len(x) + 1), name=name)
    m.d.comb += out.eq(rec(0, len(x))[1])
    return out


class RangeUnit(wiring.Component):
    """Running bit-width and overflow count over ``lanes`` accumulators per cycle.

    Parameters
    ----------
    lanes : elements observed per cycle.
    accumulator_bits : accumulator width.
    target_bits : magnitude bits the requantisation keeps (7 for int8 operands; ``b - 1`` for
        ``b``-bit ones), the ``shift`` output's target.

    Members
    -------
    clear : In(1)
        Start a new tensor (takes effect at the clock edge). Clear only while ``busy`` is low:
        an observation still in the pipeline would be counted in the new tensor.
    valid : In(1)
        ``value`` / ``overflow`` hold an observation this cycle.
    value : In(signed(accumulator_bits)).array(lanes)
    overflow : In(1).array(lanes)
        Per element: its exact sum lay outside the accumulator range.
    busy : Out(1)
        An observation is still in the pipeline (the outputs do not include it yet).
    bitwidth : Out(range(accumulator_bits + 1))
        Bit-width of everything observed since ``clear`` (a register; final once ``busy`` is
        low).
    shift : Out(range(accumulator_bits + 1))
        ``max(bitwidth - target_bits, 0)``: the requantisation shift.
    overflow_count : Out(32)
        Number of overflowed elements observed since ``clear`` (saturates at 2^32 - 1).
    max_magnitude : Out(unsigned(accumulator_bits))
        The exact ``max |x|`` since ``clear`` (for range rules that need more than the bit
        length, e.g. WAGE's ``round(log2 max)``).
    """

    def __init__(self, lanes: int, accumulator_bits: int = 32, target_bits: int = TARGET_BITS):
        require_int(self, "lanes", lanes, 1, 1024)
        require_int(self, "accumulator_bits", accumulator_bits, 2, 48)
        require_int(self, "target_bits", target_bits, 1, TARGET_BITS)
        self._lanes, self._accumulator_bits, self._target = lanes, accumulator_bits, target_bits
        super().__init__(
            {
                "clear": In(1),
                "valid": In(1),
                "value": In(signed(accumulator_bits)).array(lanes),
                "overflow": In(1).array(lanes),
                "busy": Out(1),
                "bitwidth": Out(range(accumulator_bits + 1)),
                "shift": Out(range(accumulator_bits + 1)),
                "overflow_count": Out(32),
                "max_magnitude": Out(unsigned(accumulator_bits)),
            }
        )

    lanes = property(lambda self: self._lanes)
    accumulator_bits = property(lambda self: self._accumulator_bits)

    def elaborate(self, platform):
        m = Module()
        w, n = self._accumulator_bits, self._lanes

        # the input stage: the observation as it arrives, registered
        vin = Signal(name="v_in")
        m.d.sync += vin.eq(self.valid)
        xs, fs = [], []
        for k in range(n):
            x = Signal(signed(w), name=f"in_{k}")
            f = Signal(1, name=f"in_flag_{k}")
            m.d.sync += [x.eq(self.value[k]), f.eq(self.overflow[k])]
            xs.append(x)
            fs.append(f)

        # stage 0: per lane |x| - 1 (0 for x == 0), |x| and the flag, registered
        v = Signal(name="v0")
        ors, maxs, cnts = [], [], []
        m.d.sync += v.eq(vin)
        for k in range(n):
            x = xs[k]
            below = Signal(unsigned(w), name=f"below_{k}")
            mag = Signal(unsigned(w), name=f"mag_{k}")
            flag = Signal(1, name=f"flag_{k}")
            m.d.sync += [
                below.eq(Mux(x < 0, ~x, Mux(x == 0, 0, x - 1))),
                mag.eq(Mux(x < 0, -x, x)),
                flag.eq(fs[k]),
            ]
            ors.append(below)
            maxs.append(mag)
            cnts.append(flag)
        valids = [vin, v]

        # the reduction tree: one binary level per register stage
        for level in range(range_levels(n)):
            nv = Signal(name=f"v{level + 1}")
            m.d.sync += nv.eq(v)
            n_ors, n_maxs, n_cnts = [], [], []
            for p in range(0, len(ors), 2):
                if p + 1 == len(ors):  # odd one out: carried to the next level
                    o, mx, c = ors[p], maxs[p], cnts[p]
                else:
                    o = ors[p] | ors[p + 1]
                    mx = Mux(maxs[p] > maxs[p + 1], maxs[p], maxs[p + 1])
                    c = cnts[p] + cnts[p + 1]
                ro = Signal(unsigned(w), name=f"or_{level}_{p // 2}")
                rm = Signal(unsigned(w), name=f"max_{level}_{p // 2}")
                rc = Signal(range(n + 1), name=f"cnt_{level}_{p // 2}")
                m.d.sync += [ro.eq(o), rm.eq(mx), rc.eq(c)]
                n_ors.append(ro)
                n_maxs.append(rm)
                n_cnts.append(rc)
            ors, maxs, cnts, v = n_ors, n_maxs, n_cnts, nv
            valids.append(v)

        # the running registers of the tensor
        ored = Signal(unsigned(w))
        count = Signal(32)
        maxr = Signal(unsigned(w))
        with m.If(self.clear):
            m.d.sync += [ored.eq(0), count.eq(0), maxr.eq(0)]
        with m.Elif(v):
            total = Signal(33)
            m.d.comb += total.eq(count + cnts[0])
            m.d.sync += [
                ored.eq(ored | ors[0]),
                maxr.eq(Mux(maxs[0] > maxr, maxs[0], maxr)),
                count.eq(Mux(total[32], 0xFFFF_FFFF, total[:32])),
            ]

        # the bit length of the running OR (no register of its own: a clear resets it with the
        # running registers, so it never shows the last tensor's bit-width while the unit is
        # idle; nitihw prove's range-unit proof checks that)
        bw = bit_length(m, ored, "bit_length")
        busy = valids[0]
        for sig in valids[1:]:
            busy = busy | sig
        m.d.comb += [
            self.busy.eq(busy),
            self.bitwidth.eq(bw),
            self.shift.eq(Mux(bw > self._target, bw - self._target, 0)),
            self.overflow_count.eq(count),
            self.max_magnitude.eq(maxr),
        ]
        return m
