"""The ``nitihw`` command line."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from nitihw.golden import limits
from nitihw.golden.backend import AccumulatorOverflowError
from nitihw.golden.datasets import DatasetError
from nitihw.golden.errors import EXIT_INTERNAL, EXIT_USER, InternalError, UserError
from nitihw.golden.models import MODELS
from nitihw.golden.profiles import PROFILES
from nitihw.rtl.params import NETLISTS
from nitihw.sim.model.cycle_model import TILINGS, ArrayConfig
from nitihw.sim.model.estimate import TRAFFIC
from nitihw.sim.model.mapping import OBJECTIVES
from nitihw.sim.model.mapping.dataflow import DATAFLOWS
from nitihw.sim.model.workload import DEFAULT_TRAIN_SAMPLES
from nitihw.sim.model.workload import PROFILES as ESTIMATE_PROFILES
from nitihw.sim.simulate.coverage.run import (
    DEFAULT_TRAIN,
    DEFAULT_TRAIN_BATCH,
    DEFAULT_TRAIN_STEPS,
)

BACKENDS = ("golden", "rtl", "gpu")
#: ``nitihw train --sim``: the native harness, then the cocotb testbench on either simulator
RTL_SIMULATORS = ("verilator", "cocotb-verilator", "icarus")


def cmd_train(args) -> int:
    from nitihw.golden.checkpoint import CHECKPOINT_NAME
    from nitihw.golden.run_folder import (
        RunLock,
        check_output_file,
        check_run_folder,
        check_writable_dir,
        clear_run_folder,
    )
    from nitihw.golden.train import check_resume
    from nitihw.sim.command.train_run import (
        check_options,
        check_settings,
        default_out,
        launch_rtl_training,
        run_training,
    )

    opts = {k: v for k, v in vars(args).items() if k != "func"}
    opts["out"] = args.out = opts["out"] or default_out(opts)  # internal errors keep here
    out = Path(opts["out"])
    # the folders the checks below make (the run folder, and parents that are missing)
    made = [p for p in [out, *out.parents] if not p.exists()]
    if args.segments is not None:
        return _train_segments(opts, out, made)
    try:
        # settings, then output paths, then the dataset: all before any work starts
        settings = check_settings(opts)  # the array parsed here, once
        cfg = settings[0]
        check_run_folder(out, args.resume, args.overwrite)
        if args.resume:
            check_resume(out / CHECKPOINT_NAME, cfg)
        if args.json:
            check_output_file(Path(args.json), "--json", own=out)
        if args.backend == "rtl":
            check_writable_dir(Path(args.build_dir), "--build-dir")
        checked = check_options(opts, settings)
    except BaseException:
        for p in made:  # a refused run leaves nothing behind
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        raise
    try:
        with RunLock(out):
            if args.overwrite:
                gone = clear_run_folder(out)
                if gone:
                    print(
                        f"nitihw train: --overwrite: removed {', '.join(gone)} from {out}",
                        file=sys.stderr,
                    )
            if args.backend == "rtl":
                return launch_rtl_training(opts, checked)
            run_training(opts, checked=checked)
    except KeyboardInterrupt:
        saved = (out / CHECKPOINT_NAME).is_file()
        print(
            f"\ninterrupted: checkpoint saved in {out}; continue with --resume --out {out}"
            if saved
            else f"\ninterrupted before the first checkpoint: nothing to resume in {out}",
            file=sys.stderr,
        )
        return 130
    return 0


def _train_segments(opts: dict, out: Path, made: list[Path]) -> int:
    """``nitihw train --segments``: the run checked on the RTL epoch by epoch
    (:mod:`nitihw.sim.command.segments`). ``--resume`` reuses the segments already checked in
    ``out``, ``--overwrite`` checks them all again."""
    import shutil

    from nitihw.golden.run_folder import RunFolderError, RunLock, check_writable_dir
    from nitihw.sim.command.segments import SEGMENTS_NAME, parse_segments, run_segments
    from nitihw.sim.command.train_run import check_options, check_settings

    try:
        if opts["backend"] != "rtl" or opts.get("sim", "verilator") != "verilator":
            raise ValueError(
                "--segments checks a run on the native RTL: --backend rtl --sim verilator"
            )
        for flag in ("waves", "eval_on_rtl", "json"):
            if opts.get(flag):
                raise ValueError(f"--{flag.replace('_', '-')} does not apply to --segments")
        if opts["steps"] is not None:
            raise ValueError("--segments checks whole epochs: drop --steps")
        if opts["resume"] and opts["overwrite"]:
            raise RunFolderError("give --resume or --overwrite, not both")
        settings = check_settings(opts)
        parse_segments(opts["segments"], opts["epochs"])
        check_writable_dir(out, "--out")
        held = [p.name for p in (out / SEGMENTS_NAME, out / "segments") if p.exists()]
        if held and not (opts["resume"] or opts["overwrite"]):
            raise RunFolderError(
                f"--out {out} already holds segments ({', '.join(held)}): reuse the checked ones "
                "with --resume, check them all again with --overwrite, or choose another --out"
            )
        checked = check_options(opts, settings)
    except BaseException:
        for p in made:
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        raise
    with RunLock(out):
        if opts["overwrite"]:
            shutil.rmtree(out / "segments", ignore_errors=True)
            (out / SEGMENTS_NAME).unlink(missing_ok=True)
        return run_segments(opts, checked)


def _shape_list(text: str) -> list[tuple[int, int]]:
    arrays = [ArrayConfig.parse(part.strip(), name="--shapes") for part in text.split(",")]
    return [(a.rows, a.cols) for a in arrays]


def _int_list(text: str, what: str, key: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(
            f"bad {what} list {text!r}: expected integers separated by commas"
        ) from None
    return [limits.check(key, v, f"--{what} {v}") for v in values]


def cmd_verilog(args) -> int:
    from nitihw.golden.run_folder import check_output_dir
    from nitihw.rtl.datapath import DatapathParams
    from nitihw.rtl.verilog import write_verilog

    params = DatapathParams(
        rows=args.rows,
        cols=args.cols,
        operand_bits=args.operand_bits,
        accumulator_bits=args.accumulator_bits,
        guard_bits=args.guard_bits,
        kmax=args.kmax,
        b_bits=args.b_bits,
        divide=args.divide,
        result_rows=args.result_rows,
    )
    check_output_dir(Path(args.out))
    say = lambda msg: print(f"nitihw verilog: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    written = write_verilog(
        args.out, params, blocks=not args.top_only, log=say, netlist=args.netlist
    )
    for name, path in written.items():
        print(f"{name:20s} {path}")
    print(f"{'parameters':20s} {Path(args.out) / 'params.json'}")
    return 0


def cmd_verify(args) -> int:
    from nitihw.golden.files import atomic_write_bytes
    from nitihw.golden.run_folder import check_output_dir, check_output_file
    from nitihw.sim.simulate.verify import SIMULATORS, junit_xml, verify

    sims = [s.strip() for s in args.sims.split(",")]
    for s in sims:
        if s not in SIMULATORS:
            raise ValueError(f"unknown simulator {s!r}; choose from {', '.join(SIMULATORS)}")
    shapes = _shape_list(args.shapes)
    seeds = _int_list(args.seeds, "seeds", "seed")
    accumulator_bits = _int_list(args.accumulator_bits, "accumulator-bits", "accumulator_bits")
    check_output_dir(Path(args.out))
    if args.junit:
        check_output_file(Path(args.junit), "--junit", kind="xml")
    if args.coverage:
        return _verify_coverage(args, shapes, seeds, sims, accumulator_bits)
    results = verify(
        shapes,
        seeds,
        sims,
        accumulator_bits_list=accumulator_bits,
        waves=args.waves,
        out_dir=args.out,
        kmax=args.kmax,
        divide=args.divide,
        operand_bits=args.operand_bits,
        scheduler=args.scheduler,
        workers=args.workers,
    )
    if args.junit:
        atomic_write_bytes(Path(args.junit), junit_xml(results))
        print(f"JUnit XML: {args.junit}")
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    print(f"logs and waveforms: {args.out}")
    return 1 if failed else 0


def _verify_coverage(args, shapes, seeds, sims, accumulator_bits) -> int:
    """``nitihw verify --coverage``: each configuration's regression, then the training run,
    on coverage builds; a report per block for each."""
    from nitihw.golden.files import atomic_write_bytes, atomic_write_json
    from nitihw.sim.simulate.coverage.report import format_summary, junit_cases
    from nitihw.sim.simulate.coverage.run import TrainRun, regression_coverage, training_coverage
    from nitihw.sim.simulate.verify import config_tag, format_table, junit_xml, regression_configs

    if "verilator" not in sims:
        raise ValueError("--coverage is counted by Verilator: give --sims verilator")
    if args.waves or args.workers or args.scheduler:
        raise ValueError("--coverage runs its builds one after another, without --waves")
    train = None
    if args.coverage_train != "none":
        train = TrainRun.parse(
            args.coverage_train, args.coverage_train_steps, args.coverage_train_batch
        )
    if sims != ["verilator"]:
        print(
            "nitihw verify --coverage: the regression runs on verilator only (coverage is "
            "Verilator's)"
        )
    configs = regression_configs(
        shapes, accumulator_bits, args.kmax, args.divide, args.operand_bits
    )
    out = Path(args.out)
    reports, cases, runs = [], [], []
    for params in configs:
        res = regression_coverage(params, seeds, out)
        runs += res.runs
        reports.append(("regression", config_tag(params), res))
    if train is not None:
        reports.append(
            ("training", config_tag(configs[0]), training_coverage(configs[0], train, out))
        )
    failed = False
    for kind, tag, res in reports:
        print()
        print(format_summary(res.summary))
        if not res.passed:
            print(f"FAILED: {res.detail}")
            failed = True
        if kind == "regression" and res.summary.unexplained:
            print(
                f"FAILED: {len(res.summary.unexplained)} lines or branches neither reached "
                "nor explained"
            )
            failed = True
        cases += junit_cases(res.summary, f"nitihw.coverage.{kind}.{tag}", kind == "regression")
    if runs:
        print()
        print(format_table(runs))
    report = [
        {
            "kind": kind,
            "config": tag,
            "passed": res.passed,
            "files": [str(f) for f in res.files],
            **res.summary.as_dict(),
        }
        for kind, tag, res in reports
    ]
    atomic_write_json(out / "coverage.json", report)
    print(f"coverage report: {out / 'coverage.json'}")
    if args.junit:
        atomic_write_bytes(Path(args.junit), junit_xml(runs, cases))
        print(f"JUnit XML: {args.junit}")
    return 1 if failed else 0


def cmd_estimate(args) -> int:
    from nitihw.golden.run_folder import check_output_dir
    from nitihw.sim.model.accelerator import PNR_CLOCK, load_accelerator, with_clock
    from nitihw.sim.model.estimate import estimate, format_estimate, write_reports
    from nitihw.sim.model.importers import file_workload
    from nitihw.sim.model.workload import model_workload

    sources = [x for x in (args.model, args.topology, args.onnx, args.torch) if x is not None]
    if len(sources) != 1:
        raise ValueError(
            "give exactly one of --model NAME, --topology FILE.csv, --onnx MODEL.onnx or "
            "--torch MODULE:FACTORY"
        )
    check_output_dir(Path(args.out))
    acc = load_accelerator(args.config, args.energy)
    if args.array:
        acc = acc.with_array(args.array)
    if args.clock:
        acc = with_clock(acc, args.clock)
    if acc.clock == PNR_CLOCK:
        from nitihw.sim.explore.synth.clock import resolve_clock

        acc = resolve_clock(
            acc,
            args.profile,
            log=lambda msg: print(f"nitihw estimate: {msg}", file=sys.stderr, flush=True),
        )
    if args.sram == "cacti":
        from nitihw.sim.model.cacti import with_cacti

        acc = with_cacti(
            acc,
            args.cacti_python,
            log=lambda msg: print(f"nitihw estimate: {msg}", file=sys.stderr, flush=True),
        )
    samples = args.train_samples
    if args.model:
        layers = model_workload(args.model, args.batch)
        name = args.model
        if samples is None:
            samples = DEFAULT_TRAIN_SAMPLES.get(args.model, args.batch)
    else:
        if args.topology:
            layers = file_workload(args.topology, args.batch)
            name = Path(args.topology).name
        elif args.onnx:
            from nitihw.sim.model.importers.onnx_graph import onnx_workload

            layers, name = onnx_workload(args.onnx, args.batch), Path(args.onnx).name
        else:
            from nitihw.sim.model.importers.torch_graph import torch_workload

            layers, name = torch_workload(args.torch, args.batch, args.input_shape)
        if samples is None:
            samples = args.batch
    result = estimate(
        layers,
        acc,
        args.batch,
        samples,
        name,
        args.profile,
        args.dataflow,
        args.traffic,
        args.objective,
    )
    print(format_estimate(result))
    files = write_reports(result, args.out, plots=not args.no_plots)
    print(f"reports: {', '.join(f.name for f in files)} in {args.out}")
    return 0


def cmd_synth(args) -> int:
    from nitihw.golden.files import atomic_write_json
    from nitihw.golden.run_folder import check_output_dir, check_output_file
    from nitihw.sim.explore.synth import format_report, synthesize
    from nitihw.sim.explore.synth.report import check_target

    check_target(args.target)
    if args.pnr and args.target != "ecp5":
        raise ValueError("--pnr places and routes on the ECP5: give --target ecp5")
    if args.pnr and args.verilog is not None:
        raise ValueError("--pnr builds its own top around the Datapath: give --rows and --cols")
    check_output_dir(Path(args.out))
    if args.json:
        check_output_file(Path(args.json), "--json")
    params = None
    if args.verilog is None:
        if args.rows is None or args.cols is None:
            raise ValueError("give --rows and --cols (or --verilog DIR)")
        from nitihw.rtl.datapath import DatapathParams

        params = DatapathParams(
            rows=args.rows,
            cols=args.cols,
            operand_bits=args.operand_bits,
            accumulator_bits=args.accumulator_bits,
            kmax=args.kmax,
            divide=args.divide,
            result_rows=args.result_rows,
        )
    if args.pnr:
        from nitihw.sim.explore.synth.pnr import nextpnr_command

        nextpnr_command()  # fails early, with the install hint
    report = synthesize(
        args.target,
        params=params,
        verilog_dir=args.verilog,
        out_root=args.out,
        blocks=not args.no_blocks,
        force=args.force,
        timeout=args.timeout,
    )
    print(format_report(report))
    if args.pnr:
        from nitihw.sim.explore.synth.pnr import format_pnr, place_and_route

        report["pnr"] = place_and_route(params, Path(args.out), timeout=args.timeout)
        print(format_pnr(report["pnr"]))
    json_path = Path(args.json) if args.json else Path(args.out) / report["design"] / "synth.json"
    atomic_write_json(json_path, report)
    print(f"report: {json_path}")
    return 1 if report["failed"] else 0


class _Parser(argparse.ArgumentParser):
    """One line on stderr and exit 2 for a bad command line (no usage block): the line names
    the option, the value and the limit."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Renamed(argparse.Action):
    """An option with a new name and its old one (``--operand-bits``, formerly ``--operand-bits``):
    the old one keeps working, with a note on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string != self.option_strings[0]:
            print(
                f"nitihw: note: {option_string} is now {self.option_strings[0]} (the same "
                "option everywhere); the old name keeps working",
                file=sys.stderr,
            )
        setattr(namespace, self.dest, values)


def _width_option(p, name: str, former: str, **kw) -> None:
    """``--operand-bits`` or ``--accumulator-bits``: one name on every command, the former one
    (``--op-bits``, ``--acc-bits``) kept, with a note."""
    p.add_argument(f"--{name}", f"--{former}", dest=name.replace("-", "_"), action=_Renamed, **kw)


class _Help(argparse.RawDescriptionHelpFormatter):
    """Help that shows every option's default (unless its text already says it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        hidden = default is None or default is False or default == argparse.SUPPRESS
        if "default" not in text and not hidden and action.option_strings:
            text += f" (default: {default})"
        return text


