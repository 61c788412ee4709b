"""GPU training speed: the integer (NITI) CuPy backend against PyTorch training of the same
networks on the same GPU, in one process; the int8 GEMM throughput the backend reaches against
the tensor cores' dense int8 peak; and a profile of one integer training step (which kernels,
how many). Needs an NVIDIA GPU with CuPy and PyTorch. Writes the 'gpu_speed' section of
docs/benchmarks.md (and, with ``--md-out``, the same markdown to a file of its own).

Networks: lenet on mnist5k (batch 64), vgg-small-7 on random CIFAR-10-shaped int8 images
(batch 256). The headline (issue 32's targets): the integer step against PyTorch's default
(>= 1.0x, vgg-small-7 and lenet) and against bf16 (>= 0.5x, vgg-small-7), each PyTorch's
better of eager and ``torch.compile``, and the integer step's share of the int8 roofline
(>= 10%, vgg-small-7).

How each figure is measured:

- Every speed is the median, over ``--repeats`` runs (default 3), of the samples/s of
  ``--steps`` timed training steps (default 100), each run after ``--warmup`` warm-up steps
  (default 10) in the same process (kernels compiled, cuBLAS and cuDNN initialised and tuned).
- Integer side: ``golden.train.train()`` with the CupyBackend; its ``samples_per_second``
  counts the training loop alone (the test-set evaluation after it is not timed). The training
  set is large enough for the timed steps to fit in one epoch (lenet: mnist5k's 4,000 training
  images tiled), so no per-epoch evaluation falls among them. One warm-up run, then
  ``--repeats`` timed runs.
- PyTorch side: the same network built from the same spec (no biases, dropout 0.5 where the
  spec has dropout), SGD with momentum 0.9, cross-entropy, in six settings: PyTorch's default
  (fp32 with the TF32 flags as PyTorch itself sets them, read before anything changes them and
  stated in the output: ``cudnn.allow_tf32`` True, ``cuda.matmul.allow_tf32`` False), the same
  with ``torch.compile(model)``, fp32 with TF32 off (both flags False) and on (both True), bf16
  autocast with model and input in ``channels_last`` (TF32 flags off: no fp32 convolution or
  matmul is left under autocast), and bf16 with ``torch.compile``.
  ``torch.backends.cudnn.benchmark = True`` for all; the flags are restored after each.
- Roofline: ``roofline()`` gives the floor of one integer step, the larger of its
  multiply-adds at the dense int8 peak and the bytes a fused design moves at the HBM
  bandwidth (both from the data sheet of the GPU named); the table's percentage is that floor
  over the measured step time.
- Same data path on both sides. Each step takes its batch from the host int8 NHWC array (a
  fresh permutation per run, gathered on the host: ``x[idx]``, ``y[idx]``), copies images and
  labels to the GPU, and reads the predictions back to count training accuracy, which also
  synchronises every step. The integer ``train()`` loop does this itself; the PyTorch step does
  ``torch.from_numpy(x[idx]).to(device)``, then permutes the view to NCHW and converts it to
  float / 128 (NCHW-contiguous for fp32; for channels_last the permuted view already is
  channels_last in memory, so the conversion keeps it), uploads the labels the same way, and
  ends with ``logits.argmax(1).cpu()``.
- int8 GEMM: ``CupyBackend()._gemm_exact(a, b, "int8")`` (cuBLAS ``gemmEx``, int8 inputs,
  int32 accumulate) on 8192^3, operands already in the layout it takes (so cuBLAS alone is
  timed); median over ``--repeats`` of 50 back-to-back calls each; one product block checked
  against NumPy. Compared with the dense int8 peak of the GPU named (table below, longest name
  first; the entry matched is printed).
- Profile: ``torch.profiler`` (CPU and CUDA activities: CUPTI records CuPy's and cuBLAS's
  kernels as well) around exactly one integer training step, the second of a 2-step
  ``train()`` run: the key-averages table, the number of kernels launched in the step, and
  every GPU kernel whose name contains gemm, s8, i8, imma or xmma (the int8 tensor-core
  kernels) with its count and total time. ``--profile-out PATH`` writes the profile text.

Each measurement is guarded: one that raises is printed with its traceback and recorded as
"failed: <type: message>" in the table, the rest go on, and the exit status is 1. Progress
lines are printed (flushed) as each measurement completes. No figure is ever filled in
by hand: each printed one was measured in this run.

``--smoke`` runs the whole script without a GPU, to check it before GPU time is spent: the CuPy
stand-in of the tests (tests/cupy_standin.py), PyTorch on the CPU, 2 steps, 1 warm-up step,
1 repeat, vgg-small-7 at batch 32, a 256^3 GEMM, the profile with CPU activity only, and
nothing written to docs/ (``--md-out``/``--profile-out`` still honoured). Its numbers say
nothing about speed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import re
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.golden import models as M
from nitihw.golden.datasets import Dataset, load_dataset
from nitihw.golden.files import atomic_write_bytes
from nitihw.golden.train import TrainConfig, train

#: the networks measured, with their batch sizes
BATCH = {"lenet": 64, "vgg-small-7": 256}
#: dense int8 tensor-core peaks (TOPS, no sparsity), from NVIDIA's data sheets; matched against
#: the device name longest key first ("H100 PCIe" before "H100")
INT8_PEAK_TOPS = {
    "H100 PCIe": 1513.0,
    "H100 NVL": 1671.0,
    "H200 NVL": 1671.0,
    "H100": 1979.0,  # SXM
    "H200": 1979.0,  # SXM
    "A100": 624.0,
}
#: HBM bandwidth (TB/s), from NVIDIA's data sheets, matched as INT8_PEAK_TOPS is
HBM_TBS = {
    "H100 PCIe": 2.0,
    "H100 NVL": 3.9,
    "H200 NVL": 4.8,
    "H100": 3.35,  # SXM
    "H200": 4.8,  # SXM
    "A100": 2.039,  # 80 GB SXM
}
#: PyTorch settings: (column header, key). ``default`` leaves PyTorch's own precision flags as
#: they are (fp32 convolutions on TF32, fp32 matmuls not: cuDNN's and CUDA's defaults), the
#: others set them; ``-compile`` is the same with ``torch.compile`` on the model.
TORCH_MODES = [
    ("PyTorch default (fp32, its TF32 defaults)", "default"),
    ("PyTorch default + torch.compile", "default-compile"),
    ("PyTorch fp32, TF32 off", "fp32"),
    ("PyTorch fp32, TF32 on", "tf32"),
    ("PyTorch bf16 autocast, channels_last", "bf16"),
    ("PyTorch bf16 + torch.compile", "bf16-compile"),
]
#: the ratios of the headline: (column header, modes whose best is the baseline)
HEADLINE = [
    ("integer / PyTorch default (best of eager, compiled)", ("default", "default-compile")),
    ("integer / bf16 (best of eager, compiled)", ("bf16", "bf16-compile")),
    ("integer / fp32 TF32 off", ("fp32",)),
]
#: PyTorch's own precision defaults, read before anything here changes them
TORCH_DEFAULTS: dict = {}
#: GPU kernels to record: the int8 tensor-core GEMMs and anything else GEMM-like
INT8_KERNEL = re.compile(r"gemm|s8|i8|imma|xmma", re.I)
GEMM_CALLS = 50  # back-to-back GEMM calls per timed repeat

T_START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f} s] {msg}", flush=True)


# ---- guarded measurements -------------------------------------------------------------------
@dataclass
class Outcome:
    value: object = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def cell(self, fmt=lambda v: f"{v:,.0f}") -> str:
        return fmt(self.value) if self.ok else f"failed: {self.error}"


@dataclass
class Guard:
    failures: list[str] = field(default_factory=list)
    deadline: float | None = None  # seconds since the start after which nothing new starts

    def __call__(self, label: str, fn, show=lambda v: f"{v:,.0f} samples/s") -> Outcome:
        """Run ``fn()``; print ``label: <result>``, or its traceback and ``label: failed``.
        Past the deadline it is not started (``not measured: time limit``, a failure too)."""
        if self.deadline is not None and time.perf_counter() - T_START > self.deadline:
            self.failures.append(label)
            log(f"{label}: not measured: past the --deadline of {self.deadline:.0f} s")
            return Outcome(error=f"not measured: the run's {self.deadline:.0f} s limit")
        try:
            value = fn()
        except Exception as exc:
            traceback.print_exc()
            msg = " ".join(f"{type(exc).__name__}: {exc}".split())
            msg = msg[:160].replace("|", "/")
            self.failures.append(label)
            log(f"{label}: failed: {msg}")
            return Outcome(error=msg)
        log(f"{label}: {show(value)}")
        return Outcome(value)


# ---- data -----------------------------------------------------------------------------------
def random_dataset(shape, n: int, n_test: int, seed: int = 0, lo: int = -127) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.integers(lo, 128, (n + n_test, *shape), dtype=np.int8)
    y = rng.integers(0, 10, n + n_test).astype(np.int64)
    return Dataset("random", x[:n], y[:n], x[n:], y[n:])


def bench_dataset(model: str, batch: int, steps: int) -> tuple[Dataset, str]:
    """A training set of at least ``steps + 1`` batches (the timed steps fit in one epoch) and
    a test set of one batch, with a description of it."""
    need = (steps + 1) * batch
    spec = M.get_model_spec(model)
    if model != "lenet":
        return (
            random_dataset(spec.input_shape, need, batch),
            f"random int8 images of shape {spec.input_shape} (HWC) in [-127, 127], random labels",
        )
    try:
        base = load_dataset("mnist5k")
        what = "mnist5k"
    except Exception as exc:
        traceback.print_exc()
        log(f"warning: mnist5k not loadable ({type(exc).__name__}: {exc}): random MNIST data")
        base = random_dataset(spec.input_shape, 4000, batch, lo=0)
        what = f"random MNIST-shaped images (mnist5k not loadable: {type(exc).__name__})"
    reps = math.ceil(need / len(base.train_y))
    data = Dataset(
        "bench",
        np.concatenate([base.train_x] * reps),
        np.concatenate([base.train_y] * reps).astype(np.int64),
        base.test_x[:batch],
        base.test_y[:batch],
    )
    return data, f"{what}: its {len(base.train_y):,} training images tiled {reps}x"


# ---- integer side ---------------------------------------------------------------------------
def integer_run(model: str, data: Dataset, batch: int, steps: int, progress=None) -> dict:
    from nitihw.gpu.backend import CupyBackend

    cfg = TrainConfig(
        model=model, dataset="bench", backend="gpu", epochs=1, batch=batch, steps=steps
    )
    result = train(cfg, data, CupyBackend(), progress=progress)
    if result["steps"] != steps:
        raise RuntimeError(f"train() ran {result['steps']} steps, not {steps}")
    return result


def integer_speed(model, data, batch, steps, warmup, repeats) -> float:
    t0 = time.perf_counter()
    integer_run(model, data, batch, warmup)  # kernels compiled, cuBLAS initialised, pool filled
    log(f"{model} integer: warm-up ({warmup} steps) took {time.perf_counter() - t0:.1f} s")
    rates = []
    for r in range(repeats):
        rates.append(integer_run(model, data, batch, steps)["samples_per_second"])
        log(f"{model} integer: run {r + 1}/{repeats}: {rates[-1]:,.0f} samples/s")
    return statistics.median(rates)


# ---- PyTorch side ---------------------------------------------------------------------------
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


def torch_defaults() -> dict:
    """PyTorch's precision flags as it set them itself (read once, before any mode here)."""
    import torch

    if not TORCH_DEFAULTS:
        TORCH_DEFAULTS.update(
            matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
            cudnn_tf32=torch.backends.cudnn.allow_tf32,
        )
    return dict(TORCH_DEFAULTS)


