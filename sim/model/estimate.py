"""``nitihw estimate``: cycles, memory traffic and energy of integer training, per layer and
phase, on a described accelerator; beside it the same network on an fp32 datapath.

Array cycles come from the cycle model (so they equal the RTL's). Memory and energy follow
the model documented in docs/estimate.md: the datapath streams operands from on-chip buffers
(``ifmap`` for A, ``filter`` for B) and drains int32 results to the ``ofmap`` buffer, where
they wait for their tensor's range before the rescale pass; tensors that do not fit a buffer
go off chip (the int32 ones twice: out, and back for the rescale). Energy = counts x the
per-operation table.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from nitihw.golden.files import atomic_write_bytes
from nitihw.rtl.commands import DATAPATH_TRACE_OPS
from nitihw.sim.model.accelerator import PNR_CLOCK, Accelerator, for_profile
from nitihw.sim.model.cycle_model import (
    ArrayConfig,
    drained_rows,
    gemm_operand_reads,
    gemm_tiling,
    op_cycles,
    whole_tiling,
)
from nitihw.sim.model.mapping import (
    GemmShape,
    Hierarchy,
    Mapping,
    check_objective,
    lower_bound_bytes,
    priced_mapping,
    search,
)
from nitihw.sim.model.mapping.dataflow import (
    DATAFLOW_NAMES,
    buffer_reads,
    check_dataflow,
    folds,
    scalesim_cycles,
)
from nitihw.sim.model.workload import LayerShape, StepOp, step_ops

COMPONENTS = ("mac", "buffers", "offchip", "rescale", "update")
PHASES = ("forward", "backward-error", "weight-gradient", "update")
FP32_BYTES = 4


@dataclass
class Row:
    """Everything counted for one (layer, phase)."""

    layer: str
    phase: str
    macs: int = 0
    cycles: int = 0
    stall: int = 0
    start: int = 0  # first cycle of the phase within the step
    mapped: float = 0.0  # sum over GEMM tiles of the fraction of PEs mapped, times cycles
    sram: dict = field(default_factory=lambda: defaultdict(int))  # bytes
    dram: dict = field(default_factory=lambda: defaultdict(int))  # bytes
    energy: dict = field(default_factory=lambda: defaultdict(float))  # pJ, int8 datapath
    fp32_energy: dict = field(default_factory=lambda: defaultdict(float))  # pJ, fp32 datapath
    dram_fixed: int = 0  # bytes off chip with the fixed loop order (before issue 29)
    dram_searched: int = 0  # bytes off chip with each GEMM's searched mapping (sim/model/mapping)
    dram_datapath: int = 0  # ... with the mapping the Datapath executes
    dram_bound: int = 0  # their lower bound
    mappings: list = field(default_factory=list)  # each GEMM's searched mapping

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.phase}"


def result_buffer_rows(acc: Accelerator) -> int:
    """The ``ofmap`` buffer as the Datapath's result buffer: rows of ``cols`` accumulators."""
    return int(acc.ofmap_kib * 1024) // (acc.cols * acc.acc_bytes)


def array_config(
    acc: Accelerator, b_bytes: int | None = None, objective: str = "traffic"
) -> ArrayConfig:
    """The accelerator as the cycle model sees it: the array, its result buffer and the
    buffers its GEMMs' mappings fit in, for ``objective`` (``b_bytes``: a wider B operand,
    NITRO-D's)."""
    return ArrayConfig(
        acc.rows,
        acc.cols,
        acc.kmax,
        result_buffer_rows(acc),
        hierarchy(acc),
        check_objective(objective),
        acc.operand_bytes,
        b_bytes,
        acc.acc_bytes,
    )


def hierarchy(acc: Accelerator) -> Hierarchy:
    """The accelerator's buffers, array, bandwidth and the energies the mapping objectives
    weigh, as :mod:`nitihw.sim.model.mapping` sees them."""
    return Hierarchy(
        int(acc.ifmap_kib * 1024),
        int(acc.filter_kib * 1024),
        int(acc.ofmap_kib * 1024),
        acc.rows,
        acc.cols,
        acc.kmax,
        float(acc.bandwidth),
        float(acc.energy.dram_per_byte),
        float(acc.energy.sram_per_byte(acc.ofmap_kib * 1024)),
    )


