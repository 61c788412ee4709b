"""WAGE (Wu, Li, Chen, Shi, ICLR 2018): 2-8-8-8 integer training, on the NITI datapath.

The integer re-expression of the authors' TensorFlow code (research notes, others.md §1.7).
Every scale in WAGE is a power of two, so each quantiser is one shift on the rescale lanes:

==============  ============================================================================
tensor          integer form (all on the datapath unless marked *host*)
==============  ============================================================================
stored weight   ``Wi`` int8 in ``[-64, 64]`` (units 2^-7: the code clips W to ±0.5)
ternary weight  ``t = rne(Wi, 6)`` in {-1, 0, 1} (``Q(W, 2)``: |Wi| = 32 rounds to 0)
forward         ``acc = x @ t`` (int32); hidden layers ``a = relu(rne(acc, 1 + s))``: ReLU and
                ``QA`` collapse into one rounding shift (``s = log2 alpha`` of the layer)
loss (*host*)   sum of squares: ``e = acc - onehot << (8 + s_L)``, the gradient in acc units
QE              ``k = round(log2 max|e|)`` (range unit's exact max, *host* rounding of the
                log), ``e8 = rne(e, k - 7)``: a left shift when ``k < 7``
backward        ``QA``'s clip mask (*host*: zero where the activation was clipped above
                127/128), then QE, then the ReLU mask (*host*), then ``e_prev = e8 @ t``
QG              ``g = x^T @ e8``; ``kg = round(log2 max|g|)``; ``n = sto(g, kg - j)`` with
                ``lr = 2^j`` (``j`` is ``--mu``), random integers from ``counter_hash``
update          ``Wi = clamp(Wi - n, -64, 64)`` (update lanes with limit 64)
==============  ============================================================================

Where this differs from the TensorFlow reference (which is not reproducible itself: float32
convolutions and an unseeded ``tf.random_uniform``):

- ``round(log2 m)`` is computed exactly (``m^2 >= 2^(2f+1)``, the ``sqrt 2`` test); TF's
  float32 ``log`` can differ when ``m`` is within an ulp of ``2^f * sqrt 2``.
- The stochastic update draws ``s = kg - j`` uniform bits per weight (``n`` rounds up with
  probability ``frac``, as the reference's float ``frac > u``); above 32 bits the low bits of
  the random integer are zero. For ``s <= 0`` the update ``g << -s`` is exact.
- An all-zero error or gradient tensor (TF: ``log2 0``, NaN) gives no update.
- The input is the dataset's int8 at scale 2^-7 (already on ``QA``'s grid), not
  ``p / 127.5 - 1``.
- A conv followed by ReLU and max-pool runs as WAGE's units do: conv, pool (on the int32
  sums), ReLU, QE, QA. Dropout layers are dropped (WAGE has none).
"""

from __future__ import annotations

import math

import numpy as np

from nitihw.golden import models as M
from nitihw.golden.backend import OpTag
from nitihw.golden.layers import StepContext
from nitihw.golden.models import layer_name

WEIGHT_LIMIT = 64  # W in [-0.5, 0.5] at 2^-7
TERNARY_SHIFT = 6  # Q(W, 2) = RNE(W * 2) on the 2^-7 grid
ACT_MAX = 127
STREAM_QG = 0x9A6E00  # + the layer index: the stochastic update's random stream
RAND_BITS = 32


def round_log2(m: int) -> int:
    """``round(log2 m)`` exactly, for an integer ``m >= 1``: ``f = floor(log2 m)``, plus one
    when ``m >= 2^f * sqrt 2``, i.e. ``m^2 >= 2^(2f + 1)``. Example: ``round_log2(181) == 7``,
    ``round_log2(182) == 8``."""
    if m < 1:
        raise ValueError(f"round_log2 needs m >= 1, got {m}")
    f = m.bit_length() - 1
    return f + (m * m >= 1 << (2 * f + 1))


def alpha_shift(fan_in: int) -> int:
    """``log2 alpha``: ``alpha = max(1, 2^round(log2(0.75 / sqrt(3 / fan_in))))``."""
    return max(0, round(math.log2(0.75 / math.sqrt(3.0 / fan_in))))


def init_weights(rng: np.random.Generator, shape: tuple, fan_in: int) -> np.ndarray:
    """Uniform(-L, L) with ``L = max(sqrt(3 / fan_in), 0.75)``, quantised once with
    ``Q(clip(W, ±0.5), 2)``: ``Wi`` in {-64, 0, 64}."""
    bound = max(math.sqrt(3.0 / fan_in), 0.75)
    w = np.clip(rng.uniform(-bound, bound, size=shape), -0.5, 0.5)
    return (np.rint(w * 2) * WEIGHT_LIMIT).astype(np.int8)


