"""Proof harnesses: each Datapath block beside its rule (:mod:`nitihw.sim.prove.spec`), every
input a free variable, so that a solver checks every input there is.

A harness drives the block's ports from its own inputs (the RTLIL's ports: free on every cycle
of a proof) and keeps a *shadow line*: the rule's result for each beat the block accepts,
delayed as the block's pipeline delays it and advancing when it advances. Its assertions:

- the block's output is valid exactly when the shadow line says a beat arrives;
- every arriving beat equals the rule's result for the inputs it was accepted with.

Each harness is built in two forms (:meth:`Harness.top`): without stalls (the output is
always taken), which k-induction proves for every input sequence, unbounded; and with the
output's ``ready`` free too, which bounded model checking checks for every stall pattern up to
its depth and which the covers run on. Covers name what must be reachable for the proof to mean
anything (each rounding mode rounding up, saturation on each side, a stall): a proof whose
covers are unreached would hold vacuously, and :mod:`nitihw.sim.prove.run` fails it.
"""

from __future__ import annotations

from amaranth import (
    Cat,
    ClockDomain,
    Const,
    Elaboratable,
    Module,
    Mux,
    Signal,
    Value,
    signed,
    unsigned,
)
from amaranth.hdl import Assert, Assume, Cover

from nitihw.rtl.range_unit import TARGET_BITS, RangeUnit
from nitihw.rtl.rescale import INT8_MAX, RescaleLanes, RoundingMode, rescale_max_shift
from nitihw.rtl.schedule import range_latency
from nitihw.rtl.update import UpdateLanes
from nitihw.sim.prove import spec


class Harness:
    """A block beside its rule, described: :attr:`block` (a name), :attr:`params`, its tasks and
    depths. :meth:`top` makes the Elaboratable a proof runs (with or without stalls: ``ready``
    free, or held high); subclasses declare their free inputs in :meth:`declare` and build the
    block and its properties in :meth:`build`."""

    block = "block"
    #: the run's tasks (nitihw.sim.prove.run.TASKS): k-induction, bounded checking, covers
    tasks = ("prove", "bmc", "cover")
    #: the block's latency in beats
    latency = 1

    @property
    def prove_depth(self) -> int:
        """k of the k-induction: past the pipeline, every register is set by the window."""
        return self.latency + 2

    @property
    def bmc_depth(self) -> int:
        """Cycles of the bounded check and the covers: beats through the pipeline with stalls
        among them. (Every cycle adds a copy of the block for the solver: 10 cycles of the
        32-bit rescale lanes took over 7 minutes, 6 take seconds.)"""
        return self.latency + 3

    @property
    def params(self) -> dict:
        return {}

    def label(self) -> str:
        """``block`` and its parameters, e.g. ``rescale-acc32-limit127``."""
        return "-".join([self.block, *(f"{k}{v}" for k, v in self.params.items())])

    def top(self, stalls: bool) -> _Top:
        """The proof's top module: the block, its rule and the properties."""
        return _Top(self, stalls)

    def declare(self, free) -> None:
        """Make the free inputs: ``free(shape, name)``."""
        raise NotImplementedError

    def build(self, m: Module, i: dict, stalls: bool) -> None:
        """The block, its rule and the properties, on the free inputs ``i``."""
        raise NotImplementedError


class _Top(Elaboratable):
    """A harness made concrete: its free inputs are the ports; a reset-less clock."""

    def __init__(self, harness: Harness, stalls: bool):
        self.harness, self.stalls = harness, stalls
        self.clk = Signal()
        self.inputs: dict[str, Signal] = {}

        def free(shape, name):
            self.inputs[name] = Signal(shape, name=name)

        harness.declare(free)

    def ports(self) -> list[Signal]:
        return [self.clk, *self.inputs.values()]

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain("sync", reset_less=True)
        m.d.comb += cd.clk.eq(self.clk)
        self.harness.build(m, self.inputs, self.stalls)
        return m


