"""The GPU kernels: the integer primitives of numerics.md as CuPy elementwise kernels.

Each kernel is the CUDA form of one golden primitive and is tested element by element against
it (tests/test_gpu.py): ``RESCALE`` is :func:`nitihw.golden.shift_round`, ``UPDATE`` and
``UPDATE_MASTER`` the update rule, ``COUNTER_HASH`` :func:`nitihw.golden.counter_hash`,
``LOSS`` :func:`nitihw.golden.cross_entropy_error`, ``bitwidth_kernel`` the range unit's
bit-width, ``RESCALE_RELU_POOL`` and ``POOL_RELU_BACKWARD`` a weight layer's epilogue (rescale,
ReLU, max-pool) and its backward, ``FIRST_ARGMAX`` and ``RELU_BACKWARD`` the host operations of
the same names; ``TRANSPOSE8``, ``TRANSPOSE8X8`` and ``PAD_INT8`` lay int8 GEMM operands out
along K, and
``STEP_INT`` does the arithmetic of the integers the device keeps (gpu/scalars.py). Kernels
are built on first use (CuPy compiles them with NVRTC), so importing this module needs no GPU.
"""

from __future__ import annotations

import functools

#: mode codes shared with the RTL (nitihw.rtl.rescale.RoundingMode)
MODE_CODES = {"round": 0, "psto": 1, "trunc": 2, "sto": 3, "rne": 4}

# Sign-magnitude shift with rounding and saturation to +-127 (numerics.md §2), as a device
# function the rescale and the loss kernels share. The magnitude is taken in 64 bits so
# |INT64_MIN| never appears for the int32/int64 accumulators we pass. A shift beyond 64 acts as
# 64 (everything is remainder); the backend's shifts are at most 64 - 7 (an int64's bit-width).
_SHIFT_ROUND = r"""
__device__ signed char nitihw_shift_round(long long v, long long s, int mode, long long u) {
    unsigned long long m = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    unsigned long long q, r, up = 0;
    if (s > 64) s = 64;
    if (s < 0) {                               // left shift (exact), then saturate
        int l = -s < 7 ? (int)-s : 7;
        q = m > (127ULL >> l) ? 127ULL : (m << l);
        r = 0;
    } else if (s == 0) {
        q = m; r = 0;
    } else if (s == 64) {
        q = 0; r = m;
    } else {
        q = m >> s;
        r = m & ((1ULL << s) - 1ULL);
    }
    if (s > 0) {
        unsigned long long half = 1ULL << (s - 1);
        if (mode == 0) {                       // round: half away from zero
            up = r >= half;
        } else if (mode == 1) {                // psto: NITI pseudo-stochastic
            int h = (int)(s / 2);
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
    return (signed char)(v < 0 ? -(long long)mag : (long long)mag);
}
"""

# A step integer the device keeps (gpu/scalars.py DeviceInt): max(base[0] + add, low).
_STEP_INT = r"""
__device__ long long nitihw_step_int(const long long *base, long long add, long long low) {
    long long v = base[0] + add;
    return v > low ? v : low;
}
"""

# The shift is read through a pointer (``s[0]``, an int64 the device computed: the range
# unit's bit-width minus the operand bits), so no shift is read back to the host.
_RESCALE = "y = nitihw_shift_round((long long)x, nitihw_step_int(&s[0], sa, sl), mode, u);"

