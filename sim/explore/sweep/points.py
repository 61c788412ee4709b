"""What one point of a sweep computes: plain functions of the point's settings, run on a Dask
worker (or inline), returning the point's output columns.

``estimate``: :func:`nitihw.sim.model.estimate.estimate` of one training step on the point's
accelerator; the columns are the step's cycles, time at the clock, traffic and energy (with its
components), utilisation, and the per-epoch energy and time.
``area``: the calibrated area model (:mod:`nitihw.sim.explore.synth.area`): logic transistors, SRAM
bits, and both in mm^2 at 45 nm.
``train``: a golden training run (the grid's ``[train]`` table: dataset, epochs, seed,
overflow policy) at the point's model, method, batch, operand and accumulator widths: its
accuracy.
``rtl``: the point's Datapath (rows, cols, kmax, operand and accumulator bits) built for a
simulator (the grid's ``[rtl]`` table: simulator, seed) and ``nitihw verify``'s regression
testbench run on it: random GEMMs in every rounding mode, corners and, at 16-bit accumulators or
narrower, sums at the accumulator's limits, each compared bit for bit with the golden model.
"""

from __future__ import annotations

import fcntl
import functools
import math
import re
import time
import traceback
from dataclasses import replace
from pathlib import Path

from nitihw.golden.errors import ToolError

ESTIMATE_COLUMNS = (
    "macs",
    "total_cycles",
    "array_cycles",
    "stall_cycles",
    "seconds_per_step",
    "utilisation",
    "sram_bytes",
    "dram_bytes",
    "energy_pj",
    "energy_mac_pj",
    "energy_buffers_pj",
    "energy_offchip_pj",
    "energy_rescale_pj",
    "energy_update_pj",
    "fp32_energy_pj",
    "epoch_energy_j",
    "epoch_seconds",
    "clock_mhz",
)
AREA_COLUMNS = (
    "logic_transistors",
    "array_transistors",
    "sram_bits",
    "logic_mm2",
    "sram_mm2",
    "area_mm2",
)
TRAIN_COLUMNS = (
    "train_accuracy",
    "test_accuracy",
    "overflow_events",
    "weights_sha256",
    "train_seconds",
)
RTL_COLUMNS = (
    "rtl_tests",
    "rtl_failed",
    "rtl_bit_exact",
    "rtl_cycles",
    "rtl_build_seconds",
    "rtl_sim_seconds",
)
#: each kind's output columns
COLUMNS = {"estimate": ESTIMATE_COLUMNS, "area": AREA_COLUMNS, "train": TRAIN_COLUMNS,
           "rtl": RTL_COLUMNS}  # fmt: skip
#: the columns that are counts (integers); every other number is a float or an integer
COUNTS = {
    "macs", "total_cycles", "array_cycles", "stall_cycles", "sram_bytes", "dram_bytes",
    "logic_transistors", "array_transistors", "sram_bits", "overflow_events", "rtl_tests",
    "rtl_failed", "rtl_cycles",
}  # fmt: skip
#: fractions (0..1)
FRACTIONS = {"train_accuracy", "test_accuracy"}
#: no count or figure of a point comes near this; a bigger one is damage, not a result
HUGE = 2**63
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _bad_value(name: str, v) -> str | None:
    """Why ``v`` cannot be the output column ``name`` (None: it can)."""
    if name == "weights_sha256":
        return None if isinstance(v, str) and _SHA256.fullmatch(v) else "not a SHA-256"
    if name == "rtl_bit_exact":
        return None if isinstance(v, bool) else "not true or false"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return f"not a number ({type(v).__name__})"
    if name in COUNTS and not isinstance(v, int):
        return "not an integer"
    if isinstance(v, int) and not -HUGE < v < HUGE:
        return "out of range"
    if not math.isfinite(v):
        return "not finite"
    if v < 0:
        return "negative"
    if name in FRACTIONS and v > 1:
        return "above 1"
    return None


