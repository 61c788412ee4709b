"""The Backend interface: the operations a training step asks of the datapath, and NumPy's.

The training step (:mod:`nitihw.golden.train`) is written once, against :class:`Backend`.
Two kinds of operation live here:

- datapath operations, the ones the accelerator executes: ``gemm`` (exact integer GEMM with
  accumulator overflow detection), ``bitwidth`` and ``max_magnitude`` (the range unit),
  ``rescale`` (shift + round + saturate), ``update`` / ``update_master`` (the update lanes),
  and NITRO-D's ``divide`` / ``update_div`` (the divide lanes). Each call is recorded, with
  its shape and the layer and phase it belongs to, when a trace is attached; that trace is what
  the cycle and energy model consumes.
- host operations, the ones a controller core does around the array: conv lowering (im2col),
  ReLU, max-pool, dropout masks and the integer loss.

:data:`DATAPATH_OPERATIONS` names the first kind, a backend's own methods; the second kind is
a component every backend holds as ``backend.host`` (:class:`HostOps`; a training step calls
``be.host.relu(x)``). Every backend is composed of the same two parts: :class:`Backend` (the
datapath operations' bookkeeping: trace, overflow policy, range unit, :class:`Ledger`) with
its own datapath, and its host operations (:class:`NumpyHostOps`, or the GPU's):

- :class:`NumpyBackend`, the golden model: NumPy host operations and the golden model's own
  exact routes for the datapath operations (int8 GEMM, float BLAS, direct convolutions,
  worker threads);
- the RTL backend (:mod:`nitihw.sim.simulate.rtl_backend`): NumPy host operations and the simulated
  Datapath. It does not inherit the golden model, so none of the golden model's routes can
  take a datapath operation off the RTL; its ledger stops the run if one ever ran elsewhere;
- the GPU backend (:mod:`nitihw.gpu.backend`): CuPy host operations and CUDA kernels.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from nitihw.golden import int8_gemm, kernels, rounding, scalars
from nitihw.golden import loss as _loss
from nitihw.golden.errors import DatapathLeak, UserError
from nitihw.golden.gemm import Accumulator, exact_matmul_range
from nitihw.golden.memory import frozen_collector, retain_freed_memory
from nitihw.golden.parallel import (
    KERNEL_MIN_ELEMENTS,
    MIN_ELEMENTS,
    MIN_MACS,
    ThreadTuner,
    Workers,
    blas_threads,
)
from nitihw.golden.randomness import random_bits

PHASES = ("forward", "backward-error", "weight-gradient", "update")
OVERFLOW_POLICIES = ("error", "wrap")

#: The datapath operations of the :class:`Backend` interface: what an accelerator executes, and
#: what a simulating or device backend must run on its own datapath. ``conv`` and
#: ``conv_error`` are a host lowering (im2col) around one ``gemm``. Each is counted by where it
#: ran (:class:`Ledger`); every other method of a backend is a host operation.
DATAPATH_OPERATIONS = (
    "gemm",
    "gemm_later",
    "conv",
    "conv_error",
    "bitwidth",
    "max_magnitude",
    "rescale",
    "update",
    "update_master",
    "divide",
    "update_div",
)
#: where a datapath operation ran when its backend did not say otherwise: on the host CPU
HOST = "host"


@dataclass(frozen=True)
class OpTag:
    """Where a datapath operation belongs: the layer's name and the phase of the step."""

    layer: str
    phase: str


@dataclass
class TraceEntry:
    """One datapath operation, as the cycle model sees it."""

    op: str  # "gemm" | "range" | "rescale" | "update"
    tag: OpTag
    shape: tuple  # gemm: (M, K, N); others: (elements,)
    extra: dict = field(default_factory=dict)


class AccumulatorOverflowError(UserError, ArithmeticError):
    """An exact sum fell outside the ``accumulator_bits`` signed range (numerics.md §4)."""

    def __init__(self, tag: OpTag, count: int, bits: int, where: str = ""):
        self.tag, self.count, self.bits = tag, count, bits
        super().__init__(
            f"{where}{count} accumulator(s) overflowed {bits} bits in layer {tag.layer!r}, "
            f"phase {tag.phase!r}"
        )


class Ledger:
    """Where each datapath operation of a run ran: a count per place (``"host"`` and the
    backend's own datapath, e.g. ``"rtl"`` or ``"device"``).

    A backend whose :attr:`Backend.place` is not the host is *strict*: the first datapath
    operation that did not run there stops the run with :class:`~nitihw.golden.errors.
    DatapathLeak`, naming the operation, its layer and phase, and what it was."""

    def __init__(self, place: str):
        self.place = place
        self.strict = place != HOST
        self.counts = {place: 0, HOST: 0}

    def count(self, op: str, tag: OpTag, shape: tuple, place: str | None) -> None:
        """One operation ``op`` done; ``place`` is where the backend says it ran (None: the
        host, nobody said otherwise)."""
        place = place or HOST
        self.counts[place] = self.counts.get(place, 0) + 1
        if self.strict and place != self.place:
            raise DatapathLeak(
                f"datapath operation {op} {tuple(shape)} of layer {tag.layer!r}, phase "
                f"{tag.phase!r} ran on the {place}, not on the {self.place} (operation "
                f"{sum(self.counts.values())} of this run; a backend route that bypasses the "
                f"{self.place} is a bug in nitihw)"
            )

    def as_dict(self) -> dict:
        return dict(self.counts)


