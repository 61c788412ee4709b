"""Every RTL block against the golden model, with Amaranth's simulator (no external tools)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from nitihw.golden import Accumulator, bitwidth, exact_matmul, shift_round
from nitihw.golden.rounding import max_abs
from nitihw.rtl.mac_array import MacArray
from nitihw.rtl.range_unit import RangeUnit
from nitihw.rtl.rescale import MODE_BY_NAME, RescaleLanes, rescale_limit
from nitihw.rtl.schedule import range_latency
from nitihw.rtl.update import UpdateLanes


def simulate(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


async def stream_lanes(ctx, dut, beats, set_beat, read_beat, stall_every=0):
    """Feed beats through a lanes component (valid/ready), optionally stalling the output."""
    out, k, cycle = [], 0, 0
    while len(out) < len(beats):
        if k < len(beats):
            set_beat(ctx, beats[k])
            ctx.set(dut.i.valid, 1)
        else:
            ctx.set(dut.i.valid, 0)
        ready_out = not (stall_every and cycle % stall_every == 0)
        ctx.set(dut.o.ready, ready_out)
        took = k < len(beats) and ctx.get(dut.i.ready)
        if ctx.get(dut.o.valid) and ready_out:
            out.append(read_beat(ctx))
        await ctx.tick()
        cycle += 1
        k += bool(took)
    return out


# ---- rescale lanes ---------------------------------------------------------------------


def rescale_jobs(accumulator_bits, lanes, values_for, shifts, limit=127):
    jobs = []
    for mode in ("round", "psto", "trunc", "rne", "sto"):
        for s in shifts:
            xs = values_for(s)
            rng = np.random.default_rng(s + 100 * len(mode))
            rand = rng.integers(0, 1 << s, xs.shape) if mode == "sto" else np.zeros_like(xs)
            want = shift_round(xs, s, mode, rand if mode == "sto" else None, limit)
            for k in range(0, len(xs), lanes):
                pad = lanes - len(xs[k : k + lanes])
                jobs.append(
                    (
                        mode,
                        s,
                        np.pad(xs[k : k + lanes], (0, pad)),
                        np.pad(rand[k : k + lanes], (0, pad)),
                        np.pad(want[k : k + lanes], (0, pad)),
                    )
                )
    return jobs


def run_rescale(accumulator_bits, lanes, jobs, stall_every=0, limit=127):
    dut = RescaleLanes(lanes, accumulator_bits, limit)
    got = []

    def set_beat(ctx, job):
        mode, s, x, r, _ = job  # s < 0: a left shift by -s
        ctx.set(dut.shift, abs(s))
        ctx.set(dut.left, int(s < 0))
        ctx.set(dut.mode, MODE_BY_NAME[mode])
        ctx.set(dut.i.payload.acc, [int(v) for v in x])
        ctx.set(dut.i.payload.rand, [int(v) for v in r])

    async def tb(ctx):
        got.extend(
            await stream_lanes(
                ctx,
                dut,
                jobs,
                set_beat,
                lambda c: [c.get(dut.o.payload[k]) for k in range(lanes)],
                stall_every,
            )
        )

    simulate(dut, tb)
    for (mode, s, x, _, want), g in zip(jobs, got, strict=True):
        np.testing.assert_array_equal(g, want, err_msg=f"mode {mode} shift {s} inputs {x}")


@pytest.mark.parametrize("accumulator_bits", [6, 9])
def test_rescale_lanes_exhaustive_small_accumulators(accumulator_bits):
    xs = np.arange(-(1 << (accumulator_bits - 1)), 1 << (accumulator_bits - 1))
    shifts = range(0, accumulator_bits + 9)  # every shift the lanes accept
    run_rescale(accumulator_bits, 16, rescale_jobs(accumulator_bits, 16, lambda s: xs, shifts))


@pytest.mark.parametrize("accumulator_bits", [6, 9])
def test_rescale_lanes_left_shifts_exhaustive(accumulator_bits):
    """Every value, every left shift the lanes accept, every mode (ignored: the shift is
    exact), random ``rand``, interleaved with right shifts beat by beat."""
    lanes = 16
    xs = np.arange(-(1 << (accumulator_bits - 1)), 1 << (accumulator_bits - 1))
    ms = accumulator_bits + 8
    rng = np.random.default_rng(accumulator_bits)
    jobs = []
    for mode in ("round", "psto", "trunc", "rne", "sto"):
        for s in range(1, ms + 1):
            rand = rng.integers(0, 1 << ms, xs.shape)
            want = shift_round(xs, -s, mode, rand if mode == "sto" else None)
            right = shift_round(xs, s, "trunc")  # a right shift after it: left is per beat
            for k in range(0, len(xs), lanes):
                x = xs[k : k + lanes]
                jobs.append((mode, -s, x, rand[k : k + lanes], want[k : k + lanes]))
                jobs.append(("trunc", s, x, rand[k : k + lanes], right[k : k + lanes]))
    lefts = np.concatenate([w for _, s, _, _, w in jobs if s < 0])
    assert {-127, 127} <= set(lefts.tolist())  # saturation is reached both ways,
    assert ((abs(lefts) > 1) & (abs(lefts) < 127)).any()  # and exact shifts too
    run_rescale(accumulator_bits, lanes, jobs, stall_every=7)


@pytest.mark.parametrize("operand_bits", [2, 6])
def test_rescale_lanes_for_narrow_operands_exhaustive(operand_bits):
    """Lanes built for ``operand_bits``-wide operands saturate to ``2^(operand_bits-1) - 1``: every
    9-bit value, every right and left shift, every mode, against ``shift_round(limit=...)``."""
    accumulator_bits, lanes = 9, 16
    limit = rescale_limit(operand_bits)
    assert limit == (1 << (operand_bits - 1)) - 1
    xs = np.arange(-(1 << (accumulator_bits - 1)), 1 << (accumulator_bits - 1))
    jobs = rescale_jobs(
        accumulator_bits, lanes, lambda s: xs, range(0, accumulator_bits + 9), limit
    )
    rng = np.random.default_rng(operand_bits)
    for s in range(1, 9):
        rand = rng.integers(0, 1 << 17, xs.shape)
        want = shift_round(xs, -s, "psto", None, limit)
        assert set(want.tolist()) >= {-limit, limit}
        for k in range(0, len(xs), lanes):
            jobs.append(("psto", -s, xs[k : k + lanes], rand[k : k + lanes], want[k : k + lanes]))
    run_rescale(accumulator_bits, lanes, jobs, stall_every=5, limit=limit)


def test_rescale_lanes_32_bit_corners_with_backpressure():
    corners = np.array(
        [
            0,
            1,
            -1,
            127,
            -127,
            128,
            -128,
            2**31 - 1,
            -(2**31),
            -(2**31) + 1,
            2**30,
            -(2**30),
            1004,
            -1012,
            7,
            -7,
            6,
            2**24 + 2**23,
            -(2**24 + 2**23),
        ]
    )

    def values(s):
        half = [(1 << s) * q + (1 << (s - 1)) for q in (0, 1, 5)] if s else []
        near = [h + d for h in half for d in (-1, 0, 1)]
        return (
            np.concatenate([corners, near, [-v for v in near]])
            .astype(np.int64)
            .clip(-(2**31), 2**31 - 1)
        )

    run_rescale(32, 8, rescale_jobs(32, 8, values, range(0, 41)), stall_every=3)


def test_rescale_lanes_reject_bad_parameters():
    with pytest.raises(ValueError, match="lanes must be an integer in 1..1024"):
        RescaleLanes(0)
    with pytest.raises(ValueError, match="accumulator_bits must be an integer in 2..48"):
        RescaleLanes(4, 64)
    with pytest.raises(ValueError, match="limit must be an integer in 1..127"):
        RescaleLanes(4, 32, 128)


# ---- update lanes ----------------------------------------------------------------------


def run_update(master, w, g, lanes=16, stall_every=0, limit=127):
    """``limit``: the int8 clamp, one for every beat or a list with one per beat."""
    dut = UpdateLanes(lanes, master=master)
    nb = -(-len(w) // lanes)
    limits = [limit] * nb if isinstance(limit, int) else list(limit)
    beats = [
        (w[k : k + lanes], g[k : k + lanes], limits[k // lanes]) for k in range(0, len(w), lanes)
    ]
    got = []

    def set_beat(ctx, beat):
        ctx.set(dut.i.payload.w, [int(v) for v in beat[0]])
        ctx.set(dut.i.payload.g, [int(v) for v in beat[1]])
        if not master:
            ctx.set(dut.limit, beat[2])

    def read(ctx):
        return (
            [ctx.get(dut.o.payload.w[k]) for k in range(lanes)],
            [ctx.get(dut.o.payload.w8[k]) for k in range(lanes)],
        )

    async def tb(ctx):
        got.extend(await stream_lanes(ctx, dut, beats, set_beat, read, stall_every))

    simulate(dut, tb)
    return (np.concatenate([x[0] for x in got]), np.concatenate([x[1] for x in got]))


@pytest.mark.parametrize("limit", [127, 64, 37])
def test_update_lanes_int8_exhaustive(limit):
    """Every int8 (w, g) pair, clamped to +-limit (127: NITI; 64: WAGE; an odd one)."""
    w, g = np.meshgrid(np.arange(-127, 128), np.arange(-127, 128))
    w, g = w.reshape(-1), g.reshape(-1)
    w = np.pad(w, (0, -len(w) % 16))
    g = np.pad(g, (0, -len(g) % 16))
    new, w8 = run_update(False, w, g, stall_every=5, limit=limit)
    want = np.clip(w - g, -limit, limit)
    np.testing.assert_array_equal(new, want)
    np.testing.assert_array_equal(w8, want)


def test_update_lanes_int8_limit_changes_beat_by_beat():
    rng = np.random.default_rng(3)
    lanes = 16
    w = rng.integers(-127, 128, 100 * lanes)
    g = rng.integers(-127, 128, 100 * lanes)
    limits = rng.integers(1, 128, 100)
    new, _ = run_update(False, w, g, lanes, stall_every=4, limit=[int(x) for x in limits])
    want = np.clip(w - g, -np.repeat(limits, lanes), np.repeat(limits, lanes))
    np.testing.assert_array_equal(new, want)


def test_update_lanes_master_weights():
    rng = np.random.default_rng(0)
    w = np.concatenate([rng.integers(-32767, 32768, 4000), [32767, -32767, 32700, -32700, 0, 255]])
    g = np.concatenate([rng.integers(-127, 128, 4000), [-1, 1, -127, 127, 0, -1]])
    w = np.pad(w, (0, -len(w) % 16))
    g = np.pad(g, (0, -len(g) % 16))
    new, w8 = run_update(True, w, g)
    want = np.clip(w - g, -32767, 32767)
    np.testing.assert_array_equal(new, want)
    np.testing.assert_array_equal(w8, shift_round(want, 8, "psto"))


# ---- range unit ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accumulator_bits,lanes,target",
    [(8, 4, 7), (32, 4, 7), (32, 1, 7), (32, 3, 7), (16, 5, 7), (32, 16, 7), (16, 4, 5)],
)
def test_range_unit_over_tiles(accumulator_bits, lanes, target):
    """Tensors of several tiles, each after a clear: bit-width, shift (to ``target`` magnitude
    bits: 5 for 6-bit operands), overflow count and max |x| once the pipeline is empty, which is
    exactly range_latency(lanes) cycles after the last observation (busy high until then)."""
    rng = np.random.default_rng(accumulator_bits + lanes)
    lo, hi = -(1 << (accumulator_bits - 1)), (1 << (accumulator_bits - 1)) - 1

    def row(*vals):
        out = np.zeros((1, lanes), np.int64)
        for k, v in enumerate(vals):
            out[0, k % lanes] = v
        return out

    tensors = [
        np.zeros((3, lanes), np.int64),
        row(1),
        row(lo),
        np.concatenate([row(0, 0, hi), row(0, -1)]),
        row(128 % (hi + 1), -128 % (lo - 1) if accumulator_bits > 8 else -128),
        rng.integers(lo, hi + 1, (9, lanes)),
        rng.integers(-300, 301, (9, lanes)).clip(lo, hi),
    ]
    flags = [rng.integers(0, 2, t.shape) for t in tensors]
    dut = RangeUnit(lanes, accumulator_bits, target)
    seen = []

    async def tb(ctx):
        for t, f in zip(tensors, flags, strict=True):
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            for r_, fr in zip(t, f, strict=True):
                ctx.set(dut.valid, 1)
                for k in range(lanes):
                    ctx.set(dut.value[k], int(r_[k]))
                    ctx.set(dut.overflow[k], int(fr[k]))
                await ctx.tick()
            ctx.set(dut.valid, 0)
            waited = 1  # cycles after the last observation's cycle
            while ctx.get(dut.busy):
                await ctx.tick()
                waited += 1
            seen.append(
                (
                    ctx.get(dut.bitwidth),
                    ctx.get(dut.shift),
                    ctx.get(dut.overflow_count),
                    ctx.get(dut.max_magnitude),
                    waited,
                )
            )

    simulate(dut, tb)
    for t, f, (bw, sh, count, mx, waited) in zip(tensors, flags, seen, strict=True):
        assert bw == bitwidth(t), t
        assert mx == max_abs(t), t
        assert sh == max(bitwidth(t) - target, 0)
        assert count == int(f.sum())
        assert waited == range_latency(lanes)


def test_range_unit_bitwidth_is_cleared_with_the_tensor():
    """The cycle after a clear the unit is idle and its bit-width, shift and counts are those
    of an empty tensor, not the last one's (found by the range unit's proof, nitihw prove: the
    registered bit length showed the last tensor's for that cycle)."""
    dut = RangeUnit(2, 16)
    seen = []

    async def tb(ctx):
        ctx.set(dut.valid, 1)
        ctx.set(dut.value[0], -3000)
        await ctx.tick()
        ctx.set(dut.valid, 0)
        while ctx.get(dut.busy):
            await ctx.tick()
        seen.append((ctx.get(dut.bitwidth), ctx.get(dut.shift)))
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        seen.append((ctx.get(dut.busy), ctx.get(dut.bitwidth), ctx.get(dut.shift)))

    simulate(dut, tb)
    assert seen == [(12, 5), (0, 0, 0)]


