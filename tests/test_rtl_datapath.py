"""The integrated Datapath in Amaranth's simulator: the driver's GEMM tiling (with K longer than
the buffers), range, rescale and update against the golden model, and the cycle formula."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from nitihw.golden import bitwidth, exact_matmul, shift_round
from nitihw.golden.rounding import max_abs
from nitihw.rtl.datapath import Datapath
from nitihw.rtl.schedule import program_cycles
from nitihw.sim.model.cycle_model import gemm_cycles
from nitihw.sim.simulate.datapath_driver import DatapathDriver
from nitihw.sim.simulate.ports import AmaranthPort


def run(dut, body):
    out = {}

    async def tb(ctx):
        drv = DatapathDriver(AmaranthPort(ctx, dut), dut.params)
        await drv.reset_streams()
        await body(drv, out)
        await drv.sync()
        out["log"] = drv.log

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return out


@pytest.mark.parametrize("rows,cols,kmax", [(1, 1, 4), (3, 2, 8), (2, 4, 64)])
def test_gemm_range_rescale_update(rows, cols, kmax):
    rng = np.random.default_rng(rows * 100 + cols)
    a = rng.integers(-127, 128, (5, 19))
    b = rng.integers(-127, 128, (19, 7))
    w = rng.integers(-127, 128, 13)
    g = rng.integers(-127, 128, 13)

    async def body(drv, out):
        await drv.range_clear()
        out["acc"], out["ovf"] = await drv.gemm(a, b)
        out["range"] = await drv.range_read()
        out["q"] = await drv.rescale(out["acc"], out["range"]["shift"], "round")
        out["w"], _ = await drv.update(w, g)

    dut = Datapath(rows, cols, kmax=kmax)
    out = run(dut, body)
    exact = exact_matmul(a, b)
    np.testing.assert_array_equal(out["acc"], exact)
    assert not out["ovf"].any()
    assert out["range"]["bitwidth"] == bitwidth(exact)
    np.testing.assert_array_equal(
        out["q"], shift_round(exact, max(bitwidth(exact) - 7, 0), "round")
    )
    np.testing.assert_array_equal(out["w"], np.clip(w - g, -127, 127))
    for rec in out["log"]:
        assert rec.cycles == program_cycles(rec.commands, rows, cols), rec


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 2), (2, 5)])
def test_range_feed_left_shift_and_update_limit(rows, cols):
    """WAGE's operations: the range of a fed tensor (not the last GEMM's), a left-shift
    rescale and an update clamped to +-64; each between GEMM ranges that must be unaffected."""
    rng = np.random.default_rng(rows * 10 + cols)
    fed = [
        rng.integers(-(2**31), 2**31, 23),  # the whole 32-bit range, length not a multiple
        np.array([-(2**31), 5, -3]),  # INT_MIN
        rng.integers(-1000, 1001, (4, 3)),
        np.array([0, 0, 0, 0, 0]),
        np.array([-128, 127, 64]),
        np.array([129, -1]),
        np.zeros(0, np.int64),  # empty: no beats
    ]
    small = rng.integers(-40, 41, 29)
    small[:6] = [0, 1, -1, 127, -127, 15]
    rand = rng.integers(0, 8, small.shape)
    left_cases = [(s, mode) for s in (1, 2, 3, 7, 9) for mode in ("round", "sto")]
    w = rng.integers(-127, 128, 41)
    g = rng.integers(-127, 128, 41)
    a = rng.integers(-127, 128, (3, 5))
    b = rng.integers(-127, 128, (5, 4))

    async def body(drv, out):
        await drv.range_clear()
        out["acc"], _ = await drv.gemm(a, b)
        out["gemm_range"] = await drv.range_read()
        out["fed"] = []
        for x in fed:
            await drv.range_clear()
            await drv.range_feed(x)
            out["fed"].append(await drv.range_read())
        # a feed without a clear adds to the range so far
        await drv.range_clear()
        await drv.range_feed(fed[4])
        await drv.range_feed(fed[5])
        out["two"] = await drv.range_read()
        out["left"] = {
            (s, mode): await drv.rescale(small, -s, mode, rand) for s, mode in left_cases
        }
        out["right"] = await drv.rescale(out["acc"], 5, "round")  # left is per command
        out["w64"], out["w8_64"] = await drv.update(w, g, limit=64)
        out["w127"], _ = await drv.update(w, g)  # the default limit

    out = run(Datapath(rows, cols, kmax=8), body)
    exact = exact_matmul(a, b)
    assert out["gemm_range"]["bitwidth"] == bitwidth(exact)
    assert out["gemm_range"]["max_magnitude"] == max_abs(exact)
    for x, got in zip(fed, out["fed"], strict=True):
        assert got["bitwidth"] == bitwidth(x), x
        assert got["max_magnitude"] == max_abs(x), x
        assert got["shift"] == max(bitwidth(x) - 7, 0), x
        assert got["overflow_count"] == 0
    both = np.concatenate([fed[4], fed[5]])
    assert (out["two"]["bitwidth"], out["two"]["max_magnitude"]) == (bitwidth(both), 129)
    for (s, mode), got in out["left"].items():
        want = shift_round(small, -s, mode, rand)
        np.testing.assert_array_equal(got, want, err_msg=f"<< {s} {mode}")
    np.testing.assert_array_equal(out["right"], shift_round(exact, 5, "round"))
    np.testing.assert_array_equal(out["w64"], np.clip(w - g, -64, 64))
    np.testing.assert_array_equal(out["w8_64"], np.clip(w - g, -64, 64))
    np.testing.assert_array_equal(out["w127"], np.clip(w - g, -127, 127))
    ops = {rec.name for rec in out["log"]}
    assert {"RANGE_FEED", "RESCALE", "UPDATE"} <= ops
    feeds = [rec for rec in out["log"] if rec.name == "RANGE_FEED"]
    assert [r.commands[0].count for r in feeds[: len(fed)]] == [-(-x.size // cols) for x in fed]
    for rec in out["log"]:
        assert rec.cycles == program_cycles(rec.commands, rows, cols), rec


@pytest.mark.parametrize(
    "rows,cols,kmax,shape",
    [
        (1, 1, 4, (3, 9, 2)),  # 1x1, K over three chunks (the last one short)
        (3, 2, 8, (7, 5, 5)),  # odd array, edge tiles, one chunk: B stays across row tiles
        (2, 5, 4, (5, 13, 11)),  # chunks, several column tiles
        (4, 4, 16, (9, 16, 9)),  # K exactly kmax
        (5, 3, 2, (4, 1, 7)),  # K = 1
    ],
)
def test_overlapped_gemm_is_exact_and_on_schedule(rows, cols, kmax, shape):
    """GEMM tensors on the overlapped datapath (loads beside computes, drains beside the next
    tile): values, overflow flags and range exact; the cycles the RTL took equal the schedule's
    program_cycles and the cycle model's closed form."""
    m, k, n = shape
    rng = np.random.default_rng(rows * 31 + cols * 7 + kmax)
    a = rng.integers(-127, 128, (m, k))
    b = rng.integers(-128, 128, (k, n))

    async def body(drv, out):
        out["first"] = await drv.gemm_tensor(a, b)
        out["second"] = await drv.gemm_tensor(-a, b)  # the banks' second use

    out = run(Datapath(rows, cols, kmax=kmax), body)
    for key, sign in (("first", 1), ("second", -1)):
        acc, ovf, fields = out[key]
        exact = exact_matmul(sign * a, b)
        np.testing.assert_array_equal(acc, exact)
        assert not ovf.any()
        assert fields["bitwidth"] == bitwidth(exact)
        assert fields["max_magnitude"] == max_abs(exact)
    for rec in out["log"]:
        want = program_cycles(rec.commands, rows, cols)
        assert rec.cycles == want == gemm_cycles(m, k, n, rows, cols, kmax), rec.name


