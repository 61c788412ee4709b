"""The searched mapping of a GEMM onto the memory hierarchy: DRAM -> the on-chip buffers
(``ifmap`` holds A tiles, ``filter`` B tiles, ``ofmap`` the int32 results) -> the Datapath.

A mapping is a buffer-level tile ``(tm, tn, tk)`` and the order of the three loops over the
tiles (outer to inner, e.g. ``"mnk"``). Its off-chip traffic follows the rule of Timeloop's and
ZigZag's analytic models for a two-level hierarchy: a tensor is read again whenever a loop it
does not depend on runs outside the innermost loop it does depend on (loops of one trip do not
count), so

- A (indexed by m and k) is read ``trips(n)`` times when the n loop is outside its innermost
  of m and k, once otherwise; B (k and n) likewise with m;
- the int32 results (m and n) are spilled and read back ``trips(k) - 1`` times when the k loop
  is outside their innermost of m and n (partial sums), and, because NITI's rescale needs the
  whole tensor's range first, written and read back once more unless the whole result fits the
  ``ofmap`` buffer (``held``; a result that is not held is written once).

A convolution's A is its im2col matrix, larger than the tensor behind it: its reads are scaled
by ``a_mem / (m * k * a_bytes)`` (the tiles' halos are not counted), as are B's.

The tile must fit: ``tm * tk * a_bytes <= ifmap``, ``tk * tn * b_bytes <= filter`` and, when
K is cut into slices, ``tm * tn * c_bytes <= ofmap`` (the result buffer accumulating the
tile's partial sums). Candidates are the array's
multiples (``rows``, ``cols`` and ``kmax`` times powers of two, and the whole dimension) and,
where even one array tile does not fit, the halvings below them. The search evaluates every
candidate and order (a few thousand, vectorised) and keeps the best for its objective
(:data:`OBJECTIVES`; by default the fewest bytes, then the fewest array cycles), ties going to
the first in a fixed order (larger tiles, then the orders in :data:`ORDERS`): deterministic.

The Datapath runs the mappings ``search(..., datapath=True)`` picks: its driver walks their
buffer tiles in their order (:func:`nitihw.sim.model.cycle_model.gemm_walk`), the array tiles of
``rows x cols`` inside each with K streamed in chunks of ``kmax``, and the cycle model prices
that walk.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from nitihw.rtl.schedule import chunk_timing

#: the loop orders, outer to inner
ORDERS = ("mnk", "nmk", "mkn", "kmn", "nkm", "knm")


@dataclass(frozen=True)
class GemmShape:
    """A GEMM ``C[m, n] = A[m, k] @ B[k, n]`` as the memory sees it: bytes per element of A, B
    and the results, the bytes of the tensors behind A and B (an im2col A is larger than its
    tensor), and whether the result is held for its range before the rescale (NITI)."""

    m: int
    k: int
    n: int
    a_bytes: int = 1
    b_bytes: int = 1
    c_bytes: int = 4
    a_mem: int | None = None
    b_mem: int | None = None
    held: bool = True
    #: the whole result fits the ``ofmap`` buffer (None: its bytes against the buffer's)
    c_fits: bool | None = None

    @property
    def a_tensor(self) -> int:
        return self.m * self.k * self.a_bytes if self.a_mem is None else self.a_mem

    @property
    def b_tensor(self) -> int:
        return self.k * self.n * self.b_bytes if self.b_mem is None else self.b_mem

    @property
    def c_tensor(self) -> int:
        return self.m * self.n * self.c_bytes


@dataclass(frozen=True)
class Hierarchy:
    """The on-chip buffers (bytes) and the Datapath's array (rows, cols, kmax); for the
    objectives (:data:`OBJECTIVES`) the off-chip bandwidth (bytes a cycle) and the energy of
    an off-chip byte and of a result-buffer byte (pJ)."""

    ifmap: int
    filter: int
    ofmap: int
    rows: int
    cols: int
    kmax: int
    bandwidth: float = 16.0
    dram_pj: float = 1.0
    ofmap_pj: float = 0.0


#: what a search minimises: ``traffic`` the off-chip bytes (then the array's cycles),
#: ``energy`` their energy plus the result buffer's for the partial sums (then the cycles),
#: ``time`` the array's cycles with the stalls of that traffic (then the bytes)
OBJECTIVES = ("traffic", "energy", "time")


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(
            f"mapping objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}"
        )
    return objective


def _slice_cycles(length, rows: int, cols: int, kmax: int):
    """The array's cycles for one array tile over a K slice of ``length`` (0: none), as the
    cycle model's closed form counts them between tile starts (chunks, then the capture or
    the next tile's first load)."""
    length = np.asarray(length)
    k0, kl, inner = chunk_timing(length, kmax)
    return np.where(length > 0, inner + np.maximum(kl + rows + cols, k0 + 2), 0)


