"""Speed of ``nitihw sweep``: the 1,000-point estimate grid docs/examples/sweep-lenet-1000.toml,
the whole command in a fresh process (interpreter start, the embedded Dask cluster, every point,
the reports and the plot), with 2 workers, 1 worker and in-process (``--workers 0``), and a
rerun that finds every point done. Writes the 'sweep_speed' section of docs/benchmarks.md.
Target (issue 17): a 1,000-point sweep in under 60 s on this 2-core machine.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "docs" / "examples" / "sweep-lenet-1000.toml"


def sweep_seconds(out: Path, *extra: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "nitihw", "sweep", "--grid", str(GRID), "--out", str(out), *extra],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--keep", default=None, help="keep the 2-worker run's results here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in (
            ("embedded cluster, 2 workers", ["--workers", "2"]),
            ("embedded cluster, 1 worker", ["--workers", "1"]),
            ("in-process (--workers 0)", ["--workers", "0"]),
        ):
            out = Path(tmp) / label.split(",")[0].split(" ")[0] / label[-9:].strip()
            first = sweep_seconds(out, *extra)
            rerun = sweep_seconds(out, *extra)
            rows.append([label, 1000, f"{first:.1f}", f"{rerun:.1f}"])
            if args.keep and extra[-1] == "2":
                shutil.rmtree(args.keep, ignore_errors=True)
                shutil.copytree(out, args.keep)
    headers = ["executor", "points", "sweep s (plots included)", "rerun s (all points done)"]
    print_table(headers, rows)
    if not args.no_write:
        body = (
            "## Sweep speed\n\n"
            f"`.venv/bin/python bench/sweep_speed.py` (commit {git_rev()}, {machine()}). "
            "`nitihw sweep --grid docs/examples/sweep-lenet-1000.toml` in a fresh process: "
            "1,000 LeNet accelerators (array shape, kmax, buffers, bandwidth), one training step's "
            "estimate each, then results.csv/parquet, pareto.csv and the plot. The rerun finds "
            "every point stored and only rewrites the reports. Target: under 60 s.\n\n"
            + markdown_table(headers, rows)
        )
        write_section("sweep_speed", body)


if __name__ == "__main__":
    main()