def test_back_pressure_loses_no_beat():
    """A host that is slow on din and on dout (random stalls, 40% of cycles each): every
    operation still returns the golden result (the skid buffer holds the beat dout refused)."""
    rng = np.random.default_rng(11)
    stalls = np.random.default_rng(5)
    a = rng.integers(-128, 128, (7, 10))
    b = rng.integers(-128, 128, (10, 6))
    w = rng.integers(-127, 128, 23)
    g = rng.integers(-127, 128, 23)
    fed = rng.integers(-(2**31), 2**31, 17)

    async def body(drv, out):
        drv.stall = lambda: tuple(stalls.random(2) < 0.4)
        out["gemm"] = await drv.gemm_tensor(a, b)
        out["q"] = await drv.rescale(out["gemm"][0], out["gemm"][2]["shift"], "psto")
        out["w"], _ = await drv.update(w, g, limit=64)
        out["fed"] = await drv.feed_tensor(fed)

    out = run(Datapath(3, 2, kmax=4), body)
    exact = exact_matmul(a, b)
    np.testing.assert_array_equal(out["gemm"][0], exact)
    assert out["gemm"][2]["bitwidth"] == bitwidth(exact)
    np.testing.assert_array_equal(out["q"], shift_round(exact, out["gemm"][2]["shift"], "psto"))
    np.testing.assert_array_equal(out["w"], np.clip(w - g, -64, 64))
    assert out["fed"]["max_magnitude"] == max_abs(fed)