def cmd_sweep(args) -> int:
    from nitihw.golden.run_folder import check_output_dir
    from nitihw.sim.cluster import check_scheduler
    from nitihw.sim.explore.sweep import load_grid
    from nitihw.sim.explore.sweep.report import frame, summary, write_results
    from nitihw.sim.explore.sweep.run import SweepFolder, run_sweep

    grid = load_grid(args.grid, args.onnx)  # every check, before anything runs (fast: the
    # points are made as they are needed)
    # the address, and a Dask scheduler answering there, checked before any work (5 s at most)
    scheduler = check_scheduler(args.scheduler) if args.scheduler else None
    out = Path(args.out)
    check_output_dir(out)
    n = args.workers
    count = "one worker per core" if n is None else f"{n} worker" + ("s" if n != 1 else "")
    where = scheduler or f"an embedded Dask cluster ({count})"
    if args.workers == 0 and not scheduler:
        where = "this process (--workers 0)"
    print(
        f"nitihw sweep: {len(grid.points):,} points of {', '.join(grid.compute)} from "
        f"{args.grid}, on {where}; results in {args.out}",
        file=sys.stderr,
        flush=True,
    )
    # one sweep writes the folder at a time, and it holds this grid's sweep (or --overwrite)
    with SweepFolder(out, grid, overwrite=args.overwrite) as folder:
        rows = run_sweep(grid, out, scheduler, args.workers, folder=folder)
        df = frame(rows)
        files = write_results(df, out, plots=not args.no_plots)
    print(summary(df))
    print(f"results: {', '.join(f.name for f in files)} in {args.out}")
    if len(df) and (df["error"] != "").all():  # nothing worked: the sweep failed
        return 1
    # an RTL point that disagrees with the golden model fails the sweep, as verify would
    if "rtl_bit_exact" in df and not df.loc[df["error"] == "", "rtl_bit_exact"].all():
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="nitihw",
        description="Bit-exact simulator and RTL reference for integer-only (NITI) training.",
        formatter_class=_Help,
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name, **kw):
        c = sub.add_parser(name, formatter_class=_Help, **kw)
        c.add_argument(
            "--debug",
            action="store_true",
            help="print the traceback of an internal error on stderr (it is also kept in the "
            "run folder)",
        )
        return c

    for add in (
        _train_command,
        _verilog_command,
        _verify_command,
        _prove_command,
        _estimate_command,
        _synth_command,
        _sweep_command,
    ):
        add(command)
    return p


