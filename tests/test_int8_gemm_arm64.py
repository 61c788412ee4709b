"""Every int8 GEMM kernel built and checked in C (tests/int8_gemm_check.c) against int64 loops,
including the kernels for CPUs this machine is not: the ARM64 ones (NEON sdot, i8mm smmla) are
cross-compiled with ``aarch64-linux-gnu-gcc`` and run under ``qemu-aarch64`` (Debian's
``crossbuild-essential-arm64`` and ``qemu-user``; ``./run tests-arm64`` installs them and runs
these tests). Each kernel also refuses to run on a CPU without its extension (its own CPU check,
which the golden model asks before it uses the kernel)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nitihw.golden import int8_gemm

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tests" / "int8_gemm_check.c"
CROSS = shutil.which("aarch64-linux-gnu-gcc")
QEMU = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
#: an emulated CPU of each ARM64 kernel's generation without its extension
WITHOUT = {"neon": "cortex-a57", "i8mm": "cortex-a76"}

ARM = [k for k in int8_gemm.KERNELS.values() if k.arch == "aarch64"]
X86 = [k for k in int8_gemm.KERNELS.values() if k.arch == "x86_64"]


def build(kernel, cc: str, out: Path, static: bool) -> Path:
    exe = out / f"check-{kernel.name}"
    source = ROOT / "golden" / kernel.source
    cmd = [cc, "-O2", *kernel.flags, *(["-static"] if static else []), f"-I{source.parent}"]
    done = subprocess.run(
        [*cmd, str(CHECK), str(source), "-o", str(exe)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return exe


def check_output(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("0 of ") and last.endswith(" checks failed"), done.stdout
    assert int(last.split()[2]) >= 100  # every panel width and layout ran


@pytest.mark.skipif(
    not (CROSS and QEMU) and int8_gemm.machine() != "aarch64",
    reason="no aarch64-linux-gnu-gcc and qemu-aarch64: ./run tests-arm64 installs them",
)
@pytest.mark.parametrize("kernel", ARM, ids=lambda k: k.name)
def test_arm64_kernel_under_emulation(kernel, tmp_path):
    native = int8_gemm.machine() == "aarch64"
    exe = build(kernel, "cc" if native else CROSS, tmp_path, static=not native)
    run = [str(exe)] if native else [QEMU, "-cpu", "max", str(exe)]
    check_output(subprocess.run(run, capture_output=True, text=True, timeout=300))
    if not native:  # a CPU without the extension: the kernel's own check says no
        older = subprocess.run([QEMU, "-cpu", WITHOUT[kernel.name], str(exe)], capture_output=True)
        assert older.returncode == 2, older.stdout


@pytest.mark.parametrize("kernel", X86, ids=lambda k: k.name)
def test_x86_kernel_in_c(kernel, tmp_path):
    """The same C check for the x86 kernels this CPU runs (tests/test_int8_gemm.py checks them
    through Python as well)."""
    why = int8_gemm.kernel_status(kernel.name)
    if why != "available":
        pytest.skip(f"{kernel.name}: {why}")
    exe = build(kernel, int8_gemm._compiler(), tmp_path, static=False)
    check_output(subprocess.run([str(exe)], capture_output=True, text=True, timeout=300))