@pytest.mark.parametrize(
    "opcode,no_buffer,message",
    [
        (13, False, "opcode 13.*unknown opcode"),
        (9, False, "DIVIDE.*no divide lanes"),
        (6, True, "RESCALE.*from_buffer.*no result buffer"),
        (0, False, "LOAD_A.*count larger than the operand banks .kmax 4."),
    ],
)
def test_unsupported_opcode_is_flagged(opcode, no_buffer, message):
    """An unknown opcode, DIVIDE without divide lanes, RESCALE from_buffer without a result
    buffer, or a load longer than a bank is dropped (it takes no beats) and raises the sticky
    error flag, which the driver turns into a DatapathError naming it."""
    from nitihw.rtl.schedule import Command
    from nitihw.sim.simulate.datapath_driver import DatapathError

    seen = {}

    async def body(drv, out):
        await drv.range_clear()  # fine
        try:
            count = 5 if opcode == 0 else 3  # LOAD_A of 5 columns into banks of 4
            await drv.execute("bad", [Command(opcode, count, from_buffer=int(opcode == 6))])
        except DatapathError as exc:
            seen["first"] = str(exc)
        try:
            await drv.range_clear()  # the flag is sticky until reset
        except DatapathError as exc:
            seen["after"] = str(exc)

    # the third case: RESCALE from_buffer on a build without a result buffer
    run(Datapath(2, 2, kmax=4, result_rows=0 if opcode == 6 else None), body)
    import re

    assert re.search(message, seen["first"]), seen
    assert "after" in seen