def _train_command(command) -> None:
    """``nitihw train`` and its options (``command`` makes the sub-parser)."""
    t = command("train", help="train a model with integer-only arithmetic (or its float32 twin)")
    t.add_argument("--model", required=True, choices=sorted(MODELS), help="the network")
    t.add_argument(
        "--dataset",
        required=True,
        help="digits | mnist5k | mnist:DIR | fashion-mnist:DIR | cifar10:DIR",
    )
    t.add_argument("--backend", default="golden", choices=BACKENDS, help="where the GEMMs run")
    t.add_argument(
        "--profile",
        default="niti",
        choices=sorted(PROFILES),
        help="numerics profile: niti (default), niti-ref, niti-2020; niti-compat reproduces "
        "NITI's 2021 code, float32 quirks included (docs/numerics.md); wage and nitro-d adapt "
        "the model to those methods; float32 trains the float twin; dfp16 its DFP16 form "
        "(16-bit integer GEMMs)",
    )
    _train_method_options(t)
    _train_folder_options(t)
    _train_datapath_options(t)
    t.set_defaults(func=cmd_train)


def _train_method_options(t) -> None:
    """``nitihw train``: the method and its numerics (epochs, batch, seed, mu, widths,
    overflow, the float twin's SGD)."""
    t.add_argument("--epochs", type=limits.arg("epochs"), default=1, help="epochs to train")
    t.add_argument("--batch", type=limits.arg("batch"), default=64, help="mini-batch size")
    t.add_argument(
        "--seed", type=limits.arg("seed"), default=0, help="initial weights and batch order"
    )
    t.add_argument(
        "--mu",
        default=None,
        help="learning rate in bits per epoch, e.g. '5,4@100,3@150' (default: the model's; "
        "wage: log2 lr, default '3,0@20,-3@25'; nitro-d: log2 lr_inv, default '9')",
    )
    t.add_argument(
        "--steps", type=limits.arg("steps"), default=None, help="stop after N steps in total"
    )
    t.add_argument(
        "--weight-bits",
        type=int,
        default=8,
        choices=(8, 16),
        help="16: keep 16-bit master weights with 8 fraction bits",
    )
    t.add_argument(
        "--operand-bits",
        type=limits.arg("train_operand_bits"),
        default=8,
        help="niti profiles: activations, errors and weights in +-(2^(b-1) - 1), shifts "
        "max(bitwidth - (b - 1), 0) (numerics.md §2)",
    )
    _width_option(
        t,
        "accumulator-bits",
        "acc-bits",
        type=limits.arg("accumulator_bits"),
        default=32,
        help="accumulator width in bits",
    )
    t.add_argument(
        "--overflow",
        default=None,
        choices=("error", "wrap"),
        help="on accumulator overflow: stop or wrap and count (default: stop; nitro-d wraps, "
        "as its reference's int32 arithmetic does)",
    )
    t.add_argument("--lr", type=limits.arg("lr"), default=0.05, help="float32 twin: learning rate")
    t.add_argument(
        "--momentum", type=limits.arg("momentum"), default=0.9, help="float32 twin: SGD momentum"
    )
    t.add_argument(
        "--weight-decay",
        type=limits.arg("weight_decay"),
        default=0.0,
        help="float32 twin: weight decay",
    )


