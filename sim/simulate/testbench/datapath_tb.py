"""cocotb testbench of the integrated Datapath against the golden model.

Parameters come from the environment (set by :func:`nitihw.sim.simulate.verify.run_datapath_tests`):
``NITIHW_PARAMS`` (the Datapath's parameters as JSON; ``divide_ops`` needs a build with
32-bit B operands and the divide lanes), ``NITIHW_SEED`` and ``NITIHW_STATS``
(where to write simulated cycles, MACs and wall time). Expected values come from
:mod:`nitihw.golden`, imported; every command's measured cycles are checked against
:func:`nitihw.rtl.schedule.program_cycles`.
"""

from __future__ import annotations

import json
import os
import time

import cocotb
import numpy as np

from nitihw.golden import Accumulator, bitwidth, exact_matmul, range_shift, shift_round
from nitihw.golden.files import atomic_write_json
from nitihw.golden.rounding import max_abs, saturate, trunc_div, wrap
from nitihw.rtl.datapath import DatapathParams
from nitihw.rtl.schedule import Command, program_cycles
from nitihw.sim.simulate.cocotb_port import CocotbPort, reset, start_clock_and_reset
from nitihw.sim.simulate.datapath_driver import DatapathDriver, DatapathError
from nitihw.sim.simulate.native.crosscheck import run_ops

MODES = ("round", "psto", "trunc", "rne", "sto")


class DatapathTB:
    """Clock, reset, the driver (stimulus + monitor), the golden model and the checks."""

    def __init__(self, dut):
        self.dut = dut
        self.params = DatapathParams.from_dict(json.loads(os.environ["NITIHW_PARAMS"]))
        # the range unit's shift keeps the operand width's magnitude bits (7 for int8)
        self.target_bits = self.params.rescale_limit.bit_length()
        self.seed = int(os.environ.get("NITIHW_SEED", "0"))
        self.rng = np.random.default_rng(self.seed)
        self.acc = Accumulator(self.params.accumulator_bits)
        self.drv = DatapathDriver(CocotbPort(dut), self.params)
        self.macs = 0
        self.t0 = 0.0

    async def start(self):
        await self.drv.reset_streams()
        await start_clock_and_reset(self.dut)
        self.t0 = time.perf_counter()

    async def check_cycles(self):
        await self.drv.sync()
        r, c = self.params.rows, self.params.cols
        for rec in self.drv.log:
            want = program_cycles(rec.commands, r, c)
            assert rec.cycles == want, (
                f"{rec.name} ({len(rec.commands)} commands) took {rec.cycles} cycles, "
                f"schedule {want}"
            )

    def write_stats(self, name: str):
        path = os.environ.get("NITIHW_STATS")
        if not path:
            return
        stats = json.loads(open(path).read()) if os.path.exists(path) else {}
        stats[name] = {
            "cycles": self.drv.cycle,
            "macs": self.macs,
            "seconds": time.perf_counter() - self.t0,
            "commands": sum(len(rec.commands) for rec in self.drv.log),
        }
        with open(path + ".tmp", "w") as f:
            json.dump(stats, f)
        os.replace(path + ".tmp", path)

    async def gemm_and_check(self, a, b):
        """One GEMM as a tensor, in one program: range cleared, tiles drained, range read;
        all vs golden."""
        acc, ovf, rng = await self.drv.gemm_tensor(a, b)
        exact = exact_matmul(a, b, "object") if a.size and b.size else np.zeros(acc.shape, np.int64)
        self.macs += a.shape[0] * a.shape[1] * b.shape[1]
        wrapped = self.acc.wrap(exact)
        np.testing.assert_array_equal(acc, wrapped, err_msg=f"GEMM {a.shape} @ {b.shape}")
        np.testing.assert_array_equal(ovf, (exact < self.acc.min) | (exact > self.acc.max))
        assert rng["bitwidth"] == bitwidth(wrapped), (rng, bitwidth(wrapped))
        assert rng["shift"] == range_shift(bitwidth(wrapped), self.target_bits)
        assert rng["overflow_count"] == int(ovf.sum())
        assert rng["max_magnitude"] == max_abs(wrapped)
        return wrapped, rng

    async def rescale_and_check(self, acc, shift, mode):
        """A negative ``shift`` is a left shift (the lanes ignore ``mode`` and ``rand``)."""
        rand = self.rng.integers(0, 1 << abs(shift), acc.shape) if mode == "sto" else None
        got = await self.drv.rescale(acc, shift, mode, rand)
        want = shift_round(acc, shift, mode, rand, self.params.rescale_limit)
        np.testing.assert_array_equal(got, want, err_msg=f"rescale mode {mode} shift {shift}")

    async def feed_and_check(self, x):
        """The range of a tensor that is not a GEMM's result: RANGE_CLEAR, RANGE_FEED,
        RANGE_READ, against the golden bit-width and max |x|."""
        rng = await self.drv.feed_tensor(x)
        assert rng["bitwidth"] == bitwidth(x), (rng, bitwidth(x))
        assert rng["shift"] == range_shift(bitwidth(x), self.target_bits)
        assert rng["max_magnitude"] == max_abs(x), (rng, max_abs(x))
        assert rng["overflow_count"] == 0
        return rng

    async def update_and_check(self, w, g, limit=127):
        new, w8 = await self.drv.update(w, g, limit=limit)
        want = np.clip(np.asarray(w) - np.asarray(g), -limit, limit)
        np.testing.assert_array_equal(new, want, err_msg=f"update limit {limit}")
        np.testing.assert_array_equal(w8, want, err_msg=f"update limit {limit}")


