"""The cycle model: the Datapath's schedule applied to the operations of a training step.

Given the array (rows, cols, kmax) and a datapath operation (a GEMM's M, K, N; the element
count of a rescale or update), it returns the cycles the RTL takes, without simulating. It
knows the driver's programs (:func:`gemm_tiles` for a GEMM, which the driver itself executes;
:func:`op_program` for the others) and the dispatch rules of :mod:`nitihw.rtl.schedule`
(:func:`~nitihw.rtl.schedule.program_cycles`); :func:`gemm_cycles` is their closed form for a
GEMM. Tests check the model against the cycles the RTL measured, operation by operation.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from nitihw.golden.limits import LimitError, check
from nitihw.rtl.schedule import (
    Command,
    chunk_timing,
    default_result_rows,
    program_cycles,
    range_latency,
)


@dataclass(frozen=True)
class ArrayConfig:
    """The datapath the model describes, and the on-chip buffers its GEMMs are mapped onto.

    With ``memory`` (a :class:`nitihw.sim.model.mapping.Hierarchy`: the buffers that feed A and B,
    the ``ofmap`` one that is the result buffer, the bandwidth) every GEMM follows its
    searched mapping for ``objective`` (:func:`gemm_tiling`), in the driver and in the model
    alike; without it (None) every GEMM is one buffer tile. ``operand_bytes`` and ``b_bytes``
    (default: ``operand_bytes``) are the A and B elements' bytes in those buffers,
    ``acc_bytes`` an accumulator's.
    """

    rows: int = 8
    cols: int = 8
    kmax: int = 256
    result_rows: int | None = None  # the result buffer's rows; None: the default
    memory: object = None
    objective: str = "traffic"
    operand_bytes: int = 1
    b_bytes: int | None = None
    acc_bytes: int = 4

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

    @property
    def mapped(self) -> bool:
        """GEMMs follow searched mappings (the buffers are given)."""
        return self.memory is not None

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


#: ``nitihw train --tiling``: each GEMM's searched mapping on the buffers, or one buffer tile
TILINGS = ("searched", "whole")


class Tiling(NamedTuple):
    """The buffer-level tiling a GEMM's program follows (a mapping of
    :mod:`nitihw.sim.model.mapping`): tiles of ``tm x tn`` results over K slices of ``tk``,
    visited in ``order`` (its three loops outer to inner, e.g. ``"kmn"``). ``tm`` is a multiple
    of the array's rows or the whole M, ``tn`` of its columns or the whole N. The default,
    :func:`whole_tiling`, is one tile."""

    order: str
    tm: int
    tn: int
    tk: int


def whole_tiling(m: int, k: int, n: int) -> Tiling:
    """One buffer tile: column tiles, then row tiles, the whole of K each (the walk of every
    program before mappings)."""
    return Tiling("nmk", max(m, 1), max(n, 1), max(k, 1))


def check_tiling(t: Tiling, m: int, k: int, n: int, rows: int, cols: int) -> Tiling:
    """``t`` as a :class:`Tiling`, or a ValueError naming what the Datapath cannot follow."""
    t = Tiling(str(t.order), int(t.tm), int(t.tn), int(t.tk))
    if sorted(t.order) != ["k", "m", "n"]:
        raise ValueError(f"tiling order must be a permutation of 'mnk', got {t.order!r}")
    if t.tm < 1 or t.tn < 1 or t.tk < 1:
        raise ValueError(f"tiling tiles must be positive, got {t}")
    if t.tm % rows and t.tm < m:
        raise ValueError(f"tiling tm {t.tm} is neither a multiple of rows {rows} nor >= M {m}")
    if t.tn % cols and t.tn < n:
        raise ValueError(f"tiling tn {t.tn} is neither a multiple of cols {cols} nor >= N {n}")
    return t


class GemmWalk(NamedTuple):
    """A GEMM's array tiles in program order (one row each, int64 arrays): ``i0, j0`` (the
    tile's first row and column), ``k0, klen`` (its K slice), ``first`` / ``last`` (the slice
    is K's first / last), ``row`` (its first row in the result buffer), ``real`` (its real
    rows). ``rows_needed``: the result-buffer rows the partial sums (and a kept result) take.

    The result buffer's layout: the whole result's, column tile by column tile, every row
    (:func:`drained_rows` rows), when the result is kept or when the k loop runs outside a
    loop of the result (the partial sums of every tile wait at once); otherwise one buffer
    tile's (its partial sums are done before the next tile starts)."""

    i0: np.ndarray
    j0: np.ndarray
    k0: np.ndarray
    klen: np.ndarray
    first: np.ndarray
    last: np.ndarray
    row: np.ndarray
    real: np.ndarray
    rows_needed: int


