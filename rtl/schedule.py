"""The Datapath's schedule: when each command of a program starts and how many cycles the
program takes (docs/datapath.md derives it).

The Datapath (v2) takes commands into a queue and dispatches them in order, one per cycle,
each to its unit: the loader (``LOAD_A``, ``LOAD_B``, ``LOAD_AB``), the array (``COMPUTE``,
whose ``drain`` bit hands the finished tile to the drainer) and the serial unit (everything
else). Units run side by side; a command waits at the head of the queue until its unit is free
and its hazards have cleared. :func:`program_cycles` is that rule, cycle for cycle, for a
program whose streams never stall (the host always has the next din beat and always takes the
dout beat): the cocotb and Amaranth testbenches measure every program and check it against
this function, and the cycle model (:mod:`nitihw.sim.model.cycle_model`) is built on it.

It needs no HDL library, so training and estimates run without Amaranth.
"""

from __future__ import annotations

from dataclasses import dataclass

from nitihw.rtl.commands import (  # noqa: F401 (the lanes' latencies, re-exported for them)
    COMMANDS,
    DIVIDE_LATENCY,
    RESCALE_LATENCY,
    UPDATE_LATENCY,
)

QUEUE_DEPTH = 4  # commands the Datapath holds before cmd.ready drops
RESULT_BUFFER_WORDS = 65536  # default result buffer: 256 KiB of int32 (rows of `cols` words)


def default_result_rows(cols: int) -> int:
    """Rows (of ``cols`` accumulators) of the default result buffer."""
    return RESULT_BUFFER_WORDS // cols


# the units' commands, from the command table (rtl/commands.py)
LOADS = {c.name: c.writes for c in COMMANDS if c.unit == "loader"}  # -> (writes A, writes B)
LANES = {c.name: c.latency for c in COMMANDS if c.latency is not None}  # din in, dout out
SERIAL = tuple(c.name for c in COMMANDS if c.unit == "serial")
FROM_BUFFER = tuple(c.name for c in COMMANDS if c.from_buffer)  # can read the result buffer
OPS = tuple(c.name for c in COMMANDS)


