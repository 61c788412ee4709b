"""Compiled loops for the golden model's memory-bound steps (Numba), one pass where NumPy
makes many.

A NumPy expression walks memory once per operator: ``shift_round`` is about ten passes over
its int32 input, a col2im is 25 strided adds. These kernels do each in one pass, element by
element, with the GIL released (``nogil``), so :class:`~nitihw.golden.parallel.Workers` can
run them on several cores (the col2im runs in batch blocks):

- :func:`rescale_kernel`: :func:`nitihw.golden.rounding.shift_round` of int32 values;
- :func:`col2im_kernel`: the backward error of a convolution from the per-tap products.

(A max-pool kernel was tried and measured slower than the NumPy passes over strided views.)

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

    return {
        "rescale_into": rescale_into,
        "col2im_into": col2im_into,
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