# ---- MAC array ---------------------------------------------------------------------------


def run_array(rows, cols, tiles, accumulator_bits=32, guard_bits=8, width=8):
    """tiles: list of (A (rows,K), B (K,cols), accumulate). Feeds them skewed, back to back,
    drains after each and returns [(acc, overflow)]."""
    dut = MacArray(
        rows,
        cols,
        a_width=width,
        b_width=width,
        accumulator_bits=accumulator_bits,
        guard_bits=guard_bits,
    )
    results = []

    async def tb(ctx):
        for a, b, accumulate in tiles:
            k = a.shape[1]
            ctx.set(dut.en, 1)
            for t in range(k + rows + cols - 1):
                for i in range(rows):
                    kk = t - i
                    ok = 0 <= kk < k
                    ctx.set(dut.a[i], int(a[i, kk]) if ok else 0)
                    ctx.set(dut.a_valid[i], int(ok))
                    ctx.set(dut.a_first[i], int(ok and kk == 0 and not accumulate))
                for j in range(cols):
                    kk = t - j
                    ctx.set(dut.b[j], int(b[kk, j]) if 0 <= kk < k else 0)
                await ctx.tick()
            ctx.set(dut.en, 0)
            ctx.set(dut.capture, 1)
            await ctx.tick()
            ctx.set(dut.capture, 0)
            acc = np.zeros((rows, cols), np.int64)
            ovf = np.zeros((rows, cols), bool)
            for r in range(rows):
                acc[r] = [ctx.get(dut.out[j]) for j in range(cols)]
                ovf[r] = [ctx.get(dut.out_overflow[j]) for j in range(cols)]
                ctx.set(dut.shift, 1)
                await ctx.tick()
            ctx.set(dut.shift, 0)
            results.append((acc, ovf))

    simulate(dut, tb)
    return results


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 3), (4, 4)])
def test_mac_array_tiles_and_accumulate(rows, cols):
    rng = np.random.default_rng(rows * 10 + cols)
    tiles = []
    for k, acc in [(1, False), (7, False), (5, True), (3, False)]:
        tiles.append((rng.integers(-127, 128, (rows, k)), rng.integers(-127, 128, (k, cols)), acc))
    tiles.append((np.full((rows, 4), -127), np.full((4, cols), -127), False))
    results = run_array(rows, cols, tiles)
    running = None
    for (a, b, accumulate), (acc, ovf) in zip(tiles, results, strict=True):
        exact = exact_matmul(a, b)
        running = exact if not accumulate else running + exact
        np.testing.assert_array_equal(acc, running)
        assert not ovf.any()


