"""``nitihw train``: one run, on any backend, with its progress, cycle report and records.

:func:`run_training` is called in-process for the golden and GPU backends and, for
``--backend rtl``, with the RTL backend: in-process on the native harness
(:mod:`nitihw.sim.native`, ``--sim verilator``, the default), or inside a cocotb simulation
(``sim/testbench/train_tb.py``, ``--sim cocotb-verilator`` / ``icarus``): the same code
either way. :func:`launch_rtl_training` starts it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import fields
from pathlib import Path

from nitihw.golden.datasets import load_dataset
from nitihw.golden.parallel import check_threads
from nitihw.golden.profiles import get_profile
from nitihw.golden.train import TrainConfig, atomic_write_json, check_input_shape, train
from nitihw.sim.cycle_model import ArrayConfig, CycleReport

CONFIG_KEYS = tuple(f.name for f in fields(TrainConfig))


def default_out(opts: dict) -> str:
    tag = f"{opts['model']}_{opts['dataset']}_{opts['profile']}_s{opts['seed']}"
    if opts.get("backend", "golden") != "golden":
        tag += f"_{opts['backend']}"
    return str(Path("runs") / re.sub(r"[^A-Za-z0-9.-]+", "-", tag))


def check_options(opts: dict):
    """Validate a run before anything slow starts; returns ``(cfg, data, array)``."""
    cfg = TrainConfig(**{k: opts[k] for k in CONFIG_KEYS})
    opts["overflow"] = cfg.overflow  # resolved from the profile when not given
    cfg.validate()
    if opts.get("threads") is not None:
        check_threads(opts["threads"])
        if opts.get("backend", "golden") != "golden":
            raise ValueError("--threads sets the golden backend's worker threads")
    array = ArrayConfig.parse(opts.get("array", "8x8"), opts.get("kmax", 256))
    data = load_dataset(opts["dataset"])
    check_input_shape(cfg, data)
    if opts["backend"] != "golden" and not get_profile(cfg.profile).datapath:
        raise ValueError("the float32 twin runs on the golden backend only")
    if opts["backend"] == "gpu" and get_profile(cfg.profile).method == "nitro-d":
        raise ValueError(
            "profile nitro-d runs on the golden and rtl backends only: its host operations "
            "(LeakyReLU, the int8 loss, the head pooling) are written in NumPy"
        )
    return cfg, data, array


def run_training(opts: dict, backend=None, eval_backend=None) -> dict:
    """Run ``nitihw train`` with options ``opts`` (the CLI's, as a dict) and print as it goes."""
    from nitihw.golden.backend import NumpyBackend
    from nitihw.sim.progress import ProgressBar, format_cycles, format_summary

    cfg, data, array = check_options(opts)
    if backend is None and cfg.backend == "gpu":
        from nitihw.gpu.backend import CupyBackend

        backend = CupyBackend(cfg.acc_bits, cfg.overflow)
    elif backend is None:
        backend = NumpyBackend(cfg.acc_bits, cfg.overflow, threads=opts.get("threads"))
    out = Path(opts["out"])
    if get_profile(cfg.profile).datapath:
        backend.trace = CycleReport(array, measured=backend.name == "rtl")
    where = f", array {array}" + (" (simulated)" if backend.name == "rtl" else " (cycle model)")
    print(
        f"nitihw train: {cfg.model} on {cfg.dataset} ({len(data.train_y)} train / "
        f"{len(data.test_y)} test), backend {backend.name}, profile {cfg.profile}, "
        f"batch {cfg.batch}, mu {cfg.mu_text}{where}; checkpoints in {out}",
        file=sys.stderr,
        flush=True,
    )
    result = train(
        cfg,
        data,
        backend,
        out_dir=out,
        resume=opts.get("resume", False),
        progress=ProgressBar(),
        eval_backend=eval_backend,
    )
    atomic_write_json(out / "result.json", result)
    if opts.get("json"):
        atomic_write_json(Path(opts["json"]), result)
    print(format_summary(result))
    if "cycles" in result:
        print(format_cycles(result["cycles"]))
    sys.stdout.flush()
    return result


def build_name(array: str, params: dict) -> str:
    """The build directory of a Datapath configuration: every parameter that changes the
    Verilog is in it (the B width and the divide lanes only when not the default)."""
    op_bits = params["op_bits"]
    name = f"{array}_op{op_bits}"
    if params.get("b_bits", op_bits) != op_bits:
        name += f"_b{params['b_bits']}"
    if params.get("divide"):
        name += "_div"
    return name + f"_acc{params['acc_bits']}_k{params['kmax']}"


def rtl_build(opts: dict) -> tuple[dict, Path]:
    """The Datapath parameters a run needs (its array, profile and accumulator) and the
    directory its builds go to."""
    from nitihw.rtl.verilog import datapath_params

    cfg, _data, array = check_options(opts)
    profile = get_profile(cfg.profile)
    params = datapath_params(
        array.rows,
        array.cols,
        op_bits=profile.operand_bits,
        acc_bits=cfg.acc_bits,
        kmax=array.kmax,
        b_bits=profile.b_operand_bits,
        divide=profile.divide,
    )
    return params, Path(opts.get("build_dir") or "build/rtl") / build_name(str(array), params)


def launch_rtl_training(opts: dict) -> int:
    """Build the Datapath for ``--array`` and run the training on the simulated RTL."""
    from nitihw.sim.verify import build_datapath, sim_build_dir

    params, build = rtl_build(opts)
    sim = opts.get("sim", "verilator")
    if sim == "verilator":
        return run_native_training(opts, params, build)
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
    print(
        f"nitihw train: building the {params['rows']}x{params['cols']} Datapath for "
        f"{sim} (cocotb) in {build} ...",
        file=sys.stderr,
        flush=True,
    )
    runner = build_datapath(sim, params, build)
    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    status = out / "rtl_status.json"
    status.unlink(missing_ok=True)
    run_dir = sim_build_dir(build, sim, False)
    try:
        runner.test(
            hdl_toplevel="datapath",
            test_module="nitihw.sim.testbench.train_tb",
            build_dir=str(run_dir),
            test_dir=str(run_dir),
            results_xml=str((run_dir / "train_results.xml").resolve()),
            extra_env={
                "NITIHW_TRAIN": json.dumps(opts),
                "NITIHW_PARAMS": json.dumps(params),
                "NITIHW_STATUS": str(status.resolve()),
                "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING"),
            },
        )
    except SystemExit:
        pass
    if not status.exists():
        raise RuntimeError(f"the simulation ended without a result; see {run_dir}")
    state = json.loads(status.read_text())
    if "error" in state:
        raise RuntimeError(state["error"])
    return 0


