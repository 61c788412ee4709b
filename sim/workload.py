"""Workloads for the estimator: the datapath operations of one integer training step.

A workload is a list of :class:`LayerShape` (a GEMM-lowered weight layer); :func:`step_ops`
expands it into the operations the training step asks of the datapath, per layer and phase,
exactly as :mod:`nitihw.golden.layers` issues them (a test compares them with a traced golden
step). Sources: a built-in model at a batch size, or a SCALE-Sim topology CSV (conv or GEMM
format).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from nitihw.golden import models as M
from nitihw.golden.network import layer_name


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


class WorkloadError(ValueError):
    """A topology file or model could not be read: names the file, row and field."""


def conv_layer(name, batch, h, w, c, fh, fw, nf, stride=1, pad=0, first=False) -> LayerShape:
    ho = (h + 2 * pad - fh) // stride + 1
    wo = (w + 2 * pad - fw) // stride + 1
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
    out = []
    for i, layer, in_shape, out_shape in M.layer_shapes(spec):
        name = layer_name(i, layer)
        first = not out
        if isinstance(layer, M.Conv):
            h, w, c = in_shape
            out.append(
                conv_layer(
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
            )
        elif isinstance(layer, M.Linear):
            out.append(linear_layer(name, batch, in_shape[0], out_shape[0], first))
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
    try:
        text = path.read_text()
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read topology ({exc.strerror})") from None
    rows = [
        [c.strip() for c in r] for r in csv.reader(text.splitlines()) if any(c.strip() for c in r)
    ]
    if not rows:
        raise WorkloadError(f"{path}: empty topology file")
    header = [c for c in rows[0] if c]
    if header[: len(GEMM_HEADER)] == GEMM_HEADER:
        kind, need = "gemm", GEMM_HEADER
    elif header[: len(CONV_HEADER)] == CONV_HEADER:
        kind, need = "conv", CONV_HEADER
    else:
        raise WorkloadError(
            f"{path}: header {', '.join(header)!r} is neither SCALE-Sim's conv format "
            f"({', '.join(CONV_HEADER)}) nor its GEMM format ({', '.join(GEMM_HEADER)})"
        )
    layers = []
    for line, row in enumerate(rows[1:], start=2):
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
            if values[col] < 1:
                raise WorkloadError(
                    f"{path}, line {line}: field {col!r} must be >= 1, got {values[col]}"
                )
        name, first = cells[0], not layers
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
    return layers


PROFILES = ("niti", "dfp16")


def step_ops(layers: list[LayerShape], profile: str = "niti") -> list[StepOp]:
    """The operations of one training step, in the order the step issues them.

    ``niti``: each GEMM is followed by the range and rescale of its result; each layer ends with
    the update lanes. ``dfp16`` (:mod:`nitihw.golden.dfp16`): each GEMM's operands are
    converted to DFP16 (``convert``, host), the GEMM runs as chains of at most ``K_CHAIN``
    products (one datapath GEMM each) whose int32 results are scaled into float32 (``convert``),
    and the update is the host's float32 SGD with momentum (``float-update``).
    """
    if profile not in PROFILES:
        raise WorkloadError(f"unknown estimate profile {profile!r}; choose one of {PROFILES}")
    ops: list[StepOp] = []

    def gemm_requant(lay, phase, shape):
        m, k, n = shape
        name = lay.name
        a_el, b_el = lay.operand_elements(phase, shape)
        if profile == "dfp16":
            from nitihw.golden.dfp16 import K_CHAIN

            ops.append(StepOp(name, phase, "convert", (a_el + b_el,)))
            for k0 in range(0, k, K_CHAIN):
                kc = min(K_CHAIN, k - k0)
                ops.append(
                    StepOp(name, phase, "gemm", (m, kc, n), (a_el * kc // k, b_el * kc // k))
                )
                ops.append(StepOp(name, phase, "convert", (m * n,)))
            return
        ops.append(StepOp(name, phase, "gemm", shape, (a_el, b_el)))
        ops.append(StepOp(name, phase, "range", (m * n,)))
        ops.append(StepOp(name, phase, "rescale", (m * n,)))

    for lay in layers:
        gemm_requant(lay, "forward", lay.forward)
    for lay in reversed(layers):
        if lay.backward is not None:
            gemm_requant(lay, "backward-error", lay.backward)
        gemm_requant(lay, "weight-gradient", lay.gradient)
        kind = "float-update" if profile == "dfp16" else "update"
        ops.append(StepOp(lay.name, "update", kind, (lay.weights,)))
    return ops
