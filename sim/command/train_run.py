"""``nitihw train``: one run, on any backend, with its progress, cycle report and records.

:func:`run_training` is called in-process for the golden and GPU backends and, for
``--backend rtl``, with the RTL backend: in-process on the native harness
(:mod:`nitihw.sim.simulate.native`, ``--sim verilator``, the default), or inside a cocotb simulation
(``sim/command/train_tb.py``, ``--sim cocotb-verilator`` / ``icarus``): the same code
either way. :func:`launch_rtl_training` starts it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from nitihw.golden.checkpoint import CHECKPOINT_NAME
from nitihw.golden.datasets import load_dataset
from nitihw.golden.errors import InternalError, ToolError, UserError
from nitihw.golden.files import atomic_write_json
from nitihw.golden.parallel import available_cores, check_threads
from nitihw.golden.profiles import get_profile
from nitihw.golden.run_folder import RESULT_NAME
from nitihw.golden.train import TrainConfig, check_input_shape, train
from nitihw.sim.model.cycle_model import TILINGS, ArrayConfig, CycleReport

if TYPE_CHECKING:
    from nitihw.rtl.datapath import DatapathParams

CONFIG_KEYS = tuple(f.name for f in fields(TrainConfig))


def default_out(opts: dict) -> str:
    tag = f"{opts['model']}_{opts['dataset']}_{opts['profile']}_s{opts['seed']}"
    if opts.get("backend", "golden") != "golden":
        tag += f"_{opts['backend']}"
    return str(Path("runs") / re.sub(r"[^A-Za-z0-9.-]+", "-", tag))


def check_settings(opts: dict):
    """Validate a run's settings (no data loaded yet); returns ``(cfg, array)``."""
    cfg = TrainConfig(**{k: opts[k] for k in CONFIG_KEYS if k in opts})
    opts["overflow"] = cfg.overflow  # resolved from the profile when not given
    cfg.validate()
    backend = opts.get("backend", "golden")
    if opts.get("threads") is not None:
        check_threads(opts["threads"])
        if backend != "golden":
            raise ValueError("--threads sets the golden backend's worker threads")
    if opts.get("coverage") and (backend != "rtl" or opts.get("sim") != "cocotb-verilator"):
        raise ValueError(
            "--coverage is counted by the cocotb testbench on Verilator: --backend rtl "
            "--sim cocotb-verilator"
        )
    array = run_array(opts, cfg)
    if backend != "golden" and not get_profile(cfg.profile).datapath:
        raise ValueError("the float32 twin runs on the golden backend only")
    if backend == "rtl" and not get_profile(cfg.profile).exact:
        raise ValueError(
            f"profile {cfg.profile} reproduces NITI's float32 quirks, which no datapath has: "
            "it runs on the golden and gpu backends only"
        )
    if backend == "gpu" and get_profile(cfg.profile).method == "nitro-d":
        raise ValueError(
            "profile nitro-d runs on the golden and rtl backends only: its host operations "
            "(LeakyReLU, the int8 loss, the head pooling) are written in NumPy"
        )
    if backend == "gpu":  # no GPU: said before the data loads, not after
        from nitihw.gpu.backend import gpu_available

        ok, why = gpu_available()
        if not ok:
            raise ToolError(f"--backend gpu: {why}")
    return cfg, array


