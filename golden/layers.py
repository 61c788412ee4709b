"""The integer layers of a NITI network (numerics.md §3).

A layer is a small object with ``forward(x, ctx)`` and ``backward(err, ctx)``. Every number it
produces comes from a Backend operation: GEMMs, ranges, rescales and updates go to the datapath;
im2col, ReLU, pooling and dropout masks are host operations. Activations are ``Tensor(data, exp)``
with int8 data; errors are plain int8 arrays (their exponents are informational and not kept).
Backward of a weight layer: error with the OLD weights, then the gradient, then the update (the
gradient GEMM is handed to ``gemm_later``: a backend may compute it alongside the error path, but
it reaches the trace, the range unit and the update in this order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from nitihw.golden import niti_compat, scalars
from nitihw.golden.backend import Backend, OpTag
from nitihw.golden.profiles import Profile
from nitihw.golden.rounding import range_shift, value_limit


class Tensor(NamedTuple):
    """Integer tensor ``data * 2^exp`` with one exponent for the whole mini-batch."""

    data: object
    exp: int


@dataclass
class StepContext:
    """What a layer needs to know about the step it runs in."""

    backend: Backend
    profile: Profile
    seed: int = 0
    step: int = 0
    mu: int = 3
    training: bool = True
    operand_bits: int = 8  # activations, errors and weights in +-(2^(b-1) - 1) (numerics.md §2)

    @property
    def limit(self) -> int:
        """The operands' largest magnitude, ``value_limit(operand_bits)`` (127 for int8)."""
        return value_limit(self.operand_bits)


def bitwidth(acc, ctx: StepContext, tag: OpTag) -> int:
    """The range unit's bit-width of ``acc`` (``niti-compat``: NITI's float32 one)."""
    be = ctx.backend
    if ctx.profile.float32_range:
        return niti_compat.float32_bitwidth(be.max_magnitude(acc, tag))
    return be.bitwidth(acc, tag)


def requant_shift(acc, ctx: StepContext, tag: OpTag):
    """The range unit's shift for requantising ``acc`` to the operand width (numerics.md §3):
    ``sh = max(bitwidth - (b - 1), 0)``, 7 magnitude bits for int8."""
    return ctx.profile.requant_shift(range_shift(bitwidth(acc, ctx, tag), ctx.operand_bits - 1))


def requant(acc, ctx: StepContext, tag: OpTag, mode: str):
    """``(A, sh)``: the range unit's shift, then rescale to the operand width. (``niti-compat``:
    a shift of 0 casts without saturating, as NITI's ``act_calc`` does.)"""
    be = ctx.backend
    sh = requant_shift(acc, ctx, tag)
    if ctx.profile.wrap_int8_casts and sh == 0:  # a host int: NITI's float32 range
        return niti_compat.wrap_int8(acc, be.xp), 0
    return be.rescale(acc, sh, mode, tag, limit=ctx.limit), sh


def requant_relu_pool(acc, ctx: StepContext, tag: OpTag, mode: str, shape: tuple, k: int):
    """``(Y, idx, sh)``: :func:`requant` of ``acc`` viewed as ``shape``, then ReLU and (``k >
    1``) the k x k max-pool, as :meth:`Backend.rescale_relu_pool` does them (one pass where
    the backend fuses them)."""
    be = ctx.backend
    sh = requant_shift(acc, ctx, tag)
    if ctx.profile.wrap_int8_casts and sh == 0:  # niti-compat's unsaturated cast
        y, idx = be.host.relu_pool(niti_compat.wrap_int8(acc, be.xp).reshape(shape), k)
        return y, idx, 0
    y, idx = be.rescale_relu_pool(acc, sh, mode, tag, shape, k, limit=ctx.limit)
    return y, idx, sh


def conv_sums(acc, ctx: StepContext):
    """A convolution's sums as the profile sees them (``niti-compat``: through float32)."""
    if ctx.profile.float32_conv_sums:
        return niti_compat.float32_sums(acc, ctx.backend.xp)
    return acc


def _gradient(be: Backend, first: bool, a, b, tag: OpTag):
    """The weight-gradient GEMM, to be taken after the error path: handed to ``gemm_later``
    when there is an error path to overlap, computed at once in the first layer (none)."""
    if first:
        g = be.gemm(a, b, tag)
        return lambda: g
    return be.gemm_later(a, b, tag)


