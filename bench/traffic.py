"""Off-chip traffic side by side with SCALE-Sim 3.0 and ZigZag, on the same GEMMs and buffers.

For each forward GEMM of LeNet (batch 8) and vgg-small-7 (batch 1) on a 16x16 output-stationary
array with 64/64/256 KiB buffers: SCALE-Sim's DRAM reads of A (ifmap) and B (filter) and its
DRAM writes of the results (DETAILED_ACCESS_REPORT.csv, one-byte words), next to nitihw's for
the same GEMM seen the way SCALE-Sim sees it (A is the M x K matrix itself, not a tensor behind
an im2col; the results written once, one byte each, nothing held for a range): the fixed loop
order of the estimates before issue 29, the mapping the Datapath runs (its partial sums in the
result buffer), the best searched mapping, and the lower bound; and ZigZag's best mapping for
the same array, buffers and DRAM (bench/zigzag_worker.py). SCALE-Sim crashes with NumPy 2: run
it from its own venv (``python3 -m venv V && V/bin/pip install 'numpy<2' scalesim==3.0.0``) and
pass ``--scalesim V/bin/python``; ZigZag likewise (``python3 -m venv Z && Z/bin/pip install
zigzag-dse six``: it imports ``six`` without declaring it), ``--zigzag Z/bin/python``. Prints
the table and writes the 'traffic_scalesim' section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section
from scalesim_check import run_gemms

from nitihw.sim.model.estimate import _op_traffic
from nitihw.sim.model.mapping import GemmShape, Hierarchy, lower_bound_bytes, priced_mapping, search
from nitihw.sim.model.workload import StepOp, model_workload, step_ops

ROWS = COLS = 16
KMAX = 256
IFMAP, FILTER, OFMAP = 64 * 1024, 64 * 1024, 256 * 1024
#: SCALE-Sim simulates every cycle (about 3,000 a second here): vgg-small-7 at batch 1 (its
#: GEMMs at batch 4, issue 29's M 4,096 among them, take it most of an hour)
WORKLOADS = [("lenet", 8), ("vgg-small-7", 1)]


def gemms() -> list[tuple[str, int, int, int]]:
    """(name, M, K, N) of every forward GEMM of :data:`WORKLOADS`."""
    out = []
    for model, batch in WORKLOADS:
        for op in step_ops(model_workload(model, batch), "niti"):
            if op.op == "gemm" and op.phase == "forward":
                out.append((f"{model} {op.layer}", *op.shape))
    return out


def run_scalesim(python: str, shapes, work: Path) -> list[dict]:
    """SCALE-Sim's DRAM ifmap reads, filter reads and ofmap writes (words) of each GEMM."""
    gemms = [(m, n, k) for _, m, k, n in shapes]
    path = run_gemms(python, "os", ROWS, COLS, gemms, work) / "DETAILED_ACCESS_REPORT.csv"
    with open(path, newline="") as f:
        rows = [{k.strip(): v.strip() for k, v in r.items() if k} for r in csv.DictReader(f)]
    return [
        {
            "a": int(r["DRAM IFMAP Reads"]),
            "b": int(r["DRAM Filter Reads"]),
            "c": int(r["DRAM OFMAP Writes"]),
        }
        for r in rows
    ]


def zigzag_gemms(
    python: str, shapes, work: Path, rows: int = ROWS, cols: int = COLS, opt: str = "energy"
) -> list[dict]:
    """bench/zigzag_worker.py, run in ZigZag's venv, on ``shapes`` ((name, M, K, N)) with
    nitihw's buffers on a ``rows x cols`` array, ``opt`` its objective: what it writes for
    each GEMM (the elements moved across the DRAM boundary, and its cycles)."""
    spec = {"rows": rows, "cols": cols, "accumulator_bits": 32, "ifmap": IFMAP, "filter": FILTER,
            "ofmap": OFMAP, "opt": opt, "gemms": [list(g) for g in shapes]}  # fmt: skip
    (work / "gemms.json").write_text(json.dumps(spec))
    worker = Path(__file__).with_name("zigzag_worker.py")
    cmd = [python, str(worker), "gemms.json", "out.json", "work"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=work)
    return json.loads((work / "out.json").read_text())


def run_zigzag(python: str, shapes, work: Path) -> list[dict]:
    """ZigZag's best mapping (its energy search, DRAM accesses costed far above the buffers')
    of each GEMM on the same array and buffers: elements across the DRAM boundary, A reads / B
    reads / results written plus partial sums read back."""
    out = []
    for moved in zigzag_gemms(python, shapes, work):
        o = moved["O"]
        out.append(
            {
                "a": moved["I"]["RD_OUT_TO_LOW"],
                "b": moved["W"]["RD_OUT_TO_LOW"],
                "c": o["WR_IN_BY_LOW"] + o["RD_OUT_TO_LOW"],
            }
        )
    return out


