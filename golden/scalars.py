"""Step scalars: the integers a training step computes between datapath operations.

A step's bit-widths, shifts and exponents are integers. On the host (the golden model, the RTL)
they are Python ints. A device backend may keep them where it computed them instead (the GPU's
:class:`~nitihw.gpu.scalars.DeviceInt`), so that a shift reaches the next kernel without a
read-back: each read is a synchronisation that stops the host from queueing work ahead.

The step code (``golden/layers.py``, ``golden/profiles.py``) never branches on such a value. It
uses the few operations below, which take Python ints as Python ints and hand anything else to
the value's own methods (:class:`StepInt`): arithmetic (``+``, ``-``) is the value's own, and a
``max`` or a replacement stays where the value lives. A device value used as a Python condition
(``if m == 0``) is refused by the device type, so a hidden read-back is an error, not a slowdown.
"""

from __future__ import annotations

import numbers
from typing import Protocol, runtime_checkable


@runtime_checkable
class StepInt(Protocol):
    """An integer a backend keeps where it computed it (a device's bit-width, shift or
    exponent). ``+`` and ``-`` with ints or its own kind give its own kind; ``int()`` reads it
    (a synchronisation); it is never a Python condition."""

    def __add__(self, other): ...
    def __radd__(self, other): ...
    def __sub__(self, other): ...
    def __rsub__(self, other): ...
    def __int__(self) -> int: ...
    def maximum(self, other: int) -> StepInt: ...
    def replace(self, old: int, new: int) -> StepInt: ...


def is_host_int(x) -> bool:
    """Whether ``x`` is an integer the host holds (Python's or NumPy's)."""
    return isinstance(x, numbers.Integral)


def maximum(x, floor: int):
    """``max(x, floor)``, where ``x`` lives."""
    return max(int(x), floor) if is_host_int(x) else x.maximum(floor)


def replace(x, old: int, new: int):
    """``new if x == old else x``, where ``x`` lives."""
    if is_host_int(x):
        return new if x == old else int(x)
    return x.replace(old, new)


def known_zero(x) -> bool:
    """Whether ``x`` is known on the host to be 0 (a device value is never known: callers take
    the path that is also right for 0)."""
    return is_host_int(x) and x == 0


def plain(x):
    """``x`` as a Python int when the host holds it, else ``x`` itself (never read back)."""
    return int(x) if is_host_int(x) else x
