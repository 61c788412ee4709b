"""The Datapath: MAC array, range unit, rescale lanes and update lanes behind one streaming
interface, so a driver can run every GEMM, range, rescale and update of a training step.

Three valid/ready streams: ``cmd`` (commands), ``din`` (data in) and ``dout`` (data out). One
command runs at a time; the command stream is accepted only when the datapath is idle.

============  ===========================================================================
command       what it does (``count`` is its number of beats)
============  ===========================================================================
LOAD_A        ``count`` din beats, each one column of an A tile (``rows`` operands), into
              the A buffer at addresses 0..count-1
LOAD_B        ``count`` din beats, each one row of a B tile (``cols`` operands), into the B
              buffer
COMPUTE       stream buffer entries 0..count-1 (skewed) through the array: every PE (i, j)
              sums ``A[i, k] * B[k, j]``; ``accumulate`` adds to the previous sums instead
              of starting new ones (for K longer than the buffers)
DRAIN         ``count`` dout beats (rows 0..count-1 of the result tile, ``cols``
              accumulators each, with their overflow flags); the range unit observes them
RANGE_CLEAR   start a new tensor in the range unit
RANGE_READ    one dout beat: bit-width, shift, overflow count and max magnitude of the
              tensor so far
RESCALE       ``count`` din beats of ``cols`` accumulators (and ``sto`` random integers)
              in, ``count`` dout beats of int8 out: ``shift_round(acc, shift, mode)``, or
              with ``left`` set ``shift_round(acc, -shift, mode)`` (a saturating left shift)
UPDATE        ``count`` din beats of ``cols`` (weight, gradient) pairs in, ``count`` dout
              beats of updated weights out (``master`` selects 16-bit master weights; int8
              weights are clamped to ``+-limit``)
RANGE_FEED    ``count`` din beats of ``cols`` accumulators (the ``rescale.acc`` member), which
              the range unit observes (overflow flags 0); no dout beats. For a tensor that is
              not the last GEMM's result: ``RANGE_CLEAR``, ``RANGE_FEED``, ``RANGE_READ``
DIVIDE        (``divide`` builds) ``count`` din beats of ``cols`` accumulators (``rescale.acc``)
              in, ``count`` dout beats of int8 (``q``) out: ``saturate(trunc_div(acc, d))``
              with ``d``'s reciprocal constants in ``magic0``/``shift0`` (NITRO-D's scaling)
UPDATE_DIV    (``divide`` builds) ``count`` din beats of ``cols`` int32 (weight, gradient)
              pairs (``update32``) in, ``count`` dout beats of int32 weights (``w32``) out:
              ``wrap32(w - trunc_div(g, d0) - trunc_div(w, d1))`` (IntegerSGD; ``d0`` in
              ``magic0``/``shift0``, ``d1`` in ``magic1``/``shift1``, its term only with
              ``decay`` set)
============  ===========================================================================

Cycles per command, from the cycle it is accepted until the datapath accepts the next one
(streams never stalled): ``LOAD: 1 + count``; ``COMPUTE: count + rows + cols``;
``DRAIN: 1 + count``; ``RANGE_CLEAR: 1``; ``RANGE_READ: 2``; ``RESCALE: count + 4``;
``UPDATE: count + 3``; ``RANGE_FEED: 1 + count``; ``DIVIDE``, ``UPDATE_DIV: count + 4``.
:mod:`nitihw.rtl.schedule` holds these formulas; docs/datapath.md derives them.

The B operand may be wider than A (``b_bits`` up to 32: NITRO-D multiplies int8 activations by
int32 weights and deltas, with sums that wrap to ``acc_bits``); the divide lanes
(:class:`nitihw.rtl.divide.DivideLanes`, two 32x33-bit multipliers per lane) are built only
with ``divide=True``.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from nitihw.rtl.divide import DIV_BITS, MAGIC_BITS, SHIFT_BITS, DivideLanes
from nitihw.rtl.mac_array import WIDE_B_MAX, MacArray, check_array_params, max_exact_k
from nitihw.rtl.params import reject, require_int
from nitihw.rtl.range_unit import RangeUnit
from nitihw.rtl.rescale import RescaleLanes, RoundingMode, rescale_max_shift
from nitihw.rtl.update import UpdateLanes

COUNT_BITS = 24


class Op(enum.Enum, shape=4):
    LOAD_A = 0
    LOAD_B = 1
    COMPUTE = 2
    DRAIN = 3
    RANGE_CLEAR = 4
    RANGE_READ = 5
    RESCALE = 6
    UPDATE = 7
    RANGE_FEED = 8
    DIVIDE = 9
    UPDATE_DIV = 10


def command_layout(acc_bits: int) -> data.StructLayout:
    return data.StructLayout(
        {
            "op": Op,
            "count": unsigned(COUNT_BITS),
            "accumulate": 1,
            "shift": range(rescale_max_shift(acc_bits) + 1),
            "mode": RoundingMode,
            "master": 1,
            "left": 1,  # RESCALE: shift left
            "limit": unsigned(7),  # UPDATE (int8 weights): clamp to +-limit
            # DIVIDE / UPDATE_DIV: the divisors' reciprocal constants (divider_constants)
            "magic0": unsigned(MAGIC_BITS),
            "shift0": unsigned(SHIFT_BITS),
            "magic1": unsigned(MAGIC_BITS),
            "shift1": unsigned(SHIFT_BITS),
            "decay": 1,  # UPDATE_DIV: subtract trunc_div(w, d1)
        }
    )


def din_layout(rows, cols, op_bits, acc_bits, b_bits=None, divide=False) -> data.UnionLayout:
    """``b_bits`` (default ``op_bits``) is the B operand's width; ``divide`` adds ``update32``."""
    wide = (
        {
            "update32": data.StructLayout(
                {
                    "w": data.ArrayLayout(signed(DIV_BITS), cols),
                    "g": data.ArrayLayout(signed(DIV_BITS), cols),
                }
            )
        }
        if divide
        else {}
    )
    return data.UnionLayout(
        {
            "a": data.ArrayLayout(signed(op_bits), rows),
            "b": data.ArrayLayout(signed(b_bits or op_bits), cols),
            "rescale": data.StructLayout(
                {
                    "acc": data.ArrayLayout(signed(acc_bits), cols),
                    "rand": data.ArrayLayout(unsigned(rescale_max_shift(acc_bits)), cols),
                }
            ),
            "update": data.StructLayout(
                {
                    "w": data.ArrayLayout(signed(16), cols),
                    "g": data.ArrayLayout(signed(8), cols),
                }
            ),
            **wide,
        }
    )


