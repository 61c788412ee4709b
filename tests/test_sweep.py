"""nitihw sweep: the grid's checks, the points, resuming, failures, the Pareto front, and the
same results from an embedded Dask cluster and from an external one (a real `dask scheduler`
and two `dask worker` processes on 127.0.0.1)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nitihw.sim.command.cli import main
from nitihw.sim.explore.sweep import GridError, load_grid, point_id
from nitihw.sim.explore.sweep.report import pareto_mask
from nitihw.sim.explore.sweep.run import run_sweep

GRID = """
compute = ["estimate"]
[axes]
model = ["mlp-digits", "cnn-digits"]
profile = ["niti", "wage"]
batch = 16
rows = [2, 4, 8]
cols = {from = 4, to = 8, step = 4}
kmax = {from = 64, to = 128, times = 2}
bandwidth = [4, 16]
"""


def write(tmp_path, text=GRID, name="grid.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def sweep(path, out, *extra) -> int:
    """``nitihw sweep --grid PATH --out OUT EXTRA...``: its exit status."""
    return main(["sweep", "--grid", str(path), "--out", str(out), *extra])


def assert_no_point_beats_the_front(df, cols):
    """Within a workload, no point is as good as a Pareto point on every objective and better
    on one."""
    for _, g in df.groupby("model"):
        for _, p in g[g["pareto"]].iterrows():
            better = (g[cols] <= p[cols]).all(axis=1) & (g[cols] < p[cols]).any(axis=1)
            assert not better.any()


def test_the_grid_spans_its_axes(tmp_path):
    g = load_grid(write(tmp_path))
    assert len(g.points) == 2 * 2 * 3 * 2 * 2 * 2 == 96
    assert g.axes["cols"] == [4, 8] and g.axes["kmax"] == [64, 128]
    assert g.axes["operand_bits"] == [8] and g.axes["ifmap_kib"] == [64.0]  # defaults
    assert g.points[0] | {} == {
        **{k: v[0] for k, v in g.axes.items()},
    }
    assert len({point_id(p) for p in g.points}) == 96


@pytest.mark.parametrize(
    "text,message",
    [
        ("[axes]\nrows = [8, 0]\n", "axes.rows[1] must be an integer in 1..256, got 0"),
        (
            "[axes]\noperand_bits = [12]\n",
            "axes.operand_bits[0] must be 2, 3, 4, 5, 6, 7, 8 or 16, got 12",
        ),
        ("[axes]\nifmap_kib = [0]\n", "axes.ifmap_kib[0] must be a number > 0"),
        ("[axes]\nmodel = ['resnet']\n", "unknown model 'resnet'"),
        ("[axes]\nprofile = ['fp8']\n", "unknown profile 'fp8'"),
        ("[axes]\narray = [8]\n", "unknown axis 'array'"),
        ("[axes]\nrows = {from = 8, to = 4, step = 1}\n", "to (4) is below from (8)"),
        ("[axes]\nrows = {from = 1, to = 4}\n", "give one of step or times"),
        ("[axes]\nrows = []\n", "axes.rows: an empty list"),
        ("[axes]\ntopology = ['no.csv']\n", "no topology file"),
        ("compute = ['synthesis']\n", "compute 'synthesis' is not a point kind"),
        ("speed = 3\n", "unknown key 'speed'"),
        ("[axes\n", "not valid TOML"),
        (
            "[axes]\nrows = {from = 1, to = 256, step = 1}\ncols = {from = 1, to = 256, step = 1}\n"
            "kmax = {from = 1, to = 65536, step = 1}\n",
            "points; at most 1,000,000",
        ),
    ],
)
def test_a_bad_grid_is_named_before_anything_runs(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    with pytest.raises(GridError, match=re.escape(message)):
        load_grid(path)
    assert sweep(path, tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err
    assert not (tmp_path / "o").exists()


def test_a_sweep_is_stored_point_by_point_and_resumes(tmp_path):
    g = load_grid(write(tmp_path))
    out = tmp_path / "o"
    rows = run_sweep(g, out, workers=0, progress=False)
    assert len(rows) == 96 and not any(r["error"] for r in rows)
    assert len(list((out / "points").glob("*.json"))) == 96
    # each row is the estimate of its point
    from nitihw.sim.explore.sweep.points import estimate_point

    r = rows[17]
    settings = {k: r[k] for k in g.axes}
    assert {k: r[k] for k in ("energy_pj", "total_cycles")} == {
        k: estimate_point(settings, {})[k] for k in ("energy_pj", "total_cycles")
    }
    # a rerun computes nothing: remove one point, and only it runs again
    stamp = {p: p.stat().st_mtime_ns for p in (out / "points").glob("*.json")}
    (out / "points" / f"{r['point']}.json").unlink()
    again = run_sweep(g, out, workers=0, progress=False)
    changed = [p for p in (out / "points").glob("*.json") if stamp.get(p) != p.stat().st_mtime_ns]
    assert [p.stem for p in changed] == [r["point"]]
    strip = [{k: v for k, v in x.items() if k != "point_seconds"} for x in again]
    assert strip == [{k: v for k, v in x.items() if k != "point_seconds"} for x in rows]


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    topo = tmp_path / "t.csv"
    topo.write_text("Layer, M, N, K,\nfc1, 16, 32, 64,\nfc2, 16, 10, 32,\n")
    path = write(tmp_path, "[axes]\ntopology = ['t.csv']\nprofile = ['niti', 'nitro-d']\n")
    out = tmp_path / "o"
    assert sweep(path, out, "--workers", "0") == 0
    text = capsys.readouterr().out
    assert "2 points, 1 failed" in text and "needs a built-in model" in text
    df = pd.read_parquet(out / "results.parquet")
    assert list(df["profile"]) == ["niti", "nitro-d"]
    assert df["error"][0] == "" and "nitro-d estimate needs a built-in model" in df["error"][1]
    assert pd.read_csv(out / "results.csv").shape[0] == 2


def test_the_pareto_front():
    v = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [2, 2], [6, 6]], float)
    assert list(pareto_mask(v)) == [True, True, True, False, True, False]


def test_the_embedded_cluster_writes_every_report(tmp_path, capsys):
    path = write(tmp_path)
    out = tmp_path / "o"
    assert sweep(path, out, "--workers", "2") == 0
    captured = capsys.readouterr()
    assert "96 points, 0 failed" in captured.out and "Pareto points" in captured.out
    assert "sweep: 96/96 points (0 failed)" in captured.err
    for name in ("results.csv", "results.parquet", "pareto.csv", "energy_vs_cycles.png"):
        assert (out / name).stat().st_size > 0
    df = pd.read_parquet(out / "results.parquet")
    front = pd.read_csv(out / "pareto.csv")
    assert len(front) == int(df["pareto"].sum()) > 0
    assert_no_point_beats_the_front(df, ["energy_pj", "total_cycles", "pes", "buffer_kib"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_external_cluster_gives_the_embedded_results(tmp_path):
    """A real scheduler and two worker processes, as on a cluster (here on 127.0.0.1)."""
    dask = Path(sys.executable).with_name("dask")
    if not dask.exists():
        dask = shutil.which("dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        subprocess.Popen(
            [
                str(dask),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        str(dask),
                        "worker",
                        address,
                        "--nworkers",
                        "1",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        from dask.distributed import Client

        with Client(address, timeout="30s") as c:
            deadline = time.time() + 60
            while len(c.scheduler_info()["workers"]) < 2:
                assert time.time() < deadline, "the two dask workers did not start"
                time.sleep(0.2)
        path = write(tmp_path)
        assert sweep(path, tmp_path / "ext", "--scheduler", address, "--no-plots") == 0
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    assert sweep(path, tmp_path / "emb", "--workers", "0", "--no-plots") == 0
    a = pd.read_csv(tmp_path / "ext" / "results.csv").drop(columns="point_seconds")
    b = pd.read_csv(tmp_path / "emb" / "results.csv").drop(columns="point_seconds")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert json.loads((tmp_path / "ext" / "points" / f"{a['point'][0]}.json").read_text())


def test_an_unreachable_scheduler_is_one_line(tmp_path, capsys):
    path = write(tmp_path, "[axes]\nrows = [8]\n")
    port = _free_port()
    assert sweep(path, tmp_path / "o", "--scheduler", f"tcp://127.0.0.1:{port}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "cannot connect" in err[-1] and err[-1].startswith("nitihw: error:")


TRAIN_GRID = """
compute = ["train"]
[train]
dataset = "digits"
epochs = 1
overflow = "wrap"
[axes]
model = ["mlp-digits"]
accumulator_bits = [12, 32]
"""


def test_train_points_are_golden_training_runs(tmp_path, capsys):
    from nitihw.golden.datasets import load_dataset
    from nitihw.golden.train import TrainConfig, train

    out = tmp_path / "o"
    path = write(tmp_path, TRAIN_GRID)
    assert sweep(path, out, "--workers", "0") == 0
    assert "test accuracy:" in capsys.readouterr().out
    df = pd.read_parquet(out / "results.parquet")
    narrow, wide = df.iloc[0], df.iloc[1]
    assert narrow["overflow_events"] > 0 and wide["overflow_events"] == 0
    cfg = TrainConfig(model="mlp-digits", dataset="digits", epochs=1, overflow="wrap")
    same = train(cfg, load_dataset("digits"))
    assert wide["weights_sha256"] == same["weights_sha256"]
    assert wide["test_accuracy"] == same["test_accuracy"] > narrow["test_accuracy"]
    assert (out / "accuracy_vs_bits.png").stat().st_size > 0


@pytest.mark.parametrize(
    "text,message",
    [
        ("[train]\nepochs = 2\n", "a [train] table, but compute has no 'train'"),
        ("compute = ['train']\n[train]\nepochs = 0\n", "train.epochs must be an integer in"),
        ("compute = ['train']\n[train]\noverflow = 'saturate'\n", "train.overflow must be wrap"),
        ("compute = ['train']\n[train]\nlr = 1\n", "unknown key train.lr"),
    ],
)
def test_a_bad_train_table_is_named(tmp_path, text, message):
    with pytest.raises(GridError, match=re.escape(message)):
        load_grid(write(tmp_path, text))


def test_train_points_at_other_operand_widths(tmp_path):
    """A 6-bit point is ``nitihw train --operand-bits 6``; 16-bit operands are DFP16's, not
    NITI's: that point records the error and the others run."""
    from nitihw.golden.datasets import load_dataset
    from nitihw.golden.train import TrainConfig, train

    grid = TRAIN_GRID.replace("[12, 32]", "[32]") + "operand_bits = [6, 16]\n"
    six, sixteen = run_sweep(load_grid(write(tmp_path, grid)), tmp_path / "o", workers=0)
    cfg = TrainConfig(
        model="mlp-digits", dataset="digits", epochs=1, overflow="wrap", operand_bits=6
    )
    assert six["error"] == ""
    assert six["weights_sha256"] == train(cfg, load_dataset("digits"))["weights_sha256"]
    assert "--operand-bits" in sixteen["error"] and "2..8, got 16" in sixteen["error"]


