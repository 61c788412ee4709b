"""The golden model's int8 GEMM kernels against float32 OpenBLAS on LeNet's GEMMs.

Every GEMM of one LeNet training step at batch 64 (the shapes and operand layouts the golden
model runs: forward, backward error, weight gradient), single-threaded, side by side in one
run: each compiled int8 kernel this CPU can run (forced, as ``NITIHW_KERNELS`` would), float32
OpenBLAS on operands already converted (``sgemm`` alone, the bar the issue sets), and the
golden model's float route as it runs without a kernel (conversions, exactness split and range
included). Times are the best of ``--repeat`` calls after a warm-up. The ARM64 kernel is
checked under qemu-aarch64 (tests/test_int8_gemm_arm64.py), where times mean nothing: it is
timed only on an ARM64 machine. Writes the 'int8_kernels' section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.golden import int8_gemm
from nitihw.golden.gemm import exact_matmul_range
from nitihw.golden.parallel import blas_threads

#: LeNet at batch 64: (layer, phase, M, K, N, layout); layout: which operand is a transposed
#: view, as the golden model passes them ("b.T": B is the transpose of a row-major (N, K)
#: array; "a.T": A is the transpose of a row-major (K, M) array)
GEMMS = [
    ("conv1", "forward", 36864, 25, 20, "b.T"),
    ("conv2", "forward", 4096, 500, 50, "b.T"),
    ("fc1", "forward", 64, 800, 500, "b.T"),
    ("fc2", "forward", 64, 500, 10, "b.T"),
    ("fc2", "backward-error", 64, 10, 500, ""),
    ("fc2", "weight-gradient", 10, 64, 500, "a.T"),
    ("fc1", "backward-error", 64, 500, 800, ""),
    ("fc1", "weight-gradient", 500, 64, 800, "a.T"),
    ("conv2", "backward-error", 9216, 1250, 20, ""),
    ("conv2", "weight-gradient", 50, 4096, 500, "a.T"),
    ("conv1", "weight-gradient", 20, 36864, 25, "a.T"),
]


def operands(m: int, k: int, n: int, layout: str, rng) -> tuple[np.ndarray, np.ndarray]:
    """int8 operands in ``[-127, 127]`` (NITI's symmetric range) in the given layout."""
    a = rng.integers(-127, 128, (k, m) if layout == "a.T" else (m, k)).astype(np.int8)
    b = rng.integers(-127, 128, (n, k) if layout == "b.T" else (k, n)).astype(np.int8)
    return (a.T if layout == "a.T" else a), (b.T if layout == "b.T" else b)


def best(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7, help="timed calls per GEMM and path")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()

    kernels = [k for k in int8_gemm.KERNELS if int8_gemm.kernel_status(k) == "available"]
    skipped = {k: int8_gemm.kernel_status(k) for k in int8_gemm.KERNELS if k not in kernels}
    rng = np.random.default_rng(0)
    paths = [*kernels, "float32 OpenBLAS", "golden float route"]
    totals = dict.fromkeys(paths, 0.0)
    rows = []
    with blas_threads(1):
        for layer, phase, m, k, n, layout in GEMMS:
            a, b = operands(m, k, n, layout, rng)
            want = a.astype(np.int64) @ b.astype(np.int64)
            times = {}
            for name in kernels:
                with int8_gemm.forced(name):
                    got = int8_gemm.matmul_range(a, b)[0]
                    if not np.array_equal(got, want):
                        raise SystemExit(f"{name} is not exact on {layer} {phase}")
                    times[name] = best(lambda a=a, b=b: int8_gemm.matmul_range(a, b), args.repeat)
            af, bf = a.astype(np.float32), b.astype(np.float32)
            times["float32 OpenBLAS"] = best(lambda af=af, bf=bf: af @ bf, args.repeat)
            with int8_gemm.turned_off():
                times["golden float route"] = best(
                    lambda a=a, b=b: exact_matmul_range(a, b), args.repeat
                )
            for p in paths:
                totals[p] += times[p]
            ref = times["float32 OpenBLAS"]
            rows.append(
                [f"{layer} {phase}", f"{m}x{k}x{n}"]
                + [f"{times[p] * 1e6:,.0f} ({ref / times[p]:.2f}x)" for p in paths]
            )
    ref = totals["float32 OpenBLAS"]
    rows.append(
        ["**one step's GEMMs**", ""]
        + [f"**{totals[p] * 1e6:,.0f} ({ref / totals[p]:.2f}x)**" for p in paths]
    )
    headers = ["GEMM", "M x K x N", *(f"{p} us (speed-up)" for p in paths)]
    print_table(headers, rows)
    for name, why in skipped.items():
        print(f"not timed: {name} ({why})")
    if not args.no_write:
        body = (
            "## The golden model's int8 GEMM kernels against float32 OpenBLAS (LeNet's GEMMs)\n\n"
            f"`.venv/bin/python bench/int8_kernels.py` (commit {git_rev()}, {machine()}). "
            "Every GEMM of one LeNet step at batch 64, in the operand layouts the golden model "
            "passes, single-threaded; best of "
            f"{args.repeat} calls. Each kernel forced (as `NITIHW_KERNELS=NAME` does); "
            "*float32 OpenBLAS*: `sgemm` on operands already converted; *golden float route*: "
            "what the golden model runs without a kernel (conversions and range included). "
            "In brackets: the speed-up over float32 OpenBLAS. "
            + "".join(f"Not timed here: {k} ({why}). " for k, why in skipped.items())
            + "\n\n"
            + markdown_table(headers, rows)
        )
        write_section("int8_kernels", body)


if __name__ == "__main__":
    main()