def shadow(m: Module, advance, valid, expected: dict, latency: int) -> dict:
    """The shadow line of a valid/ready stream block: ``valid`` and the ``expected`` values
    delayed by ``latency`` beats, moving when ``advance`` is high (the block's own advance).
    Returns the last stage: ``{"valid": ..., name: ...}``."""
    stage = {"valid": valid, **expected}
    for k in range(latency):
        nxt = {}
        for name, value in stage.items():
            reg = Signal(Value.cast(value).shape(), name=f"shadow{k}_{name}")
            with m.If(advance):
                m.d.sync += reg.eq(value)
            nxt[name] = reg
        stage = nxt
    return stage


class RescaleHarness(Harness):
    """The rescale lanes (numerics.md §2): every rounding mode, right and left shifts, the
    saturation bound, the ``sto`` random integer, for any accumulator value and shift."""

    block = "rescale"
    latency = RescaleLanes.LATENCY

    def __init__(self, accumulator_bits: int = 32, limit: int = INT8_MAX):
        self.accumulator_bits, self.limit = accumulator_bits, limit

    @property
    def params(self) -> dict:
        return {"acc": self.accumulator_bits, "limit": self.limit}

    def declare(self, free) -> None:
        ms = rescale_max_shift(self.accumulator_bits)
        free(1, "valid")
        free(1, "ready")
        free(signed(self.accumulator_bits), "x")
        free(unsigned(ms), "rand")
        free(range(ms + 1), "shift")
        free(3, "mode")
        free(1, "left")

    def build(self, m: Module, i: dict, stalls: bool) -> None:
        w, lim = self.accumulator_bits, self.limit
        ms = rescale_max_shift(w)
        m.submodules.dut = dut = RescaleLanes(lanes=1, accumulator_bits=w, limit=lim)
        valid, ready, x, rand = i["valid"], i["ready"], i["x"], i["rand"]
        shift, mode, left = i["shift"], i["mode"], i["left"]
        m.d.comb += [
            dut.i.valid.eq(valid),
            dut.i.payload.acc[0].eq(x),
            dut.i.payload.rand[0].eq(rand),
            dut.shift.eq(shift),
            dut.mode.eq(mode),
            dut.left.eq(left),
            dut.o.ready.eq(ready),
            Assume(mode <= max(r.value for r in RoundingMode)),  # the five encodings
            Assume(shift <= ms),  # the lanes' documented range
        ]
        if not stalls:
            m.d.comb += Assume(ready)
        right, ups, sat_r = spec.shift_round(x, shift, mode, rand, width=w, max_shift=ms, limit=lim)
        lft, sat_l = spec.shift_left(x, shift, width=w, max_shift=ms, limit=lim)
        want = Signal(signed(8))
        m.d.comb += want.eq(Mux(left, lft, right))
        flags = {f"up_{r.name.lower()}": Signal(name=f"up_{r.name.lower()}") for r in ups}
        for r, bit in ups.items():
            m.d.comb += flags[f"up_{r.name.lower()}"].eq(~left & (mode == r.value) & bit)
        sat_hi, sat_lo, left_sat = Signal(), Signal(), Signal()
        m.d.comb += [
            sat_hi.eq(~left & sat_r & (x > 0)),
            sat_lo.eq(~left & sat_r & (x < 0)),
            left_sat.eq(left & sat_l & (shift != 0)),
        ]
        advance = ~dut.o.valid | dut.o.ready
        out = shadow(
            m,
            advance,
            valid,
            {"want": want, **flags, "sat_hi": sat_hi, "sat_lo": sat_lo, "left_sat": left_sat},
            self.latency,
        )
        m.d.comb += Assert(dut.o.valid == out["valid"], "a result arrives exactly LATENCY beats on")
        with m.If(out["valid"]):
            m.d.comb += Assert(dut.o.payload[0] == out["want"], "the result is numerics.md's")
        arrives = dut.o.valid & dut.o.ready
        # every mode that can round up does (trunc never does, by its rule)
        reachable = [f for f in flags if f != "up_trunc"]
        for name in (*reachable, "sat_hi", "sat_lo", "left_sat"):
            m.d.comb += Cover(arrives & out[name], name)
        if stalls:
            m.d.comb += Cover(dut.o.valid & ~dut.o.ready & out["valid"], "stalled")