@contextlib.contextmanager
def torch_flags(mode: str):
    """The TF32 flags of ``mode`` (PyTorch's own for ``default``, both off for ``fp32`` and the
    bf16 modes, both on for ``tf32``), cuDNN autotuning on; all restored after."""
    import torch

    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    defaults = torch_defaults()
    saved = (cuda.allow_tf32, cudnn.allow_tf32, cudnn.benchmark)
    try:
        if mode.startswith("default"):
            cuda.allow_tf32, cudnn.allow_tf32 = defaults["matmul_tf32"], defaults["cudnn_tf32"]
        else:
            cuda.allow_tf32 = cudnn.allow_tf32 = mode == "tf32"
        cudnn.benchmark = True
        yield
    finally:
        cuda.allow_tf32, cudnn.allow_tf32, cudnn.benchmark = saved


def torch_speed(model, data, batch, steps, warmup, repeats, mode: str, device: str) -> float:
    import torch

    bf16 = mode.startswith("bf16")
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    spec = M.get_model_spec(model)
    n = len(data.train_y)
    per_epoch = n // batch

    with torch_flags(mode):
        torch.manual_seed(0)
        module = torch_net(spec).to(device, memory_format=fmt)
        module.train()
        # compiled: the warm-up steps compile it (and cover any recompilation)
        net = torch.compile(module) if mode.endswith("-compile") else module
        opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step(i: int, order: np.ndarray) -> int:
            # the integer loop's data path: gather on the host, copy up, read predictions back
            idx = order[(i % per_epoch) * batch : (i % per_epoch + 1) * batch]
            xb, yb = data.train_x[idx], data.train_y[idx]
            x = torch.from_numpy(xb).to(device)  # int8 NHWC
            x = x.permute(0, 3, 1, 2).to(dtype=torch.float32, memory_format=fmt).mul_(1 / 128)
            y = torch.from_numpy(yb).to(device)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
                logits = net(x)
                loss = loss_fn(logits, y)
            loss.backward()
            opt.step()
            pred = logits.argmax(1).cpu().numpy()
            return int(np.sum(pred == yb))

        def sync():
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        order = np.random.default_rng([0, 999]).permutation(n)
        for i in range(warmup):
            step(i, order)
        sync()
        rates = []
        for r in range(repeats):
            order = np.random.default_rng([0, r]).permutation(n)
            t0 = time.perf_counter()
            for i in range(steps):
                step(i, order)
            sync()
            rates.append(steps * batch / (time.perf_counter() - t0))
            log(f"{model} PyTorch {mode}: run {r + 1}/{repeats}: {rates[-1]:,.0f} samples/s")
    return statistics.median(rates)