def dout_layout(cols, acc_bits, divide=False) -> data.UnionLayout:
    """``divide`` adds ``w32`` (UPDATE_DIV's int32 weights)."""
    wide = {"w32": data.ArrayLayout(signed(DIV_BITS), cols)} if divide else {}
    return data.UnionLayout(
        {
            "drain": data.StructLayout(
                {
                    "acc": data.ArrayLayout(signed(acc_bits), cols),
                    "overflow": data.ArrayLayout(1, cols),
                }
            ),
            "q": data.ArrayLayout(signed(8), cols),
            "update": data.StructLayout(
                {
                    "w": data.ArrayLayout(signed(16), cols),
                    "w8": data.ArrayLayout(signed(8), cols),
                }
            ),
            "range": data.StructLayout(
                {
                    "bitwidth": range(acc_bits + 1),
                    "shift": range(acc_bits + 1),
                    "overflow_count": 32,
                    "max_magnitude": unsigned(acc_bits),
                }
            ),
            **wide,
        }
    )


class Datapath(wiring.Component):
    """The nitihw training datapath.

    Parameters
    ----------
    rows, cols : MAC array shape; rescale, update and range lanes are ``cols`` wide.
    op_bits : signed operand width (8 default, up to 16).
    acc_bits : accumulator width (32 default).
    guard_bits : extra accumulator bits for exact overflow detection (8 default).
    kmax : depth of the A and B operand buffers (the longest K of one COMPUTE).
    b_bits : the B operand's width (default ``op_bits``, up to 32; above 16 the sums wrap and
        ``acc_bits + guard_bits`` must hold one product, see :mod:`nitihw.rtl.mac_array`).
    divide : build the divide lanes (``DIVIDE``, ``UPDATE_DIV``; needs ``acc_bits <= 32``).

    Members
    -------
    cmd : In(stream.Signature(command_layout))
        Commands; ``ready`` only while idle.
    din : In(stream.Signature(din_layout))
        Operands (``a`` / ``b``), accumulators to rescale or divide (``rescale``), weights and
        gradients to update (``update``, ``update32``): which member is read depends on the
        command.
    dout : Out(stream.Signature(dout_layout))
        Drained accumulators (``drain``), rescaled or divided int8 (``q``), updated weights
        (``update``, ``w32``) or the range (``range``).
    busy : Out(1)
        A command is running.
    """

    def __init__(
        self,
        rows: int = 8,
        cols: int = 8,
        *,
        op_bits: int = 8,
        acc_bits: int = 32,
        guard_bits: int = 8,
        kmax: int = 256,
        b_bits: int | None = None,
        divide: bool = False,
    ):
        require_int(self, "kmax", kmax, 1, 1 << 16)
        require_int(self, "op_bits", op_bits, 2, 16)
        b_bits = op_bits if b_bits is None else b_bits
        require_int(self, "b_bits", b_bits, 2, WIDE_B_MAX)
        if not isinstance(divide, bool):
            reject(self, f"divide must be True or False, got {divide!r}")
        check_array_params(self, rows, cols, op_bits, b_bits, acc_bits, guard_bits)
        if divide and acc_bits > DIV_BITS:
            reject(
                self,
                f"the divide lanes take {DIV_BITS}-bit values: divide=True needs "
                f"acc_bits <= {DIV_BITS}, got {acc_bits}",
            )
        self._rows, self._cols, self._op_bits = rows, cols, op_bits
        self._acc_bits, self._guard_bits, self._kmax = acc_bits, guard_bits, kmax
        self._b_bits, self._divide = b_bits, divide
        super().__init__(
            {
                "cmd": In(stream.Signature(command_layout(acc_bits))),
                "din": In(
                    stream.Signature(din_layout(rows, cols, op_bits, acc_bits, b_bits, divide))
                ),
                "dout": Out(stream.Signature(dout_layout(cols, acc_bits, divide))),
                "busy": Out(1),
            }
        )

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    op_bits = property(lambda self: self._op_bits)
    acc_bits = property(lambda self: self._acc_bits)
    guard_bits = property(lambda self: self._guard_bits)
    kmax = property(lambda self: self._kmax)
    b_bits = property(lambda self: self._b_bits)
    divide = property(lambda self: self._divide)

    def parameters(self) -> dict:
        return {
            "rows": self._rows,
            "cols": self._cols,
            "op_bits": self._op_bits,
            "acc_bits": self._acc_bits,
            "guard_bits": self._guard_bits,
            "kmax": self._kmax,
            "b_bits": self._b_bits,
            "divide": self._divide,
            "max_shift": rescale_max_shift(self._acc_bits),
            "max_exact_k": max_exact_k(
                self._acc_bits, self._guard_bits, self._op_bits, self._b_bits
            ),
        }

    def elaborate(self, platform):
        m = Module()
        R, C, kmax = self._rows, self._cols, self._kmax
        m.submodules.array = arr = MacArray(
            R,
            C,
            a_width=self._op_bits,
            b_width=self._b_bits,
            acc_bits=self._acc_bits,
            guard_bits=self._guard_bits,
        )
        m.submodules.range_unit = rng = RangeUnit(C, self._acc_bits)
        m.submodules.rescale = rs = RescaleLanes(C, self._acc_bits)
        m.submodules.update8 = up8 = UpdateLanes(C, master=False)
        m.submodules.update16 = up16 = UpdateLanes(C, master=True)
        m.submodules.mem_a = mem_a = memory.Memory(
            shape=data.ArrayLayout(signed(self._op_bits), R), depth=kmax, init=[]
        )
        m.submodules.mem_b = mem_b = memory.Memory(
            shape=data.ArrayLayout(signed(self._b_bits), C), depth=kmax, init=[]
        )
        wa, wb = mem_a.write_port(), mem_b.write_port()
        ra, rb = mem_a.read_port(), mem_b.read_port()

        cmd = Signal(command_layout(self._acc_bits))
        idx = Signal(COUNT_BITS + 1)  # beats in / reads issued
        done = Signal(COUNT_BITS + 1)  # beats out
        din, dout = self.din, self.dout

        # ---- skew: row i of A (and its flags) delayed by i cycles, column j of B by j ----------
        feed_valid = Signal()  # the memory data of this cycle is a real operand
        feed_first = Signal()
        a_in, v_in, f_in, b_in = [], [], [], []
        for i in range(R):
            chain = [(ra.data[i], feed_valid, feed_first)]
            for d in range(i):
                regs = (
                    Signal(signed(self._op_bits), name=f"skew_a_{i}_{d}"),
                    Signal(name=f"skew_v_{i}_{d}"),
                    Signal(name=f"skew_f_{i}_{d}"),
                )
                with m.If(arr.en):
                    m.d.sync += [regs[n].eq(chain[-1][n]) for n in range(3)]
                chain.append(regs)
            a_in.append(chain[-1][0])
            v_in.append(chain[-1][1])
            f_in.append(chain[-1][2])
        for j in range(C):
            chain = [rb.data[j]]
            for d in range(j):
                reg = Signal(signed(self._b_bits), name=f"skew_b_{j}_{d}")
                with m.If(arr.en):
                    m.d.sync += reg.eq(chain[-1])
                chain.append(reg)
            b_in.append(chain[-1])
        for i in range(R):
            m.d.comb += [
                arr.a[i].eq(a_in[i]),
                arr.a_valid[i].eq(v_in[i]),
                arr.a_first[i].eq(f_in[i]),
            ]
        for j in range(C):
            m.d.comb += arr.b[j].eq(b_in[j])

        # ---- data paths that are the same in every state ----------------------------------
        m.d.comb += [
            wa.data.eq(din.payload.a),
            wa.addr.eq(idx),
            wb.data.eq(din.payload.b),
            wb.addr.eq(idx),
            ra.addr.eq(idx),
            rb.addr.eq(idx),
            rs.shift.eq(cmd.shift),
            rs.left.eq(cmd.left),
            rs.mode.eq(cmd.mode),
            up8.limit.eq(cmd.limit),
            rs.i.payload.eq(din.payload.rescale),
        ]
        for j in range(C):
            m.d.comb += [
                rng.value[j].eq(arr.out[j]),
                rng.overflow[j].eq(arr.out_overflow[j]),
                up8.i.payload.w[j].eq(din.payload.update.w[j]),
                up8.i.payload.g[j].eq(din.payload.update.g[j]),
                up16.i.payload.w[j].eq(din.payload.update.w[j]),
                up16.i.payload.g[j].eq(din.payload.update.g[j]),
            ]
        if self._divide:
            m.submodules.divide = dv = DivideLanes(C)
            m.d.comb += [
                dv.magic0.eq(cmd.magic0),
                dv.shift0.eq(cmd.shift0),
                dv.magic1.eq(cmd.magic1),
                dv.shift1.eq(cmd.shift1),
                dv.decay.eq(cmd.decay),
            ]
            scaling = cmd.op == Op.DIVIDE
            for j in range(C):
                m.d.comb += [
                    dv.i.payload.x[j].eq(
                        Mux(scaling, din.payload.rescale.acc[j], din.payload.update32.g[j])
                    ),
                    dv.i.payload.w[j].eq(din.payload.update32.w[j]),
                ]
        pipe_len = Signal(range(R + C + 1))  # COMPUTE: cycles left after the last read

        with m.FSM(name="control"):
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [cmd.eq(self.cmd.payload), idx.eq(0), done.eq(0)]
                    with m.Switch(self.cmd.payload.op):
                        with m.Case(Op.LOAD_A, Op.LOAD_B):
                            m.next = "LOAD"
                        with m.Case(Op.COMPUTE):
                            m.d.sync += pipe_len.eq(R + C - 1)
                            m.next = "COMPUTE"
                        with m.Case(Op.DRAIN):
                            m.d.comb += arr.capture.eq(1)
                            m.next = "DRAIN"
                        with m.Case(Op.RANGE_CLEAR):
                            m.d.comb += rng.clear.eq(1)
                        with m.Case(Op.RANGE_READ):
                            m.next = "RANGE_READ"
                        with m.Case(Op.RESCALE):
                            m.next = "RESCALE"
                        with m.Case(Op.UPDATE):
                            m.next = "UPDATE"
                        with m.Case(Op.RANGE_FEED):
                            with m.If(self.cmd.payload.count != 0):
                                m.next = "RANGE_FEED"
                        if self._divide:  # without the lanes, 1 cycle and nothing
                            with m.Case(Op.DIVIDE, Op.UPDATE_DIV):
                                m.next = "DIVIDE"
            with m.State("LOAD"):
                m.d.comb += din.ready.eq(1)
                with m.If(din.valid):
                    m.d.comb += [wa.en.eq(cmd.op == Op.LOAD_A), wb.en.eq(cmd.op == Op.LOAD_B)]
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx + 1 >= cmd.count):
                        m.next = "IDLE"
            with m.State("COMPUTE"):
                # cycle t reads entry t; its data reaches the skew the cycle after
                m.d.comb += arr.en.eq(1)
                m.d.sync += [
                    feed_valid.eq(idx < cmd.count),
                    feed_first.eq((idx == 0) & ~cmd.accumulate),
                ]
                with m.If(idx < cmd.count):
                    m.d.sync += idx.eq(idx + 1)
                with m.Else():
                    m.d.sync += pipe_len.eq(pipe_len - 1)
                    with m.If(pipe_len == 1):
                        m.next = "IDLE"
            with m.State("DRAIN"):
                m.d.comb += dout.valid.eq(1)
                for j in range(C):
                    m.d.comb += [
                        dout.payload.drain.acc[j].eq(arr.out[j]),
                        dout.payload.drain.overflow[j].eq(arr.out_overflow[j]),
                    ]
                with m.If(dout.ready):
                    m.d.comb += [arr.shift.eq(1), rng.valid.eq(1)]
                    m.d.sync += done.eq(done + 1)
                    with m.If(done + 1 >= cmd.count):
                        m.next = "IDLE"
            with m.State("RANGE_FEED"):
                # the range unit observes din's accumulators instead of the array's drain
                m.d.comb += din.ready.eq(1)
                for j in range(C):
                    m.d.comb += [
                        rng.value[j].eq(din.payload.rescale.acc[j]),
                        rng.overflow[j].eq(0),
                    ]
                with m.If(din.valid):
                    m.d.comb += rng.valid.eq(1)
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx + 1 >= cmd.count):
                        m.next = "IDLE"
            with m.State("RANGE_READ"):
                m.d.comb += [
                    dout.valid.eq(1),
                    dout.payload.range.bitwidth.eq(rng.bitwidth),
                    dout.payload.range.shift.eq(rng.shift),
                    dout.payload.range.overflow_count.eq(rng.overflow_count),
                    dout.payload.range.max_magnitude.eq(rng.max_magnitude),
                ]
                with m.If(dout.ready):
                    m.next = "IDLE"
            with m.State("RESCALE"):
                self._stream_through(
                    m, rs, din, dout, idx, done, cmd, [dout.payload.q.eq(rs.o.payload)]
                )
            with m.State("UPDATE"):
                for master, lanes in ((1, up16), (0, up8)):
                    with m.If(cmd.master == master):
                        self._stream_through(
                            m,
                            lanes,
                            din,
                            dout,
                            idx,
                            done,
                            cmd,
                            [
                                part
                                for j in range(C)
                                for part in (
                                    dout.payload.update.w[j].eq(lanes.o.payload.w[j]),
                                    dout.payload.update.w8[j].eq(lanes.o.payload.w8[j]),
                                )
                            ],
                        )
            if self._divide:
                with m.State("DIVIDE"):  # DIVIDE and UPDATE_DIV
                    with m.If(cmd.op == Op.DIVIDE):
                        m.d.comb += dout.payload.q.eq(dv.o.payload.q)
                    with m.Else():
                        m.d.comb += dout.payload.w32.eq(dv.o.payload.w)
                    self._stream_through(m, dv, din, dout, idx, done, cmd, [])
        m.d.comb += self.busy.eq(~self.cmd.ready)
        return m

    @staticmethod
    def _stream_through(m, lanes, din, dout, idx, done, cmd, connect_payload: list):
        """Pass ``count`` din beats through a lane pipeline and its results out to dout."""
        taking = idx < cmd.count
        m.d.comb += [
            lanes.i.valid.eq(din.valid & taking),
            din.ready.eq(lanes.i.ready & taking),
            dout.valid.eq(lanes.o.valid),
            lanes.o.ready.eq(dout.ready),
            *connect_payload,
        ]
        with m.If(din.valid & din.ready):
            m.d.sync += idx.eq(idx + 1)
        with m.If(lanes.o.valid & dout.ready):
            m.d.sync += done.eq(done + 1)
            with m.If(done + 1 >= cmd.count):
                m.next = "IDLE"