def run_array(opts: dict, cfg) -> ArrayConfig:
    """The run's array, and (``--tiling searched``, the default) the default accelerator's
    buffers (the result buffer the Datapath's own), which its GEMMs' mappings fit in
    (:func:`~nitihw.sim.model.cycle_model.gemm_tiling`, for ``--objective``): the driver follows
    them on the RTL, the cycle report prices them on every backend."""
    from dataclasses import replace

    from nitihw.golden.limits import check
    from nitihw.rtl.schedule import default_result_rows
    from nitihw.sim.model.accelerator import Accelerator
    from nitihw.sim.model.estimate import array_config

    array = ArrayConfig.parse(opts.get("array", "8x8"), opts.get("kmax", 256))
    tiling = opts.get("tiling") or "searched"
    if tiling not in TILINGS:
        raise ValueError(f"--tiling must be one of {', '.join(TILINGS)}, got {tiling!r}")
    if tiling == "whole":
        return array
    operand_bits, b_bits = operand_widths(cfg)
    acc_bytes = -(-cfg.accumulator_bits // 8)
    acc = Accelerator(
        rows=array.rows,
        cols=array.cols,
        kmax=array.kmax,
        operand_bits=operand_bits,
        accumulator_bits=cfg.accumulator_bits,
        ofmap_kib=default_result_rows(array.cols) * array.cols * acc_bytes / 1024,
    )
    for name in ("ifmap_kib", "filter_kib"):
        if opts.get(name) is not None:
            acc = replace(
                acc, **{name: check("buffer_kib", opts[name], f"--{name.replace('_', '-')}")}
            )
    b_bytes = -(-b_bits // 8) if b_bits != operand_bits else None
    return array_config(acc, b_bytes, opts.get("objective") or "traffic")


def check_options(opts: dict, settings: tuple | None = None):
    """Validate a run before anything slow starts: its settings (``settings``: what
    :func:`check_settings` returned for ``opts``, if the caller has it), then its dataset
    (loaded here) against the model; returns ``(cfg, data, array)``."""
    cfg, array = settings or check_settings(opts)
    data = load_dataset(opts["dataset"])
    check_input_shape(cfg, data)
    return cfg, data, array


def run_training(opts: dict, backend=None, eval_backend=None, checked=None) -> dict:
    """Run ``nitihw train`` with options ``opts`` (the CLI's, as a dict) and print as it goes.
    ``checked``: what :func:`check_options` returned for ``opts``, if the caller called it."""
    from nitihw.golden.backend import NumpyBackend
    from nitihw.sim.command.progress import ProgressBar, format_cycles, format_summary

    cfg, data, array = checked or check_options(opts)
    if backend is None and cfg.backend == "gpu":
        from nitihw.gpu.backend import CupyBackend

        backend = CupyBackend(cfg.accumulator_bits, cfg.overflow)
    elif backend is None:
        backend = NumpyBackend(cfg.accumulator_bits, cfg.overflow, threads=opts.get("threads"))
    out = Path(opts["out"])
    profile = get_profile(cfg.profile)
    if profile.datapath:
        backend.trace = CycleReport(array, measured=backend.name == "rtl")
    if hasattr(backend, "follow"):  # the RTL: its GEMMs take the tilings the report prices
        backend.follow(array)
    print(run_header(cfg, data, backend.name, array, out), file=sys.stderr, flush=True)
    result = train(
        cfg,
        data,
        backend,
        out_dir=out,
        resume=opts.get("resume", False),
        progress=ProgressBar(),
        eval_backend=eval_backend,
    )
    atomic_write_json(out / RESULT_NAME, result)
    if opts.get("json"):
        atomic_write_json(Path(opts["json"]), result)
    print(format_summary(result))
    if "cycles" in result:
        print(format_cycles(result["cycles"]))
    print(f"result: {out / RESULT_NAME}" + (f" and {opts['json']}" if opts.get("json") else ""))
    print(f"checkpoint: {out / CHECKPOINT_NAME} (continue with --resume --out {out})")
    sys.stdout.flush()
    return result


def run_header(cfg: TrainConfig, data, backend: str, array, out: Path) -> str:
    """The line a run starts with: what it trains, and the settings its profile uses (the
    float32 twin has a learning rate and no datapath; the integer methods a mu schedule)."""
    profile = get_profile(cfg.profile)
    parts = [
        f"nitihw train: {cfg.model} on {cfg.dataset} ({len(data.train_y)} train / "
        f"{len(data.test_y)} test)",
        f"backend {backend}",
        f"profile {cfg.profile}",
        f"batch {cfg.batch}",
    ]
    if profile.method == "float":
        parts.append(f"lr {cfg.lr:g}, momentum {cfg.momentum:g}")
        if cfg.weight_decay:
            parts.append(f"weight decay {cfg.weight_decay:g}")
    else:
        parts.append(f"mu {cfg.mu_text}")
    if cfg.operand_bits != 8:
        parts.append(f"{cfg.operand_bits}-bit operands")
    if profile.datapath:
        how = "simulated" if backend == "rtl" else "cycle model"
        parts.append(f"array {array} ({how})")
        if getattr(array, "memory", None) is not None:
            h = array.memory
            parts.append(
                f"GEMM tilings searched for {array.objective} on {h.ifmap / 1024:g}/"
                f"{h.filter / 1024:g}/{h.ofmap / 1024:g} KiB buffers"
            )
    return ", ".join(parts) + f"; run folder {out}"


def build_name(params: DatapathParams) -> str:
    """The build directory of a Datapath configuration: every parameter that changes the
    Verilog is in it (the B width and the divide lanes only when not the default)."""
    p = params
    name = f"{p}_op{p.operand_bits}" + (f"_b{p.b_bits}" if p.b_bits != p.operand_bits else "")
    return name + ("_div" if p.divide else "") + f"_acc{p.accumulator_bits}_k{p.kmax}"


def operand_widths(cfg: TrainConfig) -> tuple[int, int]:
    """The A and B operand widths the run ``cfg`` needs of its datapath (its profile's, or
    ``--operand-bits``)."""
    profile = get_profile(cfg.profile)
    operand_bits = cfg.operand_bits if cfg.operand_bits != 8 else profile.operand_bits
    return operand_bits, profile.b_operand_bits or operand_bits


def rtl_build(opts: dict, settings: tuple | None = None) -> tuple[DatapathParams, Path]:
    """The Datapath a run needs (its array, profile and accumulator) and the directory its
    builds go to. ``settings``: what :func:`check_settings` returned for ``opts``, if the
    caller has it (the array is then not parsed again)."""
    from nitihw.rtl.datapath import DatapathParams  # the HDL toolchain: the RTL's runs only

    cfg, array = settings or check_settings(opts)
    operand_bits, b_bits = operand_widths(cfg)
    params = DatapathParams(
        array.rows,
        array.cols,
        operand_bits=operand_bits,
        accumulator_bits=cfg.accumulator_bits,
        kmax=array.kmax,
        b_bits=b_bits,
        divide=get_profile(cfg.profile).divide,
    )
    return params, Path(opts.get("build_dir") or "build/rtl") / build_name(params)


def launch_rtl_training(opts: dict, checked=None) -> int:
    """Build the Datapath for ``--array`` and run the training on the simulated RTL.
    ``checked``: what :func:`check_options` returned for ``opts``, if the caller called it."""

    params, build = rtl_build(opts, checked and (checked[0], checked[2]))
    sim = opts.get("sim", "verilator")
    if sim == "verilator":
        return run_native_training(opts, params, build, checked)
    if opts.get("waves"):
        raise ValueError("--waves records the native simulator (--sim verilator)")
    if opts.get("sim_instances"):
        raise ValueError(
            "--sim-instances shares operations between native instances "
            "(--sim verilator); cocotb runs one simulator"
        )
    sim = {"cocotb-verilator": "verilator", "icarus": "icarus"}.get(sim)
    if sim is None:
        raise ValueError(f"unknown --sim {opts['sim']!r}")
    with _cocotb_build_held(build, sim):
        return _run_cocotb_training(opts, params, build, sim)


@contextlib.contextmanager
def _cocotb_build_held(build: Path, sim: str):
    """A cocotb run builds and runs its simulator in the build folder (its model, its results
    file): it holds the folder's cocotb build alone, and a second run on it is refused."""
    import fcntl

    build.mkdir(parents=True, exist_ok=True)
    with open(build / f".use.cocotb-{sim}.lock", "a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ToolError(
                f"--build-dir: {build} is in use by another --sim cocotb-{sim} run: wait for it "
                "to end, or give this one another --build-dir"
            ) from None
        yield


def _run_cocotb_training(opts: dict, params: DatapathParams, build: Path, sim: str) -> int:
    from nitihw.sim.simulate.verify import build_datapath, coverage_plusargs, sim_build_dir

    print(
        f"nitihw train: building the {params} Datapath for {sim} (cocotb) in {build} ...",
        file=sys.stderr,
        flush=True,
    )
    coverage = opts.get("coverage")
    runner = build_datapath(sim, params, build, coverage=bool(coverage))
    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    status = out / "rtl_status.json"
    status.unlink(missing_ok=True)
    run_dir = sim_build_dir(build, sim, False, bool(coverage))
    log = out / "simulator.log"
    # the simulator's own chatter goes to the log; the run's output comes back through the
    # console files, relayed as it is written
    console = {name: out / f".console.{name}" for name in ("out", "err")}
    for path in console.values():
        path.write_bytes(b"")
    with _Relay(console["out"], sys.stdout), _Relay(console["err"], sys.stderr):
        try:
            runner.test(
                hdl_toplevel="datapath",
                test_module="nitihw.sim.command.train_tb",
                build_dir=str(run_dir),
                test_dir=str(run_dir),
                results_xml=str((run_dir / "train_results.xml").resolve()),
                plusargs=coverage_plusargs(coverage),
                log_file=str(log.resolve()),
                extra_env={
                    "NITIHW_TRAIN": json.dumps(opts),
                    "NITIHW_PARAMS": json.dumps(params.as_dict()),
                    "NITIHW_STATUS": str(status.resolve()),
                    "NITIHW_CONSOLE_OUT": str(console["out"].resolve()),
                    "NITIHW_CONSOLE_ERR": str(console["err"].resolve()),
                    "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING"),
                },
            )
        except SystemExit:
            pass
    for path in console.values():
        path.unlink(missing_ok=True)
    if not status.exists():
        raise InternalError(f"the simulation ended without a result{_log_tail(log)}")
    state = json.loads(status.read_text())
    if "error" in state:
        if state.get("internal", True):
            err = InternalError(f"{state['error']} (in the simulation)")
            err.add_note("the simulation's traceback:\n" + state.get("traceback", "(none)"))
            raise err
        raise UserError(state["error"])
    print(f"simulator log: {log}")
    if coverage:
        print(f"coverage counts: {coverage}")
    return 0


def _log_tail(log: Path, lines: int = 15) -> str:
    """The end of the simulator's log, for an error message."""
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f" (no simulator log at {log})"
    return f"; the end of {log}:\n" + "\n".join("  " + t for t in tail)


class _Relay:
    """Copies what another process appends to ``path`` onto ``stream`` while the block runs."""

    def __init__(self, path: Path, stream, every: float = 0.2):
        import threading

        self.path, self.stream, self.every = path, stream, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._pos = 0

    def _copy(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except OSError:
            return
        if data:
            self._pos += len(data)
            self.stream.write(data.decode(errors="replace"))
            self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._copy()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._copy()


def run_native_training(opts: dict, params: DatapathParams, build: Path, checked=None) -> int:
    """``--backend rtl --sim verilator``: the training in this process, every datapath
    operation a program streamed through the compiled harness."""
    from nitihw.sim.simulate.native import NativeOptions, native_in_use

    def say(msg):
        print(f"nitihw train: {msg}", file=sys.stderr, flush=True)

    waves = bool(opts.get("waves"))
    options = NativeOptions(
        waves=waves,
        compiler=opts.get("cxx") or "auto",
        netlist=opts.get("netlist") or "optimized",
    )
    # the build stays this run's until it ends: no other run rebuilds it meanwhile
    with native_in_use(params, build, options, log=say) as lib:
        return _simulate_training(opts, params, lib, waves, say, checked)


def _simulate_training(opts: dict, params: DatapathParams, lib, waves: bool, say, checked) -> int:
    from nitihw.golden.backend import NumpyBackend
    from nitihw.sim.simulate.datapath_driver import DatapathDriver
    from nitihw.sim.simulate.native import NativeDatapath, call_sync
    from nitihw.sim.simulate.native.split import SplitDriver
    from nitihw.sim.simulate.rtl_backend import RtlBackend

    # one waveform shows one Datapath: a traced run simulates on one instance
    n = 1 if waves else sim_instances(opts.get("sim_instances") or 0)
    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    wave_file = out / "datapath.vcd" if waves else None
    sims = [NativeDatapath(lib, params, waves=wave_file if i == 0 else None) for i in range(n)]
    drivers = [DatapathDriver(dp, params) for dp in sims]
    driver = drivers[0] if n == 1 else SplitDriver(drivers)
    if n > 1:
        say(f"{n} Datapath instances share each large operation (sim/simulate/native/split.py)")
    try:
        backend = RtlBackend(driver, call_sync, opts["accumulator_bits"], opts["overflow"])
        golden_eval = (
            None
            if opts.get("eval_on_rtl")
            else NumpyBackend(opts["accumulator_bits"], opts["overflow"])
        )
        run_training(opts, backend, eval_backend=golden_eval, checked=checked)
    finally:
        if n > 1:
            driver.close()
        for dp in sims:
            dp.close()
    if wave_file:
        say(f"waveform: {wave_file}")
    return 0


def sim_instances(requested: int = 0) -> int:
    """Native Datapath instances for a run: ``requested``, or (0) one per CPU core this
    process may use, at most 8."""
    if requested < 0:
        raise ValueError(f"--sim-instances must be 0 (one per core) or more, got {requested}")
    if requested:
        return requested
    return max(1, min(available_cores(), 8))