# ---- the int8 roofline ------------------------------------------------------------------------
def roofline(model: str, batch: int, peak_tops: float | None, hbm_tbs: float | None) -> dict:
    """The floors of one integer training step on the GPU named: ``compute_ms``, its
    multiply-adds (every GEMM of the forward, backward-error and weight-gradient passes, as
    ``sim.model.workload`` lowers them) at the dense int8 peak; ``memory_ms``, the bytes a
    fused design must move at the HBM bandwidth: per weight layer and pass, the int8 tensors
    behind both operands read once (an implicit-GEMM convolution reads the input, not its
    im2col rows), the int8 result written once (rescale, ReLU and pooling in the epilogue), and
    the weights read and written by the update. ``floor_ms`` is the larger."""
    from nitihw.sim.model.workload import model_workload

    macs = nbytes = 0
    for layer in model_workload(model, batch):
        passes = [("forward", layer.forward), ("backward-error", layer.backward),
                  ("weight-gradient", layer.gradient)]  # fmt: skip
        for phase, shape in passes:
            if shape is None:  # the first layer has no error to propagate
                continue
            m, _k, n = shape
            macs += math.prod(shape)
            a, b = layer.operand_elements(phase, shape)
            if phase == "forward":
                out = layer.outputs or m * n
            elif phase == "backward-error":
                out = m * n
            else:
                out = 2 * layer.weights  # the update reads and writes the weights
            nbytes += a + b + out
    compute = 2 * macs / (peak_tops * 1e12) * 1e3 if peak_tops else None
    memory = nbytes / (hbm_tbs * 1e12) * 1e3 if hbm_tbs else None
    floor = max(compute or 0, memory or 0) or None
    return {"macs": macs, "bytes": nbytes, "compute_ms": compute, "memory_ms": memory,
            "floor_ms": floor}  # fmt: skip


