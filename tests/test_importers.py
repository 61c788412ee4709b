"""The user's own network: ONNX files and PyTorch modules read into the estimator's weight
layers (sim/model/importers/), checked against the built-in models exactly, on graphs the tests
write with ONNX's helper API, and through `nitihw estimate` and `nitihw sweep`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx  # a dependency of nitihw (pyproject.toml)
import pytest
from onnx import TensorProto, helper, numpy_helper

from nitihw.sim.command.cli import main
from nitihw.sim.model.accelerator import load_accelerator
from nitihw.sim.model.estimate import estimate
from nitihw.sim.model.importers.onnx_graph import (
    OnnxImportError,
    builtin_to_onnx,
    onnx_workload,
)
from nitihw.sim.model.workload import model_workload


def save(model, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def graph(nodes, inits, shape, name="net"):
    """A model of ``nodes`` with zero weights ``inits`` ({name: dims}), input ``shape``."""
    tensors = [numpy_helper.from_array(np.zeros(d, np.float32), n) for n, d in inits.items()]
    g = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        tensors,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def rows(result):
    """An estimate's per-layer rows without its timing."""
    return [{k: v for k, v in r.items()} for r in result["rows"]]


@pytest.mark.parametrize("model", ["lenet", "vgg-small-7", "cnn-digits", "mlp-digits"])
@pytest.mark.parametrize("profile", ["niti", "wage", "dfp16"])
def test_a_builtin_model_as_onnx_prices_exactly_as_the_builtin(tmp_path, model, profile):
    """Written as ONNX by nitihw, read back: the same layers, and the same per-layer cycles,
    traffic and energy, to the last digit."""
    path = save(builtin_to_onnx(model), tmp_path / f"{model}.onnx")
    layers = onnx_workload(path, 16)
    assert layers == model_workload(model, 16)
    acc = load_accelerator(None, None)
    got = estimate(layers, acc, 16, 16, model, profile)
    want = estimate(model_workload(model, 16), acc, 16, 16, model, profile)
    assert rows(got) == rows(want)
    assert got["per_step"] == want["per_step"]


def test_residual_batchnorm_relu6_pooling_and_strides(tmp_path):
    """A ResNet-like block: a strided conv with asymmetric pads, BatchNormalization folded,
    ReLU6 (Clip), a residual Add, a dilated conv, SAME padding, global pooling, Flatten, Gemm;
    node names kept; the first layer has no backward-error GEMM."""
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="stem", strides=[2, 2],
                         pads=[1, 0, 2, 1], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c0", "g", "b", "m", "v"], ["n0"], name="bn"),
        helper.make_node("Clip", ["n0"], ["r0"], name="relu6"),
        helper.make_node("Conv", ["r0", "w1"], ["c1"], name="dil", pads=[2, 2, 2, 2],
                         dilations=[2, 2], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="same", auto_pad="SAME_UPPER",
                         kernel_shape=[3, 3]),
        helper.make_node("Add", ["c2", "r0"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["r2"], name="r2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc", transB=1),
    ]  # fmt: skip
    inits = {"w0": (8, 3, 3, 3), "g": (8,), "b": (8,), "m": (8,), "v": (8,), "w1": (8, 8, 3, 3),
             "w2": (8, 8, 3, 3), "fc": (10, 8)}  # fmt: skip
    layers = onnx_workload(save(graph(nodes, inits, [1, 3, 17, 16]), tmp_path / "r.onnx"), 4)
    assert [x.name for x in layers] == ["stem", "dil", "same", "fc"]
    stem, dil, same, fc = layers
    # stem: (17 + 1 + 2 - 3) // 2 + 1 = 9 rows, (16 + 0 + 1 - 3) // 2 + 1 = 8 columns
    assert stem.forward == (4 * 9 * 8, 27, 8) and stem.backward is None and stem.hidden
    assert dil.forward == (4 * 9 * 8, 72, 8) and dil.backward == (4 * 9 * 8, 72, 8)
    assert same.forward == (4 * 9 * 8, 72, 8) and not same.hidden  # the Add comes first
    assert fc.forward == (4, 8, 10) and fc.backward == (4, 10, 8) and fc.weights == 80