def chunk_timing(length, kmax: int):
    """A K slice of ``length`` as the array runs it, in chunks as equal as can be (the longer
    ones first, at most ``kmax``): ``(k_0, k_L, inner)``, its first chunk, its last chunk and
    the cycles from the first chunk's start to the last's (chunk ``c + 1`` starts ``k_{c+1} +
    2`` after chunk ``c``). Ints or NumPy arrays; a length of 0 is one empty chunk."""
    nch = -(-length // kmax) + (length == 0)
    last = length // nch
    first = last + (length % nch > 0)
    return first, last, (length - first) + 2 * (nch - 1)


def range_levels(lanes: int) -> int:
    """Levels of the range unit's reduction tree (one register stage each)."""
    return max(lanes - 1, 0).bit_length()


def range_latency(lanes: int) -> int:
    """Cycles from the cycle of a tensor's last observation to the first cycle the range unit
    is idle (and its outputs final): the input register, the per-lane stage, the tree and the
    running registers (whose bit length is combinational)."""
    return range_levels(lanes) + 3


@dataclass(frozen=True)
class Command:
    """One Datapath command: ``op`` (an :class:`~nitihw.rtl.datapath.Op` name), ``count`` (its
    beats, or a COMPUTE's K), the fields the schedule depends on, and ``fields``: the others
    (``shift``, ``mode``, ``limit``...) as ``(name, value)`` pairs for the command word."""

    op: str
    count: int = 0
    bank_a: int = 0
    bank_b: int = 0
    accumulate: int = 0
    drain: int = 0
    drain_rows: int = 0
    keep: int = 0
    from_buffer: int = 0
    row: int = 0  # COMPUTE with keep: the result-buffer row the drain's first row goes to
    add: int = 0  # COMPUTE with drain: add the partial sums the result buffer holds
    quiet: int = 0  # COMPUTE with drain: a partial sum (no dout beats, no range)
    fields: tuple = ()

    def word_fields(self) -> dict:
        return {
            "count": self.count,
            "bank_a": self.bank_a,
            "bank_b": self.bank_b,
            "accumulate": self.accumulate,
            "drain": self.drain,
            "drain_rows": self.drain_rows,
            "keep": self.keep,
            "from_buffer": self.from_buffer,
            "row": self.row,
            "add": self.add,
            "quiet": self.quiet,
            **dict(self.fields),
        }


def program_cycles(commands, rows: int, cols: int, timeline: list | None = None) -> int:
    """Cycles of a program, from the cycle its first command is accepted to the first cycle
    the Datapath is idle again (``busy`` low), with the streams never stalled.

    The rules, as the RTL implements them (cycle ``d`` is a command's dispatch):

    - the queue: command ``i`` is accepted one cycle after command ``i - 1``, and not before
      the cycle after command ``i - QUEUE_DEPTH`` left the queue; it can be dispatched the
      cycle after it was accepted, and after the command before it.
    - a command whose ``count`` is 0 does nothing (it only leaves the queue).
    - ``LOAD_*``: waits for the loader and the serial unit to be idle, and until the array has
      finished reading a bank it writes; takes din beats in cycles ``d+1 .. d+count``.
    - ``COMPUTE``: waits for the array (below), the serial unit, and the loader if it is
      writing a bank this COMPUTE reads. It reads its buffers in ``d+1 .. d+count``; without
      ``drain`` the array takes the next COMPUTE from cycle ``d+count`` (back to back, the sums
      go on); with ``drain`` the last products reach PE (rows-1, cols-1) by ``d+count+rows+
      cols-1`` and the accumulators are captured into the drain shadows in cycle ``c =
      max(d+count+rows+cols, drainer idle)``, when the array takes the next COMPUTE. The drainer
      sends ``drain_rows`` dout beats in ``c+1 .. c+drain_rows``, which the range unit observes;
      a ``quiet`` drain (a partial sum into the result buffer) takes the same cycles, with no
      dout beats and nothing for the range unit.
    - every other command waits until everything is idle: loader, array, drainer, serial unit,
      and the range unit (:func:`range_latency` cycles after its last observation).
      ``RANGE_CLEAR`` acts in its dispatch cycle; ``RANGE_READ`` sends its beat in ``d+1``;
      ``RANGE_FEED`` takes beats in ``d+1 .. d+count``; the lanes take beats in ``d+1 ..
      d+count`` and send results ``latency`` cycles after each; ``RESCALE`` and ``DIVIDE``
      with ``from_buffer`` read rows of the result buffer instead of din beats, one cycle
      later (``d+2 .. d+count+1``: the buffer's read).
    - an unknown or unsupported opcode leaves the queue in one cycle and sets the error flag.

    ``timeline``, if given, receives ``(unit, first cycle, last cycle, op)`` for the work of
    each command (units: ``loader``, ``array``, ``drainer``, ``serial``), for figures.
    """
    note = timeline.append if timeline is not None else (lambda _item: None)
    rp = range_latency(cols)
    accepted: list[int] = []
    dispatched: list[int] = []
    ld_free = 0  # first cycle the loader is idle
    ld_banks = (0, 0, 0, 0)  # (writes A, A bank, writes B, B bank) of the last load
    x_read_end = -1  # last read cycle of the last COMPUTE
    x_banks = (0, 0)
    x_accept = 0  # first cycle the array takes a COMPUTE
    x_idle = 0  # first cycle the array is idle
    dr_free = 0  # first cycle the drainer is idle
    s_free = 0  # first cycle the serial unit is idle
    rng_free = 0  # first cycle the range unit is idle
    for i, cmd in enumerate(commands):
        a = 0 if i == 0 else accepted[-1] + 1
        if i >= QUEUE_DEPTH:
            a = max(a, dispatched[i - QUEUE_DEPTH] + 1)
        t = a + 1 if i == 0 else max(a + 1, dispatched[-1] + 1)
        op, n = cmd.op, cmd.count
        if op in LOADS:
            to_a, to_b = LOADS[op]
            t = max(t, ld_free, s_free)
            if (to_a and x_banks[0] == cmd.bank_a) or (to_b and x_banks[1] == cmd.bank_b):
                t = max(t, x_read_end + 1)
            if n:
                ld_free = t + n + 1
                ld_banks = (to_a, cmd.bank_a, to_b, cmd.bank_b)
                note(("loader", t + 1, t + n, op))
        elif op == "COMPUTE":
            t = max(t, x_accept, s_free)
            wa, ba, wb, bb = ld_banks
            if (wa and ba == cmd.bank_a) or (wb and bb == cmd.bank_b):
                t = max(t, ld_free)
            if n:
                x_read_end = t + n
                x_banks = (cmd.bank_a, cmd.bank_b)
                if cmd.drain:
                    capture = max(t + n + rows + cols, dr_free)
                    x_accept, x_idle = capture, capture + 1
                    note(("array", t + 1, capture, op))
                    if cmd.drain_rows:
                        dr_free = capture + cmd.drain_rows + 1
                        if not cmd.quiet:
                            rng_free = capture + cmd.drain_rows + rp
                        note(("drainer", capture + 1, capture + cmd.drain_rows, "DRAIN"))
                else:
                    x_accept, x_idle = t + n, t + n + 1
                    note(("array", t + 1, t + n, op))
        elif op in SERIAL:
            t = max(t, ld_free, x_idle, dr_free, s_free, rng_free)
            start = t
            if op == "RANGE_READ":
                s_free = t + 2
            elif op == "RANGE_FEED" and n:
                s_free = t + n + 1
                rng_free = t + n + rp
            elif op in LANES and n:
                # from the result buffer: one more cycle, its read
                s_free = t + n + LANES[op] + 1 + (cmd.from_buffer and op in FROM_BUFFER)
            note(("serial", start, max(s_free - 1, start), op))
        # anything else: an unknown opcode, dropped with the error flag
        accepted.append(a)
        dispatched.append(t)
    if not dispatched:
        return 0
    return max(dispatched[-1] + 1, ld_free, x_idle, dr_free, s_free, rng_free)
