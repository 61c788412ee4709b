"""The golden runs the GPU tests compare with, computed on the CPU beforehand.

A GPU machine is lent for minutes, so it should spend them on the GPU side only. Every training
case of ``tests/test_gpu.py`` is listed here; its golden result (``weights_sha256`` and test
accuracy) is kept in ``tests/gpu_golden.json``, and the ``cuda`` tests compare the GPU run
with that table instead of training golden again. ``test_golden_table_is_current`` (on the CPU,
in every default test run) trains each golden case and checks the table still holds, so a
change to the numerics cannot leave a stale table behind.

Regenerate the table (about 10 s)::

    python -m tests.gpu_golden        # or: ./run gpu-golden

The long cases (``LONG_CASES``: the whole NITI and WAGE LeNet/mnist5k runs, 30 epochs each, and
24 vgg-small-7 steps at batch 256, which take the chunked weight-gradient path) are kept in
``tests/gpu_golden_long.json`` with every epoch's accuracies, for ``bench/gpu_session.sh long``.
Golden takes minutes on them, too long for every test run: the table records the SHA-256 of the
short table it was made with, and the default run checks that (any change to the numerics
changes the short table), while the slow run (``-m slow``) trains them all again::

    python -m tests.gpu_golden --long  # or: ./run gpu-golden-long (about 3 minutes)
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
    "mlp-niti-2020": ["--model", "mlp-digits", "--dataset", "digits", "--epochs", "1",
                      "--profile", "niti-2020"],
    "cnn-acc16-wrap": ["--model", "cnn-digits", "--dataset", "digits", "--epochs", "1",
                       "--accumulator-bits", "16", "--overflow", "wrap"],
}  # fmt: skip

#: the CIFAR-scale case: vgg-small-7 on random CIFAR-shaped data, run through ``train()``
VGG_CASE = "vgg-small-7-random"
CASES = [*CLI_CASES, VGG_CASE]

LONG_TABLE = Path(__file__).with_name("gpu_golden_long.json")
#: the long cases: ``nitihw train`` arguments, or (the vgg case) ``train()`` at batch 256
LONG_CLI_CASES: dict[str, list[str]] = {
    "lenet-niti-30": ["--model", "lenet", "--dataset", "mnist5k", "--epochs", "30"],
    "lenet-wage-30": ["--model", "lenet", "--dataset", "mnist5k", "--epochs", "30",
                      "--profile", "wage"],
}  # fmt: skip
VGG_LONG_CASE = "vgg-small-7-b256-24"
LONG_CASES = [*LONG_CLI_CASES, VGG_LONG_CASE]


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


def vgg_long_run(backend, steps: int = 24, batch: int = 256) -> dict:
    """vgg-small-7 at batch 256 for ``steps`` steps on seeded CIFAR-shaped data: the weight
    gradient of its first layers sums 262,144 products, so the GPU cuts it into K-chunks."""
    from nitihw.golden.datasets import Dataset
    from nitihw.golden.train import TrainConfig, train

    rng = np.random.default_rng(24)
    x = rng.integers(-127, 128, (batch * (steps + 1), 32, 32, 3)).astype(np.int8)
    y = rng.integers(0, 10, len(x))
    n = batch * steps
    data = Dataset("random-cifar", x[:n], y[:n], x[n:], y[n:])
    cfg = TrainConfig(model="vgg-small-7", dataset="random-cifar", backend=backend.name,
                      epochs=1, batch=batch, steps=steps)  # fmt: skip
    return train(cfg, data, backend)


def _backend(backend: str):
    if backend == "golden":
        from nitihw.golden import NumpyBackend

        return NumpyBackend()
    from nitihw.gpu.backend import CupyBackend

    return CupyBackend()


def run_case(case: str, backend: str, tmp: Path, smoke: bool = False) -> dict:
    """One case on ``backend`` ("golden" or "gpu"), short or long; ``smoke``: a long case cut
    to 2 steps (to check the runner itself, on the CPU stand-in)."""
    if case == VGG_CASE:
        return vgg_run(_backend(backend))
    if case == VGG_LONG_CASE:
        # smoke: batch 160 still sums 163,840 products in the weight gradient (chunked)
        return vgg_long_run(_backend(backend), *((2, 160) if smoke else (24, 256)))
    extra = ["--backend", "gpu"] if backend == "gpu" else []
    args = CLI_CASES.get(case) or LONG_CLI_CASES[case]
    if smoke:
        extra += ["--steps", "2", "--batch", "16"]
    return cli_run([*args, *extra], tmp / f"{case}-{backend}")


def summary(result: dict) -> dict:
    """What the GPU run must equal."""
    return {k: result[k] for k in ("weights_sha256", "test_accuracy", "steps", "overflow_events")}


def long_summary(result: dict) -> dict:
    """What a long GPU run must equal: :func:`summary` and every epoch's accuracies."""
    epochs = [
        {"epoch": h["epoch"], "train_accuracy": h["train_accuracy"],
         "test_accuracy": h["test_accuracy"]}
        for h in result["history"]
    ]  # fmt: skip
    return {**summary(result), "epochs": epochs}


def short_table_sha256() -> str:
    """The SHA-256 of the short table's bytes (what the long table was made with)."""
    import hashlib

    return hashlib.sha256(TABLE.read_bytes()).hexdigest()


def load_long_table() -> dict:
    try:
        table = json.loads(LONG_TABLE.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{LONG_TABLE} is missing: run `python -m tests.gpu_golden --long`"
        ) from None
    missing = sorted(set(LONG_CASES) - set(table["cases"]))
    if missing:
        raise KeyError(f"{LONG_TABLE} lacks {missing}: run `python -m tests.gpu_golden --long`")
    return table


def compare_line(case: str, args, want: dict, got: dict) -> tuple[bool, str]:
    """``(match, report)``: a long case's arguments, steps, accuracy, expected and actual full
    hash, per-epoch accuracies where they differ, and MATCH or MISMATCH."""
    ok = got == want
    lines = [
        f"case {case}: {' '.join(args) if args else 'vgg-small-7, batch 256, seeded data'}",
        f"  steps {got['steps']} (expected {want['steps']}), test accuracy "
        f"{got['test_accuracy']:.4f} (expected {want['test_accuracy']:.4f}), overflow events "
        f"{got['overflow_events']} (expected {want['overflow_events']})",
        f"  expected weights_sha256 {want['weights_sha256']}",
        f"  actual   weights_sha256 {got['weights_sha256']}",
    ]
    for w, g in zip(want.get("epochs", []), got.get("epochs", []), strict=False):
        if w != g:
            lines.append(f"  epoch {w['epoch']}: expected {w}, got {g}")
    lines.append(f"  {'MATCH' if ok else 'MISMATCH'}")
    return ok, "\n".join(lines)


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


def main(argv: list[str] | None = None) -> int:
    from nitihw.golden.files import atomic_write_json

    long = "--long" in (sys.argv[1:] if argv is None else argv)
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in LONG_CASES if long else CASES:
            print(f"golden {case} ...", end=" ", flush=True)
            args = (LONG_CLI_CASES if long else CLI_CASES).get(case)
            result = run_case(case, "golden", Path(tmp))
            table[case] = {"args": args, **(long_summary if long else summary)(result)}
            print(table[case]["weights_sha256"][:16], flush=True)
    if long:
        atomic_write_json(LONG_TABLE, {"short_table_sha256": short_table_sha256(), "cases": table})
        print(f"wrote {LONG_TABLE}")
    else:
        atomic_write_json(TABLE, table)
        print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