RTL_GRID = """
compute = ["rtl"]
[rtl]
simulator = "icarus"
seed = 3
[axes]
model = "mlp-digits"
rows = 2
cols = 3
kmax = 8
operand_bits = [6]
accumulator_bits = 16
bandwidth = [8, 16]
"""


def test_rtl_points_build_and_check_their_datapath(tmp_path, capsys):
    """Two points with one Datapath (2x3, 6-bit operands, 16-bit accumulators): one build,
    the regression testbench on it for each, bit-exact with golden."""
    from nitihw.sim.tools import simulator_available

    if not simulator_available("icarus"):
        pytest.skip("iverilog not installed")
    out = tmp_path / "o"
    assert sweep(write(tmp_path, RTL_GRID), out, "--workers", "0") == 0
    df = pd.read_parquet(out / "results.parquet")
    assert list(df["rtl_bit_exact"]) == [True, True] and list(df["rtl_tests"]) == [5, 5]
    assert (df["rtl_cycles"] > 0).all() and df["rtl_cycles"].nunique() == 1
    (build,) = (out / "rtl").iterdir()
    assert build.name == "2x3_op6_acc16_k8"
    assert "rtl: 2 points checked, 2 bit-exact with the golden model" in capsys.readouterr().out


def test_an_rtl_mismatch_is_a_result_and_a_failed_build_an_error(tmp_path, monkeypatch, capsys):
    from nitihw.sim.simulate import verify

    def fake(sim, params, seed, build_dir, cases, waves=False, env=None):
        failed = 1 if params.operand_bits == 6 else 0
        stats = {"build": "verilator: exit 1"} if params.operand_bits == 4 else {"t": {"cycles": 9}}
        tests = 0 if params.operand_bits == 4 else 3
        return verify.RunResult(sim, params, seed, tests, int(failed or not tests), stats, 1.0, 2.0,
                                str(build_dir), None)  # fmt: skip

    monkeypatch.setattr(verify, "run_datapath_tests", fake)
    grid = RTL_GRID.replace("[6]", "[4, 6, 8]").replace("[8, 16]", "8")
    out = tmp_path / "o"
    assert sweep(write(tmp_path, grid), out, "--workers", "0") == 1
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert "did not build or run (verilator: exit 1" in df["error"][0]
    assert list(df["rtl_bit_exact"][1:]) == ["False", "True"]
    text = capsys.readouterr().out
    assert "rtl: 2 points checked, 1 bit-exact" in text and "mismatches:" in text


