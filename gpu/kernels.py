"""The GPU kernels: the integer primitives of numerics.md as CuPy elementwise kernels.

Each kernel is the CUDA form of one golden primitive and is tested element by element against
it (tests/test_gpu.py): ``RESCALE`` is :func:`nitihw.golden.shift_round`, ``UPDATE`` and
``UPDATE_MASTER`` the update rule, ``COUNTER_HASH`` :func:`nitihw.golden.counter_hash`;
``TRANSPOSE8`` lays int8 GEMM operands out along K (the same bytes as a transposed copy).
Kernels are built on first use (CuPy compiles them with NVRTC), so importing this module
needs no GPU.
"""

from __future__ import annotations

import functools

#: mode codes shared with the RTL (nitihw.rtl.rescale.RoundingMode)
MODE_CODES = {"round": 0, "psto": 1, "trunc": 2, "sto": 3, "rne": 4}

# Sign-magnitude shift with rounding and saturation to +-127 (numerics.md §2). The magnitude
# is taken in 64 bits so |INT64_MIN| never appears for the int32/int64 accumulators we pass.
_RESCALE = r"""
    long long v = (long long)x;
    unsigned long long m = v < 0 ? (unsigned long long)(-v) : (unsigned long long)v;
    unsigned long long q, r, up = 0;
    if (s < 0) {                               // left shift (exact), then saturate
        int l = -s < 7 ? -s : 7;
        q = m > (127ULL >> l) ? 127ULL : (m << l);
        r = 0;
    } else if (s == 0) {
        q = m; r = 0;
    } else if (s >= 64) {
        q = 0; r = m;
    } else {
        q = m >> s;
        r = m & ((1ULL << s) - 1ULL);
    }
    if (s > 0) {
        unsigned long long half = (s >= 65) ? 0ULL : (1ULL << (s - 1));
        if (mode == 0) {                       // round: half away from zero
            up = r >= half;
        } else if (mode == 1) {                // psto: NITI pseudo-stochastic
            int h = s / 2;
            unsigned long long p = r >> h;
            unsigned long long rr = r & ((1ULL << h) - 1ULL);
            if (s & 1) rr <<= 1;
            up = p > rr;
        } else if (mode == 3) {                // sto: against the supplied uniform integers
            up = r > (unsigned long long)u;
        } else if (mode == 4) {                // rne: half to even
            up = (r > half) || (r == half && (q & 1ULL));
        }
    }
    unsigned long long mag = q + up;
    if (mag > 127ULL) mag = 127ULL;
    y = (signed char)(v < 0 ? -(long long)mag : (long long)mag);
"""

_UPDATE = r"""
    int d = (int)w - (int)g;
    y = (signed char)(d > limit ? limit : (d < -limit ? -limit : d));
"""

_UPDATE_MASTER = r"""
    int d = (int)w16 - (int)g;
    d = d > 32767 ? 32767 : (d < -32767 ? -32767 : d);
    w16_out = (short)d;
    unsigned int m = d < 0 ? (unsigned int)(-d) : (unsigned int)d;
    unsigned int q = m >> 8, r = m & 255u;
    unsigned int up = (r >> 4) > (r & 15u);   // psto at shift 8: h = 4, even shift
    unsigned int mag = q + up;
    if (mag > 127u) mag = 127u;
    w8 = (signed char)(d < 0 ? -(int)mag : (int)mag);
"""

# Byte transpose for the int8 GEMM's operands (cuBLAS's int8 kernels read both along K): the
# C-contiguous (rows, cols) int8 ``x`` as its (cols, rows) transpose, written 8 bytes per thread
# (one int64 ``y`` of the (cols, rows / 8) output), so that the writes are whole words in a row
# and the 8 reads of a thread come from 8 consecutive rows of one column, which neighbouring
# columns (the next output rows) read again from the L2 cache. rows % 8 == 0.
_TRANSPOSE8 = r"""
    long long r8 = rows >> 3;
    long long c = i / r8;
    long long r = (i - c * r8) << 3;
    unsigned long long v = 0;
    for (int j = 0; j < 8; ++j)
        v |= (unsigned long long)(unsigned char)x[(r + j) * cols + c] << (8 * j);
    y = (long long)v;
"""

_COUNTER_HASH = r"""
    unsigned int v = x;
    v ^= v >> 16; v *= 0x7feb352dU;
    v ^= v >> 15; v *= 0x846ca68bU;
    v ^= v >> 16;
    y = v;
"""


@functools.cache
def _cupy():
    import cupy

    return cupy


@functools.cache
def rescale_kernel():
    cp = _cupy()
    return cp.ElementwiseKernel(
        "T x, int32 s, int32 mode, int64 u", "int8 y", _RESCALE, "nitihw_rescale"
    )


@functools.cache
def update_kernel():
    cp = _cupy()
    return cp.ElementwiseKernel("int8 w, int8 g, int32 limit", "int8 y", _UPDATE, "nitihw_update")


@functools.cache
def update_master_kernel():
    cp = _cupy()
    return cp.ElementwiseKernel(
        "int16 w16, int8 g", "int16 w16_out, int8 w8", _UPDATE_MASTER, "nitihw_update_master"
    )


@functools.cache
def transpose8_kernel():
    """``y`` (int64, shape ``(cols, rows // 8)``, passed in) holds the bytes of ``x.T``."""
    cp = _cupy()
    return cp.ElementwiseKernel(
        "raw int8 x, int64 rows, int64 cols", "int64 y", _TRANSPOSE8, "nitihw_transpose8"
    )


def transpose_int8(x):
    """The C-contiguous transpose of the C-contiguous 2-D int8 ``x`` whose row count is a
    multiple of 8 (a pure data movement: the same bytes as ``ascontiguousarray(x.T)``)."""
    cp = _cupy()
    rows, cols = x.shape
    out = cp.empty((cols, rows // 8), cp.int64)
    transpose8_kernel()(x.reshape(-1), rows, cols, out)
    return out.view(cp.int8)


@functools.cache
def counter_hash_kernel():
    cp = _cupy()
    return cp.ElementwiseKernel("uint32 x", "uint32 y", _COUNTER_HASH, "nitihw_counter_hash")


@functools.cache
def max_abs_kernel():
    """max |x| over a whole tensor, in int64 (the range unit's reduction)."""
    cp = _cupy()
    return cp.ReductionKernel(
        "T x",
        "int64 y",
        "x < 0 ? -(long long)x : (long long)x",
        "max(a, b)",
        "y = a",
        "0",
        "nitihw_max_abs",
    )