def _train_folder_options(t) -> None:
    """``nitihw train``: the run folder (--out, --json, --resume, --checkpoint-every,
    --overwrite)."""
    t.add_argument(
        "--out",
        default=None,
        help="run folder for checkpoints and result.json "
        "(default: runs/MODEL-DATASET-PROFILE-sSEED)",
    )
    t.add_argument("--json", default=None, help="also write the result record here")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument(
        "--checkpoint-every",
        type=limits.arg("checkpoint_every"),
        default=0,
        help="also write the checkpoint every N steps, for long epochs (default 0: at the end "
        "of each epoch, and on Ctrl-C)",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out (without it, a folder that holds a run is refused)",
    )


def _train_datapath_options(t) -> None:
    """``nitihw train``: where the datapath runs (the array, the simulators, threads, builds
    and segments)."""
    t.add_argument(
        "--array",
        default="8x8",
        type=ArrayConfig.arg,
        help="datapath array ROWSxCOLS (1..256 each): simulated with --backend rtl; on the "
        "other backends, the array the cycle model reports for",
    )
    t.add_argument(
        "--kmax", type=limits.arg("kmax"), default=256, help="datapath operand buffer depth"
    )
    t.add_argument(
        "--tiling",
        default="searched",
        choices=TILINGS,
        help="how each GEMM is cut into tiles and in what order: searched (the mapping with "
        "the fewest off-chip bytes on the default accelerator's buffers, which the "
        "estimates price; partial sums of long K wait in the result buffer) or whole (one "
        "buffer tile: column tiles, row tiles, the whole of K each); the values are the "
        "same, the cycles the mapping's (docs/estimate.md)",
    )
    t.add_argument(
        "--objective",
        default="traffic",
        choices=OBJECTIVES,
        help="--tiling searched: what each GEMM's mapping minimises, as nitihw estimate "
        "--objective (traffic, energy or time)",
    )
    for name in ("ifmap", "filter"):
        t.add_argument(
            f"--{name}-kib",
            type=limits.arg("buffer_kib"),
            default=None,
            help=f"--tiling searched: the {name} buffer the mappings fit in, KiB (default: "
            "the default accelerator's, 64)",
        )
    t.add_argument(
        "--sim",
        default="verilator",
        choices=RTL_SIMULATORS,
        help="--backend rtl: verilator (the native harness: compiled Verilator model, "
        "default), cocotb-verilator or icarus (the cocotb testbench; much slower)",
    )
    t.add_argument(
        "--threads",
        type=limits.arg("threads"),
        default=None,
        help="--backend golden: worker threads (default: measured every 256 steps, one per "
        "CPU core (at most 4) or one, whichever is faster now); BLAS itself runs "
        "single-threaded; the bits do not depend on it (docs/golden_speed.md)",
    )
    t.add_argument(
        "--sim-instances",
        type=limits.arg("sim_instances"),
        default=0,
        help="--sim verilator: simulated Datapaths that share each large operation, in "
        "threads (default 0: one per CPU core); results and cycles are one Datapath's",
    )
    t.add_argument(
        "--cxx",
        default="auto",
        choices=("auto", "clang", "gcc"),
        help="--sim verilator: the C++ compiler of the native model (auto: clang++ where "
        "installed, its model runs about 1.1x faster; the same bits and cycles)",
    )
    t.add_argument(
        "--netlist",
        default="optimized",
        choices=NETLISTS,
        help="--sim verilator: the Verilog simulated (optimized: after Yosys's logic-preserving "
        "clean-ups, about 1.7x faster at 16x16; amaranth: as Amaranth writes it, to check "
        "them against; the same bits and cycles)",
    )
    t.add_argument(
        "--waves",
        action="store_true",
        help="--backend rtl: record a VCD waveform of the whole run (datapath.vcd in --out; large)",
    )
    t.add_argument(
        "--coverage",
        metavar="FILE",
        help="--backend rtl --sim cocotb-verilator: build the Datapath with Verilator's line, "
        "toggle and functional coverage and write its counts to FILE (Verilator's "
        "coverage.dat format; nitihw verify --coverage reports them per block)",
    )
    t.add_argument(
        "--eval-on-rtl",
        action="store_true",
        help="--backend rtl: simulate the test-set evaluation too (default: the golden "
        "model evaluates the same weights, bit for bit, faster)",
    )
    t.add_argument("--build-dir", default="build/rtl", help="--backend rtl: Verilog and models")
    t.add_argument(
        "--segments",
        default=None,
        metavar="EPOCHS",
        help="--backend rtl: check the run on the RTL in epoch segments (e.g. 1-30): segment k "
        "resumes golden's checkpoint after epoch k-1 and must end with golden's after epoch k; "
        "segments run side by side on Dask (docs/simulation.md)",
    )
    _executor_options(t, "--segments: ", "one segment after another in this process")


