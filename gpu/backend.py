"""The CuPy backend: every operation of the training step on the GPU, same bits as golden.

- GEMM: int8 x int8 -> int32 on the tensor cores through cuBLAS ``gemmEx`` (``CUDA_R_8I``
  inputs, ``CUBLAS_COMPUTE_32I``), exact while ``K * 128 * 128 < 2^31`` (the int8 type's own
  bound, so no read-back); longer sums are cut into K-chunks that each stay exact and summed in
  int64. Operands wider than int8 (DFP16's int16) take exact float64 GEMMs in K-chunks below
  2^53 instead. The overflow count against ``accumulator_bits`` is a reduction on the device.
- Range, rescale, update: the kernels of :mod:`nitihw.gpu.kernels` (only the bit-width, one
  scalar per GEMM, comes back to the host).
- Host operations (im2col, ReLU, pooling, dropout masks, the loss) are the golden code's,
  written once against the array module: here it is CuPy, and the data stays on the device.
"""

from __future__ import annotations

import weakref

import numpy as np

from nitihw.golden import loss as golden_loss
from nitihw.golden.backend import HOST, ArrayHostOps, Backend
from nitihw.golden.errors import DatapathLimitError, ToolError
from nitihw.golden.randomness import stream_key
from nitihw.golden.rounding import ROUNDING_MODES, value_limit
from nitihw.gpu import kernels
from nitihw.gpu.scalars import INT64_MIN, DeviceInt

CUDA_R_8I, CUDA_R_32I = 3, 10
CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
CUBLAS_COMPUTE_32I = 72
CUBLAS_GEMM_DEFAULT = -1

#: a GEMM path is exact while every partial sum stays below this bound
EXACT_BELOW = {"int8": 2**31, "float32": 2**24, "float64": 2**53}
INT8_MAGNITUDE = 128  # |-128|: the largest magnitude an int8 operand can hold


def gpu_available() -> tuple[bool, str]:
    """``(True, "")`` when a CUDA GPU can be used, else ``(False, why)``.

    Counting devices is not enough: a machine with a GPU but without CUDA's headers or NVRTC
    (which CuPy needs to build kernels) or without cuBLAS would fail every step. So the first
    call per CuPy module also builds and runs one of our kernels and one int8 cuBLAS GEMM
    (:func:`smoke_check`), and remembers the answer."""
    try:
        import cupy
    except ImportError:
        return False, "CuPy is not installed (pip install 'nitihw[gpu]')"
    try:
        if not cupy.cuda.is_available():
            return False, "CuPy found no CUDA device (no GPU or no driver)"
        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # the CUDA runtime explains what is missing
        return False, f"CUDA is not usable: {exc}"
    if cupy not in _SMOKE:
        _SMOKE[cupy] = smoke_check()
    why = _SMOKE[cupy]
    return not why, why


#: the smoke check's answer per CuPy module ("" when it passed)
_SMOKE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def smoke_check() -> str:
    """Build (NVRTC) and run the rescale kernel and one int8 cuBLAS GEMM on a few values;
    ``""`` when both give golden's integers, else what went wrong."""
    import cupy as cp

    from nitihw.golden.rounding import shift_round

    x = np.array([0, 1, -1, 5, -6, 1000, -1001, 2**31 - 1, -(2**31)], np.int32)
    a = np.arange(-8, 8, dtype=np.int8).reshape(4, 4)
    try:
        got = cp.asnumpy(
            kernels.rescale_kernel()(
                cp.asarray(x),
                cp.full((1,), 2, cp.int64),
                np.int64(0),
                np.int64(0),
                np.int32(0),
                cp.zeros((), cp.int64),
            )
        )
        if not np.array_equal(got, shift_round(x, 2, "round")):
            return f"the rescale kernel gave {got.tolist()}, not golden's (kernel build broken?)"
        c = cp.asnumpy(_cublas_int8_gemm(cp.asarray(a), cp.asarray(a.T.copy()), 4, 4, 4))
        if not np.array_equal(c, a.astype(np.int32) @ a.astype(np.int32)):
            return "cuBLAS's int8 GEMM gave wrong integers on a 4x4 check"
    except Exception as exc:  # NVRTC, missing headers, cuBLAS: each says what failed
        return f"CUDA kernels or cuBLAS do not work here: {type(exc).__name__}: {exc}"
    return ""


