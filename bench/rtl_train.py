"""The same training run on the golden model and on the simulated RTL, side by side.

For each case: ``nitihw train`` with ``--backend golden`` and with ``--backend rtl`` on each
of its simulators (same seed and settings): ``verilator``, the native harness
(:mod:`nitihw.sim.simulate.native`), and ``cocotb-verilator``, the cocotb testbench. Reports
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

from nitihw.sim.command.cli import build_parser
from nitihw.sim.command.cli import main as nitihw

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
    from nitihw.sim.command.train_run import rtl_build
    from nitihw.sim.simulate.native import build_native
    from nitihw.sim.simulate.verify import build_datapath

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
    ap.add_argument(
        "--harness",
        type=int,
        default=0,
        metavar="STEPS",
        help="only the native harness against itself: LeNet/mnist5k, batch 64, 16x16, this many "
        f"steps, with the code of commit {BEFORE} (before the netlist passes) and this tree's, "
        "each with the split over two instances and on one instance, rounds interleaved "
        "(section 'rtl_harness')",
    )
    ap.add_argument("--rounds", type=int, default=2, help="--harness: interleaved rounds")
    ap.add_argument(
        "--segments-record",
        default=None,
        metavar="DIR",
        help="write the segments checked by `nitihw train --segments ... --out DIR` (its "
        "segments.json) into docs/benchmarks.md (section 'rtl_lenet_segments')",
    )
    ap.add_argument("--keep-builds", action="store_true", help="reuse earlier builds")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if not args.keep_builds:
        shutil.rmtree(MODELS, ignore_errors=True)  # build seconds of fresh builds
    if args.harness:
        return compare_harness(args.harness, args.rounds, not args.no_write)
    if args.segments_record:
        return segments_record(Path(args.segments_record), not args.no_write)
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


def segments_record(out: Path, write: bool) -> None:
    """The segments of a ``nitihw train --segments`` run, as a table for the docs."""
    summary = json.loads((out / "segments.json").read_text())
    headers = ["epoch", "commit", "steps", "simulated cycles", "seconds", "machine"]
    headers += ["weights_sha256"]
    headers += ["golden's", "cycle-model mismatches", "host datapath ops"]
    rows = [
        [
            r["epoch"],
            r.get("commit", "82d49f6+"),  # the records made before they carried one
            r["steps"],
            f"{r['cycles']:,}",
            f"{r['seconds']:.0f}",
            r["host"],
            r["weights_sha256"][:16],
            "same" if r["matches_golden"] else "DIFFERS",
            r["model_mismatches"],
            r["datapath_ops"].get("host", 0),
        ]
        for r in summary["records"]
    ]
    print_table(headers, rows)
    if not write:
        return
    done, total = len(rows), summary["epochs"]
    proved = (
        f"All {total} segments match: the whole run on the RTL ends with golden's "
        f"weights_sha256 `{summary['golden_weights_sha256']}`."
        if summary["whole_run_proved"]
        else f"{done} of the {total} segments checked so far (the others: the same command "
        "with `--resume`, which reuses these)."
    )
    body = (
        "## The 30-epoch NITI LeNet run on the 16x16 RTL, in epoch segments\n\n"
        f"`nitihw train --model {summary['model']} --dataset {summary['dataset']} --epochs "
        f"{total} --batch {summary['batch']} --backend rtl --array {summary['array']} "
        f"--segments ...` (commit {summary['commit']}, {machine()}; segments on the embedded "
        "Dask cluster, one native instance each). Segment k resumes golden's checkpoint after "
        "epoch k-1 on the RTL and must end with golden's checkpoint after epoch k (weights "
        f"and every checkpoint array). {proved} *commit*: the code that computed the segment "
        "(82d49f6+: at 82d49f6 or a later commit of the same session that changed no path a "
        "segment takes; segments 11-30 ran in worker processes that loaded e7f217c as the run "
        "started, and their records, which then named the HEAD of the moment they were "
        "written, were corrected to it: since 4926b7b a record names the code its worker "
        "loaded). *seconds*: the epoch's training loop on one instance (segments 1 and 2 ran "
        "next to the test suite; 11-30 two at a time, next to other work on the same 2 "
        "cores).\n\n" + markdown_table(headers, rows)
    )
    write_section("rtl_lenet_segments", body)


#: ``--harness``'s baseline: the last commit before the netlist passes of issue 27
#: (Amaranth's own Verilog; the MAC array as it was); built with GCC it is the harness as it
#: was when issue 27 was filed (clang++ came with issue 27)
BEFORE = "1b64b43"
#: ``--harness``: (label, commit (None: this tree), nitihw train options, instances); the
#: first is the baseline
HARNESSES = [
    (
        "before ({rev}) built with GCC, 2 instances sharing each operation",
        BEFORE,
        ["--cxx", "gcc"],
        2,
    ),
    ("before ({rev}), 2 instances sharing each operation", BEFORE, [], 2),
    ("now, 2 instances sharing each operation", None, [], 2),
    (
        "now with Amaranth's netlist (--netlist amaranth), 2 instances",
        None,
        ["--netlist", "amaranth"],
        2,
    ),
    ("before ({rev}) built with GCC, 1 instance", BEFORE, ["--cxx", "gcc"], 1),
    ("now, 1 instance", None, [], 1),
]


def checkout(rev: str) -> Path:
    """A work tree of ``rev`` that imports as ``nitihw`` (``PYTHONPATH`` = the returned
    folder), made once under build/bench-rtl-train."""
    import subprocess

    top = ROOT / f"before-{rev}"
    tree = top / "nitihw"
    if not (tree / "__init__.py").is_file():
        shutil.rmtree(top, ignore_errors=True)
        top.mkdir(parents=True)
        repo = Path(__file__).resolve().parent.parent
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], check=True)
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "add", "--detach", "-f", str(tree), rev],
            check=True,
            capture_output=True,
        )
    return top


def run_at(name: str, args: list[str], rev: str | None) -> dict:
    """``nitihw train ARGS`` in a process of its own, with this tree's code or ``rev``'s (its
    own build folder: another netlist)."""
    import os
    import subprocess

    out = ROOT / name
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    models = MODELS
    if rev:
        env["PYTHONPATH"] = str(checkout(rev))
        models = ROOT / f"models-{rev}"
    cmd = [sys.executable, "-m", "nitihw", "train", *args, "--out", str(out)]
    rc = subprocess.call([*cmd, "--build-dir", str(models)], env=env, stdout=subprocess.DEVNULL)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({rc})")
    return json.loads((out / "result.json").read_text())


def compare_harness(steps: int, rounds: int, write: bool) -> None:
    """The same LeNet steps on the native harness of ``BEFORE`` and of this tree, rounds
    interleaved so that every row saw the same machine; the best round of each kept. Every
    run must end with golden's weights and the cycle model's cycles."""
    targs = [*_LENET, "--batch", "64", "--steps", str(steps)]
    gold, _ = run("harness-golden", targs)
    builds = {(rev, tuple(extra)) for _label, rev, extra, _n in HARNESSES}
    for rev, extra in sorted(builds, key=str):  # each build first, not timed
        run_at("harness-build", [*targs[:-1], "1", "--backend", "rtl", *extra], rev)
    best: dict[str, dict] = {}
    labels = [label.format(rev=BEFORE) for label, *_ in HARNESSES]
    for rnd in range(rounds):
        for label, (_l, rev, extra, n) in zip(labels, HARNESSES, strict=True):
            rtl = run_at(
                f"harness-{rnd}",
                [*targs, "--backend", "rtl", "--sim-instances", str(n), *extra],
                rev,
            )
            if rtl["weights_sha256"] != gold["weights_sha256"]:
                raise SystemExit(f"{label}: the RTL run's weights differ from golden's")
            if rtl["cycles"]["model_mismatches"]:
                raise SystemExit(f"{label}: cycles differ from the cycle model")
            rate = rtl["cycles"]["total_cycles"] / rtl["seconds"]
            print(f"round {rnd + 1}: {label}: {rate:,.0f} cycles/s", flush=True)
            if label not in best or rate > best[label]["rate"]:
                best[label] = {"rate": rate, "seconds": rtl["seconds"], "result": rtl}
    base = best[labels[0]]["rate"]  # the harness when issue 27 was filed
    cycles = best[labels[0]]["result"]["cycles"]["total_cycles"]
    headers = ["native harness", "train s", "cycles/s", "vs before", "LeNet epoch (63 steps)"]
    rows = []
    for label in labels:
        b = best[label]
        epoch = 63 * cycles / steps / b["rate"]
        rows.append(
            [
                label,
                f"{b['seconds']:.1f}",
                f"{b['rate']:,.0f}",
                f"{b['rate'] / base:.2f}",
                f"{epoch / 60:.1f} min",
            ]
        )
    print_table(headers, rows)
    if not write:
        return
    body = (
        "## The native harness against itself, side by side\n\n"
        f"`.venv/bin/python bench/rtl_train.py --harness {steps}` (commit {git_rev()}, "
        f"{machine()}). LeNet/mnist5k, batch 64, {steps} steps ({cycles:,} simulated cycles) "
        f"on the 16x16 Datapath, each way {rounds} times, rounds interleaved, each run a "
        "process of its own, the best kept; every run ends with golden's weights_sha256 "
        f"({gold['weights_sha256'][:16]}) and 0 cycle-model mismatches. *before*: commit "
        f"{BEFORE}, the code before the netlist passes (Amaranth's own Verilog), run from a "
        "work tree of that commit with its own build; *built with GCC*: the harness as it was "
        "when issue 27 was filed (the first row, the baseline). *now*: this tree, Verilog through "
        "`rtl/verilog.py`'s `NETLIST_PASSES`; *with Amaranth's netlist*: this tree's RTL "
        "written as Amaranth writes it (what the passes alone bring). *LeNet epoch*: 63 steps "
        "at that rate (the steps' cycles scaled).\n\n" + markdown_table(headers, rows)
    )
    write_section("rtl_harness", body)


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