class UpdateHarness(Harness):
    """The update lanes (numerics.md §3): ``clamp(W - g, -limit, limit)`` of int8 weights for
    any limit, or the 16-bit master weights' clamp and ``psto(W16, 8)``."""

    block = "update"
    latency = UpdateLanes.LATENCY

    def __init__(self, master: bool = False):
        self.master = bool(master)

    @property
    def params(self) -> dict:
        return {"master": int(self.master)}

    def declare(self, free) -> None:
        free(1, "valid")
        free(1, "ready")
        free(signed(16 if self.master else 8), "w")
        free(signed(8), "g")
        if not self.master:
            free(unsigned(7), "limit")

    def build(self, m: Module, i: dict, stalls: bool) -> None:
        ww = 16 if self.master else 8
        m.submodules.dut = dut = UpdateLanes(lanes=1, master=self.master)
        valid, ready, w, g = i["valid"], i["ready"], i["w"], i["g"]
        m.d.comb += [
            dut.i.valid.eq(valid),
            dut.i.payload.w[0].eq(w),
            dut.i.payload.g[0].eq(g),
            dut.o.ready.eq(ready),
        ]
        if not stalls:
            m.d.comb += Assume(ready)
        want_w, want_w8 = Signal(signed(ww)), Signal(signed(8))
        hi, lo = Signal(), Signal()
        if self.master:
            new, new8 = spec.master_update(w, g)
            m.d.comb += [want_w.eq(new), want_w8.eq(new8)]
            bound = spec.MASTER_LIMIT
        else:
            limit = i["limit"]
            m.d.comb += dut.limit.eq(limit)
            new = spec.update(w, g, limit)
            m.d.comb += [want_w.eq(new), want_w8.eq(new)]
            bound = limit
        diff = w.as_signed() - g.as_signed()
        m.d.comb += [hi.eq(diff > bound), lo.eq(diff < -bound)]
        advance = ~dut.o.valid | dut.o.ready
        out = shadow(
            m, advance, valid, {"w": want_w, "w8": want_w8, "hi": hi, "lo": lo},
            self.latency,
        )  # fmt: skip
        m.d.comb += Assert(dut.o.valid == out["valid"], "a result arrives exactly LATENCY beats on")
        with m.If(out["valid"]):
            m.d.comb += [
                Assert(dut.o.payload.w[0] == out["w"], "the stored weight is numerics.md's"),
                Assert(dut.o.payload.w8[0] == out["w8"], "the forward weight is numerics.md's"),
            ]
        arrives = dut.o.valid & dut.o.ready
        m.d.comb += [
            Cover(arrives & out["hi"], "clamped_high"),
            Cover(arrives & out["lo"], "clamped_low"),
        ]
        if self.master:
            m.d.comb += Cover(arrives & (out["w8"] == INT8_MAX), "forward_weight_saturated")
        if stalls:
            m.d.comb += Cover(dut.o.valid & ~dut.o.ready & out["valid"], "stalled")