# ---- int8 GEMM ------------------------------------------------------------------------------
def int8_peak(name: str) -> tuple[str | None, float | None]:
    for key in sorted(INT8_PEAK_TOPS, key=len, reverse=True):
        if key in name:
            return key, INT8_PEAK_TOPS[key]
    return None, None


def int8_gemm_tops(n: int, repeats: int) -> float:
    import cupy as cp

    from nitihw.gpu.backend import CupyBackend

    be = CupyBackend()
    rng = np.random.default_rng(0)
    a_host = rng.integers(-127, 128, (n, n), dtype=np.int8)
    bt_host = rng.integers(-127, 128, (n, n), dtype=np.int8)
    a = cp.asarray(a_host)
    # b as the transpose of a row-major array: both operands already contiguous along K, so
    # the timed calls are cuBLAS alone, with no layout copy
    b = cp.asarray(bt_host).T
    for _ in range(3):
        c = be._gemm_exact(a, b, "int8")
    cp.cuda.Device().synchronize()
    k = min(n, 8)  # a corner of the product against NumPy: the timed GEMM computes A B
    want = a_host[:k].astype(np.int64) @ bt_host[:k].T.astype(np.int64)
    got = cp.asnumpy(c[:k, :k]).astype(np.int64)
    if not np.array_equal(got, want):
        raise RuntimeError("int8 GEMM result differs from NumPy's")
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(GEMM_CALLS):
            be._gemm_exact(a, b, "int8")
        cp.cuda.Device().synchronize()
        rates.append(2 * n**3 * GEMM_CALLS / (time.perf_counter() - t0) / 1e12)
    return statistics.median(rates)


