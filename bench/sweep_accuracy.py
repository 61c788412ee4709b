"""The accuracy sweep of issue 17: docs/examples/sweep-accumulator-bits.toml (mlp-digits and
cnn-digits, operand bits {6, 8} x accumulator bits {12, 14, 16, 18, 20, 24, 32}, sums wrapping,
10 epochs each) as ``nitihw sweep`` runs it on the embedded Dask cluster, in a fresh process.
Prints the accuracy table, copies the plot to docs/figures/sweep_accumulator_bits.png and writes
the 'sweep_accuracy' section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "docs" / "examples" / "sweep-accumulator-bits.toml"
FIGURE = ROOT / "docs" / "figures" / "sweep_accumulator_bits.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--workers", default=None, help="embedded cluster size (default: cores)")
    args = ap.parse_args()
    extra = ["--workers", args.workers] if args.workers else []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sweep"
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "nitihw", "sweep", "--grid", str(GRID), "--out", str(out)]
        subprocess.run(
            [*cmd, *extra],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - t0
        df = pd.read_parquet(out / "results.parquet")
        if not args.no_write:
            shutil.copyfile(out / "accuracy_vs_bits.png", FIGURE)
    failed = int((df["error"] != "").sum())
    widths = sorted(df["accumulator_bits"].unique())
    headers = ["model", "operand bits", *(f"acc {a}" for a in widths)]
    rows = []
    for (model, bits), g in df.groupby(["model", "operand_bits"], sort=False):
        acc = g.set_index("accumulator_bits")
        rows.append([model, bits, *(f"{100 * acc.loc[a, 'test_accuracy']:.1f}%" for a in widths)])
    print_table(headers, rows)
    print(f"{len(df)} training runs, {failed} failed, {seconds:.0f} s")
    if not args.no_write:
        body = (
            "## Sweep: accuracy against operand and accumulator width\n\n"
            f"`.venv/bin/python bench/sweep_accuracy.py` (commit {git_rev()}, {machine()}). "
            "`nitihw sweep --grid docs/examples/sweep-accumulator-bits.toml` on the embedded "
            f"Dask cluster (one worker per core), in a fresh process: {len(df)} golden training "
            f"runs of 10 epochs on the 8x8 digits, sums wrapping at the accumulator's width, "
            f"{failed} failed, **{seconds:.0f} s** in all. Test accuracy:\n\n"
            + markdown_table(headers, rows)
            + "\n\nThe plot is docs/figures/sweep_accumulator_bits.png (see docs/dse.md)."
        )
        write_section("sweep_accuracy", body)


if __name__ == "__main__":
    main()