def test_matmul_layers_and_a_pool_after_relu(tmp_path):
    """MatMul with a weight matrix over tokens (rows = batch x tokens); MaxPool after ReLU
    gives WAGE's pooled outputs as the built-in models do."""
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="c", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="r"),
        helper.make_node("MaxPool", ["r0"], ["p0"], name="p", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Reshape", ["p0", "shape"], ["t"], name="tokens"),
        helper.make_node("MatMul", ["t", "wm"], ["y"], name="proj"),
    ]  # fmt: skip
    model = graph(nodes, {"w0": (4, 1, 3, 3), "wm": (16, 6)}, [1, 1, 8, 8])
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 4, 16], np.int64), "shape"))
    conv, proj = onnx_workload(save(model, tmp_path / "m.onnx"), 2)
    assert conv.outputs == 2 * 4 * 4 * 4  # the pooled activations
    assert proj.forward == (2 * 4, 16, 6) and proj.weights == 96


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: graph([helper.make_node("LRN", ["x"], ["y"], name="norm1", size=5)], {},
                       [1, 3, 8, 8]),
         "node 'norm1' (LRN): local response normalisation has no integer lowering"),
        (lambda: graph([helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=3,
                                         kernel_shape=[3, 3])], {"w": (3, 2, 3, 3)},
                       [1, 3, 8, 8]),
         "node 'dw' (Conv): weight takes 2 channels per group of 3, the input has 3"),
        (lambda: graph([helper.make_node("Relu", ["x"], ["r"], name="r"),
                        helper.make_node("BatchNormalization", ["r", "g", "b", "m", "v"], ["y"],
                                         name="late_bn")],
                       {"g": (3,), "b": (3,), "m": (3,), "v": (3,)}, [1, 3, 8, 8]),
         "node 'late_bn' (BatchNormalization): a BatchNormalization is folded into the Conv"),
        (lambda: graph([helper.make_node("Flatten", ["x"], ["f"], name="f"),
                        helper.make_node("MatMul", ["f", "f2"], ["y"], name="attn"),
                        helper.make_node("Flatten", ["x"], ["f2"], name="f2")], {},
                       [1, 4, 2, 2]),
         "node 'attn' (MatMul): input 1 is not a weight initializer"),
        (lambda: graph([helper.make_node("Relu", ["x"], ["y"], name="r")], {}, [1, 3, 8, 8]),
         "no Conv, Gemm or MatMul with weights: nothing to train"),
        (lambda: graph([helper.make_node("Sigmoid", ["x"], ["y"], name="gate")], {},
                       [1, 3, 8, 8]),
         "node 'gate' (Sigmoid): sigmoid has no integer form"),
        (lambda: graph([helper.make_node("Relu", ["x"], ["y"], name="r")], {},
                       ["N", 3, "H", 8]),
         "input 'x' has shape ['N', 3, 'H', 8]: every dimension but the batch must be a fixed"),
    ],
)  # fmt: skip
def test_unsupported_graphs_are_one_line_errors_naming_the_node(tmp_path, build, message):
    path = tmp_path / "bad.onnx"
    try:
        onnx.save(build(), str(path))
    except Exception:  # the helper API refusing a graph is not what is tested here
        pytest.fail("the test graph does not save")
    with pytest.raises(OnnxImportError) as info:
        onnx_workload(path, 2)
    text = str(info.value)
    assert message in text and "\n" not in text and str(path) in text


