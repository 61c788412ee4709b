"""Rescale lanes: shift with rounding and saturation to int8, one element per lane per cycle.

The hardware form of :func:`nitihw.golden.shift_round` (numerics.md §2). Sign-magnitude:
``m = |x|``, ``q = m >> s``, ``r = m & (2^s - 1)``, result ``sign(x) * min(q + up, 127)`` with
``up`` decided by the rounding mode (``limit`` instead of 127 for a narrower operand width).
With ``left`` set the lanes shift left instead (WAGE scales small tensors up):
``sign(x) * min(|x| << s, 127)``, exact, so the mode is ignored.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from nitihw.rtl.params import require_int
from nitihw.rtl.schedule import RESCALE_LATENCY

INT8_MAX = 127


class RoundingMode(enum.Enum, shape=3):
    """Encoding of the rounding modes on the datapath's ``mode`` ports."""

    ROUND = 0
    PSTO = 1
    TRUNC = 2
    STO = 3
    RNE = 4


#: golden mode name -> RoundingMode
MODE_BY_NAME = {m.name.lower(): m for m in RoundingMode}


def rescale_limit(operand_bits: int) -> int:
    """The bound a Datapath's rescale lanes saturate to: ``2^(operand_bits-1) - 1`` for operands of
    8 bits or fewer (numerics.md §2: a narrower operand width's range), 127 for wider operands
    (DFP16's 16-bit products still rescale to int8)."""
    return (1 << (operand_bits - 1)) - 1 if operand_bits <= 8 else INT8_MAX


def rescale_max_shift(accumulator_bits: int) -> int:
    """Largest shift the lanes accept: enough for every shift a training step issues
    (requant ``<= accumulator_bits - 7``; update ``m - mu`` with ``m <= accumulator_bits`` and
    ``mu >= -8``)."""
    return accumulator_bits + 8


def shift_masks(s, width: int) -> dict:
    """The masks of numerics.md §2's rounding for shift ``s``, which depend on ``s`` alone:
    ``mask`` (the bits shifted out, ``r = m & mask``), ``half`` (the half bit), ``sticky``
    (the bits below it) and ``low`` (``psto``'s low half of ``r``). The rescale lanes compute
    them once per beat for all lanes, a pipeline stage ahead of their use, so that no lane's
    path holds both the masks' carry chains and its own (docs/synth.md). ``width`` bounds them
    (``max_shift + 1`` bits); ``s`` may be a signal or a constant."""
    if isinstance(s, int):
        s = Const(s, range(width + 1))
    one = Const(1, width + 1)
    return {
        "mask": ((one << s) - 1)[:width],
        "half": ((one << s) >> 1)[:width],
        "sticky": (((one << s) >> 1) - 1)[:width],
        "low": ((one << (s >> 1)) - 1)[:width],
    }


def round_up(m, s, rand, width: int, masks: dict | None = None):
    """Combinational quotient and ``up`` bits of numerics.md §2 for magnitude ``m``, shift ``s``.

    ``width`` bounds the masks (``max_shift + 1`` bits). ``s`` may be a signal or a constant.
    ``masks``: :func:`shift_masks` of ``s``, where the caller has them registered (by default
    they are computed here). Returns ``(q, {mode: up})``.
    """
    if isinstance(s, int):
        s = Const(s, range(width + 1))
    if masks is None:
        masks = shift_masks(s, width)
    q = m >> s
    r = m & masks["mask"]
    half_bit = (m & masks["half"]) != 0  # 0 for s == 0
    sticky = (m & masks["sticky"]) != 0  # bits below the half bit
    p = r >> (s >> 1)
    rr = r & masks["low"]
    rr = Mux(s[0], rr << 1, rr)
    return q, {
        RoundingMode.ROUND: half_bit,
        RoundingMode.PSTO: p > rr,
        RoundingMode.TRUNC: 0,
        RoundingMode.STO: r > rand,
        RoundingMode.RNE: half_bit & (sticky | q[0]),
    }