def b_operand_bytes(op: StepOp, acc: Accelerator) -> int:
    """Bytes of a GEMM's B operand: the datapath's operand, unless the op says its width
    (NITRO-D's int32 weights and errors)."""
    return -(-op.b_bits // 8) or acc.operand_bytes


def gemm_shape(op: StepOp, acc: Accelerator) -> GemmShape:
    """A step's GEMM as the memory sees it: the datapath's operand and accumulator bytes, the
    tensors behind A and B, and whether its result is held (and fits the result buffer)."""
    m, k, n = op.shape
    ob, bb = acc.operand_bytes, b_operand_bytes(op, acc)
    return GemmShape(
        m,
        k,
        n,
        ob,
        bb,
        acc.acc_bytes,
        a_mem=op.operands[0] * ob,
        b_mem=op.operands[1] * bb,
        held=op.held,
        c_fits=drained_rows(m, n, acc.cols) <= result_buffer_rows(acc),
    )


#: which off-chip traffic prices a GEMM's energy and stalls (``estimate(traffic=...)``):
#: ``datapath`` the mapping the Datapath executes (the default: the driver follows it, and
#: the cycles are its), ``searched`` the best of all for the real tensors (tiles of any size),
#: ``fixed`` the one loop order of the estimates before issue 29
TRAFFIC = ("datapath", "searched", "fixed")
TRAFFIC_NAMES = {
    "datapath": "the mappings the Datapath executes",
    "searched": "the searched mappings of the real tensors",
    "fixed": "the fixed loop order",
}


def check_traffic(traffic: str) -> str:
    if traffic not in TRAFFIC:
        raise ValueError(f"traffic must be one of {', '.join(TRAFFIC)}, got {traffic!r}")
    return traffic


def executed_mapping(shape: tuple, array: ArrayConfig, g: GemmShape, h: Hierarchy) -> Mapping:
    """The mapping the Datapath executes for a GEMM of ``shape`` on ``array``
    (:func:`~nitihw.sim.model.cycle_model.gemm_tiling`, chosen from the GEMM's matrices as the
    driver sees them), priced with the real tensors' bytes ``g`` (an im2col A by the tensor
    behind it)."""
    t = gemm_tiling(*shape, array) or whole_tiling(*shape)  # None: an empty GEMM
    return priced_mapping(g, h, *t)


def stream_bytes(mapping: Mapping) -> dict:
    """A mapping's off-chip bytes by stream, as the rows count them."""
    return {
        "ifmap_reads": mapping.a_reads,
        "filter_reads": mapping.b_reads,
        "ofmap_writes": mapping.c_writes,
        "ofmap_reads": mapping.c_reads,
    }


def fp32_gemm_shape(op: StepOp) -> GemmShape:
    """The same GEMM on the fp32 datapath: 4-byte operands and results, written once."""
    m, k, n = op.shape
    b = FP32_BYTES
    return GemmShape(
        m, k, n, b, b, b, a_mem=op.operands[0] * b, b_mem=op.operands[1] * b, held=False
    )


def _add_mappings(
    row: Row, g: GemmShape, h: Hierarchy, fixed_bytes: int, best: Mapping, executed: Mapping
) -> None:
    """Beside the fixed order's ``fixed_bytes``: a GEMM's mappings (``executed``, the one the
    Datapath executes; ``best``, the best searched for the real tensors) and its lower
    bound."""
    bound = lower_bound_bytes(g, h)
    row.dram_fixed += fixed_bytes
    row.dram_searched += best.total
    row.dram_datapath += executed.total
    row.dram_bound += bound
    row.mappings.append(
        {
            "shape": [g.m, g.k, g.n],
            "fixed_order_bytes": fixed_bytes,
            "lower_bound_bytes": bound,
            **best.as_dict(),
            "datapath": executed.as_dict(),
        }
    )


def _mapped_sram(op: StepOp, acc: Accelerator, array: ArrayConfig, sram: dict) -> dict:
    """A GEMM's buffer bytes on the Datapath with its tiling
    (:func:`~nitihw.sim.model.cycle_model.gemm_operand_reads`): the B tiles its banks load, and the
    partial sums the result buffer takes and gives back when K is cut into slices."""
    reads = gemm_operand_reads(
        *op.shape, acc.rows, acc.cols, acc.kmax, gemm_tiling(*op.shape, array)
    )
    out = {**sram, "filter_reads": reads["b"] * b_operand_bytes(op, acc)}
    if reads["partial"]:
        out["ofmap_writes"] = out.get("ofmap_writes", 0) + reads["partial"] * acc.acc_bytes
        out["ofmap_reads"] = out.get("ofmap_reads", 0) + reads["partial"] * acc.acc_bytes
    return out


def _mapped_fraction(dataflow: str, shape: tuple, acc: Accelerator) -> float:
    """The fraction of the PEs the stationary block maps (for os: a tile's results)."""
    m, k, n = shape
    f_r, f_c = folds(dataflow, m, k, n, acc.rows, acc.cols)
    held = {"os": m * n, "ws": k * n, "is": k * m}[dataflow]
    return held / (f_r * acc.rows * f_c * acc.cols)


def _dataflow_sram(dataflow: str, op: StepOp, acc: Accelerator) -> dict:
    """The buffer bytes of a GEMM on a ``ws`` or ``is`` array (dataflow.buffer_reads)."""
    ob, bb, ab = acc.operand_bytes, b_operand_bytes(op, acc), acc.acc_bytes
    e = buffer_reads(dataflow, *op.shape, acc.rows, acc.cols)
    out = {
        "ifmap_reads": e["a"] * ob,
        "filter_reads": e["b"] * bb,
        "ofmap_writes": e["out_writes"] * ab,
    }
    if e["out_reads"]:
        out["ofmap_reads"] = e["out_reads"] * ab
    return out


def _op_traffic(op: StepOp, acc: Accelerator, second_pass: bool = True):
    """(sram bytes by stream, dram bytes by stream) of one operation, for operands of
    ``ob`` bytes and results of ``ab`` bytes; also for the fp32 datapath."""
    r, c, kmax = acc.rows, acc.cols, acc.kmax
    ifmap_buf, filter_buf = acc.ifmap_kib * 1024, acc.filter_kib * 1024

    def gemm(ob, ab, second_pass, bb=None):
        m, k, n = op.shape
        bb = bb or ob  # the B operand's bytes (NITRO-D: int32 weights and errors)
        t_r, t_c, nch = -(-m // r), -(-n // c), -(-k // kmax)
        a_bytes, b_bytes, out = m * k * ob, k * n * bb, m * n * ab
        a_mem, b_mem = op.operands[0] * ob, op.operands[1] * bb  # the tensors behind them
        sram = {
            "ifmap_reads": t_c * a_bytes,  # A is streamed again for every column tile
            "filter_reads": b_bytes if nch == 1 else t_r * b_bytes,
            "ofmap_writes": out,
        }
        # the result buffer holds whole drained tile rows (cols accumulators each)
        held_off_chip = second_pass and drained_rows(m, n, c) > result_buffer_rows(acc)
        dram = {
            "ifmap_reads": a_mem * (1 if a_mem <= ifmap_buf else t_c),
            "filter_reads": b_mem * (1 if b_mem <= filter_buf else t_r),
            "ofmap_writes": out if (held_off_chip or not second_pass) else 0,
            "ofmap_reads": out if held_off_chip else 0,
        }
        return sram, dram

    if op.op == "gemm":
        int8 = gemm(acc.operand_bytes, acc.acc_bytes, second_pass, b_operand_bytes(op, acc))
        fp32 = gemm(FP32_BYTES, FP32_BYTES, False)
        return int8, fp32
    if op.op == "range" and op.fed:  # the masked int32 tensor, read once more
        return ({"ofmap_reads": op.shape[0] * acc.acc_bytes}, {}), ({}, {})
    if op.op in ("rescale", "divide"):
        e = op.shape[0]
        # the second pass: int32 in from the ofmap buffer, int8 out (to the next layer, off chip)
        return ({"ofmap_reads": e * acc.acc_bytes, "ifmap_writes": e}, {"ofmap_writes_int8": e}), (
            {},
            {},
        )
    if op.op == "convert":
        e = op.shape[0]  # float32 in, int16 (or float32) out, through the ofmap buffer
        return ({"ofmap_reads": e * FP32_BYTES, "ifmap_writes": e * acc.operand_bytes}, {}), (
            {},
            {},
        )
    if op.op == "float-update":
        w = op.shape[0]  # SGD with momentum on float32 masters: weights and velocities
        traffic = (
            {"filter_reads": w * FP32_BYTES * 3},
            {"weight_reads": w * FP32_BYTES * 2, "weight_writes": w * FP32_BYTES * 2},
        )
        return traffic, traffic
    if op.op == "update":
        w = op.shape[0]
        if op.divide:  # int32 weights and int32 gradients in, int32 weights out
            traffic = {"filter_reads": w * 8}, {"weight_reads": w * 4, "weight_writes": w * 4}
        else:
            traffic = {"filter_reads": w * 2}, {"weight_reads": w, "weight_writes": w}
        return traffic, (
            {"filter_reads": w * FP32_BYTES * 3},
            {"weight_reads": w * FP32_BYTES * 2, "weight_writes": w * FP32_BYTES * 2},
        )
    return ({}, {}), ({}, {})


@dataclass
class _Pricing:
    """What :func:`estimate` prices one operation with: the accelerator, its energy table and
    buffers, the dataflow, the traffic that prices off-chip energy and the mapping objective."""

    acc: Accelerator
    dataflow: str
    traffic: str
    objective: str

    def __post_init__(self):
        acc, table = self.acc, self.acc.energy
        # the array and the buffers the searched mappings fit in (GEMMs follow their mappings,
        # cycle_model.gemm_tiling)
        self.array = array_config(acc, None, self.objective)
        self.memory = self.array.memory
        self.table = table
        self.fp32_mac_pj = table.pj["fp32_mult"] + table.pj["fp32_add"]
        self.fp32_update_pj = 2 * (table.pj["fp32_mult"] + table.pj["fp32_add"])  # momentum SGD
        # each buffer's read and write energy per byte (the table's, or a memory model's)
        self.sram_pj = {
            name: table.sram_cost(size)[:2] for name, size in acc.buffer_bytes().items()
        }
        self.dram_pj = table.dram_per_byte

    def datapath_op(self, op: StepOp, row: Row) -> int:
        """Count one operation of the integer step into ``row``; returns its cycles with
        stalls."""
        acc, memory = self.acc, self.memory
        on_array = op.op in DATAPATH_TRACE_OPS  # the command table's (rtl/commands.py)
        extra = {"fed": op.fed, "divide": op.divide, "kept": op.kept}
        array = self.array  # with a wider B operand's bytes (NITRO-D) where the op has one
        if op.b_bits:
            array = replace(array, b_bytes=b_operand_bytes(op, acc))
        cyc = op_cycles(op.op, op.shape, array, extra) if on_array else 0  # the rest is host
        (sram, dram), _ = _op_traffic(op, acc, second_pass=op.held)
        if op.op == "gemm" and self.dataflow != "os":  # no RTL: SCALE-Sim's cycles, its reads
            cyc = scalesim_cycles(self.dataflow, *op.shape, acc.rows, acc.cols)
            sram = _dataflow_sram(self.dataflow, op, acc)
        elif op.op == "gemm":  # the reads of the program the Datapath runs, its tiling's
            sram = _mapped_sram(op, acc, array, sram)
        fixed_bytes = sum(dram.values())
        if op.op == "gemm":
            g = gemm_shape(op, acc)
            best = search(g, memory, False, self.objective)
            run = executed_mapping(op.shape, array, g, memory)
            _add_mappings(row, g, memory, fixed_bytes, best, run)
            if self.traffic != "fixed":
                dram = stream_bytes(run if self.traffic == "datapath" else best)
        else:  # what the rest moves is compulsory, the same under every mapping
            for key in ("dram_fixed", "dram_searched", "dram_datapath", "dram_bound"):
                setattr(row, key, getattr(row, key) + fixed_bytes)
        dram_bytes = sum(dram.values())
        stall = max(0, math.ceil(dram_bytes / acc.bandwidth) - cyc)
        row.cycles += cyc
        row.stall += stall
        for k, v in sram.items():
            row.sram[k] += v
        for k, v in dram.items():
            row.dram[k] += v
        e = row.energy
        e["buffers"] += self._sram_energy(sram)
        e["offchip"] += dram_bytes * self.dram_pj
        if op.op == "gemm":
            m, k, n = op.shape
            row.macs += m * k * n
            row.mapped += cyc * _mapped_fraction(self.dataflow, op.shape, acc)
        for component, pj in self._compute_pj(op).items():
            e[component] += pj
        return cyc + stall

    def _sram_energy(self, sram: dict) -> float:
        """pJ of buffer traffic ``{"<buffer>_<reads|writes>": bytes}``."""
        total = 0.0
        for key, nbytes in sram.items():
            buffer, _, kind = key.partition("_")
            read, write = self.sram_pj[buffer]
            total += nbytes * (write if kind.startswith("write") else read)
        return total

    def _compute_pj(self, op: StepOp) -> dict:
        """The arithmetic's energy of one operation of the integer step, by component."""
        acc, table, size = self.acc, self.table, op.shape[0] if op.shape else 0
        if op.op == "gemm":
            m, k, n = op.shape
            if op.b_bits:
                mixed = _mixed_mult(table, acc.operand_bits, op.b_bits)
                return {"mac": m * k * n * (mixed + table.add(acc.accumulator_bits))}
            return {"mac": m * k * n * table.mac(acc.operand_bits, acc.accumulator_bits)}
        if op.op == "range":  # |x|-1 and the OR
            return {"rescale": size * table.add(acc.accumulator_bits)}
        if op.op == "rescale":  # shift, round-up add, saturating compare
            return {"rescale": size * (table.add(acc.accumulator_bits) + table.add(8))}
        if op.op == "divide":  # a 32 x 33-bit reciprocal multiply and the saturation
            return {"rescale": size * (table.mult(32) + table.add(8))}
        if op.op == "update" and op.divide:  # two reciprocal multiplies, two subtractions
            return {"update": size * 2 * (table.mult(32) + table.add(32))}
        if op.op == "update":
            return {"update": size * table.add(8)}
        if op.op == "float-update":
            return {"update": size * self.fp32_update_pj}
        if op.op == "convert":
            # a compare for the max and a scaling multiply per element (to DFP16), or the
            # int32 -> float32 scaling and the chain's float32 add per output element
            return {"rescale": size * (table.pj["fp32_add"] + table.pj["fp32_mult"])}
        return {}

    def fp32_op(self, op: StepOp, row: Row) -> None:
        """Count one operation of the plain float32 step into ``row``'s fp32 energy."""
        _, (fsram, fdram) = _op_traffic(op, self.acc)
        if op.op == "gemm" and self.traffic != "fixed":  # the same choice, for fp32 tensors
            # (no RTL: the Datapath's rules with 4-byte elements for its mapping)
            datapath = self.traffic == "datapath"
            fdram = stream_bytes(search(fp32_gemm_shape(op), self.memory, datapath, self.objective))
        fe = row.fp32_energy
        fe["buffers"] += self._sram_energy(fsram)
        fe["offchip"] += sum(fdram.values()) * self.dram_pj
        if op.op == "gemm":
            m, k, n = op.shape
            fe["mac"] += m * k * n * self.fp32_mac_pj
        elif op.op == "update":
            fe["update"] += op.shape[0] * self.fp32_update_pj


def estimate(
    layers: list[LayerShape],
    acc: Accelerator,
    batch: int,
    train_samples: int,
    workload: str,
    profile: str = "niti",
    dataflow: str = "os",
    traffic: str = "datapath",
    objective: str = "traffic",
) -> dict:
    """The estimate of one training step of ``layers`` and of an epoch of ``train_samples``.

    ``profile`` is the training method priced (``niti``, ``dfp16``, ``wage`` or ``nitro-d``,
    see :func:`nitihw.sim.model.workload.step_ops`); the fp32 column is always the plain float32
    step. A multiplier of an ``a``-bit by a ``b``-bit operand is priced as the table's
    multiply at the wider width scaled by ``narrow / wide`` (array multipliers grow with the
    product of the widths: Horowitz's int8/int16/int32 multiplies follow it within 25%).

    ``dataflow``: ``os`` (the Datapath's, cycles from the RTL-checked cycle model), ``ws`` or
    ``is`` (no RTL: SCALE-Sim 3.0's cycles and the buffer reads of what stays in the PEs,
    :mod:`nitihw.sim.model.mapping.dataflow`).

    ``traffic``: the off-chip traffic that prices each GEMM's energy and stalls
    (:data:`TRAFFIC`): the mapping the Datapath executes (default; the cycles are that
    mapping's too), the best searched mapping of the real tensors, or the fixed loop order.
    Every row also reports the other two and the lower bound.

    ``objective``: what each GEMM's mappings minimise
    (:data:`~nitihw.sim.model.mapping.OBJECTIVES`): the off-chip bytes (default), their energy
    with the partial sums' result-buffer energy, or the array's cycles with the stalls.

    An accelerator whose clock is to come from place and route (``pnr``) must have it
    resolved first (:func:`nitihw.sim.explore.synth.clock.resolve_clock`, as ``nitihw
    estimate`` and ``sweep`` do): the estimate needs no FPGA tools.
    """
    if acc.clock == PNR_CLOCK:
        raise ValueError(
            "the accelerator's clock is 'pnr' and not yet placed: resolve it first "
            "(nitihw.sim.explore.synth.clock.resolve_clock)"
        )
    check_dataflow(dataflow)
    check_traffic(traffic)
    check_objective(objective)
    t0 = time.perf_counter()
    acc = for_profile(acc, profile)  # DFP16 runs on a 16-bit datapath
    price = _Pricing(acc, dataflow, traffic, objective)
    rows: dict[tuple, Row] = {}
    clock = 0
    for op in step_ops(layers, profile, model=workload, batch=batch):
        row = rows.setdefault((op.layer, op.phase), Row(op.layer, op.phase, start=clock))
        clock += _priced(price.datapath_op, op, row)
    # the same network on an fp32 datapath: unchunked GEMMs, results written once
    for op in step_ops(layers, "niti"):
        row = rows.setdefault((op.layer, op.phase), Row(op.layer, op.phase, start=clock))
        _priced(price.fp32_op, op, row)
    where = _layer_positions(layers)
    ordered = sorted(
        rows.values(), key=lambda r: (_layer_index(r.layer, where), PHASES.index(r.phase))
    )
    steps_per_epoch = -(-train_samples // batch)
    step = _totals(ordered)
    result = {
        "workload": workload,
        "profile": profile,
        "dataflow": dataflow,
        "traffic": traffic,
        "objective": objective,
        "batch": batch,
        "train_samples": train_samples,
        "steps_per_epoch": steps_per_epoch,
        "accelerator": acc.as_dict(),
        "per_step": step,
        "per_epoch": {k: v * steps_per_epoch for k, v in step.items() if k != "utilisation"},
        "rows": [_row_dict(r, acc) for r in ordered],
        "seconds_to_estimate": time.perf_counter() - t0,
    }
    freq = acc.frequency_mhz * 1e6
    result["per_step"]["seconds_at_clock"] = step["total_cycles"] / freq
    result["per_epoch"]["seconds_at_clock"] = step["total_cycles"] * steps_per_epoch / freq
    return result


def _priced(count, op: StepOp, row: Row):
    """``count(op, row)`` (a :class:`_Pricing` method), ``op.repeat`` times over: a grouped
    convolution's GEMM is priced once and counted once per group. Returns what ``count``
    returns, times the repeats (the cycles, for :meth:`_Pricing.datapath_op`)."""
    if op.repeat == 1:
        return count(op, row)
    one = Row(op.layer, op.phase)
    cycles = count(op, one)
    _add_times(row, one, op.repeat)
    return None if cycles is None else op.repeat * cycles


def _add_times(row: Row, one: Row, k: int) -> None:
    """Count ``k`` times what ``one`` counted into ``row``."""
    for name in ("macs", "cycles", "stall", "mapped", "dram_fixed", "dram_searched",
                 "dram_datapath", "dram_bound"):  # fmt: skip
        setattr(row, name, getattr(row, name) + k * getattr(one, name))
    for name in ("sram", "dram", "energy", "fp32_energy"):
        mine = getattr(row, name)
        for key, value in getattr(one, name).items():
            mine[key] += k * value
    row.mappings += [{**m, "repeat": k} for m in one.mappings]


def _layer_positions(layers: list[LayerShape]) -> tuple[dict, dict, int]:
    """Each layer name's position, each block prefix's (``"3"`` of ``"3:conv"``), and the
    count: built once, so ordering the rows is linear in the layers, not quadratic."""
    exact: dict[str, int] = {}
    block: dict[str, int] = {}
    for i, lay in enumerate(layers):
        exact.setdefault(lay.name, i)
        block.setdefault(lay.name.split(":", 1)[0], i)
    return exact, block, len(layers)


def _layer_index(name: str, where: tuple[dict, dict, int]) -> tuple:
    """Rows in layer order; a NITRO-D head (``"3:head"``) right after its block's layer."""
    exact, block, n = where
    if name in exact:
        return (exact[name], 0)
    i = block.get(name.split(":", 1)[0])
    return (i, 1) if i is not None else (n, 0)


def _mixed_mult(table, a_bits: int, b_bits: int) -> float:
    wide, narrow = max(a_bits, b_bits), min(a_bits, b_bits)
    return table.mult(wide) * narrow / wide


def _row_dict(r: Row, acc: Accelerator) -> dict:
    pes = acc.rows * acc.cols
    total = r.cycles + r.stall
    return {
        "layer": r.layer,
        "phase": r.phase,
        "macs": r.macs,
        "cycles": r.cycles,
        "stall_cycles": r.stall,
        "start_cycle": r.start,
        "stop_cycle": r.start + total,
        "overall_util_pct": 100 * r.macs / (total * pes) if total else 0.0,
        "compute_util_pct": 100 * r.macs / (r.cycles * pes) if r.cycles else 0.0,
        "mapping_efficiency_pct": 100 * r.mapped / r.cycles if r.cycles and r.macs else 0.0,
        "sram_bytes": dict(r.sram),
        "dram_bytes": dict(r.dram),
        "dram_fixed_bytes": r.dram_fixed,
        "dram_searched_bytes": r.dram_searched,
        "dram_datapath_bytes": r.dram_datapath,
        "dram_bound_bytes": r.dram_bound,
        "mappings": r.mappings,
        "energy_pj": {k: r.energy.get(k, 0.0) for k in COMPONENTS},
        "fp32_energy_pj": {k: r.fp32_energy.get(k, 0.0) for k in COMPONENTS},
    }


def _totals(rows: list[Row]) -> dict:
    cyc = sum(r.cycles for r in rows)
    stall = sum(r.stall for r in rows)
    return {
        "macs": sum(r.macs for r in rows),
        "array_cycles": cyc,
        "stall_cycles": stall,
        "total_cycles": cyc + stall,
        "sram_bytes": sum(sum(r.sram.values()) for r in rows),
        "dram_bytes": sum(sum(r.dram.values()) for r in rows),
        "dram_fixed_bytes": sum(r.dram_fixed for r in rows),
        "dram_searched_bytes": sum(r.dram_searched for r in rows),
        "dram_datapath_bytes": sum(r.dram_datapath for r in rows),
        "dram_bound_bytes": sum(r.dram_bound for r in rows),
        "energy_pj": sum(sum(r.energy.values()) for r in rows),
        "fp32_energy_pj": sum(sum(r.fp32_energy.values()) for r in rows),
        **{f"energy_{k}_pj": sum(r.energy.get(k, 0.0) for r in rows) for k in COMPONENTS},
    }


# ---- reports ----------------------------------------------------------------------------------


def _csv(header: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO()
    buf.write(", ".join(header) + ",\n")
    w = csv.writer(buf, lineterminator=",\n")
    for r in rows:
        w.writerow([f"{x:.4f}" if isinstance(x, float) else x for x in r])
    return buf.getvalue().encode()


def write_reports(result: dict, out: str | Path, plots: bool = True) -> list[Path]:
    """COMPUTE_REPORT.csv, BANDWIDTH_REPORT.csv, DETAILED_ACCESS_REPORT.csv (SCALE-Sim's
    names and headers; LayerID is ``layer/phase``; our extra columns come last),
    ENERGY_REPORT.csv, MAPPING_REPORT.csv, estimate.json and the PNG plots. Every file is
    written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    files = []
    for name, make in (
        ("COMPUTE_REPORT.csv", compute_csv),
        ("BANDWIDTH_REPORT.csv", bandwidth_csv),
        ("DETAILED_ACCESS_REPORT.csv", access_csv),
        ("ENERGY_REPORT.csv", energy_csv),
        ("MAPPING_REPORT.csv", mapping_csv),
    ):
        atomic_write_bytes(out / name, make(rows))
        files.append(out / name)
    atomic_write_bytes(out / "estimate.json", (json.dumps(result, indent=2) + "\n").encode())
    files.append(out / "estimate.json")
    if plots:
        files += write_plots(result, out)
    return files


def _layer_id(r: dict) -> str:
    return f"{r['layer']}/{r['phase']}"


def _access(r: dict, src: str, prefix: str) -> int:
    """Bytes of a row's ``src`` (``sram_bytes``, ``dram_bytes``) streams named ``prefix...``."""
    return sum(v for k, v in r[src].items() if k.startswith(prefix))


def compute_csv(rows: list[dict]) -> bytes:
    """COMPUTE_REPORT.csv: SCALE-Sim's columns, then MACs and the array's own cycles."""
    head = ["LayerID", "Total Cycles", "Stall Cycles", "Overall Util %"]
    head += ["Mapping Efficiency %", "Compute Util %", "MACs", "Array Cycles"]
    return _csv(
        head,
        [
            [
                _layer_id(r),
                r["cycles"] + r["stall_cycles"],
                r["stall_cycles"],
                r["overall_util_pct"],
                r["mapping_efficiency_pct"],
                r["compute_util_pct"],
                r["macs"],
                r["cycles"],
            ]
            for r in rows
        ],
    )


def bandwidth_csv(rows: list[dict]) -> bytes:
    """BANDWIDTH_REPORT.csv: bytes a cycle per buffer and off chip, SCALE-Sim's columns."""

    def bw(r, kind, stream):
        total = r["cycles"] + r["stall_cycles"]
        return _access(r, f"{kind}_bytes", stream) / total if total else 0.0

    head = ["LayerID"] + [
        f"Avg {t} {mem} BW" for mem in ("SRAM", "DRAM") for t in ("IFMAP", "FILTER", "OFMAP")
    ]
    return _csv(
        head,
        [
            [
                _layer_id(r),
                bw(r, "sram", "ifmap"),
                bw(r, "sram", "filter"),
                bw(r, "sram", "ofmap"),
                bw(r, "dram", "ifmap"),
                bw(r, "dram", "filter") + bw(r, "dram", "weight"),
                bw(r, "dram", "ofmap"),
            ]
            for r in rows
        ],
    )


def access_csv(rows: list[dict]) -> bytes:
    """DETAILED_ACCESS_REPORT.csv: SCALE-Sim's 19 columns, start and stop cycle and bytes per
    memory and stream."""
    detail = []
    for r in rows:
        s, e = r["start_cycle"], r["stop_cycle"]
        counts = [
            _access(r, "sram_bytes", "ifmap_reads"),
            _access(r, "sram_bytes", "filter_reads"),
            _access(r, "sram_bytes", "ofmap_writes"),
            _access(r, "dram_bytes", "ifmap_reads"),
            _access(r, "dram_bytes", "filter_reads") + _access(r, "dram_bytes", "weight_reads"),
            _access(r, "dram_bytes", "ofmap_writes") + _access(r, "dram_bytes", "weight_writes"),
        ]
        detail.append([_layer_id(r), *(x for c in counts for x in (s, e, c))])
    head = ["LayerID"] + [
        f"{mem} {t} {what}"
        for mem in ("SRAM", "DRAM")
        for t, last in (("IFMAP", "Reads"), ("Filter", "Reads"), ("OFMAP", "Writes"))
        for what in ("Start Cycle", "Stop Cycle", last)
    ]
    return _csv(head, detail)


def energy_csv(rows: list[dict]) -> bytes:
    """ENERGY_REPORT.csv: pJ by component, the total, and the fp32 datapath's total."""
    head = ["LayerID", "Layer", "Phase", "MAC pJ", "Buffers pJ", "Offchip pJ", "Rescale pJ"]
    head += ["Update pJ", "Total pJ", "FP32 Total pJ"]
    return _csv(
        head,
        [
            [
                _layer_id(r),
                r["layer"],
                r["phase"],
                *[r["energy_pj"][k] for k in COMPONENTS],
                sum(r["energy_pj"].values()),
                sum(r["fp32_energy_pj"].values()),
            ]
            for r in rows
        ],
    )


def mapping_csv(rows: list[dict]) -> bytes:
    """MAPPING_REPORT.csv: each GEMM's searched mapping (loop order outer to inner, the
    buffer-level tile), its off-chip bytes beside the fixed order's and the lower bound, how
    far each is from the bound, and how many times it runs (a grouped convolution's GEMM,
    once per group: its bytes here are one group's)."""
    body = []
    for r in rows:
        for g in r["mappings"]:
            bound = g["lower_bound_bytes"] or 1
            body.append(
                [
                    f"{r['layer']}/{r['phase']}",
                    *g["shape"],
                    g["order"],
                    g["tm"],
                    g["tn"],
                    g["tk"],
                    g["a_reads"],
                    g["b_reads"],
                    g["c_writes"],
                    g["c_reads"],
                    g["total"],
                    g["fixed_order_bytes"],
                    g["lower_bound_bytes"],
                    g["total"] / bound,
                    g["fixed_order_bytes"] / bound,
                    g["datapath"]["order"],
                    g["datapath"]["tm"],
                    g["datapath"]["tn"],
                    g["datapath"]["tk"],
                    g["datapath"]["total"],
                    g["datapath"]["total"] / bound,
                    g.get("repeat", 1),
                ]
            )
    head = ["LayerID", "M", "K", "N", "Loop Order", "Tile M", "Tile N", "Tile K"]
    head += ["DRAM A Reads", "DRAM B Reads", "DRAM Result Writes", "DRAM Result Reads"]
    head += ["Searched DRAM Bytes", "Fixed Order DRAM Bytes", "Lower Bound Bytes"]
    head += ["Searched / Bound", "Fixed Order / Bound"]
    head += ["Datapath Loop Order", "Datapath Tile M", "Datapath Tile N", "Datapath Tile K"]
    head += ["Datapath DRAM Bytes", "Datapath / Bound"]
    head += ["Count"]  # how many times the GEMM runs (a grouped convolution: its groups)
    return _csv(head, body)


def write_plots(result: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = result["rows"]
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    acc = result["accelerator"]["array"]
    title = (
        f"{result['workload']}, batch {result['batch']}, {acc['rows']}x{acc['cols']} array, "
        f"{result['accelerator']['energy']['table']}"
    )
    written = []
    # energy per layer: stacked by component, one bar per phase
    fig, ax = plt.subplots(figsize=(max(9, 1.6 * len(layers)), 4.5))
    ax.margins(y=0.08)
    width = 0.8 / len(PHASES)
    colours = dict(zip(COMPONENTS, plt.get_cmap("tab10").colors, strict=False))
    for p, phase in enumerate(PHASES):
        x = np.arange(len(layers)) + (p - 1.5) * width
        bottom = np.zeros(len(layers))
        for comp in COMPONENTS:
            vals = (
                np.array(
                    [
                        sum(
                            r["energy_pj"][comp]
                            for r in rows
                            if r["layer"] == lay and r["phase"] == phase
                        )
                        for lay in layers
                    ]
                )
                / 1e6
            )
            ax.bar(
                x,
                vals,
                width,
                bottom=bottom,
                color=colours[comp],
                label=comp if p == 0 else None,
                edgecolor="white",
                linewidth=0.3,
            )
            bottom += vals
        for xi, top in zip(x, bottom, strict=True):
            if top > 0:
                ax.text(xi, top, "FBGU"[p], ha="center", va="bottom", fontsize=7)
    ax.set_xticks(np.arange(len(layers)))
    ax.set_xticklabels(layers, rotation=30, ha="right")
    ax.set(
        ylabel="energy per step (µJ)",
        title=f"Energy per layer (F fwd, B bwd-error, G weight-grad, U update)\n{title}",
    )
    ax.legend(title="component")
    save_png(fig, out / "energy_per_layer.png")
    written.append(out / "energy_per_layer.png")
    # cycles per layer stacked by phase, stalls hatched
    fig, ax = plt.subplots(figsize=(max(7, 1.4 * len(layers)), 4.2))
    bottom = np.zeros(len(layers))
    for phase, colour in zip(PHASES, plt.get_cmap("tab10").colors, strict=False):
        for kind, hatch in (("cycles", None), ("stall_cycles", "//")):
            vals = (
                np.array(
                    [
                        sum(r[kind] for r in rows if r["layer"] == lay and r["phase"] == phase)
                        for lay in layers
                    ]
                )
                / 1e6
            )
            ax.bar(
                layers,
                vals,
                bottom=bottom,
                color=colour,
                hatch=hatch,
                alpha=0.6 if hatch else 1,
                label=phase if kind == "cycles" else None,
                edgecolor="white",
                linewidth=0.3,
            )
            bottom += vals
    ax.set(ylabel="million cycles per step (hatched: stalls)", title=f"Cycles per layer\n{title}")
    ax.tick_params(axis="x", rotation=30)
    ax.legend()
    save_png(fig, out / "cycles_per_layer.png")
    written.append(out / "cycles_per_layer.png")
    written.append(plot_traffic(result, out / "traffic_vs_bound.png", title))
    return written


def plot_traffic(result: dict, path: Path, title: str) -> Path:
    """Off-chip bytes per layer: the fixed order, the mapping the Datapath executes, the best
    searched mapping of the real tensors and the lower bound, on a log scale, each mapping's
    bar labelled with its distance from the bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = result["rows"]
    layers = list(dict.fromkeys(r["layer"] for r in rows))

    def per_layer(get) -> np.ndarray:
        return np.array([sum(get(r) for r in rows if r["layer"] == lay) for lay in layers], float)

    fixed = per_layer(lambda r: r["dram_fixed_bytes"]) / 1e6
    executed = per_layer(lambda r: r["dram_datapath_bytes"]) / 1e6
    searched = per_layer(lambda r: r["dram_searched_bytes"]) / 1e6
    bound = per_layer(lambda r: r["dram_bound_bytes"]) / 1e6
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(layers)), 4.4))
    x, w = np.arange(len(layers)), 0.2
    ax.bar(x - 1.5 * w, fixed, w, label="fixed loop order", color="tab:red")
    ax.bar(x - 0.5 * w, executed, w, label="the Datapath's mapping", color="tab:orange")
    ax.bar(x + 0.5 * w, searched, w, label="searched, the real tensors", color="tab:blue")
    ax.bar(x + 1.5 * w, bound, w, label="lower bound", color="tab:gray")
    for xi, t_, s_, b_ in zip(x, executed, searched, bound, strict=True):
        if b_ > 0:
            ax.text(xi - 0.5 * w, t_, f"{t_ / b_:.1f}x", ha="center", va="bottom", fontsize=6)
            ax.text(xi + 0.5 * w, s_, f"{s_ / b_:.1f}x", ha="center", va="bottom", fontsize=6)
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels(layers, rotation=30, ha="right")
    ax.set(ylabel="MB off chip per step", title=f"Off-chip traffic per layer\n{title}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    save_png(fig, path)
    return path


def save_png(fig, path: Path) -> None:
    """Lay out, render and close a figure, and write the PNG atomically."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _clock_text(clock: dict) -> str:
    """``500 MHz``, or ``71 MHz from place and route (...)``."""
    source = clock.get("source", "config")
    text = f"{clock['frequency_mhz']:g} MHz"
    return text if source == "config" else f"{text}, {source}"


def format_estimate(result: dict) -> str:
    acc = result["accelerator"]
    head = (
        "layer",
        "phase",
        "MACs",
        "cycles",
        "stall",
        "util %",
        "SRAM KiB",
        "DRAM KiB",
        "energy µJ",
        "fp32 µJ",
    )
    body = []
    for r in result["rows"]:
        body.append(
            (
                r["layer"],
                r["phase"],
                f"{r['macs']:,}",
                f"{r['cycles']:,}",
                f"{r['stall_cycles']:,}",
                f"{r['overall_util_pct']:.1f}",
                f"{sum(r['sram_bytes'].values()) / 1024:,.1f}",
                f"{sum(r['dram_bytes'].values()) / 1024:,.1f}",
                f"{sum(r['energy_pj'].values()) / 1e6:,.2f}",
                f"{sum(r['fp32_energy_pj'].values()) / 1e6:,.2f}",
            )
        )
    s, ep = result["per_step"], result["per_epoch"]
    body.append(
        (
            "step total",
            "",
            f"{s['macs']:,}",
            f"{s['array_cycles']:,}",
            f"{s['stall_cycles']:,}",
            "",
            f"{s['sram_bytes'] / 1024:,.1f}",
            f"{s['dram_bytes'] / 1024:,.1f}",
            f"{s['energy_pj'] / 1e6:,.2f}",
            f"{s['fp32_energy_pj'] / 1e6:,.2f}",
        )
    )
    widths = [max(len(str(x[i])) for x in (head, *body)) for i in range(len(head))]
    lines = [
        f"nitihw estimate: {result['workload']}, profile {result.get('profile', 'niti')}, "
        f"batch {result['batch']}, "
        f"{acc['array']['rows']}x{acc['array']['cols']} array, "
        f"int{acc['precision']['operand_bits']}/int{acc['precision']['accumulator_bits']}, "
        f"energy table {acc['energy']['table']}; dataflow "
        f"{DATAFLOW_NAMES[result.get('dataflow', 'os')]}"
    ]
    buffers = acc["energy"].get("buffers", {})
    if any(not b["source"].endswith("(interpolated in log2 size)") for b in buffers.values()):
        for source in dict.fromkeys(b["source"] for b in buffers.values()):
            priced = ", ".join(
                f"{name} {b['read_pj_per_byte']:.3f}/{b['write_pj_per_byte']:.3f}"
                for name, b in buffers.items()
                if b["source"] == source
            )
            lines.append(f"buffers (pJ per byte read/written): {priced}, by {source}")
    for j, row in enumerate((head, *body)):
        lines.append(
            "  ".join(
                str(c).rjust(w) if i >= 2 else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if j == 0 or j == len(body) - 1:
            lines.append("  ".join("-" * w for w in widths))
    by = ", ".join(f"{k} {s[f'energy_{k}_pj'] / 1e6:,.2f}" for k in COMPONENTS)
    lines += [
        f"energy per step ({result.get('profile', 'niti')}): {s['energy_pj'] / 1e6:,.2f} µJ "
        f"({by} µJ); "
        f"fp32 datapath: {s['fp32_energy_pj'] / 1e6:,.2f} µJ "
        f"({s['fp32_energy_pj'] / s['energy_pj']:.1f}x)"
        if s["energy_pj"]
        else "",
        f"per epoch ({result['steps_per_epoch']} steps of {result['batch']}): "
        f"{ep['total_cycles']:,} cycles ({ep['seconds_at_clock']:.3f} s at "
        f"{_clock_text(acc['clock'])}), {ep['energy_pj'] / 1e12:,.4f} J "
        f"{result.get('profile', 'niti')}, "
        f"{ep['fp32_energy_pj'] / 1e12:,.4f} J fp32",
        f"off chip per step: {s['dram_bytes'] / 1e6:,.1f} MB priced above "
        f"({TRAFFIC_NAMES[result.get('traffic', 'fixed')]}); "
        f"{s['dram_datapath_bytes'] / 1e6:,.1f} MB with the mappings the Datapath executes, "
        f"{s['dram_searched_bytes'] / 1e6:,.1f} MB with the best searched for the real "
        f"tensors, {s['dram_fixed_bytes'] / 1e6:,.1f} MB with the fixed loop order; "
        f"lower bound {s['dram_bound_bytes'] / 1e6:,.1f} MB (MAPPING_REPORT.csv)",
    ]
    return "\n".join(lines)
