"""Golden-model training speed against PyTorch fp32 on the CPU, idle and on a busy machine.

The same LeNet (no bias) on mnist5k, batch 64, measured side by side in one run: nitihw's
golden model (profile niti) and PyTorch fp32 (SGD with momentum 0.9, default threads). Every
measurement is a fresh process (PyTorch's OpenMP threads keep spinning after their work, and
would slow whatever ran next in the same process), measured after a warm-up, and the rounds
alternate between the configurations; the median of the rounds is reported.

Three situations:
- idle: nothing else runs;
- busy: next to another process doing float64 NumPy matrix products with its default (one
  per core) BLAS threads, the other job a two-experiment machine or a sweep's other worker
  would run;
- pair: two golden trainings started at once.

Golden configurations: the default (BLAS single-threaded, one worker thread per core, the best
int8 GEMM kernel this CPU has), one worker thread, BLAS with its default threads and no workers
(how the golden model ran before: OpenBLAS splits each GEMM), and the int8 paths a CPU without
AVX-512 VNNI takes, forced with ``NITIHW_KERNELS``: the AVX2 kernel, and no kernel at all (the
float32 BLAS routes, what AVX2-only machines ran before the AVX2 kernel).

An AVX2-only machine, emulated on one with AVX-512 (``AVX2_ONLY``): the golden model with the
AVX2 kernel and NumPy, Numba and OpenBLAS held to AVX2, against PyTorch held to AVX2 (its own
kernels, oneDNN's and MKL's), each by the library's documented switch. Both sides then run
the instructions such a CPU has, on the same cores in the same minutes.

Needs the bench extra (``pip install -e '.[bench]'``, PyTorch's CPU build). Writes the
'golden_speed' section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

#: every library held to the instructions of an AVX2-only x86 CPU (Haswell to Zen 3)
AVX2_ONLY = {
    "golden": {
        "NITIHW_KERNELS": "avx2",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # NumPy's AVX-512 loops
        "NUMBA_CPU_NAME": "haswell",  # the Numba kernels compiled for AVX2
        "OPENBLAS_CORETYPE": "Haswell",
    },
    "torch": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    },
}
#: golden configurations: worker settings, and ``env`` (the measuring process's environment)
GOLDEN = {
    "golden (default)": {"threads": None, "blas": 1},
    "golden --threads 1": {"threads": 1, "blas": 1},
    "golden, OpenBLAS threads": {"threads": 1, "blas": None},
    "golden, AVX2 kernel": {"threads": None, "blas": 1, "env": {"NITIHW_KERNELS": "avx2"}},
    "golden, no int8 kernel (float32 BLAS)": {
        "threads": None,
        "blas": 1,
        "env": {"NITIHW_KERNELS": "blas"},
    },
    "golden, AVX2-only machine": {"threads": None, "blas": 1, "env": AVX2_ONLY["golden"]},
}
TORCH = "PyTorch fp32"
TORCH_AVX2 = "PyTorch fp32, AVX2-only machine"
TORCHES = {TORCH: {}, TORCH_AVX2: AVX2_ONLY["torch"]}


def peer(config: str) -> str:
    """The PyTorch configuration a configuration is compared with: the one that runs the same
    instructions (the AVX2-only machine's with its own)."""
    on_avx2 = config == TORCH_AVX2 or GOLDEN.get(config, {}).get("env") is AVX2_ONLY["golden"]
    return TORCH_AVX2 if on_avx2 else TORCH


HOG = (
    "import numpy as np\n"
    "a = np.random.default_rng(0).random((768, 768))\n"
    "while True:\n"
    "    a = (a @ a) / 768.0\n"
)


# ---- the measured processes --------------------------------------------------------------
def worker_golden(threads, blas, steps: int) -> float:
    from nitihw.golden.backend import NumpyBackend
    from nitihw.golden.datasets import load_dataset
    from nitihw.golden.train import TrainConfig, train

    class Backend(NumpyBackend):
        def session(self):  # blas None: leave BLAS at its own default threads
            return super().session() if blas == 1 else contextlib.nullcontext()

    data = load_dataset("mnist5k")
    data.test_x, data.test_y = data.test_x[:1], data.test_y[:1]  # evaluation is not timed

    def run(n):
        cfg = TrainConfig(model="lenet", dataset="mnist5k", epochs=1000, batch=64, steps=n)
        return train(cfg, data, Backend(threads=threads))

    run(3)  # warm-up: kernels loaded, caches and allocator settled
    return run(steps)["samples_per_second"]


def worker_torch(steps: int) -> float:
    import numpy as np
    import torch

    from nitihw.golden.datasets import load_dataset

    data = load_dataset("mnist5k")
    x = torch.tensor(data.train_x, dtype=torch.float32).permute(0, 3, 1, 2).contiguous() / 128
    y = torch.tensor(data.train_y, dtype=torch.long)
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(1, 20, 5, bias=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5, bias=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500, bias=False),
        nn.ReLU(),
        nn.Linear(500, 10, bias=False),
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    order = np.random.default_rng(0).permutation(len(y))

    def run(n):
        t0 = time.perf_counter()
        for i in range(n):
            idx = torch.from_numpy(order[(i * 64) % (len(order) - 64) :][:64])
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
        return n * 64 / (time.perf_counter() - t0)

    run(5)
    return run(steps)


def measure(config: str, steps: int) -> subprocess.Popen:
    """Start one measurement process; its stdout is one JSON number (samples/s). A
    configuration's ``env`` is added to that process's environment (none of the switches it
    names is inherited from this one)."""
    args = [sys.executable, __file__, "--worker", config, "--steps", str(steps)]
    switches = {*AVX2_ONLY["golden"], *AVX2_ONLY["torch"]}
    env = {k: v for k, v in os.environ.items() if k not in switches}
    env.update(GOLDEN[config].get("env", {}) if config in GOLDEN else TORCHES[config])
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)


