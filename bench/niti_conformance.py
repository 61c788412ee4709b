"""niti-compat against torch's own float32 arithmetic (needs PyTorch: the bench extra).

golden/niti_compat.py emulates in NumPy what NITI's 2021 code computes with torch 1.7's float32
operations. This script computes the same two things with torch itself, written from NITI's
semantics (not its code), and counts the disagreements:

- ``RangeEstimate``: ``ceil(log2(x.float()))`` for every magnitude near a power of two from 2^20
  to 2^31 (where float32 is one bit short) and for random int32 magnitudes;
- the 2021 loss up to ``StoShift``: ``s = a * 47274 / 2^15`` (true division: float32), scaled
  by ``2^e``, row max to 10, clipped at 0, ``P = 2 ** s - 1``, ``S = sum(trunc(P))``,
  ``Q = P * 2^11 / S``, ``Q[t] -= sum(trunc(Q))``, ``Q.int()``, for random logits, labels and
  exponents in -20..8.

torch ``//`` floors since 1.13, but neither computation uses it. Writes the 'niti_conformance'
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.golden.loss import softmax_q11
from nitihw.golden.niti_compat import float32_bitwidth, loss_2021_q


def torch_range(torch, m: int) -> int:
    return int(torch.ceil(torch.log2(torch.tensor(float(m)).float())))


def torch_loss_q(torch, a, e: int, t):
    s = torch.tensor(a, dtype=torch.int64)
    if e > -7:
        s = s * 47274 / (2**15)  # int64 / int: float32 (the default dtype)
        s = s * 2**e if e >= 0 else s / (2**-e)
        s = s - (s.max(dim=1).values - 10).view(-1, 1)
        s = torch.max(s, torch.tensor(0, dtype=torch.int64))
        p = 2**s - 1
    else:
        et = torch.tensor(e, dtype=torch.int64)
        p = 2 ** (1 - 2 * et) + s * 2 ** (1 - et) + s * s
    total = p.sum(1, dtype=torch.int64)
    q = p * (2**11) / total.view(-1, 1)
    q[torch.arange(len(t)), torch.tensor(t)] -= q.sum(1, dtype=torch.int64)
    return q.to(torch.int32).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--rows", type=int, default=2000, help="loss rows per exponent")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("bench/niti_conformance.py needs PyTorch: pip install -e '.[bench]'")
    torch.set_default_dtype(torch.float32)
    rng = np.random.default_rng(0)
    rows = []
    mags = [2**k + d for k in range(20, 31) for d in range(-3, 1500)]
    mags += [int(v) for v in rng.integers(1, 2**31, 100_000)]
    bad = sum(float32_bitwidth(m) != torch_range(torch, m) for m in mags)
    short = sum(float32_bitwidth(m) != (m - 1).bit_length() for m in mags)
    rows.append(["RangeEstimate", f"{len(mags):,} magnitudes", f"{short:,}", f"{bad:,}"])
    for lo, hi in ((-20, -7), (-6, -1), (0, 8)):
        n = bad = gold = 0
        for e in range(lo, hi + 1):
            a = rng.integers(-127, 128, (args.rows, 10))
            a[0] = 0
            a[1] = 127
            t = rng.integers(0, 10, args.rows)
            ours, theirs = loss_2021_q(a, e, t), torch_loss_q(torch, a, e, t)
            p = softmax_q11(a, e)
            golden = (p << 11) // p.sum(axis=1, keepdims=True)
            golden[np.arange(len(t)), t] -= golden.sum(axis=1)
            n += len(a)
            bad += int((ours != theirs).any(axis=1).sum())
            gold += int((golden != theirs).any(axis=1).sum())
        rows.append([f"loss Q, e in {lo}..{hi}", f"{n:,} rows", f"{gold:,}", f"{bad:,}"])
    headers = ["function", "inputs", "golden (exact integers) differs", "niti-compat differs"]
    print_table(headers, rows)
    if not args.no_write:
        body = (
            "## niti-compat against torch's float32\n\n"
            f"`.venv/bin/python bench/niti_conformance.py` (commit {git_rev()}, {machine()}, "
            f"torch {torch.__version__}). NITI's float32 range and 2021 loss computed with torch's "
            "own float32 operations on the CPU, against golden/niti_compat.py's NumPy emulation "
            "(rows: loss rows that differ in any entry).\n\n" + markdown_table(headers, rows)
        )
        write_section("niti_conformance", body)


if __name__ == "__main__":
    main()