def sse_error(acc, labels, s_last: int, xp=np):
    """Host: the sum-of-squares gradient ``out - onehot`` in acc units (int64)."""
    e = acc.astype(xp.int64).copy()
    e[xp.arange(e.shape[0]), labels] -= 1 << (8 + s_last)
    return e


def sto_rand(u32, shift: int):
    """The ``sto`` random integers in ``[0, 2^shift)`` from 32 uniform bits per element."""
    if shift <= RAND_BITS:
        return u32 >> (RAND_BITS - shift)
    return u32 << (shift - RAND_BITS)


class WageUnit:
    """One weight layer with what follows it: ``[pool] [ReLU + QE + QA]``."""

    def __init__(self, name, index, weight, s, *, conv_k=0, pad=0, pool=0, hidden=True):
        self.name, self.index = name, index
        self.weight, self.s = weight, s
        self.k, self.pad, self.pool, self.hidden = conv_k, pad, pool, hidden
        self.first = False

    def tag(self, phase):
        return OpTag(self.name, phase)

    def forward(self, x, ctx: StepContext):
        be = ctx.backend
        self.t = be.rescale(self.weight, TERNARY_SHIFT, "rne", self.tag("forward"))
        if self.k:
            self.x, acc, shape = be.conv(x, self.t, self.pad, self.tag("forward"))
            acc = acc.reshape(shape)
        else:
            self.x = x
            acc = be.gemm(x, self.t.T, self.tag("forward"))
        if self.pool:
            self.pre_pool = acc.shape
            acc, self.pool_idx = be.host.maxpool(acc, self.pool)
        if not self.hidden:
            return acc
        sh = 1 + self.s
        self.active = acc > 0  # ReLU mask
        self.kept = acc <= ACT_MAX << sh  # QA's clip mask (clip to 127/128 before rounding)
        return be.host.relu(be.rescale(acc, sh, "rne", self.tag("forward")))

    def backward(self, e, ctx: StepContext):
        """``e``: the error at this unit's output (int32 sums, or the loss gradient)."""
        be = ctx.backend
        xp = be.xp
        if self.hidden:
            e = xp.where(self.kept, e, 0)
        e8 = self.quantize_error(e, ctx)
        if self.hidden:
            e8 = xp.where(self.active, e8, 0).astype(xp.int8)
        if self.pool:
            e8 = be.host.maxpool_backward(e8, self.pool_idx, self.pre_pool, self.pool)
        cout = self.weight.shape[0]
        e2 = e8.reshape(-1, cout)
        prev = None
        if not self.first:
            if self.k:
                prev = be.conv_error(e8, self.t, self.pad, self.tag("backward-error"))
                prev = prev.reshape(self.in_shape)
            else:
                prev = be.gemm(e2, self.t, self.tag("backward-error"))
        g = be.gemm(e2.T, self.x, self.tag("weight-gradient"))
        self.update(g, ctx)
        self.x = self.t = None
        return prev

    def quantize_error(self, e, ctx):
        be = ctx.backend
        tag = self.tag("backward-error")
        m = be.max_magnitude(e, tag)
        if m == 0:
            return be.xp.zeros(e.shape, be.xp.int8)
        return be.rescale(e, round_log2(m) - 7, "rne", tag)

    def update(self, g, ctx: StepContext):
        be = ctx.backend
        tag = self.tag("weight-gradient")
        m = be.max_magnitude(g, tag)
        if m == 0:
            return
        shift = round_log2(m) - ctx.mu
        rand = None
        if shift > 0:
            u = be.host.random_bits(ctx.seed, ctx.step, STREAM_QG + self.index, g.shape, RAND_BITS)
            rand = sto_rand(u, shift)
        n = be.rescale(g, shift, "sto" if shift > 0 else "rne", tag, rand)
        self.weight = be.update(
            self.weight, n.reshape(self.weight.shape), self.tag("update"), limit=WEIGHT_LIMIT
        )


