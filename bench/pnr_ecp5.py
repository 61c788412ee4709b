"""Place and route on the ECP5 LFE5U-85F: utilisation, Fmax and the critical path per shape.

For each array shape, the Datapath behind the narrow top (sim/explore/synth/pnr.py) through
synth_ecp5 and nextpnr (one seed, one thread, asked for 100 MHz), as ``nitihw synth --target
ecp5 --pnr`` does. Writes the 'pnr' section of docs/benchmarks.md (about 15 minutes for the
default 4x4 and 8x8 on this machine).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.rtl.datapath import DatapathParams
from nitihw.sim.explore.synth.pnr import DEVICE_NAME, place_and_route


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shapes", default="4x4,8x8")
    ap.add_argument("--kmax", type=int, default=32)
    ap.add_argument("--result-rows", type=int, default=16)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for shape in args.shapes.split(","):
            r_, c_ = (int(x) for x in shape.split("x"))
            params = DatapathParams(rows=r_, cols=c_, kmax=args.kmax, result_rows=args.result_rows)
            print(f"{shape} ...", file=sys.stderr, flush=True)
            r = place_and_route(params, Path(work))
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
    if not args.no_write:
        body = (
            f"## Place and route on the {DEVICE_NAME} (nextpnr)\n\n"
            f"`.venv/bin/python bench/pnr_ecp5.py` (commit {git_rev()}, {machine()}). The "
            f"Datapath (operands 8 bits, accumulators 32, kmax {args.kmax}, {args.result_rows} "
            "result rows) behind the narrow top, synth_ecp5 and nextpnr with one seed and one "
            "thread, asked for 100 MHz; docs/synth.md explains the figures.\n\n"
            + markdown_table(headers, rows)
        )
        write_section("pnr", body)


if __name__ == "__main__":
    main()
