"""Exact integer GEMM and accumulator semantics (numerics.md §4 and §6).

A float matrix product of integers is exact while every partial sum is an integer the float
format holds exactly: ``K * max|a| * max|b| < 2^24`` for float32, ``< 2^53`` for float64. Behind
that bound check, BLAS is a fast exact integer GEMM (float32 over K-chunks short enough to stay
exact, summed in float64); past it, int64 (then Python ints) take over. Faster still, where the
CPU has AVX-512 VNNI: int8 operands go to the compiled int8 GEMM (golden/int8_gemm.py), exact
in int32 for ``K <= 131071``.
All paths give the same integers; the tests force each path and compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nitihw.golden import int8_gemm
from nitihw.golden.parallel import MIN_MACS, Workers
from nitihw.golden.rounding import max_abs

GEMM_METHODS = ("auto", "int8", "float32", "float64", "int64", "object")
#: the paths :func:`choose_method` picks by the bound alone (``int8`` also needs int8 operands)
BOUND_METHODS = GEMM_METHODS[2:]


def choose_method(bound: int, product_bound: int | None = None) -> str:
    """The cheapest exact path for a product whose partial sums stay below ``bound``.

    ``product_bound`` is ``max|a| * max|b|``: when a single product fits float32 exactly, the
    K dimension can be split into float32-exact chunks whose results are summed in float64.
    """
    if product_bound is None:
        product_bound = bound
    if bound < 2**53 and product_bound < 2**24:
        return "float32"
    if bound < 2**53:
        return "float64"
    if bound < 2**63:
        return "int64"
    return "object"


def _blas_gemm(a, b, dtype, product_bound: int, out_type, workers) -> tuple:
    """``(a @ b, min, max)`` by BLAS in ``dtype`` (float32: K-chunks that each stay below 2^24,
    summed in float64). A single exact chunk is spread over ``workers`` in row blocks; the
    K-chunked products (weight gradients: few rows, long K) run on the calling thread, where
    splitting them was measured slower. Each block's min and max are taken while it is in
    cache (the range unit watches the result drain)."""
    m, k = a.shape
    n = b.shape[1]
    chunk = k
    if dtype == np.float32:
        chunk = max(1, (2**24 - 1) // max(product_bound, 1))
    big = m * k * n >= MIN_MACS
    if chunk >= k:
        b_f = b.astype(dtype, copy=False)
        out = np.empty((m, n), out_type)

        def rows(lo, hi):
            part = out[lo:hi]
            part[...] = a[lo:hi].astype(dtype, copy=False) @ b_f
            return (int(part.min()), int(part.max())) if part.size else None

        spans = workers.spans(m, max(1, MIN_MACS // max(k * n, 1))) if big else [(0, m)]
        ranges = [r for r in workers.run(rows, spans) if r is not None]
    else:
        total = None
        for k0 in range(0, k, chunk):
            part = a[:, k0 : k0 + chunk].astype(dtype, copy=False)
            part = part @ b[k0 : k0 + chunk].astype(dtype, copy=False)
            total = part.astype(np.float64) if total is None else total + part
        out = total.astype(out_type)
        ranges = [(int(out.min()), int(out.max()))] if out.size else []
    if not ranges:
        return out, 0, 0
    return out, min(r[0] for r in ranges), max(r[1] for r in ranges)


def _integers(x: np.ndarray) -> np.ndarray:
    """An operand as an integer array (the golden conv keeps its im2col rows in float32), so
    that the object path multiplies Python ints, not floats."""
    return x if x.dtype.kind in "iu" else x.astype(np.int64)


def exact_matmul_range(a, b, method: str = "auto", workers=None, magnitudes=(None, None)):
    """:func:`exact_matmul`, and the result's ``(min, max)`` found on the way (0, 0 if empty):
    ``(out, min, max)``. ``magnitudes`` may give ``max|a|`` and ``max|b|`` when the caller
    already knows them (``None``: search the operand)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"exact_matmul needs (M,K) @ (K,N), got {a.shape} @ {b.shape}")
    if method not in GEMM_METHODS:
        raise ValueError(f"unknown GEMM method {method!r}; expected one of {GEMM_METHODS}")
    for x in (a, b):
        if x.dtype.kind not in "iuf":
            raise TypeError(f"exact_matmul needs integer operands, got dtype {x.dtype}")
    if method == "int8" or (method == "auto" and a.size * b.shape[1] >= int8_gemm.MIN_INT8_MACS):
        if int8_gemm.applies(a, b):
            return int8_gemm.matmul_range(a, b, workers)
        if method == "int8":
            int8_gemm.matmul_range(a, b)  # raises, saying why not
    ma, mb = (max_abs(x) if m is None else m for x, m in zip((a, b), magnitudes, strict=True))
    product_bound = ma * mb
    bound = a.shape[1] * product_bound
    best = choose_method(bound, product_bound)
    if method == "auto":
        method = best
    elif BOUND_METHODS.index(method) < BOUND_METHODS.index(best):
        raise ValueError(f"GEMM bound {bound} is too large for the exact {method} path")
    out_type = np.int32 if bound < 2**31 else np.int64
    if method in ("float32", "float64"):
        dtype = np.float32 if method == "float32" else np.float64
        return _blas_gemm(a, b, dtype, product_bound, out_type, workers or Workers(1))
    if method == "int64":  # exact for float operands too: they hold integers
        out = a.astype(np.int64) @ b.astype(np.int64)
    else:
        out = _integers(a).astype(object) @ _integers(b).astype(object)
        if out.size and (max(out.flat) >= 2**63 or min(out.flat) < -(2**63)):
            raise OverflowError("exact GEMM result does not fit in 64 bits")
        out = out.astype(np.int64)
    if not out.size:
        return out, 0, 0
    return out, int(out.min()), int(out.max())