def random_operands(rng, m, k, n, bits):
    hi = (1 << (bits - 1)) - 1
    a = rng.integers(-hi, hi + 1, (m, k))
    b = rng.integers(-hi, hi + 1, (k, n))
    # sprinkle the corners: zeros and both extremes
    for x in (a, b):
        mask = rng.random(x.shape)
        x[mask < 0.05] = 0
        x[(mask >= 0.05) & (mask < 0.1)] = hi
        x[(mask >= 0.1) & (mask < 0.15)] = -hi
    return a, b


@cocotb.test()
async def random_gemms_all_modes(dut):
    """GEMMs whose shapes are not multiples of the array, then every rounding mode on them;
    the range of other tensors fed through the range unit, left shifts of the int8 results,
    and updates clamped to +-64 (WAGE) between them."""
    tb = DatapathTB(dut)
    await tb.start()
    r, c, kmax = tb.params.rows, tb.params.cols, tb.params.kmax
    shapes = [
        (1, 1, 1),
        (r + 1, 3, c - 1 or 1),
        (2 * r + 3, kmax + 5, 2 * c + 1),
        (r, 2 * kmax + 1, c),
        (3, 7, 3 * c + 2),
    ]
    for i, (m, k, n) in enumerate(shapes):
        a, b = random_operands(tb.rng, m, k, n, tb.params.operand_bits)
        acc, rng = await tb.gemm_and_check(a, b)
        shift = rng["shift"]
        for mode in MODES:
            await tb.rescale_and_check(acc, shift if mode != "sto" else min(shift, 16), mode)
        if i == 0:
            await tb.rescale_and_check(acc, tb.params.max_shift, "psto")
        # a tensor that is not the GEMM's result (the range unit must be fed it), whose size
        # is not a multiple of the lanes; then the GEMM's own range again, unaffected
        lim = 1 << (tb.params.accumulator_bits - 1)
        other = tb.rng.integers(-lim, lim, m * n + 1) >> int(tb.rng.integers(0, 20))
        await tb.feed_and_check(other)
        await tb.feed_and_check(acc)
        q = shift_round(acc, shift, "round")
        for left in (1, 2, 3, 7):
            await tb.rescale_and_check(q >> left, -left, MODES[i % len(MODES)])
        w = tb.rng.integers(-127, 128, m * n)
        g = tb.rng.integers(-127, 128, m * n)
        await tb.update_and_check(w, g, limit=64)
    await tb.check_cycles()
    tb.write_stats("random_gemms_all_modes")


