"""The host side of the Datapath: command encoding, tiling, and a cycle-counting driver.

:class:`DatapathDriver` runs GEMMs, ranges, rescales, updates and (on ``divide`` builds)
NITRO-D's divisions on a simulated :class:`nitihw.rtl.datapath.Datapath` through its three
streams, the way a controller core would. It talks to the simulator through a small port
object (:class:`AmaranthPort` for Amaranth's simulator, ``CocotbPort`` in the cocotb
testbenches), so the same driver runs on every simulator. Every command's cycles are
recorded in ``driver.log``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data

from nitihw.rtl.datapath import Op, command_layout, din_layout, dout_layout
from nitihw.rtl.divide import DIV_BITS, divider_constants
from nitihw.rtl.rescale import MODE_BY_NAME
from nitihw.sim.cycle_model import gemm_tiles

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
        self.din_a = _array_field(din["a"].shape, 0)
        self.din_b = _array_field(din["b"].shape, 0)
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

    def command(
        self,
        op: Op,
        count=0,
        accumulate=0,
        shift=0,
        mode=0,
        master=0,
        left=0,
        limit=127,
        magic0=0,
        shift0=0,
        magic1=0,
        shift1=0,
        decay=0,
    ) -> int:
        fields = {
            "op": op.value,
            "count": count,
            "accumulate": accumulate,
            "shift": shift,
            "mode": mode,
            "master": master,
            "left": left,
            "limit": limit,
            "magic0": magic0,
            "shift0": shift0,
            "magic1": magic1,
            "shift1": shift1,
            "decay": decay,
        }
        word = 0
        for name, value in fields.items():
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

    async def wait_high(self, name: str) -> None:
        """Return in the first cycle (settled) where ``name`` is 1."""
        while True:
            await self.settle()
            if self.get(name):
                return
            await self.tick()


# ---- the driver ---------------------------------------------------------------------------


@dataclass
class CommandRecord:
    op: str
    count: int
    cycles: int


@dataclass
class DatapathDriver:
    """Drives one Datapath. ``params`` is ``Datapath.parameters()``; ``port`` a port object."""

    port: object
    params: dict
    log: list = field(default_factory=list)

    def __post_init__(self):
        p = self.params
        self.rows, self.cols, self.kmax = p["rows"], p["cols"], p["kmax"]
        self.b_bits = p.get("b_bits", p["op_bits"])
        self.has_divide = bool(p.get("divide", False))
        self.pay = Payloads(
            p["rows"], p["cols"], p["op_bits"], p["acc_bits"], self.b_bits, self.has_divide
        )

    _last_start: int = 0

    async def reset_streams(self) -> None:
        for name in ("cmd__valid", "din__valid"):
            self.port.set(name, 0)
        self.port.set("dout__ready", 1)

    @property
    def cycle(self) -> int:
        return self.port.cycle

    async def _tick(self):
        await self.port.tick()

    # Every cycle follows one protocol, which every simulator accepts: drive the inputs right
    # after a clock edge, let the logic settle, sample the outputs, then wait for the next edge.
    # A command is presented as soon as the previous one's data has moved, and is accepted the
    # first cycle the datapath is idle, so commands run back to back.

    async def _issue(self, op: Op, count=0, **kw) -> None:
        """Hand one command over; its cycles are logged when the next one is accepted."""
        self.port.set("cmd__payload", self.pay.command(op, count, **kw))
        self.port.set("cmd__valid", 1)
        await self.port.wait_high("cmd__ready")
        start = self.cycle
        await self._tick()
        self.port.set("cmd__valid", 0)
        self._close_last(start)
        self.log.append(CommandRecord(op.name, count, -1))
        self._last_start = start

    def _close_last(self, now: int) -> None:
        if self.log and self.log[-1].cycles < 0:
            self.log[-1].cycles = now - self._last_start

    async def sync(self) -> int:
        """Wait until the datapath is idle; closes the last command's cycle count."""
        await self.port.wait_high("cmd__ready")  # cmd.ready is high exactly when idle
        now = self.cycle
        await self._tick()
        self._close_last(now)
        return now

    async def _stream(self, beats_in: list[int], n_out: int) -> list[int]:
        """Send ``beats_in`` on din while collecting ``n_out`` dout beats."""
        out: list[int] = []
        k = 0
        while k < len(beats_in) or len(out) < n_out:
            if k < len(beats_in):
                self.port.set("din__payload", beats_in[k])
                self.port.set("din__valid", 1)
            else:
                self.port.set("din__valid", 0)
            await self.port.settle()
            took = k < len(beats_in) and self.port.get("din__ready")
            if len(out) < n_out and self.port.get("dout__valid"):
                out.append(self.port.get("dout__payload"))
            await self._tick()
            if took:
                k += 1
        self.port.set("din__valid", 0)
        return out

    async def run(self, op: Op, beats_in=(), n_out=0, count=0, **kw) -> list[int]:
        await self._issue(op, count, **kw)
        return await self._stream(list(beats_in), n_out)

    # ---- operations of a training step ----------------------------------------------------
    async def gemm(self, a: np.ndarray, b: np.ndarray):
        """``a (M,K) @ b (K,N)`` tile by tile, in the order of
        :func:`nitihw.sim.cycle_model.gemm_tiles`. Returns ``(acc int64 (M,N), overflow bool)``.
        """
        a = np.asarray(a, np.int64)
        b = np.asarray(b, np.int64)
        _check_fits("gemm: A", a, self.params["op_bits"])
        _check_fits("gemm: B", b, self.b_bits)
        (m, k), n = a.shape, b.shape[1]
        R, C = self.rows, self.cols
        acc = np.zeros((m, n), np.int64)
        ovf = np.zeros((m, n), bool)
        # zero-padded to whole tiles: zeros add nothing to sums, ranges or overflow counts
        ap = np.zeros((-(-m // R) * R, k), np.int64)
        ap[:m] = a
        bp = np.zeros((k, -(-n // C) * C), np.int64)
        bp[:, :n] = b
        for op, count, (i0, j0, x) in gemm_tiles(m, k, n, R, C, self.kmax):
            if op == "LOAD_B":
                beats = [self.pay.din_b.pack(bp[x + t, j0 : j0 + C]) for t in range(count)]
                await self.run(Op.LOAD_B, beats, count=count)
            elif op == "LOAD_A":
                beats = [self.pay.din_a.pack(ap[i0 : i0 + R, x + t]) for t in range(count)]
                await self.run(Op.LOAD_A, beats, count=count)
            elif op == "COMPUTE":
                await self.run(Op.COMPUTE, count=count, accumulate=x)
            else:
                words = await self.run(Op.DRAIN, n_out=count, count=count)
                cols = min(C, n - j0)
                for r, wd in enumerate(words):
                    acc[i0 + r, j0 : j0 + cols] = self.pay.out_acc.unpack(wd)[:cols]
                    ovf[i0 + r, j0 : j0 + cols] = self.pay.out_ovf.unpack(wd)[:cols].astype(bool)
        return acc, ovf

    async def range_clear(self) -> None:
        await self.run(Op.RANGE_CLEAR)

    async def range_read(self) -> dict:
        (word,) = await self.run(Op.RANGE_READ, n_out=1)
        return self.pay.range_fields(word)

    async def range_feed(self, acc) -> None:
        """Stream ``acc`` (any shape, values within the accumulator range) through the range
        unit, ``cols`` per beat; the last beat is padded with zeros, which change no range."""
        flat = np.asarray(acc, np.int64).reshape(-1)
        lim = 1 << (self.params["acc_bits"] - 1)
        if flat.size and (int(flat.min()) < -lim or int(flat.max()) >= lim):
            raise ValueError(
                f"range_feed: values outside the {self.params['acc_bits']}-bit accumulator range"
            )
        beats = self._beats([flat], [self.pay.din_acc], flat.size)
        await self.run(Op.RANGE_FEED, beats, count=len(beats))

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

    async def rescale(self, acc, shift: int, mode: str, rand=None) -> np.ndarray:
        """``shift_round(acc, shift, mode, rand)`` on the rescale lanes; any shape. A negative
        ``shift`` is a left shift (the command's ``left`` bit, with ``-shift``)."""
        acc = np.asarray(acc, np.int64)
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

    async def divide(self, acc, divisor: int) -> np.ndarray:
        """``saturate(trunc_div(acc, divisor))`` to int8 on the divide lanes (``DIVIDE``);
        any shape, values within the accumulator range, ``divisor >= 1``."""
        self._need_divide("DIVIDE")
        acc = np.asarray(acc, np.int64)
        flat = acc.reshape(-1)
        _check_fits("divide", flat, self.params["acc_bits"])
        magic, shift = _reciprocal(divisor)
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