class Backend:
    """Base class of every backend. Subclasses implement the ``_``-prefixed methods.

    Parameters
    ----------
    accumulator_bits : accumulator width in bits (numerics.md §4), default 32.
    overflow : ``"error"`` (stop with :class:`AccumulatorOverflowError`) or ``"wrap"``
        (continue with the wrapped values and count the events in ``overflow_events``).
    """

    name = "abstract"
    #: where this backend's datapath operations run (its :class:`Ledger` counts them there)
    place = HOST
    #: the bound the rescale lanes saturate to by themselves (a narrower one is clamped again)
    rescale_limit = 127
    #: whether :meth:`rescale_relu_pool` runs as one pass of this backend's own
    #: (``_rescale_relu_pool``) rather than a rescale and two host operations
    fuses_epilogue = False

    def __init__(self, accumulator_bits: int = 32, overflow: str = "error", *, host: HostOps):
        #: the host operations (:class:`HostOps`): a component, not a base class
        self.host = host
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(
                f"overflow policy must be one of {OVERFLOW_POLICIES}, got {overflow!r}"
            )
        self.accumulator = Accumulator(accumulator_bits)
        self.overflow = overflow
        self._overflow_events = 0
        #: overflow counts a device kept, not yet read (see :meth:`settle`): ``(tag, count)``
        #: per GEMM under ``error``; under ``wrap`` one running sum on the device
        self._unchecked: list = []
        self.trace: list[TraceEntry] | None = None
        self.ledger = Ledger(self.place)
        self._ran_on: str | None = None  # where the operation in progress ran, once known
        self._last_gemm = None  # the range unit watched this tensor drain
        self._last_gemm_shape = None  # its (M, N)

    def _record(self, op: str, tag: OpTag, shape: tuple, **extra) -> TraceEntry:
        """Start a datapath operation's entry; it reaches the trace (when one is attached) and
        the ledger in :meth:`_finish`, once the operation is done (a simulating backend adds
        the cycles it measured)."""
        self._ran_on = None
        return TraceEntry(op, tag, tuple(int(s) for s in shape), extra)

    def _ran(self, place: str) -> None:
        """The operation in progress ran on ``place`` (a datapath backend says so where its
        datapath computed the result; nothing said means the host)."""
        self._ran_on = place

    def _finish(self, entry: TraceEntry) -> None:
        place, self._ran_on = self._ran_on, None
        self.ledger.count(entry.op, entry.tag, entry.shape, place)
        if self.trace is not None:
            self.trace.append(entry)

    @property
    def xp(self):
        """The array module this backend's arrays belong to (its host operations')."""
        return self.host.xp

    def status(self) -> dict:
        """A few figures for progress displays (simulated cycles, for instance)."""
        return {}

    def session(self):
        """A context manager a training run holds while it computes (thread settings)."""
        return contextlib.nullcontext()

    def end_step(self, seconds: float) -> None:
        """The training loop's word that a step is done and took ``seconds``."""

    # ---- overflow counts ------------------------------------------------------------------
    @property
    def overflow_events(self) -> int:
        """Accumulator overflows so far under the ``wrap`` policy (counts a device kept are
        read here, once)."""
        self.settle()
        return self._overflow_events

    @overflow_events.setter
    def overflow_events(self, value: int) -> None:
        self.settle()
        self._overflow_events = int(value)

    def settle(self) -> None:
        """Check the overflow counts a device kept instead of reading each at its GEMM: all in
        one read. Under ``error`` the first GEMM that overflowed raises
        :class:`AccumulatorOverflowError` naming its layer, as it would have at the GEMM; under
        ``wrap`` they are added to :attr:`overflow_events`. Under ``error`` the training loop
        calls it at the end of every step (:meth:`check_overflows`); under ``wrap`` reading the
        count is enough."""
        if not self._unchecked:
            return
        pending, self._unchecked = self._unchecked, []
        counts = self.host.to_host(self.xp.stack([c.reshape(1) for _, c in pending]))
        counts = [int(c) for c in counts.reshape(-1)]
        if self.overflow == "error":
            for (tag, _), count in zip(pending, counts, strict=True):
                if count:
                    raise AccumulatorOverflowError(tag, count, self.accumulator.bits)
        self._overflow_events += sum(counts)

    def check_overflows(self) -> None:
        """The end of a step (or an evaluation): under ``error``, :meth:`settle` (an overflow
        a device kept raises here); under ``wrap`` nothing is read."""
        if self.overflow == "error":
            self.settle()

    # ---- datapath operations --------------------------------------------------------------
    def gemm(self, a, b, tag: OpTag):
        """``a (M,K) @ b (K,N)`` of int8 (or int16) operands into ``accumulator_bits`` accumulators.

        Returns the accumulators (int64 values). On overflow, raises or wraps per policy.
        """
        shape = (a.shape[0], a.shape[1], b.shape[1])
        return self._gemm_done(tag, shape, lambda: self._gemm(a, b))

    def gemm_later(self, a, b, tag: OpTag):
        """A GEMM whose result is wanted later: returns a function that gives it (as
        :meth:`gemm` would, at the moment it is called: trace, overflow policy, range unit). A
        backend may compute the product meanwhile; here it simply waits for the call."""
        return lambda: self.gemm(a, b, tag)

    def _gemm_done(self, tag: OpTag, shape: tuple, compute):
        """One GEMM of ``shape`` (M, K, N): ``compute()`` gives ``(acc, overflowed)``; trace,
        overflow policy and the range unit's view of the result, for every GEMM route."""
        entry = self._record("gemm", tag, shape)
        acc, count = compute()
        if not scalars.is_host_int(count):  # a device's count: read when the step ends
            if self.overflow == "error":
                self._unchecked.append((tag, count))
            else:  # one running sum on the device, read when the count is asked for
                total = self._unchecked[0][1] + count if self._unchecked else count
                self._unchecked = [(None, total)]
                acc = self.accumulator.wrap(acc)  # a no-op where nothing overflowed
        elif count:
            if self.overflow == "error":
                raise AccumulatorOverflowError(tag, count, self.accumulator.bits)
            self._overflow_events += count
            acc = self.accumulator.wrap(acc)  # a no-op on values a datapath already wrapped
        self._finish(entry)
        self._last_gemm = acc
        self._last_gemm_shape = (int(shape[0]), int(shape[2]))
        return acc

    # ---- convolutions, lowered to GEMMs (numerics.md §3) -----------------------------------
    def conv(self, x, weight, pad: int, tag: OpTag):
        """A stride-1 convolution as one GEMM: ``(cols, acc, out_shape)``. ``cols`` are the
        im2col rows of ``x`` (the weight gradient's operand), ``acc`` the GEMM's own result (one
        row per output position: the range unit watched it drain) and ``out_shape`` the NHWC
        shape it stands for. ``weight`` is ``[C_out, k, k, C_in]``."""
        b, h, w, _ = x.shape
        cout, k = weight.shape[0], weight.shape[1]
        cols = self.host.im2col(x, k, pad)
        acc = self.gemm(cols, weight.reshape(cout, -1).T, tag)
        return cols, acc, (b, h + 2 * pad - k + 1, w + 2 * pad - k + 1, cout)

    def conv_error(self, err, weight, pad: int, tag: OpTag):
        """The backward error of :meth:`conv`: the full convolution of the NHWC ``err`` with the
        flipped kernel (im2col of ``err`` padded by ``k - 1 - pad``), as the GEMM's own result
        (one row per input position)."""
        cout, k, _, cin = weight.shape
        flipped = weight[:, ::-1, ::-1, :].transpose(1, 2, 0, 3).reshape(k * k * cout, cin)
        return self.gemm(self.host.im2col(err, k, k - 1 - pad), flipped, tag)

    def _fed(self, x) -> bool:
        """Whether the range unit must be fed ``x`` (it only watched the last GEMM drain)."""
        return x is not self._last_gemm

    def _kept(self, x, rand=None) -> tuple | None:
        """``(M, N)`` of the last GEMM when ``x`` is its result and no random integers go with
        it: a datapath that kept that result on chip (its result buffer) can rescale or
        divide it from there instead of receiving it again (``kept`` in the trace)."""
        return self._last_gemm_shape if x is self._last_gemm and rand is None else None

    def bitwidth(self, acc, tag: OpTag) -> int:
        """The range unit: bit-width of the whole tensor (numerics.md §2).

        Free for the last GEMM's result (the range unit watched it drain); any other tensor
        is streamed through the range unit first (``fed`` in the trace)."""
        fed = self._fed(acc)
        entry = self._record("range", tag, (acc.size,), fed=fed)
        out = self._bitwidth(acc, fed)
        self._finish(entry)
        return out

    def max_magnitude(self, x, tag: OpTag) -> int:
        """The range unit's exact ``max |x|`` of a whole tensor (WAGE's ``round(log2 max)``).

        Same rule as :meth:`bitwidth`: free for the last GEMM's result, fed otherwise."""
        fed = self._fed(x)
        entry = self._record("range", tag, (x.size,), fed=fed)
        out = self._max_magnitude(x, fed)
        self._finish(entry)
        return out

    def rescale(self, acc, shift: int, mode: str, tag: OpTag, rand=None, limit: int = 127):
        """Rescale lanes: ``shift_round(acc, shift, mode, rand, limit)`` to int8.

        ``limit`` below 127 is a narrower operand width's bound (``value_limit(bits)``): lanes
        built for that width saturate there; on int8 lanes the result is clamped once more,
        which is the same integers (``min(min(v, 127), limit) == min(v, limit)``)."""
        entry = self._rescale_entry(acc, shift, mode, tag, rand, limit)
        out = self._rescale(acc, shift, mode, rand)
        if limit < self.rescale_limit:
            out = self.xp.clip(out, -limit, limit)
        self._finish(entry)
        return out

    def _rescale_entry(self, acc, shift, mode, tag, rand, limit) -> TraceEntry:
        if not 1 <= limit <= 127:
            raise ValueError(f"rescale limit must be in 1..127, got {limit}")
        return self._record(
            "rescale",
            tag,
            (acc.size,),
            shift=scalars.plain(shift),  # a device's shift stays there (never read back)
            mode=mode,
            kept=self._kept(acc, rand),
        )

    def rescale_relu_pool(
        self, acc, shift, mode: str, tag: OpTag, shape: tuple, k: int, limit: int = 127
    ):
        """A forward epilogue: :meth:`rescale` of ``acc`` (the datapath), then ReLU and, for
        ``k > 1``, the k x k max-pool of the result viewed as the NHWC ``shape`` (host
        operations). Returns ``(Y, idx)`` as ``host.relu_pool`` does. Traced and counted as the
        one rescale it contains. A backend whose :attr:`fuses_epilogue` is set does all three
        in one pass (``_rescale_relu_pool``): the same bits."""
        if not self.fuses_epilogue:
            a = self.rescale(acc, shift, mode, tag, limit=limit).reshape(shape)
            return self.host.relu_pool(a, k)
        entry = self._rescale_entry(acc, shift, mode, tag, None, limit)
        out = self._rescale_relu_pool(acc, shift, mode, shape, k, limit)
        self._finish(entry)
        return out

    def update(self, w, g, tag: OpTag, limit: int = 127):
        """Update lanes: ``clamp(w - g, -limit, limit)`` for int8 weights (WAGE: limit 64)."""
        if not 1 <= limit <= 127:
            raise ValueError(f"update limit must be in 1..127, got {limit}")
        entry = self._record("update", tag, (w.size,), master=False)
        out = self._update(w, g, limit)
        self._finish(entry)
        return out

    def divide(self, acc, divisor: int, tag: OpTag):
        """Divide lanes: ``saturate(trunc_div(acc, divisor))`` to int8 (NITRO-D's scaling)."""
        entry = self._record("divide", tag, (acc.size,), divisor=int(divisor), kept=self._kept(acc))
        out = self._divide(acc, int(divisor))
        self._finish(entry)
        return out

    def update_div(self, w, g, lr_div: int, decay_div: int, tag: OpTag):
        """NITRO-D's IntegerSGD on int32 weights: ``w - trunc_div(g, lr_div)
        - (trunc_div(w, decay_div) if decay_div else 0)``, wrapped to 32 bits."""
        entry = self._record("update", tag, (w.size,), master=False, divide=True)
        out = self._update_div(w, g, int(lr_div), int(decay_div))
        self._finish(entry)
        return out

    def update_master(self, w16, g, tag: OpTag):
        """16-bit master-weight update: ``w16 = clamp(w16 - g, +-32767)``, ``w = psto(w16, 8)``.

        Returns ``(w16, w)``.
        """
        entry = self._record("update", tag, (w16.size,), master=True)
        out = self._update_master(w16, g)
        self._finish(entry)
        return out

    # ---- to be implemented ----------------------------------------------------------------
    def _gemm(self, a, b):
        """Returns ``(acc, overflowed)``: the exact sums (or sums already wrapped to
        ``accumulator_bits``) and how many elements' exact sums lie outside the signed range."""
        raise NotImplementedError

    def _bitwidth(self, acc, fed: bool) -> int:
        raise NotImplementedError

    def _max_magnitude(self, x, fed: bool) -> int:
        raise NotImplementedError

    def _divide(self, acc, divisor):
        raise NotImplementedError

    def _update_div(self, w, g, lr_div, decay_div):
        raise NotImplementedError

    def _rescale(self, acc, shift, mode, rand):
        raise NotImplementedError

    def _rescale_relu_pool(self, acc, shift, mode, shape, k, limit):
        raise NotImplementedError

    def _update(self, w, g, limit):
        raise NotImplementedError

    def _update_master(self, w16, g):
        raise NotImplementedError


