"""Exact integer GEMM and accumulator semantics (numerics.md §4 and §6).

A float matrix product of integers is exact while every partial sum is an integer the float
format holds exactly: ``K * max|a| * max|b| < 2^24`` for float32, ``< 2^53`` for float64. Behind
that bound check, BLAS is a fast exact integer GEMM (float32 over K-chunks short enough to stay
exact, summed in float64); past it, int64 (then Python ints) take over.
All paths give the same integers; the tests force each path and compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nitihw.golden.rounding import max_abs

GEMM_METHODS = ("auto", "float32", "float64", "int64", "object")


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


def _float32_chunked(a: np.ndarray, b: np.ndarray, product_bound: int, out_type) -> np.ndarray:
    """Sum of float32 GEMMs over K-chunks short enough that each is exact (< 2^24)."""
    k = a.shape[1]
    chunk = max(1, (2**24 - 1) // max(product_bound, 1))
    if chunk >= k:
        return (a.astype(np.float32) @ b.astype(np.float32)).astype(out_type)
    out = None
    for k0 in range(0, k, chunk):
        part = a[:, k0 : k0 + chunk].astype(np.float32) @ b[k0 : k0 + chunk].astype(np.float32)
        out = part.astype(np.float64) if out is None else out + part
    return out.astype(out_type)


def exact_matmul(a: np.ndarray, b: np.ndarray, method: str = "auto") -> np.ndarray:
    """``a @ b`` computed exactly over the integers.

    ``a`` is (M, K), ``b`` is (K, N), both integer arrays. ``method`` forces a path:

    - ``float32``: float32 BLAS over K-chunks each below 2^24, chunks summed in float64
      (needs ``max|a| * max|b| < 2^24`` and ``K * max|a| * max|b| < 2^53``);
    - ``float64``: one float64 BLAS call (needs ``K * max|a| * max|b| < 2^53``);
    - ``int64``: NumPy's integer matmul (needs the bound below 2^63);
    - ``object``: Python integers, any size.

    ``auto`` picks the cheapest exact one. Forcing a path whose bound does not hold raises
    ``ValueError`` rather than return a rounded result. Results outside int64 raise
    ``OverflowError``. The result is int32 when the bound guarantees it fits, else int64.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"exact_matmul needs (M,K) @ (K,N), got {a.shape} @ {b.shape}")
    if method not in GEMM_METHODS:
        raise ValueError(f"unknown GEMM method {method!r}; expected one of {GEMM_METHODS}")
    product_bound = max_abs(a) * max_abs(b)
    bound = a.shape[1] * product_bound
    best = choose_method(bound, product_bound)
    if method == "auto":
        method = best
    elif GEMM_METHODS.index(method) < GEMM_METHODS.index(best):
        raise ValueError(f"GEMM bound {bound} is too large for the exact {method} path")
    out_type = np.int32 if bound < 2**31 else np.int64
    if method == "float32":
        return _float32_chunked(a, b, product_bound, out_type)
    if method == "float64":
        return (a.astype(np.float64) @ b.astype(np.float64)).astype(out_type)
    if method == "int64":
        return a.astype(np.int64) @ b.astype(np.int64)
    out = a.astype(object) @ b.astype(object)
    if out.size and (max(out.flat) >= 2**63 or min(out.flat) < -(2**63)):
        raise OverflowError("exact GEMM result does not fit in 64 bits")
    return out.astype(np.int64)


@dataclass(frozen=True)
class Accumulator:
    """The ``acc_bits``-bit two's-complement accumulator of numerics.md §4."""

    bits: int = 32

    def __post_init__(self):
        if not 2 <= self.bits <= 63:
            raise ValueError(f"acc_bits must be in 2..63, got {self.bits}")

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
