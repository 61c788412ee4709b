"""The buffers' energy and area from CACTI, in place of the energy table's three SRAM points.

The shipped energy table (Horowitz, 45 nm) gives SRAM access energy at 8 KiB, 32 KiB and
1 MiB for 64-bit accesses; the estimate interpolates it in log2(size). With ``--sram cacti``
each buffer is instead priced by CACTI 7 at its real size, port width and technology node,
through Accelergy's ``hwcomponents-cacti`` plug-in. That plug-in needs Python >= 3.12 and a
CACTI binary built for the machine, so it runs in its own venv: nitihw calls that venv's
Python (``--cacti-python`` or ``NITIHW_CACTI_PYTHON``) with :mod:`.cacti_worker`, and keeps the
answers in a cache (``build/cacti`` or ``NITIHW_CACTI_CACHE``) keyed by size, width, node and
the plug-in's version: the estimate itself needs no CACTI once they are there.

Port widths: the ifmap buffer feeds one operand to each PE row a cycle (``rows x operand
bits``), the filter buffer one to each column (``cols x operand bits``), and the result buffer
takes a row of accumulators (``cols x accumulator bits``). Reads are priced at CACTI's read
energy per byte, writes at its write energy per byte; the report names the source of each.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from nitihw.golden.files import atomic_write_json
from nitihw.sim.model.accelerator import Accelerator, ConfigError

SRAM_SOURCES = ("table", "cacti")
DEFAULT_TECH_NM = 45  # the shipped table's node
WORKER = Path(__file__).with_name("cacti_worker.py")


def cache_dir() -> Path:
    return Path(os.environ.get("NITIHW_CACTI_CACHE", "build/cacti"))


def buffer_ports(acc: Accelerator) -> dict[str, tuple[int, int]]:
    """Each buffer's ``(size_bytes, port_width_bits)``."""
    sizes = acc.buffer_bytes()
    return {
        "ifmap": (sizes["ifmap"], acc.rows * acc.operand_bits),
        "filter": (sizes["filter"], acc.cols * acc.operand_bits),
        "ofmap": (sizes["ofmap"], acc.cols * acc.accumulator_bits),
    }


def _key(size: int, width: int, tech: float) -> str:
    return hashlib.sha256(f"{size}/{width}/{tech}".encode()).hexdigest()[:24]


def cacti_python(given: str | None) -> str:
    python = given or os.environ.get("NITIHW_CACTI_PYTHON")
    if not python:
        raise ConfigError(
            "--sram cacti needs the Python of a venv with hwcomponents-cacti (Python >= 3.12): "
            "--cacti-python PATH or NITIHW_CACTI_PYTHON (docs/estimate.md, 'SRAM from CACTI')"
        )
    return python


def run_cacti(python: str, asked: list[dict]) -> list[dict]:
    """The worker's answers for ``asked`` (``size_bytes``, ``width_bits``, ``tech_node_nm``)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps(asked))
        try:
            done = subprocess.run(
                [python, str(WORKER), str(src), str(dst)], capture_output=True, text=True,
                timeout=600,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"--sram cacti: cannot run {python} ({exc})") from None
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfigError(f"--sram cacti: CACTI failed under {python}: {last[:200]}")
        return json.loads(dst.read_text())


def sram_costs(acc: Accelerator, python: str | None, tech_nm: float, log=None) -> dict:
    """Each buffer's CACTI answer (cached), as the worker gives it."""
    ports = buffer_ports(acc)
    folder = cache_dir()
    found, missing = {}, []
    for name, (size, width) in ports.items():
        path = folder / f"{_key(size, width, tech_nm)}.json"
        try:
            found[name] = json.loads(path.read_text())
        except (OSError, ValueError):  # absent or damaged: asked again
            missing.append(name)
    if missing:
        python = cacti_python(python)
        if log:
            log(f"CACTI: {', '.join(missing)} buffer(s) at {tech_nm} nm, via {python}")
        asked = [{"size_bytes": ports[n][0], "width_bits": ports[n][1], "tech_node_nm": tech_nm}
                 for n in missing]  # fmt: skip
        for name, answer in zip(missing, run_cacti(python, asked), strict=True):
            folder.mkdir(parents=True, exist_ok=True)
            size, width = ports[name]
            atomic_write_json(folder / f"{_key(size, width, tech_nm)}.json", answer)
            found[name] = answer
    return found


def with_cacti(
    acc: Accelerator, python: str | None = None, tech_nm: float = DEFAULT_TECH_NM, log=None
) -> Accelerator:
    """``acc`` with its buffers priced by CACTI (the rest of its energy table unchanged)."""
    costs = sram_costs(acc, python, tech_nm, log)
    measured, versions = [], set()
    for name, (size, width) in buffer_ports(acc).items():
        c = costs[name]
        per_byte = width / 8
        measured.append((size, c["read_pj"] / per_byte, c["write_pj"] / per_byte, c["area_mm2"]))
        versions.add(c.get("version", "?"))
    source = (f"CACTI 7 via hwcomponents-cacti {', '.join(sorted(versions))}, {tech_nm:g} nm, "
              "at each buffer's size and port width")  # fmt: skip
    table = replace(acc.energy, sram_measured=tuple(measured), sram_source=source)
    return replace(acc, energy=table)


if __name__ == "__main__":  # python -m nitihw.sim.model.cacti PYTHON: one check
    from nitihw.sim.model.accelerator import load_accelerator

    a = with_cacti(load_accelerator(None, None), sys.argv[1] if len(sys.argv) > 1 else None)
    print(json.dumps(a.as_dict()["energy"]["buffers"], indent=1))
