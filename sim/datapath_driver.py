"""The host side of the Datapath: command encoding, tiling, and a cycle-counting driver.

:class:`DatapathDriver` runs GEMMs, ranges, rescales, updates and (on ``divide`` builds)
NITRO-D's divisions on a simulated :class:`nitihw.rtl.datapath.Datapath` through its three
streams, the way a controller core would. It talks to the simulator through a small port
object (:class:`AmaranthPort` for Amaranth's simulator, ``CocotbPort`` in the cocotb
testbenches), so the same driver runs on every simulator. Each operation is one program
(commands, din beats, dout beats) streamed as fast as the Datapath takes it; its cycles are
recorded in ``driver.log`` (:class:`ProgramRecord`), for checks against
:func:`nitihw.rtl.schedule.program_cycles`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data

from nitihw.rtl.datapath import Op, command_layout, din_layout, dout_layout
from nitihw.rtl.divide import DIV_BITS, divider_constants
from nitihw.rtl.rescale import MODE_BY_NAME
from nitihw.rtl.schedule import Command
from nitihw.sim.cycle_model import drained_rows, gemm_program, gemm_tiles

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


def _array_field(layout: data.ArrayLayout, offset: int) -> ArrayField:
    elem = layout.elem_shape
    shape = Shape.cast(elem)
    return ArrayField(offset, layout.length, shape.width, shape.signed)


class Payloads:
    """Offsets of every payload member for one Datapath configuration."""

    def __init__(self, rows, cols, op_bits, acc_bits, b_bits=None, divide=False):
        cmd = command_layout(acc_bits)
        self.cmd = {name: (f.offset, _width(f.shape)) for name, f in cmd}
        din = din_layout(rows, cols, op_bits, acc_bits, b_bits, divide)
        ab = din["ab"].shape
        self.din_a = _array_field(ab["a"].shape, ab["a"].offset)
        self.din_b = _array_field(ab["b"].shape, ab["b"].offset)
        resc = din["rescale"].shape
        self.din_acc = _array_field(resc["acc"].shape, resc["acc"].offset)
        self.din_rand = _array_field(resc["rand"].shape, resc["rand"].offset)
        upd = din["update"].shape
        self.din_w = _array_field(upd["w"].shape, upd["w"].offset)
        self.din_g = _array_field(upd["g"].shape, upd["g"].offset)
        dout = dout_layout(cols, acc_bits, divide)
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

    def range_fields(self, word: int) -> dict:
        return {name: (word >> off) & ((1 << w) - 1) for name, (off, w) in self.out_range.items()}


# ---- ports: how the driver reaches a simulator --------------------------------------------


class AmaranthPort:
    """Port onto Amaranth's simulator (``ctx`` of an async testbench)."""

    def __init__(self, ctx, dut):
        self.ctx, self.dut = ctx, dut
        self._sig = {}

    def _resolve(self, name):
        if name not in self._sig:
            obj = self.dut
            for part in name.split("__"):
                obj = getattr(obj, part)
            self._sig[name] = obj.as_value() if hasattr(obj, "as_value") else obj
        return self._sig[name]

    cycle = 0

    def set(self, name: str, value: int) -> None:
        self.ctx.set(self._resolve(name), value)

    def get(self, name: str) -> int:
        return int(self.ctx.get(self._resolve(name)))

    async def settle(self) -> None:
        return None

    async def tick(self) -> None:
        await self.ctx.tick()
        self.cycle += 1

    async def wait_any(self, names) -> None:
        """Return in the first later cycle (settled) where one of ``names`` is 1."""
        while True:
            await self.tick()
            await self.settle()
            if any(self.get(n) for n in names):
                return

    async def wait_low(self, name: str) -> None:
        """Return in the first cycle (settled) where ``name`` is 0."""
        while True:
            await self.settle()
            if not self.get(name):
                return
            await self.tick()


# ---- the driver ---------------------------------------------------------------------------


class DatapathError(RuntimeError):
    """The Datapath flagged a command it could not run (its ``error`` output)."""


@dataclass
class ProgramRecord:
    """One program the driver ran: its name, its commands and the cycles the RTL took (from
    the cycle its first command was accepted to the first cycle the Datapath was idle)."""

    name: str
    commands: list
    cycles: int
    start: int = 0  # the simulator cycle its first command was accepted