def _pad_to(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


#: int8 operand rows are padded to this many bytes (the alignment int8 tensor-core loads want)
ROW_ALIGN = 16


def _cublas_int8_gemm(a_rows, bt_rows, m: int, n: int, k: int):
    """``C = A B`` as int32 ``(m, n)`` from ``a_rows`` (``A``, C-contiguous ``(m, k)`` int8)
    and ``bt_rows`` (``B.T``, C-contiguous ``(n, k)`` int8): cuBLAS ``gemmEx``, int32
    accumulation. Row-major ``C = A B`` is column-major ``C^T = B^T A^T``: cuBLAS's first
    operand, column-major ``k x n`` read transposed, is ``bt_rows``; its second, column-major
    ``k x m``, is ``a_rows``."""
    import cupy as cp
    from cupy_backends.cuda.libs import cublas

    c = cp.empty((m, n), cp.int32)
    one, zero = np.array(1, np.int32), np.array(0, np.int32)
    cublas.gemmEx(
        cp.cuda.device.get_cublas_handle(),
        CUBLAS_OP_T,
        CUBLAS_OP_N,
        n,
        m,
        k,
        one.ctypes.data,
        bt_rows.data.ptr,
        CUDA_R_8I,
        k,
        a_rows.data.ptr,
        CUDA_R_8I,
        k,
        zero.ctypes.data,
        c.data.ptr,
        CUDA_R_32I,
        n,
        CUBLAS_COMPUTE_32I,
        CUBLAS_GEMM_DEFAULT,
    )
    return c


def shift_round_on_device(cp, acc, shift, mode: str, rand, const):
    """The rescale kernel: ``shift_round`` of the device array ``acc`` (numerics.md §1).
    ``shift`` is an int or a :class:`~nitihw.gpu.scalars.DeviceInt` (read by the kernel
    through its pointer); ``const(v)`` gives an int's device copy."""
    if not isinstance(shift, DeviceInt) and not -62 <= int(shift) <= 62:
        raise ValueError(f"shift must be an integer in -62..62, got {shift!r}")
    code, u = rounding_args(cp, mode, rand, const)
    return kernels.rescale_kernel()(acc, *step_int_args(shift, const), code, u)


def rounding_args(cp, mode: str, rand, const) -> tuple:
    """``(code, u)`` as the kernels that round take them: the mode's code, and ``rand`` (the
    ``sto`` integers, which that mode needs) as int64 on the device, or a 0 there."""
    if mode not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; expected one of {ROUNDING_MODES}")
    if mode == "sto" and rand is None:
        raise ValueError("mode 'sto' needs rand: uniform integers in [0, 2**shift)")
    u = cp.asarray(rand, cp.int64) if rand is not None else const(0).reshape(())
    return np.int32(kernels.MODE_CODES[mode]), u


def step_int_args(x, const) -> tuple:
    """A step integer (an int or a :class:`~nitihw.gpu.scalars.DeviceInt`) as the kernels
    read it: ``(base, add, low)``; an int's base is ``const(x)``, made once."""
    if isinstance(x, DeviceInt):
        return x.kernel_args()
    return const(int(x)), np.int64(0), np.int64(INT64_MIN)


def _padded_rows(cp, x):
    """``(rows, ld)``: a C-contiguous 2-D array and its row length whose first
    ``x.shape[1]`` columns are the 2-D ``x``: ``x`` itself, the padded GEMM output ``x`` is the
    left part of (no copy), or else a contiguous copy."""
    if x.flags.c_contiguous:
        return x, x.shape[1]
    base = x.base
    if (
        base is not None and base.ndim == 2 and base.flags.c_contiguous
        and base.shape[0] == x.shape[0] and base.dtype == x.dtype
        and x.strides == base.strides and x.data.ptr == base.data.ptr
    ):  # fmt: skip
        return base, base.shape[1]
    return cp.ascontiguousarray(x), x.shape[1]


class CupyHostOps(ArrayHostOps):
    """The GPU backend's host operations, on the device: golden's array code on CuPy arrays
    (im2col moving whole words, ReLU, pooling), the counter-hash random integers and the
    integer loss as kernels. Nothing here is a datapath operation."""

    def __init__(self):
        import cupy

        self.xp = cupy
        self._consts: dict[int, object] = {}

    def const(self, value: int):
        """``value`` as an int64 device array of one element, made once (on the device: no
        copy from the host)."""
        out = self._consts.get(value)
        if out is None:
            out = self._consts[value] = self.xp.full((1,), value, self.xp.int64)
        return out

    # ---- data movement ---------------------------------------------------------------------
    def from_host(self, x):
        return self.xp.asarray(x)

    def to_host(self, x):
        return self.xp.asnumpy(x)

    def im2col(self, x, k: int, pad: int):
        """Golden's im2col, moving whole words: the channels of a pixel are contiguous, so the
        NHWC ``x`` is viewed as 8-, 4- or 2-byte elements (as many channels each) where its
        channel bytes divide evenly, and the rows come out as the same bytes."""
        cp = self.xp
        nbytes = x.shape[3] * x.dtype.itemsize
        if x.flags.c_contiguous:
            for wide in (cp.int64, cp.int32, cp.int16):
                size = cp.dtype(wide).itemsize
                if size > x.dtype.itemsize and nbytes % size == 0:
                    return super().im2col(x.view(wide), k, pad).view(x.dtype)
        return super().im2col(x, k, pad)

    def relu_backward(self, err, pre):
        """``err`` where ``pre > 0``, else 0: one kernel."""
        return kernels.relu_backward_kernel()(err, pre)

    def argmax(self, logits):
        """:meth:`ArrayHostOps.first_argmax` of each row in one kernel."""
        if logits.ndim != 2:
            return super().argmax(logits)
        cp = self.xp
        out = cp.empty((logits.shape[0],), cp.int64)
        rows = cp.ascontiguousarray(logits)
        kernels.first_argmax_kernel()(rows, np.int64(logits.shape[1]), out)
        return out

    def pool_relu_backward(self, err, y, idx, in_shape, k: int):
        """:meth:`ArrayHostOps.pool_relu_backward` in one kernel (ReLU alone: one mask)."""
        if k == 1:
            return self.relu_backward(err, y)
        cp = self.xp
        out = cp.empty(tuple(in_shape), err.dtype)
        _b, h, w, c = (int(v) for v in in_shape)
        kernels.pool_relu_backward_kernel()(
            cp.ascontiguousarray(err),
            cp.ascontiguousarray(y),
            cp.ascontiguousarray(idx),
            np.int64(h),
            np.int64(w),
            np.int64(c),
            np.int32(k),
            out,
        )
        return out

    def random_bits(self, seed: int, step: int, stream_id: int, shape, bits: int):
        cp = self.xp
        n = int(np.prod(shape, dtype=np.int64))
        key = np.uint32(stream_key(seed, step, stream_id))
        h = kernels.counter_hash_kernel()(cp.arange(n, dtype=cp.uint32) ^ key)
        if bits == 0:
            return cp.zeros(shape, cp.int64)
        return (h >> np.uint32(32 - bits)).astype(cp.int64).reshape(shape)

    def keep_mask(self, seed: int, step: int, stream_id: int, n: int):
        return self.random_bits(seed, step, stream_id, (n,), 1).astype(self.xp.int8)

    def cross_entropy_error(
        self, logits, exponent, labels, rounding_mode: str, rand=None, bits: int = 8
    ):
        """The integer loss's error in one kernel (``kernels.loss_kernel``): the logits'
        ``exponent`` (an int or a :class:`~nitihw.gpu.scalars.DeviceInt`) read on the device,
        its branches taken there, every exponent exact (golden's Python-integer range too)."""
        cp = self.xp
        if logits.ndim != 2:
            raise ValueError(f"logits must be (batch, classes), got shape {logits.shape}")
        b, c = logits.shape
        if c > kernels.LOSS_MAX_CLASSES:
            raise ValueError(
                f"{c} classes: the GPU loss kernel takes at most {kernels.LOSS_MAX_CLASSES}"
            )
        code, u = rounding_args(cp, rounding_mode, rand, self.const)
        out = cp.empty((b, c), cp.int8)
        kernels.loss_kernel()(
            cp.ascontiguousarray(logits, cp.int8).reshape(-1),
            labels.astype(cp.int64, copy=False),
            *step_int_args(exponent, self.const),
            np.int64(c),
            np.int32(golden_loss.error_shift(bits)),
            code,
            np.int32(value_limit(bits)),
            u,
            out,
        )
        return out


class CupyBackend(Backend):
    """The GPU backend. ``gemm="int8"`` uses cuBLAS int8 tensor-core GEMMs; ``"float32"`` an
    exact float32 GEMM over K-chunks (the golden trick, for GPUs without int8 tensor cores)."""

    name = "gpu"
    place = "device"
    fuses_epilogue = True  # rescale, ReLU and max-pool in one kernel

    def __init__(self, accumulator_bits: int = 32, overflow: str = "error", gemm: str = "int8"):
        ok, why = gpu_available()
        if not ok:
            raise ToolError(f"--backend gpu: {why}")
        if gemm not in ("int8", "float32"):
            raise ValueError(f"gemm must be 'int8' or 'float32', got {gemm!r}")
        super().__init__(accumulator_bits, overflow, host=CupyHostOps())
        self.gemm_path = gemm

    # ---- datapath --------------------------------------------------------------------------
    def _on_device(self, x):
        """The ledger's word for the operation in progress: it ran on the device when its
        result (or, for the range unit, its input) ``x`` is a device array; returns ``x``."""
        self._ran(self.place if isinstance(x, self.xp.ndarray) else HOST)
        return x

    def _max_abs(self, x) -> int:
        self._on_device(x)
        return int(kernels.max_abs_kernel()(x)) if x.size else 0

    def _gemm(self, a, b):
        cp = self.xp
        a = cp.asarray(a)
        b = cp.asarray(b)
        m, k = a.shape
        n = b.shape[1]
        # int8 operands are bounded by their type (|x| <= 128): no read-back, no sync. Wider
        # ones (DFP16's int16) are measured, and take the int8 path only if they fit it.
        int8_a, int8_b = a.dtype == cp.int8, b.dtype == cp.int8
        max_a = INT8_MAGNITUDE if int8_a else self._max_abs(a)
        max_b = INT8_MAGNITUDE if int8_b else self._max_abs(b)
        bound = max_a * max_b
        if bound == 0:
            acc = cp.zeros((m, n), cp.int32)
            return self._on_device(acc), 0
        fits_int8 = (int8_a or max_a <= 127) and (int8_b or max_b <= 127)
        path = self.gemm_path if fits_int8 else "float64"  # int8-sized: bound <= 2^14
        if bound >= EXACT_BELOW[path]:
            raise DatapathLimitError(
                f"GEMM operands up to {max_a} and {max_b}: one product does not fit the GPU "
                "backend's exact float64 GEMM (2^53)"
            )
        chunk = max(1, (EXACT_BELOW[path] - 1) // bound)
        if path == "int8" and chunk >= ROW_ALIGN:  # whole 16-byte rows: no padded copy
            chunk -= chunk % ROW_ALIGN
        if chunk >= k:
            acc = self._gemm_exact(a, b, path)
        else:
            acc = cp.zeros((m, n), cp.int64)
            for k0 in range(0, k, chunk):
                part = self._gemm_exact(a[:, k0 : k0 + chunk], b[k0 : k0 + chunk], path)
                acc += part.astype(cp.int64)
        lo, hi = self.accumulator.min, self.accumulator.max
        # the count stays on the device (a 0-d array): the step reads every GEMM's at its end
        over = (
            ((acc < lo) | (acc > hi)).sum(dtype=cp.int64)
            if acc.dtype == cp.int64 or self.accumulator.bits < 32
            else 0
        )
        return self._on_device(acc), over

    def _gemm_exact(self, a, b, path: str = "int8"):
        """One GEMM whose every partial sum is exact on ``path`` (see ``EXACT_BELOW``)."""
        cp = self.xp
        if path == "float64":
            return (a.astype(cp.float64) @ b.astype(cp.float64)).astype(cp.int64)
        if path == "float32":
            return (a.astype(cp.float32) @ b.astype(cp.float32)).astype(cp.int32)
        m, k = a.shape
        n = b.shape[1]
        # int8 tensor cores take both operands contiguous along K (cuBLAS's "TN" layout). Rows
        # are padded to 16 bytes (K to a multiple of 16), the alignment Hopper's int8 kernels
        # load at, and C's rows to 4 int32s. Copy (and zero-pad) only what is not already so:
        # the forward GEMM's weight operand is W.T, whose transpose is W itself.
        k16, n4 = _pad_to(k, ROW_ALIGN), _pad_to(n, 4)
        a_rows = self._int8_rows(a, m, k16)
        bt_rows = self._int8_rows(b.T, n4, k16)
        return _cublas_int8_gemm(a_rows, bt_rows, m, n4, k16)[:, :n]

    def _int8_rows(self, x, rows: int, cols: int):
        """``x`` as a C-contiguous int8 ``(rows, cols)`` array, zero-padded; copied only when
        its shape, type or layout is not already that."""
        cp = self.xp
        if x.dtype == cp.int8 and x.T.flags.c_contiguous and x.shape[1] % 8 == 0:
            x = kernels.transpose_int8(x.T)  # a weight-gradient operand: the fast transpose
        if x.shape == (rows, cols):
            return cp.ascontiguousarray(x, cp.int8)  # no copy when already so
        if x.dtype == cp.int8 and x.flags.c_contiguous:  # zero-padded in one pass
            out = cp.empty((rows, cols), cp.int8)
            kernels.pad_int8_kernel()(x, np.int64(x.shape[0]), np.int64(x.shape[1]),
                                      np.int64(cols), out)  # fmt: skip
            return out
        out = cp.zeros((rows, cols), cp.int8)
        out[: x.shape[0], : x.shape[1]] = x
        return out

    def _bitwidth(self, acc, fed):
        """The bit-width as a :class:`~nitihw.gpu.scalars.DeviceInt`: computed and kept on
        the device (the shift and the exponent that follow from it too)."""
        self._on_device(acc)
        if not acc.size:
            return 0
        return DeviceInt(kernels.bitwidth_kernel()(acc).reshape(1))

    def _max_magnitude(self, x, fed) -> int:
        return self._max_abs(x)

    def _trunc_div(self, x, d):
        """``golden.rounding.trunc_div`` on the device, as int64."""
        x = x.astype(self.xp.int64)
        q = self.xp.abs(x) // d
        return self.xp.where(x < 0, -q, q)

    def _divide(self, acc, divisor):
        out = self.xp.clip(self._trunc_div(acc, divisor), -127, 127).astype(self.xp.int8)
        return self._on_device(out)

    def _update_div(self, w, g, lr_div, decay_div):
        dw = self._trunc_div(g, lr_div)
        if decay_div:
            dw = dw + self._trunc_div(w, decay_div)
        # int64 -> int32 keeps the low 32 bits: the two's-complement wrap of the golden model
        return self._on_device((w.astype(self.xp.int64) - dw).astype(self.xp.int32))

    def _rescale(self, acc, shift, mode, rand):
        out = shift_round_on_device(self.xp, acc, shift, mode, rand, self.host.const)
        return self._on_device(out)

    def _rescale_relu_pool(self, acc, shift, mode, shape, k, limit):
        """Rescale, ReLU and (``k > 1``) max-pool in one kernel: the int32/int64 sums read
        once, only the pooled int8 output and its indices written."""
        cp = self.xp
        if mode not in ROUNDING_MODES or mode == "sto":  # sto needs random integers
            raise ValueError(f"an epilogue rounds with round, psto, trunc or rne, not {mode!r}")
        s = step_int_args(shift, self.host.const)
        code, lim = np.int32(kernels.MODE_CODES[mode]), np.int32(limit)
        if k == 1:
            y = kernels.rescale_relu_kernel()(acc, *s, code, lim).reshape(shape)
            return self._on_device(y), None
        b, h, w, c = (int(v) for v in shape)
        y = cp.empty((b, h // k, w // k, c), cp.int8)
        idx = cp.empty(y.shape, cp.int8)
        rows, ld = _padded_rows(cp, acc)
        kernels.rescale_relu_pool_kernel()(
            rows, *s, code, lim, np.int64(h), np.int64(w), np.int64(c), np.int64(ld),
            np.int32(k), y, idx,
        )  # fmt: skip
        return self._on_device(y), idx

    def _update(self, w, g, limit):
        g = g.astype(self.xp.int8, copy=False)
        return self._on_device(kernels.update_kernel()(w, g, np.int32(limit)))

    def _update_master(self, w16, g):
        w16, w8 = kernels.update_master_kernel()(w16, g.astype(self.xp.int8, copy=False))
        self._on_device(w8)
        return w16, w8
