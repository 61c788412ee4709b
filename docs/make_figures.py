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


def datapath_timing():
    """A cycle-accurate timing diagram of a 2x2 Datapath running a 6x5 by 5x4 GEMM (six tiles)
    and the rescale of its result from the result buffer, recorded from Amaranth's simulator,
    with the units' work as the schedule (program_cycles) has it."""
    from amaranth.sim import Simulator

    from nitihw.rtl.datapath import Datapath
    from nitihw.rtl.schedule import program_cycles
    from nitihw.sim.simulate.datapath_driver import DatapathDriver
    from nitihw.sim.simulate.ports import AmaranthPort

    names = ["cmd__valid", "cmd__ready", "din__valid", "din__ready", "dout__valid", "busy"]
    trace = {}

    class RecordingPort(AmaranthPort):
        async def settle(self):
            trace[self.cycle] = {n: self.get(n) for n in names}

    dut = Datapath(2, 2, kmax=8)
    log = []

    async def tb(ctx):
        drv = DatapathDriver(RecordingPort(ctx, dut), dut.params)
        await drv.reset_streams()
        rng = np.random.default_rng(0)
        a, b = rng.integers(-9, 10, (6, 5)), rng.integers(-9, 10, (5, 4))
        acc, _, fields = await drv.gemm_tensor(a, b)
        await drv.rescale(acc, fields["shift"], "round", from_buffer=True)
        log.extend(drv.log)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    first = log[0].start
    last = log[-1].start + log[-1].cycles
    fig, ax = plt.subplots(figsize=(13, 5))
    units = ["loader", "array", "drainer", "serial"]
    unit_colour = {"LOAD_AB": "tab:orange", "LOAD_A": "tab:olive", "COMPUTE": "tab:blue"}
    height = 1.5
    top = (len(names) + len(units)) * height
    for row, name in enumerate(names):
        y0 = top - row * height
        xs = list(range(first, last + 1))
        vals = [trace.get(x, {}).get(name, 0) for x in xs]
        ax.step(xs, [y0 + 0.8 * v for v in vals], where="post", color="k")
        ax.text(first - 0.5, y0 + 0.3, name.replace("__", "."), ha="right", va="center")
    for rec in log:
        timeline = []
        program_cycles(rec.commands, 2, 2, timeline)
        for unit, lo, hi, op in timeline:
            y0 = top - (len(names) + units.index(unit)) * height
            colour = unit_colour.get(op, "tab:green" if unit == "drainer" else "tab:red")
            ax.broken_barh(
                [(rec.start + lo, hi - lo + 1)], (y0, 0.9), color=colour, alpha=0.6, ec="k"
            )
            if unit == "serial" or hi - lo >= 3:
                ax.text(rec.start + (lo + hi + 1) / 2, y0 + 0.45, op, ha="center", fontsize=6)
        ax.axvline(rec.start, color="grey", ls=":")
        ax.text(rec.start + 0.3, top + 1.2, f"{rec.name}: {rec.cycles} cycles", fontsize=8)
    for k, unit in enumerate(units):
        y0 = top - (len(names) + k) * height
        ax.text(first - 0.5, y0 + 0.45, unit, ha="right", va="center", style="italic")
    ax.set_xlim(first - 9, last + 1)
    ax.set_ylim(top - (len(names) + len(units)) * height, top + 2)
    ax.set_yticks([])
    ax.set_xlabel("clock cycle")
    ax.set_title(
        "Datapath v2, 2x2: a 6x5 @ 5x4 GEMM (6 tiles: loads beside computes, drains beside "
        "the next tile), then RESCALE from the result buffer"
    )
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    fig.savefig(OUT / "datapath_timing.png", dpi=110)


def cycle_model_lenet():
    """Cycles per layer and phase of one LeNet training step (batch 64), from the cycle
    model, on an 8x8 and a 16x16 array, with the GEMM tilings ``nitihw train`` uses by
    default (searched on the default accelerator's buffers)."""
    from nitihw.golden.backend import NumpyBackend
    from nitihw.golden.datasets import load_dataset
    from nitihw.golden.train import TrainConfig, train
    from nitihw.sim.command.train_run import run_array
    from nitihw.sim.model.cycle_model import CycleReport

    data = load_dataset("mnist5k")
    phases = ["forward", "backward-error", "weight-gradient", "update"]
    colours = dict(zip(phases, ["tab:blue", "tab:orange", "tab:green", "tab:red"], strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=False)
    for ax, shape in zip(axes, ("8x8", "16x16"), strict=True):
        be = NumpyBackend()
        cfg = TrainConfig(model="lenet", dataset="mnist5k", steps=1, batch=64)
        be.trace = CycleReport(run_array({"array": shape}, cfg))
        train(cfg, data, be)
        rows = be.trace.rows()
        layers = sorted({r[0] for r in rows}, key=lambda x: int(x.split(":")[0]))
        bottom = np.zeros(len(layers))
        for ph in phases:
            vals = (
                np.array([sum(r[2] for r in rows if r[0] == lay and r[1] == ph) for lay in layers])
                / 1e6
            )
            ax.bar(layers, vals, bottom=bottom, label=ph, color=colours[ph])
            bottom += vals
        ax.set(
            title=f"LeNet, one step (batch 64), {shape} array: {be.trace.total / 1e6:.1f} M cycles",
            ylabel="million cycles",
        )
        ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "cycles_lenet.png", dpi=110)


def traffic_vgg():
    """Off-chip bytes per layer of a vgg-small-7 step (batch 256, 16x16, 64/64/256 KiB): the
    fixed loop order, the searched mappings and the lower bound (docs/estimate.md)."""
    from nitihw.sim.model.accelerator import load_accelerator
    from nitihw.sim.model.estimate import estimate, plot_traffic
    from nitihw.sim.model.workload import model_workload

    acc = load_accelerator().with_array("16x16")
    r = estimate(model_workload("vgg-small-7", 256), acc, 256, 50000, "vgg-small-7")
    title = "vgg-small-7, batch 256, 16x16 array, 64/64/256 KiB buffers"
    plot_traffic(r, OUT / "traffic_vgg_small_7.png", title)


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    rounding_modes()
    psto_table()
    datapath_timing()
    cycle_model_lenet()
    traffic_vgg()
    print(f"wrote figures to {OUT}")
