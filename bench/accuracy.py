"""Accuracy of integer (NITI) training against the float32 twin, same epochs, batch, split.

Equivalent to running, for each row,
``nitihw train --model M --dataset D --epochs E --batch B [--profile float32]``.
Writes the 'accuracy' section of docs/benchmarks.md. Takes a few minutes (30 epochs of LeNet).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.golden.datasets import load_dataset
from nitihw.golden.models import get_model_spec
from nitihw.golden.train import TrainConfig, train

RUNS = [("lenet", "mnist5k", 30, 64), ("mlp-digits", "digits", 30, 64)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=None, help="override every run's epochs")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = []
    for model, dataset, epochs, batch in RUNS:
        epochs = args.epochs or epochs
        data = load_dataset(dataset)
        res = {}
        for profile in ("niti", "float32"):
            cfg = TrainConfig(
                model=model, dataset=dataset, profile=profile, epochs=epochs, batch=batch
            )
            res[profile] = train(cfg, data)
            print(
                f"{model} {dataset} {profile}: test {res[profile]['test_accuracy']:.4f}", flush=True
            )
        i, f = res["niti"], res["float32"]
        best = max(h["test_accuracy"] for h in i["history"])
        rows.append(
            [
                model,
                dataset,
                epochs,
                batch,
                get_model_spec(model).mu,
                f"{100 * i['test_accuracy']:.1f}",
                f"{100 * best:.1f}",
                f"{100 * f['test_accuracy']:.1f}",
                f"{100 * (i['test_accuracy'] - f['test_accuracy']):+.1f}",
                f"`{i['weights_sha256'][:16]}`",
            ]
        )
    headers = [
        "model",
        "dataset",
        "epochs",
        "batch",
        "mu",
        "integer test %",
        "integer best %",
        "float32 twin test %",
        "integer - float32",
        "integer weights_sha256",
    ]
    print_table(headers, rows)
    if not args.no_write:
        body = (
            "## Accuracy: integer-only training (profile `niti`, golden model) vs float32 twin\n\n"
            f"`.venv/bin/python bench/accuracy.py` (commit {git_rev()}, {machine()}). "
            'Seed 0; test accuracy after the last epoch ("best" is the best epoch, shown '
            "for reference only). float32 twin: SGD, lr 0.05, momentum 0.9, same init draw, "
            "same batches.\n\n" + markdown_table(headers, rows)
        )
        write_section("accuracy", body)


if __name__ == "__main__":
    main()