def run_native_training(opts: dict, params: dict, build: Path) -> int:
    """``--backend rtl --sim verilator``: the training in this process, every datapath
    operation a program streamed through the compiled harness."""
    from nitihw.golden.backend import NumpyBackend
    from nitihw.sim.datapath_driver import DatapathDriver
    from nitihw.sim.native import NativeDatapath, NativeOptions, build_native, call_sync
    from nitihw.sim.native.split import SplitDriver
    from nitihw.sim.rtl_backend import RtlBackend

    def say(msg):
        print(f"nitihw train: {msg}", file=sys.stderr, flush=True)

    waves = bool(opts.get("waves"))
    # one waveform shows one Datapath: a traced run simulates on one instance
    n = 1 if waves else sim_instances(opts.get("sim_instances") or 0)
    lib = build_native(params, build, NativeOptions(waves=waves), log=say)
    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    wave_file = out / "datapath.vcd" if waves else None
    sims = [NativeDatapath(lib, params, waves=wave_file if i == 0 else None) for i in range(n)]
    drivers = [DatapathDriver(dp, params) for dp in sims]
    driver = drivers[0] if n == 1 else SplitDriver(drivers)
    if n > 1:
        say(f"{n} Datapath instances share each large operation (sim/native/split.py)")
    try:
        backend = RtlBackend(driver, call_sync, opts["acc_bits"], opts["overflow"])
        golden_eval = (
            None if opts.get("eval_on_rtl") else NumpyBackend(opts["acc_bits"], opts["overflow"])
        )
        run_training(opts, backend, eval_backend=golden_eval)
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
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))