def exact_matmul(a: np.ndarray, b: np.ndarray, method: str = "auto", workers=None) -> np.ndarray:
    """``a @ b`` computed exactly over the integers.

    ``a`` is (M, K), ``b`` is (K, N), both integer arrays (or float arrays holding integers).
    ``method`` forces a path:

    - ``int8``: the compiled int8 GEMM (needs int8 operands, ``K <= 131071`` and AVX-512 VNNI;
      see :mod:`nitihw.golden.int8_gemm`);
    - ``float32``: float32 BLAS over K-chunks each below 2^24, chunks summed in float64
      (needs ``max|a| * max|b| < 2^24`` and ``K * max|a| * max|b| < 2^53``);
    - ``float64``: float64 BLAS (needs ``K * max|a| * max|b| < 2^53``);
    - ``int64``: NumPy's integer matmul (needs the bound below 2^63);
    - ``object``: Python integers, any size.

    ``auto`` picks the cheapest exact one (the int8 GEMM wherever it applies). Forcing a path
    whose bound does not hold raises ``ValueError`` rather than return a rounded result.
    Results outside int64 raise ``OverflowError``. The result is int32 when the bound
    guarantees it fits, else int64.
    ``workers`` (a :class:`~nitihw.golden.parallel.Workers`) spreads a large int8 or float
    GEMM over threads; the result is the same integers whatever their number.
    """
    return exact_matmul_range(a, b, method, workers)[0]


@dataclass(frozen=True)
class Accumulator:
    """The ``accumulator_bits``-bit two's-complement accumulator of numerics.md §4."""

    bits: int = 32

    def __post_init__(self):
        if not 2 <= self.bits <= 63:
            raise ValueError(f"accumulator_bits must be in 2..63, got {self.bits}")

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def overflows(self, exact: np.ndarray) -> int:
        """Number of elements whose exact sum lies outside the signed range."""
        if exact.size == 0:
            return 0
        if int(exact.min()) >= self.min and int(exact.max()) <= self.max:
            return 0
        return int(np.count_nonzero((exact < self.min) | (exact > self.max)))

    def wrap(self, exact: np.ndarray) -> np.ndarray:
        """The exact sum modulo 2^bits, sign-extended: what a plain hardware adder holds."""
        half = 1 << (self.bits - 1)
        # the array's own module (NumPy or CuPy) does the arithmetic
        exact = exact.astype("int64") if hasattr(exact, "astype") else np.asarray(exact, np.int64)
        return ((exact + half) & ((1 << self.bits) - 1)) - half