@cocotb.test()
async def corners(dut):
    """+-127 everywhere, zeros, shift 0 and the largest shift, updates at the clamps."""
    tb = DatapathTB(dut)
    await tb.start()
    r, c, kmax = tb.params.rows, tb.params.cols, tb.params.kmax
    hi = (1 << (tb.params.operand_bits - 1)) - 1
    k = min(kmax, 64)
    for sa, sb in ((hi, hi), (hi, -hi), (-hi, -hi)):
        acc, _ = await tb.gemm_and_check(np.full((r + 1, k), sa), np.full((k, c + 1), sb))
        for s in (0, 1, tb.params.max_shift):
            await tb.rescale_and_check(acc, s, "round")
            await tb.rescale_and_check(acc, s, "psto")
    zeros, rng = await tb.gemm_and_check(np.zeros((r, 3), int), np.zeros((3, c), int))
    assert rng["bitwidth"] == 0 and rng["shift"] == 0
    await tb.rescale_and_check(zeros, 0, "round")
    # 32-bit accumulator extremes through the rescale lanes, every mode and every shift
    lim = 1 << (tb.params.accumulator_bits - 1)
    vals = np.array([lim - 1, -lim, -lim + 1, 0, 1, -1, 127, -127, 128, -128, 1004, -1012] * 2)
    for s in range(0, tb.params.max_shift + 1):
        for mode in MODES:
            await tb.rescale_and_check(vals, s, mode)
    # fed ranges of the extremes, of zeros, of one element; left shifts up to the largest
    await tb.feed_and_check(vals)
    await tb.feed_and_check(np.array([-lim]))
    await tb.feed_and_check(np.array([lim - 1, 0, 0]))
    await tb.feed_and_check(np.zeros(c + 1, int))
    await tb.feed_and_check(np.array([3]))
    for s in range(1, tb.params.max_shift + 1):
        for mode in MODES:
            await tb.rescale_and_check(vals, -s, mode)
        await tb.rescale_and_check(np.arange(-130, 131) >> 2, -s, "round")
    # update lanes at the clamps
    w = np.array([127, -127, 100, -100, 0, 5, 127, -127, 1] * 3)
    g = np.array([-1, 1, -100, 100, 127, 5, 127, -127, -127] * 3)
    for limit in (64, 1, 127):
        await tb.update_and_check(w, g, limit)
    await tb.update_and_check(np.array([64, -64, 65, -65, 63]), np.array([-1, 1, 0, 0, -1]), 64)
    new, w8 = await tb.drv.update(w, g)
    np.testing.assert_array_equal(new, np.clip(w - g, -127, 127))
    w16 = np.array([32767, -32767, 25600, -25600, 0, 255, 128, -128, 383] * 3)
    new16, w8 = await tb.drv.update(w16, g, master=True)
    want16 = np.clip(w16 - g, -32767, 32767)
    np.testing.assert_array_equal(new16, want16)
    np.testing.assert_array_equal(w8, shift_round(want16, 8, "psto"))
    await tb.check_cycles()
    tb.write_stats("corners")


def limit_operands(accumulator_bits: int, hi: int):
    """Operands whose sums land exactly on the accumulator's limits and one past them.

    Row 0 of A against column 0 of B sums to exactly ``2^(accumulator_bits-1) - 1``; against
    column 1 to one more (overflow). Row 1 is row 0 negated: ``-(2^(accumulator_bits-1) - 1)``
    and exactly ``-2^(accumulator_bits-1)`` (the minimum, no overflow).
    """
    top = (1 << (accumulator_bits - 1)) - 1
    full, rest = divmod(top, hi * hi)
    q, r = divmod(rest, hi)
    a_row = [hi] * full + [q, 1]
    b_col = [hi] * full + [hi, r]
    b_col_plus = [*b_col[:-1], r + 1]
    a = np.array([a_row, [-x for x in a_row]])
    b = np.array([b_col, b_col_plus]).T
    assert int((a[0] * b[:, 0]).sum()) == top and int((a[0] * b[:, 1]).sum()) == top + 1
    return a, b


#: the longest sum accumulator_limits will simulate
LIMITS_MAX_K = 4096


