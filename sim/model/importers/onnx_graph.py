"""ONNX models as estimator workloads: each weight node (Conv, Gemm, MatMul) becomes a
:class:`~nitihw.sim.model.workload.LayerShape` named after the node, lowered to GEMMs as the
golden model lowers its own layers, so that ``nitihw estimate`` and ``sweep`` price the whole
training step (forward, backward-error and weight-gradient GEMMs, ranges, rescales, updates)
of a network the user brings.

Read (docs/estimate.md, "Your own network"):

- ``Conv`` (2-D): any stride, padding (``pads`` or ``auto_pad``), dilation and ``group``
  (grouped and depthwise convolutions: one group's GEMMs, priced once and counted ``group``
  times).
- ``Gemm`` (``transA = 0``) and ``MatMul`` with a weight initializer: fully connected layers
  (a MatMul of two activations, attention's, has no weights to train and is refused).
- ``Relu``, ``Clip`` (ReLU6), ``LeakyRelu``: the activation after a layer.
- ``MaxPool``, ``AveragePool``, ``GlobalAveragePool``, ``GlobalMaxPool``; ``Flatten``,
  ``Reshape``, ``Squeeze``, ``Unsqueeze``, ``Dropout``, ``Identity``, ``Concat``; ``Add``
  (a residual connection); ``Softmax``/``LogSoftmax`` at the end; ``Constant``, ``Shape``,
  ``Gather`` (shape arithmetic): host operations, shapes only.
- ``BatchNormalization`` right after a Conv or Gemm is folded into it (no operation of its
  own); anywhere else it is refused.

Anything else is refused with one line naming the node, its op type and why. Shapes come from
``onnx.shape_inference``; the file's batch dimension is replaced by the batch asked for. Only
shapes are read, so shape-only files (weights stored elsewhere, as ZigZag ships its models)
are enough.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from nitihw.sim.model.workload import LayerShape, WorkloadError, conv_layer, linear_layer

ACTIVATIONS = {"Relu", "Clip", "LeakyRelu"}
POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
HOST_SHAPE_OPS = {
    "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Dropout", "Identity", "Concat", "Add",
    "Softmax", "LogSoftmax", "Constant", "Shape", "Gather",
}  # fmt: skip
WEIGHT_OPS = {"Conv", "Gemm", "MatMul"}
#: why the ops people ask about most are refused
REFUSED = {
    "LRN": "local response normalisation has no integer lowering on the datapath",
    "Mul": "an elementwise product of activations (squeeze-and-excitation, gating) is not lowered",
    "ConvTranspose": "transposed convolutions are not lowered to the datapath's GEMMs",
    "Sigmoid": "sigmoid has no integer form in the training methods priced",
    "Tanh": "tanh has no integer form in the training methods priced",
}


class OnnxImportError(WorkloadError):
    """An ONNX file nitihw cannot price: names the file, and the node, its op type and why."""


def _onnx():
    try:
        import onnx
    except ImportError:  # a dependency: only a broken install lacks it
        raise WorkloadError(
            "reading ONNX needs the onnx package (pip install onnx); it is one of nitihw's "
            "dependencies, so this install is incomplete"
        ) from None
    return onnx


def load_model(path: str | Path):
    """The ONNX model at ``path``, shapes inferred; a clear error for a missing file or one
    that is not ONNX."""
    onnx = _onnx()
    path = Path(path)
    if not path.is_file():
        raise OnnxImportError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise OnnxImportError(
            f"{path}: not an ONNX model ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
        ) from None
    return infer_shapes(model, str(path))


def infer_shapes(model, where: str):
    onnx = _onnx()
    if not len(model.graph.node):
        raise OnnxImportError(f"{where}: the ONNX graph has no nodes")
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception as exc:
        raise OnnxImportError(
            f"{where}: ONNX shape inference failed ({' '.join(str(exc).split())[:160]})"
        ) from None


def onnx_workload(path: str | Path, batch: int) -> list[LayerShape]:
    """The weight layers of the ONNX model at ``path``, at ``batch`` samples per step."""
    return model_workload_from_onnx(load_model(path), batch, str(path))


def _dims(value_info) -> list | None:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _Graph:
    """A walk of one ONNX graph in node order (ONNX keeps nodes topologically sorted)."""

    def __init__(self, model, batch: int, where: str):
        if batch < 1:
            raise WorkloadError(f"--batch must be >= 1, got {batch}")
        self.where, self.batch = where, batch
        graph = model.graph
        self.inits = {t.name: list(t.dims) for t in graph.initializer}
        self.shapes: dict[str, list | None] = {}
        for vi in [*graph.input, *graph.value_info, *graph.output]:
            self.shapes[vi.name] = _dims(vi)
        inputs = [i for i in graph.input if i.name not in self.inits]
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs) or "none"
            raise OnnxImportError(
                f"{where}: the graph needs exactly one input that is not a weight, has {names}"
            )
        self.input = inputs[0].name
        dims = self.shapes[self.input]
        if not dims or any(not isinstance(d, int) or d < 1 for d in dims[1:]):
            raise OnnxImportError(
                f"{where}: input {self.input!r} has shape {dims}: every dimension but the "
                "batch must be a fixed number"
            )
        self.layers: list[LayerShape] = []
        self.from_input = {self.input}  # tensors computed from the input with no weight layer
        self.layer_of: dict[str, int] = {}  # a weight layer's output (after a folded BN)
        self.activated: dict[str, int] = {}  # the activation of a weight layer's output
        self.names: set[str] = set()

    def fail(self, node, why: str):
        raise OnnxImportError(f"{self.where}: node {self.name(node)!r} ({node.op_type}): {why}")

    @staticmethod
    def name(node) -> str:
        return node.name or f"{node.op_type}:{node.output[0]}"

    def shape(self, node, tensor: str) -> list[int]:
        """The activation ``tensor``'s shape without its batch dimension."""
        dims = self.shapes.get(tensor)
        if not dims or any(not isinstance(d, int) for d in dims[1:]):
            self.fail(node, f"the shape of {tensor!r} is not known (shape inference gave {dims})")
        return [int(d) for d in dims[1:]]

    def weight(self, node, i: int) -> list[int]:
        if len(node.input) <= i or node.input[i] not in self.inits:
            self.fail(node, f"input {i} is not a weight initializer (a layer computed from "
                      "activations has nothing to train)")  # fmt: skip
        return self.inits[node.input[i]]

    def add_layer(self, node, make) -> None:
        name = self.name(node)
        base, k = name, 1
        while name in self.names:  # node names need not be unique in ONNX
            k += 1
            name = f"{base}#{k}"
        self.names.add(name)
        first = node.input[0] in self.from_input
        try:
            layer = make(name, first)
        except WorkloadError as exc:
            self.fail(node, str(exc))
        self.layer_of[node.output[0]] = len(self.layers)
        self.layers.append(replace(layer, hidden=False))

    # ---- the ops ------------------------------------------------------------------------------
    def conv(self, node) -> None:
        a = _attrs(node)
        x, wdims = self.shape(node, node.input[0]), self.weight(node, 1)
        if len(x) != 3 or len(wdims) != 4:
            self.fail(node, f"input {x}, weight {wdims}: only 2-D convolutions are lowered")
        c, h, w = x
        cout, cin_g, kh, kw = wdims
        group = int(a.get("group", 1))
        if cin_g * group != c:
            self.fail(node, f"weight takes {cin_g} channels per group of {group}, the input "
                      f"has {c}")  # fmt: skip
        strides = tuple(int(s) for s in a.get("strides", [1, 1]))
        dil = tuple(int(d) for d in a.get("dilations", [1, 1]))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        if auto in ("NOTSET", "VALID"):
            p = [int(v) for v in a.get("pads", [0, 0, 0, 0])] if auto == "NOTSET" else [0] * 4
            pads = (p[0], p[1], p[2], p[3])  # ONNX: begins (y, x), then ends (y, x)
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            extra = []
            for size, s, k, d in ((h, strides[0], kh, dil[0]), (w, strides[1], kw, dil[1])):
                total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
                small, big = total // 2, total - total // 2
                extra.append((small, big) if auto == "SAME_UPPER" else (big, small))
            pads = (extra[0][0], extra[1][0], extra[0][1], extra[1][1])
        else:
            self.fail(node, f"auto_pad {auto!r} is not an ONNX value")
        self.add_layer(
            node,
            lambda name, first: conv_layer(
                name,
                self.batch,
                h,
                w,
                c,
                kh,
                kw,
                cout,
                first=first,
                pads=pads,
                strides=strides,
                dilations=dil,
                groups=group,
            ),
        )

    def gemm(self, node) -> None:
        a = _attrs(node)
        if int(a.get("transA", 0)):
            self.fail(node, "transA = 1 (a transposed activation) is not a layer's GEMM")
        wdims = self.weight(node, 1)
        if len(wdims) != 2:
            self.fail(node, f"weight shape {wdims} is not a matrix")
        k, n = (wdims[1], wdims[0]) if int(a.get("transB", 0)) else (wdims[0], wdims[1])
        x = self.shape(node, node.input[0])
        if math.prod(x) != k:
            self.fail(node, f"input shape {x} does not give the weight's {k} inputs")
        self.add_layer(node, lambda name, first: linear_layer(name, self.batch, k, n, first))

    def matmul(self, node) -> None:
        wdims = self.weight(node, 1)
        x = self.shape(node, node.input[0])
        if len(wdims) != 2 or not x or x[-1] != wdims[0]:
            self.fail(node, f"{x} x {wdims} is not an activation times a weight matrix")
        rows = self.batch * math.prod(x[:-1])  # tokens x batch
        k, n = wdims
        self.add_layer(node, lambda name, first: linear_layer(name, rows, k, n, first))

    def batch_norm(self, node) -> None:
        src = node.input[0]
        if src not in self.layer_of:
            self.fail(node, "a BatchNormalization is folded into the Conv or Gemm right "
                      "before it; this one follows none")  # fmt: skip
        self.layer_of[node.output[0]] = self.layer_of[src]

    def activation(self, node) -> None:
        src = node.input[0]
        if src in self.layer_of:  # a ReLU (ReLU6, leaky) after a layer: the layer is hidden
            i = self.layer_of[src]
            self.layers[i] = replace(self.layers[i], hidden=True)
            self.activated[node.output[0]] = i

    def pool(self, node) -> None:
        src = node.input[0]
        if src in self.activated:  # pooled right after the activation (WAGE pools first)
            i = self.activated[src]
            out = self.shape(node, node.output[0])
            self.layers[i] = replace(self.layers[i], outputs=self.batch * math.prod(out))

    def walk(self, graph) -> list[LayerShape]:
        for node in graph.node:
            op = node.op_type
            if node.domain not in ("", "ai.onnx"):
                self.fail(node, f"operator domain {node.domain!r} is not standard ONNX")
            if op == "Conv":
                self.conv(node)
            elif op == "Gemm":
                self.gemm(node)
            elif op == "MatMul":
                self.matmul(node)
            elif op == "BatchNormalization":
                self.batch_norm(node)
            elif op in ACTIVATIONS:
                self.activation(node)
            elif op in POOLS:
                self.pool(node)
            elif op not in HOST_SHAPE_OPS:
                self.fail(node, REFUSED.get(op, "this op type is not lowered (supported: "
                          "docs/estimate.md, 'Your own network')"))  # fmt: skip
            if op not in WEIGHT_OPS and any(i in self.from_input for i in node.input):
                self.from_input.update(node.output)
        if not self.layers:
            raise OnnxImportError(f"{self.where}: no Conv, Gemm or MatMul with weights: nothing "
                                  "to train")  # fmt: skip
        return self.layers


