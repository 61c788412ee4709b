"""Compiled loops for the golden model's memory-bound steps (Numba), one pass where NumPy
makes many.

A NumPy expression walks memory once per operator: ``shift_round`` is about ten passes over
its int32 input, a col2im is 25 strided adds. These kernels do each in one pass, element by
element, with the GIL released (``nogil``), so :class:`~nitihw.golden.parallel.Workers` can
run them on several cores (the col2im runs in batch blocks):

- :func:`rescale_kernel`: :func:`nitihw.golden.rounding.shift_round` of int32 values;
- :func:`col2im_kernel`: the backward error of a convolution from the per-tap products;
- :func:`maxpool2_kernel`: the 2 x 2 max-pool of int8 and its first-maximum index, one pass
  (NumPy's passes over strided views took 0.4-0.6 ms for LeNet's first pool, this 0.07; a
  kernel for any window size, with the window position computed in the loop, was slower than
  NumPy, so other sizes keep the NumPy passes, as does the backward pass, which this layout
  did not make faster).

They are not the definition of anything: ``rounding.py`` and ``backend.py`` hold the rules in
NumPy, and ``tests/test_kernels.py`` checks every kernel against them element by element
(every rounding mode, every shift, extreme values). Without Numba (``available() is False``),
or with ``NITIHW_KERNELS=numpy``, the golden model runs the NumPy code instead: same bits.
Compiled code is cached next to this file (``__pycache__``), so only the first run on a
machine pays the compilation (about a second).
"""

from __future__ import annotations

import os

import numpy as np

#: codes of the rounding modes, in rounding.ROUNDING_MODES order
MODE_CODES = {"round": 0, "psto": 1, "trunc": 2, "sto": 3, "rne": 4}

_compiled = None


def available() -> bool:
    """Whether the compiled kernels are in use (Numba importable, not turned off)."""
    return _kernels() is not None


def _kernels():
    global _compiled
    if _compiled is None:
        _compiled = False
        if os.environ.get("NITIHW_KERNELS", "").lower() != "numpy":
            try:
                import numba  # noqa: F401
            except ImportError:
                pass
            else:
                _compiled = _build()
    return _compiled or None