@cocotb.test()
async def accumulator_limits(dut):
    """Sums exactly at the accumulator's limits, and one past them (overflow).

    Runs on narrow-accumulator builds (the regression uses accumulator_bits=16), where the limits
    are reachable in a few products; with 32-bit accumulators they need ~133,000 products per sum.
    """
    tb = DatapathTB(dut)
    await tb.start()
    hi = (1 << (tb.params.operand_bits - 1)) - 1
    a, b = limit_operands(tb.params.accumulator_bits, hi)
    assert a.shape[1] <= LIMITS_MAX_K, "accumulator_limits needs a narrow-accumulator build"
    _, rng = await tb.gemm_and_check(a, b)
    assert rng["overflow_count"] == 1
    await tb.check_cycles()
    tb.write_stats("accumulator_limits")


@cocotb.test()
async def error_paths(dut):
    """Every command the Datapath refuses (docs/datapath.md's list: an unknown opcode, the
    divide lanes' commands without them, ``from_buffer`` without a result buffer, a load or a
    COMPUTE longer than a bank) takes no beats, sets ``error`` with its opcode, and the driver
    names it; the flag stays until a reset, after which the next command works."""
    tb = DatapathTB(dut)
    await tb.start()
    p = tb.params
    cases = [
        (Command(13, 3), 13, "unknown opcode"),
        (Command("LOAD_A", p.kmax + 1), 0, "count larger than the operand banks"),
        (Command("LOAD_B", p.kmax + 1), 1, "count larger than the operand banks"),
        (Command("LOAD_AB", p.kmax + 1), 3, "count larger than the operand banks"),
        (Command("COMPUTE", p.kmax + 1, drain=1, drain_rows=1), 2, "count larger"),
    ]
    if not p.divide:
        cases += [
            (Command("DIVIDE", 2), 9, "no divide lanes"),
            (Command("UPDATE_DIV", 2), 10, "no divide lanes"),
        ]
    if not p.result_rows:
        cases.append((Command("RESCALE", 2, from_buffer=1), 6, "no result buffer"))
    for cmd, opcode, why in cases:
        try:
            await tb.drv.execute("refused", [cmd])
        except DatapathError as exc:
            assert why in str(exc), (cmd, str(exc))
        else:
            raise AssertionError(f"{cmd} was not refused")
        assert int(dut.error.value) == 1 and int(dut.error_op.value) == opcode, cmd
        # sticky: the next (good) program reports it too
        try:
            await tb.drv.range_clear()
        except DatapathError:
            pass
        else:
            raise AssertionError(f"error was not sticky after {cmd}")
        await reset(dut)
        assert int(dut.error.value) == 0
        tb.drv.log.clear()  # a refused program's cycles are not the schedule's
        await tb.feed_and_check(tb.rng.integers(-1000, 1000, p.cols + 1))
    await tb.check_cycles()
    tb.write_stats("error_paths")