def array_cycles(g: GemmShape, h: Hierarchy, tk) -> np.ndarray:
    """The array's cycles for ``g`` with K in slices of ``tk`` (the tiling's other choices
    move them by a few cycles at most): every array tile runs every slice, and each slice is
    one more capture and drain, mostly hidden under the next tile's loads."""
    tiles = _ceil(g.m, h.rows) * _ceil(g.n, h.cols)
    full, rest = g.k // tk, g.k % tk
    one = _slice_cycles(tk, h.rows, h.cols, h.kmax)
    return tiles * (full * one + _slice_cycles(rest, h.rows, h.cols, h.kmax))


@dataclass(frozen=True)
class Mapping:
    """A chosen mapping and its off-chip bytes by stream."""

    order: str
    tm: int
    tn: int
    tk: int
    a_reads: int
    b_reads: int
    c_writes: int
    c_reads: int

    @property
    def total(self) -> int:
        return self.a_reads + self.b_reads + self.c_writes + self.c_reads

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def _candidates(dim: int, base: int) -> np.ndarray:
    """Tile sizes along one dimension: ``base * 2^i`` up to ``dim``, ``dim`` itself, and the
    halvings of ``min(base, dim)`` down to 1 (for buffers that hold less than one array tile)."""
    base = max(1, min(base, dim))
    out = {dim}
    t = base
    while t < dim:
        out.add(t)
        t *= 2
    t = base
    while t > 1:
        t //= 2
        out.add(t)
    return np.array(sorted(out, reverse=True), dtype=np.int64)


