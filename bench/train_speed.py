"""Training speed of the integer golden model against its float32 twin, side by side.

LeNet on mnist5k (batch 64): the two run alternately, ROUNDS times each, STEPS steps per
round, and the median samples/s of each is reported with their ratio (this machine is noisy,
so only numbers from the same run are compared). Writes the 'train_speed' section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.golden.datasets import load_dataset
from nitihw.golden.train import TrainConfig, train


def measure(model: str, dataset: str, profile: str, steps: int, batch: int, data) -> float:
    cfg = TrainConfig(
        model=model, dataset=dataset, profile=profile, epochs=1000, batch=batch, steps=steps
    )
    return train(cfg, data)["samples_per_second"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    cases = [("lenet", "mnist5k"), ("mlp-digits", "digits")]
    rows = []
    for model, dataset in cases:
        data = load_dataset(dataset)
        measure(model, dataset, "niti", 2, args.batch, data)  # warm-up
        ints, floats = [], []
        for _ in range(args.rounds):
            ints.append(measure(model, dataset, "niti", args.steps, args.batch, data))
            floats.append(measure(model, dataset, "float32", args.steps, args.batch, data))
        i, f = statistics.median(ints), statistics.median(floats)
        rows.append([model, dataset, args.batch, f"{i:,.0f}", f"{f:,.0f}", f"{i / f:.2f}"])
    headers = [
        "model",
        "dataset",
        "batch",
        "integer (niti) samples/s",
        "float32 twin samples/s",
        "integer / float32",
    ]
    print_table(headers, rows)
    if not args.no_write:
        body = (
            "## Training speed: integer golden model vs float32 twin (CPU, NumPy)\n\n"
            f"`.venv/bin/python bench/train_speed.py` (commit {git_rev()}, {machine()}). "
            f"Median of {args.rounds} alternating rounds of {args.steps} steps each; "
            "training steps only, evaluation excluded.\n\n" + markdown_table(headers, rows)
        )
        write_section("train_speed", body)


if __name__ == "__main__":
    main()
