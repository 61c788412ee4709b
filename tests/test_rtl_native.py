"""The native harness (nitihw.sim.simulate.native): the Verilated Datapath driven a program at a
time from C++, held to the golden model, to the schedule, and to the cocotb testbench (the same
operations through both: identical outputs and cycle counts); the split over several
instances held to one Datapath; training on it bit-exact with golden."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nitihw.golden import exact_matmul, shift_round
from nitihw.rtl.datapath import DatapathParams
from nitihw.rtl.schedule import program_cycles
from nitihw.sim.simulate.datapath_driver import DatapathDriver, DatapathError, Payloads
from nitihw.sim.simulate.native import (
    NativeBuildError,
    NativeDatapath,
    NativeOptions,
    NativeStall,
    build_native,
    call_sync,
)
from nitihw.sim.simulate.native.build import wrapper_verilog
from nitihw.sim.simulate.native.crosscheck import run_ops
from nitihw.sim.simulate.native.split import SplitDriver, combine_ranges
from nitihw.sim.simulate.verify import run_datapath_tests
from nitihw.sim.tools import simulator_available

BUILD = Path(__file__).resolve().parent.parent / "build" / "pytest-native"
HAVE_CXX = shutil.which("c++") is not None or shutil.which("g++") is not None
pytestmark = pytest.mark.skipif(
    not (simulator_available("verilator") and HAVE_CXX and shutil.which("make")),
    reason="the native harness needs Verilator, a C++ compiler and make",
)

P4 = DatapathParams(4, 4, kmax=16)
P_DIV = DatapathParams(4, 4, kmax=16, b_bits=32, divide=True)


@pytest.fixture(scope="module")
def lib4():
    return build_native(P4, BUILD / "4x4")


@pytest.fixture(scope="module")
def lib_div():
    return build_native(P_DIV, BUILD / "4x4_div")


def native_driver(lib, params, **kw):
    return DatapathDriver(NativeDatapath(lib, params, **kw), params)


def test_operations_against_golden_and_schedule(lib4):
    """checked=True: every cycle is also settled on its own inputs and the outputs compared,
    which tests the one-eval-a-cycle harness's premise (registered handshakes and dout)."""
    drv = native_driver(lib4, P4, checked=True)
    rng = np.random.default_rng(1)
    a, b = rng.integers(-128, 128, (9, 37)), rng.integers(-128, 128, (37, 6))
    acc, ovf, fields = call_sync(drv.gemm_tensor, a, b)
    np.testing.assert_array_equal(acc, exact_matmul(a, b))
    assert not ovf.any()
    assert fields["max_magnitude"] == int(np.abs(acc).max())
    assert drv.kept is not None
    q = call_sync(drv.rescale, acc, 7, "rne", None, True)
    np.testing.assert_array_equal(q, shift_round(acc, 7, "rne"))
    rand = rng.integers(0, 1 << 30, acc.shape)
    q = call_sync(drv.rescale, acc, 7, "sto", rand)
    np.testing.assert_array_equal(q, shift_round(acc, 7, "sto", rand))
    for rec in drv.log:
        assert rec.cycles == program_cycles(rec.commands, 4, 4), rec.name
    assert drv.cycle > sum(rec.cycles for rec in drv.log)


def test_gemm_plans_are_kept_per_shape(lib4):
    """A GEMM shape's plan (commands, their words, beat indices, drain rows) is made once and
    reused: the same shape with other values computes its own product; an empty GEMM runs
    its range commands alone."""
    drv = native_driver(lib4, P4)
    rng = np.random.default_rng(3)
    for _ in range(2):
        a, b = rng.integers(-128, 128, (9, 37)), rng.integers(-128, 128, (37, 6))
        acc, ovf, _ = call_sync(drv.gemm_tensor, a, b)
        np.testing.assert_array_equal(acc, exact_matmul(a, b))
    assert len(drv._plans) == 1
    acc, ovf, fields = call_sync(drv.gemm_tensor, np.zeros((0, 5), int), np.ones((5, 3), int))
    assert acc.shape == ovf.shape == (0, 3) and fields["max_magnitude"] == 0
    assert len(drv._plans) == 2


@pytest.mark.parametrize("sim", ["verilator", "icarus"])
@pytest.mark.parametrize(
    "params",
    [
        pytest.param(P4, id="4x4"),
        # 80 s; the divide lanes' native runs are also checked against a second netlist
        # (test_optimized_netlist_computes_the_same) and by NITRO-D training on the RTL
        pytest.param(P_DIV, id="4x4_div", marks=pytest.mark.slow),
    ],
)
def test_native_matches_cocotb(sim, params, request):
    """The same operations through the cocotb testbench and through the native harness:
    identical outputs, ranges, program cycles and program start cycles."""
    if not simulator_available(sim):
        pytest.skip(f"{sim} not installed")
    tag = "4x4_div" if params.divide else "4x4"
    lib = request.getfixturevalue("lib_div" if params.divide else "lib4")
    record = BUILD / f"crosscheck_{tag}_{sim}.json"
    record.unlink(missing_ok=True)
    result = run_datapath_tests(
        sim,
        params,
        seed=5,
        build_dir=BUILD / f"cocotb_{tag}",
        testcases=("crosscheck_ops",),
        env={"NITIHW_CROSSCHECK": str(record)},
    )
    assert result.tests == 1 and result.failed == 0, f"see {result.build_dir}"
    cocotb_record = json.loads(record.read_text())
    native = json.loads(json.dumps(call_sync(run_ops, native_driver(lib, params), 5)))
    assert native["outputs"] == cocotb_record["outputs"]
    assert native["programs"] == cocotb_record["programs"]
    assert len(native["programs"]) > 10


