"""Counter-based randomness (numerics.md §5), identical on NumPy, RTL and CuPy.

Everything random inside a training step (dropout masks, ``sto`` rounding) is a pure function
of ``(seed, step, stream_id, element index)``, so every backend draws the same bits with no
state to carry or to checkpoint.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)

#: Stream ids of the random consumers of a training step. Dropout layers use their layer index.
STREAM_LOSS = 0xC0FFEE


def counter_hash(x) -> np.ndarray:
    """``lowbias32`` of every element, all mod 2^32, returned as uint32.

    ``x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16``.
    Inputs are reduced mod 2^32 first. Example: ``counter_hash(0) == 0``,
    ``counter_hash(1) == 0x688990C0``.
    """
    x = (np.asarray(x).astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint32(16))
        x = x * _M1
        x = x ^ (x >> np.uint32(15))
        x = x * _M2
        x = x ^ (x >> np.uint32(16))
    return x


def _hash_int(v: int) -> int:
    return int(counter_hash(np.uint32(v & 0xFFFFFFFF)))


def stream_key(seed: int, step: int, stream_id: int) -> int:
    """``lowbias32(seed ^ lowbias32(step ^ lowbias32(stream_id)))`` as a Python int."""
    return _hash_int(seed ^ _hash_int(step ^ _hash_int(stream_id)))


def random_bits(seed: int, step: int, stream_id: int, shape, bits: int) -> np.ndarray:
    """Uniform integers in ``[0, 2^bits)`` for each element of ``shape`` (row-major index i):
    the top ``bits`` bits of ``lowbias32(key ^ i)``. Returned as int64."""
    if not 0 <= bits <= 32:
        raise ValueError(f"bits must be in 0..32, got {bits}")
    n = int(np.prod(shape, dtype=np.int64))
    key = np.uint32(stream_key(seed, step, stream_id))
    h = counter_hash(np.arange(n, dtype=np.uint32) ^ key)
    if bits == 0:
        return np.zeros(shape, dtype=np.int64)
    return (h >> np.uint32(32 - bits)).astype(np.int64).reshape(shape)