# ---- profile of one integer step --------------------------------------------------------------
class ProfileStep:
    """A ``train()`` progress sink that profiles exactly the training step number ``which``
    (0-based): the profiler starts when step ``which - 1`` is done, stops when ``which`` is."""

    def __init__(self, prof, which: int):
        self.prof, self.which = prof, which
        self.done = 0
        self.active = self.captured = False
        self.seconds = 0.0

    def _start(self):
        self.prof.start()
        self.active, self.t0 = True, time.perf_counter()

    def start_epoch(self, epoch, epochs, total):
        if self.which == 0 and not (self.active or self.captured):
            self._start()

    def advance(self, n, info):
        if info is None:  # the loop's starting offset, not a step
            return
        self.done += n
        if self.active:
            self.seconds = time.perf_counter() - self.t0
            self.prof.stop()
            self.active, self.captured = False, True
        elif self.done == self.which and not self.captured:
            self._start()

    def end_epoch(self, summary):
        pass


def _is_gpu(event) -> bool:
    return str(getattr(event, "device_type", "")).endswith("CUDA")


def _gpu_us(event) -> float:
    try:
        return float(event.time_range.elapsed_us())
    except Exception:
        return float(getattr(event, "device_time_total", getattr(event, "cuda_time_total", 0)))


def _table(prof) -> str:
    errors = []
    for key in ("device_time_total", "cuda_time_total", "self_cpu_time_total"):
        try:
            return f"(sorted by {key})\n" + prof.key_averages().table(sort_by=key, row_limit=25)
        except Exception as exc:
            errors.append(f"{key}: {type(exc).__name__}: {exc}")
    return "key_averages table not available: " + "; ".join(errors)


def profile_integer_step(model, data, batch, cuda: bool) -> dict:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof = profile(activities=activities)
    sink = ProfileStep(prof, which=1)  # step 0 of the run warms up this network's buffers
    try:
        integer_run(model, data, batch, 2, progress=sink)
    finally:
        if sink.active:
            prof.stop()
    if not sink.captured:
        raise RuntimeError("the profiler did not capture a training step")
    gpu = [e for e in prof.events() if _is_gpu(e)]
    copies = [e for e in gpu if e.name.startswith(("Memcpy", "Memset"))]
    kernels = [e for e in gpu if not e.name.startswith(("Memcpy", "Memset"))]
    int8 = {}
    for e in kernels:
        if INT8_KERNEL.search(e.name):
            count, us = int8.get(e.name, (0, 0.0))
            int8[e.name] = (count + 1, us + _gpu_us(e))
    return {
        "kernels": len(kernels),
        "copies": len(copies),
        "kernel_ms": sum(_gpu_us(e) for e in kernels) / 1e3,
        "step_ms": sink.seconds * 1e3,
        "int8": dict(sorted(int8.items(), key=lambda kv: -kv[1][1])),
        "table": _table(prof),
    }


def profile_text(model: str, batch: int, p: dict) -> str:
    lines = [
        f"== profile: one integer training step of {model}, batch {batch} ==",
        f"step wall time {p['step_ms']:.2f} ms (under the profiler); {p['kernels']} GPU kernels "
        f"launched ({p['kernel_ms']:.2f} ms of kernel time), {p['copies']} memcpy/memset",
        f"GPU kernels matching /{INT8_KERNEL.pattern}/i (count, total time):",
    ]
    lines += [f"  {c:4d} x  {us / 1e3:9.3f} ms  {name}" for name, (c, us) in p["int8"].items()]
    if not p["int8"]:
        lines.append("  (none)")
    return "\n".join([*lines, "", p["table"], ""])


# ---- the run --------------------------------------------------------------------------------
@dataclass
class Options:
    steps: int = 100
    warmup: int = 10
    repeats: int = 3
    models: tuple = ("vgg-small-7", "lenet")
    batch: dict = field(default_factory=lambda: dict(BATCH))
    gemm_n: int = 8192
    torch_device: str = "cuda"
    write: bool = True
    md_out: Path | None = None
    profile_out: Path | None = None
    smoke: bool = False
    deadline: float | None = None