@cocotb.test()
async def flow_and_buffer(dut):
    """A slow host (din stalls on 40% of cycles, dout on 60%) loses no beat; GEMMs whose K is
    cut into slices (partial sums drained quiet into the result buffer and added back), one
    rescaled from the buffer and one that spills (rescaled through din); drains whose rows run
    past the buffer (kept rows dropped, added rows add 0); LOAD_B alone, a COMPUTE of K = 0 and a
    left shift of 0: the corners of the command set the driver's programs leave out."""
    from nitihw.sim.model.cycle_model import Tiling

    tb = DatapathTB(dut)
    await tb.start()
    p = tb.params
    r, c, kmax, bits = p.rows, p.cols, p.kmax, p.operand_bits
    # back-pressure on both data streams (cycles are then not the schedule's: not checked)
    stalls = np.random.default_rng(tb.seed + 1)
    tb.drv.stall = lambda: tuple(stalls.random(2) < (0.4, 0.6))
    a, b = random_operands(tb.rng, r + 2, kmax + 3, c + 1, bits)
    acc, rng = await tb.gemm_and_check(a, b)
    await tb.rescale_and_check(acc, rng["shift"], "psto")
    n = 8 * c  # long enough for the skid buffer to fill and the update lanes to stall
    await tb.update_and_check(tb.rng.integers(-127, 128, n), tb.rng.integers(-127, 128, n), 64)
    # random master weights, then both clamps in every lane
    w16 = np.concatenate([tb.rng.choice([32767, -32767, 32700, -32700, 0, 383], n), [32767] * c])
    g = np.concatenate([tb.rng.integers(-127, 128, n), [-1] * c])
    w16 = np.concatenate([w16, [-32767] * c])
    g = np.concatenate([g, [1] * c])
    new16, w8 = await tb.drv.update(w16, g, master=True)
    want16 = np.clip(w16 - g, -32767, 32767)
    np.testing.assert_array_equal(new16, want16)
    np.testing.assert_array_equal(w8, shift_round(want16, 8, "psto"))
    await tb.feed_and_check(acc)
    tb.drv.stall = None
    await tb.drv.sync()
    tb.drv.log.clear()
    # K in slices: partial sums in the result buffer, kept and spilled (builds with one)
    R = p.result_rows
    if R:
        m, k, n = 2 * r + 1, 3 * kmax + 2, c + 2
        tb.drv.tiling = lambda *_shape: Tiling("kmn", 2 * r, c, kmax + 1)
        a, b = random_operands(tb.rng, m, k, n, bits)
        acc, rng = await tb.gemm_and_check(a, b)
        assert tb.drv.kept is not None
        q = await tb.drv.rescale(acc, rng["shift"], "round", from_buffer=True)
        np.testing.assert_array_equal(
            q, shift_round(acc, rng["shift"], "round", None, p.rescale_limit)
        )
        spilled = exact_matmul(-a, b, "object")
        got, ovf, fields = await tb.drv.gemm_tensor(-a, b, keep=False)
        np.testing.assert_array_equal(got, tb.acc.wrap(spilled))
        np.testing.assert_array_equal(ovf, (spilled < tb.acc.min) | (spilled > tb.acc.max))
        assert fields["bitwidth"] == bitwidth(tb.acc.wrap(spilled))
    tb.drv.tiling = None
    # direct commands: one tile's rows at the result buffer's end
    hi = (1 << (bits - 1)) - 1
    ta = tb.rng.integers(-hi, hi + 1, (r, 3))
    tbm = tb.rng.integers(-hi, hi + 1, (3, c))
    beats = np.zeros((3, tb.drv.pay.din_bytes), np.uint8)
    tb.drv.pay.din_a.put(beats, ta.T)
    tb.drv.pay.din_b.put(beats, tbm)
    prod = exact_matmul(ta, tbm)
    last = max(R - 1, 0)

    def tile(rows=2, **fields):
        return [
            Command("LOAD_AB", 3, 0, 0),
            Command("COMPUTE", 3, 0, 0, drain=1, drain_rows=min(rows, r), **fields),
        ]

    if R:
        # row 0 of the tile into the buffer's last row; row 1 runs past it (not kept)
        await tb.drv.execute("keep past", tile(keep=1, quiet=1, row=last), beats, 0)
        words = await tb.drv.execute("add past", tile(add=1, row=last), beats, min(2, r))
        got = tb.drv.pay.out_acc.take(words)
        want = prod[: min(2, r)].copy()
        want[0] += prod[0]  # the last row held the tile's row 0; the row past it adds 0
        np.testing.assert_array_equal(got, tb.acc.wrap(want))
    # LOAD_B alone (B into bank 1), LOAD_A (A into bank 1), a COMPUTE of K = 0 (nothing
    # happens), then the tile from the second banks
    b_beats = np.zeros((3, tb.drv.pay.din_bytes), np.uint8)
    tb.drv.pay.din_b.put(b_beats, tbm)
    a_beats = np.zeros((3, tb.drv.pay.din_bytes), np.uint8)
    tb.drv.pay.din_a.put(a_beats, ta.T)
    prog = [
        Command("LOAD_B", 3, 0, 1),
        Command("LOAD_A", 3, 1, 0),
        Command("COMPUTE", 0, 1, 1),
        Command("COMPUTE", 3, 1, 1, drain=1, drain_rows=r),
    ]
    words = await tb.drv.execute("load b", prog, np.concatenate([b_beats, a_beats]), r)
    np.testing.assert_array_equal(tb.drv.pay.out_acc.take(words), tb.acc.wrap(prod))
    # a left shift of 0 (the lanes' left path, which changes nothing in range)
    vals = tb.rng.integers(-p.rescale_limit, p.rescale_limit + 1, c)
    beats = np.zeros((1, tb.drv.pay.din_bytes), np.uint8)
    tb.drv.pay.din_acc.put(beats, vals[None, :])
    cmd = Command("RESCALE", 1, fields=(("left", 1), ("shift", 0)))
    words = await tb.drv.execute("left 0", [cmd], beats, 1)
    np.testing.assert_array_equal(tb.drv.pay.out_q.take(words)[0], vals)
    await tb.check_cycles()
    tb.write_stats("flow_and_buffer")