class WeightLayer:
    """Shared by Linear and Conv2d: int8 weights (and optional 16-bit masters) and the update."""

    def __init__(self, name: str, weight: np.ndarray, exp: int, weight_bits: int = 8):
        if weight.dtype != np.int8:
            raise TypeError(f"{name}: weights must be int8, got {weight.dtype}")
        if weight_bits not in (8, 16):
            raise ValueError(f"weight_bits must be 8 or 16, got {weight_bits}")
        self.name = name
        self.weight = weight
        self.exp = exp
        self.first = False  # set by the model: the first layer propagates no error
        self.master = weight.astype(np.int16) << 8 if weight_bits == 16 else None

    def tag(self, phase: str) -> OpTag:
        return OpTag(self.name, phase)

    def to_backend(self, be: Backend) -> None:
        self.weight = be.host.from_host(self.weight)
        if self.master is not None:
            self.master = be.host.from_host(self.master)

    def update_weights(self, grad_acc, ctx: StepContext) -> None:
        """``m = bitwidth(G)``; ``g = 0`` if ``m == 0``, ``G`` if ``m - mu < 1``, else
        ``psto(G, m - mu)``; ``W = clamp(W - g, -127, 127)`` (or the master-weight update).
        With ``b``-bit operands ``g`` and ``W`` are bounded by ``2^(b-1) - 1`` instead of 127."""
        be = ctx.backend
        tag = self.tag("weight-gradient")
        m = bitwidth(grad_acc, ctx, tag)
        if scalars.known_zero(m):
            return
        # A device's m is not read back: for m == 0 (G all zero) the update below is the same
        # no-op, g = 0 leaving W (and the masters, whose psto is W) as they are.
        shift = scalars.maximum(m - ctx.mu, 0)
        if ctx.profile.wrap_int8_casts and shift == 0:  # NITI's grad_calc: G.type(int8)
            g = niti_compat.wrap_int8(grad_acc, be.xp)
        else:
            g = be.rescale(grad_acc, shift, ctx.profile.grad_rounding, tag, limit=ctx.limit)
        g = g.reshape(self.weight.shape)
        if self.master is None:
            self.weight = be.update(self.weight, g, self.tag("update"), ctx.limit)
        else:
            self.master, self.weight = be.update_master(self.master, g, self.tag("update"))

    def stored_weights(self):
        """The weights as stored: the int16 masters if present, else the int8 weights."""
        return self.master if self.master is not None else self.weight


class Linear(WeightLayer):
    """``y = x @ W^T`` with ``W`` of shape (out, in)."""

    def sums(self, x: Tensor, ctx: StepContext):
        """The forward GEMM: ``(acc, shape, exp)``, its sums, the shape of the output they
        stand for and their exponent (before the requantisation's shift)."""
        self.x = x.data
        acc = ctx.backend.gemm(x.data, self.weight.T, self.tag("forward"))
        return acc, acc.shape, x.exp + self.exp

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:
        acc, _shape, exp = self.sums(x, ctx)
        a, sh = requant(acc, ctx, self.tag("forward"), ctx.profile.act_rounding)
        return Tensor(a, exp + sh)

    def backward(self, err, ctx: StepContext):
        be = ctx.backend
        prev = None
        grad = _gradient(be, self.first, err.T, self.x, self.tag("weight-gradient"))
        if not self.first:
            e32 = be.gemm(err, self.weight, self.tag("backward-error"))
            prev, _ = requant(e32, ctx, self.tag("backward-error"), ctx.profile.err_rounding)
        self.update_weights(grad(), ctx)
        self.x = None
        return prev


class Conv2d(WeightLayer):
    """Stride-1, zero-padded, square-kernel convolution lowered to GEMM by im2col.

    ``W`` is ``[C_out, k, k, C_in]``. Backward error: the full convolution of the error with the
    flipped kernel (im2col of the error padded by ``k - 1 - pad``). Weight gradient:
    ``G = E^T @ cols(x)``, summed over batch and positions.
    """

    def __init__(self, name, weight, exp, pad: int = 0, weight_bits: int = 8):
        super().__init__(name, weight, exp, weight_bits)
        self.k = weight.shape[1]
        if weight.ndim != 4 or weight.shape[2] != self.k:
            raise ValueError(
                f"{name}: conv weights must be [C_out, k, k, C_in], got {weight.shape}"
            )
        if not 0 <= pad <= self.k - 1:
            raise ValueError(f"{name}: padding must be in 0..{self.k - 1}, got {pad}")
        self.pad = pad

    def sums(self, x: Tensor, ctx: StepContext):
        """The forward convolution: ``(acc, shape, exp)`` as :meth:`Linear.sums` (``acc`` has
        one row per output position; ``shape`` is the NHWC output)."""
        self.cols, acc, shape = ctx.backend.conv(x.data, self.weight, self.pad, self.tag("forward"))
        return conv_sums(acc, ctx), shape, x.exp + self.exp

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:
        acc, shape, exp = self.sums(x, ctx)
        a, sh = requant(acc, ctx, self.tag("forward"), ctx.profile.act_rounding)
        return Tensor(a.reshape(shape), exp + sh)

    def backward(self, err, ctx: StepContext):
        be = ctx.backend
        b, ho, wo, cout = err.shape
        prev = None
        grad = _gradient(
            be, self.first, err.reshape(-1, cout).T, self.cols, self.tag("weight-gradient")
        )
        if not self.first:
            k, cin = self.k, self.weight.shape[3]
            e32 = be.conv_error(err, self.weight, self.pad, self.tag("backward-error"))
            e32 = conv_sums(e32, ctx)
            prev, _ = requant(e32, ctx, self.tag("backward-error"), ctx.profile.err_rounding)
            h, w = ho - 2 * self.pad + k - 1, wo - 2 * self.pad + k - 1
            prev = prev.reshape(b, h, w, cin)
        self.update_weights(conv_sums(grad(), ctx), ctx)
        self.cols = None
        return prev