@pytest.mark.parametrize("result_rows", [64, 6])
def test_result_buffer_rescale_and_divide(result_rows):
    """A GEMM result that fits the result buffer stays there (keep) and is rescaled (every
    mode but sto) and divided from it, one tile row a beat, with no din beats; one that does
    not fit (6 rows < 2 column tiles x 5 rows) spills: the driver sends it back on din. Cycles
    equal the schedule either way."""
    from nitihw.golden.rounding import saturate, trunc_div

    rng = np.random.default_rng(result_rows)
    a = rng.integers(-128, 128, (5, 7))
    b = rng.integers(-(2**20), 2**20, (7, 5))  # 5 columns on 3 lanes: a padded column tile
    modes = ("round", "psto", "trunc", "rne")

    async def body(drv, out):
        acc, _, fields = await drv.gemm_tensor(a, b)
        out["kept"] = drv.kept is not None
        out["q"] = {}
        for mode in modes:
            out["q"][mode] = await drv.rescale(acc, fields["shift"], mode, from_buffer=out["kept"])
        out["left"] = await drv.rescale(acc, -3, "round", from_buffer=out["kept"])
        await drv.feed_tensor(acc[:2])  # a fed range between: the buffer keeps its rows
        out["div"] = await drv.divide(acc, 3000, from_buffer=out["kept"])
        out["acc"] = acc

    out = run(Datapath(2, 3, kmax=4, b_bits=32, divide=True, result_rows=result_rows), body)
    exact = exact_matmul(a, b)
    np.testing.assert_array_equal(out["acc"], exact)
    assert out["kept"] == (result_rows >= 10)
    shift = max(bitwidth(exact) - 7, 0)
    for mode in modes:
        np.testing.assert_array_equal(out["q"][mode], shift_round(exact, shift, mode))
    np.testing.assert_array_equal(out["left"], shift_round(exact, -3, "round"))
    np.testing.assert_array_equal(out["div"], saturate(trunc_div(exact, 3000)))
    buffered = [rec for rec in out["log"] if any(c.from_buffer for c in rec.commands)]
    assert len(buffered) == (6 if out["kept"] else 0)
    for rec in out["log"]:
        assert rec.cycles == program_cycles(rec.commands, 2, 3), rec.name


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="kmax must be an integer in 1..65536"):
        Datapath(2, 2, kmax=0)
    with pytest.raises(ValueError, match="cols must be an integer in 1..256"):
        Datapath(2, 300)


# ---- NITRO-D: int8 x int32 GEMMs that wrap, DIVIDE and UPDATE_DIV --------------------------

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
WIDE = 40  # accumulator_bits + guard_bits of the wide build: the running sums the flags follow


def predicted_overflow(a, b, accumulator_bits=32, wide=WIDE):
    """The wide build's overflow flags, exactly: the running sum (in K order, the order every
    PE adds its products) left the ``wide``-bit range at some point (the sticky flag), or the
    exact sum lies outside the ``accumulator_bits`` range."""
    prod = a.astype(object)[:, :, None] * b.astype(object)[None, :, :]  # (M, K, N), exact
    prefix = np.cumsum(prod, axis=1)
    lo, hi = -(1 << (wide - 1)), (1 << (wide - 1)) - 1
    sticky = ((prefix < lo) | (prefix > hi)).any(axis=1)
    final = prefix[:, -1, :]
    return (
        sticky | (final < -(1 << (accumulator_bits - 1))) | (final >= 1 << (accumulator_bits - 1))
    ).astype(bool)


def wide_gemm_operands(rng):
    """int8 A (with -128) x int32 B (with INT32_MIN/MAX), K = 19 (three chunks of kmax 8).

    A[0] x B[:, 0]: nineteen products of 2^38, exact sum 19 * 2^38 (0 modulo 2^32);
    A[1] x B[:, 1]: three products of +2^38 (the running sum leaves 40 bits) then three of
    -2^38 + 128: the exact sum 384 is in range, but the sticky flag reports an overflow.
    """
    a = rng.integers(-128, 128, (5, 19))
    b = rng.integers(INT32_MIN, INT32_MAX + 1, (19, 7))
    a[0] = -128
    b[:, 0] = INT32_MIN
    a[1, :6] = -128
    b[:, 1] = 0
    b[:3, 1] = INT32_MIN
    b[3:6, 1] = INT32_MAX
    a[2, :] = rng.integers(-3, 4, 19)  # small sums: exact, in range
    b[:, 2] = rng.integers(-1000, 1001, 19)
    b[4, 3], b[5, 3], a[3, 4] = INT32_MAX, INT32_MIN, -128
    return a, b