@pytest.mark.parametrize(
    "text,message",
    [
        ("[rtl]\nseed = 2\n", "a [rtl] table, but compute has no 'rtl'"),
        ("compute = ['rtl']\n[rtl]\nsimulator = 'vcs'\n", "rtl.simulator must be verilator or"),
        ("compute = ['rtl']\n[rtl]\nseed = -1\n", "rtl.seed must be an integer in"),
    ],
)
def test_a_bad_rtl_table_is_named(tmp_path, text, message):
    with pytest.raises(GridError, match=re.escape(message)):
        load_grid(write(tmp_path, text))


def test_the_area_model_gives_back_what_it_was_fitted_from():
    from nitihw.sim.explore.synth.area import SHAPES, WIDTHS, load_calibration, logic_transistors

    cal = load_calibration()
    assert sorted(cal["per_width"]) == sorted(f"{o}/{a}" for o, a in WIDTHS)
    for key, terms in cal["per_width"].items():
        op, acc = map(int, key.split("/"))
        for r, c in SHAPES:
            model = logic_transistors(r, c, op, acc, cal)["total"]
            assert model == pytest.approx(terms["synthesised"][f"{r}x{c}"], rel=1e-9)
    # between calibrated widths: between their figures
    lo, mid, hi = (logic_transistors(16, 16, 8, a, cal)["total"] for a in (24, 28, 32))
    assert min(lo, hi) <= mid <= max(lo, hi)