# NITI's integer cross-entropy error (numerics.md §3, golden/loss.py), one thread per element
# of the (B, C) error, the logits' exponent read through a pointer. Each thread recomputes its
# row's sums (C is small); the label's thread also sums the row's Q. For e > -7 the base-2
# softmax (P <= 1023); for e <= -7, P_c = 2^(1+2k) + a_c 2^(1+k) + a_c^2 with k = -e, which
# outgrows 64 bits for large k: Q_c = floor(2^11 P_c / S) is found by bisection on q, the sign
# of 2^11 P_c - q S = c2 t^2 + c1 t + c0 (t = 2^k, |c2| < 2^27, |c1|, |c0| < 2^40 for C <=
# 2^14) taken exactly: in two 64-bit words for k <= 41, by its leading coefficient above.
_LOSS_PREAMBLE = r"""
struct nitihw_i128 { long long hi; unsigned long long lo; };

__device__ nitihw_i128 nitihw_shl(long long c, int s) {   // c * 2^s, 0 <= s <= 82
    nitihw_i128 r;
    if (s == 0) { r.hi = c < 0 ? -1 : 0; r.lo = (unsigned long long)c; }
    else if (s < 64) { r.hi = c >> (64 - s); r.lo = (unsigned long long)c << s; }
    else { r.hi = c * (1LL << (s - 64)); r.lo = 0; }
    return r;
}

__device__ nitihw_i128 nitihw_add(nitihw_i128 a, nitihw_i128 b) {
    nitihw_i128 r;
    r.lo = a.lo + b.lo;
    r.hi = a.hi + b.hi + (r.lo < a.lo ? 1 : 0);
    return r;
}

__device__ int nitihw_sign3(long long c2, long long c1, long long c0, int k) {
    // the sign of c2 2^(2k) + c1 2^k + c0
    if (k >= 42) {   // 2^k > |c1| + |c0|: the leading nonzero coefficient decides
        if (c2) return c2 > 0 ? 1 : -1;
        if (c1) return c1 > 0 ? 1 : -1;
        return c0 > 0 ? 1 : (c0 < 0 ? -1 : 0);
    }
    nitihw_i128 v = nitihw_add(nitihw_add(nitihw_shl(c2, 2 * k), nitihw_shl(c1, k)),
                               nitihw_shl(c0, 0));
    if (v.hi < 0) return -1;
    return (v.hi > 0 || v.lo) ? 1 : 0;
}

__device__ long long nitihw_q_small(long long a, int k, long long C, long long A, long long B) {
    // floor(2^11 P / S) for P = 2^(1+2k) + a 2^(1+k) + a^2, S = sum of P over the row
    long long lo = 0, hi = 2049;   // 2^11 P - 0 S > 0; Q <= 2^11
    while (hi - lo > 1) {
        long long q = (lo + hi) / 2;
        long long c2 = 4096 - 2 * q * C, c1 = 4096 * a - 2 * q * A, c0 = 2048 * a * a - q * B;
        if (nitihw_sign3(c2, c1, c0, k) >= 0) lo = q; else hi = q;
    }
    return lo;
}

__device__ long long nitihw_s2(long long a, long long e) {
    // trunc(a log2(e) 2^-15), then * 2^min(e, 16) or trunc / 2^-e: sign-magnitude
    long long m = ((a < 0 ? -a : a) * 47274LL) >> 15;
    if (e >= 0) m <<= (e < 16 ? e : 16); else m >>= -e;
    return a < 0 ? -m : m;
}
"""

_LOSS = r"""
    const long long C = classes;
    const long long b = i / C, j = i - b * C;
    const signed char *a = &logits[b * C];
    const long long ex = nitihw_step_int(&e[0], ea, el);
    const bool at_label = labels[b] == j;
    long long x = 0, rowq = 0;
    if (ex > -7) {
        long long smax = nitihw_s2(a[0], ex), total = 0;
        for (long long c = 1; c < C; ++c) {
            long long sc = nitihw_s2(a[c], ex);
            smax = sc > smax ? sc : smax;
        }
        for (long long c = 0; c < C; ++c) {
            long long d = nitihw_s2(a[c], ex) - (smax - 10);
            total += (1LL << (d > 0 ? d : 0)) - 1;
        }
        for (long long c = 0; c < C; ++c) {
            if (c != j && !at_label) continue;
            long long d = nitihw_s2(a[c], ex) - (smax - 10);
            long long qc = (((1LL << (d > 0 ? d : 0)) - 1) << 11) / total;
            if (c == j) x = qc;
            rowq += qc;
        }
    } else {
        const int k = (int)(ex < -1000 ? 1000 : -ex);
        long long A = 0, B = 0;
        for (long long c = 0; c < C; ++c) { A += a[c]; B += (long long)a[c] * a[c]; }
        for (long long c = 0; c < C; ++c) {
            if (c != j && !at_label) continue;
            long long qc = nitihw_q_small(a[c], k, C, A, B);
            if (c == j) x = qc;
            rowq += qc;
        }
    }
    if (at_label) x -= rowq;
    signed char r = nitihw_shift_round(x, shift, mode, u);
    y = r > limit ? (signed char)limit : (r < -limit ? (signed char)-limit : r);
"""