class WageNetwork:
    """A built-in model adapted to WAGE: each Conv/Linear with the ReLU (and max-pool) after
    it becomes one :class:`WageUnit`; the last Linear is the output layer (no ReLU, no QA)."""

    def __init__(self, spec: M.ModelSpec, profile, seed: int):
        self.spec, self.profile = spec, profile
        rng = np.random.default_rng(seed)
        items = list(M.layer_shapes(spec))
        self.units: list[WageUnit] = []
        self.plan: list = []  # units and forward-only reshapes (flatten), in order
        j = 0
        while j < len(items):
            i, layer, in_shape, _out = items[j]
            if isinstance(layer, M.Conv | M.Linear):
                follow = [it[1] for it in items[j + 1 : j + 3]]
                relu = bool(follow) and isinstance(follow[0], M.ReLU)
                pool = 0
                if relu and len(follow) > 1 and isinstance(follow[1], M.MaxPool):
                    pool = follow[1].kernel
                elif follow and isinstance(follow[0], M.MaxPool):
                    raise ValueError(
                        f"{spec.name}: WAGE pools the int32 sums before ReLU; layer {i + 1} "
                        "(max-pool without ReLU) is not supported"
                    )
                name = layer_name(i, layer)
                if isinstance(layer, M.Conv):
                    k, cin = layer.kernel, in_shape[2]
                    fan_in = k * k * cin
                    w = init_weights(rng, (layer.out_channels, k, k, cin), fan_in)
                    unit = WageUnit(
                        name,
                        i,
                        w,
                        alpha_shift(fan_in),
                        conv_k=k,
                        pad=layer.pad,
                        pool=pool,
                        hidden=relu,
                    )
                else:
                    fan_in = in_shape[0]
                    w = init_weights(rng, (layer.out_features, fan_in), fan_in)
                    unit = WageUnit(name, i, w, alpha_shift(fan_in), pool=pool, hidden=relu)
                if not relu and j + 1 != len(items):
                    raise ValueError(
                        f"{spec.name}: layer {i} ({name}) has no ReLU after it and is not the "
                        "last layer; WAGE needs ReLU after every hidden layer"
                    )
                self.units.append(unit)
                self.plan.append(unit)
                j += 1 + int(relu) + int(pool > 0)
                continue
            if isinstance(layer, M.Flatten):
                self.plan.append("flatten")
            elif not isinstance(layer, M.Dropout):
                raise ValueError(f"{spec.name}: layer {i} ({layer!r}) has no WAGE form here")
            j += 1
        if not self.units or self.units[-1].hidden:
            raise ValueError(f"{spec.name}: WAGE needs a final Linear layer without ReLU")
        self.units[0].first = True
        self.backend = None

    # ---- the step ------------------------------------------------------------------------
    def to_backend(self, backend) -> None:
        self.backend = backend
        for u in self.units:
            u.weight = backend.host.from_host(u.weight)

    def forward(self, x_int8, ctx: StepContext):
        a = ctx.backend.host.from_host(x_int8)
        self._shapes = []
        for item in self.plan:
            if item == "flatten":
                self._shapes.append(a.shape)
                a = a.reshape(a.shape[0], -1)
            else:
                item.in_shape = a.shape
                a = item.forward(a, ctx)
        return a

    def train_step(self, x_int8, labels, ctx: StepContext):
        be = ctx.backend
        acc = self.forward(x_int8, ctx)
        e = sse_error(acc, be.host.from_host(labels), self.units[-1].s, be.xp)
        shapes = list(self._shapes)
        for item in reversed(self.plan):
            if item == "flatten":
                e = e.reshape(shapes.pop())
            else:
                e = item.backward(e, ctx)
                if e is None:
                    break
        return be.host.to_host(be.host.argmax(acc))

    def predict(self, x_int8, ctx: StepContext):
        be = ctx.backend
        return be.host.to_host(be.host.argmax(self.forward(x_int8, ctx)))

    # ---- state -----------------------------------------------------------------------------
    def stored_weights(self) -> list[np.ndarray]:
        return [np.asarray(self.backend.host.to_host(u.weight)) for u in self.units]

    def state(self) -> dict[str, np.ndarray]:
        return {f"w{i}": w for i, w in enumerate(self.stored_weights())}

    def load_state(self, state: dict) -> None:
        for i, u in enumerate(self.units):
            w = np.asarray(state[f"w{i}"])
            if w.shape != u.weight.shape or int(np.abs(w.astype(np.int64)).max(initial=0)) > 64:
                raise ValueError(f"WAGE weights w{i}: bad shape {w.shape} or |W| > 64")
            u.weight = w.astype(np.int8)
        if self.backend is not None:
            self.to_backend(self.backend)


__all__ = ["WageNetwork", "alpha_shift", "round_log2", "sse_error"]
