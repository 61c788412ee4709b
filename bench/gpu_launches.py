"""What one GPU training step asks of the GPU, counted without one: kernels launched, scalars
read back (each a synchronisation) and bytes moved each way, per step, on the CuPy stand-in
(tests/cupy_standin.py, which runs the GPU backend's own code and kernel sources on the CPU).

A small network's step on a GPU is bound by its launches and its synchronisations, not by
its arithmetic (run 2 on the H200: LeNet's 0.8 ms of kernels took a 7-11 ms step), so these
counts are the part of the GPU's speed a CPU can measure. Each figure is the difference between
a 4-step and a 2-step ``train()`` run, halved, so that set-up and evaluation cancel. The
launch count is approximate in the way CuPy's own would be: every elementwise operation,
reduction, fill, copy and kernel of ours counts one; views and ``empty`` count none.

Writes the ``gpu_launches`` section of docs/benchmarks.md (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.cupy_standin

from report import git_rev, machine, markdown_table, print_table, write_section

from tests import cupy_standin

#: (model, dataset, batch, profile)
CASES = [
    ("lenet", "mnist5k", 64, "niti"),
    ("cnn-digits", "digits", 64, "niti"),
    ("cnn-digits", "digits", 64, "wage"),
    ("mlp-digits", "digits", 64, "niti"),
]


def per_step(model: str, dataset: str, batch: int, profile: str) -> dict:
    c = cupy_standin.per_step(model, dataset, batch, profile, steps=(2, 4))
    return {
        "launches": c["launches"],
        "scalar reads": c["syncs"],
        "bytes to the device": c["to_device_bytes"],
        "bytes to the host": c["to_host_bytes"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    if cupy_standin.CXX is None:
        print("the CuPy stand-in needs a C++ compiler (g++)", file=sys.stderr)
        return 1
    headers = ["model", "dataset", "batch", "profile", "kernels launched", "scalar reads",
               "bytes to the device", "bytes to the host"]  # fmt: skip
    rows = []
    for model, dataset, batch, profile in CASES:
        c = per_step(model, dataset, batch, profile)
        rows.append([model, dataset, batch, profile, *(f"{v:,.0f}" for v in c.values())])
        print(f"{model} {profile}: {c}", flush=True)
    print_table(headers, rows)
    if not args.no_write:
        write_section(
            "gpu_launches",
            "## GPU step: kernels launched and scalars read (CuPy stand-in)\n\n"
            f"`python bench/gpu_launches.py` (commit {git_rev()}, {machine()}). Per training "
            "step of the GPU backend, counted by the CPU stand-in for CuPy: the difference "
            "between a 4-step and a 2-step run, halved. A launch is every elementwise "
            "operation, reduction, fill, copy and kernel of ours (views count none), as CuPy "
            "would launch them; a scalar read is a synchronisation. No GPU was used.\n\n"
            + markdown_table(headers, rows),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