def versions(smoke: bool) -> dict:
    out = {"gpu": "unknown", "torch": "not importable", "cupy": "not importable"}
    try:
        import cupy as cp

        out["gpu"] = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
        if smoke:  # the stand-in's __version__ would be NumPy's
            out["cupy"] = "CPU stand-in (tests/cupy_standin.py)"
        else:
            out["cupy"] = cp.__version__
            try:
                v = cp.cuda.runtime.runtimeGetVersion()
                out["cupy"] += f" (CUDA runtime {v // 1000}.{v % 1000 // 10})"
            except Exception:
                pass
    except Exception as exc:
        out["gpu"] = f"unknown ({type(exc).__name__}: {exc})"
    try:
        import torch

        out["torch"] = torch.__version__
        out["torch_defaults"] = torch_defaults()
        if torch.cuda.is_available():
            cudnn = torch.backends.cudnn.version()
            out["torch"] += f" (CUDA {torch.version.cuda}, cuDNN {cudnn})"
            out["torch_gpu"] = torch.cuda.get_device_name(0)
    except Exception as exc:
        out["torch"] = f"not importable ({type(exc).__name__}: {exc})"
    return out


def run(opt: Options) -> int:
    guard = Guard(deadline=opt.deadline)
    env = versions(opt.smoke)
    seen_by_torch = f" (PyTorch sees {env['torch_gpu']})" if "torch_gpu" in env else ""
    log(f"GPU: {env['gpu']}{seen_by_torch}")
    log(f"torch {env['torch']}; cupy {env['cupy']}")
    log(
        f"timed steps {opt.steps}, warm-up steps {opt.warmup}, median of {opt.repeats} runs; "
        f"models {', '.join(f'{m} (batch {opt.batch[m]})' for m in opt.models)}; "
        f"PyTorch on {opt.torch_device}"
    )

    headers = ["model", "batch", "integer (CuPy) samples/s"]
    headers += [h for h, _ in TORCH_MODES] + [h for h, _ in HEADLINE]
    headers += ["integer step: % of the int8 roofline"]
    key, peak = int8_peak(env["gpu"])
    if opt.smoke and key is None:  # so that the roofline code runs too (its numbers mean nothing)
        key, peak = int8_peak("H200")
        log("smoke: the H200's data sheet stands in for the roofline")
    hbm = HBM_TBS.get(key) if key else None
    rows, data_notes, datasets, profiles, floors = [], [], {}, {}, {}
    gemm_line = "int8 GEMM: not measured yet."

    def save_md():
        """The markdown so far to ``--md-out`` (again after each stage: a run cut short by a
        time limit still leaves what it measured)."""
        if opt.md_out:
            text = markdown(opt, env, headers, rows, data_notes, gemm_line, profiles, floors)
            atomic_write_bytes(opt.md_out, (text + "\n").encode())

    for model in opt.models:
        batch = opt.batch[model]
        try:
            data, about = bench_dataset(model, batch, max(opt.steps, opt.warmup))
        except Exception as exc:  # a case without data: every cell of its row failed
            traceback.print_exc()
            guard.failures.append(f"{model} data")
            msg = " ".join(f"failed: {type(exc).__name__}: {exc}".split())[:160]
            log(f"{model} data: {msg}")
            rows.append([model, batch] + [msg] * (len(TORCH_MODES) + 1) + ["n/a"] * 4)
            continue
        datasets[model] = data
        data_notes.append(f"{model}: {about}; {len(data.train_y):,} training images")
        log(f"data: {data_notes[-1]}")
        args = (model, data, batch, opt.steps, opt.warmup, opt.repeats)
        integer = guard(f"{model} integer", functools.partial(integer_speed, *args))
        baselines = {
            key: guard(
                f"{model} PyTorch {key}",
                functools.partial(torch_speed, *args, key, opt.torch_device),
            )
            for _h, key in TORCH_MODES
        }
        ratios = []
        for header, modes in HEADLINE:
            best = [baselines[m].value for m in modes if baselines[m].ok]
            ratios.append(f"{integer.value / max(best):.2f}" if integer.ok and best else "n/a")
            log(f"{model}: {header} = {ratios[-1]}")
        floors[model] = floor = roofline(model, batch, peak, hbm)
        share = "n/a"
        if integer.ok and floor["floor_ms"]:
            step_ms = 1e3 * batch / integer.value
            share = f"{100 * floor['floor_ms'] / step_ms:.2g}%"
            log(f"{model}: integer step {step_ms:.2f} ms against its floor "
                f"{floor['floor_ms']:.3f} ms: {share} of the int8 roofline")  # fmt: skip
        rows.append(
            [model, batch, integer.cell()]
            + [baselines[k].cell() for _h, k in TORCH_MODES]
            + ratios
            + [share]
        )
        save_md()

    gemm = guard(
        f"int8 GEMM {opt.gemm_n}^3",
        functools.partial(int8_gemm_tops, opt.gemm_n, opt.repeats),
        show=lambda v: f"{v:,.1f} TOPS" if v >= 10 else f"{v:.3g} TOPS",
    )
    log(
        f"int8 peak: entry '{key}' matched '{env['gpu']}': {peak:,.0f} TOPS dense"
        if key
        else f"int8 peak: no entry of {list(INT8_PEAK_TOPS)} matches '{env['gpu']}'"
    )
    gemm_line = f"int8 GEMM ({opt.gemm_n}^3, cuBLAS gemmEx, int32 accumulate) on {env['gpu']}: "
    if gemm.ok:
        tops = f"{gemm.value:,.1f}" if gemm.value >= 10 else f"{gemm.value:.3g}"
        gemm_line += f"{tops} TOPS (median of {opt.repeats} x {GEMM_CALLS} calls)"
        if peak:
            gemm_line += (
                f", {100 * gemm.value / peak:.0f}% of the {peak:,.0f} TOPS dense int8 peak "
                f"(data-sheet entry '{key}')"
            )
    else:
        gemm_line += f"failed: {gemm.error}"
    log(gemm_line)
    save_md()

    profile_chunks = []
    for model, data in datasets.items():
        batch = opt.batch[model]
        p = guard(
            f"{model} integer step profile",
            functools.partial(profile_integer_step, model, data, batch, not opt.smoke),
            show=lambda p: f"{p['kernels']} kernels, {len(p['int8'])} GEMM/int8 kernel names",
        )
        profiles[model] = p
        if p.ok:
            text = profile_text(model, batch, p.value)
            print(text, flush=True)
            profile_chunks.append(text)
        else:
            profile_chunks.append(f"== profile of {model}: failed: {p.error} ==\n")
        if opt.profile_out:
            atomic_write_bytes(opt.profile_out, "\n".join(profile_chunks).encode())
        save_md()
    if opt.profile_out:
        log(f"wrote {opt.profile_out}")

    print()
    print_table(headers, rows)
    print(gemm_line, flush=True)
    if opt.md_out:
        log(f"wrote {opt.md_out}")
    measured = gemm.ok or any(p.ok for p in profiles.values())
    measured = measured or any(
        not str(c).startswith(("failed", "n/a")) for r in rows for c in r[2:]
    )
    if opt.write and measured:
        write_section(
            "gpu_speed", markdown(opt, env, headers, rows, data_notes, gemm_line, profiles, floors)
        )
    elif opt.write:
        log("nothing was measured: docs/benchmarks.md left as it was")
    if guard.failures:
        log(f"FAILED ({len(guard.failures)}): {', '.join(guard.failures)}")
        return 1
    log("all measurements done")
    return 0


