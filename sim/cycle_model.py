"""The cycle model: the Datapath's schedule applied to the operations of a training step.

Given the array (rows, cols, kmax) and a datapath operation (a GEMM's M, K, N; the element
count of a rescale or update), it returns the cycles the RTL takes, without simulating. It
knows the driver's tiling (:func:`gemm_tiles`, which the driver itself executes) and the
per-command formulas of :mod:`nitihw.rtl.schedule`; :func:`gemm_cycles` is their closed form.
Tests check the model against the cycles the RTL measured, operation by operation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from nitihw.rtl.schedule import command_cycles

RANGE_COMMANDS = (("RANGE_CLEAR", 0), ("RANGE_READ", 0))  # around every GEMM (its tensor)


@dataclass(frozen=True)
class ArrayConfig:
    """The datapath the model describes."""

    rows: int = 8
    cols: int = 8
    kmax: int = 256

    @classmethod
    def parse(cls, text: str, kmax: int = 256) -> ArrayConfig:
        r, sep, c = str(text).lower().partition("x")
        if not sep or not r.isdigit() or not c.isdigit() or int(r) < 1 or int(c) < 1:
            raise ValueError(f"bad --array {text!r}: expected ROWSxCOLS, e.g. 8x8")
        return cls(int(r), int(c), kmax)

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}"


def gemm_tiles(m: int, k: int, n: int, rows: int, cols: int, kmax: int):
    """The driver's command sequence for ``(m, k) @ (k, n)``.

    Yields ``(op, count, where)``: ``where`` is ``(i0, j0, k0)`` for loads and computes (the
    tile's first row, column and K index) and ``(i0, j0, rows)`` for a drain. For each column
    tile, for each row tile: per K-chunk (``kmax`` long) ``LOAD_B`` (only once per column tile
    when there is one chunk: B stays in its buffer), ``LOAD_A``, ``COMPUTE`` (accumulating
    after the first chunk); then ``DRAIN`` of the tile's real rows.
    """
    if k < 1:
        raise ValueError(f"a GEMM needs K >= 1, got {k}")
    chunks = list(range(0, k, kmax))
    for j0 in range(0, n, cols):
        for i0 in range(0, m, rows):
            for c, k0 in enumerate(chunks):
                kc = min(kmax, k - k0)
                if len(chunks) > 1 or i0 == 0:
                    yield "LOAD_B", kc, (i0, j0, k0)
                yield "LOAD_A", kc, (i0, j0, k0)
                yield "COMPUTE", kc, (i0, j0, int(c > 0))
            yield "DRAIN", min(rows, m - i0), (i0, j0, min(rows, m - i0))


def gemm_cycles(m: int, k: int, n: int, rows: int, cols: int, kmax: int) -> int:
    """Closed form of the cycles of :func:`gemm_tiles` plus the range clear/read around it.

    With ``nch = ceil(k / kmax)`` chunks, ``T_r`` row tiles and ``T_c`` column tiles:
    per column tile, ``LOAD_B`` once (``1 + k``) if ``nch == 1``; per tile, ``LOAD_A``
    (``nch + k``), ``COMPUTE`` (``k + nch (rows + cols)``), ``LOAD_B`` (``nch + k``) if
    ``nch > 1``, and ``DRAIN`` (``1 + tile rows``, summing to ``T_r + m`` per column tile).
    """
    if m == 0 or n == 0:
        return _range_cycles()
    if k < 1:
        raise ValueError(f"a GEMM needs K >= 1, got {k}")
    nch = -(-k // kmax)
    t_r, t_c = -(-m // rows), -(-n // cols)
    per_tile = (nch + k) + (k + nch * (rows + cols)) + (nch + k if nch > 1 else 0)
    per_col = (1 + k if nch == 1 else 0) + t_r * per_tile + (t_r + m)
    return t_c * per_col + _range_cycles()


def _range_cycles() -> int:
    return sum(command_cycles(op, count, 1, 1) for op, count in RANGE_COMMANDS)


def lane_beats(elements: int, cols: int) -> int:
    return -(-elements // cols)


def op_cycles(op: str, shape: tuple, array: ArrayConfig, extra: dict | None = None) -> int:
    """Cycles of one traced datapath operation (see :class:`nitihw.golden.TraceEntry`).

    ``gemm`` (M, K, N): the tiles plus the range clear/read of its tensor; ``range``
    (elements,): 0 when the range unit watched the tensor drain, and with ``extra['fed']``
    ``RANGE_CLEAR`` + ``RANGE_FEED`` (beats of ``cols``) + ``RANGE_READ``; ``rescale`` /
    ``update`` (elements,): beats of ``cols`` lanes plus the command's fill and latency;
    ``divide`` and an ``update`` with ``extra['divide']`` (NITRO-D) run on the divide lanes.
    ``extra`` is the trace entry's ``extra``.
    """
    r, c = array.rows, array.cols
    if op == "gemm":
        return gemm_cycles(*shape, r, c, array.kmax)
    if op == "range":
        if not (extra or {}).get("fed"):
            return 0
        return (
            command_cycles("RANGE_CLEAR", 0, r, c)
            + command_cycles("RANGE_FEED", lane_beats(shape[0], c), r, c)
            + command_cycles("RANGE_READ", 0, r, c)
        )
    if op == "rescale":
        return command_cycles("RESCALE", lane_beats(shape[0], c), r, c)
    if op == "update":
        cmd = "UPDATE_DIV" if (extra or {}).get("divide") else "UPDATE"
        return command_cycles(cmd, lane_beats(shape[0], c), r, c)
    if op == "divide":
        return command_cycles("DIVIDE", lane_beats(shape[0], c), r, c)
    raise ValueError(f"unknown datapath operation {op!r}")


@dataclass
class CycleReport:
    """Cycles (and MACs) per layer and phase, filled op by op; a Backend trace sink.

    With ``measured`` the entries' own measured cycles (``extra['cycles']``, from the RTL)
    are summed; otherwise the model's.
    """

    array: ArrayConfig
    measured: bool = False
    cycles: dict = field(default_factory=lambda: defaultdict(int))
    model_cycles: dict = field(default_factory=lambda: defaultdict(int))
    macs: dict = field(default_factory=lambda: defaultdict(int))
    mismatches: int = 0

    def append(self, entry) -> None:
        key = (entry.tag.layer, entry.tag.phase)
        model = op_cycles(entry.op, entry.shape, self.array, entry.extra)
        self.model_cycles[key] += model
        if self.measured:
            got = entry.extra.get("cycles", 0)
            self.cycles[key] += got
            self.mismatches += got != model
        else:
            self.cycles[key] += model
        if entry.op == "gemm":
            m, k, n = entry.shape
            self.macs[key] += m * k * n

    @property
    def total(self) -> int:
        return sum(self.cycles.values())

    def rows(self) -> list[tuple]:
        """``(layer, phase, cycles, model cycles, MACs, utilisation)`` in layer order."""
        out = []
        for key in sorted(self.cycles, key=_layer_order):
            cyc = self.cycles[key]
            util = self.macs[key] / (cyc * self.array.rows * self.array.cols) if cyc else 0.0
            out.append((*key, cyc, self.model_cycles[key], self.macs[key], util))
        return out

    def as_dict(self) -> dict:
        return {
            "array": str(self.array),
            "kmax": self.array.kmax,
            "source": "rtl" if self.measured else "cycle-model",
            "total_cycles": self.total,
            "model_mismatches": self.mismatches,
            "by_layer_phase": [
                {
                    "layer": lay,
                    "phase": ph,
                    "cycles": c,
                    "model_cycles": mc,
                    "macs": mac,
                    "utilisation": round(u, 4),
                }
                for lay, ph, c, mc, mac, u in self.rows()
            ],
        }


_PHASE_ORDER = {"forward": 0, "backward-error": 1, "weight-gradient": 2, "update": 3}


def _layer_order(key):
    layer, phase = key
    idx = layer.split(":", 1)[0]
    return (int(idx) if idx.isdigit() else 0, layer, _PHASE_ORDER.get(phase, 9))
