"""A sweep's results: ``results.csv`` and ``results.parquet`` (one row per point, every input
and output column), ``pareto.csv`` (the points no other point beats on every objective), the
plots, and a short table for the terminal. Every file is written atomically."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from nitihw.golden.files import atomic_write_bytes
from nitihw.sim.model.estimate import save_png

#: minimised together: energy and cycles of one training step, and the hardware's area (its
#: PEs and its on-chip buffer KiB, the inputs area grows with, when the sweep has no area)
OBJECTIVES = ("energy_pj", "total_cycles", "area_mm2")
SIZE_OBJECTIVES = ("energy_pj", "total_cycles", "pes", "buffer_kib")


def objectives(df) -> tuple[str, ...]:
    return OBJECTIVES if "area_mm2" in df else SIZE_OBJECTIVES


#: points are compared with the points of the same workload only
WORKLOAD = ("model", "topology", "batch")


def _dominated(points: np.ndarray, front: np.ndarray, cells: int = 1 << 22) -> np.ndarray:
    """Which rows of ``points`` some row of ``front`` dominates (in chunks of ``front``)."""
    out = np.zeros(len(points), bool)
    step = max(1, cells // max(len(points), 1))
    for s in range(0, len(front), step):
        f = front[s : s + step, None, :]
        out |= np.any(np.all(f <= points, axis=2) & np.any(f < points, axis=2), axis=0)
    return out


def pareto_mask(values: np.ndarray, block: int = 1024) -> np.ndarray:
    """Rows of ``values`` (points x objectives, all minimised) that no other row dominates
    (as good in every objective and better in one).

    The rows are taken in lexicographic order, in which a row can only be dominated by one
    before it, so each is compared with the front found so far, not with every row: about
    ``n x front`` comparisons (a block of rows at a time against the front, then within the
    block), where comparing every pair took hours at a million points."""
    values = np.asarray(values, float)
    n = len(values)
    keep = np.zeros(n, bool)
    if n == 0:
        return keep
    order = np.lexsort(values.T[::-1])  # by the first objective, then the next, ...
    v = values[order]
    front = np.empty((0, v.shape[1]))
    for s in range(0, n, block):
        rows = v[s : s + block]
        alive = np.flatnonzero(~_dominated(rows, front)) if len(front) else np.arange(len(rows))
        new: list[int] = []
        for i in alive:  # within the block, in order
            if new and _dominated(rows[i : i + 1], rows[new])[0]:
                continue
            new.append(i)
        keep[order[s + np.asarray(new, int)]] = True
        front = np.concatenate([front, rows[new]])
    return keep


def frame(rows: list[dict]):
    import pandas as pd

    df = pd.DataFrame(rows)
    df["pes"] = df["rows"] * df["cols"]
    df["buffer_kib"] = df["ifmap_kib"] + df["filter_kib"] + df["ofmap_kib"]
    df["pareto"] = False
    ok = df["error"] == ""
    goals = objectives(df)
    if ok.any() and all(c in df for c in goals):
        keys = [k for k in WORKLOAD if k in df]
        parts = [df[k].fillna("").astype(str) for k in keys]
        for _, group in df[ok].groupby(parts, sort=False, dropna=False):
            vals = group[list(goals)].to_numpy(dtype=float)
            df.loc[group.index, "pareto"] = pareto_mask(vals)
    return df


def write_results(df, out: Path, plots: bool = True) -> list[Path]:
    out = Path(out)
    written = []
    for name, data in (
        ("results.csv", df.to_csv(index=False).encode()),
        ("pareto.csv", df[df["pareto"]].to_csv(index=False).encode()),
    ):
        atomic_write_bytes(out / name, data)
        written.append(out / name)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(out / "results.parquet", buf.getvalue())
    written.append(out / "results.parquet")
    ok = df[df["error"] == ""]
    if plots and len(ok) and all(c in ok for c in ("energy_pj", "total_cycles")):
        written.append(plot_front(ok, out / "energy_vs_cycles.png"))
    if plots and "test_accuracy" in df and len(df):
        written.append(plot_accuracy(df, out / "accuracy_vs_bits.png"))
    return written


def plot_accuracy(df, path: Path) -> Path:
    """Test accuracy against the accumulator width, one line per model, method and operand
    width (a failed point, such as an overflow with ``overflow = "error"``, is left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ok = df[df["error"] == ""]
    for key, g in ok.groupby(["model", "profile", "operand_bits"], sort=True):
        g = g.groupby("accumulator_bits")["test_accuracy"].mean()
        ax.plot(g.index, 100 * g.to_numpy(), "o-", label=f"{key[0]}, {key[1]}, int{key[2]}")
    if len(ok):
        ax.set_xticks(sorted(int(a) for a in ok["accumulator_bits"].unique()))
    ax.set_xlabel("accumulator bits (sums wrap beyond them)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("accuracy against operand and accumulator width")
    save_png(fig, path)
    return path


def plot_front(df, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    by_area = "area_mm2" in df
    colour = df["area_mm2"].to_numpy() if by_area else np.log2(df["pes"].to_numpy())
    sc = ax.scatter(df["total_cycles"], df["energy_pj"] / 1e6, c=colour, cmap="viridis", s=14)
    front = df[df["pareto"]]
    ax.scatter(
        front["total_cycles"],
        front["energy_pj"] / 1e6,
        s=40,
        facecolors="none",
        edgecolors="r",
        label=f"Pareto points ({', '.join(objectives(df))})",
    )
    two = df[pareto_mask(df[["energy_pj", "total_cycles"]].to_numpy(float))]
    two = two.sort_values("total_cycles")
    ax.step(
        two["total_cycles"],
        two["energy_pj"] / 1e6,
        "k-",
        where="post",
        lw=1,
        label="energy/cycles front (any size)",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cycles per training step")
    ax.set_ylabel("energy per training step (uJ)")
    cb = fig.colorbar(sc, ax=ax)
    cb.set_label("area (mm$^2$, 45 nm)" if by_area else "log2(PEs) = log2(rows x cols)")
    ax.legend()
    ax.set_title(f"{len(df)} points, {len(front)} on the front")
    save_png(fig, path)
    return path


def _table(head: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    return [
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in (head, *body)
    ]


def _varying(df, keys) -> list[str]:
    return [k for k in keys if k in df and df[k].nunique(dropna=False) > 1]


def _accuracy_table(df) -> str:
    """Test accuracy of each trained point (the first 40)."""
    keys = _varying(df, ("model", "profile", "batch", "operand_bits", "accumulator_bits"))
    keys = keys or ["model"]
    ok = df[df["error"] == ""].head(40)
    body = [
        [*(str(r[k]) for k in keys), f"{100 * r['test_accuracy']:.1f}%", str(r["overflow_events"])]
        for _, r in ok.iterrows()
    ]
    return "\n".join(["test accuracy:", *_table([*keys, "test acc", "overflows"], body)])


def _rtl_lines(df) -> str:
    """How many points' RTL matched the golden model, and the Datapaths that did not."""
    ran = df[df["error"] == ""]
    exact = ran["rtl_bit_exact"].astype(bool)
    text = f"rtl: {len(ran)} points checked, {int(exact.sum())} bit-exact with the golden model"
    keys = ["rows", "cols", "kmax", "operand_bits", "accumulator_bits"]
    bad = ran[~exact].drop_duplicates(keys)
    if len(bad):
        body = [[*(str(r[k]) for k in keys), f"{int(r['rtl_failed'])}/{int(r['rtl_tests'])}"]
                for _, r in bad.head(20).iterrows()]  # fmt: skip
        text += "\n" + "\n".join(["mismatches:", *_table([*keys, "failed tests"], body)])
    return text


def summary(df, top: int = 8) -> str:
    """The terminal's table: counts, then the Pareto points by energy."""
    failed = int((df["error"] != "").sum())
    lines = [f"{len(df)} points, {failed} failed"]
    if "energy_pj" in df:
        lines[0] += f", {int(df['pareto'].sum())} on the Pareto front"
    if failed:
        first = df[df["error"] != ""].iloc[0]
        lines.append(f"first failure (point {first['point']}): {first['error']}")
    if "rtl_bit_exact" in df:
        lines.append(_rtl_lines(df))
    if "energy_pj" not in df:  # no estimate: no Pareto front to show
        if "test_accuracy" in df:
            lines.append(_accuracy_table(df))
        return "\n".join(lines)
    front = df[df["pareto"]].sort_values("energy_pj").head(top)
    if len(front):
        keys = ("model", "topology", "profile", "batch", "rows", "cols", "kmax")
        keys += ("ifmap_kib", "filter_kib", "ofmap_kib", "bandwidth", "frequency_mhz", "clock")
        keys += ("operand_bits", "accumulator_bits", "dataflow", "traffic", "objective")
        keys = _varying(df, keys) or ["rows", "cols"]
        head = [*keys, "cycles/step", "energy/step (uJ)"]
        if "area_mm2" in df:
            head.append("area mm2")
        body = [
            [
                *(str(r[k]) for k in keys),
                f"{int(r['total_cycles']):,}",
                f"{r['energy_pj'] / 1e6:.1f}",
                *([f"{r['area_mm2']:.2f}"] if "area_mm2" in df else []),
            ]
            for _, r in front.iterrows()
        ]
        lines += ["Pareto points, lowest energy first:", *_table(head, body)]
    return "\n".join(lines)
