"""The integrated Datapath in Amaranth's simulator: the driver's GEMM tiling (with K longer than
the buffers), range, rescale and update against the golden model, and the cycle formula."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from nitihw.golden import bitwidth, exact_matmul, shift_round
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


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="kmax must be an integer in 1..65536"):
        Datapath(2, 2, kmax=0)
    with pytest.raises(ValueError, match="cols must be an integer in 1..256"):
        Datapath(2, 300)