# Python's int.bit_length of a non-negative int64 (0 for 0 and below)
_BIT_LENGTH = r"""
__device__ long long nitihw_bit_length(long long v) {
    long long n = 0;
    while (v > 0) { v >>= 1; ++n; }
    return n;
}
"""

# The forward epilogue of a weight layer followed by ReLU (and a k x k max-pool), in one pass
# over its sums: each thread rescales, saturates to the operand bound and rectifies the k*k
# sums of one pooling window, and writes only the window's first maximum and where it was
# (golden's maxpool order: row-major in the window, a later element only when strictly
# greater). ``acc`` holds the (B*H*W, C) GEMM result in rows of ``ld >= C`` elements (the
# GEMM's own padded output: no copy), ``y`` and ``idx`` are (B, H/k, W/k, C).
_RESCALE_RELU_POOL = r"""
    const long long wo = w / k, ho = h / k;
    long long t = i;
    const long long ch = t % c; t /= c;
    const long long ox = t % wo; t /= wo;
    const long long oy = t % ho;
    const long long b = t / ho;
    const long long shift = nitihw_step_int(&s[0], sa, sl);
    signed char best = 0;
    int at = 0;
    for (int j = 0; j < k * k; ++j) {
        const long long row = (b * h + oy * k + j / k) * w + ox * k + j % k;
        signed char v = nitihw_shift_round((long long)acc[row * ld + ch], shift, mode, 0);
        v = v > limit ? (signed char)limit : v;
        v = v > 0 ? v : (signed char)0;
        if (j == 0 || v > best) { best = v; at = j; }
    }
    y = best;
    idx = (signed char)at;
"""

# The same without pooling: rescale, saturate to the operand bound, ReLU, one element each.
_RESCALE_RELU = r"""
    signed char v = nitihw_shift_round((long long)x, nitihw_step_int(&s[0], sa, sl), mode, 0);
    v = v > limit ? (signed char)limit : v;
    y = v > 0 ? v : (signed char)0;
"""

# Its backward, one thread per input element: the error of the element's window where the
# element is the window's first maximum (idx) and that maximum is positive (ReLU's mask).
_POOL_RELU_BACKWARD = r"""
    const long long wo = w / k, ho = h / k;
    long long t = i;
    const long long ch = t % c; t /= c;
    const long long xx = t % w; t /= w;
    const long long yy = t % h;
    const long long b = t / h;
    T r = 0;
    if (yy < ho * k && xx < wo * k) {
        const long long o = ((b * ho + yy / k) * wo + xx / k) * c + ch;
        if (idx[o] == (yy % k) * k + xx % k && y[o] > 0) r = err[o];
    }
    out = r;
"""

# A C-contiguous (sr, sc) int8 x copied into the top-left of a zero (rows, cols) y: one pass
# instead of a fill and a strided copy (the GEMM operands' padding to 16-byte rows).
_PAD_INT8 = r"""
    const long long r = i / cols, c = i - r * cols;
    y = (r < sr && c < sc) ? x[r * sc + c] : (signed char)0;
"""

# The first maximum of each row of the C-contiguous (rows, n) x: golden's first_argmax.
_FIRST_ARGMAX = r"""
    const T *row = &x[i * n];
    long long at = 0;
    for (long long j = 1; j < n; ++j)
        if (row[j] > row[at]) at = j;
    y = at;
"""

# ReLU's backward: the error where the pre-activation is positive (golden: err * (pre > 0)).
_RELU_BACKWARD = "y = pre > 0 ? err : (T)0;"

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

