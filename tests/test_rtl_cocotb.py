"""cocotb testbenches of the RTL on Verilator and Icarus, run from pytest.

The Datapath testbench (nitihw/sim/simulate/testbench/datapath_tb.py) checks random GEMMs
whose shapes are not multiples of the array, every rounding mode, the corners and (on a
16-bit-accumulator build) the accumulator limits and overflow, and (on a NITRO-D build: 32-bit
B operands and the divide lanes) wrapping int8 x int32 GEMMs, DIVIDE and UPDATE_DIV, all
against the golden model, and checks every command's measured cycles against the schedule
formula. The rescale
testbench checks about a million random 32-bit accumulators across every mode and shift.
"""

from pathlib import Path

import pytest

from nitihw.sim.simulate.verify import (
    config_tag,
    regression_cases,
    regression_configs,
    run_datapath_tests,
    run_rescale_sweep,
)
from nitihw.sim.tools import simulator_available

BUILD = Path(__file__).resolve().parent.parent / "build" / "pytest-rtl"
SIMS = [
    pytest.param(
        s, marks=pytest.mark.skipif(not simulator_available(s), reason=f"{s} not installed")
    )
    for s in ("verilator", "icarus")
]


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize(
    "shape,accumulator_bits", [((2, 2), 32), ((4, 4), 32), ((8, 8), 32), ((4, 4), 16)]
)
def test_datapath_against_golden(sim, shape, accumulator_bits):
    params = regression_configs([shape], (accumulator_bits,), kmax=32)[0]
    cases = regression_cases(params)
    tag = f"{shape[0]}x{shape[1]}_acc{accumulator_bits}"
    result = run_datapath_tests(
        sim, params, seed=sum(shape), build_dir=BUILD / tag, testcases=cases
    )
    assert result.tests == len(cases) and result.failed == 0, (
        f"{result.failed} of {result.tests} cocotb tests failed; see {result.build_dir}"
    )
    assert set(result.stats) == set(cases)  # every test ran to its end and measured cycles
    assert all(s["cycles"] > 0 for s in result.stats.values())


@pytest.mark.parametrize("sim", SIMS)
def test_nitro_d_build_against_golden(sim):
    """A 4x4 build with 32-bit B operands and the divide lanes: the regression plus
    ``divide_ops`` (wrapping int8 x int32 GEMMs, DIVIDE, UPDATE_DIV)."""
    params = regression_configs([(4, 4)], (32,), kmax=32, divide=True)[0]
    cases = regression_cases(params)
    assert "divide_ops" in cases
    result = run_datapath_tests(
        sim, params, seed=11, build_dir=BUILD / config_tag(params), testcases=cases
    )
    assert result.tests == len(cases) and result.failed == 0, (
        f"{result.failed} of {result.tests} cocotb tests failed; see {result.build_dir}"
    )
    assert set(result.stats) == set(cases)
    assert all(s["cycles"] > 0 for s in result.stats.values())


@pytest.mark.parametrize("sim", SIMS)
def test_rescale_lanes_on_a_million_32_bit_values(sim):
    tests, failed, stats = run_rescale_sweep(sim, BUILD / "rescale64", lanes=64, per_case=5120)
    assert (tests, failed) == (1, 0)
    assert stats["values"] >= 1_000_000


@pytest.mark.slow
@pytest.mark.parametrize("sim", SIMS)
def test_rescale_lanes_on_many_more_values(sim):
    tests, failed, stats = run_rescale_sweep(
        sim, BUILD / "rescale64", lanes=64, per_case=40960, seed=7
    )
    assert (tests, failed) == (1, 0)
    assert stats["values"] >= 8_000_000