def _verilog_command(command) -> None:
    """``nitihw verilog`` and its options (``command`` makes the sub-parser)."""
    v = command("verilog", help="write the Verilog of the Datapath and its blocks")
    _datapath_options(v)
    v.add_argument(
        "--guard-bits",
        type=limits.arg("guard_bits"),
        default=8,
        help="extra bits for exact overflow flags",
    )
    v.add_argument(
        "--b-bits",
        type=limits.arg("b_bits"),
        default=None,
        help="B operand width: 8, 16 or 32 (default: --operand-bits; 32 for NITRO-D)",
    )
    v.add_argument(
        "--result-rows",
        type=limits.arg("result_rows"),
        default=None,
        help="result buffer rows of COLS accumulators (default 65536 / COLS: 256 KiB; 0: none)",
    )
    v.add_argument("--top-only", action="store_true", help="only datapath.v, not the blocks")
    v.add_argument(
        "--netlist",
        default="optimized",
        choices=NETLISTS,
        help="optimized: Amaranth's netlist through Yosys's logic-preserving clean-ups (what "
        "the simulators run); amaranth: as Amaranth writes it",
    )
    v.add_argument("--out", required=True, help="output folder")
    v.set_defaults(func=cmd_verilog)


def _verify_command(command) -> None:
    """``nitihw verify`` and its options (``command`` makes the sub-parser)."""
    r = command(
        "verify",
        help="RTL regression: cocotb testbenches against the golden "
        "model over array shapes, seeds and simulators",
    )
    r.add_argument("--shapes", default="2x2,4x4,8x8", help="array shapes, e.g. 2x2,4x4,8x8")
    r.add_argument("--seeds", default="0", help="seeds, e.g. 0,1,2")
    r.add_argument("--sims", default="verilator,icarus", help="verilator and/or icarus")
    _width_option(
        r,
        "accumulator-bits",
        "acc-bits",
        default="32,16",
        help="accumulator widths (16 adds the accumulator-limit test)",
    )
    r.add_argument(
        "--kmax", type=limits.arg("kmax"), default=32, help="operand buffer depth of the builds"
    )
    _width_option(
        r,
        "operand-bits",
        "op-bits",
        type=limits.arg("operand_bits"),
        default=8,
        help="operand width of the builds: 2..8 (rescale lanes saturate at +-(2^(b-1) - 1)) "
        "or 16 (needs --accumulator-bits of 31 or more)",
    )
    r.add_argument("--waves", action="store_true", help="record waveforms (FST/VCD)")
    r.add_argument(
        "--divide",
        action="store_true",
        help="NITRO-D builds: 32-bit B operands and the divide lanes (adds their test)",
    )
    r.add_argument("--out", default="build/verify", help="build and results folder")
    r.add_argument("--junit", default=None, help="also write the results as JUnit XML here")
    r.add_argument(
        "--workers",
        type=limits.arg("sweep_workers"),
        default=None,
        help="run the configurations on an embedded Dask cluster of N processes (default: "
        "one after another in this process)",
    )
    r.add_argument(
        "--scheduler",
        default=None,
        help="run the configurations on a running Dask scheduler, e.g. tcp://HOST:8786",
    )
    r.add_argument(
        "--coverage",
        action="store_true",
        help="run the regression on Verilator builds that count line, branch, toggle and "
        "functional coverage, and a short training run likewise; report per block what "
        "each exercised and what it never reached (OUT/coverage.json; figures in --junit). "
        "Fails if a line or branch is neither reached by the regression nor explained",
    )
    r.add_argument(
        "--coverage-train",
        default=DEFAULT_TRAIN,
        metavar="MODEL:DATASET",
        help="--coverage: the training run (none: no training run) (default: %(default)s)",
    )
    r.add_argument(
        "--coverage-train-steps",
        type=int,
        default=DEFAULT_TRAIN_STEPS,
        help="--coverage: its steps (default: %(default)s)",
    )
    r.add_argument(
        "--coverage-train-batch",
        type=int,
        default=DEFAULT_TRAIN_BATCH,
        help="--coverage: its batch (default: %(default)s)",
    )
    r.set_defaults(func=cmd_verify)


