"""The Datapath (v2): MAC array, range unit, rescale, update and divide lanes behind one
streaming interface, with the operand loads, the array and the drain of a GEMM overlapped.

Three valid/ready streams: ``cmd`` (commands), ``din`` (data in) and ``dout`` (data out).
Commands go into a queue (:data:`~nitihw.rtl.schedule.QUEUE_DEPTH` deep) and are dispatched in
order, at most one per cycle, each to its unit:

- the **loader** (``LOAD_A``, ``LOAD_B``, ``LOAD_AB``) writes din beats into one of two banks
  (ping-pong) of the A and B operand buffers;
- the **array** (``COMPUTE``) streams one A bank and one B bank through the MAC array; with
  ``drain`` it then captures the accumulators into the drain shadows, and the **drainer** sends
  the tile's rows to dout (the range unit watching) while the array computes the next tile;
- the **serial unit** runs everything else, alone: the range unit's clear / read / feed, and the
  rescale, update and divide lanes.

A command waits at the head of the queue until its unit is free and its hazards have cleared:
a load waits while the array still reads the bank it writes, a COMPUTE while the loader still
writes a bank it reads, and a serial command until every unit (and the range unit's pipeline)
is idle. So a host can issue the next tile's load right behind the current tile's COMPUTE and
the two run together. :func:`nitihw.rtl.schedule.program_cycles` states the timing.

============  ===========================================================================
command       what it does (``count`` is its number of beats; 0: nothing)
============  ===========================================================================
LOAD_A        ``count`` din beats, each one column of an A tile (``ab.a``, ``rows`` operands),
              into A bank ``bank_a`` at addresses 0..count-1
LOAD_B        ``count`` din beats, each one row of a B tile (``ab.b``, ``cols`` operands), into
              B bank ``bank_b``
LOAD_AB       ``count`` din beats carrying both (``ab``): an A column and a B row per beat
COMPUTE       stream entries 0..count-1 of A bank ``bank_a`` and B bank ``bank_b`` (skewed)
              through the array: every PE (i, j) sums ``A[i, k] * B[k, j]``; ``accumulate``
              adds to the previous sums instead of starting new ones (K longer than the
              buffers); ``drain``: when the last products are in, capture the tile and send
              its first ``drain_rows`` rows (``cols`` accumulators each, with their overflow
              flags) as dout beats; the range unit observes them. ``keep`` also writes row
              ``r`` into result-buffer row ``row + r``; ``add`` drains the tile plus what
              result-buffer rows ``row..`` hold (partial sums of K cut into slices; rows
              past the buffer are dropped, and add 0);
              ``quiet`` (a partial sum) sends nothing to dout and the range unit
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

Any other opcode (11..15, ``DIVIDE``/``UPDATE_DIV`` in a build without divide lanes,
``from_buffer`` without a result buffer) and a load or COMPUTE longer than a bank (``count >
kmax``) is dropped and sets the sticky ``error`` output, with the opcode in ``error_op``.

Every dout beat leaves through a skid buffer, so ``din.ready`` and every lane's stall signal
come from registers, never combinationally from ``dout.ready``.

The B operand may be wider than A (``b_bits`` up to 32: NITRO-D multiplies int8 activations by
int32 weights and deltas, with sums that wrap to ``accumulator_bits``); the divide lanes
(:class:`nitihw.rtl.divide.DivideLanes`, two 32x33-bit multipliers per lane) are built only
with ``divide=True``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from nitihw.golden.limits import current_names
from nitihw.rtl.divide import DIV_BITS, MAGIC_BITS, SHIFT_BITS, DivideLanes
from nitihw.rtl.mac_array import MacArray, check_array_params, max_exact_k, wide_overflow
from nitihw.rtl.params import reject, require
from nitihw.rtl.range_unit import RangeUnit
from nitihw.rtl.rescale import RescaleLanes, RoundingMode, rescale_limit, rescale_max_shift
from nitihw.rtl.schedule import QUEUE_DEPTH, default_result_rows
from nitihw.rtl.update import UpdateLanes

COUNT_BITS = 24
DRAIN_ROWS_BITS = 9  # up to 256 rows
ROW_BITS = 20  # a result-buffer row address (result_rows up to 2^20)


class Op(enum.Enum, shape=4):
    LOAD_A = 0
    LOAD_B = 1
    COMPUTE = 2
    LOAD_AB = 3
    RANGE_CLEAR = 4
    RANGE_READ = 5
    RESCALE = 6
    UPDATE = 7
    RANGE_FEED = 8
    DIVIDE = 9
    UPDATE_DIV = 10


def command_layout(accumulator_bits: int) -> data.StructLayout:
    return data.StructLayout(
        {
            "op": Op,
            "count": unsigned(COUNT_BITS),
            "accumulate": 1,
            "shift": range(rescale_max_shift(accumulator_bits) + 1),
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
            "bank_a": 1,  # LOAD_A / LOAD_AB / COMPUTE: which A bank
            "bank_b": 1,  # LOAD_B / LOAD_AB / COMPUTE: which B bank
            "drain": 1,  # COMPUTE: capture and drain the tile when done
            "drain_rows": unsigned(DRAIN_ROWS_BITS),  # COMPUTE: rows to drain
            "keep": 1,  # COMPUTE with drain: also write the rows into the result buffer
            "row": unsigned(ROW_BITS),  # COMPUTE with drain: the result-buffer row of row 0
            "add": 1,  # COMPUTE with drain: add the result buffer's rows (partial sums)
            "quiet": 1,  # COMPUTE with drain: a partial sum, not sent to dout or the range unit
            "from_buffer": 1,  # RESCALE / DIVIDE: read rows 0..count-1 of the result buffer
        }
    )


def din_layout(
    rows, cols, operand_bits, accumulator_bits, b_bits=None, divide=False
) -> data.UnionLayout:
    """``b_bits`` (default ``operand_bits``) is the B operand's width; ``divide`` adds
    ``update32``."""
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
            "ab": data.StructLayout(
                {
                    "a": data.ArrayLayout(signed(operand_bits), rows),
                    "b": data.ArrayLayout(signed(b_bits or operand_bits), cols),
                }
            ),
            "rescale": data.StructLayout(
                {
                    "acc": data.ArrayLayout(signed(accumulator_bits), cols),
                    "rand": data.ArrayLayout(unsigned(rescale_max_shift(accumulator_bits)), cols),
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


def dout_layout(cols, accumulator_bits, divide=False) -> data.UnionLayout:
    """``divide`` adds ``w32`` (UPDATE_DIV's int32 weights)."""
    wide = {"w32": data.ArrayLayout(signed(DIV_BITS), cols)} if divide else {}
    return data.UnionLayout(
        {
            "drain": data.StructLayout(
                {
                    "acc": data.ArrayLayout(signed(accumulator_bits), cols),
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
                    "bitwidth": range(accumulator_bits + 1),
                    "shift": range(accumulator_bits + 1),
                    "overflow_count": 32,
                    "max_magnitude": unsigned(accumulator_bits),
                }
            ),
            **wide,
        }
    )


class _Wires(dict):
    """The signals one section of :meth:`Datapath.elaborate` makes and later sections use."""

    def keep(self, scope: dict, names: str) -> None:
        """Keep the signals ``names`` (space-separated) of a section's ``scope`` (its
        ``locals()``) for the sections after it."""
        for name in names.split():
            if name in self:
                raise KeyError(f"elaborate: {name} is made twice")
            self[name] = scope[name]

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, *names) -> tuple:
        """Several signals at once, in order."""
        return tuple(self[n] for n in names)


