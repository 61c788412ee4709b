"""The product's promise, shortened for every run: the same training on the simulated RTL
and on the golden model ends with the same weights_sha256, and every operation took exactly
the cycles the cycle model predicts. (Full epochs: bench/rtl_train.py, ./run tests-slow.)"""

import json

import pytest

from nitihw.sim.command.cli import main
from nitihw.sim.tools import simulator_available

pytestmark = pytest.mark.skipif(
    not simulator_available("verilator"), reason="verilator not installed"
)


def train(tmp_path, name, *args):
    out = tmp_path / name
    assert (
        main(["train", *args, "--out", str(out), "--build-dir", str(tmp_path.parent / "rtl-build")])
        == 0
    )
    return json.loads((out / "result.json").read_text())


@pytest.mark.parametrize(
    "model,array,extra",
    [
        pytest.param("mlp-digits", "4x4", [], id="mlp-digits-4x4-niti"),
        pytest.param("cnn-digits", "4x4", [], id="cnn-digits-4x4-niti"),
        pytest.param(
            "mlp-digits", "3x5", ["--weight-bits", "16", "--mu", "9"], id="mlp-digits-3x5-master"
        ),
        # 6-bit operands: rescale lanes built to saturate at +-31, 6-bit sto loss bits (one
        # build for both)
        pytest.param("mlp-digits", "4x4", ["--operand-bits", "6"], id="mlp-digits-4x4-op6"),
        pytest.param(
            "cnn-digits",
            "4x4",
            ["--operand-bits", "6", "--profile", "niti-ref"],
            id="cnn-digits-4x4-op6-niti-ref",
        ),
        # 16-bit operands
        pytest.param("cnn-digits", "4x4", ["--profile", "dfp16"], id="cnn-digits-4x4-dfp16"),
        # fed ranges, sto, limit-64 updates; pooled int32 sums
        pytest.param("mlp-digits", "4x4", ["--profile", "wage"], id="mlp-digits-4x4-wage"),
        pytest.param("cnn-digits", "3x5", ["--profile", "wage"], id="cnn-digits-3x5-wage"),
        # lr 2^15 on 2-sample batches: QG shifts left (test_wage.py checks that it does)
        pytest.param(
            "mlp-digits",
            "2x2",
            ["--profile", "wage", "--mu", "15", "--batch", "2"],
            id="mlp-digits-2x2-wage-left-shifts",
        ),
        # int8 x int32 GEMMs that wrap, DIVIDE (scaling), UPDATE_DIV (IntegerSGD)
        pytest.param("mlp-digits", "4x4", ["--profile", "nitro-d"], id="mlp-digits-4x4-nitro-d"),
        pytest.param("cnn-digits", "4x4", ["--profile", "nitro-d"], id="cnn-digits-4x4-nitro-d"),
        # 1 KiB buffers: the mappings cut K into slices, partial sums in the result buffer
        pytest.param(
            "cnn-digits",
            "4x4",
            ["--ifmap-kib", "1", "--filter-kib", "1"],
            id="cnn-digits-4x4-partial-sums",
        ),
        pytest.param(
            "mlp-digits",
            "3x5",
            ["--ifmap-kib", "0.5", "--filter-kib", "1", "--profile", "nitro-d"],
            id="mlp-digits-3x5-nitro-d-partial-sums",
        ),
    ],
)
def test_rtl_matches_golden_bit_for_bit(tmp_path, model, array, extra):
    args = [
        "--model",
        model,
        "--dataset",
        "digits",
        "--batch",
        "16",
        "--steps",
        "3",
        "--array",
        array,
        "--kmax",
        "32",
        *extra,
    ]
    gold = train(tmp_path, "golden", *args)
    rtl = train(tmp_path, "rtl", *args, "--backend", "rtl")
    assert rtl["backend"] == "rtl" and gold["backend"] == "golden"
    assert rtl["weights_sha256"] == gold["weights_sha256"]
    assert rtl["cycles"]["source"] == "rtl" and gold["cycles"]["source"] == "cycle-model"
    assert rtl["cycles"]["model_mismatches"] == 0
    assert rtl["cycles"]["total_cycles"] == gold["cycles"]["total_cycles"] > 0
    for row in rtl["cycles"]["by_layer_phase"]:
        assert row["cycles"] == row["model_cycles"]


