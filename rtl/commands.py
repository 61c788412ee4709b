"""The Datapath's commands, in one table: the single source of the command vocabulary.

Each command has its opcode (the ``op`` field of the command word), the unit that runs it
(the ``loader``, the ``array``, or the ``serial`` unit: the range unit and the lanes), its
lanes' pipeline latency, what it takes on ``din`` and gives on ``dout``, whether it can read
the result buffer, whether it needs the divide lanes, and the golden model's operation it
carries out (:data:`nitihw.golden.backend.DATAPATH_OPERATIONS`).

What derives from it: the schedule's unit sets and latencies (:mod:`nitihw.rtl.schedule`);
the tests hold the rest to it: the ``Op`` enum of :mod:`nitihw.rtl.datapath` (names and
opcodes), the golden operations (each one some command's), the cycle model's and the
estimate's operations. ``docs/datapath.md`` ("Adding a command") lists every file a new
command touches, in order, and the test that fails until each is done.

No HDL library is needed here: training and the estimates read this table without Amaranth.
"""

from __future__ import annotations

from dataclasses import dataclass

# Pipeline depths of the lane blocks: cycles from an input beat to its result when not stalled.
# The blocks (rescale.py, update.py, divide.py) are built to these and their tests measure
# them; they live here so that the cycle model needs no HDL library.
RESCALE_LATENCY = 3
UPDATE_LATENCY = 2
DIVIDE_LATENCY = 3


@dataclass(frozen=True)
class CommandSpec:
    name: str
    opcode: int
    unit: str  # "loader", "array" or "serial"
    din: str  # the member of a din beat it reads ("" for none; docs/datapath.md's table)
    dout: str  # the member of a dout beat it writes ("" for none)
    golden: str  # the golden model's operation it is part of
    latency: int | None = None  # lanes: input beat to result, cycles
    writes: tuple[int, int] = (0, 0)  # loader: (writes an A bank, writes a B bank)
    from_buffer: bool = False  # can read its input rows from the result buffer
    divide: bool = False  # needs the divide lanes (a build with divide=True)


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("LOAD_A", 0, "loader", "ab", "", "gemm", writes=(1, 0)),
    CommandSpec("LOAD_B", 1, "loader", "ab", "", "gemm", writes=(0, 1)),
    CommandSpec("COMPUTE", 2, "array", "", "drain", "gemm"),
    CommandSpec("LOAD_AB", 3, "loader", "ab", "", "gemm", writes=(1, 1)),
    CommandSpec("RANGE_CLEAR", 4, "serial", "", "", "range"),
    CommandSpec("RANGE_READ", 5, "serial", "", "range", "range"),
    CommandSpec(
        "RESCALE", 6, "serial", "rescale", "q", "rescale", RESCALE_LATENCY, from_buffer=True
    ),
    CommandSpec("UPDATE", 7, "serial", "update", "update", "update", UPDATE_LATENCY),
    CommandSpec("RANGE_FEED", 8, "serial", "rescale", "", "range"),
    CommandSpec(
        "DIVIDE",
        9,
        "serial",
        "rescale",
        "q",
        "divide",
        DIVIDE_LATENCY,
        from_buffer=True,
        divide=True,
    ),
    CommandSpec(
        "UPDATE_DIV", 10, "serial", "update32", "w32", "update", DIVIDE_LATENCY, divide=True
    ),
)
BY_NAME = {c.name: c for c in COMMANDS}
#: the golden model's traced operations that run on the Datapath (the rest are the host's)
DATAPATH_TRACE_OPS = frozenset(c.golden for c in COMMANDS)