def ours(m: int, k: int, n: int) -> dict:
    """nitihw's traffic (bytes, one-byte elements) for the GEMM as SCALE-Sim sees it."""
    g = GemmShape(m, k, n, 1, 1, 1, held=False)
    h = Hierarchy(IFMAP, FILTER, OFMAP, ROWS, COLS, KMAX)
    op = StepOp("x", "forward", "gemm", (m, k, n), operands=(m * k, k * n), held=False)
    acc = SimpleNamespace(  # what the fixed order reads of an accelerator
        rows=ROWS, cols=COLS, kmax=KMAX, ifmap_kib=IFMAP / 1024, filter_kib=FILTER / 1024,
        operand_bytes=1, acc_bytes=1,
    )  # fmt: skip
    (_, fixed), _ = _op_traffic(op, acc, second_pass=False)
    out = {"fixed": (fixed["ifmap_reads"], fixed["filter_reads"], fixed["ofmap_writes"])}
    # the Datapath's mapping: chosen with its real result buffer (int32 partial sums, which
    # never leave the chip), priced like the others with one-byte elements
    run = search(GemmShape(m, k, n, 1, 1, 4, held=False), h, datapath=True)
    run = priced_mapping(g, h, run.order, run.tm, run.tn, run.tk)
    best = search(g, h)
    for label, mp in (("datapath", run), ("searched", best)):
        out[label] = (mp.a_reads, mp.b_reads, mp.c_writes + mp.c_reads)
    out["bound"] = lower_bound_bytes(g, h)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scalesim", required=True, help="the python of a venv with scalesim 3.0")
    ap.add_argument("--zigzag", required=True, help="the python of a venv with zigzag-dse")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    shapes = gemms()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        theirs = run_scalesim(args.scalesim, shapes, Path(tmp))
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        zz = run_zigzag(args.zigzag, shapes, Path(tmp))
    zz_seconds = time.perf_counter() - t0
    headers = ["GEMM", "M x K x N", "SCALE-Sim A / B / C", "ZigZag A / B / C",
               "fixed order A / B / C", "the Datapath's A / B / C", "searched", "bound",
               "SCALE-Sim / Datapath's", "Datapath's / ZigZag", "searched / ZigZag",
               "Datapath's / bound"]  # fmt: skip
    rows = []
    for (name, m, k, n), s, z in zip(shapes, theirs, zz, strict=True):
        o = ours(m, k, n)
        s_total, d_total = s["a"] + s["b"] + s["c"], sum(o["datapath"])
        z_total = z["a"] + z["b"] + z["c"]
        rows.append(
            [
                name,
                f"{m}x{k}x{n}",
                f"{s['a']:,} / {s['b']:,} / {s['c']:,}",
                f"{z['a']:,} / {z['b']:,} / {z['c']:,}",
                " / ".join(f"{x:,}" for x in o["fixed"]),
                " / ".join(f"{x:,}" for x in o["datapath"]),
                f"{sum(o['searched']):,}",
                f"{o['bound']:,}",
                f"{s_total / d_total:.2f}",
                f"{d_total / z_total:.2f}",
                f"{sum(o['searched']) / z_total:.2f}",
                f"{d_total / o['bound']:.2f}",
            ]
        )
    print_table(headers, rows)
    if args.no_write:
        return
    body = (
        "## Off-chip traffic against SCALE-Sim 3.0 and ZigZag, side by side\n\n"
        f"`.venv/bin/python bench/traffic.py --scalesim V/bin/python` (commit {git_rev()}, "
        f"{machine()}; SCALE-Sim 3.0.0 in its own venv with NumPy 1.26, {seconds:.0f} s; "
        f"ZigZag (zigzag-dse 3.9.1, its own venv, {zz_seconds:.0f} s): its energy-optimal "
        "mapping with DRAM accesses costed 1,000x the buffers', counted in elements). "
        "Every forward GEMM of LeNet (batch 8) and vgg-small-7 (batch 1) on a 16x16 "
        "output-stationary array, 64/64/256 KiB buffers, one-byte elements; bytes moved off "
        "chip: A reads / B reads / results written (nitihw's searched mapping counts partial "
        "sums spilled and read back with the results). nitihw sees each GEMM "
        "as SCALE-Sim does here: A is the M x K matrix (no tensor behind an im2col), results "
        "written once, every element one byte (partial sums too: SCALE-Sim counts words, and "
        "ZigZag is given the same precision). *fixed order*: the estimates before issue 29; "
        "*the Datapath's*: the mapping it runs (its int32 partial sums wait in the 256 KiB "
        "result buffer), what `nitihw estimate` prices by default; *searched*: the best of "
        "any tile; *bound*: every tensor once, or the I/O bound where the buffers are too "
        "small.\n\n" + markdown_table(headers, rows)
    )
    write_section("traffic_scalesim", body)


if __name__ == "__main__":
    main()