class HostOps(Protocol):
    """The host operations a training step asks for around the datapath (a controller core's
    work): a backend's ``host`` component (:class:`NumpyHostOps` for the golden model and the
    RTL, :class:`~nitihw.gpu.backend.CupyHostOps` for the GPU). None is a datapath operation;
    nothing of them is traced or counted by the :class:`Ledger`."""

    xp: object  # the array module of their arrays

    def from_host(self, x): ...
    def to_host(self, x) -> np.ndarray: ...
    def im2col(self, x, k: int, pad: int): ...
    def windows(self, x, k: int, pad: int): ...
    def relu(self, x): ...
    def relu_backward(self, err, pre): ...
    def maxpool(self, x, k: int): ...
    def maxpool_backward(self, err, idx, in_shape, k: int): ...
    def relu_pool(self, x, k: int): ...
    def pool_relu_backward(self, err, y, idx, in_shape, k: int): ...
    def argmax(self, logits): ...
    def first_argmax(self, x): ...
    def keep_mask(self, seed: int, step: int, stream_id: int, n: int): ...
    def random_bits(self, seed: int, step: int, stream_id: int, shape, bits: int): ...
    def cross_entropy_error(
        self, logits, exponent: int, labels, rounding_mode: str, rand=None, bits: int = 8
    ): ...