def test_area_points_and_a_pareto_front_on_area(tmp_path):
    from nitihw.sim.explore.synth.area import AreaModelError, area

    with pytest.raises(AreaModelError, match="16-bit operands with accumulators of 32..48"):
        area(8, 8, 16, 24, 64)
    text = GRID.replace('["estimate"]', '["estimate", "area"]')
    text = text.replace("[axes]", "[axes]\naccumulator_bits = [24, 32]\noperand_bits = [8, 16]")
    rows = run_sweep(load_grid(write(tmp_path, text)), tmp_path / "o", workers=0, progress=False)
    failed = [r for r in rows if r["error"]]
    # 16-bit operands with a 24-bit accumulator: outside the calibration (and the Datapath)
    assert failed and all(r["operand_bits"] == 16 and r["accumulator_bits"] == 24 for r in failed)
    from nitihw.sim.explore.sweep.report import frame

    df = frame(rows)
    ok = df[df["error"] == ""]
    assert (ok["area_mm2"] > ok["sram_mm2"]).all() and (ok["logic_transistors"] > 0).all()
    bigger = ok[(ok["rows"] == 8) & (ok["cols"] == 8)]["logic_transistors"].min()
    assert bigger > ok[(ok["rows"] == 2) & (ok["cols"] == 4)]["logic_transistors"].max()
    assert_no_point_beats_the_front(ok, ["energy_pj", "total_cycles", "area_mm2"])
