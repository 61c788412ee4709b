"""Every integer training method against the float32 twin: accuracy and energy per step.

For each (model, dataset) row and each profile (niti, wage, nitro-d, dfp16, float32) this is
``nitihw train --model M --dataset D --epochs 30 --batch 64 --profile P`` on the golden model,
plus ``nitihw estimate --model M --batch 64 --array 8x8 --profile P`` for the energy of one
training step (integer profiles; float32's is the estimate's fp32 column of the niti step).
Writes the 'methods' section of docs/benchmarks.md; docs/algorithms.md quotes it. Takes
about 40 minutes on 2 cores (LeNet on mnist5k five times).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.golden.datasets import load_dataset
from nitihw.golden.train import TrainConfig, train
from nitihw.sim.model.accelerator import load_accelerator
from nitihw.sim.model.estimate import estimate
from nitihw.sim.model.workload import model_workload

RUNS = [("mlp-digits", "digits"), ("mlp-mnist", "mnist5k"), ("lenet", "mnist5k")]
PROFILES = ["niti", "wage", "nitro-d", "dfp16", "float32"]


def energy_uj(model: str, profile: str, batch: int) -> float:
    acc = load_accelerator().with_array("8x8")
    layers = model_workload(model, batch)
    if profile == "float32":
        r = estimate(layers, acc, batch, batch, model, "niti")
        return r["per_step"]["fp32_energy_pj"] / 1e6
    return estimate(layers, acc, batch, batch, model, profile)["per_step"]["energy_pj"] / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--only", default=None, help="comma-separated profiles (default: all)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    profiles = args.only.split(",") if args.only else PROFILES
    rows = []
    for model, dataset in RUNS:
        data = load_dataset(dataset)
        for profile in profiles:
            cfg = TrainConfig(
                model=model, dataset=dataset, profile=profile, epochs=args.epochs, batch=args.batch
            )
            t0 = time.perf_counter()
            res = train(cfg, data)
            secs = time.perf_counter() - t0
            best = max(h["test_accuracy"] for h in res["history"])
            rows.append(
                [
                    model,
                    dataset,
                    profile,
                    cfg.mu_text if profile not in ("float32", "dfp16") else "-",
                    f"{100 * res['test_accuracy']:.1f}",
                    f"{100 * best:.1f}",
                    f"{energy_uj(model, profile, args.batch):,.1f}",
                    f"{secs:.0f}",
                    f"`{res['weights_sha256'][:16]}`",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    headers = [
        "model",
        "dataset",
        "profile",
        "mu",
        "test %",
        "best %",
        "energy µJ/step (8x8)",
        "train s",
        "weights_sha256",
    ]
    print_table(headers, rows)
    if not args.no_write:
        body = (
            "## Training methods: accuracy and energy per step\n\n"
            f"`.venv/bin/python bench/methods.py` (commit {git_rev()}, {machine()}). "
            f"Golden model, seed 0, {args.epochs} epochs, batch {args.batch}; test accuracy "
            'after the last epoch ("best": the best epoch, for reference only). Energy: '
            "`nitihw estimate --batch 64 --array 8x8` with the default accelerator; float32: "
            "the estimate's fp32 column.\n\n" + markdown_table(headers, rows)
        )
        write_section("methods", body)


if __name__ == "__main__":
    main()