def markdown(opt, env, headers, rows, data_notes, gemm_line, profiles, floors) -> str:
    flags = env.get("torch_defaults") or {}
    defaults = (
        f"`torch.backends.cuda.matmul.allow_tf32 = {flags.get('matmul_tf32')}`, "
        f"`torch.backends.cudnn.allow_tf32 = {flags.get('cudnn_tf32')}` as this PyTorch sets "
        "them: its fp32 convolutions run on TF32, its fp32 matmuls do not"
        if flags
        else "PyTorch's own TF32 flags (not read: PyTorch did not load)"
    )
    method = (
        f"Each speed is the median over {opt.repeats} runs of the samples/s of {opt.steps} timed "
        f"training steps, each run after {opt.warmup} warm-up steps in the same process (which "
        "also compile the `torch.compile` modes). "
        "Integer side: `golden.train.train()` with the CupyBackend, whose `samples_per_second` "
        "counts the training loop only (not the test-set evaluation after it); the training set "
        "is large enough for the timed steps to fit in one epoch, so no evaluation falls among "
        "them. PyTorch side: the same network from the same spec (no biases, dropout 0.5), SGD "
        "with momentum 0.9 and cross-entropy. **PyTorch default**: fp32 with " + defaults + "; "
        "fp32 with TF32 off (both flags `False`) and on (both `True`); bf16 autocast with model "
        "and input in `channels_last`; the default and bf16 also with `torch.compile(model)` "
        "(default mode). `torch.backends.cudnn.benchmark = True` for all (it only helps "
        "PyTorch), flags restored after each. The headline ratios take PyTorch's better of eager "
        "and compiled. Same data path on both sides: every step gathers its batch from the host "
        "int8 NHWC array (a fresh permutation per run), copies images and labels to the GPU and "
        "reads the predictions back to count training accuracy (so each step ends "
        "synchronised); the PyTorch step does `torch.from_numpy(x).to('cuda')`, permutes to "
        "NCHW and converts to float / 128 on the GPU (for channels_last the permuted view "
        "already is channels_last), and ends with `logits.argmax(1).cpu()`."
    )
    roof = []
    for model, f in floors.items():
        if not f["floor_ms"]:
            roof.append(f"- {model}: no data-sheet entry for {env['gpu']}: no floor")
            continue
        roof.append(
            f"- {model} (batch {opt.batch[model]}): {f['macs'] / 1e9:,.1f} G multiply-adds, "
            f"{f['compute_ms']:.3f} ms at the dense int8 peak; {f['bytes'] / 1e6:,.1f} MB for "
            f"a fused design, {f['memory_ms']:.3f} ms at the HBM bandwidth; floor "
            f"{f['floor_ms']:.3f} ms"
        )
    parts = [
        "## GPU training speed: integer CuPy backend vs PyTorch",
        f"`python bench/gpu_speed.py` (commit {git_rev()}, {machine()}; GPU {env['gpu']}; "
        f"torch {env['torch']}; CuPy {env['cupy']}).",
        method,
        "Data: " + "; ".join(data_notes) + "." if data_notes else "Data: none loaded.",
        markdown_table(headers, rows),
        "The int8 roofline of one integer step (`roofline()`: every GEMM of the three passes "
        "at the data sheet's dense int8 peak, and the bytes a fused design must move, each "
        "operand tensor read once and each int8 result written once, at its HBM bandwidth; the "
        "percentage is that floor over the measured step):\n\n" + "\n".join(roof or ["- none"]),
        gemm_line + ".",
    ]
    prof_lines = []
    for model, p in profiles.items():
        if not p.ok:
            prof_lines.append(f"- {model}: profile failed: {p.error}")
            continue
        v = p.value
        prof_lines.append(
            f"- {model} (batch {opt.batch[model]}): {v['kernels']} GPU kernels per step "
            f"({v['kernel_ms']:.2f} ms of kernel time; step {v['step_ms']:.2f} ms wall under the "
            f"profiler), {v['copies']} memcpy/memset. GEMM/int8 kernels:"
        )
        prof_lines += [
            f"  - `{name}`: {c} x, {us / 1e3:.3f} ms" for name, (c, us) in v["int8"].items()
        ] or ["  - none recorded"]
    if prof_lines:
        parts.append(
            "Profile of one integer training step (`torch.profiler`, "
            f"{'CPU activity only' if opt.smoke else 'CPU and CUDA activities'}; "
            "the second step of a 2-step `train()` run), GPU kernels whose names contain gemm, "
            "s8, i8, imma or xmma:\n\n" + "\n".join(prof_lines)
        )
    return "\n\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=100, help="timed steps per run (default 100)")
    ap.add_argument("--warmup", type=int, default=10, help="warm-up steps (default 10)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure, median (default 3)")
    ap.add_argument(
        "--models",
        default="vgg-small-7,lenet",
        help=f"comma-separated, of {', '.join(BATCH)} (default: both)",
    )
    ap.add_argument("--gemm-n", type=int, default=8192, help="GEMM size n^3 (default 8192)")
    ap.add_argument("--md-out", type=Path, help="also write the markdown section to this file")
    ap.add_argument("--profile-out", type=Path, help="write the profile text to this file")
    ap.add_argument("--no-write", action="store_true", help="leave docs/benchmarks.md alone")
    ap.add_argument(
        "--deadline",
        type=float,
        help="start no measurement after this many seconds (each is then 'not measured', so "
        "that a time-limited run still writes its table)",
    )
    ap.add_argument("--smoke", action="store_true", help="check the script without a GPU")
    args = ap.parse_args()
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    unknown = [m for m in models if m not in BATCH]
    if unknown or not models:
        ap.error(f"--models: {unknown or 'none given'}; choose from {', '.join(BATCH)}")
    for name in ("steps", "warmup", "repeats", "gemm_n"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    opt = Options(
        steps=args.steps,
        warmup=args.warmup,
        repeats=args.repeats,
        models=models,
        gemm_n=args.gemm_n,
        write=not args.no_write,
        md_out=args.md_out,
        profile_out=args.profile_out,
        deadline=args.deadline,
    )
    if not args.smoke:
        return run(opt)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests import cupy_standin

    opt.steps, opt.warmup, opt.repeats, opt.gemm_n = 2, 1, 1, 256
    opt.batch["vgg-small-7"] = 32  # the stand-in takes ~37 s per step at batch 256
    opt.torch_device, opt.write, opt.smoke = "cpu", False, True
    with cupy_standin.installed():
        return run(opt)


if __name__ == "__main__":
    sys.exit(main())
