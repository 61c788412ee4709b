"""The same training run on the golden model and on the simulated RTL, side by side.

For each case: ``nitihw train`` with ``--backend golden`` and with ``--backend rtl`` (same
seed and settings); reports both weights_sha256 (they must be equal), the simulated datapath
cycles, the wall time of the RTL training loop (build and start-up apart), and simulated MACs
per second. Writes the 'rtl_train' section of docs/benchmarks.md. Takes a while (Icarus runs
a whole mlp-digits epoch at ~10k cycles/s).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.sim.cli import main as nitihw

ROOT = Path(__file__).resolve().parent.parent / "build" / "bench-rtl-train"
CASES = [
    # name, args, simulator
    (
        "mlp-digits, 1 epoch",
        ["--model", "mlp-digits", "--dataset", "digits", "--epochs", "1", "--array", "8x8"],
        "verilator",
    ),
    (
        "cnn-digits, 1 epoch",
        ["--model", "cnn-digits", "--dataset", "digits", "--epochs", "1", "--array", "8x8"],
        "verilator",
    ),
    (
        "lenet, 3 steps, batch 4",
        [
            "--model",
            "lenet",
            "--dataset",
            "mnist5k",
            "--batch",
            "4",
            "--steps",
            "3",
            "--array",
            "16x16",
        ],
        "verilator",
    ),
    (
        "mlp-digits, 1 epoch",
        ["--model", "mlp-digits", "--dataset", "digits", "--epochs", "1", "--array", "8x8"],
        "icarus",
    ),
]

_MLP = ["--model", "mlp-digits", "--dataset", "digits", "--epochs", "1", "--array", "8x8"]
_CNN = ["--model", "cnn-digits", "--dataset", "digits", "--epochs", "1", "--array", "8x8"]
#: ``--methods``: the other training methods, each on the datapath configuration it needs
METHOD_CASES = [
    (f"{profile}, {model}, 1 epoch", [*base, "--profile", profile], "verilator")
    for profile in ("wage", "nitro-d", "dfp16")
    for model, base in (("mlp-digits", _MLP), ("cnn-digits", _CNN))
]


def run(name: str, args: list[str]) -> tuple[dict, float]:
    out = ROOT / name
    t0 = time.perf_counter()
    rc = nitihw(["train", *args, "--out", str(out), "--build-dir", str(ROOT / "models")])
    if rc != 0:
        raise SystemExit(f"nitihw train {' '.join(args)} failed ({rc})")
    return json.loads((out / "result.json").read_text()), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=None, help="run only cases whose name contains this")
    ap.add_argument(
        "--methods",
        action="store_true",
        help="run the WAGE / NITRO-D / DFP16 cases (section 'rtl_methods') instead",
    )
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = []
    cases = METHOD_CASES if args.methods else CASES
    for i, (name, targs, sim) in enumerate(cases):
        if args.only and args.only not in name:
            continue
        key = f"{'m' if args.methods else ''}{i}"
        gold, _ = run(f"{key}-golden", targs)
        rtl, total = run(f"{key}-rtl-{sim}", [*targs, "--backend", "rtl", "--sim", sim])
        cyc = rtl["cycles"]
        macs = sum(r["macs"] for r in cyc["by_layer_phase"])
        same = rtl["weights_sha256"] == gold["weights_sha256"]
        rows.append(
            [
                name,
                cyc["array"],
                sim,
                rtl["steps"],
                gold["weights_sha256"][:16],
                rtl["weights_sha256"][:16],
                "yes" if same else "NO",
                cyc["model_mismatches"],
                f"{cyc['total_cycles']:,}",
                f"{rtl['seconds']:.1f}",
                f"{total:.0f}",
                f"{cyc['total_cycles'] / rtl['seconds']:,.0f}",
                f"{macs / rtl['seconds']:,.0f}",
            ]
        )
        print_table(HEADERS, rows[-1:])
    print_table(HEADERS, rows)
    if not args.no_write and rows:
        title = "Other training methods on" if args.methods else "Training on"
        flag = " --methods" if args.methods else ""
        body = (
            f"## {title} the simulated RTL against the golden model\n\n"
            f"`.venv/bin/python bench/rtl_train.py{flag}` (commit {git_rev()}, {machine()}). "
            "Each row: the same `nitihw train` (seed 0) with `--backend golden` and `--backend "
            "rtl`; evaluation on the golden model (same weights). *train s*: the RTL training "
            "loop; *total s*: the whole command (Verilog build, simulator start, evaluation). "
            "*model mismatches*: operations whose simulated cycles differ from the cycle "
            "model.\n\n" + markdown_table(HEADERS, rows)
        )
        write_section("rtl_methods" if args.methods else "rtl_train", body)


HEADERS = [
    "run",
    "array",
    "simulator",
    "steps",
    "golden sha256",
    "rtl sha256",
    "same bits",
    "model mismatches",
    "simulated cycles",
    "train s",
    "total s",
    "cycles/s",
    "simulated MACs/s",
]

if __name__ == "__main__":
    main()