def _estimate_command(command) -> None:
    """``nitihw estimate`` and its options (``command`` makes the sub-parser)."""
    e = command(
        "estimate",
        help="cycles, memory traffic and energy of one integer "
        "training step (and an epoch), per layer and phase",
    )
    e.add_argument("--model", choices=sorted(MODELS), help="a built-in model")
    e.add_argument("--topology", help="a SCALE-Sim topology CSV (conv or GEMM format)")
    e.add_argument(
        "--onnx",
        metavar="MODEL.onnx",
        help="your own network as ONNX (Conv, Gemm, MatMul, ReLU, pooling, residual Add, "
        "BatchNormalization folded; docs/estimate.md): its whole training step is priced",
    )
    e.add_argument(
        "--torch",
        metavar="MODULE:FACTORY",
        help="your own PyTorch network: FACTORY() in MODULE returns an nn.Module whose "
        "example_input (attribute), or --input-shape, gives one sample's shape; exported "
        "to ONNX in memory (needs torch)",
    )
    e.add_argument(
        "--input-shape",
        metavar="C,H,W",
        help="--torch: one sample's input shape, when the module has no example_input",
    )
    e.add_argument("--batch", type=limits.arg("batch"), default=64, help="mini-batch size")
    e.add_argument(
        "--array",
        default=None,
        type=ArrayConfig.arg,
        help="ROWSxCOLS, 1..256 each (default: the config's array, 8x8)",
    )
    e.add_argument("--config", default=None, help="accelerator TOML file (see docs/estimate.md)")
    e.add_argument(
        "--clock",
        default=None,
        metavar="MHZ|pnr",
        help="the clock: a frequency in MHz, or pnr: the Fmax of this array's Datapath placed "
        "and routed on an ECP5 (minutes the first time, then cached in build/pnr-clock) "
        "(default: the config's [clock], else 500 MHz)",
    )
    e.add_argument(
        "--energy",
        default=None,
        help="energy table: a shipped name (horowitz-45nm, the default) or a TOML file",
    )
    e.add_argument(
        "--sram",
        choices=("table", "cacti"),
        default="table",
        help="what prices the buffers: the energy table's SRAM points, interpolated (default), "
        "or CACTI 7 at each buffer's size and port width (hwcomponents-cacti in its own venv: "
        "--cacti-python; docs/estimate.md)",
    )
    e.add_argument(
        "--cacti-python",
        metavar="PYTHON",
        help="--sram cacti: the Python of a venv with hwcomponents-cacti (default: "
        "$NITIHW_CACTI_PYTHON); answers are cached in build/cacti",
    )
    e.add_argument(
        "--train-samples",
        type=limits.arg("train_samples"),
        default=None,
        help="training-set size for the per-epoch totals (default: the model's "
        "dataset; one batch for a topology, ONNX or PyTorch network)",
    )
    e.add_argument(
        "--profile",
        default="niti",
        choices=ESTIMATE_PROFILES,
        help="the training method priced: niti (default), wage, nitro-d, or dfp16 (16-bit "
        "GEMMs, float32 elsewhere)",
    )
    e.add_argument(
        "--dataflow",
        default="os",
        choices=DATAFLOWS,
        help="the array's dataflow: os (output stationary, the Datapath's; cycles checked "
        "against the RTL), ws or is (weight or input stationary: no RTL, SCALE-Sim 3.0's "
        "cycles; docs/estimate.md)",
    )
    e.add_argument(
        "--traffic",
        default="datapath",
        choices=TRAFFIC,
        help="the off-chip traffic that prices energy and stalls: datapath (the mapping each "
        "GEMM runs with on the Datapath, whose cycles are priced too), searched (the best "
        "mapping of the real tensors, any tile), fixed (the one loop order of the estimates "
        "before); the reports show all three and the lower bound (docs/estimate.md)",
    )
    e.add_argument(
        "--objective",
        default="traffic",
        choices=OBJECTIVES,
        help="what each GEMM's mapping minimises: traffic (off-chip bytes, default), energy "
        "(their energy and the partial sums' result-buffer energy) or time (the array's "
        "cycles with the stalls); the Datapath runs the mapping it picks",
    )
    e.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    e.add_argument("--out", required=True, help="folder for the reports")
    e.set_defaults(func=cmd_estimate)