@dataclass
class DatapathDriver:
    """Drives one Datapath. ``params`` is ``Datapath.parameters()``; ``port`` a port object.

    Every operation is one *program*: its commands, its din beats and the number of dout beats
    it returns, streamed together (the Datapath queues commands and runs its units side by
    side), then the driver waits until the Datapath is idle. ``log`` records each program.
    """

    port: object
    params: dict
    log: list = field(default_factory=list)
    #: for tests of back-pressure: called every cycle, returns ``(hold_din, hold_dout)``: keep
    #: din.valid low / dout.ready low this cycle (the cycles are then no longer the schedule's)
    stall: object = None

    def __post_init__(self):
        p = self.params
        self.rows, self.cols, self.kmax = p["rows"], p["cols"], p["kmax"]
        self.b_bits = p.get("b_bits", p["op_bits"])
        self.has_divide = bool(p.get("divide", False))
        self.result_rows = int(p.get("result_rows", 0))
        #: ``(M, N, [(row, j0)] in drain order)`` of the GEMM result the result buffer holds
        self.kept = None
        self.pay = Payloads(
            p["rows"], p["cols"], p["op_bits"], p["acc_bits"], self.b_bits, self.has_divide
        )

    async def reset_streams(self) -> None:
        for name in ("cmd__valid", "din__valid"):
            self.port.set(name, 0)
        self.port.set("dout__ready", 1)

    @property
    def cycle(self) -> int:
        return self.port.cycle

    # Every cycle follows one protocol, which every simulator accepts: drive the inputs right
    # after a clock edge, let the logic settle, sample the outputs, then wait for the next edge.
    # Commands and din beats are presented as soon as the previous ones have moved, and dout
    # is always ready, so the streams never stall the Datapath: the cycles are the schedule's.

    async def execute(self, name: str, commands, beats=(), n_out: int = 0) -> list[int]:
        """Run one program: ``commands`` (:class:`Command`), ``beats`` (din words) in order,
        ``n_out`` dout words back; returns them once the Datapath is idle again."""
        port = self.port
        words = [self.pay.command(c) for c in commands]
        beats = list(beats)
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
        if failed:
            known = {o.value: o.name for o in Op}
            if op in (Op.LOAD_A.value, Op.LOAD_B.value, Op.LOAD_AB.value, Op.COMPUTE.value):
                why = f"count larger than the operand banks (kmax {self.kmax})"
            elif op in (Op.DIVIDE.value, Op.UPDATE_DIV.value) and not self.has_divide:
                why = "this build has no divide lanes (build it with divide=True)"
            elif op in (Op.RESCALE.value, Op.DIVIDE.value):
                why = "from_buffer, but this build has no result buffer (result_rows=0)"
            else:
                why = "unknown opcode"
            raise DatapathError(
                f"the Datapath dropped command {known.get(op, op)!r} (opcode {op}): {why}"
            )
        start = end if start is None else start
        self.log.append(ProgramRecord(name, list(commands), end - start, start))
        return out

    async def sync(self) -> int:
        """Wait until the datapath is idle; returns the cycle."""
        await self.port.wait_low("busy")
        now = self.cycle
        await self.port.tick()
        return now

    # ---- operations of a training step ----------------------------------------------------
    def _gemm_operands(self, a, b):
        a = np.asarray(a, np.int64)
        b = np.asarray(b, np.int64)
        _check_fits("gemm: A", a, self.params["op_bits"])
        _check_fits("gemm: B", b, self.b_bits)
        (m, k), n = a.shape, b.shape[1]
        R, C = self.rows, self.cols
        # zero-padded to whole tiles: zeros add nothing to sums, ranges or overflow counts
        ap = np.zeros((-(-m // R) * R, k), np.int64)
        ap[:m] = a
        bp = np.zeros((k, -(-n // C) * C), np.int64)
        bp[:, :n] = b
        return ap, bp, m, k, n

    def _gemm_beats(self, ap, bp, m, k, n):
        """din beats of the tiles of :func:`gemm_tiles`, in order, and where each drained row
        goes: ``[(i0 + r, j0)]``."""
        R, C = self.rows, self.cols
        beats, rows_out = [], []
        for cmd, (i0, j0, k0) in gemm_tiles(m, k, n, R, C, self.kmax):
            if cmd.op == "COMPUTE":
                rows_out += [(i0 + r, j0) for r in range(cmd.drain_rows)]
                continue
            with_b = cmd.op == "LOAD_AB"
            for t in range(cmd.count):
                word = self.pay.din_a.pack(ap[i0 : i0 + R, k0 + t])
                if with_b:
                    word |= self.pay.din_b.pack(bp[k0 + t, j0 : j0 + C])
                beats.append(word)
        return beats, rows_out

    def _unpack_drain(self, words, rows_out, m, n):
        C = self.cols
        acc = np.zeros((m, n), np.int64)
        ovf = np.zeros((m, n), bool)
        for wd, (row, j0) in zip(words, rows_out, strict=True):
            cols = min(C, n - j0)
            acc[row, j0 : j0 + cols] = self.pay.out_acc.unpack(wd)[:cols]
            ovf[row, j0 : j0 + cols] = self.pay.out_ovf.unpack(wd)[:cols].astype(bool)
        return acc, ovf

    async def gemm(self, a: np.ndarray, b: np.ndarray):
        """``a (M,K) @ b (K,N)`` tile by tile, in the order of
        :func:`nitihw.sim.cycle_model.gemm_tiles`. Returns ``(acc int64 (M,N), overflow bool)``.
        """
        ap, bp, m, k, n = self._gemm_operands(a, b)
        beats, rows_out = self._gemm_beats(ap, bp, m, k, n)
        cmds = [c for c, _ in gemm_tiles(m, k, n, self.rows, self.cols, self.kmax)]
        words = await self.execute("gemm tiles", cmds, beats, len(rows_out))
        return self._unpack_drain(words, rows_out, m, n)

    async def gemm_tensor(self, a: np.ndarray, b: np.ndarray, keep: bool = True):
        """A GEMM as one tensor in one program (:func:`gemm_program`): ``RANGE_CLEAR``, the
        tiles, ``RANGE_READ``. Returns ``(acc, overflow, range fields)``. With ``keep``, when
        the result fits the result buffer its rows stay there too (``self.kept``), for a
        :meth:`rescale` or :meth:`divide` ``from_buffer``."""
        ap, bp, m, k, n = self._gemm_operands(a, b)
        beats, rows_out = self._gemm_beats(ap, bp, m, k, n) if m and n else ([], [])
        keep = keep and m * n > 0 and drained_rows(m, n, self.cols) <= self.result_rows
        self.kept = None
        cmds = gemm_program(m, k, n, self.rows, self.cols, self.kmax, keep)
        words = await self.execute("gemm", cmds, beats, len(rows_out) + 1)
        if keep:
            self.kept = (m, n, rows_out)
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
        lim = 1 << (self.params["acc_bits"] - 1)
        if flat.size and (int(flat.min()) < -lim or int(flat.max()) >= lim):
            raise ValueError(
                f"range_feed: values outside the {self.params['acc_bits']}-bit accumulator range"
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
        feed = [Command("RANGE_FEED", len(beats))] if beats else []
        cmds = [Command("RANGE_CLEAR"), *feed, Command("RANGE_READ")]
        (word,) = await self.execute("range", cmds, beats, 1)
        return self.pay.range_fields(word)

    def _beats(self, arrays, fields, n):
        C = self.cols
        beats = []
        for t in range(0, n, C):
            word = 0
            for arr, fld in zip(arrays, fields, strict=True):
                chunk = np.zeros(C, np.int64)
                part = arr[t : t + C]
                chunk[: len(part)] = part
                word |= fld.pack(chunk)
            beats.append(word)
        return beats

    def _kept_rows(self, op: str, acc) -> list:
        if self.kept is None or self.kept[0] * self.kept[1] != np.asarray(acc).size:
            raise ValueError(f"{op} from_buffer: the result buffer does not hold this tensor")
        return self.kept[2]

    def _from_rows(self, words, rows_out, shape):
        """int8 results of a ``from_buffer`` pass (one per kept tile row) in ``shape``."""
        m, n = self.kept[0], self.kept[1]
        out = np.zeros((m, n), np.int8)
        for wd, (row, j0) in zip(words, rows_out, strict=True):
            cols = min(self.cols, n - j0)
            out[row, j0 : j0 + cols] = self.pay.out_q.unpack(wd)[:cols]
        return out.reshape(shape)

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
            cmd = Command("RESCALE", len(rows_out), from_buffer=1, fields=tuple(fields.items()))
            words = await self.execute("RESCALE", [cmd], (), len(rows_out))
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
        out = np.concatenate([self.pay.out_q.unpack(w) for w in words]) if words else np.array([])
        return out[: flat.size].astype(np.int8).reshape(acc.shape)

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
        wn = np.concatenate([self.pay.out_w.unpack(x) for x in words])[: flat_w.size]
        w8 = np.concatenate([self.pay.out_w8.unpack(x) for x in words])[: flat_w.size]
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
        _check_fits("divide", flat, self.params["acc_bits"])
        magic, shift = _reciprocal(divisor)
        if from_buffer:
            rows_out = self._kept_rows("divide", acc)
            fields = (("magic0", magic), ("shift0", shift))
            cmd = Command("DIVIDE", len(rows_out), from_buffer=1, fields=fields)
            words = await self.execute("DIVIDE", [cmd], (), len(rows_out))
            return self._from_rows(words, rows_out, acc.shape)
        if not flat.size:
            return np.zeros(acc.shape, np.int8)
        beats = self._beats([flat], [self.pay.din_acc], flat.size)
        words = await self.run(
            Op.DIVIDE, beats, n_out=len(beats), count=len(beats), magic0=magic, shift0=shift
        )
        out = np.concatenate([self.pay.out_q.unpack(w) for w in words])
        return out[: flat.size].astype(np.int8).reshape(acc.shape)

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
        out = np.concatenate([self.pay.out_w32.unpack(x) for x in words])[: flat_w.size]
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