# The same transpose in 8 x 8 byte tiles where cols % 8 == 0 too: a thread reads 8 whole words
# (8 bytes of 8 consecutive rows), transposes the 64 bytes in registers and writes 8 whole
# words (8 bytes of 8 consecutive output rows); tiles run along the rows first, so that the
# words a warp writes to an output row are consecutive. Every access is a whole aligned word
# (TRANSPOSE8 reads one byte at a time).
_TRANSPOSE8X8 = r"""
    const long long r8 = rows >> 3, c8 = cols >> 3;
    const long long cb = i / r8, rb = i - cb * r8;
    const long long *in = (const long long *)&x[0];
    unsigned long long w[8];
    for (int j = 0; j < 8; ++j) w[j] = (unsigned long long)in[(rb * 8 + j) * c8 + cb];
    for (int k = 0; k < 8; ++k) {
        unsigned long long o = 0;
        for (int j = 0; j < 8; ++j) o |= ((w[j] >> (8 * k)) & 0xFFULL) << (8 * j);
        y[(cb * 8 + k) * r8 + rb] = (long long)o;
    }
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
    """``y = shift_round(x, max(s[0] + sa, sl), mode, u)``: ``s`` an int64 device array of
    one element (a :class:`~nitihw.gpu.scalars.DeviceInt`'s ``kernel_args``)."""
    cp = _cupy()
    return cp.ElementwiseKernel(
        "T x, raw int64 s, int64 sa, int64 sl, int32 mode, int64 u",
        "int8 y",
        _RESCALE,
        "nitihw_rescale",
        preamble=_STEP_INT + _SHIFT_ROUND,
    )


@functools.cache
def rescale_relu_pool_kernel():
    """Outputs ``y``, ``idx`` (int8, (B, H/k, W/k, C)) passed in; ``acc`` C-contiguous with
    rows of ``ld`` elements."""
    cp = _cupy()
    return cp.ElementwiseKernel(
        "raw T acc, raw int64 s, int64 sa, int64 sl, int32 mode, int32 limit, int64 h, "
        "int64 w, int64 c, int64 ld, int32 k",
        "int8 y, int8 idx",
        _RESCALE_RELU_POOL,
        "nitihw_rescale_relu_pool",
        preamble=_STEP_INT + _SHIFT_ROUND,
    )


@functools.cache
def rescale_relu_kernel():
    cp = _cupy()
    return cp.ElementwiseKernel(
        "T x, raw int64 s, int64 sa, int64 sl, int32 mode, int32 limit",
        "int8 y",
        _RESCALE_RELU,
        "nitihw_rescale_relu",
        preamble=_STEP_INT + _SHIFT_ROUND,
    )


@functools.cache
def pool_relu_backward_kernel():
    """Output ``out`` (T, (B, H, W, C)) passed in; ``err``, ``y``, ``idx`` C-contiguous."""
    cp = _cupy()
    return cp.ElementwiseKernel(
        "raw T err, raw int8 y, raw int8 idx, int64 h, int64 w, int64 c, int32 k",
        "T out",
        _POOL_RELU_BACKWARD,
        "nitihw_pool_relu_backward",
    )


# p * x + q * y + r of two step integers (then old -> new where asked): one element
_STEP_INT_COMBINE = r"""
    long long v = p * nitihw_step_int(&x[0], xa, xl) + q * nitihw_step_int(&y[0], ya, yl) + r;
    out = (rep && v == old) ? nw : v;
"""


@functools.cache
def step_int_kernel():
    """Arithmetic on :class:`~nitihw.gpu.scalars.DeviceInt` values; ``out`` (int64, (1,))
    passed in."""
    cp = _cupy()
    return cp.ElementwiseKernel(
        "raw int64 x, int64 xa, int64 xl, raw int64 y, int64 ya, int64 yl, int64 p, int64 q, "
        "int64 r, int32 rep, int64 old, int64 nw",
        "int64 out",
        _STEP_INT_COMBINE,
        "nitihw_step_int_combine",
        preamble=_STEP_INT,
    )


@functools.cache
def pad_int8_kernel():
    """Output ``y`` (int8, (rows, cols)) passed in; ``x`` C-contiguous (sr, sc)."""
    cp = _cupy()
    return cp.ElementwiseKernel(
        "raw int8 x, int64 sr, int64 sc, int64 cols", "int8 y", _PAD_INT8, "nitihw_pad_int8"
    )


@functools.cache
def first_argmax_kernel():
    """``y`` (int64, (rows,)) passed in: the first maximum's index in each row of ``x``."""
    cp = _cupy()
    return cp.ElementwiseKernel("raw T x, int64 n", "int64 y", _FIRST_ARGMAX, "nitihw_first_argmax")


@functools.cache
def relu_backward_kernel():
    cp = _cupy()
    return cp.ElementwiseKernel("T err, P pre", "T y", _RELU_BACKWARD, "nitihw_relu_backward")


#: the loss kernel's bound on the classes (its coefficients stay below 2^40)
LOSS_MAX_CLASSES = 1 << 14


@functools.cache
def loss_kernel():
    """NITI's integer cross-entropy error into the (B, C) int8 ``y`` passed in: logits (B, C)
    int8, labels (B,) int64, the exponent ``max(e[0] + ea, el)`` (``e`` an int64 device array
    of one element); then ``shift_round(., shift, mode, u)`` clamped to ``limit``."""
    cp = _cupy()
    return cp.ElementwiseKernel(
        "raw int8 logits, raw int64 labels, raw int64 e, int64 ea, int64 el, int64 classes, "
        "int32 shift, int32 mode, int32 limit, int64 u",
        "int8 y",
        _LOSS,
        "nitihw_loss_error",
        preamble=_STEP_INT + _SHIFT_ROUND + _LOSS_PREAMBLE,
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


@functools.cache
def transpose8x8_kernel():
    """``y`` (int64, ``(cols, rows // 8)``, raw, passed in) holds the bytes of ``x.T``; one
    thread per 8 x 8 tile (``size``); ``x`` 8-byte aligned, rows and cols multiples of 8."""
    cp = _cupy()
    return cp.ElementwiseKernel(
        "raw int8 x, int64 rows, int64 cols", "raw int64 y", _TRANSPOSE8X8, "nitihw_transpose8x8"
    )


def transpose_int8(x):
    """The C-contiguous transpose of the C-contiguous 2-D int8 ``x`` whose row count is a
    multiple of 8 (a pure data movement: the same bytes as ``ascontiguousarray(x.T)``): in
    8 x 8 tiles of whole words where the columns are a multiple of 8 too and ``x`` is 8-byte
    aligned, else 8 bytes written per thread."""
    cp = _cupy()
    rows, cols = x.shape
    out = cp.empty((cols, rows // 8), cp.int64)
    if cols % 8 == 0 and x.data.ptr % 8 == 0:
        tiles = (rows // 8) * (cols // 8)
        if tiles:
            transpose8x8_kernel()(x.reshape(-1), rows, cols, out, size=tiles)
    else:
        transpose8_kernel()(x.reshape(-1), rows, cols, out)
    return out.view(cp.int8)


@functools.cache
def counter_hash_kernel():
    cp = _cupy()
    return cp.ElementwiseKernel("uint32 x", "uint32 y", _COUNTER_HASH, "nitihw_counter_hash")


@functools.cache
def bitwidth_kernel():
    """The range unit's bit-width of a whole tensor, ``(max|x| - 1).bit_length()`` (0 for an
    all-zero tensor), in int64, on the device: one reduction, nothing read back."""
    cp = _cupy()
    return cp.ReductionKernel(
        "T x",
        "int64 y",
        "x < 0 ? -(long long)x : (long long)x",
        "max(a, b)",
        "y = nitihw_bit_length(a - 1)",
        "0",
        "nitihw_bitwidth",
        preamble=_BIT_LENGTH,
    )


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