# ---- NITRO-D (builds with b_bits=32 and the divide lanes) ---------------------------------

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def wide_overflow_flags(a, b, accumulator_bits: int, wide: int) -> np.ndarray:
    """The overflow flags of a wide-B build, exactly: a PE adds its products in K order and its
    flag is sticky once the running sum leaves ``wide = accumulator_bits + guard_bits`` bits, so
    it is set when some running sum left ``wide`` bits or the exact sum lies outside
    ``accumulator_bits``."""
    running = np.zeros((a.shape[0], b.shape[1]), object)
    sticky = np.zeros(running.shape, bool)
    lo, hi = -(1 << (wide - 1)), (1 << (wide - 1)) - 1
    a, b = a.astype(object), b.astype(object)
    for k in range(a.shape[1]):
        running = running + np.outer(a[:, k], b[k])
        sticky |= ((running < lo) | (running > hi)).astype(bool)
    top = 1 << (accumulator_bits - 1)
    return sticky | ((running < -top) | (running >= top)).astype(bool)


def wide_operands(rng, m, k, n):
    """int8 A over its whole range (-128 included), int32 B: random, small, extremes."""
    a = rng.integers(-128, 128, (m, k))
    b = rng.integers(INT32_MIN, INT32_MAX + 1, (k, n))
    mask = rng.random(b.shape)
    b[mask < 0.3] >>= 20  # small values: sums that stay in range
    b[(mask >= 0.3) & (mask < 0.35)] = INT32_MIN
    b[(mask >= 0.35) & (mask < 0.4)] = INT32_MAX
    b[(mask >= 0.4) & (mask < 0.45)] = 0
    a[rng.random(a.shape) < 0.1] = -128
    return a, b


def corner_int32(d: int) -> np.ndarray:
    """int32 extremes and values around multiples of ``d`` (int8 saturation edges included)."""
    vals = {INT32_MIN, INT32_MIN + 1, INT32_MAX, INT32_MAX - 1, 0, 1, -1}
    for k in (1, 2, 126, 127, 128, 12345):
        for e in (-1, 0, 1):
            vals |= {k * d + e, -(k * d + e)}
    return np.array(sorted(v for v in vals if INT32_MIN <= v <= INT32_MAX), np.int64)


