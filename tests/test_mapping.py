"""The searched DRAM-level mapping and the traffic bounds (sim/model/mapping): the analytic traffic
rule against a walk of the loop nest, the search against the fixed order and the bounds."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from nitihw.sim.model.accelerator import load_accelerator
from nitihw.sim.model.estimate import TRAFFIC, estimate, gemm_shape, hierarchy, result_buffer_rows
from nitihw.sim.model.mapping import (
    OBJECTIVES,
    ORDERS,
    GemmShape,
    Hierarchy,
    compulsory_bytes,
    evaluate,
    io_lower_bound_bytes,
    lower_bound_bytes,
    search,
)
from nitihw.sim.model.workload import model_workload, step_ops


def walk(g: GemmShape, order: str, tm: int, tn: int, tk: int) -> tuple[int, int, int]:
    """Bytes moved by the loop nest itself, tile by tile: a tile of A or B is loaded when the
    loop indices it depends on change; a result tile left before its last k tile is spilled
    (written) and read back when it is visited again."""
    trips = {"m": -(-g.m // tm), "n": -(-g.n // tn), "k": -(-g.k // tk)}
    size = {
        "m": lambda i: min(tm, g.m - i * tm),
        "n": lambda i: min(tn, g.n - i * tn),
        "k": lambda i: min(tk, g.k - i * tk),
    }
    a_scale = g.a_tensor / (g.m * g.k)
    b_scale = g.b_tensor / (g.k * g.n)
    a = b = spill = 0
    held_a = held_b = held_c = None
    visits: dict = {}
    for idx in itertools.product(*(range(trips[x]) for x in order)):
        i = dict(zip(order, idx, strict=True))
        if (i["m"], i["k"]) != held_a:
            held_a = (i["m"], i["k"])
            a += size["m"](i["m"]) * size["k"](i["k"]) * a_scale
        if (i["k"], i["n"]) != held_b:
            held_b = (i["k"], i["n"])
            b += size["k"](i["k"]) * size["n"](i["n"]) * b_scale
        if (i["m"], i["n"]) != held_c:
            held_c = (i["m"], i["n"])
            if visits.get(held_c):  # back to partial sums left before: out, then in again
                spill += size["m"](i["m"]) * size["n"](i["n"]) * g.c_bytes
            visits[held_c] = visits.get(held_c, 0) + 1
    return round(a), round(b), spill


@pytest.mark.parametrize("seed", range(12))
def test_the_traffic_rule_is_the_loop_nest_walked(seed):
    rng = np.random.default_rng(seed)
    m, k, n = (int(x) for x in rng.integers(1, 40, 3))
    g = GemmShape(m, k, n, a_bytes=1, b_bytes=1, c_bytes=4)
    for order in ORDERS:
        for _ in range(4):
            tm, tn, tk = (int(rng.integers(1, d + 1)) for d in (m, n, k))
            a, b, cw, cr = evaluate(g, order, tm, tn, tk)
            assert (int(a), int(b), int(cw)) == walk(g, order, tm, tn, tk), (order, tm, tn, tk)
            assert cw == cr


#: the issue's GEMM: SCALE-Sim 3.0 reads 37,748,736 bytes of A and 247,682 of B for it
ISSUE = GemmShape(4096, 1152, 128)
BUFFERS = Hierarchy(64 * 1024, 64 * 1024, 256 * 1024, 16, 16, 256)


def test_the_issues_gemm_moves_near_its_bound():
    best = search(ISSUE, BUFFERS)
    bound = lower_bound_bytes(ISSUE, BUFFERS)
    # A and B once, the int32 result out and back for the rescale: 9.0 MB
    assert (
        bound == compulsory_bytes(ISSUE, BUFFERS) == 4096 * 1152 + 1152 * 128 + 2 * 4096 * 128 * 4
    )
    assert bound <= best.total <= 1.2 * bound
    assert best.tm * best.tk <= BUFFERS.ifmap and best.tk * best.tn <= BUFFERS.filter
    assert best.tm * best.tn * 4 <= BUFFERS.ofmap
    assert best == search(ISSUE, BUFFERS)  # deterministic


def test_the_io_bound_binds_when_the_buffers_are_small():
    g = GemmShape(2048, 2048, 2048)
    small = Hierarchy(1024, 1024, 4096, 4, 4, 16)
    io = io_lower_bound_bytes(g, small)
    assert io > compulsory_bytes(g, small)
    assert search(g, small).total >= lower_bound_bytes(g, small) == io
    # an im2col A repeats its elements: no matrix bound for it, the compulsory one only
    conv = GemmShape(2048, 2048, 2048, a_mem=2048 * 2048 // 9)
    assert io_lower_bound_bytes(conv, small) == 0


def test_nothing_fits_streams_every_element():
    g = GemmShape(8, 8, 8, c_bytes=4)
    tiny = Hierarchy(0, 0, 0, 2, 2, 2)
    best = search(g, tiny)
    assert (best.tm, best.tn, best.tk) == (1, 1, 1) and best.total >= lower_bound_bytes(g, tiny)


STEPS = [("lenet", 64, "16x16"), ("vgg-small-7", 256, "16x16"), ("mlp-digits", 64, "8x8")]


@pytest.mark.parametrize("model,batch,array", STEPS)
def test_every_gemm_of_a_step_is_between_its_bound_and_the_fixed_order(model, batch, array):
    acc = load_accelerator().with_array(array)
    r = estimate(model_workload(model, batch), acc, batch, 50000, model)
    gemms = [m for row in r["rows"] for m in row["mappings"]]
    assert len(gemms) == sum(
        op.op == "gemm" for op in step_ops(model_workload(model, batch), "niti")
    )
    for m in gemms:
        assert m["lower_bound_bytes"] <= m["total"] <= m["fixed_order_bytes"], m
        run = m["datapath"]  # what the Datapath executes: never better than the best
        assert m["lower_bound_bytes"] <= m["total"] <= run["total"], m
        gm, gk, gn = m["shape"]
        assert run["tm"] % acc.rows == 0 or run["tm"] == gm, run
        assert run["tn"] % acc.cols == 0 or run["tn"] == gn, run
        if run["tk"] < gk:  # partial sums: they wait in the result buffer
            tile_rows = run["tm"] * -(-run["tn"] // acc.cols)
            assert tile_rows <= result_buffer_rows(acc), run
    s = r["per_step"]
    assert s["dram_bound_bytes"] <= s["dram_searched_bytes"] <= s["dram_datapath_bytes"]
    assert s["dram_searched_bytes"] <= s["dram_bytes"]
    # the search and the estimate see the same GEMM
    op = next(op for op in step_ops(model_workload(model, batch), "niti") if op.op == "gemm")
    assert search(gemm_shape(op, acc), hierarchy(acc)).as_dict().items() <= gemms[0].items()


def test_the_mapping_report(tmp_path):
    from nitihw.sim.model.estimate import write_reports

    acc = load_accelerator().with_array("8x8")
    r = estimate(model_workload("lenet", 16), acc, 16, 1000, "lenet")
    written = write_reports(r, tmp_path)
    assert tmp_path / "traffic_vs_bound.png" in written
    lines = (tmp_path / "MAPPING_REPORT.csv").read_text().splitlines()
    assert lines[0].startswith("LayerID, M, K, N, Loop Order, Tile M, Tile N, Tile K")
    assert len(lines) - 1 == sum(len(row["mappings"]) for row in r["rows"])


@pytest.mark.parametrize("model,batch,array", STEPS[:2])
def test_energy_and_stalls_are_priced_from_the_chosen_traffic(model, batch, array):
    """--traffic: the off-chip energy is the chosen traffic's bytes at the table's DRAM cost,
    stalls follow them, and the three choices rank as the mappings do; every choice reports
    the same four totals."""
    acc = load_accelerator().with_array(array)
    layers = model_workload(model, batch)
    runs = {t: estimate(layers, acc, batch, 50000, model, traffic=t) for t in TRAFFIC}
    s = {t: r["per_step"] for t, r in runs.items()}
    for key in ("dram_fixed_bytes", "dram_datapath_bytes", "dram_searched_bytes"):
        assert len({s[t][key] for t in TRAFFIC}) == 1  # the same report whatever is priced
    assert s["fixed"]["dram_bytes"] == s["fixed"]["dram_fixed_bytes"]
    assert s["datapath"]["dram_bytes"] == s["datapath"]["dram_datapath_bytes"]
    assert s["searched"]["dram_bytes"] == s["searched"]["dram_searched_bytes"]
    dram_pj = acc.energy.dram_per_byte
    for t in TRAFFIC:
        assert s[t]["energy_offchip_pj"] == pytest.approx(s[t]["dram_bytes"] * dram_pj)
        assert runs[t]["traffic"] == t
    assert s["searched"]["energy_pj"] <= s["datapath"]["energy_pj"] < s["fixed"]["energy_pj"]
    assert s["searched"]["stall_cycles"] <= s["datapath"]["stall_cycles"]
    assert s["datapath"]["stall_cycles"] <= s["fixed"]["stall_cycles"]
    # what does not move off chip is the same
    for key in ("macs", "array_cycles", "sram_bytes", "energy_mac_pj", "energy_buffers_pj"):
        assert len({s[t][key] for t in TRAFFIC}) == 1, key
    with pytest.raises(ValueError, match="traffic must be one of"):
        estimate(layers, acc, batch, 50000, model, traffic="best")


def test_traffic_on_the_command_line_and_in_grids(tmp_path, capsys):
    from nitihw.sim.command.cli import main
    from nitihw.sim.explore.sweep.grid import GridError, load_grid

    out = tmp_path / "est"
    argv = ["estimate", "--model", "lenet", "--batch", "16", "--array", "8x8", "--no-plots"]
    assert main([*argv, "--traffic", "fixed", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "priced above (the fixed loop order)" in text
    assert main([*argv, "--traffic", "best", "--out", str(out)]) == 2
    assert "--traffic: invalid choice: 'best'" in capsys.readouterr().err
    grid = tmp_path / "g.toml"
    grid.write_text('[axes]\nmodel = ["lenet"]\ntraffic = ["datapath", "nearest"]\n')
    with pytest.raises(GridError, match="unknown traffic 'nearest'"):
        load_grid(grid)
    # the mapping objective: on the command line, in a grid, in the reports
    assert main([*argv, "--objective", "time", "--out", str(out)]) == 0
    capsys.readouterr()
    assert json.loads((out / "estimate.json").read_text())["objective"] == "time"
    assert main([*argv, "--objective", "speed", "--out", str(out)]) == 2
    assert "--objective: invalid choice: 'speed'" in capsys.readouterr().err
    grid.write_text('[axes]\nmodel = ["lenet"]\nobjective = ["traffic", "speed"]\n')
    with pytest.raises(GridError, match="unknown objective 'speed'"):
        load_grid(grid)
    grid.write_text('[axes]\nmodel = ["lenet"]\nobjective = ["traffic", "time"]\n')
    assert len(load_grid(grid).points) == 2


def test_the_objective_trades_bytes_for_cycles():
    """--objective time keeps K whole where it can (fewer cycles, more bytes); traffic cuts it
    (fewer bytes). On vgg-small-7's step: time's cycles < traffic's, traffic's bytes < time's;
    energy (which also weighs the partial sums' result-buffer energy) moves no fewer bytes than
    traffic."""
    acc = load_accelerator().with_array("16x16")
    layers = model_workload("vgg-small-7", 32)
    r = {
        o: estimate(layers, acc, 32, 32, "vgg-small-7", objective=o)["per_step"] for o in OBJECTIVES
    }
    assert r["time"]["total_cycles"] < r["traffic"]["total_cycles"]
    assert r["traffic"]["dram_bytes"] < r["time"]["dram_bytes"]
    assert r["energy"]["dram_bytes"] >= r["traffic"]["dram_bytes"]


@pytest.mark.parametrize("seed", range(6))
def test_the_driver_walks_the_datapaths_mapping(seed):
    """The Datapath's searched mapping as the driver runs it (gemm_walk's array tiles): an A
    or B buffer tile comes in when the tile the walk is on needs another one, and the bytes
    that brings in are the mapping's; its partial sums fit the result buffer (they never
    leave the chip), so no result tile is left and visited again unless it waits there."""
    from nitihw.sim.model.cycle_model import Tiling, drained_rows, gemm_walk

    rng = np.random.default_rng(100 + seed)
    (rows, cols), kmax = (int(x) for x in rng.choice([2, 3, 4], 2)), 8
    sliced = 0
    for _ in range(6):
        m, k, n = (int(x) for x in rng.integers(1, 60, 3))
        kib = [int(x) for x in rng.integers(1, 4, 3)]  # buffers of tens of bytes
        h = Hierarchy(kib[0] * 16, kib[1] * 16, kib[2] * 64, rows, cols, kmax)
        fits = drained_rows(m, n, cols) <= h.ofmap // (cols * 4)
        g = GemmShape(m, k, n, 1, 1, 4, c_fits=fits)
        mp = search(g, h, datapath=True)
        t = Tiling(mp.order, mp.tm, mp.tn, mp.tk)
        w = gemm_walk(m, k, n, rows, cols, t, keep=fits)
        a = b = 0
        held_a = held_b = None
        for i0, j0, k0, klen in zip(w.i0, w.j0, w.k0, w.klen, strict=True):
            ka = (i0 // mp.tm, k0 // mp.tk)  # the buffer tiles this array tile reads
            kb = (k0 // mp.tk, j0 // mp.tn)
            if ka != held_a:
                held_a = ka
                a += min(mp.tm, m - ka[0] * mp.tm) * klen
            if kb != held_b:
                held_b = kb
                b += klen * min(mp.tn, n - kb[1] * mp.tn)
        assert (a, b) == (mp.a_reads, mp.b_reads), (m, k, n, h, mp)
        assert w.rows_needed <= h.ofmap // (cols * 4)
        sliced += mp.tk < k
    assert sliced  # K cut into slices: partial sums in the result buffer