def test_mac_array_wraps_and_flags_overflow_exactly():
    # 16-bit accumulators: sums of 127*127 products cross 2^15 after 3 terms
    rows = cols = 2
    acc16 = Accumulator(16)
    a = np.array([[127, 127, 127, -127, -127], [127, 127, 0, 0, 0]])
    b = np.array([[127, -127], [127, -127], [127, -127], [127, 127], [127, 127]])
    # row 0 goes out of range and comes back: exact sum 16129 is in range, no overflow
    ((acc, ovf),) = run_array(rows, cols, [(a, b, False)], accumulator_bits=16, guard_bits=4)
    exact = exact_matmul(a, b)
    np.testing.assert_array_equal(acc, acc16.wrap(exact))
    np.testing.assert_array_equal(ovf, (exact < acc16.min) | (exact > acc16.max))
    assert ovf.any() and not ovf.all()
    # a sum that outgrows the guard bits stays flagged even if it comes back
    k = 40
    a2 = np.array([[127] * k + [-127] * k] * 2)
    b2 = np.array([[127, 1]] * (2 * k))
    ((acc2, ovf2),) = run_array(rows, cols, [(a2, b2, False)], accumulator_bits=16, guard_bits=1)
    exact2 = exact_matmul(a2, b2)
    np.testing.assert_array_equal(acc2, acc16.wrap(exact2))
    assert ovf2[:, 0].all() and not ovf2[:, 1].any()


def test_mac_array_16_bit_operands():
    rng = np.random.default_rng(5)
    a = rng.integers(-32767, 32768, (2, 6))
    b = rng.integers(-32767, 32768, (6, 3))
    ((acc, ovf),) = run_array(2, 3, [(a, b, False)], accumulator_bits=48, width=16)
    np.testing.assert_array_equal(acc, exact_matmul(a, b))
    assert not ovf.any()


def test_mac_array_rejects_bad_parameters():
    with pytest.raises(ValueError, match="rows must be an integer in 1..256"):
        MacArray(0, 4)
    with pytest.raises(ValueError, match="must hold one product"):
        MacArray(2, 2, a_width=16, b_width=16, accumulator_bits=24)
