"""``nitihw verify --coverage``: the regression, and separately a short training run, on
Verilator builds that count coverage; a report per block for each.

Each configuration's regression runs its testcases (:func:`nitihw.sim.simulate.verify.
regression_cases`) on a coverage build, once per seed, each seed's counts in its own file;
the files are merged into one :class:`~nitihw.sim.simulate.coverage.report.Summary`. The
training run is ``nitihw train --backend rtl --sim cocotb-verilator --coverage FILE`` (in a
process of its own) on the first configuration's array: the operations a real network asks
of the Datapath, which the regression may not.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nitihw.sim.simulate.coverage.report import Summary, read_counts, summarize

if TYPE_CHECKING:
    from nitihw.rtl.datapath import DatapathParams

#: the default training run: small enough for the cocotb testbench (about a minute at 4x4)
DEFAULT_TRAIN = "cnn-digits:digits"
DEFAULT_TRAIN_STEPS = 2
DEFAULT_TRAIN_BATCH = 16


@dataclass(frozen=True)
class TrainRun:
    """The training run whose coverage is reported: ``model`` on ``dataset``, ``steps``
    steps of ``batch`` (``nitihw train``'s names)."""

    model: str
    dataset: str
    steps: int = DEFAULT_TRAIN_STEPS
    batch: int = DEFAULT_TRAIN_BATCH

    @classmethod
    def parse(cls, text: str, steps: int, batch: int) -> TrainRun:
        """``MODEL:DATASET`` (``--coverage-train``)."""
        model, sep, dataset = text.partition(":")
        if not sep or not model or not dataset:
            raise ValueError(f"--coverage-train: expected MODEL:DATASET, got {text!r}")
        if steps < 1 or batch < 1:
            raise ValueError(
                f"--coverage-train-steps and --coverage-train-batch must be >= 1, "
                f"got {steps} and {batch}"
            )
        return cls(model, dataset, steps, batch)


@dataclass
class CoverageResult:
    """One report: ``summary``, the count files it merged, and whether every run in it
    passed (a failed test's coverage is reported, but the command fails)."""

    summary: Summary
    files: list
    passed: bool
    detail: str
    runs: list  # the regression's RunResults (none for a training run)


def regression_coverage(
    params: DatapathParams, seeds, out_dir: str | Path, log=print
) -> CoverageResult:
    """The regression of one configuration on its coverage build, every seed."""
    from nitihw.sim.simulate.verify import config_tag, regression_cases, run_datapath_tests

    tag = config_tag(params)
    build = Path(out_dir) / tag
    files, failed, runs = [], [], []
    for seed in seeds:
        log(f"coverage: {tag} regression, seed {seed} ...")
        dat = build / "coverage" / f"regression_seed{seed}.dat"
        dat.parent.mkdir(parents=True, exist_ok=True)
        r = run_datapath_tests(
            "verilator", params, seed, build, regression_cases(params), coverage=dat
        )
        runs.append(r)
        if not r.passed:
            failed.append(f"seed {seed}: {r.failed} of {r.tests} tests failed (see {r.build_dir})")
        if dat.exists():
            files.append(dat)
        elif r.passed:
            raise RuntimeError(f"the coverage build wrote no counts to {dat}")
    if not files:
        raise RuntimeError(f"no coverage counts for {tag}: " + "; ".join(failed))
    cases = ", ".join(regression_cases(params))
    seeds_text = ", ".join(str(s) for s in seeds)
    summary = summarize(read_counts(files), f"{tag} regression ({cases}; seeds {seeds_text})")
    return CoverageResult(summary, files, not failed, "; ".join(failed), runs)


def training_coverage(
    params: DatapathParams, run: TrainRun, out_dir: str | Path, log=print
) -> CoverageResult:
    """A short training run on the cocotb testbench, on ``params``' array (with the run's own
    accumulator and bank depth: a training run's Datapath), its counts in
    ``out_dir``/train/coverage.dat."""
    where = Path(out_dir) / "train"
    dat = where / "coverage.dat"
    argv = [
        "train",
        "--backend",
        "rtl",
        "--sim",
        "cocotb-verilator",
        "--model",
        run.model,
        "--dataset",
        run.dataset,
        "--steps",
        str(run.steps),
        "--batch",
        str(run.batch),
        "--array",
        f"{params.rows}x{params.cols}",
        "--build-dir",
        str(where / "build"),
        "--out",
        str(where / "run"),
        "--overwrite",
        "--coverage",
        str(dat),
    ]
    log(f"coverage: a training run, nitihw {' '.join(argv)}")
    dat.parent.mkdir(parents=True, exist_ok=True)
    dat.unlink(missing_ok=True)
    # a process of its own (the command line's role comes after the simulators'): its output
    # is the run's, as nitihw train prints it
    rc = subprocess.call([sys.executable, "-m", "nitihw", *argv])
    if not dat.exists():
        raise RuntimeError(f"the training run (exit {rc}) wrote no coverage counts to {dat}")
    title = (
        f"training run: {run.model} on {run.dataset}, {run.steps} steps of batch {run.batch}, "
        f"array {params.rows}x{params.cols}"
    )
    detail = "" if rc == 0 else f"nitihw train exited {rc}"
    return CoverageResult(summarize(read_counts([dat]), title), [dat], rc == 0, detail, [])