def divide_values(d: int) -> np.ndarray:
    """int32 corners around multiples of ``d``: the int8 saturation edges included."""
    vals = {INT32_MIN, INT32_MIN + 1, INT32_MAX, INT32_MAX - 1, 0, 1, -1}
    for k in (1, 2, 126, 127, 128, 1000):
        for e in (-1, 0, 1):
            vals |= {k * d + e, -(k * d + e)}
    return np.array(sorted(v for v in vals if INT32_MIN <= v <= INT32_MAX), np.int64)


# NITRO-D's divisors (scaling 2^8 * fan_in, lr_inv * amp, decay_inv) and the extremes; 2^32
# and above take the driver's magic-0 path (every int32 divides to 0)
DIVISORS = [1, 3, 4, 7, 256 * 9, 256 * 64, 512 * 640, 12000, 2**31 - 1, 2**31, 2**32 - 1, 2**32]


@pytest.mark.parametrize("rows,cols", [(2, 3), (1, 1)])
def test_nitro_d_wide_gemm_divide_and_update_div(rows, cols):
    from nitihw.golden.rounding import saturate, trunc_div, wrap

    rng = np.random.default_rng(rows * 7 + cols)
    a, b = wide_gemm_operands(rng)
    div_cases = [(divide_values(d), d) for d in DIVISORS]
    corner = np.array([INT32_MIN, INT32_MAX, 0, 1, -1, INT32_MIN + 1, INT32_MAX - 1, 5, -5])
    w = np.concatenate([np.repeat(corner, len(corner)), rng.integers(INT32_MIN, 2**31, 40)])
    g = np.concatenate([np.tile(corner, len(corner)), rng.integers(INT32_MIN, 2**31, 40)])
    upd_cases = [
        (lr, decay)
        for lr, decay in [
            (1, 0),
            (1, 1),
            (3, 3000),
            (512, 12000),
            (512 * 640, 0),
            (2**31 - 1, 2**31),
            (2**32 + 1, 7),
            (7, 2**40),
        ]
    ]

    async def body(drv, out):
        out["acc"], out["ovf"] = await drv.gemm(a, b)
        out["div"] = [await drv.divide(x, d) for x, d in div_cases]
        out["div2d"] = await drv.divide(out["acc"], 256 * 19)  # a GEMM result, 2-D
        out["upd"] = [await drv.update_div(w, g, lr, dec) for lr, dec in upd_cases]
        # the narrow commands still work on the wide build
        out["q"] = await drv.rescale(out["acc"], 30, "round")

    dut = Datapath(rows, cols, kmax=8, b_bits=32, divide=True)
    out = run(dut, body)
    exact = exact_matmul(a, b)
    np.testing.assert_array_equal(out["acc"], wrap(exact, 32))
    want_ovf = predicted_overflow(a, b)
    np.testing.assert_array_equal(out["ovf"], want_ovf)
    golden_ovf = (exact < INT32_MIN) | (exact > INT32_MAX)
    assert (out["ovf"] >= golden_ovf).all()  # never misses one...
    assert out["ovf"][1, 1] and not golden_ovf[1, 1]  # ...may report one the golden does not
    assert out["acc"][0, 0] == 0 and out["acc"][1, 1] == 384 and not out["ovf"][2, 2]
    for (x, d), got in zip(div_cases, out["div"], strict=True):
        want = saturate(trunc_div(x, d))
        np.testing.assert_array_equal(got, want, err_msg=f"divide by {d}")
        assert got.dtype == np.int8
    np.testing.assert_array_equal(out["div2d"], saturate(trunc_div(wrap(exact, 32), 256 * 19)))
    for (lr, dec), got in zip(upd_cases, out["upd"], strict=True):
        decay = trunc_div(w, dec) if dec else 0
        want = wrap(w - trunc_div(g, lr) - decay, 32)
        np.testing.assert_array_equal(got, want, err_msg=f"update_div lr {lr} decay {dec}")
    np.testing.assert_array_equal(out["q"], shift_round(wrap(exact, 32), 30, "round"))
    ops = [rec.name for rec in out["log"]]
    assert ops.count("DIVIDE") == len(div_cases) + 1
    assert ops.count("UPDATE_DIV") == len(upd_cases)
    for rec in out["log"]:
        assert rec.cycles == program_cycles(rec.commands, rows, cols), rec