@dataclass(frozen=True)
class DatapathParams:
    """The parameters of one :class:`Datapath`, checked once, here, and passed as this one
    object from the command line to the Verilog, the simulators, the driver and the testbenches
    (files and child processes carry :meth:`as_dict`, read back with :meth:`from_dict`).

    Its fields are the Datapath's parameters (see there); ``b_bits`` (None: ``operand_bits``)
    and ``result_rows`` (None: :func:`~nitihw.rtl.schedule.default_result_rows`) are resolved
    when it is made. Each value is checked against :data:`nitihw.golden.limits.LIMITS`, then
    their combinations.
    """

    rows: int = 8
    cols: int = 8
    operand_bits: int = 8
    accumulator_bits: int = 32
    guard_bits: int = 8
    kmax: int = 256
    b_bits: int | None = None
    divide: bool = False
    result_rows: int | None = None

    def __post_init__(self):
        for key in ("rows", "cols", "kmax", "operand_bits"):
            require(self, key, getattr(self, key))
        if self.b_bits is None:
            object.__setattr__(self, "b_bits", self.operand_bits)
        if self.result_rows is None:
            object.__setattr__(self, "result_rows", default_result_rows(self.cols))
        for key in ("result_rows", "b_bits", "accumulator_bits", "guard_bits"):
            require(self, key, getattr(self, key))
        if not isinstance(self.divide, bool):
            reject(self, f"divide must be True or False, got {self.divide!r}")
        check_array_params(
            self,
            self.rows,
            self.cols,
            self.operand_bits,
            self.b_bits,
            self.accumulator_bits,
            self.guard_bits,
        )
        if self.divide and self.operand_bits < 8:
            reject(
                self,
                "divide=True (NITRO-D) needs 8-bit operands or wider, got "
                f"operand_bits={self.operand_bits}",
            )
        if self.divide and self.accumulator_bits > DIV_BITS:
            reject(
                self,
                f"the divide lanes take {DIV_BITS}-bit values: divide=True needs "
                f"accumulator_bits <= {DIV_BITS}, got {self.accumulator_bits}",
            )

    @property
    def max_shift(self) -> int:
        """The rescale lanes' largest shift."""
        return rescale_max_shift(self.accumulator_bits)

    @property
    def rescale_limit(self) -> int:
        """The rescale lanes' saturation bound."""
        return rescale_limit(self.operand_bits)

    @property
    def max_exact_k(self) -> int:
        """The longest sum whose overflow flag is exact."""
        return max_exact_k(self.accumulator_bits, self.guard_bits, self.operand_bits, self.b_bits)

    def as_dict(self) -> dict:
        """The fields and the derived values, as ``params.json`` holds them."""
        derived = ("max_shift", "rescale_limit", "max_exact_k")
        return asdict(self) | {k: getattr(self, k) for k in derived}

    @classmethod
    def from_dict(cls, values: dict) -> DatapathParams:
        """What :meth:`as_dict` wrote (also under the former names, see
        :func:`~nitihw.golden.limits.current_names`), checked again; other keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in current_names(values).items() if k in names})

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}"


class Datapath(wiring.Component):
    """The nitihw training datapath.

    Parameters
    ----------
    Every parameter is limited by :data:`nitihw.golden.limits.LIMITS`, the table the commands
    and config files use.

    rows, cols : MAC array shape (1..256); rescale, update and range lanes are ``cols`` wide.
    operand_bits : signed operand width (8 default; 2..8 or 16). Below 8 the rescale lanes saturate
        to that width's range, ``+-(2^(operand_bits-1) - 1)`` (numerics.md §2); results stay int8
        words.
    accumulator_bits : accumulator width (32 default; 8..48).
    guard_bits : extra accumulator bits for exact overflow detection (8 default).
    kmax : depth of each bank of the A and B operand buffers (the longest K of one COMPUTE).
    b_bits : the B operand's width (default ``operand_bits``; 8, 16 or 32; above 16 the sums
        wrap and ``accumulator_bits + guard_bits`` must hold one product, see
        :mod:`nitihw.rtl.mac_array`).
    divide : build the divide lanes (``DIVIDE``, ``UPDATE_DIV``; needs ``accumulator_bits <= 32``).
    result_rows : rows (of ``cols`` accumulators) of the result buffer, where a GEMM's drained
        rows are kept (``keep``) for a later ``RESCALE``/``DIVIDE`` ``from_buffer``; default
        :func:`~nitihw.rtl.schedule.default_result_rows` (256 KiB of int32); 0: none.

    Members
    -------
    cmd : In(stream.Signature(command_layout))
        Commands; ``ready`` while the command queue has room.
    din : In(stream.Signature(din_layout))
        Operands (``ab``), accumulators to rescale or divide (``rescale``), weights and
        gradients to update (``update``, ``update32``): which member is read depends on the
        command, in command order.
    dout : Out(stream.Signature(dout_layout))
        Drained accumulators (``drain``), rescaled or divided int8 (``q``), updated weights
        (``update``, ``w32``) or the range (``range``), in command order.
    busy : Out(1)
        A command is queued or running (low: everything done, the range final).
    error : Out(1)
        Sticky: an unknown or unsupported opcode was dropped (cleared by reset).
    error_op : Out(4)
        The last such opcode.
    """

    def __init__(self, rows: int | DatapathParams = 8, cols: int = 8, **options):
        """``Datapath(params)`` with a :class:`DatapathParams`, or ``Datapath(rows, cols,
        **options)`` with its fields (checked there)."""
        if isinstance(rows, DatapathParams):
            if options or cols != 8:
                self._MustUse__silence = True
                raise TypeError("Datapath(params) takes no other arguments")
            p = rows
        else:
            try:
                p = DatapathParams(rows, cols, **options)
            except (TypeError, ValueError):
                self._MustUse__silence = True  # never built: nothing to warn about
                raise
        self._params = p
        rows, cols, acc, b_bits = p.rows, p.cols, p.accumulator_bits, p.b_bits
        super().__init__(
            {
                "cmd": In(stream.Signature(command_layout(acc))),
                "din": In(
                    stream.Signature(din_layout(rows, cols, p.operand_bits, acc, b_bits, p.divide))
                ),
                "dout": Out(stream.Signature(dout_layout(cols, acc, p.divide))),
                "busy": Out(1),
                "error": Out(1),
                "error_op": Out(4),
            }
        )

    params = property(lambda self: self._params, doc="The :class:`DatapathParams` built.")
    rows = property(lambda self: self._params.rows)
    cols = property(lambda self: self._params.cols)
    operand_bits = property(lambda self: self._params.operand_bits)
    accumulator_bits = property(lambda self: self._params.accumulator_bits)
    guard_bits = property(lambda self: self._params.guard_bits)
    kmax = property(lambda self: self._params.kmax)
    b_bits = property(lambda self: self._params.b_bits)
    divide = property(lambda self: self._params.divide)
    result_rows = property(lambda self: self._params.result_rows)

    def elaborate(self, platform):
        m, w = Module(), _Wires()
        #: the named internal signals of the last elaboration (the queue, the banks' ports,
        #: the units' state), for the proofs of the control (nitihw.sim.prove.harness)
        self.internals = w
        # the sections in this order: a later one may override what an earlier one drives
        self._blocks(m, w)
        self._skid_buffer(m, w)
        self._command_queue(m, w)
        self._loader(m, w)
        self._array_control(m, w)
        self._drainer(m, w)
        self._skew(m, w)
        self._serial_unit(m, w)
        self._drain_path(m, w)
        self._lane_inputs(m, w)
        self._range_inputs(m, w)
        self._dout_sources(m, w)
        self._dispatch(m, w)
        return m

    def _blocks(self, m: Module, w: _Wires) -> None:
        """The MAC array, the range unit, the lanes, the command queue, the operand banks and
        the result buffer."""
        R, C, kmax = self.rows, self.cols, self.kmax
        layout = command_layout(self.accumulator_bits)
        # ---- blocks ----------------------------------------------------------------------
        m.submodules.array = arr = MacArray(
            R,
            C,
            a_width=self.operand_bits,
            b_width=self.b_bits,
            accumulator_bits=self.accumulator_bits,
            guard_bits=self.guard_bits,
        )
        limit = rescale_limit(self.operand_bits)  # the operand width's bound (127 for int8)
        m.submodules.range_unit = rng = RangeUnit(C, self.accumulator_bits, limit.bit_length())
        m.submodules.rescale = rs = RescaleLanes(C, self.accumulator_bits, limit)
        m.submodules.update8 = up8 = UpdateLanes(C, master=False)
        m.submodules.update16 = up16 = UpdateLanes(C, master=True)
        dv = None
        if self.divide:
            m.submodules.divide = dv = DivideLanes(C)
        m.submodules.queue = queue = SyncFIFO(width=layout.size, depth=QUEUE_DEPTH)

        # two banks (ping-pong) of each operand buffer
        banks_a, banks_b = [], []
        for bank in range(2):
            mem_a = memory.Memory(
                shape=data.ArrayLayout(signed(self.operand_bits), R), depth=kmax, init=[]
            )
            mem_b = memory.Memory(
                shape=data.ArrayLayout(signed(self.b_bits), C), depth=kmax, init=[]
            )
            m.submodules[f"mem_a{bank}"] = mem_a
            m.submodules[f"mem_b{bank}"] = mem_b
            banks_a.append((mem_a.write_port(), mem_a.read_port()))
            banks_b.append((mem_b.write_port(), mem_b.read_port()))

        # the result buffer: a GEMM's drained rows, kept for the rescale or divide pass, and
        # partial sums waiting for the rest of K. Its words keep the guard bits and the sticky
        # flag, so that a sum added up in parts has the exact overflow flag of a whole one.
        R_ROWS = self.result_rows
        accumulator_bits, wide = self.accumulator_bits, self.accumulator_bits + self.guard_bits
        word = data.StructLayout({"v": signed(wide), "s": 1})
        rb_w = rb_r = None
        if R_ROWS:
            m.submodules.result = rbuf = memory.Memory(
                shape=data.ArrayLayout(word, C), depth=R_ROWS, init=[]
            )
            rb_w, rb_r = rbuf.write_port(), rbuf.read_port()
        w.keep(
            locals(),
            "arr rng rs up8 up16 dv queue banks_a banks_b R_ROWS accumulator_bits wide rb_w rb_r",
        )

    def _skid_buffer(self, m: Module, w: _Wires) -> None:
        """The output skid buffer, which every dout beat passes."""
        dout = self.dout
        # ---- the output skid buffer: every dout beat passes here ----------------------------
        # Sources offer (ob_valid, ob_payload) and see ob_ready, a register: no combinational
        # path from dout.ready back into the datapath.
        ob_valid = Signal()
        ob_payload = Signal(dout.payload.shape())
        ob_full = Signal()
        ob_buf = Signal(dout.payload.shape())
        ob_ready = ~ob_full
        m.d.comb += [
            dout.valid.eq(ob_full | ob_valid),
            dout.payload.eq(Mux(ob_full, ob_buf, ob_payload)),
        ]
        with m.If(ob_full):
            with m.If(dout.ready):
                m.d.sync += ob_full.eq(0)
        with m.Elif(ob_valid & ~dout.ready):
            m.d.sync += [ob_full.eq(1), ob_buf.eq(ob_payload)]
        w.keep(locals(), "ob_valid ob_payload ob_ready")

    def _command_queue(self, m: Module, w: _Wires) -> None:
        """Commands into the queue; its head."""
        layout = command_layout(self.accumulator_bits)
        queue = w.queue
        # ---- the command queue --------------------------------------------------------------
        head = Signal(layout)
        m.d.comb += [
            queue.w_data.eq(self.cmd.payload),
            queue.w_en.eq(self.cmd.valid),
            self.cmd.ready.eq(queue.w_rdy),
            head.eq(queue.r_data),
        ]
        w.keep(locals(), "head")

    def _loader(self, m: Module, w: _Wires) -> None:
        """The loader: din beats into the operand banks."""
        din = self.din
        banks_a, banks_b = w.get("banks_a", "banks_b")
        # ---- loader state ---------------------------------------------------------------------
        ld_busy = Signal()
        ld_a, ld_b = Signal(), Signal()
        ld_bank_a, ld_bank_b = Signal(), Signal()
        ld_count = Signal(COUNT_BITS)
        ld_idx = Signal(COUNT_BITS)
        with m.If(ld_busy):
            m.d.comb += din.ready.eq(1)
            with m.If(din.valid):
                m.d.sync += ld_idx.eq(ld_idx + 1)
                with m.If(ld_idx + 1 >= ld_count):
                    m.d.sync += ld_busy.eq(0)
        for bank, (wa, _) in enumerate(banks_a):
            m.d.comb += [
                wa.addr.eq(ld_idx),
                wa.data.eq(din.payload.ab.a),
                wa.en.eq(ld_busy & din.valid & ld_a & (ld_bank_a == bank)),
            ]
        for bank, (wb, _) in enumerate(banks_b):
            m.d.comb += [
                wb.addr.eq(ld_idx),
                wb.data.eq(din.payload.ab.b),
                wb.en.eq(ld_busy & din.valid & ld_b & (ld_bank_b == bank)),
            ]
        w.keep(locals(), "ld_busy ld_a ld_b ld_bank_a ld_bank_b ld_count ld_idx")

    def _array_control(self, m: Module, w: _Wires) -> None:
        """The array's reads of the banks, its flags and its flush."""
        R, C = self.rows, self.cols
        banks_a, banks_b = w.get("banks_a", "banks_b")
        # ---- array state ----------------------------------------------------------------------
        x_reading, x_flushing = Signal(), Signal()
        x_count = Signal(COUNT_BITS)
        x_idx = Signal(COUNT_BITS)
        x_accumulate, x_drain = Signal(), Signal()
        x_bank_a, x_bank_b = Signal(), Signal()
        x_rows = Signal(DRAIN_ROWS_BITS)
        x_keep, x_add, x_quiet = Signal(), Signal(), Signal()
        x_row = Signal(ROW_BITS)
        flush = Signal(range(R + C))
        x_last_read = x_reading & (x_idx + 1 >= x_count)
        for _, ra in banks_a:
            m.d.comb += ra.addr.eq(x_idx)
        for _, rb in banks_b:
            m.d.comb += rb.addr.eq(x_idx)
        # the memories answer the cycle after the read: the feed flags and bank follow
        feed_valid, feed_first = Signal(), Signal()
        feed_bank_a, feed_bank_b = Signal(), Signal()
        m.d.sync += [
            feed_valid.eq(x_reading),
            feed_first.eq(x_reading & (x_idx == 0) & ~x_accumulate),
            feed_bank_a.eq(x_bank_a),
            feed_bank_b.eq(x_bank_b),
        ]
        with m.If(x_reading):
            m.d.sync += x_idx.eq(x_idx + 1)
            with m.If(x_last_read):
                m.d.sync += x_reading.eq(0)
                with m.If(x_drain):
                    m.d.sync += [x_flushing.eq(1), flush.eq(R + C - 1)]
        with m.If(x_flushing & (flush != 0)):
            m.d.sync += flush.eq(flush - 1)
        w.keep(
            locals(),
            "x_reading x_flushing x_count x_idx x_accumulate x_drain x_bank_a x_bank_b x_rows"
            " x_keep x_add x_quiet x_row flush x_last_read"
            " feed_valid feed_first feed_bank_a feed_bank_b",
        )

    def _drainer(self, m: Module, w: _Wires) -> None:
        """The capture of a finished tile and the drainer's state."""
        arr, ob_ready = w.get("arr", "ob_ready")
        x_flushing, flush, x_rows, x_keep, x_add, x_quiet, x_row = w.get(
            "x_flushing", "flush", "x_rows", "x_keep", "x_add", "x_quiet", "x_row"
        )
        x_reading, x_last_read, x_drain = w.get("x_reading", "x_last_read", "x_drain")
        # ---- drainer state --------------------------------------------------------------------
        dr_busy = Signal()
        dr_left = Signal(DRAIN_ROWS_BITS)
        dr_keep, dr_add, dr_quiet = Signal(), Signal(), Signal()
        dr_row = Signal(ROW_BITS)  # the result-buffer row of the row on arr.out
        # dr_row < the result buffer's rows, kept in a register of its own beside dr_row: the
        # comparison's carry chain was in front of the drain's adder (docs/synth.md)
        dr_in_buf = Signal()
        capture = x_flushing & (flush == 0) & ~dr_busy
        with m.If(capture):
            m.d.comb += arr.capture.eq(1)
            m.d.sync += x_flushing.eq(0)
            with m.If(x_rows != 0):
                m.d.sync += [
                    dr_busy.eq(1),
                    dr_left.eq(x_rows),
                    dr_keep.eq(x_keep),
                    dr_add.eq(x_add),
                    dr_quiet.eq(x_quiet),
                    dr_row.eq(x_row),
                    dr_in_buf.eq(x_row < w.R_ROWS),
                ]
        # a drained row moves on when dout takes it (a quiet row: every cycle)
        dr_step = dr_busy & (dr_quiet | ob_ready)
        # the array takes a new COMPUTE when idle, on a no-drain COMPUTE's last read (the sums
        # go on back to back), or in the capture cycle
        x_accept = (~x_reading & ~x_flushing) | (x_last_read & ~x_drain) | capture
        w.keep(
            locals(),
            "dr_busy dr_left dr_keep dr_add dr_quiet dr_row dr_in_buf capture dr_step x_accept",
        )

    def _skew(self, m: Module, w: _Wires) -> None:
        """The skew of the operands into the array."""
        R, C = self.rows, self.cols
        arr, banks_a, banks_b = w.get("arr", "banks_a", "banks_b")
        feed_valid, feed_first, feed_bank_a, feed_bank_b = w.get(
            "feed_valid", "feed_first", "feed_bank_a", "feed_bank_b"
        )
        # ---- skew: row i of A (and its flags) delayed by i cycles, column j of B by j ------------
        a_data = Signal(data.ArrayLayout(signed(self.operand_bits), R))
        b_data = Signal(data.ArrayLayout(signed(self.b_bits), C))
        m.d.comb += [
            a_data.eq(Mux(feed_bank_a, banks_a[1][1].data, banks_a[0][1].data)),
            b_data.eq(Mux(feed_bank_b, banks_b[1][1].data, banks_b[0][1].data)),
        ]
        m.d.comb += arr.en.eq(1)
        for i in range(R):
            chain = [(a_data[i], feed_valid, feed_first)]
            for d in range(i):
                regs = (
                    Signal(signed(self.operand_bits), name=f"skew_a_{i}_{d}"),
                    Signal(name=f"skew_v_{i}_{d}"),
                    Signal(name=f"skew_f_{i}_{d}"),
                )
                m.d.sync += [regs[n].eq(chain[-1][n]) for n in range(3)]
                chain.append(regs)
            m.d.comb += [
                arr.a[i].eq(chain[-1][0]),
                arr.a_valid[i].eq(chain[-1][1]),
                arr.a_first[i].eq(chain[-1][2]),
            ]
        for j in range(C):
            prev = b_data[j]
            for d in range(j):
                reg = Signal(signed(self.b_bits), name=f"skew_b_{j}_{d}")
                m.d.sync += reg.eq(prev)
                prev = reg
            m.d.comb += arr.b[j].eq(prev)

    def _serial_unit(self, m: Module, w: _Wires) -> None:
        """The serial unit's state, its passage through the lanes, the rescale lanes'
        settings."""
        din = self.din
        layout = command_layout(self.accumulator_bits)
        R_ROWS, rb_r, rs, up8, ob_valid, ob_ready = w.get(
            "R_ROWS", "rb_r", "rs", "up8", "ob_valid", "ob_ready"
        )
        # ---- serial unit state ----------------------------------------------------------------
        s_busy = Signal()
        s_cmd = Signal(layout)
        s_idx = Signal(COUNT_BITS)
        s_done = Signal(COUNT_BITS)

        # RESCALE / DIVIDE from_buffer: rows of the result buffer instead of din beats. The
        # buffer's read port is synchronous: a row is read ahead and waits on its output
        # (bf_valid) until the lanes take it.
        from_buf = Signal()
        bf_valid = Signal()
        bf_next = Signal(COUNT_BITS)  # the next row to read
        if R_ROWS:
            m.d.comb += from_buf.eq(
                s_cmd.from_buffer & ((s_cmd.op == Op.RESCALE) | (s_cmd.op == Op.DIVIDE))
            )

        def through(lanes, bufferable=False):
            """Pass ``count`` beats (din's, or the result buffer's rows) through a lane
            pipeline and its results to the skid."""
            taking = s_idx < s_cmd.count
            src = Mux(from_buf, bf_valid, din.valid) if bufferable and R_ROWS else din.valid
            take = src & lanes.i.ready & taking
            m.d.comb += [
                lanes.i.valid.eq(src & taking),
                din.ready.eq(lanes.i.ready & taking & ~from_buf),
                ob_valid.eq(lanes.o.valid),
            ]
            with m.If(take):
                m.d.sync += s_idx.eq(s_idx + 1)
            if bufferable and R_ROWS:
                with m.If(from_buf):
                    read = (bf_next < s_cmd.count) & (~bf_valid | take)
                    m.d.comb += [rb_r.en.eq(read), rb_r.addr.eq(bf_next)]
                    with m.If(read):
                        m.d.sync += [bf_next.eq(bf_next + 1), bf_valid.eq(1)]
                    with m.Elif(take):
                        m.d.sync += bf_valid.eq(0)
            with m.If(lanes.o.valid & ob_ready):
                m.d.sync += s_done.eq(s_done + 1)
                with m.If(s_done + 1 >= s_cmd.count):
                    m.d.sync += s_busy.eq(0)

        m.d.comb += [
            rs.shift.eq(s_cmd.shift),
            rs.left.eq(s_cmd.left),
            rs.mode.eq(s_cmd.mode),
            rs.i.payload.eq(din.payload.rescale),
            up8.limit.eq(s_cmd.limit),
        ]
        w.keep(locals(), "s_busy s_cmd s_idx s_done from_buf bf_valid bf_next through")

    def _drain_path(self, m: Module, w: _Wires) -> None:
        """The drained row (plus the partial sums it adds), the result buffer's ports."""
        C = self.cols
        arr, rs, R_ROWS, accumulator_bits, wide, rb_w, rb_r = w.get(
            "arr", "rs", "R_ROWS", "accumulator_bits", "wide", "rb_w", "rb_r"
        )
        dr_add, dr_row, dr_step, dr_keep, dr_left, capture, x_add, x_row, from_buf = w.get(
            "dr_add",
            "dr_row",
            "dr_step",
            "dr_keep",
            "dr_left",
            "capture",
            "x_add",
            "x_row",
            "from_buf",
        )
        # the drained row: the tile's sums, plus (``add``) the partial sums the result buffer
        # holds for it, read the cycle before (at the capture, then with each step); rows past
        # the buffer hold nothing (``keep`` drops them, ``add`` adds 0)
        dr_in_buf = w.dr_in_buf
        adding = dr_add & dr_in_buf
        d_wide = [Signal(signed(wide + 1), name=f"drain_sum_{j}") for j in range(C)]
        d_sticky = [Signal(name=f"drain_sticky_{j}") for j in range(C)]
        d_acc = [Signal(signed(accumulator_bits), name=f"drain_acc_{j}") for j in range(C)]
        d_ovf = [Signal(name=f"drain_ovf_{j}") for j in range(C)]
        for j in range(C):
            if R_ROWS:
                held = rb_r.data[j]
                m.d.comb += [
                    d_wide[j].eq(arr.out_wide[j] + Mux(adding, held.v, 0)),
                    d_sticky[j].eq(
                        arr.out_sticky[j]
                        | (adding & held.s)
                        | (d_wide[j][wide] ^ d_wide[j][wide - 1])
                    ),
                ]
            else:
                m.d.comb += [d_wide[j].eq(arr.out_wide[j]), d_sticky[j].eq(arr.out_sticky[j])]
            m.d.comb += [
                d_acc[j].eq(d_wide[j][:accumulator_bits]),
                d_ovf[j].eq(d_sticky[j] | wide_overflow(d_wide[j][:wide], accumulator_bits)),
            ]
        if R_ROWS:
            m.d.comb += rb_w.addr.eq(dr_row)
            for j in range(C):
                m.d.comb += [rb_w.data[j].v.eq(d_wide[j][:wide]), rb_w.data[j].s.eq(d_sticky[j])]
            with m.If(dr_step & dr_keep & dr_in_buf):
                m.d.comb += rb_w.en.eq(1)
            # the drainer's reads (the serial unit's from_buffer reads, below, override these;
            # the two never run together)
            with m.If(capture & x_add):
                m.d.comb += [rb_r.en.eq(1), rb_r.addr.eq(x_row)]
            with m.Elif(dr_step & dr_add & (dr_left != 1)):
                m.d.comb += [rb_r.en.eq(1), rb_r.addr.eq(dr_row + 1)]
            with m.Else():
                m.d.comb += rb_r.en.eq(0)
            with m.If(from_buf):
                for j in range(C):
                    m.d.comb += [
                        rs.i.payload.acc[j].eq(rb_r.data[j].v[:accumulator_bits]),
                        rs.i.payload.rand[j].eq(0),
                    ]
        w.keep(locals(), "d_acc d_ovf")

    def _lane_inputs(self, m: Module, w: _Wires) -> None:
        """The update and divide lanes' inputs."""
        C = self.cols
        din = self.din
        up8, up16, dv, R_ROWS, rb_r, accumulator_bits = w.get(
            "up8", "up16", "dv", "R_ROWS", "rb_r", "accumulator_bits"
        )
        s_cmd, from_buf = w.get("s_cmd", "from_buf")
        for j in range(C):
            m.d.comb += [
                up8.i.payload.w[j].eq(din.payload.update.w[j]),
                up8.i.payload.g[j].eq(din.payload.update.g[j]),
                up16.i.payload.w[j].eq(din.payload.update.w[j]),
                up16.i.payload.g[j].eq(din.payload.update.g[j]),
            ]
        if dv is not None:
            m.d.comb += [
                dv.magic0.eq(s_cmd.magic0),
                dv.shift0.eq(s_cmd.shift0),
                dv.magic1.eq(s_cmd.magic1),
                dv.shift1.eq(s_cmd.shift1),
                dv.decay.eq(s_cmd.decay),
            ]
            scaling = s_cmd.op == Op.DIVIDE
            for j in range(C):
                m.d.comb += [
                    dv.i.payload.x[j].eq(
                        Mux(
                            scaling,
                            Mux(
                                from_buf,
                                rb_r.data[j].v[:accumulator_bits],
                                din.payload.rescale.acc[j],
                            )
                            if R_ROWS
                            else din.payload.rescale.acc[j],
                            din.payload.update32.g[j],
                        )
                    ),
                    dv.i.payload.w[j].eq(din.payload.update32.w[j]),
                ]

    def _range_inputs(self, m: Module, w: _Wires) -> None:
        """The range unit watches the drain, or din in RANGE_FEED."""
        C = self.cols
        din = self.din
        rng, s_busy, s_cmd, d_acc, d_ovf = w.get("rng", "s_busy", "s_cmd", "d_acc", "d_ovf")
        # ---- the range unit watches the drain, or din in RANGE_FEED --------------------------
        feeding = s_busy & (s_cmd.op == Op.RANGE_FEED)
        for j in range(C):
            m.d.comb += [
                rng.value[j].eq(Mux(feeding, din.payload.rescale.acc[j], d_acc[j])),
                rng.overflow[j].eq(~feeding & d_ovf[j]),
            ]

    def _dout_sources(self, m: Module, w: _Wires) -> None:
        """What each unit sends to dout, and the serial commands' own work."""
        C = self.cols
        din = self.din
        arr, rng, rs, up8, up16, dv = w.get("arr", "rng", "rs", "up8", "up16", "dv")
        ob_valid, ob_payload, ob_ready, through = w.get(
            "ob_valid", "ob_payload", "ob_ready", "through"
        )
        dr_busy, dr_quiet, dr_step, dr_left, dr_row, d_acc, d_ovf = w.get(
            "dr_busy", "dr_quiet", "dr_step", "dr_left", "dr_row", "d_acc", "d_ovf"
        )
        s_busy, s_cmd, s_idx = w.get("s_busy", "s_cmd", "s_idx")
        # ---- dout sources ---------------------------------------------------------------------
        with m.If(dr_busy):
            m.d.comb += ob_valid.eq(~dr_quiet)
            for j in range(C):
                m.d.comb += [
                    ob_payload.drain.acc[j].eq(d_acc[j]),
                    ob_payload.drain.overflow[j].eq(d_ovf[j]),
                ]
            with m.If(dr_step):
                m.d.comb += [arr.shift.eq(1), rng.valid.eq(~dr_quiet)]
                m.d.sync += [
                    dr_left.eq(dr_left - 1),
                    dr_row.eq(dr_row + 1),
                    w.dr_in_buf.eq(dr_row + 1 < w.R_ROWS),
                ]
                with m.If(dr_left == 1):
                    m.d.sync += dr_busy.eq(0)
        with m.If(s_busy):
            with m.Switch(s_cmd.op):
                with m.Case(Op.RANGE_READ):
                    m.d.comb += [
                        ob_valid.eq(1),
                        ob_payload.range.bitwidth.eq(rng.bitwidth),
                        ob_payload.range.shift.eq(rng.shift),
                        ob_payload.range.overflow_count.eq(rng.overflow_count),
                        ob_payload.range.max_magnitude.eq(rng.max_magnitude),
                    ]
                    with m.If(ob_ready):
                        m.d.sync += s_busy.eq(0)
                with m.Case(Op.RANGE_FEED):
                    m.d.comb += din.ready.eq(1)
                    with m.If(din.valid):
                        m.d.comb += rng.valid.eq(1)
                        m.d.sync += s_idx.eq(s_idx + 1)
                        with m.If(s_idx + 1 >= s_cmd.count):
                            m.d.sync += s_busy.eq(0)
                with m.Case(Op.RESCALE):
                    m.d.comb += ob_payload.q.eq(rs.o.payload)
                    through(rs, bufferable=True)
                with m.Case(Op.UPDATE):
                    for master, lanes in ((1, up16), (0, up8)):
                        with m.If(s_cmd.master == master):
                            for j in range(C):
                                m.d.comb += [
                                    ob_payload.update.w[j].eq(lanes.o.payload.w[j]),
                                    ob_payload.update.w8[j].eq(lanes.o.payload.w8[j]),
                                ]
                            through(lanes)
                if dv is not None:
                    with m.Case(Op.DIVIDE, Op.UPDATE_DIV):
                        with m.If(s_cmd.op == Op.DIVIDE):
                            m.d.comb += ob_payload.q.eq(dv.o.payload.q)
                        with m.Else():
                            m.d.comb += ob_payload.w32.eq(dv.o.payload.w)
                        through(dv, bufferable=True)
        m.d.comb += [rs.o.ready.eq(ob_ready), up8.o.ready.eq(ob_ready), up16.o.ready.eq(ob_ready)]
        if dv is not None:
            m.d.comb += dv.o.ready.eq(ob_ready)

    def _dispatch(self, m: Module, w: _Wires) -> None:
        """The head of the queue goes to its unit when it can; busy and error."""
        rng, dv, queue, head = w.get("rng", "dv", "queue", "head")
        ld_busy, x_reading, x_flushing, dr_busy, s_busy = w.get(
            "ld_busy", "x_reading", "x_flushing", "dr_busy", "s_busy"
        )
        all_idle = ~ld_busy & ~x_reading & ~x_flushing & ~dr_busy & ~s_busy & ~rng.busy
        go = Signal()
        error, error_op = Signal(), Signal(4)
        op, count = head.op, head.count
        serial_ops = [Op.RANGE_CLEAR, Op.RANGE_READ, Op.RANGE_FEED, Op.RESCALE, Op.UPDATE]
        if dv is not None:
            serial_ops += [Op.DIVIDE, Op.UPDATE_DIV]
        too_long = count > self.kmax  # a load or COMPUTE longer than a bank

        def drop():
            """Unknown, not built, or too long: dropped (no beats), and flagged."""
            m.d.comb += go.eq(1)
            m.d.sync += [error.eq(1), error_op.eq(op.as_value())]

        with m.If(queue.r_rdy):
            with m.Switch(op):
                with m.Case(Op.LOAD_A, Op.LOAD_B, Op.LOAD_AB):
                    self._dispatch_load(m, w, go, drop, too_long)
                with m.Case(Op.COMPUTE):
                    self._dispatch_compute(m, w, go, drop, too_long)
                with m.Case(*serial_ops):
                    self._dispatch_serial(m, w, go, drop, all_idle)
                with m.Default():  # unknown, or not built
                    drop()
        m.d.comb += [
            queue.r_en.eq(go),
            self.busy.eq(queue.r_rdy | ~all_idle),
            self.error.eq(error),
            self.error_op.eq(error_op),
        ]

    def _dispatch_load(self, m: Module, w: _Wires, go, drop, too_long) -> None:
        """A load goes to the loader when it is free and the array no longer reads the bank."""
        head, s_busy, x_reading, x_bank_a, x_bank_b = w.get(
            "head", "s_busy", "x_reading", "x_bank_a", "x_bank_b"
        )
        ld_busy, ld_a, ld_b, ld_bank_a, ld_bank_b, ld_count, ld_idx = w.get(
            "ld_busy", "ld_a", "ld_b", "ld_bank_a", "ld_bank_b", "ld_count", "ld_idx"
        )
        op, count = head.op, head.count
        to_a = (op == Op.LOAD_A) | (op == Op.LOAD_AB)
        to_b = (op == Op.LOAD_B) | (op == Op.LOAD_AB)
        war = self._write_after_read(x_reading, to_a, to_b, x_bank_a, x_bank_b, head)
        with m.If(too_long):
            drop()
        with m.Else():
            m.d.comb += go.eq(~ld_busy & ~s_busy & ~war)
            with m.If(go & (count != 0)):
                m.d.sync += [
                    ld_busy.eq(1),
                    ld_a.eq(to_a),
                    ld_b.eq(to_b),
                    ld_bank_a.eq(head.bank_a),
                    ld_bank_b.eq(head.bank_b),
                    ld_count.eq(count),
                    ld_idx.eq(0),
                ]

    @staticmethod
    def _write_after_read(x_reading, to_a, to_b, x_bank_a, x_bank_b, head):
        """The load at the head would write a bank the array is reading (it waits)."""
        return x_reading & ((to_a & (x_bank_a == head.bank_a)) | (to_b & (x_bank_b == head.bank_b)))

    def _dispatch_compute(self, m: Module, w: _Wires, go, drop, too_long) -> None:
        """A COMPUTE goes to the array when it takes one and the loader no longer writes its
        banks."""
        head, s_busy, x_accept = w.get("head", "s_busy", "x_accept")
        ld_busy, ld_a, ld_b, ld_bank_a, ld_bank_b = w.get(
            "ld_busy", "ld_a", "ld_b", "ld_bank_a", "ld_bank_b"
        )
        count = head.count
        raw = ld_busy & ((ld_a & (ld_bank_a == head.bank_a)) | (ld_b & (ld_bank_b == head.bank_b)))
        with m.If(too_long):
            drop()
        with m.Else():
            m.d.comb += go.eq(x_accept & ~s_busy & ~raw)
            with m.If(go & (count != 0)):
                m.d.sync += [
                    w.x_reading.eq(1),
                    w.x_idx.eq(0),
                    w.x_count.eq(count),
                    w.x_accumulate.eq(head.accumulate),
                    w.x_drain.eq(head.drain),
                    w.x_rows.eq(head.drain_rows),
                    w.x_keep.eq(head.keep),
                    w.x_add.eq(head.add),
                    w.x_quiet.eq(head.quiet),
                    w.x_row.eq(head.row),
                    w.x_bank_a.eq(head.bank_a),
                    w.x_bank_b.eq(head.bank_b),
                ]

    def _dispatch_serial(self, m: Module, w: _Wires, go, drop, all_idle) -> None:
        """Any other command waits until everything is idle, then the serial unit runs it
        (``RANGE_CLEAR`` acts at once)."""
        head, rng, R_ROWS = w.get("head", "rng", "R_ROWS")
        op, count = head.op, head.count
        # from_buffer in a build without a result buffer
        with m.If(
            head.from_buffer & ((op == Op.RESCALE) | (op == Op.DIVIDE))
            if not R_ROWS
            else Const(0, 1)
        ):
            drop()
        with m.Else():
            m.d.comb += go.eq(all_idle)
            with m.If(go & (op == Op.RANGE_CLEAR)):
                m.d.comb += rng.clear.eq(1)
            with m.Elif(go & ((op == Op.RANGE_READ) | (count != 0))):
                m.d.sync += [
                    w.s_busy.eq(1),
                    w.s_cmd.eq(head),
                    w.s_idx.eq(0),
                    w.s_done.eq(0),
                    w.bf_valid.eq(0),
                    w.bf_next.eq(0),
                ]
