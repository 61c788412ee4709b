"""Simulation speed of the cocotb Datapath testbench on Verilator and Icarus (8x8 array).

Runs the ``gemm_throughput`` testcase (two checked 64x64x64 GEMMs, tile by tile through the
streaming interface) on each simulator, side by side, and reports simulated cycles per second
and MACs per second of wall time (simulation only; the build is timed apart). Writes the
'rtl_sim_speed' section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.rtl.verilog import datapath_params
from nitihw.sim.verify import THROUGHPUT_TEST, run_datapath_tests

BUILD = Path(__file__).resolve().parent.parent / "build" / "bench-rtl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--gemm", type=int, default=64, help="GEMM size n (n x n x n)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    params = datapath_params(args.rows, args.cols)
    rows = []
    for sim in ("verilator", "icarus"):
        r = run_datapath_tests(
            sim,
            params,
            0,
            BUILD / f"{args.rows}x{args.cols}",
            [THROUGHPUT_TEST],
            env={"NITIHW_GEMM": str(args.gemm)},
        )
        if not r.passed:
            raise SystemExit(f"{sim}: the throughput testbench failed; see {r.build_dir}")
        s = r.stats[THROUGHPUT_TEST]
        rows.append(
            [
                sim,
                f"{args.rows}x{args.cols}",
                f"{s['cycles']:,}",
                f"{s['macs']:,}",
                f"{s['seconds']:.2f}",
                f"{s['cycles'] / s['seconds']:,.0f}",
                f"{s['macs'] / s['seconds']:,.0f}",
                f"{r.build_seconds:.1f}",
            ]
        )
    headers = [
        "simulator",
        "array",
        "simulated cycles",
        "MACs",
        "wall s",
        "cycles/s",
        "MACs/s",
        "build s",
    ]
    print_table(headers, rows)
    if not args.no_write:
        body = (
            "## RTL simulation speed: cocotb testbench of the Datapath\n\n"
            f"`.venv/bin/python bench/rtl_sim_speed.py` (commit {git_rev()}, {machine()}). "
            f"Two {args.gemm}x{args.gemm}x{args.gemm} GEMMs through the streaming interface "
            "(each one program: loads beside computes, drains beside the next tile; results "
            "checked against the golden model), "
            "cocotb 2.1 driving every cycle from Python. Build time (cold or cached) apart.\n\n"
            + markdown_table(headers, rows)
        )
        write_section("rtl_sim_speed", body)


if __name__ == "__main__":
    main()