class ArrayHostOps:
    """The host operations around the array, written once against an array module ``xp``
    (NumPy for the golden model, CuPy for the GPU backend)."""

    xp = np

    def im2col(self, x, k: int, pad: int):
        """Lower a stride-1 convolution: NHWC ``x`` to rows of ``k*k*C`` patches.

        Row ``(b, y, x)`` holds the window at output position (y, x), ordered (kh, kw, c),
        matching weights stored as ``[C_out, kh, kw, C_in]``. Zero padding of ``pad``.
        """
        win = self.windows(x, k, pad)
        b, ho, wo = win.shape[:3]
        return self.xp.ascontiguousarray(win).reshape(b * ho * wo, -1)

    def windows(self, x, k: int, pad: int):
        """The ``(B, Ho, Wo, k, k, C)`` strided view of every k x k window of the zero-padded
        NHWC ``x`` (no copy but the padding): what :meth:`im2col` lays out as rows."""
        xp = self.xp
        b, h, w, c = x.shape
        if pad:
            x = xp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
        s = x.strides
        return xp.lib.stride_tricks.as_strided(
            x, shape=(b, ho, wo, k, k, c), strides=(s[0], s[1], s[2], s[1], s[2], s[3])
        )

    def relu(self, x):
        return self.xp.maximum(x, 0)

    def relu_backward(self, err, pre):
        """Mask errors where the int8 pre-activation is <= 0 (``err * (pre > 0)``: no branch)."""
        return err * (pre > 0).view(self.xp.int8)

    def maxpool(self, x, k: int):
        """k x k / k max-pool of NHWC int8. Returns ``(y, idx)``; ``idx`` is the FIRST maximum
        of each window in row-major window order (ties are real with int8).

        One pass per window position over strided views: a later position takes over only
        where it is strictly greater, and since positions only grow, ``idx = max(idx, j *
        later)`` records it without a branch."""
        xp = self.xp
        h, w = x.shape[1:3]
        ho, wo = h // k, w // k
        views = [x[:, dy : ho * k : k, dx : wo * k : k, :] for dy in range(k) for dx in range(k)]
        y = views[0].copy()
        idx = xp.zeros(y.shape, dtype=xp.int8)
        for j, v in enumerate(views[1:], 1):
            later = (v > y).view(xp.int8)
            later *= j
            xp.maximum(idx, later, out=idx)
            xp.maximum(y, v, out=y)
        return y, idx

    def maxpool_backward(self, err, idx, in_shape, k: int):
        """Each window's error to its first maximum (``idx``); zero elsewhere."""
        xp = self.xp
        h, w = in_shape[1:3]
        ho, wo = h // k, w // k
        out = xp.zeros(in_shape, dtype=err.dtype)
        for j in range(k * k):
            dy, dx = divmod(j, k)
            xp.multiply(
                err, (idx == j).view(xp.int8), out=out[:, dy : ho * k : k, dx : wo * k : k, :]
            )
        return out

    def relu_pool(self, x, k: int):
        """ReLU, then (``k > 1``) the k x k max-pool: ``(Y, idx)``; ``idx`` is None for
        ``k == 1``."""
        y = self.relu(x)
        return (y, None) if k == 1 else self.maxpool(y, k)

    def pool_relu_backward(self, err, y, idx, in_shape, k: int):
        """The backward of :meth:`relu_pool` from its outputs ``(y, idx)`` alone: each
        window's error to its first maximum where that maximum is positive (ReLU's mask, ``pre
        > 0``, holds exactly where ``relu(pre)``, the pooled ``y``, is positive)."""
        err = self.relu_backward(err, y)
        return err if k == 1 else self.maxpool_backward(err, idx, in_shape, k)

    def argmax(self, logits):
        return self.first_argmax(logits)

    def first_argmax(self, x):
        """Index of the FIRST maximum along the last axis, found with ``max`` alone: a unique
        key per element (value, then earlier position) leaves no tie to break, so every array
        module gives the same index whatever its own ``argmax`` does with ties."""
        xp = self.xp
        n = x.shape[-1]
        x = x.astype(xp.int64)
        rank = xp.arange(n - 1, -1, -1, dtype=xp.int64)  # earlier positions rank higher
        best = (x * n + rank).max(axis=-1)  # = max(x) * n + the rank of its first position
        return (n - 1) - (best - x.max(axis=-1) * n)  # no division: no sign convention