def _prove_command(command) -> None:
    """``nitihw prove`` and its options (``command`` makes the sub-parser)."""
    v = command(
        "prove",
        help="formal proofs of the Datapath's blocks against docs/numerics.md for every input "
        "(SymbiYosys and Yices; docs/prove.md)",
    )
    v.add_argument(
        "--blocks",
        default="all",
        help="rescale, update, range, control, or all (comma-separated)",
    )
    v.add_argument("--out", default="build/prove", help="work folder (one per harness)")
    v.add_argument("--json", default=None, help="write the results here as JSON")
    v.add_argument("--junit", default=None, help="write JUnit XML here")
    v.add_argument(
        "--timeout",
        type=limits.arg("timeout"),
        default=None,
        help="give up on a task after this many s (reported as TIMEOUT)",
    )
    v.add_argument(
        "--mutant",
        default=None,
        help="run the proofs on a broken copy of a block (they must fail): "
        + ", ".join(sorted(_mutant_names())),
    )
    v.set_defaults(func=cmd_prove)


def _mutant_names():
    from nitihw.sim.prove.mutants import MUTANTS

    return MUTANTS


def cmd_prove(args) -> int:
    import json

    from nitihw.golden.files import atomic_write_bytes
    from nitihw.golden.run_folder import check_output_dir, check_output_file
    from nitihw.sim.prove.mutants import MUTANTS
    from nitihw.sim.prove.run import check_tools, harnesses_for, junit_xml, prove

    blocks = [b.strip() for b in args.blocks.split(",") if b.strip()]
    mutant = None
    if args.mutant is not None:
        if args.mutant not in MUTANTS:
            raise ValueError(
                f"unknown --mutant {args.mutant!r}; choose from {', '.join(sorted(MUTANTS))}"
            )
        mutant = MUTANTS[args.mutant]
        blocks = [mutant.block] if blocks == ["all"] else blocks
    harnesses = harnesses_for(blocks)
    check_output_dir(Path(args.out))
    for flag, path, kind in (("--json", args.json, "json"), ("--junit", args.junit, "xml")):
        if path:
            check_output_file(Path(path), flag, kind=kind)
    check_tools()
    what = f" on the mutant {mutant.name} ({mutant.what})" if mutant else ""
    print(f"nitihw prove: {len(harnesses)} harnesses{what}, work in {args.out}", flush=True)
    results = prove(harnesses, Path(args.out), args.timeout, mutant)
    failed = [r.label for r in results if not r.passed]
    print(
        f"nitihw prove: {len(results) - len(failed)} of {len(results)} harnesses proven"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    if args.json:
        body = {"mutant": args.mutant, "results": [r.as_dict() for r in results]}
        atomic_write_bytes(Path(args.json), (json.dumps(body, indent=1) + "\n").encode())
    if args.junit:
        atomic_write_bytes(Path(args.junit), junit_xml(results))
    return 1 if failed else 0


def _synth_command(command) -> None:
    """``nitihw synth`` and its options (``command`` makes the sub-parser)."""
    y = command(
        "synth",
        help="synthesis report (Yosys): cells, flip-flops, multipliers, memories, "
        "transistors and the longest path of the Datapath and of each block",
    )
    _datapath_options(y, required=False)
    y.add_argument("--target", default="generic", help="generic, xilinx or ecp5")
    y.add_argument(
        "--verilog",
        default=None,
        help="synthesise the Verilog in this folder (datapath.v and its blocks, as nitihw "
        "verilog writes them) instead of generating it",
    )
    y.add_argument("--no-blocks", action="store_true", help="only the Datapath, not each block")
    y.add_argument(
        "--pnr",
        action="store_true",
        help="also place and route the Datapath on a Lattice ECP5 LFE5U-85F (nextpnr; needs "
        "--target ecp5): LUT4s, flip-flops, multipliers, block RAMs, Fmax, critical path",
    )
    y.add_argument(
        "--result-rows",
        type=limits.arg("result_rows"),
        default=None,
        help="rows of the Datapath's result buffer (default: the schedule's; fewer to fit a "
        "small FPGA)",
    )
    y.add_argument("--out", default="build/synth", help="work and cache folder")
    y.add_argument("--json", default=None, help="write the report here (default: under --out)")
    y.add_argument("--force", action="store_true", help="rerun Yosys even when cached")
    y.add_argument(
        "--timeout",
        type=limits.arg("timeout"),
        default=None,
        help="give up on a Yosys run after this many s",
    )
    y.set_defaults(func=cmd_synth)


def _sweep_command(command) -> None:
    """``nitihw sweep`` and its options (``command`` makes the sub-parser)."""
    w = command(
        "sweep",
        help="co-design sweep: estimates over a grid of arrays, buffers, bandwidth, widths, "
        "methods and models, on Dask, with the Pareto front (docs/dse.md)",
    )
    w.add_argument("--grid", required=True, help="the grid TOML (axes and what to compute)")
    w.add_argument("--out", required=True, help="results folder (a rerun skips finished points)")
    w.add_argument(
        "--onnx",
        metavar="MODEL.onnx",
        help="your own network as ONNX, in place of the grid's model or topology axis (a "
        "grid's topology axis takes .onnx files too)",
    )
    _executor_options(w, "", "run in this process")
    w.add_argument("--no-plots", action="store_true", help="skip the PNG plot")
    w.add_argument("--overwrite", action="store_true", help="replace another grid's sweep")
    w.set_defaults(func=cmd_sweep)


def _executor_options(p, scope: str, inline: str) -> None:
    """``--scheduler`` and ``--workers``: the Dask executor of sweeps and segments
    (:func:`nitihw.sim.cluster.dask_client`); ``scope`` prefixes the help, ``inline`` says
    what ``--workers 0`` does."""
    p.add_argument(
        "--scheduler",
        default=None,
        help=f"{scope}a running Dask scheduler, e.g. tcp://HOST:8786 (default: an embedded "
        "cluster)",
    )
    p.add_argument(
        "--workers",
        type=limits.arg("sweep_workers"),
        default=None,
        help=f"{scope}embedded cluster's worker processes (default: one per core; 0: {inline})",
    )


def _datapath_options(p, required: bool = True) -> None:
    """The Datapath parameters of ``verilog`` and ``synth`` (limits: nitihw.golden.limits)."""
    default = 8 if required else None
    p.add_argument("--rows", type=limits.arg("rows"), default=default, help="PE rows (1..256)")
    p.add_argument("--cols", type=limits.arg("cols"), default=default, help="PE columns (1..256)")
    _width_option(
        p,
        "operand-bits",
        "op-bits",
        type=limits.arg("operand_bits"),
        default=8,
        help="operand width: 2..8 (rescale lanes saturate at +-(2^(b-1) - 1)) or 16",
    )
    _width_option(
        p,
        "accumulator-bits",
        "acc-bits",
        type=limits.arg("accumulator_bits"),
        default=32,
        help="accumulator width (8..48)",
    )
    p.add_argument(
        "--kmax", type=limits.arg("kmax"), default=256, help="operand buffer depth (1..65536)"
    )
    p.add_argument(
        "--divide",
        action="store_true",
        help="add the divide lanes (DIVIDE, UPDATE_DIV: NITRO-D's scaling and IntegerSGD)",
    )


def main(argv=None) -> int:
    """Run one command. A user error (bad input, a setting or a tool that cannot run) is one
    line on stderr and exit 2; anything else is an internal error, exit 70, with its traceback
    kept (:func:`report_internal_error`; :mod:`nitihw.golden.errors`)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a bad command line (one line printed) or --help
        return exc.code if isinstance(exc.code, int) else 2
    old_term = _term_as_interrupt()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\nnitihw: interrupted", file=sys.stderr)
        return 130
    except InternalError as exc:
        return report_internal_error(args, exc)
    except USER_ERRORS as exc:
        print(f"nitihw: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except OSError as exc:  # a file the command could not read or write
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"nitihw: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USER
    except Exception as exc:  # nobody expected it: nitihw's own fault
        return report_internal_error(args, exc)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _term_as_interrupt():
    """SIGTERM (``kill``, a batch system's stop) is handled as Ctrl-C: a run checkpoints its
    step and releases its lock. Returns the handler it replaced (None off the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _interrupt)


#: the exceptions that are the user's (exit 2): bad input and settings, tools that fail
USER_ERRORS = (UserError, ValueError, DatasetError, FileNotFoundError, AccumulatorOverflowError)


def report_internal_error(args, exc: BaseException) -> int:
    """Say that ``exc`` is nitihw's fault, not the user's; keep its traceback in the command's
    ``--out`` folder (``internal-error.txt``, written atomically) when there is one, and print
    it with ``--debug``. Returns the exit status, 70."""
    import traceback

    from nitihw.golden.files import atomic_write_bytes
    from nitihw.golden.run_folder import TRACEBACK_NAME

    text = "".join(traceback.format_exception(exc))
    kept = ""
    out = getattr(args, "out", None)
    if out and Path(out).is_dir():
        path = Path(out) / TRACEBACK_NAME
        try:
            atomic_write_bytes(path, f"nitihw {' '.join(sys.argv[1:])}\n{text}".encode())
            kept = f"; traceback in {path}"
        except OSError:
            pass
    if getattr(args, "debug", False):
        sys.stderr.write(text)
    what = str(exc) if isinstance(exc, InternalError) else f"{type(exc).__name__}: {exc}"
    print(
        f"nitihw: internal error (a fault in nitihw, not in your input): {what}{kept}"
        + ("" if getattr(args, "debug", False) else "; rerun with --debug to print it"),
        file=sys.stderr,
    )
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
