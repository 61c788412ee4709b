"""Place and route on the ECP5 LFE5U-85F: utilisation, Fmax and the critical path per shape,
and what the measured clock does to an estimate.

For each array shape, the Datapath behind the narrow top (sim/explore/synth/pnr.py) through
synth_ecp5 and nextpnr (one seed, one thread, asked for 100 MHz), as ``nitihw synth --target
ecp5 --pnr`` and ``nitihw estimate --clock pnr`` do (the latter's design: kmax 32, 16 result
rows; placed here into a fresh cache, so the times are measured). Then one LeNet training
step (batch 64) estimated at 500 MHz and at the placed clock. Writes the 'pnr' section of
docs/benchmarks.md (about 17 minutes for the default 2x2, 4x4 and 8x8 on this machine).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.rtl.datapath import DatapathParams
from nitihw.sim.explore.synth.clock import PNR_KMAX, PNR_RESULT_ROWS, pnr_clock
from nitihw.sim.explore.synth.pnr import DEVICE_NAME, place_and_route
from nitihw.sim.model.accelerator import Accelerator
from nitihw.sim.model.estimate import estimate
from nitihw.sim.model.workload import model_workload

ASSUMED_MHZ = 500.0


def lenet_step_ms(rows: int, cols: int, mhz: float) -> float:
    """One LeNet step (batch 64) on a ``rows`` x ``cols`` array at ``mhz``, estimated."""
    acc = Accelerator(rows=rows, cols=cols, frequency_mhz=mhz)
    r = estimate(model_workload("lenet", 64), acc, 64, 60000, "lenet")
    return r["per_step"]["seconds_at_clock"] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shapes", default="2x2,4x4,8x8")
    ap.add_argument("--kmax", type=int, default=PNR_KMAX)
    ap.add_argument("--result-rows", type=int, default=PNR_RESULT_ROWS)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    rows, clocks = [], []
    clock_design = (args.kmax, args.result_rows) == (PNR_KMAX, PNR_RESULT_ROWS)
    with tempfile.TemporaryDirectory() as work:
        for shape in args.shapes.split(","):
            r_, c_ = (int(x) for x in shape.split("x"))
            print(f"{shape} ...", file=sys.stderr, flush=True)
            if clock_design:  # the estimate's design, placed into a fresh cache
                r = pnr_clock(r_, c_, cache=Path(work))
            else:
                params = DatapathParams(
                    rows=r_, cols=c_, kmax=args.kmax, result_rows=args.result_rows
                )
                r = place_and_route(params, Path(work))
            at_500, at_fmax = (
                lenet_step_ms(r_, c_, ASSUMED_MHZ),
                lenet_step_ms(r_, c_, r["fmax_mhz"]),
            )
            clocks.append(
                [shape, f"{r['fmax_mhz']:.1f}", f"{at_500:.2f}", f"{at_fmax:.2f}",
                 f"{at_fmax / at_500:.2f}"]
            )  # fmt: skip
            res = r["resources"]
            cell = lambda k, res=res: f"{res[k]['used']:,} of {res[k]['available']:,}"  # noqa: E731
            cp = r["critical_path"]
            rows.append(
                [
                    shape,
                    cell("LUT4"),
                    cell("flip-flops"),
                    cell("multipliers (18x18)"),
                    cell("block RAMs (DP16KD)"),
                    f"{r['fmax_mhz']:.1f}",
                    f"`{cp['from']}` -> `{cp['to']}`: {cp['delay_ns']:.1f} ns, "
                    f"{cp['logic_levels']} logic levels",
                    f"{r['synth_seconds']:.0f}",
                    f"{r['pnr_seconds']:.0f}",
                ]
            )
    headers = [
        "array", "LUT4", "flip-flops", "multipliers", "block RAMs", "Fmax MHz", "critical path",
        "synth_ecp5 s", "nextpnr s",
    ]  # fmt: skip
    print_table(headers, rows)
    clock_headers = [
        "array", "Fmax MHz", "LeNet step at 500 MHz (ms)", "at Fmax (ms)", "at Fmax / at 500",
    ]  # fmt: skip
    print_table(clock_headers, clocks)
    if not args.no_write:
        body = (
            f"## Place and route on the {DEVICE_NAME} (nextpnr)\n\n"
            f"`.venv/bin/python bench/pnr_ecp5.py` (commit {git_rev()}, {machine()}). The "
            f"Datapath (operands 8 bits, accumulators 32, kmax {args.kmax}, {args.result_rows} "
            "result rows) behind the narrow top, synth_ecp5 and nextpnr with one seed and one "
            "thread, asked for 100 MHz; docs/synth.md explains the figures.\n\n"
            + markdown_table(headers, rows)
            + "\n\nOne LeNet training step (batch 64) estimated at the assumed 500 MHz and at "
            "the placed clock (`nitihw estimate --clock pnr`; the same cycles):\n\n"
            + markdown_table(clock_headers, clocks)
        )
        write_section("pnr", body)


if __name__ == "__main__":
    main()