def _ceil(a, b):
    return -(-a // b)


def evaluate(g: GemmShape, order: str, tm, tn, tk) -> tuple:
    """Off-chip bytes of ``order`` with tiles ``tm, tn, tk`` (scalars or NumPy arrays of one
    shape) that depend on the loops: A reads, B reads, and the partial sums spilled (written,
    then read back) when the k loop sits outside the results' loops. The whole result's own
    trip off chip (:func:`search`) does not depend on them."""
    trips = {"m": _ceil(g.m, tm), "n": _ceil(g.n, tn), "k": _ceil(g.k, tk)}
    pos = {loop: i for i, loop in enumerate(order)}

    def refetches(relevant: str, other: str):
        # times the tensor indexed by ``relevant`` is read: trips(other) when the ``other``
        # loop (with more than one trip) sits outside the innermost relevant loop that has
        # more than one trip; the tile never changes when no relevant loop has two trips
        inner = np.full(np.shape(trips[other]), -1)
        for loop in relevant:
            inner = np.where(trips[loop] > 1, np.maximum(inner, pos[loop]), inner)
        outside = (inner >= 0) & (pos[other] < inner) & (trips[other] > 1)
        return np.where(outside, trips[other], 1)

    spill = g.c_tensor * (refetches("mn", "k") - 1)
    return g.a_tensor * refetches("mk", "n"), g.b_tensor * refetches("kn", "m"), spill, spill


def result_fits(g: GemmShape, h: Hierarchy) -> bool:
    """The whole int32 result fits the ``ofmap`` buffer (and waits there for its range)."""
    return g.c_tensor <= h.ofmap if g.c_fits is None else g.c_fits


def _k_outside(order: str, trips: dict) -> np.ndarray:
    """Whether the k loop runs outside a loop of the result with more than one trip (the
    partial sums of several result tiles wait at once), elementwise over the candidates."""
    out = np.zeros(np.shape(trips["k"]), bool)
    for d in "mn":
        if order.index(d) > order.index("k"):
            out |= trips[d] > 1
    return out


@functools.lru_cache(maxsize=4096)
def search(
    g: GemmShape, h: Hierarchy, datapath: bool = False, objective: str = "traffic"
) -> Mapping:
    """The mapping of ``g`` on ``h`` that moves the fewest bytes off chip (module docstring),
    or is best for another ``objective`` (:data:`OBJECTIVES`). Sweeps ask for the same GEMMs
    on the same buffers often: the answers are cached.

    ``datapath``: only the mappings the Datapath executes (the driver follows them,
    :func:`nitihw.sim.model.cycle_model.gemm_walk`): ``tm`` a multiple of the array's rows or the
    whole M, ``tn`` of its columns or the whole N; a tile's partial sums (``tk < K``) wait in
    the result buffer, never off chip (it has no way back from the host), so they must fit
    it: one buffer tile's rows (``tm * ceil(tn / cols)``) when the k loop is inside the
    result's loops, the whole result's rows (:func:`~nitihw.sim.model.cycle_model.drained_rows`)
    when it is outside; the result tile need not fit when K is whole (its drains leave).

    When the whole result fits the ``ofmap`` buffer, partial sums wait there whatever the
    order: no mapping spills them."""
    check_objective(objective)
    tm_c = _candidates(g.m, h.rows)
    tn_c = _candidates(g.n, h.cols)
    tk_c = _candidates(g.k, h.kmax)
    tm, tn, tk = (x.ravel() for x in np.meshgrid(tm_c, tn_c, tk_c, indexing="ij"))
    operands = (tm * tk * g.a_bytes <= h.ifmap) & (tk * tn * g.b_bytes <= h.filter)
    whole_fits = result_fits(g, h)
    if datapath:
        buffer_rows = h.ofmap // (h.cols * g.c_bytes)
        grain = ((tm % h.rows == 0) | (tm == g.m)) & ((tn % h.cols == 0) | (tn == g.n))
        fits = operands & grain
    else:
        # a tile whose K is cut waits in the ofmap buffer; one with the whole of K leaves
        fits = operands & ((tk == g.k) | (tm * tn * g.c_bytes <= h.ofmap))
    # nothing fits (not even a 1x1x1 tile, or one array tile): every element streams past
    # the buffers; the Datapath then takes one array tile at a time, the whole of K each
    fallback = (min(h.rows, g.m), min(h.cols, g.n), g.k) if datapath else (1, 1, 1)
    if not fits.any():
        tm, tn, tk = (np.array([x], dtype=np.int64) for x in fallback)
    else:
        tm, tn, tk = tm[fits], tn[fits], tk[fits]
    trips = {"m": _ceil(g.m, tm), "n": _ceil(g.n, tn), "k": _ceil(g.k, tk)}
    cycles = array_cycles(g, h, tk)
    # the partial sums' trips through the result buffer: read and written once per extra slice
    partial = 2 * g.c_tensor * (trips["k"] - 1)
    best, best_key = None, None
    for order in ORDERS:
        a, b, cw, cr = _priced(g, h, order, tm, tn, tk)
        total = a + b + cw + cr
        ok = np.ones(total.shape, bool)
        if datapath:  # partial sums must fit the result buffer
            sliced = trips["k"] > 1
            outside = _k_outside(order, trips)
            tile_rows = tm * _ceil(tn, h.cols)
            ok = ~sliced | np.where(outside, whole_fits, tile_rows <= buffer_rows)
            if not ok.any():
                continue
        if objective == "traffic":
            keys = (total.astype(float), cycles)
        elif objective == "energy":
            keys = (total * h.dram_pj + partial * h.ofmap_pj, cycles)
        else:  # the stalls: what the bandwidth cannot bring in while the array computes
            keys = (np.maximum(cycles, np.ceil(total / h.bandwidth)).astype(float), total)
        keys = (np.where(ok, keys[0], np.inf), keys[1])
        # the first minimum (larger tiles come first), the first order at a tie
        i = int(np.lexsort(keys[::-1])[0])
        key = tuple(float(x[i]) for x in keys)
        if best is None or key < best_key:
            best, best_key = Mapping(
                order, int(tm[i]), int(tn[i]), int(tk[i]), int(a[i]), int(b[i]), int(cw[i]),
                int(cr[i]),
            ), key  # fmt: skip
    if best is None:  # no tile whose partial sums fit the result buffer
        best = priced_mapping(g, h, "nmk", *fallback)
    return best


def _priced(g: GemmShape, h: Hierarchy, order: str, tm, tn, tk) -> tuple:
    """:func:`evaluate`, with the whole result's own trip off chip (written once, and read
    back for the rescale unless it fits on chip) and no partial sums spilled when the whole
    result fits the ``ofmap`` buffer (they wait there)."""
    a, b, cw, cr = evaluate(g, order, tm, tn, tk)
    if result_fits(g, h):
        cw, cr = cw * 0, cr * 0
    held_out = g.c_tensor if (g.held and not result_fits(g, h)) else 0
    written_once = 0 if g.held else g.c_tensor
    return a, b, cw + held_out + written_once, cr + held_out


@functools.lru_cache(maxsize=4096)
def priced_mapping(g: GemmShape, h: Hierarchy, order: str, tm: int, tn: int, tk: int) -> Mapping:
    """The off-chip bytes of one mapping (a tiling chosen elsewhere: the one the Datapath
    runs, seen with the tensors' real bytes) by the same rule as :func:`search`."""
    a, b, cw, cr = (int(x) for x in _priced(g, h, order, tm, tn, tk))
    return Mapping(order, int(tm), int(tn), int(tk), a, b, cw, cr)
