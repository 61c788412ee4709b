"""Speed of ``nitihw estimate``: a full training step of vgg-small-7 at batch 256 (target:
under one second), and the other built-in models. Times the estimate itself (median of 20)
and the whole command in a fresh process (interpreter start, reports; with and without the
PNG plots). Writes the 'estimate_speed' section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.sim.model.accelerator import load_accelerator
from nitihw.sim.model.estimate import estimate
from nitihw.sim.model.workload import model_workload

CASES = [
    ("vgg-small-7", 256, "16x16"),
    ("vgg-small-9", 256, "16x16"),
    ("lenet", 64, "8x8"),
    ("mlp-digits", 64, "8x8"),
]


def command_seconds(args: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "nitihw", "estimate", *args, "--out", out],
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = []
    for model, batch, array in CASES:
        acc = load_accelerator().with_array(array)
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            r = estimate(model_workload(model, batch), acc, batch, 50000, model)
            times.append(time.perf_counter() - t0)
        cli = ["--model", model, "--batch", str(batch), "--array", array]
        rows.append(
            [
                model,
                batch,
                array,
                f"{r['per_step']['macs']:,}",
                f"{1000 * statistics.median(times):.2f}",
                f"{command_seconds([*cli, '--no-plots']):.2f}",
                f"{command_seconds(cli):.2f}",
            ]
        )
    headers = [
        "model",
        "batch",
        "array",
        "MACs per step",
        "estimate ms",
        "command s (no plots)",
        "command s (with plots)",
    ]
    print_table(headers, rows)
    if not args.no_write:
        body = (
            "## Estimate speed\n\n"
            f"`.venv/bin/python bench/estimate_speed.py` (commit {git_rev()}, {machine()}). "
            "*estimate ms*: one full training step (forward, backward-error, weight-gradient, "
            "range, rescale, update of every layer), median of 20. *command s*: `nitihw "
            "estimate ... --out DIR` in a fresh process, reports included. Target: a full "
            "vgg-small-7 step at batch 256 in under one second.\n\n" + markdown_table(headers, rows)
        )
        write_section("estimate_speed", body)


if __name__ == "__main__":
    main()