def check_outputs(record, compute) -> str | None:
    """Why ``record`` is not a finished point's record for ``compute`` (None: it is): a dict
    with ``error`` empty, ``point_seconds``, and every output column of each kind, each of its
    type and within its limits, and nothing else (so no field can stand in for a setting)."""
    if not isinstance(record, dict):
        return f"the record is a {type(record).__name__}, not an object"
    error = record.get("error")
    if not isinstance(error, str):
        return "no error field (a string)"
    if error:
        return "the point failed"
    want = {"error", "point_seconds", *(c for kind in compute for c in COLUMNS[kind])}
    missing = [c for c in output_columns(compute) if c not in record]
    if missing:
        return f"missing {', '.join(missing[:3])}"
    extra = sorted(k for k in record if k not in want)
    if extra:
        return f"unexpected field {extra[0]!r}"
    for name in want - {"error"}:
        why = _bad_value(name, record[name])
        if why:
            return f"{name} is {why}"
    if "rtl" in compute and record["rtl_failed"] > record["rtl_tests"]:
        return "rtl_failed is above rtl_tests"
    return None


def output_columns(compute) -> list[str]:
    """Every output column of ``compute``, in the order of the results."""
    return ["point_seconds", *(c for kind in compute for c in COLUMNS[kind])]


def accelerator(point: dict, energy: str | None):
    """The :class:`~nitihw.sim.model.accelerator.Accelerator` a point describes."""
    from nitihw.sim.model.accelerator import load_accelerator

    acc = load_accelerator(None, energy)
    return replace(
        acc,
        rows=point["rows"],
        cols=point["cols"],
        kmax=point["kmax"],
        operand_bits=point["operand_bits"],
        accumulator_bits=point["accumulator_bits"],
        ifmap_kib=point["ifmap_kib"],
        filter_kib=point["filter_kib"],
        ofmap_kib=point["ofmap_kib"],
        bandwidth=point["bandwidth"],
        frequency_mhz=point["frequency_mhz"],
        source="sweep",
        clock=point.get("clock", "config"),
    )


def estimate_point(point: dict, settings: dict) -> dict:
    from nitihw.sim.model.estimate import estimate
    from nitihw.sim.model.importers import file_workload
    from nitihw.sim.model.workload import DEFAULT_TRAIN_SAMPLES, model_workload

    energy, train_samples = settings.get("energy"), settings.get("train_samples")
    batch = point["batch"]
    if point.get("topology"):
        layers = file_workload(point["topology"], batch)
        name, samples = point["topology"], train_samples or batch
    else:
        layers = model_workload(point["model"], batch)
        name = point["model"]
        samples = train_samples or DEFAULT_TRAIN_SAMPLES.get(name, batch)
    from nitihw.sim.explore.synth.clock import resolve_clock

    acc, dataflow = accelerator(point, energy), point.get("dataflow", "os")
    acc = resolve_clock(acc, point["profile"])  # the point's clock from place and route
    if point.get("sram", "table") == "cacti":  # the buffers priced by CACTI (NITIHW_CACTI_PYTHON)
        from nitihw.sim.model.cacti import with_cacti

        acc = with_cacti(acc)
    traffic = point.get("traffic", "datapath")
    objective = point.get("objective", "traffic")
    r = estimate(layers, acc, batch, samples, name, point["profile"], dataflow, traffic, objective)
    step, epoch = r["per_step"], r["per_epoch"]
    out = {k: step[k] for k in ESTIMATE_COLUMNS if k in step}
    out["seconds_per_step"] = step["seconds_at_clock"]
    out["utilisation"] = (
        step["macs"] / max(step["total_cycles"], 1) / (point["rows"] * point["cols"])
    )
    out["epoch_energy_j"] = epoch["energy_pj"] * 1e-12
    out["epoch_seconds"] = epoch["seconds_at_clock"]
    out["clock_mhz"] = r["accelerator"]["clock"]["frequency_mhz"]  # the axis's, or from P&R
    return out


def area_point(point: dict, settings: dict) -> dict:
    """:func:`nitihw.sim.explore.synth.area.area`: the Datapath's logic from the calibrated model,
    the point's buffers as SRAM."""
    from nitihw.sim.explore.synth.area import area

    kib = point["ifmap_kib"] + point["filter_kib"] + point["ofmap_kib"]
    return area(point["rows"], point["cols"], point["operand_bits"], point["accumulator_bits"], kib)


@functools.lru_cache(maxsize=4)
def _dataset(spec: str):
    from nitihw.golden.datasets import load_dataset

    return load_dataset(spec)  # once per worker process


