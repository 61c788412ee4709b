"""The Datapath's functional coverage points: what a regression must have made the hardware
do, as SystemVerilog ``cover property`` statements on its ports.

Line and toggle coverage say which statements and bits moved; they cannot say whether every
opcode, rounding mode, shift range and error path was taken. Each :class:`CoverPoint` is one
such case, an expression over the Datapath's ports sampled at every clock edge out of reset
(most of them "a command of this kind was accepted": ``cmd.valid & cmd.ready`` and its
fields). :func:`write_cover_module` writes them as one module that a ``bind`` statement puts
inside the Datapath, so the design and its testbenches are unchanged; Verilator counts each
property's hits with ``--coverage-user`` (``nitihw verify --coverage``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nitihw.rtl.datapath import DatapathParams

COVER_MODULE = "nitihw_cover"
COVER_FILE = "nitihw_cover.sv"
#: the groups, in report order
GROUPS = ("opcode", "compute", "rescale", "update", "divide", "error", "flow")


@dataclass(frozen=True)
class CoverPoint:
    """One functional case: ``name`` (an SV identifier), its ``group``, what it means in words
    (``what``) and the SV expression that is true in a cycle that takes it."""

    name: str
    group: str
    what: str
    expr: str


class _Fields:
    """SV expressions for the command word's fields (``cmd__payload``'s bit ranges)."""

    def __init__(self, layout):
        self._at = {name: (f.offset, f.width) for name, f in layout}

    def __call__(self, name: str) -> str:
        lo, width = self._at[name]
        return f"cmd__payload[{lo + width - 1}:{lo}]" if width > 1 else f"cmd__payload[{lo}]"


#: the right shifts of RESCALE, by range: none, within an int8's magnitude, the rest of a
#: 16-bit value, and longer (every bit of a 32-bit accumulator's magnitude)
RIGHT_SHIFTS = (("0", 0, 0), ("1_7", 1, 7), ("8_15", 8, 15), ("16_up", 16, None))
#: the left shifts: none, within the int8 range, and 7 or more (every nonzero value saturates)
LEFT_SHIFTS = (("0", 0, 0), ("1_6", 1, 6), ("7_up", 7, None))


def _range_text(lo: int, hi: int | None) -> str:
    """``0``, ``1..7``, ``16+``."""
    return f"{lo}+" if hi is None else str(lo) if lo == hi else f"{lo}..{hi}"


def _in_range(field: str, lo: int, hi: int | None) -> str:
    if hi is None:
        return f"({field} >= {lo})"
    return f"({field} == {lo})" if lo == hi else f"({field} >= {lo} && {field} <= {hi})"


def cover_points(params: DatapathParams) -> list[CoverPoint]:
    """The functional points of a build: a point the build cannot take (the divide lanes'
    commands without them, ``from_buffer`` without a result buffer) is replaced by the error
    path that refuses it."""
    from nitihw.rtl.datapath import Op, command_layout
    from nitihw.rtl.rescale import RoundingMode

    f = _Fields(command_layout(params.accumulator_bits))
    acc = "(cmd__valid && cmd__ready)"
    op = f("op")

    def is_op(o: Op) -> str:
        return f"{acc} && {op} == {o.value}"

    pts: list[CoverPoint] = []

    def add(name, group, what, expr):
        pts.append(CoverPoint(name, group, what, expr))

    built = set(Op) - ({Op.DIVIDE, Op.UPDATE_DIV} if not params.divide else set())
    for o in Op:
        if o in built:
            add(f"op_{o.name.lower()}", "opcode", f"a {o.name} command", is_op(o))
    # COMPUTE's flags, and the result buffer's edges
    compute = is_op(Op.COMPUTE)
    for flag, what in (
        ("accumulate", "adds to the previous sums (K longer than a bank)"),
        ("drain", "drains its tile"),
        ("keep", "keeps the drained rows in the result buffer"),
        ("add", "adds the result buffer's partial sums"),
        ("quiet", "drains a partial sum quietly (not to dout or the range unit)"),
    ):
        add(f"compute_{flag}", "compute", f"a COMPUTE that {what}", f"{compute} && {f(flag)}")
    add(
        "compute_no_drain",
        "compute",
        "a COMPUTE that does not drain",
        f"{compute} && !{f('drain')}",
    )
    add(
        "compute_bank1",
        "compute",
        "a COMPUTE from the second A and B banks",
        f"{compute} && {f('bank_a')} && {f('bank_b')}",
    )
    add(
        "compute_count0",
        "compute",
        "a COMPUTE of K = 0 (does nothing)",
        f"{compute} && {f('count')} == 0",
    )
    rows = params.result_rows
    if rows:
        past = f"({f('row')} + {f('drain_rows')} > {rows})"
        add(
            "keep_past_buffer",
            "compute",
            f"a kept drain whose rows run past the result buffer's {rows} (the spill: those "
            "rows are not kept)",
            f"{compute} && {f('drain')} && {f('keep')} && {past}",
        )
        add(
            "add_past_buffer",
            "compute",
            "an add whose rows run past the result buffer (they add 0)",
            f"{compute} && {f('drain')} && {f('add')} && {past}",
        )
    # RESCALE: each rounding mode at each range of right shifts, the left shifts, the buffer
    rescale = is_op(Op.RESCALE)
    for mode in RoundingMode:
        for tag, lo, hi in RIGHT_SHIFTS:
            add(
                f"rescale_{mode.name.lower()}_shift_{tag}",
                "rescale",
                f"RESCALE {mode.name.lower()}, right shift {_range_text(lo, hi)}",
                f"{rescale} && !{f('left')} && {f('mode')} == {mode.value} && "
                + _in_range(f("shift"), lo, hi),
            )
    for tag, lo, hi in LEFT_SHIFTS:
        add(
            f"rescale_left_{tag}",
            "rescale",
            f"RESCALE left shift {_range_text(lo, hi)}",
            f"{rescale} && {f('left')} && " + _in_range(f("shift"), lo, hi),
        )
    if rows:
        add(
            "rescale_from_buffer",
            "rescale",
            "RESCALE of the result buffer's rows",
            f"{rescale} && {f('from_buffer')}",
        )
    # UPDATE
    update = is_op(Op.UPDATE)
    add("update_int8", "update", "UPDATE of int8 weights", f"{update} && !{f('master')}")
    add("update_master", "update", "UPDATE of 16-bit master weights", f"{update} && {f('master')}")
    add(
        "update_limit_below_127",
        "update",
        "UPDATE of int8 weights with a clamp below 127 (WAGE's 64)",
        f"{update} && !{f('master')} && {f('limit')} < 127",
    )
    if params.divide:
        divide, update_div = is_op(Op.DIVIDE), is_op(Op.UPDATE_DIV)
        if rows:
            add(
                "divide_from_buffer",
                "divide",
                "DIVIDE of the result buffer's rows",
                f"{divide} && {f('from_buffer')}",
            )
        add("divide_from_din", "divide", "DIVIDE of din's rows", f"{divide} && !{f('from_buffer')}")
        add(
            "update_div_decay",
            "divide",
            "UPDATE_DIV with weight decay",
            f"{update_div} && {f('decay')}",
        )
        add(
            "update_div_no_decay",
            "divide",
            "UPDATE_DIV without weight decay",
            f"{update_div} && !{f('decay')}",
        )
    # the error paths (each command is dropped and sets error)
    add("error_bad_opcode", "error", "an unknown opcode (11..15)", f"{acc} && {op} >= 11")
    if not params.divide:
        add(
            "error_divide_not_built",
            "error",
            "DIVIDE or UPDATE_DIV in a build without divide lanes",
            f"{acc} && ({op} == {Op.DIVIDE.value} || {op} == {Op.UPDATE_DIV.value})",
        )
    if not rows:
        add(
            "error_rescale_from_buffer",
            "error",
            "RESCALE from_buffer in a build without a result buffer",
            f"{rescale} && {f('from_buffer')}",
        )
        if params.divide:
            add(
                "error_divide_from_buffer",
                "error",
                "DIVIDE from_buffer in a build without a result buffer",
                f"{is_op(Op.DIVIDE)} && {f('from_buffer')}",
            )
    loads = " || ".join(f"{op} == {o.value}" for o in (Op.LOAD_A, Op.LOAD_B, Op.LOAD_AB))
    add(
        "error_load_too_long",
        "error",
        f"a load longer than a bank (count > kmax = {params.kmax})",
        f"{acc} && ({loads}) && {f('count')} > {params.kmax}",
    )
    add(
        "error_compute_too_long",
        "error",
        f"a COMPUTE longer than a bank (K > kmax = {params.kmax})",
        f"{compute} && {f('count')} > {params.kmax}",
    )
    add("error_raised", "error", "the error output high", "error")
    # the streams' flow control
    add("cmd_queue_full", "flow", "a command waiting on a full queue", "cmd__valid && !cmd__ready")
    add(
        "din_stalled",
        "flow",
        "a din beat the Datapath is not ready for",
        "din__valid && !din__ready",
    )
    add(
        "dout_back_pressure",
        "flow",
        "a dout beat the consumer is not ready for",
        "dout__valid && !dout__ready",
    )
    add("idle_after_busy", "flow", "the Datapath idle (busy low)", "!busy")
    return pts


def cover_module(params: DatapathParams) -> str:
    """The SystemVerilog module of :func:`cover_points`, and the ``bind`` that puts it in the
    Datapath (its own ports' toggles are left out of the report)."""
    from nitihw.rtl.datapath import command_layout

    width = command_layout(params.accumulator_bits).size
    lines = [
        "// nitihw's functional coverage of the Datapath (nitihw.sim.simulate.coverage.points);",
        "// written by nitihw verify --coverage, bound into the design, never synthesised",
        f"module {COVER_MODULE}(",
        "  input clk, input rst, input busy, input error,",
        f"  input cmd__valid, input cmd__ready, input [{width - 1}:0] cmd__payload,",
        "  input din__valid, input din__ready, input dout__valid, input dout__ready",
        ");",
    ]
    for p in cover_points(params):
        lines.append(f"  // {p.group}: {p.what}")
        lines.append(f"  {p.name}: cover property (@(posedge clk) !rst && {p.expr});")
    lines += [
        "endmodule",
        "",
        f"bind datapath {COVER_MODULE} {COVER_MODULE}_i(",
        "  .clk(clk), .rst(rst), .busy(busy), .error(error),",
        "  .cmd__valid(cmd__valid), .cmd__ready(cmd__ready), .cmd__payload(cmd__payload),",
        "  .din__valid(din__valid), .din__ready(din__ready),",
        "  .dout__valid(dout__valid), .dout__ready(dout__ready)",
        ");",
        "",
    ]
    return "\n".join(lines)


def write_cover_module(folder: Path, params: DatapathParams) -> Path:
    """Write :func:`cover_module` into ``folder`` (unchanged text is not rewritten, so an
    incremental build stays incremental); returns its path."""
    path = Path(folder) / COVER_FILE
    text = cover_module(params)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path
