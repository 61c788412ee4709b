"""Where a golden LeNet step spends its time: milliseconds per step for each Backend operation.

Every public operation of the golden backend (GEMMs, convolutions, range, rescale, update,
pooling, ReLU, the loss) is timed where the training step calls it, over STEPS steps of LeNet
on mnist5k (batch 64), once with one worker thread and once with one per core. A
convolution's time includes its GEMM; the weight-gradient GEMMs that run alongside the error
path (``gemm_later``) are timed where their result is taken. Writes the 'golden_profile'
section of docs/benchmarks.md (docs/golden_speed.md explains the figures).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.golden.backend import NumpyBackend, NumpyHostOps, OpTag
from nitihw.golden.datasets import load_dataset
from nitihw.golden.parallel import default_threads
from nitihw.golden.train import TrainConfig, train

OPS = (
    "conv",
    "conv_error",
    "gemm",
    "gemm_later",
    "bitwidth",
    "rescale",
    "update",
    "update_master",
)
#: the host operations timed (the backend's ``host`` component's)
HOST_OPS = ("relu", "relu_backward", "maxpool", "maxpool_backward", "cross_entropy_error", "argmax")


class TimedBackend(NumpyBackend):
    """The golden backend with a stopwatch around every operation the step calls."""

    def __init__(self, threads: int):
        super().__init__(threads=threads)
        self.host = TimedHost(self)
        self.times: dict = collections.defaultdict(float)
        self._depth = 0  # an operation inside another (a conv's GEMM) counts in the outer one

    def _timed(self, name, fn, args, kw):
        if self._depth:
            return fn(*args, **kw)
        tag = next((a for a in (*args, *kw.values()) if isinstance(a, OpTag)), None)
        key = (name, tag.layer if tag else "", tag.phase if tag else "")
        t0 = time.perf_counter()
        self._depth += 1
        try:
            out = fn(*args, **kw)
        finally:
            self._depth -= 1
        if name == "gemm_later":  # time the wait where the result is taken
            inner = out

            def taken():
                t1 = time.perf_counter()
                self._depth += 1
                try:
                    result = inner()
                finally:
                    self._depth -= 1
                self.times[key] += time.perf_counter() - t1
                return result

            self.times[key] += time.perf_counter() - t0
            return taken
        self.times[key] += time.perf_counter() - t0
        return out


class TimedHost(NumpyHostOps):
    """The golden host operations, each timed by the backend ``clock``."""

    def __init__(self, clock: TimedBackend):
        self.clock = clock


def _wrap(cls, name):
    base = getattr(cls, name)

    def timed(self, *args, **kw):
        clock = getattr(self, "clock", self)
        return clock._timed(name, lambda *a, **k: base(self, *a, **k), args, kw)

    return timed


for _name in OPS:
    setattr(TimedBackend, _name, _wrap(NumpyBackend, _name))
for _name in HOST_OPS:
    setattr(TimedHost, _name, _wrap(NumpyHostOps, _name))


def profile(threads: int, steps: int, data) -> tuple[dict, float]:
    cfg = TrainConfig(model="lenet", dataset="mnist5k", epochs=1000, batch=64, steps=3)
    train(cfg, data, TimedBackend(threads))  # warm-up
    be = TimedBackend(threads)
    cfg.steps = steps
    result = train(cfg, data, be)
    return be.times, 1000 * result["seconds"] / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--top", type=int, default=14, help="rows of the table")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    data = load_dataset("mnist5k")
    data.test_x, data.test_y = data.test_x[:1], data.test_y[:1]  # evaluation is not profiled
    many = default_threads()
    one, step_one = profile(1, args.steps, data)
    par, step_par = profile(many, args.steps, data)
    keys = sorted(one, key=lambda k: -one[k])[: args.top]
    headers = ["operation", "layer", "phase", "ms/step, 1 thread", f"ms/step, {many} threads"]
    ms = lambda times, k: f"{1000 * times.get(k, 0.0) / args.steps:.2f}"  # noqa: E731
    rows = [[k[0], k[1] or "-", k[2] or "-", ms(one, k), ms(par, k)] for k in keys]
    rows.append(["whole step", "", "", f"{step_one:.2f}", f"{step_par:.2f}"])
    print_table(headers, rows)
    if not args.no_write:
        body = (
            "## Golden model profile: one LeNet step by operation\n\n"
            f"`.venv/bin/python bench/golden_profile.py` (commit {git_rev()}, {machine()}). "
            f"LeNet on mnist5k, batch 64, {args.steps} steps after a warm-up; milliseconds per "
            "step spent in each Backend operation (a convolution includes its GEMM; a weight "
            "gradient computed alongside the error path counts only the wait for it), the "
            f"top {args.top} with one worker thread.\n\n" + markdown_table(headers, rows)
        )
        write_section("golden_profile", body)


if __name__ == "__main__":
    main()