class _BufferTiles(NamedTuple):
    """A tiling's buffer tiles in its order (int64 arrays, one entry each): their first
    indices ``mb, nb, kb``, real extents ``mr, nr, klen`` and array tiles ``ti`` (row) by
    ``tj`` (column); ``t`` the checked tiling."""

    t: Tiling
    mb: np.ndarray
    nb: np.ndarray
    kb: np.ndarray
    mr: np.ndarray
    nr: np.ndarray
    klen: np.ndarray
    ti: np.ndarray
    tj: np.ndarray


def _buffer_tiles(m: int, k: int, n: int, rows: int, cols: int, tiling) -> _BufferTiles:
    """The buffer tiles of ``tiling`` (None: :func:`whole_tiling`), in its order."""
    t = whole_tiling(m, k, n) if tiling is None else check_tiling(tiling, m, k, n, rows, cols)
    starts = {"m": np.arange(0, m, t.tm), "n": np.arange(0, n, t.tn), "k": np.arange(0, k, t.tk)}
    grids = np.meshgrid(*(starts[d] for d in t.order), indexing="ij")
    flat = {d: g.ravel().astype(np.int64) for d, g in zip(t.order, grids, strict=True)}
    mb, nb, kb = flat["m"], flat["n"], flat["k"]
    mr, nr = np.minimum(t.tm, m - mb), np.minimum(t.tn, n - nb)
    return _BufferTiles(
        t, mb, nb, kb, mr, nr, np.minimum(t.tk, k - kb), -(-mr // rows), -(-nr // cols)
    )


def gemm_walk(m, k, n, rows, cols, tiling=None, keep=False) -> GemmWalk:
    """The array tiles of ``(m, k) @ (k, n)`` in the order the driver runs them: the buffer
    tiles in the tiling's order; inside one, its column tiles, then its row tiles, each over
    the buffer tile's K slice."""
    if k < 1:
        raise ValueError(f"a GEMM needs K >= 1, got {k}")
    t, mb, nb, kb, mr, nr, _, ti, tj = _buffer_tiles(m, k, n, rows, cols, tiling)
    cnt = ti * tj
    b = np.repeat(np.arange(len(mb)), cnt)
    local = np.arange(int(cnt.sum()), dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    jj, ii = local // ti[b], local % ti[b]
    i0, j0, k0 = mb[b] + ii * rows, nb[b] + jj * cols, kb[b]
    klen = np.minimum(t.tk, k - k0)
    sliced = t.tk < k
    if keep or (sliced and not k_innermost(t, m, k, n)):  # the whole result's layout
        row = (j0 // cols) * m + i0  # result_layout's inverse
        needed = drained_rows(m, n, cols)
    else:  # the buffer tile's own rows
        row = jj * mr[b] + ii * rows
        needed = int((mr * -(-nr // cols)).max()) if sliced else 0
    return GemmWalk(
        i0, j0, k0, klen, k0 == 0, k0 + klen >= k, row, np.minimum(rows, m - i0), needed
    )


def k_innermost(t: Tiling, m: int, k: int, n: int) -> bool:
    """The tiling's k loop runs inside every loop of the result that has more than one trip:
    a buffer tile's partial sums are complete before the next tile's begin."""
    trips = {"m": -(-m // t.tm), "n": -(-n // t.tn), "k": -(-k // t.tk)}
    return all(t.order.index("k") > t.order.index(d) for d in "mn" if trips[d] > 1)


def _chunked(walk: GemmWalk, kmax: int):
    """Each tile's K slice cut into chunks (:func:`k_chunks`): ``(tile index, chunk start in
    K, chunk length, chunk index, chunks of its tile)`` per chunk, in order."""
    nch = -(-walk.klen // kmax)
    base, extra = walk.klen // nch, walk.klen % nch
    tile = np.repeat(np.arange(len(nch)), nch)
    c = np.arange(int(nch.sum()), dtype=np.int64) - np.repeat(np.cumsum(nch) - nch, nch)
    size = base[tile] + (c < extra[tile])
    start = walk.k0[tile] + c * base[tile] + np.minimum(c, extra[tile])
    return tile, start, size, c, nch[tile]


def gemm_tile_arrays(m: int, k: int, n: int, rows: int, cols: int, kmax: int, tiling=None):
    """:func:`gemm_tiles`' loads and drains as arrays, in the same order, without walking the
    tiles in Python (the native driver builds a GEMM's din beats from them).

    Returns ``(loads, drains)``: ``loads`` int64 ``(n_loads, 5)``, one row per load: ``i0, j0,
    k0, count, with_b`` (1: ``LOAD_AB``, 0: ``LOAD_A``); ``drains`` int64 ``(n_tiles, 4)``,
    one row per draining ``COMPUTE``: ``i0, j0, drain_rows, quiet`` (1: a partial sum, no
    dout beats).
    """
    walk = gemm_walk(m, k, n, rows, cols, tiling)
    loads = _loads(walk, *_chunked(walk, kmax)[:3])
    drains = np.stack([walk.i0, walk.j0, walk.real, (~walk.last).astype(np.int64)], axis=1)
    return loads, drains.reshape(-1, 4)


def _loads(walk: GemmWalk, tile, start, size) -> np.ndarray:
    """The loads of a walk's chunks (:func:`_chunked`): ``i0, j0, k0, count, with_b``; B
    stays in its bank when the load before brought the same B tile (one chunk per tile)."""
    j0 = walk.j0[tile]
    same = np.zeros(len(tile), bool)
    same[1:] = (j0[1:] == j0[:-1]) & (start[1:] == start[:-1]) & (size[1:] == size[:-1])
    loads = np.stack([walk.i0[tile], j0, start, size, (~same).astype(np.int64)], axis=1)
    return loads.reshape(-1, 5)


def gemm_tiles(
    m: int, k: int, n: int, rows: int, cols: int, kmax: int, keep: bool = False, tiling=None
):
    r"""The driver's commands for ``(m, k) @ (k, n)``, as :class:`Command` objects.

    Yields ``(command, where)``: ``where`` is ``(i0, j0, k0)``, the tile's first row, column
    and K index. The tiles are :func:`gemm_walk`'s; per tile, per K-chunk of its slice
    (:func:`k_chunks`): a load into the next bank (the A and B banks alternate, ping-pong),
    then ``COMPUTE`` of that chunk (accumulating after the first; the last chunk drains the
    tile's real rows). The load is ``LOAD_AB`` (A column and B row in one din beat) unless the
    load before it brought the same B tile (then ``LOAD_A``: B stays in its bank, as across a
    column tile's row tiles when K is one chunk). The next tile's load runs while this tile
    computes. ``keep``: the drains also write the result buffer, at the rows the whole result
    takes (the caller checks it fits: :func:`drained_rows`).

    With a ``tiling`` that cuts K into slices (``tk < K``) a tile's sums leave the PEs after
    each slice: a slice but the last drains ``quiet`` into the result buffer (``keep``), a
    slice but the first ``add``\ s what the buffer holds, so the last drain carries the whole
    sum (and the range unit sees only it).
    """
    walk = gemm_walk(m, k, n, rows, cols, tiling, keep)
    tile, start, size, c, nch = _chunked(walk, kmax)
    loads = _loads(walk, tile, start, size)
    bank_a = bank_b = 1
    for (i0, j0, k0, kc, with_b), t, ci, nc in zip(
        loads.tolist(), tile.tolist(), c.tolist(), nch.tolist(), strict=True
    ):
        bank_a ^= 1
        bank_b ^= with_b
        where = (i0, j0, k0)
        yield Command("LOAD_AB" if with_b else "LOAD_A", kc, bank_a, bank_b), where
        last = ci == nc - 1
        final = bool(walk.last[t])
        yield (
            Command(
                "COMPUTE",
                kc,
                bank_a,
                bank_b,
                accumulate=int(ci > 0),
                drain=int(last),
                drain_rows=int(walk.real[t]) if last else 0,
                keep=int(last and (keep or not final)),
                row=int(walk.row[t]) if last else 0,
                add=int(last and not walk.first[t]),
                quiet=int(last and not final),
            ),
            where,
        )


def k_chunks(k: int, kmax: int) -> list[int]:
    """K cut into ``ceil(k / kmax)`` chunks as equal as can be (the longer ones first): the
    next chunk's load then always fits beside the current chunk's compute."""
    nch = -(-k // kmax)
    base, extra = divmod(k, nch)
    return [base + 1] * extra + [base] * (nch - extra)


def result_layout(m: int, n: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each result-buffer row of a kept ``(m, n)`` result belongs: ``(rows, j0s)``, its
    row and its column tile's first column; column tile by column tile, every row (the
    layout :func:`gemm_walk` writes when the result is kept)."""
    tiles_n = -(-n // cols)
    return np.tile(np.arange(m), tiles_n), np.repeat(np.arange(tiles_n) * cols, m)


def drained_rows(m: int, n: int, cols: int) -> int:
    """Rows a GEMM's result takes in the result buffer (one per drained tile row)."""
    return m * -(-n // cols)


def gemm_program(
    m: int, k: int, n: int, rows: int, cols: int, kmax: int, keep: bool = False, tiling=None
) -> list[Command]:
    """A GEMM as one tensor: ``RANGE_CLEAR``, the tiles, ``RANGE_READ``."""
    tiles = [c for c, _ in gemm_tiles(m, k, n, rows, cols, kmax, keep, tiling)] if m and n else []
    return [Command("RANGE_CLEAR"), *tiles, Command("RANGE_READ")]


def gemm_cycles(m: int, k: int, n: int, rows: int, cols: int, kmax: int, tiling=None) -> int:
    """Closed form of ``program_cycles(gemm_program(...))`` (tests check they agree).

    A tile whose K slice is cut into chunks ``k_0 .. k_L`` (:func:`k_chunks`) takes ``inner =
    (K_slice - k_0) + 2 L`` cycles from its first chunk's start to its last's: chunk ``c + 1``
    starts ``k_{c+1} + 2`` after chunk ``c`` (its load, dispatched the cycle after chunk ``c``,
    takes ``k_{c+1}`` beats, and ``k_c <= k_{c+1} + 1``). The first tile starts once its first
    load is in (cycle ``k_0 + 3``); the next tile starts ``max(k_L + rows + cols, k'_0 + 2)``
    after a tile's last chunk (the wavefront crosses the array and the tile is captured; or the
    next tile's first load is in); after the last capture come the drain of its ``r`` real
    rows, the range unit's latency and the read. Every array tile of one buffer tile has the
    same slice, so the sum runs over the buffer tiles.
    """
    if m == 0 or n == 0:
        return program_cycles(gemm_program(0, k, 0, rows, cols, kmax), rows, cols)
    if k < 1:
        raise ValueError(f"a GEMM needs K >= 1, got {k}")
    _, _, _, _, mr, _, klen, ti, tj = _buffer_tiles(m, k, n, rows, cols, tiling)
    cnt = ti * tj
    k0, kl, inner = chunk_timing(klen, kmax)
    tail = kl + rows + cols  # last chunk's start to the capture
    within = int((cnt * inner + (cnt - 1) * np.maximum(tail, k0 + 2)).sum())
    between = int(np.maximum(tail[:-1], k0[1:] + 2).sum())
    last_capture = int(k0[0]) + 3 + within + between + int(tail[-1])
    last_rows = int(mr[-1] - (ti[-1] - 1) * rows)
    return last_capture + last_rows + range_latency(cols) + 2


@functools.lru_cache(maxsize=4096)
def _array_gemm_cycles(m: int, k: int, n: int, array: ArrayConfig) -> int:
    """:func:`gemm_cycles` with the tiling ``array`` gives the GEMM (a step repeats its
    shapes, a sweep its arrays: cached)."""
    return gemm_cycles(m, k, n, array.rows, array.cols, array.kmax, gemm_tiling(m, k, n, array))


@functools.lru_cache(maxsize=4096)
def gemm_tiling(m: int, k: int, n: int, array: ArrayConfig) -> Tiling | None:
    """The tiling the Datapath follows for ``(m, k) @ (k, n)`` on ``array``: the best mapping
    among those it executes (:func:`nitihw.sim.model.mapping.search` with ``datapath=True``,
    for the array's ``objective``), chosen from what the driver sees, the GEMM's matrices;
    None when the array has no buffers (one buffer tile) or the GEMM is empty. The estimate
    prices the same tiling with the real tensors' bytes."""
    if not array.mapped or not (m and n and k):
        return None
    from nitihw.sim.model.mapping import GemmShape, search

    g = GemmShape(
        m,
        k,
        n,
        array.operand_bytes,
        array.b_bytes or array.operand_bytes,
        array.acc_bytes,
        c_fits=drained_rows(m, n, array.cols) <= array.buffer_rows,
    )
    best = search(g, array.memory, True, array.objective)
    return Tiling(best.order, best.tm, best.tn, best.tk)


def gemm_operand_reads(
    m: int, k: int, n: int, rows: int, cols: int, kmax: int, tiling=None
) -> dict:
    """Elements the program of ``(m, k) @ (k, n)`` reads from the buffers that feed its
    banks, real ones only (the padding of edge tiles is not read): ``a`` (every array tile
    loads its A slice: ``M K`` per column tile), ``b`` (a B tile is loaded again unless the
    load before brought the same one, :func:`gemm_tile_arrays`) and ``partial`` (partial-sum
    elements the result buffer takes and gives back: written by every slice but the last,
    read by every slice but the first). Tests hold it to the loads of the walk."""
    return dict(_operand_reads(m, k, n, rows, cols, kmax, tiling))


@functools.lru_cache(maxsize=4096)
def _operand_reads(m: int, k: int, n: int, rows: int, cols: int, kmax: int, tiling) -> tuple:
    """:func:`gemm_operand_reads`' counts (a GEMM shape recurs: cached)."""
    if not (m and n):
        return (("a", 0), ("b", 0), ("partial", 0))
    t, _, nb, kb, _, nr, klen, ti, tj = _buffer_tiles(m, k, n, rows, cols, tiling)
    one_chunk = klen <= kmax
    # B: once per column tile of a buffer tile when its slice is one chunk (the row tiles
    # keep it in its bank), else for every array tile; and not at all for a buffer tile whose
    # first B tile is the one the tile before loaded last (one column tile, same slice)
    b = klen * nr * np.where(one_chunk, 1, ti)
    same = np.zeros(len(nb), bool)
    same[1:] = (nb[1:] == nb[:-1]) & (kb[1:] == kb[:-1]) & (tj[1:] == 1) & one_chunk[1:]
    b = np.where(same, b - klen * np.minimum(nr, cols), b)
    slices = -(-k // t.tk)
    return (("a", m * k * -(-n // cols)), ("b", int(b.sum())), ("partial", m * n * (slices - 1)))


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
        return _array_gemm_cycles(*shape, array)
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
            "tiling": _tiling_settings(self.array),
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


def _tiling_settings(array: ArrayConfig):
    """How the GEMMs were tiled: ``"whole"`` (one buffer tile) or the searched mappings'
    objective and buffers (bytes)."""
    if array.memory is None:
        return "whole"
    h = array.memory
    return {
        "objective": array.objective,
        "ifmap_bytes": h.ifmap,
        "filter_bytes": h.filter,
        "ofmap_bytes": h.ofmap,
    }


_PHASE_ORDER = {"forward": 0, "backward-error": 1, "weight-gradient": 2, "update": 3}


def _layer_order(key):
    layer, phase = key
    idx = layer.split(":", 1)[0]
    return (int(idx) if idx.isdigit() else 0, layer, _PHASE_ORDER.get(phase, 9))