def model_workload_from_onnx(model, batch: int, where: str = "ONNX model") -> list[LayerShape]:
    """:func:`onnx_workload` of a loaded, shape-inferred ``onnx.ModelProto``."""
    return _Graph(model, batch, where).walk(model.graph)


def builtin_to_onnx(model: str, batch: int = 1):
    """The built-in ``model`` (``nitihw.golden.models``) as an ONNX ``ModelProto``: its
    layers as Conv, Gemm (``transB = 1``), Relu, MaxPool, Flatten and Dropout nodes named as
    nitihw names its layers, zero weights, an NCHW input. Importing it prices exactly what
    ``--model`` prices (tests/test_importers.py)."""
    import numpy as np

    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    from nitihw.golden import models as M
    from nitihw.golden.models import layer_name

    spec = M.get_model_spec(model)
    h, w, c = spec.input_shape
    nodes, inits, tensor = [], [], "input"
    for i, layer, in_shape, out_shape in M.layer_shapes(spec):
        name, out = layer_name(i, layer), f"t{i}"
        if isinstance(layer, M.Conv):
            wname = f"w{i}"
            cin = in_shape[2]
            inits.append(numpy_helper.from_array(
                np.zeros((layer.out_channels, cin, layer.kernel, layer.kernel), np.float32), wname
            ))  # fmt: skip
            k, p = layer.kernel, layer.pad
            nodes.append(helper.make_node("Conv", [tensor, wname], [out], name=name,
                                          kernel_shape=[k, k], pads=[p] * 4))  # fmt: skip
        elif isinstance(layer, M.Linear):
            wname = f"w{i}"
            inits.append(numpy_helper.from_array(
                np.zeros((out_shape[0], in_shape[0]), np.float32), wname
            ))  # fmt: skip
            nodes.append(helper.make_node("Gemm", [tensor, wname], [out], name=name, transB=1))
        elif isinstance(layer, M.ReLU):
            nodes.append(helper.make_node("Relu", [tensor], [out], name=name))
        elif isinstance(layer, M.MaxPool):
            k = layer.kernel
            nodes.append(helper.make_node("MaxPool", [tensor], [out], name=name,
                                          kernel_shape=[k, k], strides=[k, k]))  # fmt: skip
        elif isinstance(layer, M.Flatten):
            nodes.append(helper.make_node("Flatten", [tensor], [out], name=name, axis=1))
        elif isinstance(layer, M.Dropout):
            nodes.append(helper.make_node("Dropout", [tensor], [out], name=name))
        else:
            raise TypeError(f"{model}: no ONNX form for {layer!r}")
        tensor = out
    n_out = list(M.layer_shapes(spec))[-1][3]
    graph = helper.make_graph(
        nodes,
        model,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, c, h, w])],
        [helper.make_tensor_value_info(tensor, TensorProto.FLOAT, [batch, *n_out])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    return proto
