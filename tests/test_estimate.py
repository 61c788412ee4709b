"""nitihw estimate: workloads, the accelerator config, energy, reports and the cycle model."""

import csv
import json
from collections import Counter

import numpy as np
import pytest

from nitihw.golden import NumpyBackend
from nitihw.golden.layers import StepContext
from nitihw.golden.models import MODELS, get_model_spec
from nitihw.golden.network import build_network
from nitihw.golden.profiles import get_profile
from nitihw.sim.command.cli import main
from nitihw.sim.model.accelerator import ConfigError, load_accelerator
from nitihw.sim.model.cycle_model import ArrayConfig, CycleReport
from nitihw.sim.model.estimate import array_config, estimate
from nitihw.sim.model.workload import WorkloadError, model_workload, step_ops, topology_workload


def traced_step(model, batch, array, profile="niti", mu=3):
    """One golden training step of ``model`` under ``profile``: its trace and cycle report."""
    spec = get_model_spec(model)
    prof = get_profile(profile)
    net = build_network(spec, prof, 0)
    be = NumpyBackend(overflow=prof.overflow)
    trace = []
    be.trace = trace
    net.to_backend(be)
    x = np.random.default_rng(1).integers(-127, 128, (batch, *spec.input_shape)).astype(np.int8)
    net.train_step(x, np.arange(batch) % 10, StepContext(be, prof, mu=mu))
    report = CycleReport(array)
    for e in trace:
        report.append(e)
    return trace, report


def kept(entry) -> tuple:
    """The (M, N) of the GEMM whose result a rescale or divide reads, as the workload says."""
    return tuple(entry.extra.get("kept") or ())


@pytest.mark.parametrize("model", sorted(MODELS))
def test_workload_is_what_the_golden_step_does(model):
    batch = 1 if model.startswith("vgg") else 3
    # the accelerator's array and buffers: the GEMMs follow the mappings the estimate prices
    trace, report = traced_step(model, batch, array_config(load_accelerator()))
    got = Counter((e.tag.layer, e.tag.phase, e.op, e.shape, kept(e)) for e in trace)
    want = Counter(
        (o.layer, o.phase, o.op, o.shape, o.kept) for o in step_ops(model_workload(model, batch))
    )
    assert got == want
    # the estimate's array cycles are the cycle model's, layer by layer and phase by phase
    acc = load_accelerator()
    result = estimate(model_workload(model, batch), acc, batch, batch, model)
    est = {(r["layer"], r["phase"]): (r["cycles"], r["macs"]) for r in result["rows"]}
    model_rows = {(lay, ph): (c, mac) for lay, ph, c, _m, mac, _u in report.rows()}
    assert est == model_rows


def test_energy_is_counts_times_table(tmp_path):
    cfg = tmp_path / "a.toml"
    cfg.write_text("[array]\nrows = 4\ncols = 4\n[energy]\nint8_mult = 0.5\n")
    acc = load_accelerator(cfg)
    assert (acc.rows, acc.cols) == (4, 4)
    r = estimate(model_workload("mlp-digits", 16), acc, 16, 1437, "mlp-digits")
    macs = r["per_step"]["macs"]
    assert r["per_step"]["energy_mac_pj"] == pytest.approx(macs * (0.5 + 0.1))
    assert r["per_step"]["fp32_energy_pj"] > r["per_step"]["energy_pj"]
    assert r["steps_per_epoch"] == 90
    assert r["per_epoch"]["macs"] == 90 * macs