class RescaleLanes(wiring.Component):
    """``lanes`` rescale lanes behind one valid/ready stream.

    Parameters
    ----------
    lanes : int, >= 1
        Elements per beat.
    accumulator_bits : int, 2..48
        Width of the signed accumulator inputs.
    limit : int, 1..127
        The saturation bound: results are in ``+-limit`` (127, or :func:`rescale_limit` of a
        narrower operand width).

    Members
    -------
    shift : In(range(max_shift + 1))
        The shift ``s``, held for a whole tensor (sampled with each input beat).
    left : In(1)
        Shift left instead of right (sampled with each input beat): the result is
        ``sign(x) * (limit if |x| > (limit >> s) else |x| << s)``, so ``s >= 7`` saturates every
        nonzero value; ``mode`` and ``rand`` are ignored.
    mode : In(RoundingMode)
        Rounding mode, sampled with each input beat.
    i : In(stream.Signature(struct{acc: signed(accumulator_bits)[lanes],
                                   rand: unsigned(max_shift)[lanes]}))
        Input beats; ``rand`` carries the uniform integers of mode ``STO`` (ignored otherwise).
    o : Out(stream.Signature(signed(8)[lanes]))
        Results, ``LATENCY`` cycles after the input beat when never stalled. A stalled output
        (``o.valid & ~o.ready``) holds the whole pipeline.
    """

    LATENCY = RESCALE_LATENCY

    def __init__(self, lanes: int = 8, accumulator_bits: int = 32, limit: int = INT8_MAX):
        require_int(self, "lanes", lanes, 1, 1024)
        require_int(self, "accumulator_bits", accumulator_bits, 2, 48)
        require_int(self, "limit", limit, 1, INT8_MAX)
        self._lanes, self._accumulator_bits, self._limit = lanes, accumulator_bits, limit
        self._max_shift = rescale_max_shift(accumulator_bits)
        in_layout = data.StructLayout(
            {
                "acc": data.ArrayLayout(signed(accumulator_bits), lanes),
                "rand": data.ArrayLayout(unsigned(self._max_shift), lanes),
            }
        )
        super().__init__(
            {
                "shift": In(range(self._max_shift + 1)),
                "left": In(1),
                "mode": In(RoundingMode),
                "i": In(stream.Signature(in_layout)),
                "o": Out(stream.Signature(data.ArrayLayout(signed(8), lanes))),
            }
        )

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def accumulator_bits(self) -> int:
        return self._accumulator_bits

    @property
    def max_shift(self) -> int:
        return self._max_shift

    @property
    def limit(self) -> int:
        return self._limit

    def elaborate(self, platform):
        m = Module()
        n, w, ms, lim = self._lanes, self._accumulator_bits, self._max_shift, self._limit
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)

        # stage 1: sign and magnitude (|INT_MIN| fits the unsigned width), and the shift's
        # masks (shared by the lanes)
        v1 = Signal()
        s1 = Signal(range(ms + 1))
        masks1 = {
            name: Signal(unsigned(ms + 1), name=f"{name}1")
            for name in ("mask", "half", "sticky", "low")
        }
        left1 = Signal()
        mode1 = Signal(RoundingMode)
        neg1 = Signal(n)
        mag1 = [Signal(unsigned(w), name=f"mag1_{k}") for k in range(n)]
        rand1 = [Signal(unsigned(ms), name=f"rand1_{k}") for k in range(n)]
        # stage 2: q and up
        v2 = Signal()
        neg2 = Signal(n)
        q2 = [Signal(unsigned(max(w, 7)), name=f"q2_{k}") for k in range(n)]  # limit: left
        up2 = Signal(n)
        # stage 3: saturated, signed result
        v3 = Signal()
        out3 = Signal(data.ArrayLayout(signed(8), n))

        # left shifts: |x| << s stays within the limit exactly when |x| <= limit >> s (0 for
        # s >= 7, where only x == 0 escapes saturation, and 0 << s[:3] is 0 whatever the low
        # shift bits)
        left_limit = Signal(7)
        m.d.comb += left_limit.eq(Const(lim, 7) >> s1)
        with m.If(advance):
            m.d.sync += [
                v1.eq(self.i.valid),
                s1.eq(self.shift),
                *(masks1[k].eq(v) for k, v in shift_masks(self.shift, ms + 1).items()),
                left1.eq(self.left),
                mode1.eq(self.mode),
                v2.eq(v1),
                v3.eq(v2),
            ]
            for k in range(n):
                x = self.i.payload.acc[k]
                m.d.sync += [
                    neg1[k].eq(x < 0),
                    mag1[k].eq(Mux(x < 0, -x, x)),
                    rand1[k].eq(self.i.payload.rand[k]),
                ]
                q, ups = round_up(mag1[k], s1, rand1[k], ms + 1, masks1)
                up = Signal(name=f"up_{k}")
                with m.Switch(mode1):
                    for mode, bit in ups.items():
                        with m.Case(mode):
                            m.d.comb += up.eq(bit)
                shifted = Mux(mag1[k] > left_limit, lim, (mag1[k][: min(w, 7)] << s1[:3])[:7])
                m.d.sync += [
                    neg2[k].eq(neg1[k]),
                    q2[k].eq(Mux(left1, shifted, q)),
                    up2[k].eq(up & ~left1),
                ]
                # min(q + up, limit) without a wide adder: a q at or above the limit saturates
                # whatever up is, and one below it plus up is at most the limit (7 bits)
                mag = Mux(q2[k] >= lim, lim, q2[k][:7] + up2[k])[:8]
                m.d.sync += out3[k].eq(Mux(neg2[k], -mag, mag))
        m.d.comb += [self.o.valid.eq(v3), self.o.payload.eq(out3)]
        return m


__all__ = ["MODE_BY_NAME", "RescaleLanes", "RoundingMode", "rescale_limit", "rescale_max_shift"]
