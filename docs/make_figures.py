"""Draw the figures of docs/numerics.md from the golden model.

Run ``.venv/bin/python docs/make_figures.py``; writes PNGs into docs/figures/.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from nitihw.golden import shift_round

OUT = Path(__file__).parent / "figures"
MODES = ("round", "psto", "trunc", "rne")


def rounding_modes():
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    s = 4
    x = np.arange(5 * 16, 7 * 16 + 1)
    for i, mode in enumerate(MODES):
        ax1.step(x, shift_round(x, s, mode) + 0.04 * i, where="post", label=mode)
    ax1.plot(x, x / 16, "k:", label="exact x / 16")
    ax1.set(
        title="shift 4: x >> 4 with each rounding mode",
        xlabel="accumulator x",
        ylabel="int8 result (offset for legibility)",
    )
    ax1.legend()
    shifts = np.arange(1, 13)
    for mode in MODES:
        bias = []
        for sh in shifts:
            xs = np.arange(0, 64 << sh)  # uniform magnitudes, no saturation
            bias.append(float(np.mean(shift_round(xs, sh, mode) - xs / 2.0**sh)))
        ax2.plot(shifts, bias, "o-", label=mode)
    ax2.axhline(0, color="k", lw=0.5)
    ax2.set(
        title="mean rounding error over uniform inputs (LSB)",
        xlabel="shift s",
        ylabel="mean(result - x / 2^s)",
    )
    ax2.legend()
    fig.tight_layout()
    fig.savefig(OUT / "rounding_modes.png", dpi=110)


def psto_table():
    fig, ax = plt.subplots(figsize=(8, 2.6))
    s = 4
    r = np.arange(16)
    up = shift_round(16 + r, s, "psto") - 1
    ax.bar(r, up, color=["tab:orange" if u else "tab:gray" for u in up])
    ax.set(
        title="psto, shift 4: rounds up iff P = r >> 2 exceeds R = r & 3 "
        "(r in {4, 8, 9, 12, 13, 14})",
        xlabel="remainder r = x & 15",
        ylabel="up",
        xticks=r,
    )
    fig.tight_layout()
    fig.savefig(OUT / "psto_shift4.png", dpi=110)


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    rounding_modes()
    psto_table()
    print(f"wrote figures to {OUT}")
