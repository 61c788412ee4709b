"""Workloads for the estimator: the datapath operations of one integer training step.

A workload is a list of :class:`LayerShape` (a GEMM-lowered weight layer); :func:`step_ops`
expands it into the operations the training step asks of the datapath, per layer and phase,
exactly as :mod:`nitihw.golden.layers` issues them (a test compares them with a traced golden
step). Sources: a built-in model at a batch size, or a SCALE-Sim topology CSV (conv or GEMM
format).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from pathlib import Path

from nitihw.golden import models as M
from nitihw.golden.files import read_text
from nitihw.golden.limits import LimitError, check
from nitihw.golden.models import layer_name


@dataclass(frozen=True)
class LayerShape:
    """One weight layer, as GEMMs: ``forward``, ``backward`` (error) and ``gradient``
    (M, K, N); ``weights`` is its weight count. ``backward`` is None for the first layer.

    ``unique`` maps each phase to the element counts of the tensors behind its A and B
    operands: a lowered convolution's operand repeats each input element up to ``k*k`` times,
    but only the tensor itself has to come from memory (the expansion happens on chip)."""

    name: str
    kind: str  # "conv" | "linear" | "gemm"
    forward: tuple[int, int, int]
    backward: tuple[int, int, int] | None
    gradient: tuple[int, int, int]
    weights: int
    unique: dict | None = None
    outputs: int | None = None  # elements after the max-pool that follows (WAGE), else M*N
    hidden: bool = True  # a ReLU follows (False: the output layer)
    groups: int = 1  # a grouped convolution: its GEMMs (one group's) run this many times

    def operand_elements(self, phase: str, shape: tuple[int, int, int]) -> tuple[int, int]:
        m, k, n = shape
        return (self.unique or {}).get(phase, (m * k, k * n))


@dataclass(frozen=True)
class StepOp:
    layer: str
    phase: str
    op: str  # "gemm" | "range" | "rescale" | "update"
    shape: tuple
    operands: tuple = ()  # gemm: elements of the tensors behind A and B
    held: bool = True  # gemm: its int32 result waits for its range before the rescale pass
    fed: bool = False  # range: the tensor is streamed through the range unit (not watched)
    b_bits: int = 0  # gemm: the B operand's width when not the datapath's (NITRO-D: 32)
    divide: bool = False  # update: on the divide lanes (NITRO-D's IntegerSGD, int32 weights)
    kept: tuple = ()  # rescale / divide of the last GEMM's result: that GEMM's (M, N)
    repeat: int = 1  # gemm: this many of it, one per group of a grouped convolution


class WorkloadError(ValueError):
    """A topology file or model could not be read: names the file, row and field."""


def conv_layer(
    name, batch, h, w, c, fh, fw, nf, stride=1, pad=0, first=False, *, pads=None, strides=None,
    dilations=(1, 1), groups=1,
) -> LayerShape:  # fmt: skip
    """A convolution lowered to GEMMs (im2col): ``pad`` on every side, or ``pads`` (top, left,
    bottom, right); ``stride`` both ways, or ``strides`` (y, x); ``dilations`` (y, x) spread
    the ``fh x fw`` taps (the GEMMs' K stays ``fh * fw * c``). ``groups``: ``c`` and ``nf``
    split into that many independent convolutions (depthwise: ``groups = c``), each its own
    GEMMs of ``c / groups`` inputs and ``nf / groups`` outputs; the shapes are one group's,
    ``weights`` all of them."""
    if groups > 1:
        if c % groups or nf % groups:
            raise WorkloadError(
                f"layer {name}: {c} input and {nf} output channels do not split into "
                f"{groups} groups"
            )
        one = conv_layer(
            name, batch, h, w, c // groups, fh, fw, nf // groups, stride, pad, first,
            pads=pads, strides=strides, dilations=dilations,
        )  # fmt: skip
        return replace(one, weights=one.weights * groups, groups=groups)
    pt, pl, pb, pr = pads if pads is not None else (pad,) * 4
    sy, sx = strides if strides is not None else (stride, stride)
    eh, ew = (fh - 1) * dilations[0] + 1, (fw - 1) * dilations[1] + 1
    ho = (h + pt + pb - eh) // sy + 1
    wo = (w + pl + pr - ew) // sx + 1
    if ho < 1 or wo < 1:
        raise WorkloadError(f"layer {name}: a {fh}x{fw} filter does not fit a {h}x{w} input")
    positions = batch * ho * wo
    n_x, n_e, n_w = batch * h * w * c, positions * nf, nf * fh * fw * c  # input, error, weights
    return LayerShape(
        name,
        "conv",
        forward=(positions, fh * fw * c, nf),
        backward=None if first else (batch * h * w, fh * fw * nf, c),
        gradient=(nf, positions, fh * fw * c),
        weights=n_w,
        unique={"forward": (n_x, n_w), "backward-error": (n_e, n_w), "weight-gradient": (n_e, n_x)},
    )


def linear_layer(name, batch, n_in, n_out, first=False) -> LayerShape:
    return LayerShape(
        name,
        "linear",
        forward=(batch, n_in, n_out),
        backward=None if first else (batch, n_out, n_in),
        gradient=(n_out, batch, n_in),
        weights=n_out * n_in,
    )


def model_workload(model: str, batch: int) -> list[LayerShape]:
    """The weight layers of a built-in model at ``batch``, lowered as the golden model does."""
    if batch < 1:
        raise WorkloadError(f"--batch must be >= 1, got {batch}")
    spec = M.get_model_spec(model)
    items = list(M.layer_shapes(spec))
    out = []
    for j, (i, layer, in_shape, out_shape) in enumerate(items):
        if not isinstance(layer, M.Conv | M.Linear):
            continue
        name = layer_name(i, layer)
        first = not out
        follow = [it[1] for it in items[j + 1 : j + 3]]
        hidden = bool(follow) and isinstance(follow[0], M.ReLU)
        pooled = hidden and len(follow) > 1 and isinstance(follow[1], M.MaxPool)
        outputs = batch * math.prod(items[j + 2][3]) if pooled else None
        if isinstance(layer, M.Conv):
            h, w, c = in_shape
            lay = conv_layer(
                name,
                batch,
                h,
                w,
                c,
                layer.kernel,
                layer.kernel,
                layer.out_channels,
                1,
                layer.pad,
                first,
            )
        else:
            lay = linear_layer(name, batch, in_shape[0], out_shape[0], first)
        out.append(replace(lay, outputs=outputs, hidden=hidden))
    return out


CONV_HEADER = [
    "Layer name",
    "IFMAP Height",
    "IFMAP Width",
    "Filter Height",
    "Filter Width",
    "Channels",
    "Num Filter",
    "Strides",
]
GEMM_HEADER = ["Layer", "M", "N", "K"]


def topology_workload(path: str | Path, batch: int = 1) -> list[LayerShape]:
    """Read a SCALE-Sim topology CSV, conv or GEMM format (told apart by the header).

    Conv rows (``Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels,
    Num Filter, Strides,`` and an optional second stride) have no padding: as in SCALE-Sim the
    IFMAP is already padded. GEMM rows (``Layer, M, N, K,``) are ``(M, K) @ (K, N)``; a
    training step of such a layer computes ``dX = dY W^T`` and ``dW = X^T dY`` too. ``batch``
    multiplies the conv positions and the GEMM M.
    """
    path = Path(path)
    if batch < 1:
        raise WorkloadError(f"--batch must be >= 1, got {batch}")
    text = read_text(path, f"{path}: topology", WorkloadError, sig=True)
    try:
        reader = csv.reader(text.splitlines())
        rows, lines = [], []  # the non-blank rows, and the line each ends on
        for r in reader:
            if any(c.strip() for c in r):
                rows.append([c.strip() for c in r])
                lines.append(reader.line_num)
    except csv.Error as exc:
        raise WorkloadError(f"{path}: not a CSV file ({exc})") from None
    if not rows:
        raise WorkloadError(f"{path}: empty topology file")
    header = [c for c in rows[0] if c]
    if header[: len(GEMM_HEADER)] == GEMM_HEADER:
        kind, need = "gemm", GEMM_HEADER
    elif header[: len(CONV_HEADER)] == CONV_HEADER:
        kind, need = "conv", CONV_HEADER
    else:
        shown = ", ".join(header)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."  # never a whole foreign file
        raise WorkloadError(
            f"{path}, line {lines[0]}: not a topology: header {shown!r} is neither SCALE-Sim's "
            f"conv format ({', '.join(CONV_HEADER)}) nor its GEMM format "
            f"({', '.join(GEMM_HEADER)})"
        )
    layers = []
    seen: dict[str, int] = {}  # layer name -> its line: a second row of a name is an error
    for line, row in zip(lines[1:], rows[1:], strict=True):
        cells = [c for c in row if c != ""]
        if len(cells) < len(need):
            raise WorkloadError(
                f"{path}, line {line}: {len(cells)} fields, expected "
                f"{len(need)} ({', '.join(need)})"
            )
        values = {}
        for col, cell in zip(need[1:], cells[1 : len(need)], strict=True):
            try:
                values[col] = int(cell)
            except ValueError:
                raise WorkloadError(
                    f"{path}, line {line}: field {col!r} is {cell!r}, not an integer"
                ) from None
            try:
                check("topology_dim", values[col], f"{path}, line {line}: field {col!r}")
            except LimitError as exc:
                raise WorkloadError(str(exc)) from None
        name, first = cells[0], not layers
        if name in seen:
            raise WorkloadError(
                f"{path}, line {line}: layer name {name!r} is used again (first on line "
                f"{seen[name]}); each layer needs its own name"
            )
        seen[name] = line
        if kind == "gemm":
            m, n, k = values["M"] * batch, values["N"], values["K"]
            layers.append(
                LayerShape(name, "gemm", (m, k, n), None if first else (m, n, k), (n, m, k), k * n)
            )
        else:
            v = values
            stride = v["Strides"]
            if v["Filter Height"] > v["IFMAP Height"] or v["Filter Width"] > v["IFMAP Width"]:
                raise WorkloadError(f"{path}, line {line}: filter larger than the IFMAP")
            layers.append(
                conv_layer(
                    name,
                    batch,
                    v["IFMAP Height"],
                    v["IFMAP Width"],
                    v["Channels"],
                    v["Filter Height"],
                    v["Filter Width"],
                    v["Num Filter"],
                    stride,
                    0,
                    first,
                )
            )
    if not layers:
        raise WorkloadError(f"{path}: no layers after the header")
    layers[-1] = replace(layers[-1], hidden=False)  # the output layer: no ReLU after it
    return layers


PROFILES = ("niti", "dfp16", "wage", "nitro-d")


def step_ops(
    layers: list[LayerShape],
    profile: str = "niti",
    model: str | None = None,
    batch: int | None = None,
):
    """The operations of one training step, in the order the step issues them.

    ``niti``: each GEMM is followed by the range and rescale of its result; each layer ends with
    the update lanes. ``dfp16`` (:mod:`nitihw.golden.dfp16`): each GEMM's operands are
    converted to DFP16 (``convert``, host), the GEMM runs as chains of at most ``K_CHAIN``
    products (one datapath GEMM each) whose int32 results are scaled into float32 (``convert``),
    and the update is the host's float32 SGD with momentum (``float-update``). ``wage``
    (:mod:`nitihw.golden.wage`): see :func:`wage_step_ops`. ``nitro-d`` needs the built-in
    ``model`` and the ``batch`` (its blocks and heads are not in ``layers``): see
    :func:`nitro_step_ops`.
    """
    if profile not in PROFILES:
        raise WorkloadError(f"unknown estimate profile {profile!r}; choose one of {PROFILES}")
    grouped = [lay.name for lay in layers if lay.groups > 1]
    if grouped and profile not in ("niti", "dfp16"):
        raise WorkloadError(
            f"grouped convolutions ({grouped[0]}) are priced for niti and dfp16; {profile} "
            "builds its own layers"
        )
    if profile == "wage":
        return wage_step_ops(layers)
    if profile == "nitro-d":
        if model not in M.MODELS:
            raise WorkloadError(
                "the nitro-d estimate needs a built-in model (its local-loss heads are not in "
                f"a topology file); got {model!r}"
            )
        if batch is None:
            raise WorkloadError("the nitro-d estimate needs the batch size")
        return nitro_step_ops(model, batch)
    ops: list[StepOp] = []

    def gemm_requant(lay, phase, shape):
        m, k, n = shape
        name, g = lay.name, lay.groups
        a_el, b_el = lay.operand_elements(phase, shape)
        if profile == "dfp16":
            from nitihw.golden.dfp16 import K_CHAIN

            ops.append(StepOp(name, phase, "convert", ((a_el + b_el) * g,)))
            for k0 in range(0, k, K_CHAIN):
                kc = min(K_CHAIN, k - k0)
                ops.append(
                    StepOp(
                        name,
                        phase,
                        "gemm",
                        (m, kc, n),
                        (a_el * kc // k, b_el * kc // k),
                        held=False,
                        repeat=g,
                    )
                )
                ops.append(StepOp(name, phase, "convert", (m * n * g,)))
            return
        ops.append(StepOp(name, phase, "gemm", shape, (a_el, b_el), repeat=g))
        ops.append(StepOp(name, phase, "range", (m * n * g,)))
        kept = (m, n) if g == 1 else ()  # a group's result buffer holds one group's
        ops.append(StepOp(name, phase, "rescale", (m * n * g,), kept=kept))

    for lay in layers:
        gemm_requant(lay, "forward", lay.forward)
    for lay in reversed(layers):
        if lay.backward is not None:
            gemm_requant(lay, "backward-error", lay.backward)
        gemm_requant(lay, "weight-gradient", lay.gradient)
        kind = "float-update" if profile == "dfp16" else "update"
        ops.append(StepOp(lay.name, "update", kind, (lay.weights,)))
    return ops


def wage_step_ops(layers: list[LayerShape]) -> list[StepOp]:
    """WAGE's step (:class:`nitihw.golden.wage.WageUnit`). Forward: the ternary weights
    (a rescale of the stored weights), the GEMM, and for hidden layers the fixed-shift rescale
    of the (pooled) sums, which needs no range: the result streams straight through. Backward:
    QE (the error is masked on the host, so its range is fed, then rescaled), the error and
    gradient GEMMs, QG (the watched range of the gradient, a ``sto`` rescale) and the update."""
    ops: list[StepOp] = []
    for lay in layers:
        m, _k, n = lay.forward
        a_el, b_el = lay.operand_elements("forward", lay.forward)
        ops.append(StepOp(lay.name, "forward", "rescale", (lay.weights,)))
        ops.append(StepOp(lay.name, "forward", "gemm", lay.forward, (a_el, b_el), held=False))
        if lay.hidden:  # the GEMM's own result, unless pooled first
            kept = () if lay.outputs else (m, n)
            ops.append(StepOp(lay.name, "forward", "rescale", (lay.outputs or m * n,), kept=kept))
    for lay in reversed(layers):
        m, _k, n = lay.forward
        errors = lay.outputs or m * n
        ops.append(StepOp(lay.name, "backward-error", "range", (errors,), fed=True))
        ops.append(StepOp(lay.name, "backward-error", "rescale", (errors,)))
        if lay.backward is not None:
            shape = lay.backward
            a_el, b_el = lay.operand_elements("backward-error", shape)
            ops.append(StepOp(lay.name, "backward-error", "gemm", shape, (a_el, b_el)))
        a_el, b_el = lay.operand_elements("weight-gradient", lay.gradient)
        ops.append(StepOp(lay.name, "weight-gradient", "gemm", lay.gradient, (a_el, b_el)))
        ops.append(StepOp(lay.name, "weight-gradient", "range", (lay.weights,)))
        ops.append(StepOp(lay.name, "weight-gradient", "rescale", (lay.weights,)))
        ops.append(StepOp(lay.name, "update", "update", (lay.weights,)))
    return ops


def nitro_step_ops(model: str, batch: int) -> list[StepOp]:
    """NITRO-D's step (:class:`nitihw.golden.nitro_d.NitroNetwork`), from the network the
    ``nitro-d`` profile builds. Forward: every block's GEMM and scaling (``divide``), then the
    output layer's. Then the output layer's weight gradient and IntegerSGD, and per block in
    training order its head (forward, scaling, error GEMM, gradient, update) and its own
    gradient and update. int8 A operands, int32 B operands; no range is needed (the scaling
    divides by constants), so no result waits for one."""
    from nitihw.golden.nitro_d import NitroNetwork

    net = NitroNetwork(M.get_model_spec(model))
    h, w, _c = net.spec.input_shape
    ops: list[StepOp] = []
    rows: dict[str, int] = {}  # GEMM rows (batch x positions) of each unit's input

    def gemm(unit, phase, m, k, n):
        ops.append(StepOp(unit.name, phase, "gemm", (m, k, n), (m * k, k * n), False, b_bits=32))

    def forward(unit, m):
        rows[unit.name] = m
        n = unit.weight.shape[0]
        gemm(unit, "forward", m, unit.fan_in, n)
        ops.append(StepOp(unit.name, "forward", "divide", (m * n,), kept=(m, n)))

    def update(unit):
        m, n = rows[unit.name], unit.weight.shape[0]
        gemm(unit, "weight-gradient", unit.fan_in, m, n)
        ops.append(StepOp(unit.name, "update", "update", (unit.weight.size,), divide=True))

    for item in net._seq:
        if item[0] == "block":
            fwd = item[1].fwd
            if fwd.kind == "conv":
                k = fwd.weight.shape[1]
                h, w = h + 2 * fwd.pad - k + 1, w + 2 * fwd.pad - k + 1
                forward(fwd, batch * h * w)
            else:
                forward(fwd, batch)
        elif item[0] == "pool":
            h, w = h // item[1], w // item[1]
        elif item[0] == "output":
            forward(net.output, batch)
    update(net.output)
    for block in net.backward_order():
        forward(block.head, batch)
        head = block.head
        gemm(head, "backward-error", batch, head.weight.shape[0], head.fan_in)
        update(head)
        update(block.fwd)
    return ops


#: training-set sizes the estimate uses for "per epoch" with a built-in model
DEFAULT_TRAIN_SAMPLES = {
    "mlp-digits": 1437,
    "cnn-digits": 1437,
    "mlp-mnist": 60000,
    "lenet": 60000,
    "vgg8b": 60000,
    "vgg-small-7": 50000,
    "vgg-small-8": 50000,
    "vgg-small-9": 50000,
}