def test_grouped_convolutions_price_as_their_groups(tmp_path):
    """A convolution of 2 groups: one group's GEMMs counted twice (twice the MACs, MAC energy
    and cycles of one group alone; one range and one rescale over the whole tensor, NITI's
    per-tensor shift); a depthwise one (group = channels) reads; WAGE, which builds its own
    layers, refuses them by name."""
    from nitihw.sim.model.workload import WorkloadError, conv_layer

    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="stem", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="r0"),
        helper.make_node("Conv", ["r0", "w1"], ["c1"], name="grouped", group=2,
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], name="depthwise", group=8,
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    ]  # fmt: skip
    inits = {"w0": (8, 3, 3, 3), "w1": (8, 4, 3, 3), "w2": (8, 1, 3, 3)}
    stem, grouped, dw = onnx_workload(
        save(graph(nodes, inits, [1, 3, 8, 8]), tmp_path / "g.onnx"), 2
    )
    assert grouped.groups == 2 and grouped.forward == (2 * 64, 36, 4) and grouped.weights == 288
    assert dw.groups == 8 and dw.forward == (2 * 16, 9, 1) and dw.weights == 72
    half = conv_layer("grouped", 2, 8, 8, 4, 3, 3, 4, pad=1)  # one group, as its own layer
    acc = load_accelerator(None, None)
    one = {(r["layer"], r["phase"]): r for r in estimate([stem, grouped], acc, 2, 2, "g")["rows"]}
    alone = {(r["layer"], r["phase"]): r for r in estimate([stem, half], acc, 2, 2, "h")["rows"]}
    for phase in ("forward", "backward-error", "weight-gradient"):
        g, h = one[("grouped", phase)], alone[("grouped", phase)]
        assert g["macs"] == 2 * h["macs"] and g["energy_pj"]["mac"] == 2 * h["energy_pj"]["mac"]
        assert g["cycles"] > 2 * h["cycles"] - 200  # two GEMMs; one range and rescale
        gm, hm = g["mappings"], h["mappings"]
        assert [m["shape"] for m in gm] == [m["shape"] for m in hm]
        assert all(m["repeat"] == 2 for m in gm)
    with pytest.raises(WorkloadError, match=r"grouped convolutions \(grouped\) are priced"):
        estimate([stem, grouped], acc, 2, 2, "g", "wage")


def test_files_that_are_not_onnx(tmp_path):
    with pytest.raises(OnnxImportError, match="no such ONNX file"):
        onnx_workload(tmp_path / "none.onnx", 1)
    (tmp_path / "junk.onnx").write_bytes(b"\xff\x00 this is not protobuf" * 10)
    with pytest.raises(OnnxImportError, match="not an ONNX model"):
        onnx_workload(tmp_path / "junk.onnx", 1)


def test_cli_estimate_onnx_equals_model(tmp_path, capsys):
    """`nitihw estimate --onnx` of a built-in model written as ONNX: the reports' rows are the
    `--model` run's (the workload's name aside)."""
    path = save(builtin_to_onnx("lenet"), tmp_path / "lenet.onnx")
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--batch", "8", "--no-plots", "--train-samples", "800"]
    assert main(["estimate", "--model", "lenet", "--out", str(a), *common]) == 0
    assert main(["estimate", "--onnx", str(path), "--out", str(b), *common]) == 0
    ja, jb = (json.loads((d / "estimate.json").read_text()) for d in (a, b))
    assert ja["rows"] == jb["rows"] and jb["workload"] == "lenet.onnx"
    assert (a / "COMPUTE_REPORT.csv").read_text() == (b / "COMPUTE_REPORT.csv").read_text()
    assert main(["estimate", "--onnx", str(path), "--model", "lenet", "--out", "x"]) == 2
    assert "exactly one of --model NAME, --topology" in capsys.readouterr().err


TORCH_NET = """
import torch
import torch.nn as nn


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.b = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.relu(x + self.b(torch.relu(self.bn(self.a(x)))))


def build():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), Residual(8),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    net.example_input = torch.zeros(1, 3, 16, 16)
    return net


def lenet():
    return nn.Sequential(nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))


not_a_module = 3
"""