class RangeHarness(Harness):
    """The range unit (numerics.md §2): after any observations since ``clear``, once it is idle
    its bit-width, shift, maximum magnitude and overflow count are the rule's for every value it
    saw. Checked over a bounded number of cycles (its running registers are compared with a
    running maximum kept here, which no induction on the pipeline alone can relate)."""

    block = "range"
    tasks = ("bmc", "cover")  # bounded: see the class's docstring

    def __init__(self, lanes: int = 2, accumulator_bits: int = 16):
        self.lanes, self.accumulator_bits = lanes, accumulator_bits

    @property
    def params(self) -> dict:
        return {"lanes": self.lanes, "acc": self.accumulator_bits}

    def declare(self, free) -> None:
        free(1, "clear")
        free(1, "valid")
        for k in range(self.lanes):
            free(signed(self.accumulator_bits), f"value{k}")
            free(1, f"overflow{k}")

    @property
    def latency(self) -> int:
        return range_latency(self.lanes)

    @property
    def bmc_depth(self) -> int:
        """Several beats and clears, then the pipeline's drain (no stall port here)."""
        return self.latency + 6

    def build(self, m: Module, i: dict, stalls: bool) -> None:
        n, w = self.lanes, self.accumulator_bits
        m.submodules.dut = dut = RangeUnit(n, w)
        clear, valid = i["clear"], i["valid"]
        values = [i[f"value{k}"] for k in range(n)]
        flags = [i[f"overflow{k}"] for k in range(n)]
        m.d.comb += [dut.clear.eq(clear), dut.valid.eq(valid)]
        for k in range(n):
            m.d.comb += [dut.value[k].eq(values[k]), dut.overflow[k].eq(flags[k])]
        m.d.comb += Assume(~(clear & dut.busy))  # the documented contract: clear only when idle
        # the rule's running state: the largest magnitude and the overflow count since clear
        seen_max = Signal(unsigned(w))
        seen_count = Signal(32)
        beat_max = Const(0, unsigned(w))
        for v in values:
            _, mag = spec.magnitude(v, w)
            beat_max = Mux(mag > beat_max, mag, beat_max)
        beat_count = sum(flags)
        with m.If(clear):
            m.d.sync += [
                seen_max.eq(Mux(valid, beat_max, 0)),
                seen_count.eq(Mux(valid, beat_count, 0)),
            ]
        with m.Elif(valid):
            m.d.sync += [
                seen_max.eq(Mux(beat_max > seen_max, beat_max, seen_max)),
                seen_count.eq(seen_count + beat_count),
            ]
        want_bits = spec.bitwidth(seen_max, w)
        want_shift = Mux(want_bits > TARGET_BITS, want_bits - TARGET_BITS, 0)
        with m.If(~dut.busy):
            m.d.comb += [
                Assert(dut.max_magnitude == seen_max, "max |x| since clear"),
                Assert(dut.bitwidth == want_bits, "bitwidth = (max|x| - 1).bit_length()"),
                Assert(dut.shift == want_shift, "shift = max(bitwidth - 7, 0)"),
                Assert(dut.overflow_count == seen_count, "overflowed elements since clear"),
            ]
        # busy is low again within the pipeline's latency of the last observation
        quiet = Signal(range(self.latency + 2))
        with m.If(valid):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet <= self.latency):
            m.d.sync += quiet.eq(quiet + 1)
        with m.If(quiet > self.latency):
            m.d.comb += Assert(~dut.busy, "idle within the latency of the last observation")
        int_min = Const(1 << (w - 1), unsigned(w))
        m.d.comb += [
            Cover(~dut.busy & (dut.bitwidth == w - 1) & (dut.max_magnitude == int_min), "int_min"),
            Cover(~dut.busy & (dut.overflow_count >= 2), "overflows_counted"),
            Cover(~dut.busy & (dut.shift > 0) & (seen_count == 0), "shift_needed"),
        ]


