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

The tile must fit: ``tm * tk * a_bytes <= ifmap``, ``tk * tn * b_bytes <= filter`` and ``tm *
tn * c_bytes <= ofmap`` (the result buffer accumulating the tile). Candidates are the array's
multiples (``rows``, ``cols`` and ``kmax`` times powers of two, and the whole dimension) and,
where even one array tile does not fit, the halvings below them. The search evaluates every
candidate and order (a few thousand, vectorised) and keeps the fewest bytes, ties going to the
first in a fixed order (larger tiles, then the orders in :data:`ORDERS`): deterministic.

This is the DRAM-level mapping only: the Datapath's own schedule (the output-stationary tiles
of ``rows x cols`` with K streamed in chunks of ``kmax``) is the RTL's, and so are its cycles.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

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
    """The on-chip buffers (bytes) and the Datapath's array (rows, cols, kmax)."""

    ifmap: int
    filter: int
    ofmap: int
    rows: int
    cols: int
    kmax: int


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


#: the orders today's Datapath can follow: k innermost (a tile's sums never leave the PEs)
DATAPATH_ORDERS = ("mnk", "nmk")


@functools.lru_cache(maxsize=4096)
def search(g: GemmShape, h: Hierarchy, datapath: bool = False) -> Mapping:
    """The mapping of ``g`` on ``h`` that moves the fewest bytes off chip (module docstring).
    Sweeps ask for the same GEMMs on the same buffers often: the answers are cached.

    ``datapath``: only the mappings today's Datapath can execute. Its PEs keep one array
    tile's sums until the tile's last product, and it never reads partial sums back: so the
    k loop is innermost (:data:`DATAPATH_ORDERS`), and a buffer tile either holds the whole of
    K (``tk = K``) or is one array tile (``tm <= rows``, ``tn <= cols``), whose sums stay in
    the PEs while K streams in slices. Without it, partial sums may wait in the result buffer
    (an RTL change: the Datapath would have to add a drained tile to what the buffer holds)."""
    tm_c = _candidates(g.m, h.rows)
    tn_c = _candidates(g.n, h.cols)
    tk_c = _candidates(g.k, h.kmax)
    tm, tn, tk = (x.ravel() for x in np.meshgrid(tm_c, tn_c, tk_c, indexing="ij"))
    fits = (
        (tm * tk * g.a_bytes <= h.ifmap)
        & (tk * tn * g.b_bytes <= h.filter)
        & (tm * tn * g.c_bytes <= h.ofmap)
    )
    if datapath:
        fits &= (tk == g.k) | ((tm <= h.rows) & (tn <= h.cols))
    if not fits.any():  # not even a 1x1x1 tile: every element streams through
        tm, tn, tk = (np.array([1], dtype=np.int64),) * 3
    else:
        tm, tn, tk = tm[fits], tn[fits], tk[fits]
    # the whole result: written once and read back for the rescale unless it fits on chip
    held_out = g.c_tensor if (g.held and not result_fits(g, h)) else 0
    written_once = 0 if g.held else g.c_tensor
    best = None
    for order in DATAPATH_ORDERS if datapath else ORDERS:
        a, b, cw, cr = evaluate(g, order, tm, tn, tk)
        cw = cw + held_out + written_once
        cr = cr + held_out
        total = a + b + cw + cr
        i = int(np.argmin(total))  # the first minimum: larger tiles come first
        if best is None or total[i] < best.total:
            best = Mapping(
                order, int(tm[i]), int(tn[i]), int(tk[i]), int(a[i]), int(b[i]), int(cw[i]),
                int(cr[i]),
            )  # fmt: skip
    return best