def test_cli_estimate_torch(tmp_path, monkeypatch, capsys):
    """`--torch MODULE:FACTORY`: a residual network with BatchNormalization, and NITI's LeNet
    written in PyTorch, which prices as the built-in LeNet (the node names aside)."""
    pytest.importorskip("torch")  # the test extra installs it; torch stays optional for users
    from nitihw.sim.model.importers.torch_graph import torch_workload

    (tmp_path / "usernet.py").write_text(TORCH_NET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    layers, _ = torch_workload("usernet:build", 4)
    assert len(layers) == 4 and layers[0].backward is None
    assert layers[0].forward == (4 * 8 * 8, 27, 8) and layers[-1].forward == (4, 8, 10)
    lenet, _ = torch_workload("usernet:lenet", 8, "1,28,28")
    want = model_workload("lenet", 8)

    def shapes(layers):
        return [(x.forward, x.backward, x.gradient, x.weights, x.outputs, x.hidden)
                for x in layers]  # fmt: skip

    assert shapes(lenet) == shapes(want)
    out = tmp_path / "est"
    assert main(["estimate", "--torch", "usernet:build", "--batch", "4", "--no-plots",
                 "--out", str(out)]) == 0  # fmt: skip
    assert (out / "estimate.json").is_file()
    for spec, message in [
        ("usernet", "expected MODULE:FACTORY"),
        ("nomodule:build", "cannot import 'nomodule'"),
        ("usernet:missing", "usernet has no callable 'missing'"),
        ("usernet:lenet", "give --input-shape C,H,W"),
    ]:
        assert main(["estimate", "--torch", spec, "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
    sys.modules.pop("usernet", None)


def test_sweep_takes_onnx(tmp_path):
    """A grid's topology axis takes .onnx files, and `nitihw sweep --onnx` puts one in place
    of the grid's model axis; the points' estimates are the built-in model's."""
    import pandas as pd

    path = save(builtin_to_onnx("cnn-digits"), tmp_path / "cnn.onnx")
    grid = tmp_path / "grid.toml"
    grid.write_text('compute = ["estimate"]\n[axes]\nmodel = ["cnn-digits"]\nbatch = 8\n'
                    "rows = [4, 8]\ncols = 8\n")  # fmt: skip
    assert main(["sweep", "--grid", str(grid), "--out", str(tmp_path / "m"), "--workers", "0",
                 "--no-plots"]) == 0  # fmt: skip
    assert main(["sweep", "--grid", str(grid), "--out", str(tmp_path / "o"), "--workers", "0",
                 "--no-plots", "--onnx", str(path)]) == 0  # fmt: skip
    m = pd.read_csv(tmp_path / "m" / "results.csv")
    o = pd.read_csv(tmp_path / "o" / "results.csv")
    assert list(o["topology"]) == [str(path.resolve())] * 2
    for col in ("total_cycles", "energy_pj", "dram_bytes", "macs"):
        assert list(m[col]) == list(o[col]), col
    assert o["error"].isna().all()  # no point failed


ZIGZAG_MODELS = None
try:  # ZigZag ships shape-only ResNet-18, MobileNetV2 and AlexNet (bench/cross_tools.py)
    import zigzag

    ZIGZAG_MODELS = Path(zigzag.__file__).parent / "inputs" / "workload"
except ImportError:
    for candidate in Path("/work/venvs/zigzag/lib").glob("python3*/site-packages/zigzag"):
        ZIGZAG_MODELS = candidate / "inputs" / "workload"


@pytest.mark.skipif(
    ZIGZAG_MODELS is None or not (ZIGZAG_MODELS / "resnet18.onnx").is_file(),
    reason="zigzag-dse is not installed (its shipped models; the ops they use are tested above "
    "on graphs written here)",
)
def test_zigzags_shipped_models():
    """ZigZag's shape-only models (their weights stored elsewhere): ResNet-18 reads (20
    convolutions and the classifier, 11,678,912 weights: torchvision's without BatchNorm and
    biases), MobileNetV2 too (52 convolutions, 17 of them depthwise, and the classifier:
    3,469,760 weights); AlexNet is refused at its first LRN."""
    layers = onnx_workload(ZIGZAG_MODELS / "resnet18.onnx", 2)
    assert len(layers) == 21 and sum(x.weights for x in layers) == 11_678_912
    assert layers[0].name == "/conv1/Conv" and layers[0].forward == (2 * 112 * 112, 147, 64)
    assert layers[-1].name == "/fc/Gemm" and layers[-1].forward == (2, 512, 1000)
    mobile = onnx_workload(ZIGZAG_MODELS / "mobilenetv2.onnx", 1)
    assert len(mobile) == 53 and sum(x.weights for x in mobile) == 3_469_760
    assert sum(x.groups > 1 for x in mobile) == 17
    with pytest.raises(OnnxImportError, match=r"node 'Op2' \(LRN\)"):
        onnx_workload(ZIGZAG_MODELS / "alexnet.onnx", 1)
