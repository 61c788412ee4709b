"""The golden runs the GPU tests compare with, computed on the CPU beforehand.

A GPU machine is lent for minutes, so it should spend them on the GPU side only. Every training
case of ``tests/test_gpu.py`` is listed here; its golden result (``weights_sha256`` and test
accuracy) is kept in ``tests/gpu_golden.json``, and the ``cuda`` tests compare the GPU run
with that table instead of training golden again. ``test_golden_table_is_current`` (on the CPU,
in every default test run) trains each golden case and checks the table still holds, so a
change to the numerics cannot leave a stale table behind.

Regenerate the table (about 2 minutes on 2 cores)::

    python -m tests.gpu_golden        # or: ./run gpu-golden
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

TABLE = Path(__file__).with_name("gpu_golden.json")

#: case id -> ``nitihw train`` arguments (each case is run by the CLI, as a user would)
CLI_CASES: dict[str, list[str]] = {
    "mlp-niti": ["--model", "mlp-digits", "--dataset", "digits", "--epochs", "3"],
    "cnn-niti-ref": ["--model", "cnn-digits", "--dataset", "digits", "--epochs", "2",
                     "--profile", "niti-ref"],
    "lenet-mnist5k": ["--model", "lenet", "--dataset", "mnist5k", "--epochs", "1"],
    "mlp-16bit-weights": ["--model", "mlp-digits", "--dataset", "digits", "--epochs", "2",
                          "--weight-bits", "16", "--mu", "9"],
    "mlp-wage": ["--model", "mlp-digits", "--dataset", "digits", "--epochs", "3",
                 "--profile", "wage"],
    "cnn-wage": ["--model", "cnn-digits", "--dataset", "digits", "--epochs", "2",
                 "--profile", "wage"],
    "mlp-dfp16": ["--model", "mlp-digits", "--dataset", "digits", "--epochs", "2",
                  "--profile", "dfp16"],
    "cnn-niti-ref-op6": ["--model", "cnn-digits", "--dataset", "digits", "--epochs", "1",
                         "--profile", "niti-ref", "--operand-bits", "6"],
    "cnn-niti-compat": ["--model", "cnn-digits", "--dataset", "digits", "--epochs", "2",
                        "--profile", "niti-compat"],
}  # fmt: skip

#: the CIFAR-scale case: vgg-small-7 on random CIFAR-shaped data, run through ``train()``
VGG_CASE = "vgg-small-7-random"
CASES = [*CLI_CASES, VGG_CASE]


def cli_run(args: list[str], out: Path) -> dict:
    """``nitihw train ARGS --out OUT``; its result record."""
    from nitihw.sim.command.cli import main

    rc = main(["train", *args, "--out", str(out)])
    if rc != 0:
        raise RuntimeError(f"nitihw train {' '.join(args)} exited {rc}")
    return json.loads((out / "result.json").read_text())


def vgg_run(backend) -> dict:
    """vgg-small-7 (the benchmark's CIFAR-10 network), 2 steps of 16 on random data."""
    from nitihw.golden.datasets import Dataset
    from nitihw.golden.train import TrainConfig, train

    rng = np.random.default_rng(0)
    x = rng.integers(-127, 128, (64, 32, 32, 3)).astype(np.int8)
    y = rng.integers(0, 10, 64)
    data = Dataset("random-cifar", x, y, x[:16], y[:16])
    cfg = TrainConfig(model="vgg-small-7", dataset="random-cifar", backend=backend.name,
                      epochs=9, batch=16, steps=2)  # fmt: skip
    return train(cfg, data, backend)


def run_case(case: str, backend: str, tmp: Path) -> dict:
    """One case on ``backend`` ("golden" or "gpu")."""
    if case == VGG_CASE:
        if backend == "golden":
            from nitihw.golden import NumpyBackend

            return vgg_run(NumpyBackend())
        from nitihw.gpu.backend import CupyBackend

        return vgg_run(CupyBackend())
    extra = ["--backend", "gpu"] if backend == "gpu" else []
    return cli_run([*CLI_CASES[case], *extra], tmp / f"{case}-{backend}")


def summary(result: dict) -> dict:
    """What the GPU run must equal."""
    return {k: result[k] for k in ("weights_sha256", "test_accuracy", "steps")}


def load_table() -> dict:
    """The checked-in table; a clear error when it is missing or lacks a case."""
    try:
        table = json.loads(TABLE.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{TABLE} is missing: run `python -m tests.gpu_golden`") from None
    missing = sorted(set(CASES) - set(table))
    if missing:
        raise KeyError(f"{TABLE} lacks {missing}: run `python -m tests.gpu_golden`")
    return table


def main() -> int:
    from nitihw.golden.files import atomic_write_json

    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            print(f"golden {case} ...", end=" ", flush=True)
            table[case] = {
                "args": CLI_CASES.get(case),
                **summary(run_case(case, "golden", Path(tmp))),
            }
            print(table[case]["weights_sha256"][:16], flush=True)
    atomic_write_json(TABLE, table)
    print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