def train_point(point: dict, settings: dict) -> dict:
    """A golden training run with the point's model, method, batch, operand and accumulator
    widths (``[train]``: dataset, epochs, seed, overflow policy); its accuracy and overflow
    count. The profile's own operand width (8, or DFP16's 16) trains as the profile does."""
    from nitihw.golden.backend import NumpyBackend
    from nitihw.golden.profiles import get_profile
    from nitihw.golden.train import TrainConfig, train

    t = settings["train"]
    if point.get("topology"):
        raise ValueError("a train point needs a built-in model, not a topology")
    bits = point["operand_bits"]
    own = get_profile(point["profile"]).operand_bits  # 8, or DFP16's 16
    cfg = TrainConfig(
        model=point["model"],
        dataset=t["dataset"],
        profile=point["profile"],
        epochs=t["epochs"],
        batch=point["batch"],
        seed=t["seed"],
        operand_bits=8 if bits == own else bits,
        accumulator_bits=point["accumulator_bits"],
        overflow=t["overflow"],
    )
    backend = NumpyBackend(cfg.accumulator_bits, cfg.overflow, threads=1)
    r = train(cfg, _dataset(t["dataset"]), backend)
    return {
        "train_accuracy": r["train_accuracy"],
        "test_accuracy": r["test_accuracy"],
        "overflow_events": r["overflow_events"],
        "weights_sha256": r["weights_sha256"],
        "train_seconds": r["seconds"],
    }


def rtl_point(point: dict, settings: dict) -> dict:
    """Build the point's Datapath and run the RTL regression on it (``[rtl]``: simulator,
    seed). Points that share a Datapath share its build (``DIR/rtl/<shape, widths, kmax>``),
    one worker at a time (a file lock); a testbench mismatch is a result (``rtl_failed``), a
    failed build an error."""
    from nitihw.rtl.datapath import DatapathParams
    from nitihw.sim.simulate.verify import config_tag, regression_cases, run_datapath_tests

    r = settings["rtl"]
    params = DatapathParams(
        point["rows"],
        point["cols"],
        operand_bits=point["operand_bits"],
        accumulator_bits=point["accumulator_bits"],
        kmax=point["kmax"],
    )
    build = Path(settings["build_dir"]) / f"{config_tag(params)}_k{params.kmax}"
    build.mkdir(parents=True, exist_ok=True)
    with open(build / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        res = run_datapath_tests(r["simulator"], params, r["seed"], build, regression_cases(params))
    if res.tests == 0:
        why = res.stats.get("build", "no test ran")
        raise ToolError(f"the RTL of this point did not build or run ({why}; see {build})")
    return {
        "rtl_tests": res.tests,
        "rtl_failed": res.failed,
        "rtl_bit_exact": res.passed,
        "rtl_cycles": sum(s.get("cycles", 0) for s in res.stats.values()),
        "rtl_build_seconds": res.build_seconds,
        "rtl_sim_seconds": res.seconds,
    }


COMPUTE = {"estimate": estimate_point, "area": area_point, "train": train_point, "rtl": rtl_point}


def run_point(point: dict, compute: tuple[str, ...], settings: dict) -> dict:
    """A point's record: its settings, its outputs, and ``error`` (empty when it worked);
    never raises, so one bad point does not stop a sweep."""
    t0 = time.perf_counter()
    record = {"error": ""}
    try:
        for kind in compute:
            out = COMPUTE[kind](point, settings)
            record.update({c: out[c] for c in COLUMNS[kind] if c in out})
    except Exception as exc:  # recorded with the point; the sweep goes on
        last = traceback.extract_tb(exc.__traceback__)[-1]
        record["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())} " + (
            f"({last.filename.rsplit('/', 1)[-1]}:{last.lineno})"
        )
    record["point_seconds"] = time.perf_counter() - t0
    if not record["error"]:
        # the same checks a stored record passes before reuse: a NaN energy, say, is a failure
        why = check_outputs(record, compute)
        if why:
            record["error"] = f"the point's outputs failed their checks: {why}"
    return record


def run_points(items: list, compute, settings: dict) -> list:
    """A batch of ``(id, point)``, as one Dask task: ``[(id, record), ...]``."""
    return [(pid, run_point(p, compute, settings)) for pid, p in items]