@pytest.mark.slow  # a whole second build (60 s): the GCC fallback where clang is missing
def test_either_compiler_computes_the_same(lib4):
    """The default build (clang++ where installed) and a GCC build give the same outputs,
    ranges and program cycles, program for program (the fallback where clang is missing)."""
    gcc = build_native(P4, BUILD / "4x4", NativeOptions(compiler="gcc"))
    assert gcc.parent.name == "native-gcc" and lib4.parent.name == "native"
    assert "g++" in json.loads((gcc.parent / "build.json").read_text())["cxx"]
    want = "clang++" if shutil.which("clang++") else "g++"
    assert json.loads((lib4.parent / "build.json").read_text())["cxx"] == want
    plain = json.loads(json.dumps(call_sync(run_ops, native_driver(gcc, P4), 7)))
    default = json.loads(json.dumps(call_sync(run_ops, native_driver(lib4, P4), 7)))
    assert default == plain


@pytest.mark.parametrize("params", [P4, P_DIV], ids=["4x4", "4x4_div"])
def test_optimized_netlist_computes_the_same(params, request):
    """The Verilog after Yosys's clean-ups (the default, ``NETLIST_PASSES``) and Amaranth's own
    conversion give the same outputs, ranges, program cycles and start cycles, program for
    program, on the crosscheck sequence (every command, every rounding mode, the divide
    lanes): the passes change how fast the model runs, not what the Datapath does."""
    lib = request.getfixturevalue("lib_div" if params.divide else "lib4")
    tag = "4x4_div" if params.divide else "4x4"
    plain = build_native(params, BUILD / tag, NativeOptions(netlist="amaranth"))
    assert plain.parent.name == "native-amaranth"
    assert (BUILD / tag / "rtl-amaranth" / "datapath.v").is_file()
    assert "always @*" in (BUILD / tag / "rtl-amaranth" / "datapath.v").read_text()
    want = json.loads(json.dumps(call_sync(run_ops, native_driver(plain, params), 5)))
    got = json.loads(json.dumps(call_sync(run_ops, native_driver(lib, params), 5)))
    assert got == want
    assert len(got["programs"]) > 10


def test_wrapper_skips_function_inputs():
    """Yosys writes wide muxes as Verilog functions with ``input`` lines of their own: the
    native top takes only the module's ports."""
    text = (
        "module datapath(clk, rst, x, y);\n  input clk;\n  input rst;\n  input [3:0] x;\n"
        "  output y;\n  function [0:0] _12_;\n    input [3:0] a;\n    input [1:0] s;\n"
        "  endfunction\n  assign y = x[0];\nendmodule\n"
    )
    top = wrapper_verilog(text, "datapath")
    assert "input [3:0] a;" not in top and "input [1:0] s;" not in top
    assert "input [3:0] x;" in top and "output y;" in top


@pytest.mark.parametrize("instances", [2, 3])
def test_split_equals_one_datapath(lib4, instances):
    """Row tiles and beats over several instances: the values, ranges, result-buffer reads
    and cycles (measured parts plus the schedule's seam) of one Datapath."""
    one = native_driver(lib4, P4)
    split = SplitDriver([native_driver(lib4, P4) for _ in range(instances)], min_split_beats=1)
    rng = np.random.default_rng(2)
    try:
        for m, k, n in [(23, 40, 9), (3, 5, 2), (64, 16, 4)]:
            a, b = rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n))
            x1, x2 = call_sync(one.gemm_tensor, a, b), call_sync(split.gemm_tensor, a, b)
            for u, v in zip(x1[:2], x2[:2], strict=True):
                np.testing.assert_array_equal(u, v)
            assert x1[2] == x2[2]
            assert one.log[-1].cycles == split.log[-1].cycles
            assert (one.kept is None) == (split.kept is None)
            acc = x1[0]
            pairs = [
                (one.rescale, split.rescale, (acc, 5, "round", None, one.kept is not None)),
                (one.rescale, split.rescale, (acc, 5, "sto", rng.integers(0, 1 << 20, acc.shape))),
                (one.feed_tensor, split.feed_tensor, (acc,)),
                (one.update, split.update, (acc.clip(-127, 127), acc.clip(-128, 127), False, 90)),
            ]
            for f1, f2, args in pairs:
                y1, y2 = call_sync(f1, *args), call_sync(f2, *args)
                if isinstance(y1, dict):
                    assert y1 == y2
                else:
                    for u, v in zip(np.atleast_1d(y1), np.atleast_1d(y2), strict=True):
                        np.testing.assert_array_equal(u, v)
                assert one.log[-1].cycles == split.log[-1].cycles, f2.__name__
        assert split.split_ops > 0 and split.part_mismatches == 0
    finally:
        split.close()