class ReLU:
    def __init__(self, name: str):
        self.name = name

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:
        self.pre = x.data
        return Tensor(ctx.backend.host.relu(x.data), x.exp)

    def backward(self, err, ctx: StepContext):
        return ctx.backend.host.relu_backward(err, self.pre)


class MaxPool2d:
    """k x k / k max-pool; backward routes the error to the first maximum of each window."""

    def __init__(self, name: str, k: int = 2):
        self.name, self.k = name, k

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:
        self.in_shape = x.data.shape
        y, self.idx = ctx.backend.host.maxpool(x.data, self.k)
        return Tensor(y, x.exp)

    def backward(self, err, ctx: StepContext):
        return ctx.backend.host.maxpool_backward(err, self.idx, self.in_shape, self.k)


class Epilogue:
    """A weight layer, the ReLU after it and the max-pool after that (if there is one), run as
    one step of the network: the layer's sums are requantised, rectified and pooled by
    :meth:`Backend.rescale_relu_pool` (the GPU does the three in one kernel; elsewhere they are
    the rescale, ReLU and max-pool layers' own operations, in the same order), and the
    backward pass routes the error through pooling and ReLU from their outputs alone
    (``HostOps.pool_relu_backward``: ReLU's mask ``pre > 0`` holds exactly where its output is
    positive). The same bits, trace and ledger as the three layers run one by one."""

    def __init__(self, layer: WeightLayer, relu: ReLU, pool: MaxPool2d | None = None):
        self.layer, self.relu, self.pool = layer, relu, pool
        self.name = layer.name
        self.k = pool.k if pool is not None else 1

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:
        acc, shape, exp = self.layer.sums(x, ctx)
        tag, mode = self.layer.tag("forward"), ctx.profile.act_rounding
        self.y, self.idx, sh = requant_relu_pool(acc, ctx, tag, mode, shape, self.k)
        self.in_shape = shape
        return Tensor(self.y, exp + sh)

    def backward(self, err, ctx: StepContext):
        err = ctx.backend.host.pool_relu_backward(err, self.y, self.idx, self.in_shape, self.k)
        self.y = self.idx = None
        return self.layer.backward(err, ctx)


def with_epilogues(layers: list) -> list:
    """The network's steps: ``layers`` with every weight layer that a ReLU follows (and a
    max-pool after that) joined with them into one :class:`Epilogue`."""
    steps, i = [], 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, WeightLayer) and i + 1 < len(layers):
            relu = layers[i + 1]
            if isinstance(relu, ReLU):
                pool = layers[i + 2] if i + 2 < len(layers) else None
                pool = pool if isinstance(pool, MaxPool2d) else None
                steps.append(Epilogue(layer, relu, pool))
                i += 2 + (pool is not None)
                continue
        steps.append(layer)
        i += 1
    return steps


class Flatten:
    def __init__(self, name: str):
        self.name = name

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:
        self.in_shape = x.data.shape
        return Tensor(x.data.reshape(x.data.shape[0], -1), x.exp)

    def backward(self, err, ctx: StepContext):
        return err.reshape(self.in_shape)


class Dropout:
    """One keep-mask per feature, shared by the batch, from ``counter_hash`` (stream id: the
    layer's index); ``A = A * mask``, ``e += 1`` (the exponent does inverted dropout's x2).
    Identity at evaluation."""

    def __init__(self, name: str, stream_id: int):
        self.name, self.stream_id = name, stream_id

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:
        if not ctx.training:
            self.mask = None
            return x
        n = int(np.prod(x.data.shape[1:]))
        mask = ctx.backend.host.keep_mask(ctx.seed, ctx.step, self.stream_id, n)
        self.mask = mask.reshape(x.data.shape[1:])
        return Tensor(x.data * self.mask, x.exp + 1)

    def backward(self, err, ctx: StepContext):
        return err * self.mask