def result(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a measurement process failed (exit {proc.returncode})")
    return float(json.loads(out))


# ---- the orchestration -------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300, help="timed steps per measurement")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    # a kill of this process ends the busy job too (the `finally` below runs): a busy job
    # left behind had skewed every measurement made on the machine after it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench/golden_speed.py: terminated"))
    if args.worker:
        if args.worker in TORCHES:
            print(json.dumps(worker_torch(args.steps)))
        else:
            settings = {k: v for k, v in GOLDEN[args.worker].items() if k != "env"}
            print(json.dumps(worker_golden(**settings, steps=args.steps)))
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("bench/golden_speed.py needs PyTorch: pip install -e '.[bench]'") from None

    configs = [*GOLDEN, *TORCHES]
    idle = {c: [] for c in configs}
    busy = {c: [] for c in configs}
    pair = {c: [] for c in GOLDEN}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
        for c in configs:
            idle[c].append(result(measure(c, args.steps)))
        hog = subprocess.Popen([sys.executable, "-c", HOG])
        try:
            time.sleep(1.0)  # the other job is up to speed
            for c in configs:
                busy[c].append(result(measure(c, args.steps)))
        finally:
            hog.kill()
            hog.wait()
        for c in GOLDEN:
            both = [measure(c, args.steps) for _ in range(2)]
            pair[c].extend(result(p) for p in both)
    med = {c: statistics.median(v) for c, v in idle.items()}
    headers = [
        "configuration",
        "idle samples/s",
        "/ PyTorch idle, same instructions",
        "busy samples/s",
        "busy / idle",
        "pair samples/s (each)",
        "pair / idle",
    ]
    rows = []
    for c in configs:
        b = statistics.median(busy[c])
        p = statistics.median(pair[c]) if c in pair else None
        rows.append(
            [
                c,
                f"{med[c]:,.0f}",
                f"{med[c] / med[peer(c)]:.2f}",
                f"{b:,.0f}",
                f"{b / med[c]:.2f}",
                "-" if p is None else f"{p:,.0f}",
                "-" if p is None else f"{p / med[c]:.2f}",
            ]
        )
    print_table(headers, rows)
    if not args.no_write:
        body = (
            "## Golden model speed against PyTorch fp32 (CPU), idle and busy\n\n"
            f"`.venv/bin/python bench/golden_speed.py` (commit {git_rev()}, {machine()}). "
            "LeNet (no bias) on mnist5k, batch 64: the golden model (profile niti) and PyTorch "
            "fp32 (SGD, momentum 0.9, its default threads), each measurement a fresh process "
            f"timing {args.steps} steps after a warm-up; median of {args.rounds} alternating "
            "rounds. *busy*: next to a process doing float64 NumPy matrix products with its "
            "default BLAS threads; *pair*: two golden trainings started at once (each one's "
            "rate). *golden, OpenBLAS threads*: BLAS with its default threads and no worker "
            "threads, the threading of the golden model before issue 14. *AVX2 kernel* and *no "
            "int8 kernel*: the paths of a CPU without AVX-512 VNNI, forced with "
            "`NITIHW_KERNELS=avx2` and `NITIHW_KERNELS=blas` (golden's int8 GEMMs on float32 "
            "BLAS, what such CPUs ran before the AVX2 kernel). *AVX2-only machine*: this machine "
            "held to AVX2 by each library's own switch, on both sides (golden: "
            + ", ".join(f"`{k}={v}`" for k, v in AVX2_ONLY["golden"].items())
            + "; PyTorch: "
            + ", ".join(f"`{k}={v}`" for k, v in AVX2_ONLY["torch"].items())
            + "), each compared with the PyTorch row of its machine; every other row with "
            "PyTorch's default.\n\n" + markdown_table(headers, rows)
        )
        write_section("golden_speed", body)


if __name__ == "__main__":
    main()