class ControlHarness(Harness):
    """The Datapath's control (docs/datapath.md, "The streaming interface"), whole, over any
    command stream, any din beats and any dout stalls, for a bounded number of cycles:

    - no load writes a bank the array is reading, and the array never reads a bank the loader
      is still writing (the write-after-read and read-after-write hazards);
    - no command is lost or reordered: every command the queue accepts reaches dispatch, in
      order and unchanged (a shadow queue of the accepted commands), and none is left once
      ``busy`` falls;
    - ``error`` is set exactly when a command docs/datapath.md lists as refused is dispatched
      (an unknown opcode, the divide lanes' commands in a build without them, ``from_buffer``
      without a result buffer, a load or ``COMPUTE`` longer than a bank), with its opcode.

    The Datapath is the smallest that has every unit (one PE, two-word banks, a two-row result
    buffer, 8-bit accumulators): the control does not depend on the array's size. It is
    elaborated here, so that its internal signals (:attr:`~nitihw.rtl.datapath.Datapath.
    internals`) can be probed."""

    block = "control"
    tasks = ("bmc", "cover")  # bounded: the whole Datapath

    def __init__(self, kmax: int = 2, result_rows: int = 2, divide: bool = False, depth: int = 8):
        self.kmax, self.result_rows, self.divide = kmax, result_rows, bool(divide)
        self.depth = depth

    @property
    def params(self) -> dict:
        return {"kmax": self.kmax, "rows": self.result_rows, "div": int(self.divide)}

    @property
    def bmc_depth(self) -> int:
        """Long enough for a load, a COMPUTE on its bank and a second load waiting for it (8
        cycles: the bounded check takes about 12 s; 12 cycles took 9 minutes)."""
        return self.depth

    def datapath_params(self):
        from nitihw.rtl.datapath import DatapathParams

        # NITRO-D's build: 32-bit B operands need accumulator and guard bits to hold a product
        wide = (
            {"operand_bits": 8, "b_bits": 32, "accumulator_bits": 32}
            if self.divide
            else {"operand_bits": 2, "accumulator_bits": 8}
        )
        return DatapathParams(
            1, 1, kmax=self.kmax, result_rows=self.result_rows, divide=self.divide, **wide
        )

    def declare(self, free) -> None:
        from nitihw.rtl.datapath import command_layout, din_layout

        p = self.datapath_params()
        free(1, "cmd_valid")
        free(command_layout(p.accumulator_bits).size, "cmd")
        free(1, "din_valid")
        din = din_layout(1, 1, p.operand_bits, p.accumulator_bits, p.b_bits, p.divide)
        free(din.size, "din")
        free(1, "dout_ready")

    def refused(self, head):
        """The commands docs/datapath.md lists as dropped with ``error``."""
        from nitihw.rtl.datapath import Op

        op, count = head.op.as_value(), head.count
        unknown = op >= 11
        if not self.divide:
            unknown = unknown | (op == Op.DIVIDE.value) | (op == Op.UPDATE_DIV.value)
        loads = [Op.LOAD_A, Op.LOAD_B, Op.LOAD_AB, Op.COMPUTE]
        too_long = Cat(*(op == o.value for o in loads)).any() & (count > self.kmax)
        no_buffer = Const(0, 1)
        if not self.result_rows:
            buffered = (op == Op.RESCALE.value) | (op == Op.DIVIDE.value)
            no_buffer = head.from_buffer & buffered
        return unknown | too_long | no_buffer

    def build(self, m: Module, i: dict, stalls: bool) -> None:
        from nitihw.rtl.datapath import Datapath, command_layout
        from nitihw.rtl.schedule import QUEUE_DEPTH

        p = self.datapath_params()
        dut = Datapath(p)
        dut._MustUse__silence = True  # elaborated here, not by the fragment builder:
        m.submodules.dut = dut.elaborate(None)  # so that its internals can be probed
        w = dut.internals
        m.d.comb += [
            dut.cmd.valid.eq(i["cmd_valid"]),
            dut.cmd.payload.eq(i["cmd"]),
            dut.din.valid.eq(i["din_valid"]),
            dut.din.payload.eq(i["din"]),
            dut.dout.ready.eq(i["dout_ready"] if stalls else 1),
        ]
        # ---- the banks: never read and written at once ----------------------------------
        ld_busy, ld_a, ld_b = w["ld_busy"], w["ld_a"], w["ld_b"]
        reading = w["x_reading"]
        for b in range(2):
            wa, wb = w["banks_a"][b][0], w["banks_b"][b][0]
            m.d.comb += [
                Assert(~(wa.en & reading & (w["x_bank_a"] == b)), "no load writes the A bank read"),
                Assert(~(wb.en & reading & (w["x_bank_b"] == b)), "no load writes the B bank read"),
            ]
        m.d.comb += [
            Assert(
                ~(reading & ld_busy & ld_a & (w["ld_bank_a"] == w["x_bank_a"])),
                "the array never reads the A bank being loaded",
            ),
            Assert(
                ~(reading & ld_busy & ld_b & (w["ld_bank_b"] == w["x_bank_b"])),
                "the array never reads the B bank being loaded",
            ),
        ]
        # ---- the queue: a shadow of the accepted commands -------------------------------
        layout = command_layout(p.accumulator_bits)
        queue, head = w["queue"], w["head"]
        accepted = dut.cmd.valid & dut.cmd.ready
        dispatched = queue.r_en & queue.r_rdy
        depth = QUEUE_DEPTH
        slots = [Signal(layout.size, name=f"shadow_cmd{k}") for k in range(depth)]
        level = Signal(range(depth + 1))
        m.d.sync += level.eq(level + accepted - dispatched)
        for k in range(depth):
            # after a dispatch the queue moves down one; an accepted command goes to the end
            src = Mux(dispatched, slots[k + 1] if k + 1 < depth else 0, slots[k])
            at = level - dispatched
            m.d.sync += slots[k].eq(Mux(accepted & (at == k), dut.cmd.payload.as_value(), src))
        with m.If(dispatched):
            m.d.comb += [
                Assert(level > 0, "nothing is dispatched that was not accepted"),
                Assert(head.as_value() == slots[0], "dispatched in order, unchanged"),
            ]
        m.d.comb += Assert(
            dut.cmd.ready == (level < depth), "the queue takes a command when it has room"
        )
        with m.If(~dut.busy):
            m.d.comb += Assert(level == 0, "no command is left once busy falls")
        # ---- error: exactly the refused commands, with the opcode -----------------------
        bad = Signal()
        m.d.comb += bad.eq(self.refused(head))
        seen, seen_op = Signal(), Signal(4)
        with m.If(dispatched & bad):
            m.d.sync += [seen.eq(1), seen_op.eq(head.op.as_value())]
        m.d.comb += Assert(dut.error == seen, "error is set exactly by a refused command")
        with m.If(seen):
            m.d.comb += Assert(dut.error_op == seen_op, "error_op is the refused opcode")
        # ---- covers: what the proof must have seen ---------------------------------------
        from nitihw.rtl.datapath import Op

        is_load = (head.op == Op.LOAD_A) | (head.op == Op.LOAD_B) | (head.op == Op.LOAD_AB)
        m.d.comb += [
            Cover(queue.r_rdy & is_load & ~dispatched & reading, "a_load_waits_for_the_array"),
            Cover(queue.r_rdy & (head.op == Op.COMPUTE) & ~dispatched & ld_busy, "compute_waits"),
            Cover(dut.cmd.valid & ~dut.cmd.ready, "queue_full"),
            Cover(dispatched & bad & (head.op.as_value() >= 11), "unknown_opcode_refused"),
            Cover(dispatched & bad & is_load, "long_load_refused"),
            Cover(dut.dout.valid & dut.dout.ready, "a_result_out"),
        ]
        if stalls:
            m.d.comb += Cover(dut.dout.valid & ~dut.dout.ready, "dout_stalled")


#: the harnesses ``nitihw prove`` runs by default: 8-bit operands and a narrower width (4-bit
#: operands saturate at 7), 32- and 16-bit accumulators; the update lanes of both kinds; the
#: range unit over 2 and 3 lanes; the Datapath's control, with a result buffer, without one,
#: and with the divide lanes
DEFAULT = (
    RescaleHarness(32, INT8_MAX),
    RescaleHarness(16, 7),
    UpdateHarness(master=False),
    UpdateHarness(master=True),
    RangeHarness(2, 16),
    RangeHarness(3, 12),
    ControlHarness(),
    ControlHarness(result_rows=0),
    ControlHarness(divide=True),
)

__all__ = [
    "DEFAULT",
    "ControlHarness",
    "Harness",
    "RangeHarness",
    "RescaleHarness",
    "UpdateHarness",
]
