"""The Datapath's schedule: how many cycles each command takes (docs/datapath.md derives it).

Cycles run from the cycle a command is accepted to the cycle the datapath accepts the next
one, with the data streams never stalled. The cocotb testbenches measure every command and
check it against these formulas; the cycle model (:mod:`nitihw.sim`) is built on them.
"""

from __future__ import annotations

# Pipeline depths of the lane blocks: cycles from an input beat to its result when not stalled.
# The blocks (rescale.py, update.py, divide.py) are built to these and their tests measure
# them; they live here so that the cycle model needs no HDL library.
RESCALE_LATENCY = 3
UPDATE_LATENCY = 2
DIVIDE_LATENCY = 3


def command_cycles(op: str, count: int, rows: int, cols: int) -> int:
    """Cycles of one Datapath command (``op`` is an :class:`~nitihw.rtl.datapath.Op` name).

    - ``LOAD_A``/``LOAD_B``: 1 (accept) + ``count`` beats.
    - ``COMPUTE``: 1 (accept) + ``count`` buffer reads + ``rows + cols - 1`` cycles for the
      last operands to cross the skew and reach PE (rows-1, cols-1) (one cycle of buffer read
      latency included).
    - ``DRAIN``: 1 (accept, capture) + ``count`` beats.
    - ``RANGE_CLEAR``: 1. ``RANGE_READ``: 1 + 1 beat.
    - ``RESCALE``: 1 + ``count`` beats + the lanes' latency (3).
    - ``UPDATE``: 1 + ``count`` beats + the lanes' latency (2).
    - ``RANGE_FEED``: 1 (accept) + ``count`` beats (the range unit registers each beat as it
      arrives; a ``RANGE_READ`` right after sees them all).
    - ``DIVIDE`` / ``UPDATE_DIV``: 1 + ``count`` beats + the divide lanes' latency (3).
    """
    if op in ("LOAD_A", "LOAD_B"):
        return 1 + count
    if op == "COMPUTE":
        return count + rows + cols
    if op == "DRAIN":
        return 1 + count
    if op == "RANGE_CLEAR":
        return 1
    if op == "RANGE_READ":
        return 2
    if op == "RESCALE":
        return 1 + count + RESCALE_LATENCY
    if op == "UPDATE":
        return 1 + count + UPDATE_LATENCY
    if op == "RANGE_FEED":
        return 1 + count
    if op in ("DIVIDE", "UPDATE_DIV"):
        return 1 + count + DIVIDE_LATENCY
    raise ValueError(f"unknown datapath command {op!r}")
