"""Calibrate the Datapath's area model (sim/explore/synth/area.py) and check it.

Synthesises the 2x2 and 4x4 Datapaths, every block alone, at each calibrated (operand,
accumulator) width with ``nitihw synth``'s generic flow (cached in build/synth), fits the model,
writes sim/explore/synth/area_calibration.json, then synthesises whole Datapaths at larger shapes
(8x8 and 16x16 at 8/32; 8x8 at 16/32, 8/16, 6/32 and 4/16) and compares their logic
transistors with the model's. Writes the 'area_model' section of docs/benchmarks.md.
Target (issue 17): within 10%.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.golden.files import atomic_write_json
from nitihw.rtl.datapath import DatapathParams
from nitihw.sim.explore.synth import synthesize
from nitihw.sim.explore.synth.area import CALIBRATION, calibrate, logic_transistors

CHECKS = [
    (8, 8, 8, 32),
    (16, 16, 8, 32),
    (8, 8, 16, 32),
    (8, 8, 8, 16),
    (8, 8, 6, 32),
    (8, 8, 4, 16),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", default="build/synth", help="synthesis work and cache folder")
    args = ap.parse_args()
    t0 = time.perf_counter()
    cal = calibrate(Path(args.out))
    cal_seconds = time.perf_counter() - t0
    atomic_write_json(CALIBRATION, cal)
    print(f"calibration: {len(cal['per_width'])} widths in {cal_seconds:.0f} s -> {CALIBRATION}")
    rows = []
    for r, c, op, acc in CHECKS:
        params = DatapathParams(r, c, operand_bits=op, accumulator_bits=acc, kmax=256)
        rep = synthesize("generic", params=params, out_root=args.out, blocks=False)
        real = rep["modules"]["datapath"]["transistors"]
        model = logic_transistors(r, c, op, acc, cal)["total"]
        rows.append(
            [
                f"{r}x{c}",
                f"{op}/{acc}",
                f"{real:,}",
                f"{round(model):,}",
                f"{100 * (model - real) / real:+.1f}%",
                f"{rep['modules']['datapath']['seconds']:.0f}",
            ]
        )
    headers = [
        "Datapath",
        "operand/acc bits",
        "synthesised transistors",
        "model",
        "model error",
        "synthesis s",
    ]
    print_table(headers, rows)
    if not args.no_write:
        body = (
            "## Area model\n\n"
            f"`.venv/bin/python bench/area_model.py` (commit {git_rev()}, {machine()}, "
            f"{cal['yosys']}). The model (sim/explore/synth/area.py) is fitted from 2x2 and 4x4 "
            f"Datapaths synthesised block by block at {len(cal['per_width'])} widths "
            f"({cal_seconds:.0f} s with the synthesis cache as it was), then compared with "
            "whole Datapaths synthesised at larger shapes (logic transistors, generic flow, "
            "SRAM macros apart). Target: within 10%.\n\n" + markdown_table(headers, rows)
        )
        write_section("area_model", body)


if __name__ == "__main__":
    main()
