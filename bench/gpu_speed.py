"""GPU training speed: the integer (NITI) CuPy backend against PyTorch training of the same
networks on the same GPU, in one process; the int8 GEMM throughput the backend reaches against
the tensor cores' dense int8 peak; and a profile of one integer training step (which kernels,
how many). Needs an NVIDIA GPU with CuPy and PyTorch. Writes the 'gpu_speed' section of
docs/benchmarks.md (and, with ``--md-out``, the same markdown to a file of its own).

Networks: lenet on mnist5k (batch 64), vgg-small-7 on random CIFAR-10-shaped int8 images
(batch 256). Target: the integer step at least as fast as PyTorch fp32 on vgg-small-7.

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
  spec has dropout), SGD with momentum 0.9, cross-entropy, in three settings: fp32 with TF32
  off (``torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False``),
  fp32 with TF32 on (both True), and bf16 autocast with model and input in ``channels_last``
  (TF32 flags off: no fp32 convolution or matmul is left under autocast).
  ``torch.backends.cudnn.benchmark = True`` for all three; the flags are restored after each.
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
#: PyTorch settings: (column header, key)
TORCH_MODES = [
    ("PyTorch fp32 (TF32 off) samples/s", "fp32"),
    ("PyTorch fp32 (TF32 on) samples/s", "tf32"),
    ("PyTorch bf16 channels_last samples/s", "bf16"),
]
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

    def __call__(self, label: str, fn, show=lambda v: f"{v:,.0f} samples/s") -> Outcome:
        """Run ``fn()``; print ``label: <result>``, or its traceback and ``label: failed``."""
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


@contextlib.contextmanager
def torch_flags(tf32: bool):
    """TF32 for matmuls and cuDNN on or off, cuDNN autotuning on; all three restored after."""
    import torch

    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (cuda.allow_tf32, cudnn.allow_tf32, cudnn.benchmark)
    try:
        cuda.allow_tf32 = cudnn.allow_tf32 = tf32
        cudnn.benchmark = True
        yield
    finally:
        cuda.allow_tf32, cudnn.allow_tf32, cudnn.benchmark = saved


def torch_speed(model, data, batch, steps, warmup, repeats, mode: str, device: str) -> float:
    import torch

    bf16 = mode == "bf16"
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    spec = M.get_model_spec(model)
    n = len(data.train_y)
    per_epoch = n // batch

    with torch_flags(tf32=mode == "tf32"):
        torch.manual_seed(0)
        net = torch_net(spec).to(device, memory_format=fmt)
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
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
    models: tuple = ("lenet", "vgg-small-7")
    batch: dict = field(default_factory=lambda: dict(BATCH))
    gemm_n: int = 8192
    torch_device: str = "cuda"
    write: bool = True
    md_out: Path | None = None
    profile_out: Path | None = None
    smoke: bool = False


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
        if torch.cuda.is_available():
            cudnn = torch.backends.cudnn.version()
            out["torch"] += f" (CUDA {torch.version.cuda}, cuDNN {cudnn})"
            out["torch_gpu"] = torch.cuda.get_device_name(0)
    except Exception as exc:
        out["torch"] = f"not importable ({type(exc).__name__}: {exc})"
    return out


def run(opt: Options) -> int:
    guard = Guard()
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
    headers += [h for h, _ in TORCH_MODES] + ["integer / fp32 (TF32 off)"]
    rows, data_notes, datasets, profiles = [], [], {}, {}
    gemm_line = "int8 GEMM: not measured yet."

    def save_md():
        """The markdown so far to ``--md-out`` (again after each stage: a run cut short by a
        time limit still leaves what it measured)."""
        if opt.md_out:
            text = markdown(opt, env, headers, rows, data_notes, gemm_line, profiles)
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
            rows.append([model, batch] + [msg] * (len(TORCH_MODES) + 1) + ["n/a"])
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
        fp32 = baselines["fp32"]
        ratio = f"{integer.value / fp32.value:.2f}" if integer.ok and fp32.ok else "n/a"
        rows.append(
            [model, batch, integer.cell()]
            + [baselines[k].cell() for _h, k in TORCH_MODES]
            + [ratio]
        )
        log(f"{model}: integer / PyTorch fp32 (TF32 off) = {ratio}")
        save_md()

    gemm = guard(
        f"int8 GEMM {opt.gemm_n}^3",
        functools.partial(int8_gemm_tops, opt.gemm_n, opt.repeats),
        show=lambda v: f"{v:,.1f} TOPS" if v >= 10 else f"{v:.3g} TOPS",
    )
    key, peak = int8_peak(env["gpu"])
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
            "gpu_speed", markdown(opt, env, headers, rows, data_notes, gemm_line, profiles)
        )
    elif opt.write:
        log("nothing was measured: docs/benchmarks.md left as it was")
    if guard.failures:
        log(f"FAILED ({len(guard.failures)}): {', '.join(guard.failures)}")
        return 1
    log("all measurements done")
    return 0


def markdown(opt, env, headers, rows, data_notes, gemm_line, profiles) -> str:
    method = (
        f"Each speed is the median over {opt.repeats} runs of the samples/s of {opt.steps} timed "
        f"training steps, each run after {opt.warmup} warm-up steps in the same process. "
        "Integer side: `golden.train.train()` with the CupyBackend, whose `samples_per_second` "
        "counts the training loop only (not the test-set evaluation after it); the training set "
        "is large enough for the timed steps to fit in one epoch, so no evaluation falls among "
        "them. PyTorch side: the same network from the same spec (no biases, dropout 0.5), SGD "
        "with momentum 0.9 and cross-entropy, as fp32 with TF32 off "
        "(`torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False`), "
        "fp32 with TF32 on (both `True`), and bf16 autocast with model and input in "
        "`channels_last`; `torch.backends.cudnn.benchmark = True` for all, flags restored after "
        "each. Same data path on both sides: every step gathers its batch from the host int8 "
        "NHWC array (a fresh permutation per run), copies images and labels to the GPU and reads "
        "the predictions back to count training accuracy (so each step ends synchronised); the "
        "PyTorch step does `torch.from_numpy(x).to('cuda')`, permutes to NCHW and converts to "
        "float / 128 on the GPU (for channels_last the permuted view already is channels_last), "
        "and ends with `logits.argmax(1).cpu()`."
    )
    parts = [
        "## GPU training speed: integer CuPy backend vs PyTorch",
        f"`python bench/gpu_speed.py` (commit {git_rev()}, {machine()}; GPU {env['gpu']}; "
        f"torch {env['torch']}; CuPy {env['cupy']}).",
        method,
        "Data: " + "; ".join(data_notes) + "." if data_notes else "Data: none loaded.",
        markdown_table(headers, rows),
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
        default="lenet,vgg-small-7",
        help=f"comma-separated, of {', '.join(BATCH)} (default: both)",
    )
    ap.add_argument("--gemm-n", type=int, default=8192, help="GEMM size n^3 (default 8192)")
    ap.add_argument("--md-out", type=Path, help="also write the markdown section to this file")
    ap.add_argument("--profile-out", type=Path, help="write the profile text to this file")
    ap.add_argument("--no-write", action="store_true", help="leave docs/benchmarks.md alone")
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
