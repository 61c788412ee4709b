"""The host side of the Datapath: command encoding, tiling, and a cycle-counting driver.

:class:`DatapathDriver` runs GEMMs, ranges, rescales, updates and (on ``divide`` builds)
NITRO-D's divisions on a simulated :class:`nitihw.rtl.datapath.Datapath` through its three
streams, the way a controller core would. It talks to the simulator through a port
(:mod:`nitihw.sim.simulate.ports`: a cycle at a time, or a program at a time), so the same
driver runs on every simulator. Each operation is one program
(commands, din beats, dout beats) streamed as fast as the Datapath takes it; its cycles are
recorded in ``driver.log`` (:class:`ProgramRecord`), for checks against
:func:`nitihw.rtl.schedule.program_cycles`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data

from nitihw.golden.errors import InternalError
from nitihw.rtl.commands import COMMANDS
from nitihw.rtl.datapath import DatapathParams, Op, command_layout, din_layout, dout_layout
from nitihw.rtl.divide import DIV_BITS, divider_constants
from nitihw.rtl.rescale import MODE_BY_NAME
from nitihw.rtl.schedule import Command
from nitihw.sim.model.cycle_model import (
    drained_rows,
    gemm_program,
    gemm_tile_arrays,
    gemm_tiles,
    gemm_walk,
    result_layout,
)
from nitihw.sim.simulate.ports import Port, ProgramPort

# ---- bit packing of the stream payloads ---------------------------------------------------


def _width(shape) -> int:
    if isinstance(shape, data.Layout):
        return shape.size
    return Shape.cast(shape).width


@dataclass(frozen=True)
class ArrayField:
    """An array member of a payload: ``length`` elements of ``width`` bits at ``offset``."""

    offset: int
    length: int
    width: int
    signed: bool

    def pack(self, values) -> int:
        v = np.asarray(values, dtype=np.int64).reshape(-1)
        if len(v) != self.length:
            raise ValueError(f"expected {self.length} elements, got {len(v)}")
        if self.width in (8, 16, 32):
            raw = v.astype(f"<i{self.width // 8}").tobytes()
            return int.from_bytes(raw, "little") << self.offset
        if self.width % 8 == 0 and self.width < 64:  # e.g. 40-bit fields: the low bytes of int64
            nb = self.width // 8
            raw = v.astype("<i8").view(np.uint8).reshape(-1, 8)[:, :nb].tobytes()
            return int.from_bytes(raw, "little") << self.offset
        mask = (1 << self.width) - 1
        out = 0
        for k, x in enumerate(v.tolist()):
            out |= (x & mask) << (k * self.width)
        return out << self.offset

    @property
    def dtype(self):
        """The NumPy integer type of exactly this field's width (``int64`` when none)."""
        if self.width in (8, 16, 32, 64):
            return np.dtype(f"<{'i' if self.signed else 'u'}{self.width // 8}")
        return np.dtype(np.int64)

    def unpack(self, word: int) -> np.ndarray:
        bits = (word >> self.offset) & ((1 << (self.length * self.width)) - 1)
        if self.width in (8, 16, 32):
            dt = f"<{'i' if self.signed else 'u'}{self.width // 8}"
            return np.frombuffer(bits.to_bytes(self.length * self.width // 8, "little"), dt).astype(
                np.int64
            )
        mask = (1 << self.width) - 1
        out = np.empty(self.length, np.int64)
        for k in range(self.length):
            x = (bits >> (k * self.width)) & mask
            if self.signed and x >> (self.width - 1):
                x -= 1 << self.width
            out[k] = x
        return out

    def put(self, buf: np.ndarray, values) -> None:
        """Write ``values`` (``(n, length)``, or ``(n, < length)``: zero-padded) into the
        payload rows of ``buf`` (``uint8 (n, bytes)``, little-endian), many beats at once."""
        v = np.asarray(values)
        if v.dtype.kind not in "iu":
            v = v.astype(np.int64)
        n = buf.shape[0]
        if n == 0:
            return
        v = v.reshape(n, -1)
        if v.shape[1] < self.length:
            v = np.pad(v, ((0, 0), (0, self.length - v.shape[1])))
        elif v.shape[1] != self.length:
            raise ValueError(f"expected {self.length} elements a beat, got {v.shape[1]}")
        if self.width % 8 == 0 and self.offset % 8 == 0 and self.width <= 64:
            nb, at = self.width // 8, self.offset // 8
            if v.dtype.kind in "iu" and v.dtype.itemsize == nb:  # already the field's width
                raw = np.ascontiguousarray(v).view(np.uint8)
                buf[:, at : at + self.length * nb] = raw.reshape(n, -1)
                return
            raw = np.ascontiguousarray(v.astype("<i8")).view(np.uint8).reshape(n, self.length, 8)
            buf[:, at : at + self.length * nb] = raw[:, :, :nb].reshape(n, -1)
            return
        bits = (v.astype(np.uint64)[:, :, None] >> np.arange(self.width, dtype=np.uint64)) & 1
        allbits = np.unpackbits(buf, axis=1, bitorder="little")
        allbits[:, self.offset : self.offset + self.length * self.width] = bits.reshape(n, -1)
        buf[:] = np.packbits(allbits, axis=1, bitorder="little")

    def take(self, buf: np.ndarray) -> np.ndarray:
        """The field of every payload row of ``buf`` (``uint8 (n, bytes)``): ``int64 (n,
        length)``, sign-extended when signed."""
        n = buf.shape[0]
        if self.width % 8 == 0 and self.offset % 8 == 0 and self.width <= 64:
            nb, at = self.width // 8, self.offset // 8
            raw = np.zeros((n, self.length, 8), np.uint8)
            raw[:, :, :nb] = buf[:, at : at + self.length * nb].reshape(n, self.length, nb)
            out = raw.view("<i8").reshape(n, self.length)
        else:
            bits = np.unpackbits(buf, axis=1, bitorder="little")
            bits = bits[:, self.offset : self.offset + self.length * self.width]
            weights = np.left_shift(1, np.arange(self.width, dtype=np.int64))
            out = bits.reshape(n, self.length, self.width).astype(np.int64) @ weights
        if self.signed and self.width < 64:
            shift = 64 - self.width
            out = (out << shift) >> shift
        return out.astype(np.int64)


def _array_field(layout: data.ArrayLayout, offset: int) -> ArrayField:
    elem = layout.elem_shape
    shape = Shape.cast(elem)
    return ArrayField(offset, layout.length, shape.width, shape.signed)


class Payloads:
    """Offsets of every payload member for one Datapath configuration."""

    def __init__(self, rows, cols, operand_bits, accumulator_bits, b_bits=None, divide=False):
        cmd = command_layout(accumulator_bits)
        self.cmd = {name: (f.offset, _width(f.shape)) for name, f in cmd}
        din = din_layout(rows, cols, operand_bits, accumulator_bits, b_bits, divide)
        ab = din["ab"].shape
        self.din_a = _array_field(ab["a"].shape, ab["a"].offset)
        self.din_b = _array_field(ab["b"].shape, ab["b"].offset)
        resc = din["rescale"].shape
        self.din_acc = _array_field(resc["acc"].shape, resc["acc"].offset)
        self.din_rand = _array_field(resc["rand"].shape, resc["rand"].offset)
        upd = din["update"].shape
        self.din_w = _array_field(upd["w"].shape, upd["w"].offset)
        self.din_g = _array_field(upd["g"].shape, upd["g"].offset)
        dout = dout_layout(cols, accumulator_bits, divide)
        if divide:
            upd = din["update32"].shape
            self.din_w32 = _array_field(upd["w"].shape, upd["w"].offset)
            self.din_g32 = _array_field(upd["g"].shape, upd["g"].offset)
            self.out_w32 = _array_field(dout["w32"].shape, 0)
        drain = dout["drain"].shape
        self.out_acc = _array_field(drain["acc"].shape, drain["acc"].offset)
        self.out_ovf = _array_field(drain["overflow"].shape, drain["overflow"].offset)
        self.out_q = _array_field(dout["q"].shape, 0)
        upd = dout["update"].shape
        self.out_w = _array_field(upd["w"].shape, upd["w"].offset)
        self.out_w8 = _array_field(upd["w8"].shape, upd["w8"].offset)
        rng = dout["range"].shape
        self.out_range = {name: (f.offset, _width(f.shape)) for name, f in rng}
        # bytes a beat in the byte matrices the driver builds: whole 32-bit words, as the
        # native harness and Verilator hold wide ports
        self.cmd_bytes = -(-cmd.size // 32) * 4
        self.din_bytes = -(-din.size // 32) * 4
        self.dout_bytes = -(-dout.size // 32) * 4
        self._encoded: dict = {}

    def command_matrix(self, commands) -> np.ndarray:
        """The command words of ``commands`` as ``uint8 (n, cmd_bytes)`` (each distinct
        command is encoded once)."""
        rows = []
        for c in commands:
            raw = self._encoded.get(c)
            if raw is None:
                raw = self.command(c).to_bytes(self.cmd_bytes, "little")
                if len(self._encoded) < 1 << 16:
                    self._encoded[c] = raw
            rows.append(raw)
        return np.frombuffer(b"".join(rows), np.uint8).reshape(len(rows), self.cmd_bytes)

    def command(self, cmd: Command) -> int:
        """The command word of ``cmd`` (fields it does not name are 0; ``limit`` 127)."""
        op = cmd.op if isinstance(cmd.op, int) else Op[cmd.op].value  # an int: raw opcode
        fields = {"limit": 127, **cmd.word_fields(), "op": op}
        word = 0
        for name, value in fields.items():
            if name not in self.cmd:
                raise ValueError(f"unknown command field {name!r}")
            offset, width = self.cmd[name]
            if not 0 <= value < 1 << width:
                raise ValueError(f"command field {name}={value} does not fit {width} bits")
            word |= value << offset
        return word

    def range_fields(self, word) -> dict:
        """The range unit's fields of a ``RANGE_READ`` beat (an int, or a byte row)."""
        if isinstance(word, np.ndarray):
            word = int.from_bytes(word.tobytes(), "little")
        return {name: (word >> off) & ((1 << w) - 1) for name, (off, w) in self.out_range.items()}


# ---- the driver ---------------------------------------------------------------------------


class DatapathError(InternalError):
    """The Datapath flagged a command it could not run (its ``error`` output)."""


@dataclass
class ProgramRecord:
    """One program the driver ran: its name, its commands and the cycles the RTL took (from
    the cycle its first command was accepted to the first cycle the Datapath was idle)."""

    name: str
    commands: list
    cycles: int
    start: int = 0  # the simulator cycle its first command was accepted


class _GemmPlan(NamedTuple):
    """The shape-only part of a GEMM's program (:meth:`DatapathDriver._gemm_plan`)."""

    cmds: list  # the commands
    words: np.ndarray  # their words, uint8 (n, cmd_bytes)
    bk: np.ndarray  # each din beat's K index
    a_tile: np.ndarray  # each beat's row tile of A
    with_b: np.ndarray  # which beats carry B (LOAD_AB)
    b_tile: np.ndarray  # those beats' column tile of B
    rows_out: tuple  # (rows, j0s): where each drained row goes
    tiling: object  # the Tiling it follows (None: one buffer tile)


@dataclass
class DatapathDriver:
    """Drives one Datapath. ``params`` is its :class:`~nitihw.rtl.datapath.DatapathParams`;
    ``port`` a :class:`~nitihw.sim.simulate.ports.CyclePort` or
    :class:`~nitihw.sim.simulate.ports.ProgramPort`.

    Every operation is one *program*: its commands, its din beats and the number of dout beats
    it returns, streamed together (the Datapath queues commands and runs its units side by
    side), then the driver waits until the Datapath is idle. ``log`` records each program.
    """

    port: Port
    params: DatapathParams
    log: list = field(default_factory=list)
    #: for tests of back-pressure: called every cycle, returns ``(hold_din, hold_dout)``: keep
    #: din.valid low / dout.ready low this cycle (the cycles are then no longer the schedule's)
    stall: object = None
    #: the GEMMs' tilings: ``tiling(m, k, n)`` gives the
    #: :class:`~nitihw.sim.model.cycle_model.Tiling` a GEMM's program follows (a mapping of
    #: :mod:`nitihw.sim.model.mapping`), or None for one buffer tile; None: every GEMM one
    #: buffer tile
    tiling: object = None

    def __post_init__(self):
        p = self.params
        self.rows, self.cols, self.kmax = p.rows, p.cols, p.kmax
        self.b_bits, self.has_divide, self.result_rows = p.b_bits, p.divide, p.result_rows
        #: ``(M, N, (rows, j0s))`` of the GEMM result the result buffer holds, in its row order
        self.kept = None
        self.pay = Payloads(p.rows, p.cols, p.operand_bits, p.accumulator_bits, p.b_bits, p.divide)
        self._plans: dict = {}  # (M, K, N, keep, tiling) -> _GemmPlan

    async def reset_streams(self) -> None:
        if isinstance(self.port, ProgramPort):
            return  # a program port drives its own idle inputs
        for name in ("cmd__valid", "din__valid"):
            self.port.set(name, 0)
        self.port.set("dout__ready", 1)

    @property
    def cycle(self) -> int:
        return self.port.cycle

    def _din_matrix(self, beats) -> np.ndarray:
        """din beats as ``uint8 (n, bytes)``: a byte matrix as the operations build them
        (``bytes`` at most ``din_bytes``, whole words: the payload's low bytes, the rest 0), or
        a sequence of payload ints."""
        if isinstance(beats, np.ndarray):
            return beats  # possibly only the low words of each payload (the rest is 0)
        nb = self.pay.din_bytes
        raw = b"".join(int(b).to_bytes(nb, "little") for b in beats)
        return np.frombuffer(raw, np.uint8).reshape(-1, nb)

    # Every cycle follows one protocol, which every simulator accepts: drive the inputs right
    # after a clock edge, let the logic settle, sample the outputs, then wait for the next edge.
    # Commands and din beats are presented as soon as the previous ones have moved, and dout
    # is always ready, so the streams never stall the Datapath: the cycles are the schedule's.
    # A port with ``run_program`` (the native harness, :mod:`nitihw.sim.simulate.native`) runs this
    # same loop in compiled code over a whole program.

    async def execute(
        self, name: str, commands, beats=(), n_out: int = 0, words: np.ndarray | None = None
    ) -> np.ndarray:
        """Run one program: ``commands`` (:class:`Command`), ``beats`` (din payloads: a byte
        matrix ``uint8 (n, din_bytes)`` or ints) in order, ``n_out`` dout payloads back, once
        the Datapath is idle again, as ``uint8 (n_out, dout_bytes)``. ``words``: the
        commands' words (:meth:`Payloads.command_matrix`), when the caller has them."""
        commands = list(commands)
        cmds = self.pay.command_matrix(commands) if words is None else words
        din = self._din_matrix(beats)
        if isinstance(self.port, ProgramPort):
            out, start, end, failed, op = self.port.run_program(cmds, din, n_out)
        else:
            out, start, end, failed, op = await self._cycle_loop(cmds, din, n_out)
        if failed:
            spec = next((c for c in COMMANDS if c.opcode == op), None)
            if spec is None:
                why = "unknown opcode"
            elif spec.unit in ("loader", "array"):
                why = f"count larger than the operand banks (kmax {self.kmax})"
            elif spec.divide and not self.has_divide:
                why = "this build has no divide lanes (build it with divide=True)"
            elif spec.from_buffer:
                why = "from_buffer, but this build has no result buffer (result_rows=0)"
            else:
                why = "unknown cause"
            name = spec.name if spec else op
            raise DatapathError(f"the Datapath dropped command {name!r} (opcode {op}): {why}")
        self.log.append(ProgramRecord(name, commands, end - start, start))
        return out

    async def _cycle_loop(self, cmds: np.ndarray, din: np.ndarray, n_out: int):
        """The protocol, one cycle at a time through ``port.set``/``get``; returns ``(dout
        matrix, first accepted cycle, first idle cycle, error, error_op)``."""
        port = self.port
        words = [int.from_bytes(row.tobytes(), "little") for row in cmds]
        beats = [int.from_bytes(row.tobytes(), "little") for row in din]
        n_cmd, n_in = len(words), len(beats)
        out: list[int] = []
        i = j = 0
        start = None
        while i < n_cmd or j < n_in or len(out) < n_out:
            hold_in, hold_out = self.stall() if self.stall else (False, False)
            port.set("cmd__valid", int(i < n_cmd))
            if i < n_cmd:
                port.set("cmd__payload", words[i])
            port.set("din__valid", int(j < n_in and not hold_in))
            if j < n_in:
                port.set("din__payload", beats[j])
            if self.stall:
                port.set("dout__ready", int(not hold_out))
            await port.settle()
            while True:
                took_cmd = i < n_cmd and port.get("cmd__ready")
                took_din = j < n_in and not hold_in and port.get("din__ready")
                got = len(out) < n_out and not hold_out and port.get("dout__valid")
                if took_cmd or took_din or got or self.stall:
                    break
                waiting = [
                    sig
                    for sig, more in (
                        ("cmd__ready", i < n_cmd),
                        ("din__ready", j < n_in),
                        ("dout__valid", len(out) < n_out),
                    )
                    if more
                ]
                await port.wait_any(waiting)
            if got:
                out.append(port.get("dout__payload"))
            if took_cmd and start is None:
                start = port.cycle
            await port.tick()
            i += bool(took_cmd)
            j += bool(took_din)
        if self.stall:
            port.set("dout__ready", 1)
        port.set("cmd__valid", 0)
        port.set("din__valid", 0)
        await port.wait_low("busy")
        end = port.cycle
        failed = port.get("error")
        op = port.get("error_op") if failed else 0
        await port.tick()
        nb = self.pay.dout_bytes
        raw = b"".join(w.to_bytes(nb, "little") for w in out)
        matrix = np.frombuffer(raw, np.uint8).reshape(len(out), nb)
        return matrix, end if start is None else start, end, failed, op

    async def sync(self) -> int:
        """Wait until the datapath is idle; returns the cycle."""
        await self.port.wait_low("busy")
        now = self.cycle
        await self.port.tick()
        return now

    # ---- operations of a training step ----------------------------------------------------
    def _gemm_operands(self, a, b):
        a = np.asarray(a)
        b = np.asarray(b)
        _check_fits("gemm: A", a, self.params.operand_bits)
        _check_fits("gemm: B", b, self.b_bits)
        (m, k), n = a.shape, b.shape[1]
        R, C = self.rows, self.cols
        # zero-padded to whole tiles (zeros add nothing to sums, ranges or overflow counts),
        # in the operand fields' own widths, A transposed: a beat is a column of A
        ap = np.zeros((k, -(-m // R) * R), self.pay.din_a.dtype)
        ap[:, :m] = a.T
        bp = np.zeros((k, -(-n // C) * C), self.pay.din_b.dtype)
        bp[:, :n] = b
        return ap, bp, m, k, n

    def tiling_of(self, m: int, k: int, n: int):
        """The tiling a GEMM of this shape follows (:attr:`tiling`; None: one buffer tile)."""
        return self.tiling(m, k, n) if (self.tiling is not None and m and n) else None

    def _gemm_plan(self, m: int, k: int, n: int, keep: bool | None) -> _GemmPlan:
        """What a GEMM's program needs that depends only on its shape, computed once per
        shape (a training run repeats a few shapes every step): the commands and their words
        (``keep`` None: the tiles alone, :meth:`gemm`; else :func:`gemm_program`), where each
        din beat's operands come from, and where each drained row goes."""
        tiling = self.tiling_of(m, k, n)
        key = (m, k, n, keep, tiling)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        R, C, kmax = self.rows, self.cols, self.kmax
        if tiling is not None:
            need = gemm_walk(m, k, n, R, C, tiling, bool(keep)).rows_needed
            if need > self.result_rows:
                raise ValueError(
                    f"gemm ({m}, {k}, {n}): tiling {tuple(tiling)} keeps partial sums in "
                    f"{need} result-buffer rows, but this build has {self.result_rows}"
                )
        if keep is None:
            cmds = [c for c, _ in gemm_tiles(m, k, n, R, C, kmax, tiling=tiling)]
        else:
            cmds = gemm_program(m, k, n, R, C, kmax, keep, tiling)
        if m and n:
            ld, dr = gemm_tile_arrays(m, k, n, R, C, kmax, tiling)
            dr = dr[dr[:, 3] == 0]  # the drains that send dout beats (not partial sums)
        else:  # an empty GEMM: no loads, no drains
            ld, dr = np.zeros((0, 5), np.int64), np.zeros((0, 4), np.int64)
        counts = ld[:, 3]
        first = np.repeat(np.cumsum(counts) - counts, counts)
        bk = np.repeat(ld[:, 2], counts) + np.arange(int(counts.sum())) - first
        with_b = np.repeat(ld[:, 4].astype(bool), counts)
        rows = np.repeat(dr[:, 0], dr[:, 2])
        rows += np.arange(len(rows)) - np.repeat(np.cumsum(dr[:, 2]) - dr[:, 2], dr[:, 2])
        plan = _GemmPlan(
            cmds,
            self.pay.command_matrix(cmds),
            bk,
            np.repeat(ld[:, 0] // R, counts),
            with_b,
            np.repeat(ld[:, 1] // C, counts)[with_b],
            (rows, np.repeat(dr[:, 1], dr[:, 2])),
            tiling,
        )
        if len(self._plans) >= 64:  # a bounded memory: the oldest shape goes
            del self._plans[next(iter(self._plans))]
        self._plans[key] = plan
        return plan

    def _gemm_beats(self, ap, bp, k: int, plan: _GemmPlan) -> np.ndarray:
        """din beats of the tiles of :func:`gemm_tiles`, in order (a byte matrix). ``ap`` is
        A transposed and padded, ``bp`` B padded (:meth:`_gemm_operands`)."""
        R, C = self.rows, self.cols
        # only the low words of the payload that hold A and B (the harness zero-fills)
        end = max(f.offset + f.length * f.width for f in (self.pay.din_a, self.pay.din_b))
        beats = np.zeros((len(plan.bk), -(-end // 32) * 4), np.uint8)
        # a beat: A[i0:i0+R, kk] (a row of the (K, M/R, R) view of A transposed), and for
        # LOAD_AB B[kk, j0:j0+C] (a row of the (K, N/C, C) view of B)
        self.pay.din_a.put(beats, ap.reshape(k, -1, R)[plan.bk, plan.a_tile])
        part = np.zeros((len(plan.bk), C), bp.dtype)
        part[plan.with_b] = bp.reshape(k, -1, C)[plan.bk[plan.with_b], plan.b_tile]
        self.pay.din_b.put(beats, part)
        return beats

    def _unpack_drain(self, words, rows_out, m, n):
        """Scatter drained tile rows into ``(acc, overflow)`` of ``(m, n)``."""
        C = self.cols
        rows, j0s = rows_out
        width = -(-n // C) * C
        acc = np.zeros((m, width), np.int64)
        ovf = np.zeros((m, width), bool)
        cols = j0s[:, None] + np.arange(C)
        acc[rows[:, None], cols] = self.pay.out_acc.take(words)
        ovf[rows[:, None], cols] = self.pay.out_ovf.take(words).astype(bool)
        return acc[:, :n], ovf[:, :n]

    async def gemm(self, a: np.ndarray, b: np.ndarray):
        """``a (M,K) @ b (K,N)`` tile by tile, in the order of
        :func:`nitihw.sim.model.cycle_model.gemm_tiles`. Returns ``(acc int64 (M,N), overflow
        bool)``.
        """
        ap, bp, m, k, n = self._gemm_operands(a, b)
        plan = self._gemm_plan(m, k, n, None)
        beats = self._gemm_beats(ap, bp, k, plan)
        rows_out = plan.rows_out
        words = await self.execute("gemm tiles", plan.cmds, beats, len(rows_out[0]), plan.words)
        return self._unpack_drain(words, rows_out, m, n)

    async def gemm_tensor(self, a: np.ndarray, b: np.ndarray, keep: bool = True):
        """A GEMM as one tensor in one program (:func:`gemm_program`): ``RANGE_CLEAR``, the
        tiles, ``RANGE_READ``. Returns ``(acc, overflow, range fields)``. With ``keep``, when
        the result fits the result buffer its rows stay there too (``self.kept``), for a
        :meth:`rescale` or :meth:`divide` ``from_buffer``."""
        ap, bp, m, k, n = self._gemm_operands(a, b)
        keep = keep and m * n > 0 and drained_rows(m, n, self.cols) <= self.result_rows
        plan = self._gemm_plan(m, k, n, keep)
        empty = np.zeros((0, self.pay.din_bytes), np.uint8)
        beats = self._gemm_beats(ap, bp, k, plan) if m and n else empty
        rows_out = plan.rows_out
        self.kept = None
        words = await self.execute("gemm", plan.cmds, beats, len(rows_out[0]) + 1, plan.words)
        if keep:
            self.kept = (m, n, result_layout(m, n, self.cols))
        acc, ovf = self._unpack_drain(words[:-1], rows_out, m, n)
        return acc, ovf, self.pay.range_fields(words[-1])

    async def run(self, op: Op, beats=(), n_out=0, count=0, **fields) -> list[int]:
        """One command as a program of its own (``fields``: its other command fields)."""
        cmd = Command(op.name, count, fields=tuple(fields.items()))
        return await self.execute(op.name, [cmd], beats, n_out)

    async def range_clear(self) -> None:
        await self.run(Op.RANGE_CLEAR)

    async def range_read(self) -> dict:
        (word,) = await self.run(Op.RANGE_READ, n_out=1)
        return self.pay.range_fields(word)

    def _feed_beats(self, acc) -> list[int]:
        flat = np.asarray(acc, np.int64).reshape(-1)
        lim = 1 << (self.params.accumulator_bits - 1)
        if flat.size and (int(flat.min()) < -lim or int(flat.max()) >= lim):
            raise ValueError(
                f"range_feed: values outside the {self.params.accumulator_bits}-bit "
                "accumulator range"
            )
        return self._beats([flat], [self.pay.din_acc], flat.size)

    async def range_feed(self, acc) -> None:
        """Stream ``acc`` (any shape, values within the accumulator range) through the range
        unit, ``cols`` per beat; the last beat is padded with zeros, which change no range."""
        beats = self._feed_beats(acc)
        await self.run(Op.RANGE_FEED, beats, count=len(beats))

    async def feed_tensor(self, acc) -> dict:
        """The range of a tensor that is not a GEMM's result, in one program:
        ``RANGE_CLEAR``, ``RANGE_FEED`` (none for an empty tensor), ``RANGE_READ``."""
        beats = self._feed_beats(acc)
        feed = [Command("RANGE_FEED", len(beats))] if len(beats) else []
        cmds = [Command("RANGE_CLEAR"), *feed, Command("RANGE_READ")]
        (word,) = await self.execute("range", cmds, beats, 1)
        return self.pay.range_fields(word)

    def _beats(self, arrays, fields, n) -> np.ndarray:
        """Beats of ``cols`` elements of each flat array in ``arrays`` into its field; the
        last beat zero-padded."""
        C = self.cols
        nb = -(-n // C)
        beats = np.zeros((nb, self.pay.din_bytes), np.uint8)
        for arr, fld in zip(arrays, fields, strict=True):
            padded = np.zeros(nb * C, np.int64)
            padded[:n] = np.asarray(arr, np.int64)[:n]
            fld.put(beats, padded.reshape(nb, C))
        return beats

    def _lanes_out(self, fld, words, n) -> np.ndarray:
        """The first ``n`` elements of ``fld`` over the dout beats ``words``, flat."""
        return fld.take(words).reshape(-1)[:n]

    def _kept_rows(self, op: str, acc) -> list:
        if self.kept is None or self.kept[0] * self.kept[1] != np.asarray(acc).size:
            raise ValueError(f"{op} from_buffer: the result buffer does not hold this tensor")
        return self.kept[2]

    def _from_rows(self, words, rows_out, shape):
        """int8 results of a ``from_buffer`` pass (one per kept tile row) in ``shape``."""
        m, n = self.kept[0], self.kept[1]
        rows, j0s = rows_out
        width = -(-n // self.cols) * self.cols
        out = np.zeros((m, width), np.int8)
        out[rows[:, None], j0s[:, None] + np.arange(self.cols)] = self.pay.out_q.take(words)
        return out[:, :n].reshape(shape)

    async def rescale(
        self, acc, shift: int, mode: str, rand=None, from_buffer: bool = False
    ) -> np.ndarray:
        """``shift_round(acc, shift, mode, rand)`` on the rescale lanes; any shape. A negative
        ``shift`` is a left shift (the command's ``left`` bit, with ``-shift``). With
        ``from_buffer`` the lanes read ``acc`` from the result buffer (the last kept GEMM
        result, :meth:`gemm_tensor`), one tile row a beat, instead of receiving it on din
        (no ``rand``: ``sto`` needs din)."""
        acc = np.asarray(acc, np.int64)
        fields = {
            "shift": abs(int(shift)),
            "mode": MODE_BY_NAME[mode].value,
            "left": int(shift < 0),
        }
        if from_buffer:
            if rand is not None:
                raise ValueError("rescale from_buffer: the random integers of sto come on din")
            rows_out = self._kept_rows("rescale", acc)
            n = len(rows_out[0])
            cmd = Command("RESCALE", n, from_buffer=1, fields=tuple(fields.items()))
            words = await self.execute("RESCALE", [cmd], (), n)
            return self._from_rows(words, rows_out, acc.shape)
        flat = acc.reshape(-1)
        r = np.zeros_like(flat) if rand is None else np.asarray(rand, np.int64).reshape(-1)
        beats = self._beats([flat, r], [self.pay.din_acc, self.pay.din_rand], flat.size)
        words = await self.run(
            Op.RESCALE,
            beats,
            n_out=len(beats),
            count=len(beats),
            shift=abs(int(shift)),
            mode=MODE_BY_NAME[mode].value,
            left=int(shift < 0),
        )
        out = self._lanes_out(self.pay.out_q, words, flat.size)
        return out.astype(np.int8).reshape(acc.shape)

    async def update(self, w, g, master: bool = False, limit: int = 127):
        """Update lanes: returns ``(w_new, w8)`` in the shapes of ``w``. int8 weights are
        clamped to ``+-limit`` (1..127); master weights to ``+-32767``."""
        w = np.asarray(w, np.int64)
        flat_w, flat_g = w.reshape(-1), np.asarray(g, np.int64).reshape(-1)
        beats = self._beats([flat_w, flat_g], [self.pay.din_w, self.pay.din_g], flat_w.size)
        words = await self.run(
            Op.UPDATE,
            beats,
            n_out=len(beats),
            count=len(beats),
            master=int(master),
            limit=int(limit),
        )
        wn = self._lanes_out(self.pay.out_w, words, flat_w.size)
        w8 = self._lanes_out(self.pay.out_w8, words, flat_w.size)
        return wn.reshape(w.shape), w8.reshape(w.shape)

    # ---- NITRO-D: the divide lanes (divide builds) -----------------------------------------
    def _need_divide(self, op: str) -> None:
        if not self.has_divide:
            raise ValueError(
                f"{op}: this Datapath has no divide lanes (build it with divide=True; "
                "nitihw verilog --divide)"
            )

    async def divide(self, acc, divisor: int, from_buffer: bool = False) -> np.ndarray:
        """``saturate(trunc_div(acc, divisor))`` to int8 on the divide lanes (``DIVIDE``);
        any shape, values within the accumulator range, ``divisor >= 1``. ``from_buffer``:
        read ``acc`` from the result buffer, as :meth:`rescale` does."""
        self._need_divide("DIVIDE")
        acc = np.asarray(acc, np.int64)
        flat = acc.reshape(-1)
        _check_fits("divide", flat, self.params.accumulator_bits)
        magic, shift = _reciprocal(divisor)
        if from_buffer:
            rows_out = self._kept_rows("divide", acc)
            fields = (("magic0", magic), ("shift0", shift))
            n = len(rows_out[0])
            cmd = Command("DIVIDE", n, from_buffer=1, fields=fields)
            words = await self.execute("DIVIDE", [cmd], (), n)
            return self._from_rows(words, rows_out, acc.shape)
        if not flat.size:
            return np.zeros(acc.shape, np.int8)
        beats = self._beats([flat], [self.pay.din_acc], flat.size)
        words = await self.run(
            Op.DIVIDE, beats, n_out=len(beats), count=len(beats), magic0=magic, shift0=shift
        )
        out = self._lanes_out(self.pay.out_q, words, flat.size)
        return out.astype(np.int8).reshape(acc.shape)

    async def update_div(self, w, g, lr_div: int, decay_div: int) -> np.ndarray:
        """IntegerSGD on the divide lanes (``UPDATE_DIV``): int32 ``w`` and ``g`` of one shape,
        ``wrap32(w - trunc_div(g, lr_div) - (trunc_div(w, decay_div) if decay_div else 0))``,
        returned as int64 in the shape of ``w``."""
        self._need_divide("UPDATE_DIV")
        w = np.asarray(w, np.int64)
        flat_w, flat_g = w.reshape(-1), np.asarray(g, np.int64).reshape(-1)
        if flat_w.size != flat_g.size:
            raise ValueError(f"update_div: {flat_w.size} weights but {flat_g.size} gradients")
        _check_fits("update_div: w", flat_w, DIV_BITS)
        _check_fits("update_div: g", flat_g, DIV_BITS)
        magic0, shift0 = _reciprocal(lr_div)
        if isinstance(decay_div, bool) or not isinstance(decay_div, (int, np.integer)):
            raise ValueError(f"decay divisor must be an integer, got {decay_div!r}")
        decay = int(decay_div) != 0
        magic1, shift1 = _reciprocal(decay_div) if decay else (0, 0)
        if not flat_w.size:
            return np.zeros(w.shape, np.int64)
        beats = self._beats([flat_w, flat_g], [self.pay.din_w32, self.pay.din_g32], flat_w.size)
        words = await self.run(
            Op.UPDATE_DIV,
            beats,
            n_out=len(beats),
            count=len(beats),
            magic0=magic0,
            shift0=shift0,
            magic1=magic1,
            shift1=shift1,
            decay=int(decay),
        )
        out = self._lanes_out(self.pay.out_w32, words, flat_w.size)
        return out.reshape(w.shape)


def _check_fits(what: str, x: np.ndarray, bits: int) -> None:
    """Refuse values a ``bits``-bit signed field would silently wrap."""
    lim = 1 << (bits - 1)
    if x.size and (int(x.min()) < -lim or int(x.max()) >= lim):
        raise ValueError(f"{what}: values outside the signed {bits}-bit range")


def _reciprocal(d) -> tuple[int, int]:
    """The divide lanes' ``(magic, shift)`` for divisor ``d >= 1``. Divisors of ``2^32`` or
    more give ``(0, 0)``: every 32-bit magnitude (at most ``2^31``) divides to 0."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or int(d) < 1:
        raise ValueError(f"divisor must be a positive integer, got {d!r}")
    d = int(d)
    return (0, 0) if d >= 1 << DIV_BITS else divider_constants(d)