@pytest.mark.parametrize("sim", ["icarus", "cocotb-verilator"])
def test_rtl_run_on_cocotb(tmp_path, capfd, sim):
    """The cocotb training testbench (train_tb.py) on Icarus and on Verilator, beside the
    native default. The simulator's chatter goes to simulator.log; the run's own output
    (progress, summary) is relayed as the golden run prints it."""
    if sim == "icarus" and not simulator_available("icarus"):
        pytest.skip("iverilog not installed")
    args = ["--model", "mlp-digits", "--dataset", "digits", "--batch", "8", "--steps", "1"]
    args += ["--array", "2x2", "--kmax", "16"]
    gold = train(tmp_path, "golden", *args)
    capfd.readouterr()
    rtl = train(tmp_path, "rtl", *args, "--backend", "rtl", "--sim", sim)
    assert rtl["weights_sha256"] == gold["weights_sha256"]
    assert rtl["cycles"]["model_mismatches"] == 0
    shown = capfd.readouterr()
    assert f"weights_sha256   {rtl['weights_sha256']}" in shown.out
    assert "backend rtl" in shown.err
    text = (shown.out + shown.err).replace(str(tmp_path), "").replace("(cocotb)", "")
    for chatter in ("gpi", "$finish", "cocotb", "VPI"):
        assert chatter not in text
    log = tmp_path / "rtl" / "simulator.log"
    assert f"simulator log: {log}" in shown.out and "gpi" in log.read_text()


@pytest.mark.parametrize("buffers", [[], ["--ifmap-kib", "2", "--filter-kib", "2"]])
def test_rtl_run_split_over_instances(tmp_path, buffers):
    """Batch 64: the conv GEMMs, rescales and updates are large enough to be split over two
    native instances; the run is still one Datapath's, bit for bit and cycle for cycle (also
    when small buffers cut the GEMMs' K into slices)."""
    args = ["--model", "cnn-digits", "--dataset", "digits", "--batch", "64", "--steps", "2"]
    args += ["--array", "4x4", "--kmax", "32", *buffers]
    gold = train(tmp_path, "golden", *args)
    rtl = train(tmp_path, "rtl", *args, "--backend", "rtl", "--sim-instances", "2")
    assert rtl["weights_sha256"] == gold["weights_sha256"]
    assert rtl["cycles"]["model_mismatches"] == 0
    assert rtl["cycles"]["total_cycles"] == gold["cycles"]["total_cycles"]


def test_the_tiling_changes_the_cycles_not_the_bits(tmp_path):
    """--tiling whole (one buffer tile) and the searched tilings on small buffers: the same
    weights, other cycles, so the runs above do follow the mappings."""
    args = ["--model", "cnn-digits", "--dataset", "digits", "--batch", "16", "--steps", "1"]
    args += ["--array", "4x4", "--kmax", "32"]
    whole = train(tmp_path / "w", "golden", *args, "--tiling", "whole")
    sliced = train(tmp_path / "s", "golden", *args, "--ifmap-kib", "1", "--filter-kib", "1")
    assert whole["weights_sha256"] == sliced["weights_sha256"]
    assert whole["cycles"]["total_cycles"] != sliced["cycles"]["total_cycles"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--sim-instances", "-1"], "--sim-instances: must be an integer in 0..64, got -1"),
        (["--sim", "icarus", "--waves"], "--waves records the native simulator"),
        (["--sim", "icarus", "--sim-instances", "2"], "cocotb runs one simulator"),
    ],
)
def test_rtl_option_errors(tmp_path, capsys, extra, message):
    args = ["train", "--model", "mlp-digits", "--dataset", "digits", "--backend", "rtl"]
    rc = main([*args, "--out", str(tmp_path), "--build-dir", str(tmp_path / "b"), *extra])
    assert rc == 2 and message in capsys.readouterr().err


def test_rtl_refuses_the_float_twin(tmp_path, capsys):
    rc = main(
        [
            "train",
            "--model",
            "mlp-digits",
            "--dataset",
            "digits",
            "--backend",
            "rtl",
            "--profile",
            "float32",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 2 and "golden backend only" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    "model,profile",
    [
        ("mlp-digits", "niti"),
        ("cnn-digits", "niti"),
        ("mlp-digits", "wage"),
        ("mlp-digits", "nitro-d"),
    ],
)
def test_full_epoch_on_8x8_matches_golden(tmp_path, model, profile):
    args = ["--model", model, "--dataset", "digits", "--epochs", "1", "--array", "8x8"]
    args += ["--profile", profile]
    gold = train(tmp_path, "golden", *args)
    rtl = train(tmp_path, "rtl", *args, "--backend", "rtl")
    assert rtl["steps"] == gold["steps"] == 23
    assert rtl["weights_sha256"] == gold["weights_sha256"]
    assert rtl["cycles"]["model_mismatches"] == 0
