"""Integers the GPU keeps: a step's bit-widths, shifts and exponents, never read back.

The range unit's bit-width of a GEMM result decides the rescale's shift, and the shifts add up
to the exponent the loss uses. Read back, each would be a synchronisation: the host waits for
the GPU to drain before it can queue the next kernel. :class:`DeviceInt` keeps such an integer
in GPU memory (an int64 array of one element) instead, and the kernels that need it (the
rescale, the epilogue, the loss) read it through a pointer.

A step's arithmetic on these integers is small and regular: ``shift = max(bitwidth - 7, 0)``,
``exp + shift``. So a :class:`DeviceInt` is held as ``max(base + add, low)``: ``base`` on the
device, ``add`` and ``low`` Python ints. Adding an int or taking a ``max`` with one changes
only ``add`` and ``low`` (no kernel), and the kernels that read it take all three
(:meth:`DeviceInt.kernel_args`); only a sum of two device integers (an exponent plus a shift)
or a replacement launches a kernel (``kernels.step_int_kernel``), one element.

It implements :class:`nitihw.golden.scalars.StepInt`, the few operations the step code uses on
such values. A Python condition on it (``if m == 0``, ``m == 0``) is refused with an error
rather than silently read back; ``int()`` reads it, a synchronisation.
"""

from __future__ import annotations

import numbers

import numpy as np

from nitihw.gpu import kernels

#: ``low`` when there is none: ``max(v, INT64_MIN) == v``
INT64_MIN = -(2**63)


class DeviceInt:
    """``max(base + add, low)``: ``base`` a CuPy int64 array of shape ``(1,)`` on the device,
    ``add`` and ``low`` Python ints (``low`` None: no floor)."""

    __slots__ = ("add", "base", "low")
    __hash__ = None

    def __init__(self, base, add: int = 0, low: int | None = None):
        self.base, self.add, self.low = base, int(add), low

    def kernel_args(self) -> tuple:
        """``(base, add, low)`` as a kernel reading it takes them (``nitihw_step_int`` in
        ``kernels``)."""
        low = INT64_MIN if self.low is None else self.low
        return self.base, np.int64(self.add), np.int64(low)

    @property
    def value(self):
        """The value as an int64 device array of one element (a kernel when ``add`` or
        ``low`` is pending)."""
        if self.add == 0 and self.low is None:
            return self.base
        return _combine(1, self, 0, self, 0).base

    # ---- arithmetic ---------------------------------------------------------------------------
    def __add__(self, other):
        if isinstance(other, DeviceInt):
            return _combine(1, self, 1, other, 0)
        if isinstance(other, numbers.Integral):
            c = int(other)
            return DeviceInt(self.base, self.add + c, None if self.low is None else self.low + c)
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, DeviceInt):
            return _combine(1, self, -1, other, 0)
        if isinstance(other, numbers.Integral):
            return self + (-int(other))
        return NotImplemented

    def __rsub__(self, other):
        if isinstance(other, numbers.Integral):
            return _combine(-1, self, 0, self, int(other))
        return NotImplemented

    def __neg__(self):
        return _combine(-1, self, 0, self, 0)

    def maximum(self, other: int) -> DeviceInt:
        """``max(self, other)``: no kernel (``max(max(b + a, l), c) = max(b + a, max(l, c))``)."""
        c = int(other)
        return DeviceInt(self.base, self.add, c if self.low is None else max(self.low, c))

    def replace(self, old: int, new: int) -> DeviceInt:
        """``new if self == old else self``, on the device."""
        return _combine(1, self, 0, self, 0, replace=(int(old), int(new)))

    def __int__(self) -> int:
        """The value, read back: a synchronisation."""
        return int(self.value[0])

    def _refuse(self, *_):
        raise TypeError(
            "a DeviceInt (a bit-width, shift or exponent the GPU keeps) was used as a Python "
            "condition or compared on the host: that reads it back, a synchronisation; use "
            "nitihw.golden.scalars (maximum, replace) or int() where a read is meant"
        )

    __bool__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _refuse

    def __repr__(self) -> str:
        return f"DeviceInt(max(<on the device> + {self.add}, {self.low}))"


def _combine(p: int, x: DeviceInt, q: int, y: DeviceInt, r: int, replace=None) -> DeviceInt:
    """``p x + q y + r`` (then ``old -> new`` where ``replace``), one kernel of one element."""
    import cupy as cp  # CuPy, or the tests' stand-in installed as ``cupy``

    old, new = replace or (0, 0)
    out = cp.empty((1,), cp.int64)
    kernels.step_int_kernel()(
        *x.kernel_args(), *y.kernel_args(), np.int64(p), np.int64(q), np.int64(r),
        np.int32(replace is not None), np.int64(old), np.int64(new), out,
    )  # fmt: skip
    return DeviceInt(out)
