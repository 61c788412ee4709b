"""SCALE-Sim 3.0 side by side: its compute cycles for small GEMMs on each dataflow (os, ws,
is) and array shape, next to nitihw's closed form (:func:`nitihw.sim.model.mapping.dataflow.
scalesim_cycles`) and, for os, the RTL-checked cycle model. SCALE-Sim crashes with NumPy 2:
run it from its own venv (``python3 -m venv V && V/bin/pip install 'numpy<2' scalesim==3.0.0``)
and pass ``--scalesim V/bin/python``. Prints the table, writes the 'scalesim_dataflows' section
of docs/benchmarks.md, and with ``--fixture`` the figures tests/test_dataflow.py holds the
model to (tests/scalesim_cycles.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.sim.model.cycle_model import gemm_cycles
from nitihw.sim.model.mapping.dataflow import DATAFLOWS, scalesim_cycles

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "scalesim_cycles.json"
#: (M, N, K) in SCALE-Sim's GEMM order
GEMMS = [(10, 7, 9), (16, 16, 16), (5, 13, 23), (33, 8, 4), (64, 20, 25)]
ARRAYS = [(4, 4), (4, 8), (8, 3), (16, 16)]

CONFIG = """[general]
run_name = {name}

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: 64
FilterSramSzkB: 64
OfmapSramSzkB: 256
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth: 10
Dataflow: {dataflow}
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""


def run_gemms(python: str, dataflow: str, rows: int, cols: int, gemms, work: Path) -> Path:
    """SCALE-Sim on ``gemms`` (``(M, N, K)``, its order) with :data:`CONFIG`; returns the
    folder of its reports (``COMPUTE_REPORT.csv``, ``DETAILED_ACCESS_REPORT.csv``, ...)."""
    name = f"{dataflow}_{rows}x{cols}"
    cfg = work / f"{name}.cfg"
    cfg.write_text(CONFIG.format(name=name, rows=rows, cols=cols, dataflow=dataflow))
    topo = work / "gemm.csv"
    lines = [f"g{i}, {m}, {n}, {k},\n" for i, (m, n, k) in enumerate(gemms)]
    topo.write_text("Layer, M, N, K,\n" + "".join(lines))
    layout = work / "layout.csv"
    layout.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
                      "Channels, Num Filter, Strides,\n")  # fmt: skip
    cmd = [python, "-m", "scalesim.scale", "-c", str(cfg), "-t", str(topo), "-l", str(layout)]
    cmd += ["-p", str(work / "out"), "-i", "gemm", "-s", "N"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=work)
    return work / "out" / name


def run_scalesim(
    python: str, dataflow: str, rows: int, cols: int, work: Path, gemms=GEMMS
) -> list[int]:
    """SCALE-Sim's ``Total Cycles`` of every GEMM of ``gemms`` (``(M, N, K)``; default
    :data:`GEMMS`)."""
    reports = run_gemms(python, dataflow, rows, cols, gemms, work)
    report = (reports / "COMPUTE_REPORT.csv").read_text().splitlines()[1:]
    return [int(line.split(",")[2]) for line in report if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scalesim", required=True, help="the python of a venv with scalesim 3.0")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--fixture", action="store_true", help="rewrite tests/scalesim_cycles.json")
    args = ap.parse_args()
    rows_out, fixture = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rows, cols in ARRAYS:
            for dataflow in DATAFLOWS:
                theirs = run_scalesim(args.scalesim, dataflow, rows, cols, Path(tmp))
                for (m, n, k), cycles in zip(GEMMS, theirs, strict=True):
                    ours = scalesim_cycles(dataflow, m, k, n, rows, cols)
                    rtl = gemm_cycles(m, k, n, rows, cols, 256) if dataflow == "os" else ""
                    fixture.append([dataflow, rows, cols, m, k, n, cycles])
                    rows_out.append([dataflow, f"{rows}x{cols}", f"{m}x{k}x{n}", cycles, ours,
                                     "same" if ours == cycles else "DIFFERS", rtl])  # fmt: skip
    headers = ["dataflow", "array", "M x K x N", "SCALE-Sim cycles", "closed form", "",
               "RTL cycle model (os)"]  # fmt: skip
    print_table(headers, rows_out)
    if args.fixture:
        FIXTURE.write_text(json.dumps(fixture, indent=0) + "\n")
    if not args.no_write:
        same = sum(r[5] == "same" for r in rows_out)
        body = (
            "## SCALE-Sim 3.0's cycles for each dataflow, side by side\n\n"
            f"`.venv/bin/python bench/scalesim_check.py --scalesim V/bin/python` (commit "
            f"{git_rev()}, {machine()}; SCALE-Sim 3.0.0 in its own venv with NumPy 1.26). "
            f"{same} of {len(rows_out)} GEMMs: nitihw's closed form for ws and is (and os) "
            "gives SCALE-Sim's `Total Cycles` exactly. The RTL is output stationary: its "
            "cycle model (last column, kmax 256) adds the Datapath's own operand loads, range "
            "and drain.\n\n" + markdown_table(headers, rows_out)
        )
        write_section("scalesim_dataflows", body)


if __name__ == "__main__":
    main()
