"""The same training run on the golden model and on the simulated RTL, side by side.

For each case: ``nitihw train`` with ``--backend golden`` and with ``--backend rtl`` on each
of its simulators (same seed and settings): ``verilator``, the native harness
(:mod:`nitihw.sim.native`), and ``cocotb-verilator``, the cocotb testbench. Reports
both weights_sha256 (they must be equal), the simulated datapath cycles, the wall time of the
RTL training loop (build and start-up apart), simulated cycles and MACs per second, the
build's seconds (a fresh build, timed before the run) and, for the native rows, the speed-up
over cocotb on Verilator in the same run. Writes the 'rtl_train' section of
docs/benchmarks.md. Takes about 45 minutes (the LeNet 3-epoch case on 16x16 is most of it;
cocotb's LeNet step about 5). Icarus: bench/rtl_sim_speed.py.

``--lenet-epochs N``: only the LeNet/mnist5k case, N epochs on the native path (``./run
bench-rtl-lenet``: the full 30-epoch run, for whoever has the hours); section 'rtl_lenet'.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.sim.cli import build_parser
from nitihw.sim.cli import main as nitihw

ROOT = Path(__file__).resolve().parent.parent / "build" / "bench-rtl-train"
MODELS = ROOT / "models"

_MLP = ["--model", "mlp-digits", "--dataset", "digits", "--epochs", "1", "--array", "8x8"]
_CNN = ["--model", "cnn-digits", "--dataset", "digits", "--epochs", "1", "--array", "8x8"]
_LENET = ["--model", "lenet", "--dataset", "mnist5k", "--array", "16x16"]
NATIVE, COCOTB = "verilator", "cocotb-verilator"
CASES = [
    # name, args, simulators (the native harness first: the others are its baselines)
    ("mlp-digits, 1 epoch", _MLP, (NATIVE, COCOTB)),
    ("cnn-digits, 1 epoch", _CNN, (NATIVE, COCOTB)),
    ("lenet, 1 step, batch 64", [*_LENET, "--batch", "64", "--steps", "1"], (NATIVE, COCOTB)),
    ("lenet, 3 epochs, batch 64", [*_LENET, "--batch", "64", "--epochs", "3"], (NATIVE,)),
]
#: ``--methods``: every training method's full epochs, each on the datapath configuration
#: it needs, on the native harness
METHOD_CASES = [
    (f"{profile}, {model}, 1 epoch", [*base, "--profile", profile], (NATIVE,))
    for profile in ("wage", "nitro-d", "dfp16")
    for model, base in (("mlp-digits", _MLP), ("cnn-digits", _CNN))
]


def run(name: str, args: list[str]) -> tuple[dict, float]:
    out = ROOT / name
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, never a resumed one
    t0 = time.perf_counter()
    rc = nitihw(["train", *args, "--out", str(out), "--build-dir", str(MODELS)])
    if rc != 0:
        raise SystemExit(f"nitihw train {' '.join(args)} failed ({rc})")
    return json.loads((out / "result.json").read_text()), time.perf_counter() - t0


_built: dict = {}


def build(args: list[str], sim: str) -> float:
    """Build the model ``nitihw train ARGS --sim SIM`` needs, timed (once per model)."""
    from nitihw.sim.native import build_native
    from nitihw.sim.train_run import rtl_build
    from nitihw.sim.verify import build_datapath

    opts = vars(build_parser().parse_args(["train", *args, "--build-dir", str(MODELS)]))
    params, where = rtl_build(opts)
    key = (str(where), sim)
    if key not in _built:
        t0 = time.perf_counter()
        if sim == NATIVE:
            build_native(params, where)
        else:
            build_datapath({"cocotb-verilator": "verilator"}.get(sim, sim), params, where)
        _built[key] = time.perf_counter() - t0
    return _built[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=None, help="run only cases whose name contains this")
    ap.add_argument(
        "--methods",
        action="store_true",
        help="run the WAGE / NITRO-D / DFP16 cases (section 'rtl_methods') instead",
    )
    ap.add_argument(
        "--lenet-epochs",
        type=int,
        default=0,
        help="only LeNet/mnist5k, batch 64, 16x16, this many epochs (section 'rtl_lenet')",
    )
    ap.add_argument("--keep-builds", action="store_true", help="reuse earlier builds")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if not args.keep_builds:
        shutil.rmtree(MODELS, ignore_errors=True)  # build seconds of fresh builds
    cases = METHOD_CASES if args.methods else CASES
    section = "rtl_methods" if args.methods else "rtl_train"
    if args.lenet_epochs:
        epochs = str(args.lenet_epochs)
        cases = [(f"lenet, {epochs} epochs, batch 64", [*_LENET, "--epochs", epochs], (NATIVE,))]
        section = "rtl_lenet"
    rows = []
    for i, (name, targs, sims) in enumerate(cases):
        if args.only and args.only not in name:
            continue
        key = f"{section}{i}"
        gold, _ = run(f"{key}-golden", targs)
        rates = {}
        for sim in sims:
            build_s = build(targs, sim)
            rtl, total = run(f"{key}-rtl-{sim}", [*targs, "--backend", "rtl", "--sim", sim])
            cyc = rtl["cycles"]
            macs = sum(r["macs"] for r in cyc["by_layer_phase"])
            rate = cyc["total_cycles"] / rtl["seconds"]
            rates[sim] = rate
            epochs = [h["seconds"] for h in rtl["history"] if "seconds" in h]
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
                    " / ".join(f"{s:.0f}" for s in epochs) if epochs else "-",
                    f"{total:.0f}",
                    f"{build_s:.0f}",
                    f"{rate:,.0f}",
                    f"{macs / rtl['seconds']:,.0f}",
                    "",
                ]
            )
            print_table(HEADERS, rows[-1:])
        if NATIVE in rates and COCOTB in rates:
            native_row = next(r for r in rows if r[0] == name and r[2] == NATIVE)
            native_row[-1] = f"{rates[NATIVE] / rates[COCOTB]:.0f}x"
    print_table(HEADERS, rows)
    if args.no_write or not rows:
        return
    title = {
        "rtl_methods": "Other training methods on",
        "rtl_train": "Training on",
        "rtl_lenet": "The NITI LeNet run on",
    }[section]
    flag = {"rtl_methods": " --methods", "rtl_train": ""}.get(
        section, f" --lenet-epochs {args.lenet_epochs}"
    )
    body = (
        f"## {title} the simulated RTL against the golden model\n\n"
        f"`.venv/bin/python bench/rtl_train.py{flag}` (commit {git_rev()}, {machine()}). "
        "Each row: the same `nitihw train` (seed 0) with `--backend golden` and `--backend "
        "rtl --sim SIMULATOR`; evaluation on the golden model (same weights). *verilator*: "
        "the native harness (compiled Verilator model driven from C++, its Datapath "
        "instances sharing each large operation, one per core); *cocotb-verilator*: the "
        "cocotb testbench on Verilator. *train s*: the RTL training loop; *epoch s*: each "
        "epoch's loop; *total s*: the whole command (Verilog generation, simulator start, "
        "evaluation); *build s*: a fresh build of that simulator's model, timed apart. "
        "*model mismatches*: operations whose simulated cycles differ from the cycle model. "
        "*vs cocotb*: the native row's simulated cycles/s over cocotb-verilator's, same "
        "run.\n\n" + markdown_table(HEADERS, rows)
    )
    write_section(section, body)


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
    "epoch s",
    "total s",
    "build s",
    "cycles/s",
    "simulated MACs/s",
    "vs cocotb",
]

if __name__ == "__main__":
    main()
