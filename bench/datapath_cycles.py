"""Datapath v2 against v1 and against SCALE-Sim's output-stationary model, in cycles.

v1 ran one command at a time (load, compute, drain never overlapped); v2 (rtl/datapath.py)
overlaps the next tile's load with the current compute and the drain with the next tile.
Both are priced from their schedules: v2 by the cycle model (equal to the RTL, which the tests
check), v1 by its closed form as it stood at commit 22bd2e1 (copied below, and checked here
against the LeNet figure `nitihw estimate` printed then). SCALE-Sim's OS model:
``ceil(M/R) ceil(N/C) (K + R + C - 2)`` (SCALE-Sim 3.0 reproduces it: 1,503 cycles for
64x64x64 on 16x16). Writes the 'datapath_cycles' section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

import nitihw.sim.model.estimate as estimate_module
from nitihw.sim.model.accelerator import load_accelerator
from nitihw.sim.model.cycle_model import gemm_cycles
from nitihw.sim.model.workload import model_workload

GEMMS = [(64, 64, 64), (256, 500, 800), (256, 256, 256), (36864, 25, 20), (64, 800, 500)]
#: the v1 LeNet step total `nitihw estimate --model lenet --batch 64 --array 16x16` printed
V1_LENET_16X16 = 9_811_551


def scale_sim_os(m, k, n, r, c):
    return -(-m // r) * -(-n // c) * (k + r + c - 2)


def v1_gemm_cycles(m, k, n, rows, cols, kmax):
    """v1's closed form: per tile LOAD_A (nch + K), COMPUTE (K + nch (rows + cols)), LOAD_B
    per chunk when K has several; per column tile LOAD_B once (1 + K) and the drains
    (1 + rows per tile); the range clear and read (3)."""
    if m == 0 or n == 0:
        return 3
    nch = -(-k // kmax)
    t_r, t_c = -(-m // rows), -(-n // cols)
    per_tile = (nch + k) + (k + nch * (rows + cols)) + (nch + k if nch > 1 else 0)
    per_col = (1 + k if nch == 1 else 0) + t_r * per_tile + (t_r + m)
    return t_c * per_col + 3


def v1_op_cycles(op, shape, array, extra=None):
    extra = extra or {}
    beats = -(-shape[0] // array.cols) if op != "gemm" else 0
    if op == "gemm":
        return v1_gemm_cycles(*shape, array.rows, array.cols, array.kmax)
    if op == "range":
        return 1 + (1 + beats) + 2 if extra.get("fed") else 0
    if op == "rescale" or op == "divide":
        return beats + 4
    if op == "update":
        return beats + (4 if extra.get("divide") else 3)
    raise ValueError(op)


def step_total(model, batch, array, profile="niti", v1=False):
    acc = load_accelerator().with_array(array)
    layers = model_workload(model, batch)
    if v1:
        with mock.patch.object(estimate_module, "op_cycles", v1_op_cycles):
            r = estimate_module.estimate(layers, acc, batch, batch, model, profile)
    else:
        r = estimate_module.estimate(layers, acc, batch, batch, model, profile)
    step = r["per_step"]
    return step["array_cycles"], step["total_cycles"], step["macs"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    r = c = 16
    kmax = 256
    g_headers = [
        "GEMM M x K x N (16x16)",
        "SCALE-Sim OS",
        "v1 cycles",
        "v1 / OS",
        "v2 cycles",
        "v2 / OS",
        "v1 util %",
        "v2 util %",
    ]
    g_rows = []
    for m, k, n in GEMMS:
        os_ = scale_sim_os(m, k, n, r, c)
        v1 = v1_gemm_cycles(m, k, n, r, c, kmax)
        v2 = gemm_cycles(m, k, n, r, c, kmax)
        macs = m * k * n
        g_rows.append(
            [
                f"{m} x {k} x {n}",
                f"{os_:,}",
                f"{v1:,}",
                f"{v1 / os_:.2f}",
                f"{v2:,}",
                f"{v2 / os_:.3f}",
                f"{100 * macs / (v1 * r * c):.1f}",
                f"{100 * macs / (v2 * r * c):.1f}",
            ]
        )
    print_table(g_headers, g_rows)
    s_headers = [
        "training step (batch 64)",
        "array",
        "MACs / PEs",
        "v1 cycles (+ stalls)",
        "v2 cycles (+ stalls)",
        "v1 / v2",
        "v2 util %",
    ]
    s_rows = []
    checked = False
    for model, profile in (("lenet", "niti"), ("lenet", "wage"), ("mlp-mnist", "niti")):
        for array in ("8x8", "16x16"):
            pes = int(array.split("x")[0]) * int(array.split("x")[1])
            c1, t1, macs = step_total(model, 64, array, profile, v1=True)
            c2, t2, _ = step_total(model, 64, array, profile)
            if (model, profile, array) == ("lenet", "niti", "16x16"):
                assert c1 == V1_LENET_16X16, f"v1 model drifted: {c1:,} != {V1_LENET_16X16:,}"
                checked = True
            s_rows.append(
                [
                    f"{model} ({profile})",
                    array,
                    f"{macs // pes:,}",
                    f"{c1:,} ({t1:,})",
                    f"{c2:,} ({t2:,})",
                    f"{c1 / c2:.2f}x",
                    f"{100 * macs / (c2 * pes):.1f}",
                ]
            )
    assert checked
    print_table(s_headers, s_rows)
    if args.no_write:
        return
    body = (
        "## Datapath cycles: v2 against v1 and SCALE-Sim\n\n"
        f"`.venv/bin/python bench/datapath_cycles.py` (commit {git_rev()}, {machine()}; "
        "schedules, not wall time). v2 from the cycle model, which equals the RTL operation "
        "by operation; v1 from its closed form at commit 22bd2e1 (it reproduces the "
        f"{V1_LENET_16X16:,} cycles `nitihw estimate --model lenet --batch 64 --array 16x16` "
        "printed then). SCALE-Sim OS: `ceil(M/R) ceil(N/C) (K + R + C - 2)`. kmax 256.\n\n"
        + markdown_table(g_headers, g_rows)
        + "\n\nA whole training step as `nitihw estimate` prices it (datapath cycles; in "
        "brackets with the off-chip bandwidth stalls of the default accelerator, 16 B/cycle). "
        "*MACs / PEs*: the cycles a perfect array would need.\n\n"
        + markdown_table(s_headers, s_rows)
    )
    write_section("datapath_cycles", body)


if __name__ == "__main__":
    main()