@cocotb.test()
async def divide_ops(dut):
    """NITRO-D's datapath on a ``b_bits=32, divide=True`` build: int8 x int32 GEMMs whose sums
    wrap (K longer than the buffers, shapes not multiples of the array), with their overflow
    flags and range; DIVIDE (``saturate(trunc_div(acc, d))``) of their results and of int32
    corners; UPDATE_DIV (IntegerSGD) with and without decay over corners and wrapping cases."""
    tb = DatapathTB(dut)
    await tb.start()
    p = tb.params
    assert p.divide and p.b_bits == 32, "divide_ops needs a b_bits=32 divide build"
    r, c, kmax, bits = p.rows, p.cols, p.kmax, p.accumulator_bits
    wide = bits + p.guard_bits
    shapes = [(1, 1, 1), (r + 1, kmax + 5, c + 1), (2 * r + 3, 2 * kmax + 1, 2 * c + 1), (3, 7, 9)]
    for m, k, n in shapes:
        a, b = wide_operands(tb.rng, m, k, n)
        await tb.drv.range_clear()
        acc, ovf = await tb.drv.gemm(a, b)
        rng = await tb.drv.range_read()
        tb.macs += m * k * n
        exact = exact_matmul(a, b, "object")
        wrapped = tb.acc.wrap(exact)
        np.testing.assert_array_equal(acc, wrapped, err_msg=f"wide GEMM {a.shape} @ {b.shape}")
        flags = wide_overflow_flags(a, b, bits, wide)
        np.testing.assert_array_equal(ovf, flags, err_msg="wide GEMM overflow flags")
        assert (ovf >= ((exact < tb.acc.min) | (exact > tb.acc.max))).all()
        assert rng["overflow_count"] == int(flags.sum())
        assert rng["bitwidth"] == bitwidth(wrapped) and rng["max_magnitude"] == max_abs(wrapped)
        for d in (256 * k, 1, 3, int(tb.rng.integers(1, 2**31))):
            got = await tb.drv.divide(acc, d)
            np.testing.assert_array_equal(got, saturate(trunc_div(wrapped, d)), err_msg=f"/{d}")
        w = tb.rng.integers(INT32_MIN, INT32_MAX + 1, acc.shape)
        for lr, decay in ((512 * 640, 12000), (1, 0), (7, 1)):
            got = await tb.drv.update_div(w, acc, lr, decay)
            dec = trunc_div(w, decay) if decay else 0
            want = wrap(w - trunc_div(wrapped, lr) - dec, 32)
            np.testing.assert_array_equal(got, want, err_msg=f"update_div {lr} {decay}")
    # corners: every int32 extreme against NITRO-D's divisors and the largest ones
    for d in (1, 2, 3, 7, 256 * 9, 12000, 512 * 640, 2**31 - 1, 2**31, 2**32 - 1, 2**32):
        x = corner_int32(d)
        got = await tb.drv.divide(x, d)
        np.testing.assert_array_equal(got, saturate(trunc_div(x, d)), err_msg=f"divide by {d}")
    ext = np.array([INT32_MIN, INT32_MIN + 1, INT32_MAX, INT32_MAX - 1, 0, 1, -1, 3000, -3001])
    w, g = np.repeat(ext, ext.size), np.tile(ext, ext.size)
    for lr, decay in ((1, 0), (1, 1), (2, 3), (3000, 3000), (2**31 - 1, 2**31), (2**33, 5)):
        got = await tb.drv.update_div(w, g, lr, decay)
        dec = trunc_div(w, decay) if decay else 0
        want = wrap(w - trunc_div(g, lr) - dec, 32)
        np.testing.assert_array_equal(got, want, err_msg=f"update_div corners {lr} {decay}")
    await tb.check_cycles()
    assert {"DIVIDE", "UPDATE_DIV"} <= {rec.name for rec in tb.drv.log}
    tb.write_stats("divide_ops")


@cocotb.test()
async def gemm_throughput(dut):
    """Simulation speed: square GEMMs of NITIHW_GEMM (default 64) on the array, checked."""
    tb = DatapathTB(dut)
    await tb.start()
    n = int(os.environ.get("NITIHW_GEMM", "64"))
    for _ in range(2):
        a, b = random_operands(tb.rng, n, n, n, tb.params.operand_bits)
        await tb.gemm_and_check(a, b)
    await tb.check_cycles()
    tb.write_stats("gemm_throughput")


@cocotb.test()
async def crosscheck_ops(dut):
    """The fixed operation sequence of :mod:`nitihw.sim.simulate.native.crosscheck`, its record
    written to ``NITIHW_CROSSCHECK`` for the native harness to be compared with."""
    tb = DatapathTB(dut)
    await tb.start()
    record = await run_ops(tb.drv, tb.seed)
    await tb.check_cycles()
    atomic_write_json(os.environ["NITIHW_CROSSCHECK"], record)