class NumpyHostOps(ArrayHostOps):
    """The host operations in NumPy, on the host CPU: what the golden model and the RTL
    backend (whose controller core runs them) both use. No datapath operation lives here."""

    def from_host(self, x: np.ndarray):
        return x

    def to_host(self, x) -> np.ndarray:
        return np.asarray(x)

    def maxpool(self, x, k: int):
        """:meth:`ArrayHostOps.maxpool` in one compiled pass where a kernel applies (2 x 2 of
        int8: :func:`~nitihw.golden.kernels.maxpool2_kernel`), else the NumPy passes."""
        kernel = kernels.maxpool2_kernel(x, k)
        if kernel is None:
            return super().maxpool(x, k)
        b, h, w, c = x.shape
        y = np.empty((b, h // k, w // k, c), np.int8)
        idx = np.empty(y.shape, np.int8)
        kernel(x, y, idx)
        return y, idx

    def relu(self, x):
        """``max(x, 0)`` of integers as ``x & ~(x >> (bits - 1))`` (the shift is -1 exactly
        where ``x < 0``): NumPy's own ``maximum`` of int8 is an element-at-a-time loop,
        measured 5x slower than these two vectorised passes."""
        if x.dtype.kind != "i":
            return super().relu(x)
        out = np.right_shift(x, x.dtype.itemsize * 8 - 1)
        np.invert(out, out=out)
        out &= x
        return out

    def keep_mask(self, seed: int, step: int, stream_id: int, n: int):
        """Dropout keep-mask of ``n`` features (p = 1/2): the top bit of the counter hash."""
        return random_bits(seed, step, stream_id, (n,), 1).astype(np.int8)

    def random_bits(self, seed: int, step: int, stream_id: int, shape, bits: int):
        return random_bits(seed, step, stream_id, shape, bits)

    def cross_entropy_error(
        self, logits, exponent: int, labels, rounding_mode: str, rand=None, bits: int = 8
    ):
        return _loss.cross_entropy_error(logits, exponent, labels, rounding_mode, rand, bits)


#: the golden col2im multiplies this many bytes of per-tap products at a time (kept in cache)
COL2IM_BLOCK_BYTES = 1 << 19

MASTER_FRACTION_BITS = 8
MASTER_LIMIT = 2**15 - 1


class NumpyBackend(Backend):
    """The golden model: every operation in NumPy, exactly as numerics.md says.

    ``gemm_method`` forces one exact GEMM path (see :func:`nitihw.golden.gemm.exact_matmul`).
    ``threads`` is the number of worker threads; the default (None) switches between one per
    core and one, whichever its trial steps find faster (:class:`~nitihw.golden.parallel.
    ThreadTuner`). BLAS itself runs single-threaded inside :meth:`session`. The bits never
    depend on the thread count.

    The golden model computes the integers of each datapath operation by the cheapest exact
    route, not necessarily the datapath's: int8 GEMMs on the compiled int8 GEMM where the CPU
    has AVX-512 VNNI (:mod:`~nitihw.golden.int8_gemm`), else float BLAS; a convolution builds
    its im2col rows in that GEMM's operand type and its backward error is one GEMM and a
    col2im. The trace records the lowered GEMM the datapath would run either way;
    ``lowered_convs=True`` computes that GEMM itself (the reference the direct routes are
    tested against).

    These routes are the golden model's own: no other backend inherits them (a simulating
    backend composes :class:`NumpyHostOps` with its own datapath instead).
    """

    name = "golden"

    def __init__(
        self,
        accumulator_bits: int = 32,
        overflow: str = "error",
        gemm_method: str = "auto",
        threads: int | None = None,
        lowered_convs: bool = False,
    ):
        super().__init__(accumulator_bits, overflow, host=NumpyHostOps())
        self.gemm_method = gemm_method
        self.lowered_convs = lowered_convs
        self.workers = Workers(threads)
        # the default measures whether splitting pays on this machine, now (ThreadTuner)
        self._tuner = ThreadTuner(self.workers.threads) if threads is None else None
        self._drained = None  # (acc, min, max) of the last GEMM, found as its result drained
        self._magnitudes: list = []  # (operand, max |operand|) of recent im2col rows

    @contextlib.contextmanager
    def session(self):
        """BLAS single-threaded while a run computes (the workers do the splitting); freed
        memory kept for the next step (:func:`~nitihw.golden.memory.retain_freed_memory`); the
        objects made before the run left out of the cycle collector's walks
        (:func:`~nitihw.golden.memory.frozen_collector`)."""
        retain_freed_memory()
        with blas_threads(1), frozen_collector():
            yield

    def end_step(self, seconds: float) -> None:
        if self._tuner is not None:
            self.workers.threads = self._tuner.next_threads(seconds)

    # ---- datapath -------------------------------------------------------------------------
    def _gemm(self, a, b):
        exact, lo, hi = exact_matmul_range(a, b, self.gemm_method, self.workers, self._known(a, b))
        return self._drain(exact, lo, hi)

    def gemm_later(self, a, b, tag: OpTag):
        """:meth:`Backend.gemm_later` computed on a worker while the caller goes on (a step's
        error GEMM and its weight-gradient GEMM are independent); small products and a single
        thread compute at the call."""
        m, k = a.shape
        n = b.shape[1]
        if self.workers.threads == 1 or m * k * n < MIN_MACS or self.gemm_method != "auto":
            return super().gemm_later(a, b, tag)
        future = self.workers.submit(exact_matmul_range, a, b, "auto", None, self._known(a, b))
        return lambda: self._gemm_done(tag, (m, k, n), lambda: self._drain(*future.result()))

    def _drain(self, acc, lo: int, hi: int):
        """``(acc, overflowed)`` for a GEMM result whose min and max are known."""
        self._drained = (acc, lo, hi)
        bits = self.accumulator
        return acc, 0 if bits.min <= lo and hi <= bits.max else bits.overflows(acc)

    def _range(self, x) -> tuple[int, int]:
        """``(min, max)`` of ``x``: remembered for the last GEMM's result, else found in
        blocks over the workers."""
        d = self._drained
        if d is not None and d[0] is x:
            return d[1], d[2]
        flat = np.asarray(x).reshape(-1)
        if not flat.size:
            return 0, 0

        def block(lo, hi):
            part = flat[lo:hi]
            return int(part.min()), int(part.max())

        parts = self.workers.run(block, self.workers.spans(flat.size, MIN_ELEMENTS))
        return min(p[0] for p in parts), max(p[1] for p in parts)

    def _bitwidth(self, acc, fed) -> int:
        lo, hi = self._range(acc)
        return rounding.magnitude_bitwidth(max(hi, -lo))

    def _max_magnitude(self, x, fed) -> int:
        lo, hi = self._range(x)
        return max(hi, -lo)

    def _rescale(self, acc, shift, mode, rand):
        acc = np.asarray(acc)
        flat = acc.reshape(-1)
        flat_rand = None if rand is None else np.asarray(rand).reshape(-1)
        out = np.empty(flat.shape, np.int8)
        kernel = kernels.rescale_kernel(flat.dtype, shift)
        if kernel is not None:
            code = kernels.MODE_CODES[mode]
            rand64 = np.zeros(1, np.int64) if rand is None else flat_rand.astype(np.int64)

            def block(lo, hi):
                kernel(
                    flat[lo:hi], shift, code, rand64 if rand is None else rand64[lo:hi], out[lo:hi]
                )

        elif flat.size < 2 * MIN_ELEMENTS or self.workers.threads == 1:
            return rounding.shift_round(acc, shift, mode, rand)
        else:

            def block(lo, hi):
                r = None if flat_rand is None else flat_rand[lo:hi]
                out[lo:hi] = rounding.shift_round(flat[lo:hi], shift, mode, r)

        # the compiled loop is memory-bound: splitting pays only on very large tensors
        least = KERNEL_MIN_ELEMENTS if kernel is not None else MIN_ELEMENTS
        self.workers.run(block, self.workers.spans(flat.size, least))
        return out.reshape(acc.shape)

    # ---- convolutions by the golden model's own exact routes ------------------------------
    def _direct(self) -> bool:
        return not self.lowered_convs and self.gemm_method == "auto"

    def conv(self, x, weight, pad: int, tag: OpTag):
        """:meth:`Backend.conv` with the im2col rows built straight into the GEMM's operand type
        (int8 for the int8 GEMM, else float32: exact small integers) over the workers: window
        by window (rows in place) when a window row holds many values, else tap by tap into a
        column-major matrix (few channels: one image row at a time is the longest contiguous
        run). Their magnitude is the input's, so the GEMMs that read them need not search them
        for it."""
        if not self._direct() or x.shape[0] == 0:
            return super().conv(x, weight, pad, tag)
        b, c = x.shape[0], x.shape[3]
        cout, k = weight.shape[0], weight.shape[1]
        win = self.host.windows(x, k, pad)
        ho, wo = win.shape[1:3]
        # int8 rows for the int8 GEMM where it applies, else float32 rows for BLAS
        dtype = np.int8 if int8_gemm.takes(x.dtype, weight.dtype, k * k * c) else np.float32
        if k * c >= wo:  # window rows are the long runs
            cols = np.empty((b, ho, wo, k, k, c), dtype)

            def images(lo, hi):
                cols[lo:hi] = win[lo:hi]

            self.workers.run(images, self.workers.spans(b, max(1, MIN_ELEMENTS // cols[0].size)))
            cols = cols.reshape(b * ho * wo, k * k * c)
        else:  # image rows are: one (C, B, Ho, Wo) block per tap, the matrix is its transpose
            taps = np.empty((k, k, c, b, ho, wo), dtype)

            def tap_rows(lo, hi):
                for t in range(lo, hi):
                    kh, kw = divmod(t, k)
                    taps[kh, kw] = win[:, :, :, kh, kw, :].transpose(3, 0, 1, 2)

            self.workers.run(tap_rows, self.workers.spans(k * k, 1))
            cols = taps.reshape(k * k * c, b * ho * wo).T
        self._remember_magnitude(cols, rounding.max_abs(x))
        acc = self.gemm(cols, weight.reshape(cout, -1).T.astype(dtype, copy=False), tag)
        return cols, acc, (b, ho, wo, cout)

    def _remember_magnitude(self, x, m: int) -> None:
        """Note ``max|x|`` of an operand built here (the last few are kept)."""
        self._magnitudes = [*self._magnitudes[-3:], (x, m)]

    def _known(self, a, b) -> tuple:
        """``(max|a|, max|b|)`` where noted by :meth:`_remember_magnitude`, else None."""
        return tuple(next((m for y, m in self._magnitudes if y is x), None) for x in (a, b))

    def conv_error(self, err, weight, pad: int, tag: OpTag):
        """:meth:`Backend.conv_error` as a col2im: ``err @ W`` for every kernel tap (one row per
        output position, K = C_out), each tap's block then added into the input position it
        lands on. Half the multiply-adds of the lowered GEMM, whose rows are mostly padding.
        With the int8 GEMM, both passes are compiled (:func:`~nitihw.golden.int8_gemm.
        conv_error_range`, int32 sums, exact for ``k * k * C_out <= MAX_K``); else the products
        are float32 (exact while ``C_out * max|err| * max|W| < 2^24``) and the compiled
        gathering pass sums in float64 (the NumPy route adds per tap in float32 while every
        partial sum stays below 2^24, else float64). Sums of 2^53 or more take the lowered
        GEMM."""
        b, ho, wo, cout = err.shape
        _, k, _, cin = weight.shape
        h, w = ho - 2 * pad + k - 1, wo - 2 * pad + k - 1
        shape = (b * h * w, k * k * cout, cin)
        if self._direct() and err.size and int8_gemm.takes(err.dtype, weight.dtype, k * k * cout):
            done = int8_gemm.conv_error_range(err, weight, pad, self.workers)
            return self._gemm_done(tag, shape, lambda: self._drain(*done))
        product = rounding.max_abs(err) * rounding.max_abs(weight)
        bound = k * k * cout * product
        if not self._direct() or err.size == 0 or cout * product >= 2**24 or bound >= 2**53:
            return super().conv_error(err, weight, pad, tag)
        return self._gemm_done(tag, shape, lambda: self._col2im_error(err, weight, pad, bound))

    def _col2im_error(self, err, weight, pad: int, bound: int):
        b, ho, wo, cout = err.shape
        _, k, _, cin = weight.shape
        h, w = ho - 2 * pad + k - 1, wo - 2 * pad + k - 1
        out = np.empty((b, h, w, cin), np.int32 if bound < 2**31 else np.int64)
        per_image = ho * wo * cout * k * k * cin
        spans = self.workers.spans(b, max(1, MIN_MACS // per_image))
        col2im = kernels.col2im_kernel()
        if col2im is not None:  # one GEMM for every tap, then one gathering pass
            taps = weight.reshape(cout, k * k * cin).astype(np.float32)
            rows = err.reshape(b, ho * wo, cout)

            # a few images at a time, so that their products (B x Ho x Wo x k*k*C_in floats)
            # are still in cache when the gathering pass reads them
            step = max(1, COL2IM_BLOCK_BYTES // (4 * ho * wo * k * k * cin))

            def gathered(lo, hi):
                lo_hi = []
                for i in range(lo, hi, step):
                    j = min(i + step, hi)
                    p = rows[i:j].reshape(-1, cout).astype(np.float32) @ taps
                    lo_hi.append(col2im(p.reshape(j - i, ho, wo, k, k, cin), pad, out[i:j]))
                return min(r[0] for r in lo_hi), max(r[1] for r in lo_hi)

            parts = self.workers.run(gathered, spans)
            acc = out.reshape(b * h * w, cin)
            return self._drain(acc, min(p[0] for p in parts), max(p[1] for p in parts))
        taps = weight.transpose(1, 2, 0, 3).astype(np.float32)  # [kh, kw] -> (C_out, C_in)
        full = np.zeros((b, ho + k - 1, wo + k - 1, cin), np.float32 if bound < 2**24 else float)
        rows = err.reshape(b, ho * wo, cout)

        def block(lo, hi):
            e = rows[lo:hi].reshape(-1, cout).astype(np.float32)
            f = full[lo:hi]
            for kh in range(k):
                for kw in range(k):  # one small GEMM per tap: contiguous blocks to add
                    f[:, kh : kh + ho, kw : kw + wo] += (e @ taps[kh, kw]).reshape(-1, ho, wo, cin)
            part = out[lo:hi]
            part[...] = f[:, pad : pad + h, pad : pad + w]
            return int(part.min()), int(part.max())

        parts = self.workers.run(block, spans)
        acc = out.reshape(b * h * w, cin)
        return self._drain(acc, min(p[0] for p in parts), max(p[1] for p in parts))

    def _divide(self, acc, divisor):
        return rounding.saturate(rounding.trunc_div(acc, divisor))

    def _update_div(self, w, g, lr_div, decay_div):
        dw = rounding.trunc_div(g, lr_div)
        if decay_div:
            dw = dw + rounding.trunc_div(w, decay_div)
        return rounding.wrap(np.asarray(w, np.int64) - dw, 32).astype(np.int32)

    def _update(self, w, g, limit):
        return rounding.saturate(w.astype(np.int16) - g.astype(np.int16), limit)

    def _update_master(self, w16, g):
        w16 = np.clip(w16.astype(np.int32) - g, -MASTER_LIMIT, MASTER_LIMIT).astype(np.int16)
        return w16, rounding.shift_round(w16, MASTER_FRACTION_BITS, "psto")