def _build():
    from numba import njit

    jit = njit(cache=True, nogil=True, boundscheck=False)

    @jit
    def rescale_into(x, shift, mode, rand, out):
        # one loop per mode, so that each is a straight vectorisable loop
        s = np.int64(shift)
        half = np.int64(1) << (s - 1)
        mask = (np.int64(1) << s) - 1
        h = s // 2
        hmask = (np.int64(1) << h) - 1
        odd = s % 2
        n = x.size
        if mode == 0:  # round: half away from zero, q + (r >= half) == (m + half) >> s
            for i in range(n):
                v = np.int64(x[i])
                q = ((v if v >= 0 else -v) + half) >> s
                q = min(q, 127)
                out[i] = q if v >= 0 else -q
        elif mode == 1:  # psto
            for i in range(n):
                v = np.int64(x[i])
                m = v if v >= 0 else -v
                r = m & mask
                q = (m >> s) + (1 if (r >> h) > ((r & hmask) << odd) else 0)
                q = min(q, 127)
                out[i] = q if v >= 0 else -q
        elif mode == 2:  # trunc
            for i in range(n):
                v = np.int64(x[i])
                q = min((v if v >= 0 else -v) >> s, 127)
                out[i] = q if v >= 0 else -q
        elif mode == 3:  # sto
            for i in range(n):
                v = np.int64(x[i])
                m = v if v >= 0 else -v
                q = (m >> s) + (1 if (m & mask) > rand[i] else 0)
                q = min(q, 127)
                out[i] = q if v >= 0 else -q
        else:  # rne
            for i in range(n):
                v = np.int64(x[i])
                m = v if v >= 0 else -v
                r = m & mask
                q = m >> s
                q += 1 if r > half or (r == half and (q & 1) == 1) else 0
                q = min(q, 127)
                out[i] = q if v >= 0 else -q

    @jit
    def col2im_into(p, pad, out):
        # p: (B, Ho, Wo, k, k, C) products of each output position with each tap, exact
        # integers in float32; out: (B, H, W, C) = sum over taps landing on each input position
        b_n, ho, wo, k, _, c_n = p.shape
        h, w = out.shape[1], out.shape[2]
        lo = np.int64(0)
        hi = np.int64(0)
        first = True
        acc = np.zeros(c_n, np.float64)  # exact: every partial sum is an integer < 2^53
        for b in range(b_n):
            for y in range(h):
                for x in range(w):
                    acc[:] = 0
                    for kh in range(k):
                        oy = y + pad - kh
                        if oy < 0 or oy >= ho:
                            continue
                        for kw in range(k):
                            ox = x + pad - kw
                            if ox < 0 or ox >= wo:
                                continue
                            for c in range(c_n):
                                acc[c] += p[b, oy, ox, kh, kw, c]
                    for c in range(c_n):
                        v = np.int64(acc[c])
                        out[b, y, x, c] = v
                        if first:
                            lo = v
                            hi = v
                            first = False
                        elif v < lo:
                            lo = v
                        elif v > hi:
                            hi = v
        return lo, hi

    @jit
    def maxpool2_into(x, y, idx):
        # x: (B, H, W, C) int8; y, idx: (B, H // 2, W // 2, C). Each window's maximum and the
        # FIRST position holding it (row-major 0..3): a later one takes over only when greater
        b_n, h, w, c_n = x.shape
        for b in range(b_n):
            for oy in range(h // 2):
                for ox in range(w // 2):
                    for c in range(c_n):
                        m = x[b, 2 * oy, 2 * ox, c]
                        j = np.int8(0)
                        v = x[b, 2 * oy, 2 * ox + 1, c]
                        j = np.int8(1) if v > m else j
                        m = max(m, v)
                        v = x[b, 2 * oy + 1, 2 * ox, c]
                        j = np.int8(2) if v > m else j
                        m = max(m, v)
                        v = x[b, 2 * oy + 1, 2 * ox + 1, c]
                        j = np.int8(3) if v > m else j
                        m = max(m, v)
                        y[b, oy, ox, c] = m
                        idx[b, oy, ox, c] = j

    return {
        "rescale_into": rescale_into,
        "col2im_into": col2im_into,
        "maxpool2_into": maxpool2_into,
    }


def rescale_kernel(dtype, shift: int):
    """``fn(x, shift, MODE_CODES[mode], rand, out)`` that sets ``out[:] = shift_round(x, shift,
    mode, rand)`` for 1-D ``x`` of ``dtype`` (``rand``: int64, any one value unless ``sto``),
    or None where no kernel applies (then use ``shift_round``)."""
    ks = _kernels()
    if ks is None or np.dtype(dtype) != np.int32 or not 1 <= shift <= 31:
        return None
    return ks["rescale_into"]


def col2im_kernel():
    """``fn(p, pad, out) -> (min, max)``: ``out`` (B, H, W, C) from the per-tap products ``p``
    (B, Ho, Wo, k, k, C) of a convolution's backward error; or None."""
    ks = _kernels()
    return None if ks is None else ks["col2im_into"]


def maxpool2_kernel(x, k: int):
    """``fn(x, y, idx)`` that sets ``y`` and ``idx`` to the ``k = 2`` max-pool of NHWC int8
    ``x`` and each window's first maximum (:meth:`~nitihw.golden.backend.ArrayHostOps.maxpool`),
    or None where no kernel applies (another window size or type: use the NumPy passes)."""
    ks = _kernels()
    if ks is None or k != 2 or x.dtype != np.int8 or x.ndim != 4:
        return None
    return ks["maxpool2_into"]