def test_combine_ranges_saturates_the_count():
    parts = [
        {"bitwidth": 9, "shift": 2, "max_magnitude": 300, "overflow_count": (1 << 32) - 5},
        {"bitwidth": 12, "shift": 5, "max_magnitude": 4000, "overflow_count": 9},
    ]
    assert combine_ranges(parts) == {
        "bitwidth": 12,
        "shift": 5,
        "max_magnitude": 4000,
        "overflow_count": (1 << 32) - 1,
    }


def test_errors_are_clear(lib4, tmp_path, monkeypatch):
    drv = native_driver(lib4, P4, watchdog=1000)
    from nitihw.rtl.schedule import Command

    with pytest.raises(DatapathError, match="count larger than the operand banks"):
        call_sync(drv.execute, "bad", [Command("LOAD_A", 17)])
    with pytest.raises(NativeStall, match="stalled at cycle .* 0/1 dout beats returned"):
        call_sync(drv.execute, "waits for nothing", [Command("RANGE_CLEAR")], (), 1)
    with pytest.raises(ValueError, match="built for other Datapath parameters"):
        NativeDatapath(lib4, DatapathParams(2, 2, kmax=16))
    with pytest.raises(ValueError, match="built without tracing"):
        NativeDatapath(lib4, P4, waves=tmp_path / "x.vcd")
    with pytest.raises(ValueError, match="cxx_opt"):
        NativeOptions(cxx_opt="-O2 -march=native")
    import nitihw.sim.simulate.native.build as nb

    real_which = shutil.which
    monkeypatch.setattr(
        nb.shutil, "which", lambda name: None if name in ("c++", "g++") else real_which(name)
    )
    with pytest.raises(NativeBuildError, match="a C\\+\\+ compiler"):
        build_native(DatapathParams(2, 2, kmax=8), tmp_path / "nocxx")


def test_payload_matrices_round_trip():
    pay = Payloads(4, 4, 8, 32, 32, True)
    rng = np.random.default_rng(3)
    buf = np.zeros((50, pay.din_bytes), np.uint8)
    for fld in (pay.din_a, pay.din_b, pay.din_rand, pay.din_g32):
        lo, hi = (-(1 << (fld.width - 1)), 1 << (fld.width - 1)) if fld.signed else (0, 1 << 40)
        v = rng.integers(lo, hi, (50, fld.length))
        fld.put(buf, v)
        np.testing.assert_array_equal(fld.take(buf), v)
        assert int.from_bytes(buf[7].tobytes(), "little") >> fld.offset & (
            (1 << fld.width) - 1
        ) == int(v[7, 0]) & ((1 << fld.width) - 1)


def test_waves_on_request(tmp_path):
    params = DatapathParams(2, 2, kmax=8)
    lib = build_native(params, BUILD / "2x2", NativeOptions(waves=True))
    vcd = tmp_path / "dp.vcd"
    with NativeDatapath(lib, params, waves=vcd) as dp:
        drv = DatapathDriver(dp, params)
        acc, _, _ = call_sync(drv.gemm_tensor, np.ones((3, 4), int), np.ones((4, 3), int))
        np.testing.assert_array_equal(acc, np.full((3, 3), 4))
    assert vcd.stat().st_size > 1000


def test_partial_sums_on_the_native_harness(lib4):
    """GEMMs whose K is cut into slices by their tiling (k outside the result's loops, so
    every tile's partial sums wait in the result buffer; and k inside, in one buffer tile's
    rows) on the compiled model: exact results, flags and range, the programs' cycles the
    schedule's and the closed form's, kept and spilled."""
    from nitihw.sim.model.cycle_model import Tiling, gemm_cycles

    drv = native_driver(lib4, P4)
    rng = np.random.default_rng(29)
    m, k, n = 37, 3 * P4.kmax + 5, 11
    a, b = rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n))
    for tiling in (Tiling("kmn", 8, 8, P4.kmax), Tiling("mnk", 16, 4, P4.kmax + 3)):
        drv.tiling = lambda *_shape, t=tiling: t
        for keep in (True, False):
            acc, ovf, fields = call_sync(drv.gemm_tensor, a, b, keep)
            np.testing.assert_array_equal(acc, exact_matmul(a, b))
            assert not ovf.any() and fields["max_magnitude"] == int(np.abs(acc).max())
            assert (drv.kept is not None) == keep
            if keep:
                q = call_sync(drv.rescale, acc, 5, "round", None, True)
                np.testing.assert_array_equal(q, shift_round(acc, 5, "round"))
        for rec in drv.log:
            assert rec.cycles == program_cycles(rec.commands, 4, 4), rec.name
            if rec.name == "gemm":
                assert rec.cycles == gemm_cycles(m, k, n, 4, 4, P4.kmax, tiling)
        assert any(c.quiet for rec in drv.log for c in rec.commands)
        del drv.log[:]
