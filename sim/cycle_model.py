"""The cycle model: the Datapath's schedule applied to the operations of a training step.

Given the array (rows, cols, kmax) and a datapath operation (a GEMM's M, K, N; the element
count of a rescale or update), it returns the cycles the RTL takes, without simulating. It
knows the driver's programs (:func:`gemm_tiles` for a GEMM, which the driver itself executes;
:func:`op_program` for the others) and the dispatch rules of :mod:`nitihw.rtl.schedule`
(:func:`~nitihw.rtl.schedule.program_cycles`); :func:`gemm_cycles` is their closed form for a
GEMM. Tests check the model against the cycles the RTL measured, operation by operation.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from nitihw.golden.limits import LimitError, check
from nitihw.rtl.schedule import Command, default_result_rows, program_cycles, range_latency


@dataclass(frozen=True)
class ArrayConfig:
    """The datapath the model describes."""

    rows: int = 8
    cols: int = 8
    kmax: int = 256
    result_rows: int | None = None  # the result buffer's rows; None: the default

    def __post_init__(self):
        for key in ("rows", "cols", "kmax"):
            check(key, getattr(self, key))

    @property
    def buffer_rows(self) -> int:
        """Rows (of ``cols`` accumulators) of the result buffer."""
        return default_result_rows(self.cols) if self.result_rows is None else self.result_rows

    @classmethod
    def parse(cls, text: str, kmax: int = 256, name: str = "--array") -> ArrayConfig:
        """``ROWSxCOLS`` (each within :data:`~nitihw.golden.limits.LIMITS`), e.g. ``8x8``."""
        r, sep, c = str(text).strip().lower().partition("x")
        if not sep or not r.isdigit() or not c.isdigit():
            raise LimitError(f"bad {name} {text!r}: expected ROWSxCOLS, e.g. 8x8")
        rows = check("rows", int(r), f"{name} rows")
        cols = check("cols", int(c), f"{name} columns")
        return cls(rows, cols, check("kmax", kmax, "--kmax"))

    @staticmethod
    def arg(text: str) -> str:
        """The argparse ``type`` of ``--array``: checks ``ROWSxCOLS`` and keeps the text."""
        import argparse

        try:
            ArrayConfig.parse(text)
        except LimitError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}"


def gemm_tiles(m: int, k: int, n: int, rows: int, cols: int, kmax: int, keep: bool = False):
    """The driver's commands for ``(m, k) @ (k, n)``, as :class:`Command` objects.

    Yields ``(command, where)``: ``where`` is ``(i0, j0, k0)``, the tile's first row, column
    and K index. For each column tile, for each row tile, per K-chunk (:func:`k_chunks`): a load
    into the next bank (the A and B banks alternate, ping-pong), then ``COMPUTE`` of that
    chunk (accumulating after the first; the last chunk drains the tile's real rows). The load
    is ``LOAD_AB`` (A column and B row in one din beat) for a column tile's first row tile and
    for every chunk when K has several; otherwise ``LOAD_A``: the B tile stays in its bank
    across the row tiles. The next tile's load runs while this tile computes. ``keep``: the
    drains also write the result buffer (the caller checks it fits: :func:`drained_rows`).
    """
    if k < 1:
        raise ValueError(f"a GEMM needs K >= 1, got {k}")
    chunks = k_chunks(k, kmax)
    starts = list(itertools.accumulate(chunks[:-1], initial=0))
    bank_a = bank_b = 1
    for j0 in range(0, n, cols):
        for i0 in range(0, m, rows):
            real_rows = min(rows, m - i0)
            for c, (k0, kc) in enumerate(zip(starts, chunks, strict=True)):
                with_b = len(chunks) > 1 or i0 == 0
                bank_a ^= 1
                bank_b ^= with_b
                where = (i0, j0, k0)
                yield Command("LOAD_AB" if with_b else "LOAD_A", kc, bank_a, bank_b), where
                last = c == len(chunks) - 1
                yield (
                    Command(
                        "COMPUTE",
                        kc,
                        bank_a,
                        bank_b,
                        accumulate=int(c > 0),
                        drain=int(last),
                        drain_rows=real_rows if last else 0,
                        keep=int(keep and last),
                    ),
                    where,
                )


def gemm_tile_arrays(m: int, k: int, n: int, rows: int, cols: int, kmax: int):
    """:func:`gemm_tiles`' loads and drains as arrays, in the same order, without walking the
    tiles in Python (the native driver builds a GEMM's din beats from them).

    Returns ``(loads, drains)``: ``loads`` int64 ``(n_loads, 5)``, one row per load: ``i0, j0,
    k0, count, with_b`` (1: ``LOAD_AB``, 0: ``LOAD_A``); ``drains`` int64 ``(n_tiles, 3)``,
    one row per draining ``COMPUTE``: ``i0, j0, drain_rows``.
    """
    if k < 1:
        raise ValueError(f"a GEMM needs K >= 1, got {k}")
    chunks = np.array(k_chunks(k, kmax), np.int64)
    starts = np.cumsum(chunks) - chunks
    n_i, n_j, n_c = -(-m // rows), -(-n // cols), len(chunks)
    # column tiles outermost, then row tiles, then K chunks
    jj = np.repeat(np.arange(n_j, dtype=np.int64), n_i * n_c)
    ii = np.tile(np.repeat(np.arange(n_i, dtype=np.int64), n_c), n_j)
    cc = np.tile(np.arange(n_c, dtype=np.int64), n_i * n_j)
    i0 = ii * rows
    with_b = (n_c > 1) | (i0 == 0)
    loads = np.stack([i0, jj * cols, starts[cc], chunks[cc], with_b.astype(np.int64)], axis=1)
    ti = np.tile(np.arange(n_i, dtype=np.int64), n_j) * rows
    tj = np.repeat(np.arange(n_j, dtype=np.int64), n_i) * cols
    drains = np.stack([ti, tj, np.minimum(rows, m - ti)], axis=1)
    return loads.reshape(-1, 5), drains.reshape(-1, 3)


def k_chunks(k: int, kmax: int) -> list[int]:
    """K cut into ``ceil(k / kmax)`` chunks as equal as can be (the longer ones first): the
    next chunk's load then always fits beside the current chunk's compute."""
    nch = -(-k // kmax)
    base, extra = divmod(k, nch)
    return [base + 1] * extra + [base] * (nch - extra)


def drained_rows(m: int, n: int, cols: int) -> int:
    """Rows a GEMM's result takes in the result buffer (one per drained tile row)."""
    return m * -(-n // cols)


def gemm_program(
    m: int, k: int, n: int, rows: int, cols: int, kmax: int, keep: bool = False
) -> list[Command]:
    """A GEMM as one tensor: ``RANGE_CLEAR``, the tiles, ``RANGE_READ``."""
    tiles = [c for c, _ in gemm_tiles(m, k, n, rows, cols, kmax, keep)] if m and n else []
    return [Command("RANGE_CLEAR"), *tiles, Command("RANGE_READ")]


def gemm_cycles(m: int, k: int, n: int, rows: int, cols: int, kmax: int) -> int:
    """Closed form of ``program_cycles(gemm_program(...))`` (tests check they agree).

    With ``T`` tiles, K cut into chunks ``k_0 .. k_L`` (:func:`k_chunks`): the first COMPUTE
    starts once the first load is in (cycle ``k_0 + 3``); inside a tile chunk ``c + 1`` starts
    ``k_{c+1} + 2`` after chunk ``c`` (its load, dispatched the cycle after chunk ``c``, takes
    ``k_{c+1}`` beats, and ``k_c <= k_{c+1} + 1``); the next tile starts
    ``max(k_L + rows + cols, k_0 + 2)`` after the last chunk (the wavefront crosses the
    array and the tile is captured; or the next load is in); after the last capture, the
    drain of its ``r`` real rows, the range unit's latency and the read.
    """
    if m == 0 or n == 0:
        return program_cycles(gemm_program(0, k, 0, rows, cols, kmax), rows, cols)
    if k < 1:
        raise ValueError(f"a GEMM needs K >= 1, got {k}")
    chunks = k_chunks(k, kmax)
    nch, k0, kl = len(chunks), chunks[0], chunks[-1]
    tiles = -(-m // rows) * -(-n // cols)
    # chunk c + 1 (at most one shorter than chunk c) starts k_{c+1} + 2 after chunk c
    inner = (k - k0) + 2 * (nch - 1)
    period = inner + max(kl + rows + cols, k0 + 2)
    last_capture = k0 + 3 + (tiles - 1) * period + inner + kl + rows + cols
    last_rows = m - (-(-m // rows) - 1) * rows
    return last_capture + last_rows + range_latency(cols) + 2


def lane_beats(elements: int, cols: int) -> int:
    return -(-elements // cols)


def op_program(op: str, shape: tuple, array: ArrayConfig, extra: dict | None = None):
    """The driver's commands for one traced operation other than a GEMM, or None for one the
    datapath does not run (a range the range unit watched drain)."""
    extra = extra or {}
    beats = lane_beats(shape[0], array.cols) if shape else 0
    if op == "range":
        if not extra.get("fed"):
            return None
        feed = [Command("RANGE_FEED", beats)] if beats else []
        return [Command("RANGE_CLEAR"), *feed, Command("RANGE_READ")]
    kept = extra.get("kept")
    if op in ("rescale", "divide") and kept:
        held = drained_rows(*kept, array.cols)
        if held <= array.buffer_rows:  # the GEMM's result is still on chip: one row a beat
            return [Command(op.upper(), held, from_buffer=1)]
    if op == "rescale":
        return [Command("RESCALE", beats)]
    if op == "update":
        return [Command("UPDATE_DIV" if extra.get("divide") else "UPDATE", beats)]
    if op == "divide":
        return [Command("DIVIDE", beats)]
    raise ValueError(f"unknown datapath operation {op!r}")


def op_cycles(op: str, shape: tuple, array: ArrayConfig, extra: dict | None = None) -> int:
    """Cycles of one traced datapath operation (see :class:`nitihw.golden.TraceEntry`).

    ``gemm`` (M, K, N): the tiles plus the range clear/read of its tensor; ``range``
    (elements,): 0 when the range unit watched the tensor drain, and with ``extra['fed']``
    ``RANGE_CLEAR`` + ``RANGE_FEED`` (beats of ``cols``) + ``RANGE_READ``; ``rescale`` /
    ``update`` (elements,): beats of ``cols`` lanes plus dispatch, latency and the last beat;
    ``divide`` and an ``update`` with ``extra['divide']`` (NITRO-D) run on the divide lanes. A
    rescale or divide of the last GEMM's result (``extra['kept'] = (M, N)``) reads it from the
    result buffer when it fitted there (:func:`drained_rows` ``<= buffer_rows``), one tile row
    a beat; otherwise its int32 values come back through din (the spill).
    ``extra`` is the trace entry's ``extra``.
    """
    r, c = array.rows, array.cols
    if op == "gemm":
        return gemm_cycles(*shape, r, c, array.kmax)
    program = op_program(op, shape, array, extra)
    return 0 if program is None else program_cycles(program, r, c)


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
