"""Integers the GPU keeps: a step's bit-widths, shifts and exponents, never read back.

The range unit's bit-width of a GEMM result decides the rescale's shift, and the shifts add up
to the exponent the loss uses. Read back, each would be a synchronisation: the host waits for
the GPU to drain before it can queue the next kernel. :class:`DeviceInt` keeps such an integer
in GPU memory (an int64 array of one element) instead: its arithmetic is done there, and the
kernels that need it (the rescale, the loss) read it through a pointer.

It implements :class:`nitihw.golden.scalars.StepInt`, the few operations the step code uses on
such values. A Python condition on it (``if m == 0``, ``m == 0``) is refused with an error
rather than silently read back; ``int()`` reads it, and is counted as the synchronisation it is.
"""

from __future__ import annotations

import numbers


class DeviceInt:
    """An integer in GPU memory: ``value`` is a CuPy int64 array of shape ``(1,)``."""

    __slots__ = ("value",)
    __hash__ = None

    def __init__(self, value):
        self.value = value

    @staticmethod
    def _operand(other):
        if isinstance(other, DeviceInt):
            return other.value
        if isinstance(other, numbers.Integral):
            return int(other)
        return NotImplemented

    def _apply(self, fn, other):
        o = self._operand(other)
        return NotImplemented if o is NotImplemented else DeviceInt(fn(o))

    def __add__(self, other):
        return self._apply(lambda o: self.value + o, other)

    __radd__ = __add__

    def __sub__(self, other):
        return self._apply(lambda o: self.value - o, other)

    def __rsub__(self, other):
        return self._apply(lambda o: o - self.value, other)

    def __neg__(self):
        return DeviceInt(-self.value)

    def maximum(self, other: int) -> DeviceInt:
        """``max(self, other)``, on the device."""
        cp = _cupy()
        return self._apply(lambda o: cp.maximum(self.value, o), other)

    def replace(self, old: int, new: int) -> DeviceInt:
        """``new if self == old else self``, on the device."""
        cp = _cupy()
        return DeviceInt(cp.where(self.value == int(old), int(new), self.value))

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
        return "DeviceInt(<on the device>)"


def _cupy():
    import cupy  # CuPy, or the tests' stand-in installed as ``cupy``

    return cupy
