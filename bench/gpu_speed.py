"""GPU training speed: the integer (NITI) CuPy backend against PyTorch fp32 and bf16 (autocast)
training of the same networks, on the same GPU, in one run; and the int8 GEMM throughput the
backend reaches against the tensor cores' int8 peak. Needs an NVIDIA GPU with CuPy and
PyTorch. Writes the 'gpu_speed' section of docs/benchmarks.md.

lenet: MNIST shapes (mnist5k), batch 64. vgg-small-7: CIFAR-10 shapes, batch 256, random data.
Target: the integer step at least as fast as PyTorch fp32 on vgg-small-7.

``--smoke`` runs the whole script without a GPU, to check it before GPU time is spent: the CuPy
stand-in of the tests (tests/cupy_standin.py) and PyTorch on the CPU, 2 steps, small GEMM,
nothing written. Its numbers say nothing about speed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.golden import models as M
from nitihw.golden.datasets import Dataset, load_dataset
from nitihw.golden.train import TrainConfig, train

# dense int8 tensor-core peaks (TOPS), from NVIDIA's data sheets
INT8_PEAK_TOPS = {"H100": 1979.0, "H200": 1979.0, "A100": 624.0}


def random_dataset(shape, n, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.integers(-127, 128, (n, *shape)).astype(np.int8)
    y = rng.integers(0, 10, n)
    return Dataset("random", x, y, x[:256], y[:256])


def integer_speed(model: str, data: Dataset, batch: int, steps: int) -> float:
    from nitihw.gpu.backend import CupyBackend

    cfg = TrainConfig(
        model=model, dataset="bench", backend="gpu", epochs=1000, batch=batch, steps=2
    )
    train(cfg, data, CupyBackend())  # warm-up: kernels compiled, cuBLAS initialised
    cfg.steps = steps
    return train(cfg, data, CupyBackend())["samples_per_second"]


def torch_net(spec: M.ModelSpec):
    import torch.nn as nn

    layers, c = [], spec.input_shape[2]
    for _i, layer, in_shape, out_shape in M.layer_shapes(spec):
        if isinstance(layer, M.Conv):
            layers.append(
                nn.Conv2d(c, layer.out_channels, layer.kernel, padding=layer.pad, bias=False)
            )
            c = layer.out_channels
        elif isinstance(layer, M.ReLU):
            layers.append(nn.ReLU())
        elif isinstance(layer, M.MaxPool):
            layers.append(nn.MaxPool2d(layer.kernel))
        elif isinstance(layer, M.Flatten):
            layers.append(nn.Flatten())
        elif isinstance(layer, M.Dropout):
            layers.append(nn.Dropout(0.5))
        elif isinstance(layer, M.Linear):
            layers.append(nn.Linear(in_shape[0], out_shape[0], bias=False))
    return nn.Sequential(*layers)


def torch_speed(model: str, batch: int, steps: int, bf16: bool, device: str = "cuda") -> float:
    import torch

    spec = M.get_model_spec(model)
    net = torch_net(spec).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    h, w, c = spec.input_shape
    x = torch.randn(batch, c, h, w, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(5):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * batch / (time.perf_counter() - t0)


def int8_gemm_tops(n: int = 8192, reps: int = 20) -> tuple[float, str]:
    import cupy as cp

    from nitihw.gpu.backend import CupyBackend

    be = CupyBackend()
    rng = np.random.default_rng(0)
    a = cp.asarray(rng.integers(-127, 128, (n, n), dtype=np.int8))
    # b as the transpose of a row-major array: both operands already contiguous along K, so
    # the timed calls are cuBLAS alone, with no layout copy
    b = cp.asarray(rng.integers(-127, 128, (n, n), dtype=np.int8)).T
    be._gemm_exact(a, b, "int8")
    cp.cuda.Device().synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        be._gemm_exact(a, b, "int8")
    cp.cuda.Device().synchronize()
    tops = 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12
    name = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return tops, name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="check the script without a GPU")
    args = ap.parse_args()
    if args.smoke:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests import cupy_standin

        with cupy_standin.installed():
            run(steps=2, write=False, torch_device="cpu", gemm_n=256)
    else:
        run(args.steps, not args.no_write)


def run(steps: int, write: bool, torch_device: str = "cuda", gemm_n: int = 8192) -> None:
    cases = [
        ("lenet", load_dataset("mnist5k"), 64),
        ("vgg-small-7", random_dataset((32, 32, 3), 256 * 4), 256),
    ]
    rows = []
    for model, data, batch in cases:
        i = integer_speed(model, data, batch, steps)
        f = torch_speed(model, batch, steps, False, torch_device)
        h = torch_speed(model, batch, steps, True, torch_device)
        rows.append([model, batch, f"{i:,.0f}", f"{f:,.0f}", f"{h:,.0f}", f"{i / f:.2f}"])
    tops, name = int8_gemm_tops(gemm_n)
    peak = next((v for k, v in INT8_PEAK_TOPS.items() if k in name), None)
    headers = [
        "model",
        "batch",
        "integer (CuPy) samples/s",
        "PyTorch fp32 samples/s",
        "PyTorch bf16 samples/s",
        "integer / fp32",
    ]
    print_table(headers, rows)
    gemm_line = f"int8 GEMM ({gemm_n}^3, cuBLAS, int32 accumulate) on {name}: {tops:,.0f} TOPS" + (
        f", {100 * tops / peak:.0f}% of the {peak:,.0f} TOPS dense int8 peak" if peak else ""
    )
    print(gemm_line)
    if write:
        write_section(
            "gpu_speed",
            (
                "## GPU training speed: integer CuPy backend vs PyTorch\n\n"
                f"`python bench/gpu_speed.py` (commit {git_rev()}, {machine()}, GPU {name}). "
                f"{steps} timed steps after warm-up; vgg-small-7 on random CIFAR-shaped "
                "data.\n\n" + markdown_table(headers, rows) + "\n\n" + gemm_line
            ),
        )


if __name__ == "__main__":
    main()