@pytest.mark.parametrize(
    "text,message",
    [
        ("[array]\nrows = 0\n", "array.rows must be an integer in 1..256, got 0"),
        ("[array]\nrows = 1000000\n", "array.rows must be an integer in 1..256, got 1000000"),
        (
            "[precision]\noperand_bits = 12\n",
            "precision.operand_bits must be 2, 3, 4, 5, 6, 7, 8 or 16, got 12",
        ),
        ("[buffers]\nifmap_kib = 0\n", "buffers.ifmap_kib must be a number > 0"),
        ("[clock]\nfrequency_mhz = nan\n", "clock.frequency_mhz must be a number > 0"),
        ("[array]\nrows = \xff\n", "not a text file .byte 0xff at offset 15 is not UTF-8."),
        ("[array]\nrows = 'eight'\n", "array.rows must be an integer"),
        ("[array]\nrow = 8\n", "unknown key array.row"),
        ("[memory]\nx = 1\n", "unknown section [memory]"),
        ("[buffers]\nifmap_kib = -1\n", "buffers.ifmap_kib must be a number > 0"),
        ("[energy]\nint8_mul = 1\n", "unknown key energy.int8_mul"),
        ("[energy]\nint8_mult = -1\n", "energy.int8_mult must be a number >= 0"),
        ("[energy]\ntable = 'nosuch'\n", "unknown energy table 'nosuch'"),
        ("[array\nrows = 1", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_bytes(text.encode("latin-1"))  # \xff: one byte that is not UTF-8
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_accelerator(cfg)


def test_energy_table_file_must_be_complete(tmp_path):
    table = tmp_path / "t.toml"
    table.write_text('name = "mine"\n[pj]\nint8_add = 0.1\n')
    with pytest.raises(ConfigError, match="missing pj.int16_add"):
        load_accelerator(None, str(table))


CONV_CSV = (
    "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, "
    "Strides,\n"
    "conv1, 28, 28, 5, 5, 1, 20, 1,\n"
    "conv2, 12, 12, 5, 5, 20, 50, 1,\n"
)
GEMM_CSV = """Layer, M, N, K,
fc1, 1, 500, 800,
fc2, 1, 10, 500,
"""


def test_scalesim_topologies_match_the_builtin_layers(tmp_path):
    (tmp_path / "conv.csv").write_text(CONV_CSV)
    (tmp_path / "gemm.csv").write_text(GEMM_CSV)
    conv = topology_workload(tmp_path / "conv.csv", batch=8)
    gemm = topology_workload(tmp_path / "gemm.csv", batch=8)
    lenet = model_workload("lenet", 8)
    assert [(x.forward, x.backward, x.gradient) for x in conv] == [
        (x.forward, x.backward, x.gradient) for x in lenet[:2]
    ]
    assert gemm[0].backward is None
    assert [(x.forward, x.gradient, x.weights) for x in gemm] == [
        (x.forward, x.gradient, x.weights) for x in lenet[2:]
    ]
    assert gemm[1].backward == lenet[3].backward


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "empty topology file"),
        ("Name, A, B,\nx, 1, 2,\n", "neither SCALE-Sim's conv format"),
        ("Layer, M, N, K,\nfc, 1, 2,\n", "line 2: 3 fields, expected 4"),
        ("Layer, M, N, K,\nfc, 1, x, 3,\n", "line 2: field 'N' is 'x', not an integer"),
        ("Layer, M, N, K,\nfc, 1, 0, 3,\n", "field 'N' must be an integer in 1..2147483647, got 0"),
        ("Layer, M, N, K,\nfc, 1, 9" + "9" * 20 + ", 3,\n", "field 'N' must be an integer in 1.."),
        ("Layer, M, N, K,\nfc, \xe9, 2, 3,\n", "not a text file .byte 0xe9 at offset"),
        ("Layer, M, N, K,\n", "no layers after the header"),
        (CONV_CSV.splitlines()[0] + "\nc, 3, 3, 5, 5, 1, 2, 1,\n", "filter larger than the IFMAP"),
    ],
)
def test_bad_topologies_are_named(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode("latin-1"))  # \xe9: one byte that is not UTF-8
    with pytest.raises(WorkloadError, match=message):
        topology_workload(path)


def read_csv(path):
    with open(path) as f:
        rows = list(csv.reader(f, skipinitialspace=True))
    return [c for c in rows[0] if c], rows[1:]


