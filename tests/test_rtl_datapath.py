"""The integrated Datapath in Amaranth's simulator: the driver's GEMM tiling (with K longer than
the buffers), range, rescale and update against the golden model, and the cycle formula."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from nitihw.golden import bitwidth, exact_matmul, shift_round
from nitihw.golden.rounding import max_abs
from nitihw.rtl.datapath import Datapath
from nitihw.rtl.schedule import command_cycles
from nitihw.sim.datapath_driver import AmaranthPort, DatapathDriver


def run(dut, body):
    out = {}

    async def tb(ctx):
        drv = DatapathDriver(AmaranthPort(ctx, dut), dut.parameters())
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
        assert rec.cycles == command_cycles(rec.op, rec.count, rows, cols), rec


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
    ops = {rec.op for rec in out["log"]}
    assert {"RANGE_FEED", "RESCALE", "UPDATE"} <= ops
    feeds = [rec for rec in out["log"] if rec.op == "RANGE_FEED"]
    assert [r.count for r in feeds[: len(fed)]] == [-(-x.size // cols) for x in fed]
    for rec in out["log"]:
        assert rec.cycles == command_cycles(rec.op, rec.count, rows, cols), rec


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="kmax must be an integer in 1..65536"):
        Datapath(2, 2, kmax=0)
    with pytest.raises(ValueError, match="cols must be an integer in 1..256"):
        Datapath(2, 300)