def test_divide_needs_the_divide_lanes():
    import asyncio

    from nitihw.rtl.datapath import DatapathParams

    drv = DatapathDriver(None, DatapathParams(2, 2, kmax=8))  # refused before any port use
    with pytest.raises(ValueError, match="DIVIDE: this Datapath has no divide lanes"):
        asyncio.run(drv.divide(np.zeros(3, np.int64), 3))
    with pytest.raises(ValueError, match="UPDATE_DIV: this Datapath has no divide lanes"):
        asyncio.run(drv.update_div(np.zeros(3, np.int64), np.zeros(3, np.int64), 3, 0))
    wide = DatapathDriver(None, DatapathParams(2, 2, kmax=8, b_bits=32, divide=True))
    with pytest.raises(ValueError, match="divisor must be a positive integer"):
        asyncio.run(wide.divide(np.zeros(3, np.int64), 0))
    with pytest.raises(ValueError, match="update_div: g: values outside the signed 32-bit"):
        asyncio.run(wide.update_div(np.zeros(2, np.int64), np.array([0, 2**31]), 3, 0))
    with pytest.raises(ValueError, match="gemm: B: values outside the signed 8-bit"):
        asyncio.run(drv.gemm(np.ones((2, 2)), np.full((2, 2), 128)))


def test_bad_wide_parameters_are_named():
    with pytest.raises(ValueError, match="b_bits must be 2, 3, 4, 5, 6, 7, 8, 16 or 32, got 33"):
        Datapath(2, 2, b_bits=33)
    with pytest.raises(
        ValueError, match=r"accumulator_bits \+ guard_bits \(32 \+ 4\) must hold one"
    ):
        Datapath(2, 2, b_bits=32, guard_bits=4)
    with pytest.raises(ValueError, match="divide=True needs accumulator_bits <= 32, got 40"):
        Datapath(2, 2, accumulator_bits=40, divide=True)
    with pytest.raises(ValueError, match="divide must be True or False"):
        Datapath(2, 2, divide=1)
    from nitihw.rtl.datapath import DatapathParams

    p = DatapathParams(2, 2, b_bits=32, divide=True)
    assert (p.b_bits, p.divide, p.max_exact_k) == (32, True, 2)
    assert DatapathParams(2, 2).b_bits == 8
    assert DatapathParams.from_dict(p.as_dict()) == p
    old = {"rows": 2, "cols": 2, "op_bits": 6, "acc_bits": 24, "max_shift": 32, "top": "datapath"}
    assert DatapathParams.from_dict(old) == DatapathParams(
        2, 2, operand_bits=6, accumulator_bits=24
    )
    with pytest.raises(TypeError, match="takes no other arguments"):
        Datapath(p, kmax=4)