def test_cli_writes_scalesim_reports_json_and_plots(tmp_path, capsys):
    out = tmp_path / "est"
    assert (
        main(["estimate", "--model", "lenet", "--batch", "8", "--array", "8x8", "--out", str(out)])
        == 0
    )
    text = capsys.readouterr().out
    assert "energy per step" in text and "fp32 datapath" in text and "per epoch" in text
    head, rows = read_csv(out / "COMPUTE_REPORT.csv")
    assert head[:6] == [
        "LayerID",
        "Total Cycles",
        "Stall Cycles",
        "Overall Util %",
        "Mapping Efficiency %",
        "Compute Util %",
    ]
    assert rows[0][0] == "0:conv/forward" and len(rows) == 15  # 4 layers, no bwd for the first
    head, _ = read_csv(out / "BANDWIDTH_REPORT.csv")
    assert head == [
        "LayerID",
        "Avg IFMAP SRAM BW",
        "Avg FILTER SRAM BW",
        "Avg OFMAP SRAM BW",
        "Avg IFMAP DRAM BW",
        "Avg FILTER DRAM BW",
        "Avg OFMAP DRAM BW",
    ]
    head, _ = read_csv(out / "DETAILED_ACCESS_REPORT.csv")
    assert head[1:4] == ["SRAM IFMAP Start Cycle", "SRAM IFMAP Stop Cycle", "SRAM IFMAP Reads"]
    assert head[-1] == "DRAM OFMAP Writes" and len(head) == 19
    head, rows = read_csv(out / "ENERGY_REPORT.csv")
    assert "MAC pJ" in head and "FP32 Total pJ" in head
    data = json.loads((out / "estimate.json").read_text())
    assert data["accelerator"]["energy"]["citation"].startswith("M. Horowitz")
    assert (out / "energy_per_layer.png").stat().st_size > 1000
    assert (out / "cycles_per_layer.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "argv,message",
    [
        (["estimate", "--out", "x"], "exactly one of --model NAME, --topology"),
        (["estimate", "--model", "lenet", "--array", "8", "--out", "x"], "bad --array '8'"),
        (
            ["estimate", "--model", "lenet", "--batch", "0", "--out", "x"],
            "argument --batch: must be an integer in 1..65536, got 0",
        ),
        (
            ["estimate", "--model", "lenet", "--train-samples", "0", "--out", "x"],
            "argument --train-samples: must be an integer in 1..10000000000, got 0",
        ),
        (
            ["estimate", "--model", "lenet", "--array", "1000000x1000000", "--out", "x"],
            "--array rows must be an integer in 1..256, got 1000000",
        ),
        (["estimate", "--topology", "/no/file.csv", "--out", "x"], "topology: cannot read"),
        (
            ["estimate", "--model", "lenet", "--energy", "x45", "--out", "x"],
            "unknown energy table 'x45'",
        ),
    ],
)
def test_cli_errors(tmp_path, capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("model", ["mlp-digits", "cnn-digits", "lenet"])
def test_dfp16_workload_is_what_the_golden_dfp16_step_does(model):
    trace, _ = traced_step(model, 3, ArrayConfig(8, 8, 256), "dfp16")
    got = Counter((e.tag.layer, e.tag.phase, e.op, e.shape) for e in trace)
    ops = step_ops(model_workload(model, 3), "dfp16")
    want = Counter((o.layer, o.phase, o.op, o.shape) for o in ops if o.op == "gemm")
    assert got == want
    r = estimate(model_workload(model, 3), load_accelerator(), 3, 3, model, "dfp16")
    assert r["profile"] == "dfp16" and r["accelerator"]["precision"]["operand_bits"] == 16
    assert r["per_step"]["energy_update_pj"] > 0 and r["per_step"]["energy_rescale_pj"] > 0


def test_cli_estimate_dfp16(tmp_path, capsys):
    assert (
        main(
            [
                "estimate",
                "--model",
                "mlp-digits",
                "--profile",
                "dfp16",
                "--no-plots",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "profile dfp16" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["mlp-digits", "cnn-digits", "lenet"])
def test_wage_workload_is_what_the_golden_wage_step_does(model):
    trace, report = traced_step(model, 3, array_config(load_accelerator()), "wage")
    got = Counter(
        (e.tag.layer, e.tag.phase, e.op, e.shape, bool(e.extra.get("fed")), kept(e)) for e in trace
    )
    ops = step_ops(model_workload(model, 3), "wage")
    assert got == Counter((o.layer, o.phase, o.op, o.shape, o.fed, o.kept) for o in ops)
    # the estimate's array cycles are the cycle model's, layer by layer and phase by phase
    r = estimate(model_workload(model, 3), load_accelerator(), 3, 3, model, "wage")
    est = {(row["layer"], row["phase"]): row["cycles"] for row in r["rows"]}
    assert est == {(lay, ph): c for lay, ph, c, _m, _mac, _u in report.rows()}
    assert r["profile"] == "wage" and r["per_step"]["energy_update_pj"] > 0


@pytest.mark.parametrize("model", ["mlp-digits", "cnn-digits", "lenet", "vgg8b"])
def test_nitro_workload_is_what_the_golden_nitro_step_does(model):
    trace, report = traced_step(model, 3, array_config(load_accelerator(), 4), "nitro-d", mu=9)
    got = Counter(
        (e.tag.layer, e.tag.phase, e.op, e.shape, bool(e.extra.get("divide")), kept(e))
        for e in trace
    )
    ops = step_ops(model_workload(model, 3), "nitro-d", model=model, batch=3)
    assert got == Counter((o.layer, o.phase, o.op, o.shape, o.divide, o.kept) for o in ops)
    r = estimate(model_workload(model, 3), load_accelerator(), 3, 3, model, "nitro-d")
    est = {(row["layer"], row["phase"]): row["cycles"] for row in r["rows"] if row["cycles"]}
    assert est == {(lay, ph): c for lay, ph, c, _m, _mac, _u in report.rows()}
    assert r["profile"] == "nitro-d" and r["per_step"]["energy_update_pj"] > 0


def test_nitro_estimate_needs_a_built_in_model(tmp_path):
    topo = tmp_path / "t.csv"
    topo.write_text("Layer, M, N, K,\nfc1, 4, 8, 16,\n")
    with pytest.raises(WorkloadError, match="needs a built-in model"):
        estimate(topology_workload(topo), load_accelerator(), 1, 1, str(topo), "nitro-d")


def test_every_model_has_a_default_epoch_size():
    from nitihw.sim.model.workload import DEFAULT_TRAIN_SAMPLES

    assert set(DEFAULT_TRAIN_SAMPLES) == set(MODELS)


def test_narrow_operands_scale_the_multiply():
    """Below 8 bits the multiply is the int8 entry x (bits/8)^2; cycles and traffic stay put
    (operands still move as bytes)."""
    from dataclasses import replace

    acc = load_accelerator(None)
    table = acc.energy
    assert table.mult(6) == pytest.approx(table.mult(8) * 36 / 64)
    assert table.mult(2) == pytest.approx(table.mult(8) / 16) and table.mult(8) == 0.2
    layers = model_workload("lenet", 64)
    eight = estimate(layers, acc, 64, 64, "lenet")["per_step"]
    six = estimate(layers, replace(acc, operand_bits=6), 64, 64, "lenet")["per_step"]
    assert six["total_cycles"] == eight["total_cycles"]
    assert six["dram_bytes"] == eight["dram_bytes"]
    per_mac = (eight["energy_mac_pj"] - six["energy_mac_pj"]) / eight["macs"]
    assert per_mac == pytest.approx(0.2 * 28 / 64)
