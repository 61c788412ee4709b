"""Freed memory kept in the process for the next step (glibc's ``mallopt``).

A training step allocates and frees the same large arrays every step (im2col rows, GEMM
results, masks). By default glibc hands every freed block above its mmap threshold (128 kB,
raised on the way to the largest block freed) back to the kernel, and trims the top of the
heap past twice that; the next step then page-faults the same memory in again, 4 kB at a time.
Measured on a LeNet step's largest tensor (737 kB of int8): a ReLU backward takes 0.60 ms
this way and 0.05 ms with the memory kept (docs/golden_speed.md). :func:`retain_freed_memory`
fixes the thresholds instead: blocks below 32 MB come from the heap, and up to 256 MB of
freed heap stays with the process. The process's resident memory then stays at its peak; the
bits never depend on it. Called once per process when a golden training run starts
(:meth:`nitihw.golden.backend.NumpyBackend.session`); does nothing where the C library is
not glibc.

The same holds for Python's cycle collector: a training step allocates few container objects,
but every few hundred steps the collector's oldest generation comes due and walks every
object of the process (NumPy, Numba, the model: about 110k objects, a 95-100 ms pause
measured on a LeNet run, inside whichever call happened to allocate). :func:`frozen_collector`
moves the objects that exist when a run starts out of its way (``gc.freeze``) for the run's
length; the objects the steps make are still collected.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: blocks below this come from the heap (glibc's largest mmap threshold on 64-bit)
MMAP_THRESHOLD = 32 << 20
#: freed memory at the top of the heap kept up to this much
TRIM_THRESHOLD = 256 << 20

_done: bool | None = None


def retain_freed_memory() -> bool:
    """Set glibc's thresholds (once per process); whether they are set."""
    global _done
    if _done is None:
        _done = False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False  # not glibc: its allocator keeps its own counsel
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        _done = bool(
            mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    return _done


@contextlib.contextmanager
def frozen_collector():
    """While held, the cycle collector leaves the objects that existed on entry alone
    (``gc.freeze``; they are unfrozen on exit). Held by a golden training run
    (:meth:`nitihw.golden.backend.NumpyBackend.session`)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
