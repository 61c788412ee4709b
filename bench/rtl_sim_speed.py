"""Simulation speed of the Datapath: the native harness against the cocotb testbench, and the
native harness's Verilator and compiler options.

1. The same workload (square GEMMs through the streaming interface, results checked against
   the golden model) on the native harness (:mod:`nitihw.sim.simulate.native`, one instance)
   and on the cocotb testbench on Verilator and Icarus: simulated cycles and MACs per second of wall
   time (simulation only; fresh builds timed apart). Section 'rtl_sim_speed'.
2. The native model built with each of Verilator's and the compiler's options, one change
   from the default at a time, each run on one workload, interleaved over ``--rounds``
   rounds (best kept), so every row saw the same machine. Section 'native_options'.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.golden import exact_matmul
from nitihw.rtl.datapath import DatapathParams
from nitihw.sim.simulate.datapath_driver import DatapathDriver
from nitihw.sim.simulate.native import NativeDatapath, NativeOptions, build_native, call_sync
from nitihw.sim.simulate.verify import THROUGHPUT_TEST, run_datapath_tests

BUILD = Path(__file__).resolve().parent.parent / "build" / "bench-rtl"
#: one change from the default at a time (the first row is the default)
VARIANTS = [
    ("default (Verilator -O3, C++ -O2, --x-assign fast, 1 thread)", {}),
    ("C++ -O3", {"cxx_opt": "-O3"}),
    ("C++ -Os (Verilator's own default)", {"cxx_opt": "-Os"}),
    ("Verilator -O1", {"verilator_opt": "-O1"}),
    ("--x-assign 0", {"x_assign": "0"}),
    ("--threads 2", {"threads": 2}),
    ("--waves (VCD tracing built in, not recording)", {"waves": True}),
]


def operands(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(-128, 128, (n, n)), rng.integers(-128, 128, (n, n))) for _ in range(2)]


def native_run(lib, params, n: int) -> dict:
    """Two checked n x n x n GEMMs on one native instance: cycles, MACs, seconds."""
    with NativeDatapath(lib, params) as dp:
        drv = DatapathDriver(dp, params)
        ops = operands(n)
        seconds = 0.0
        for a, b in ops:
            t0 = time.perf_counter()
            acc, _, _ = call_sync(drv.gemm_tensor, a, b)
            seconds += time.perf_counter() - t0
            if not np.array_equal(acc, exact_matmul(a, b)):  # checked outside the timing
                raise SystemExit("native GEMM differs from the golden model")
    return {"cycles": sum(r.cycles for r in drv.log), "macs": 2 * n**3, "seconds": seconds}


def timed_build(params, where: Path, options=None) -> tuple[Path, float]:
    t0 = time.perf_counter()
    lib = build_native(params, where, options)
    return lib, time.perf_counter() - t0


def speed_rows(arrays, gemm: int, icarus_gemm: int) -> list[list]:
    rows = []
    for r, c in arrays:
        params = DatapathParams(r, c)
        where = BUILD / f"{r}x{c}"
        shutil.rmtree(where, ignore_errors=True)  # fresh builds
        lib, build_s = timed_build(params, where)
        results = [("native (verilator)", native_run(lib, params, gemm), build_s, gemm)]
        for sim, n in (("verilator", gemm), ("icarus", icarus_gemm)):
            if not n:
                continue
            res = run_datapath_tests(
                sim, params, 0, where, [THROUGHPUT_TEST], env={"NITIHW_GEMM": str(n)}
            )
            if not res.passed:
                raise SystemExit(f"{sim}: the throughput testbench failed; see {res.build_dir}")
            results.append((f"cocotb {sim}", res.stats[THROUGHPUT_TEST], res.build_seconds, n))
        base = next(s for name, s, _, _ in results if name == "cocotb verilator")
        base_rate = base["cycles"] / base["seconds"]
        for name, s, build_s, n in results:
            rate = s["cycles"] / s["seconds"]
            rows.append(
                [
                    name,
                    f"{r}x{c}",
                    f"2 x {n}^3",
                    f"{s['cycles']:,}",
                    f"{s['seconds']:.2f}",
                    f"{rate:,.0f}",
                    f"{s['macs'] / s['seconds']:,.0f}",
                    f"{build_s:.0f}",
                    f"{rate / base_rate:.1f}x",
                ]
            )
            print_table(SPEED_HEADERS, rows[-1:])
    return rows


def option_rows(arrays, gemm: int, rounds: int) -> list[list]:
    rows = []
    for r, c in arrays:
        params = DatapathParams(r, c)
        where = BUILD / f"options-{r}x{c}"
        shutil.rmtree(where, ignore_errors=True)
        built = [(name, *timed_build(params, where, NativeOptions(**kw))) for name, kw in VARIANTS]
        best: dict = {}
        for _ in range(rounds):
            for name, lib, _ in built:
                s = native_run(lib, params, gemm)
                best[name] = max(best.get(name, 0.0), s["cycles"] / s["seconds"])
        default = best[VARIANTS[0][0]]
        for name, _, build_s in built:
            rows.append(
                [
                    f"{r}x{c}",
                    name,
                    f"{best[name]:,.0f}",
                    f"{best[name] / default:.2f}",
                    f"{build_s:.0f}",
                ]
            )
            print_table(OPTION_HEADERS, rows[-1:])
    return rows


SPEED_HEADERS = [
    "simulator",
    "array",
    "workload",
    "simulated cycles",
    "wall s",
    "cycles/s",
    "MACs/s",
    "build s",
    "vs cocotb verilator",
]
OPTION_HEADERS = ["array", "native build", "cycles/s (best)", "vs default", "build s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arrays", default="8x8,16x16")
    ap.add_argument("--gemm", type=int, default=128, help="GEMM size n (n x n x n)")
    ap.add_argument("--icarus-gemm", type=int, default=64, help="0: no Icarus rows")
    ap.add_argument("--rounds", type=int, default=2, help="option runs, interleaved")
    ap.add_argument("--no-options", action="store_true", help="skip the options table")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    arrays = [tuple(int(x) for x in a.split("x")) for a in args.arrays.split(",")]
    speed = speed_rows(arrays, args.gemm, args.icarus_gemm)
    print_table(SPEED_HEADERS, speed)
    options = [] if args.no_options else option_rows(arrays, args.gemm, args.rounds)
    if options:
        print_table(OPTION_HEADERS, options)
    if args.no_write:
        return
    body = (
        "## RTL simulation speed: native harness and cocotb testbench\n\n"
        f"`.venv/bin/python bench/rtl_sim_speed.py` (commit {git_rev()}, {machine()}). "
        "Two checked square GEMMs through the streaming interface (each one program: loads "
        "beside computes, drains beside the next tile), on the native harness (one instance, "
        "whole programs handed to compiled code) and on the cocotb testbench (cocotb 2.1 "
        "driving every cycle from Python; Icarus on a smaller GEMM). The cocotb times include "
        "the testbench's own golden check (an exact object-dtype matmul, a few percent); the "
        "native check is outside its timing. *build s*: a fresh build (Verilog generation "
        "included), timed apart from the run.\n\n" + markdown_table(SPEED_HEADERS, speed)
    )
    write_section("rtl_sim_speed", body)
    if options:
        body = (
            "## Native harness: Verilator and compiler options\n\n"
            f"`.venv/bin/python bench/rtl_sim_speed.py` (commit {git_rev()}, {machine()}). "
            f"Two checked {args.gemm}^3 GEMMs on one native instance built each way (one "
            f"change from the default a row), runs interleaved over {args.rounds} rounds, "
            "the best of each kept. Only C++ `-Os` (Verilator's make default) and `--threads "
            "2` stand out, both slower; the other changes are within this machine's noise on "
            "runs this short (a tenth of a second), so the default keeps Verilator `-O3`, "
            "C++ `-O2`, `--x-assign fast`, one thread, and builds tracing in only for "
            "`--waves`.\n\n" + markdown_table(OPTION_HEADERS, options)
        )
        write_section("native_options", body)


if __name__ == "__main__":
    main()
