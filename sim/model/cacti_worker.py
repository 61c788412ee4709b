"""Run by a Python with hwcomponents-cacti (Accelergy's CACTI plug-in; it needs Python >= 3.12,
so it lives in its own venv), not by nitihw's: CACTI's energy per access, area and leakage of
each SRAM asked for. Imports nothing of nitihw.

usage: python cacti_worker.py IN.json OUT.json
IN.json: [{"size_bytes": S, "width_bits": W, "tech_node_nm": T}, ...]
OUT.json: the same list, each with "read_pj", "write_pj" (one access of W bits), "area_mm2",
"leak_mw" and "version" (hwcomponents-cacti's).
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def main() -> None:
    from hwcomponents_cacti import SRAM

    asked = json.loads(Path(sys.argv[1]).read_text())
    try:
        release = version("hwcomponents-cacti")
    except PackageNotFoundError:  # importable without its metadata (a source checkout)
        release = "unknown"
    out = []
    for a in asked:
        sram = SRAM(
            tech_node=a["tech_node_nm"] * 1e-9, width=a["width_bits"], size=a["size_bytes"] * 8
        )
        out.append(
            {
                **a,
                "read_pj": sram.read().energy * 1e12,
                "write_pj": sram.write().energy * 1e12,
                "area_mm2": sram.area * 1e6,
                "leak_mw": sram.leak_power * 1e3,
                "version": release,
            }
        )
    Path(sys.argv[2]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
