"""The NumPy golden model: the integer contract of docs/numerics.md made executable.

Public names other code and tests use::

    bitwidth(x) -> int
    range_shift(x_or_bitwidth) -> int
    shift_round(x, shift, mode, rand=None) -> int8 array
    saturate(x) -> int8 array
    counter_hash(x) -> uint32 array
    cross_entropy_error(logits, exponent, labels, rounding) -> int8 array
    exact_matmul(a, b, method="auto") -> int64 array
    Backend, NumpyBackend
"""

from nitihw.golden.backend import (
    AccumulatorOverflowError,
    Backend,
    NumpyBackend,
    OpTag,
    TraceEntry,
)
from nitihw.golden.gemm import Accumulator, exact_matmul
from nitihw.golden.loss import cross_entropy_error
from nitihw.golden.randomness import counter_hash, random_bits, stream_key
from nitihw.golden.rounding import (
    ROUNDING_MODES,
    bitwidth,
    range_shift,
    saturate,
    shift_round,
)

__all__ = [
    "ROUNDING_MODES",
    "Accumulator",
    "AccumulatorOverflowError",
    "Backend",
    "NumpyBackend",
    "OpTag",
    "TraceEntry",
    "bitwidth",
    "counter_hash",
    "cross_entropy_error",
    "exact_matmul",
    "random_bits",
    "range_shift",
    "saturate",
    "shift_round",
    "stream_key",
]