@pytest.mark.parametrize(
    "rows,cols,kmax,shape,tiling",
    [
        (2, 3, 4, (5, 13, 7), ("kmn", 4, 3, 5)),  # K in slices of 5 (chunks of 3 and 2)
        (3, 2, 8, (7, 20, 5), ("mkn", 3, 2, 8)),  # k between the result's loops
        (2, 2, 4, (4, 9, 4), ("nmk", 2, 4, 2)),  # slices of 2, a short last one
    ],
)
def test_partial_sums_in_the_result_buffer(rows, cols, kmax, shape, tiling):
    """A tiling that cuts K into slices: every slice but the last drains quiet into the result
    buffer, every slice but the first adds what the buffer holds. The results, their overflow
    flags and the range are a whole GEMM's, exactly, with the result kept (the whole result's
    rows, read back by a rescale from the buffer) and without (the partial sums in the buffer
    tile's rows); the cycles are the schedule's and the closed form's. 16-bit accumulators
    with sums that leave the range part-way: a flag is set exactly when the whole sum is out
    of range."""
    from nitihw.sim.model.cycle_model import Tiling

    m, k, n = shape
    t = Tiling(*tiling)
    rng = np.random.default_rng(m * k * n)
    a = rng.integers(-127, 128, (m, k))
    b = rng.integers(-127, 128, (k, n))
    # row 0: sums that overflow 16 bits in the first slices, then come back in range
    a[0, : k // 2], a[0, k // 2 :] = 127, -127
    b[: k // 2, 0], b[k // 2 :, 0] = 127, 127
    a[1, :] = 127  # row 1: an exact sum far out of range
    b[:, 1] = 127

    async def body(drv, out):
        drv.tiling = lambda *_shape: t
        out["kept"] = await drv.gemm_tensor(a, b)
        out["is_kept"] = drv.kept is not None
        out["q"] = await drv.rescale(out["kept"][0], 9, "round", from_buffer=True)
        out["spilled"] = await drv.gemm_tensor(-a, b, keep=False)

    dut = Datapath(rows, cols, kmax=kmax, accumulator_bits=16)
    out = run(dut, body)
    lim = 1 << 15
    for key, sign in (("kept", 1), ("spilled", -1)):
        acc, ovf, fields = out[key]
        exact = exact_matmul(sign * a, b)
        wrapped = (exact + lim) % (2 * lim) - lim
        np.testing.assert_array_equal(acc, wrapped)
        np.testing.assert_array_equal(ovf, (exact < -lim) | (exact >= lim))
        assert ovf[1, 1] and not ovf[0, 0]  # the partial sums of [0, 0] left the range
        assert fields["overflow_count"] == int(ovf.sum())
        assert fields["max_magnitude"] == max_abs(wrapped)
    assert out["is_kept"]
    np.testing.assert_array_equal(out["q"], shift_round(out["kept"][0], 9, "round"))
    quiet = [c for rec in out["log"] for c in rec.commands if c.quiet]
    assert quiet and all(c.keep for c in quiet)
    for rec in out["log"]:
        assert rec.cycles == program_cycles(rec.commands, rows, cols), rec.name
        if rec.name == "gemm":
            assert rec.cycles == gemm_cycles(m, k, n, rows, cols, kmax, t)


def test_add_past_the_result_buffer_adds_nothing():
    """A drain whose rows run past the result buffer: keep drops those rows, add adds 0 to
    them (the rows that are in the buffer add what they hold); a quiet drain sends nothing."""
    from nitihw.rtl.schedule import Command

    rng = np.random.default_rng(7)
    a = rng.integers(-100, 100, (2, 3))
    b = rng.integers(-100, 100, (3, 2))

    async def body(drv, out):
        beats = np.zeros((3, drv.pay.din_bytes), np.uint8)
        drv.pay.din_a.put(beats, a.T)  # a beat: one column of A and one row of B
        drv.pay.din_b.put(beats, b)

        def tile(**fields):
            return [
                Command("LOAD_AB", 3, 0, 0),
                Command("COMPUTE", 3, 0, 0, drain=1, drain_rows=2, **fields),
            ]

        # the tile's rows into buffer rows 0 and 1, then 2 and 3 (quiet: nothing on dout)
        await drv.execute("quiet", tile(keep=1, quiet=1, row=0), beats, 0)
        out["quiet"] = await drv.execute("quiet", tile(keep=1, quiet=1, row=2), beats, 0)
        # rows 3 and 4 added: row 3 holds the tile's row 1, row 4 is past the 4-row buffer
        # (not row 0, which its address would wrap to)
        words = await drv.execute("add", tile(add=1, row=3), beats, 2)
        out["acc"] = drv.pay.out_acc.take(words)

    out = run(Datapath(2, 2, kmax=4, result_rows=4), body)
    p = exact_matmul(a, b)
    assert len(out["quiet"]) == 0
    np.testing.assert_array_equal(out["acc"], np.stack([p[0] + p[1], p[1]]))
