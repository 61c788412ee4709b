"""NITRO-D (Pirillo, Colombo, Roveri; arXiv 2407.11698): integer-only training with local losses.

The golden model of the method as the authors' code does it (``../shared/research/others.md``
§2), on a built-in NITI model spec adapted as follows:

- every ``Conv``/``Linear`` followed by ``ReLU`` becomes a NITRO-D **block**: weight layer ->
  NITRO scaling (``SF = 2^8 * fan_in``) -> NITRO-LeakyReLU (slope 1/4, mean correction 36),
  with its own learning **head**:

  * conv block: ``MaxPool(ks_h, ks_w)`` (see :func:`head_pool_kernel`; skipped when 1x1) ->
    flatten -> ``Linear(d -> classes)`` -> scaling ``2^8 * d``;
  * linear block: ``Linear(out -> classes)`` -> scaling ``2^8 * out``;

- ``MaxPool`` and ``Flatten`` specs between blocks are kept as forward-only layers (no error
  crosses a block boundary, so they need no backward);
- ``Dropout`` specs are **dropped** (the paper's digit-sized configurations use none; NITRO-D's
  own dropout is a different, CuPy-RNG one);
- the last ``Linear`` (not followed by ``ReLU``) is the **output layer**: ``Linear -> scaling``,
  trained by the global loss. A spec without one, or with a weight layer that is neither,
  raises ``ValueError`` naming the model and the layer.

One training step: the full forward (each block keeps its input, its scaling output and its
output); the RSS loss on the output layer with one-hot targets ``{0, 32}``,
``dL = (yhat - y)`` wrapped to int8 as NumPy's int8 subtraction does; the output layer's weight
update; then each block in reverse order: head forward on the stored block output, the same
loss, head backward (error with the OLD head weights, then the head update), identity through
the scaling layer, NITRO-LeakyReLU backward (``trunc_div(d, ginv)``, ``ginv`` 1 / 4 / INT32_MAX)
and the block's own weight update. No error reaches a block's input.

**Quirk reproduced (CNN models).** In the reference, ``IntegerLocalLossCNN.blocks`` also holds
the classifier's linear blocks, and its ``backward`` first runs the MLP classifier's backward
(output layer, then the linear blocks) and then loops over *all* blocks again. Linear blocks of
a model that has conv blocks therefore get **two** updates per batch, the second one with the
already-updated head (on the same stored activations). ``fc_double_update=None`` (default)
does this exactly when the model has a conv block; ``True``/``False`` force it.

**IntegerSGD**: ``W -= trunc_div(G, lr_inv * amp) + trunc_div(W, decay_inv)`` through
:meth:`Backend.update_div`, ``lr_inv = 2**ctx.mu``; ``amp`` is 1 for heads and the output layer,
``2^6 * classes`` for block weight layers, times ``H_out * W_out // (ks_h * ks_w)`` for conv
blocks (the reference's ``dim_out**2 // (ks_h*ks_w)``, square images). ``decay_inv``:
``fwd_decay_inv`` for block weight layers, ``subnet_decay_inv`` for heads and the output layer
(defaults 12000 / 3000, the paper's MNIST MLP; 0 turns decay off).

**Datapath.** Every GEMM goes through :meth:`Backend.gemm` with the int8 tensor as the A (left)
operand and the int32 one (weights or deltas) as B: forward ``x @ W^T``, head backward error
``dL @ W``, weight gradients as ``G^T = x^T @ d`` (``cols^T @ d`` for convs) transposed on the
host. int32 sums wrap silently in the reference: build the backend with
``NumpyBackend(accumulator_bits=32, overflow="wrap")`` (the ``nitro-d`` profile's policy); the GEMM
results are then int64 arrays holding wrapped values, and ``be.overflow_events`` counts them.
The scaling layer is :meth:`Backend.divide` (``saturate(trunc_div(acc, SF))`` to [-127, 127]).
NITRO-LeakyReLU, the loss, the head max-pool and the input normalisation are host operations
written here in NumPy (so this model needs a backend whose arrays are NumPy arrays).

**Init**: integer Kaiming-uniform, ``bound = min(64, (1372*128*1732) // (isqrt(fan_in)*10^6))``,
``W ~ integers[-bound, bound]`` (int32, never clamped afterwards) from one
``np.random.default_rng(seed)``, drawn in the order of :meth:`NitroNetwork.stored_weights`:
each block's weight layer then its head, block by block, then the output layer.

**Input**: the datasets give int8 images in [0, 127]. :meth:`NitroNetwork.prepare` computes the
per-channel integer mean and MAD (mean absolute deviation; both truncating means) of the first
25,000 training images; the forward then applies
``clamp(trunc_div((x - mean) * 51, MAD), -127, 127)``. The reference clamps to -128; we use the
symmetric int8 range of the rest of nitihw (only pixels more than 2.5 MAD below the mean
differ). Without :meth:`prepare`, mean 0 / MAD 51: the identity on the input. No augmentation.

Differences from the reference that change no arithmetic rule: NHWC activations and
``[C_out, k, k, C_in]`` conv weights (the reference is NCHW, so flatten orders differ), NumPy's
``default_rng`` instead of ``np.random.randint``, and the partial last batch of an epoch is
trained (the reference drops it; that is the caller's choice of batches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nitihw.golden import models as M
from nitihw.golden.backend import Backend, OpTag
from nitihw.golden.layers import StepContext
from nitihw.golden.profiles import Profile
from nitihw.golden.rounding import trunc_div, wrap

INT32_MAX = 2**31 - 1
#: NITRO-LeakyReLU: negative slope 1/4 and its pre-computed mean correction.
LEAKY_SLOPE_INV = 4
LEAKY_MEAN_CORRECTION = 36
#: One-hot target value of the RSS loss.
TARGET = 32
#: Scaling factor of a layer: ``SCALE_BASE * fan_in``.
SCALE_BASE = 2**8
#: Largest head input (``pred_decoder_dim``, 4096 in all the paper's CNN runs).
DECODER_DIM = 4096
#: Learning-rate amplification of block weight layers: ``AMP_BASE * classes``.
AMP_BASE = 2**6
#: Input normalisation: ``(x - mean) * 51 / MAD`` (51 ~ 64 / 1.25), statistics of this many images.
NORM_GAIN = 51
NORM_IMAGES = 25_000
INPUT_LIMIT = 127
#: ``1000 * sqrt(2 / (1 + (1/4)^2))``: the reference's integer Kaiming gain for slope 1/4.
KAIMING_GAIN = 1372
DEFAULT_FWD_DECAY_INV = 12000
DEFAULT_SUBNET_DECAY_INV = 3000


# ---- primitives ---------------------------------------------------------------------------------
def kaiming_bound(fan_in: int) -> int:
    """Integer Kaiming-uniform bound: ``min(64, (1372*128*1732) // (isqrt(fan_in) * 10^6))``.

    Example: ``kaiming_bound(27) == 60``, ``kaiming_bound(1152) == 9``.
    """
    if fan_in < 1:
        raise ValueError(f"fan_in must be >= 1, got {fan_in}")
    return min(64, (KAIMING_GAIN * 128 * 1732) // (math.isqrt(fan_in) * 10**6))


def nitro_leaky_relu(x) -> np.ndarray:
    """NITRO-LeakyReLU: ``clamp(x, 0, 127) + trunc_div(clamp(x, -127, 0), 4) - 36`` as int8.

    The output lies in [-67, 91], so the reference's int8 arithmetic never wraps here.
    """
    x = np.asarray(x).astype(np.int64)
    pos = np.clip(x, 0, 127)
    neg = trunc_div(np.clip(x, -127, 0), LEAKY_SLOPE_INV)
    return (pos + neg - LEAKY_MEAN_CORRECTION).astype(np.int8)


def leaky_relu_grad_inv(x) -> np.ndarray:
    """The reference's inverse slope: 1 on [0, 127), 4 on [-127, 0), INT32_MAX elsewhere
    (``x >= 127`` or ``x < -127``: the saturated parts)."""
    x = np.asarray(x).astype(np.int64)
    return np.where(
        (x >= 0) & (x < 127), 1, np.where((x >= -127) & (x < 0), LEAKY_SLOPE_INV, INT32_MAX)
    )


def nitro_leaky_relu_backward(delta, x) -> np.ndarray:
    """``trunc_div(delta, ginv(x))`` (int64 holding int32 values); ``x`` is the forward input."""
    return trunc_div(delta, leaky_relu_grad_inv(x))


def one_hot_targets(labels, classes: int, target: int = TARGET) -> np.ndarray:
    labels = np.asarray(labels, np.int64)
    y = np.zeros((len(labels), classes), np.int64)
    y[np.arange(len(labels)), labels] = target
    return y


def rss_error(yhat, labels, classes: int, target: int = TARGET) -> np.ndarray:
    """Gradient of the RSS loss ``sum((y - yhat)^2)``: ``yhat - y`` wrapped to int8, as the
    reference's ``np.subtract(yhat, y, dtype='int8')`` does (``yhat - 32 < -128`` wraps:
    ``-127 - 32 -> 97``)."""
    diff = np.asarray(yhat).astype(np.int64) - one_hot_targets(labels, classes, target)
    return wrap(diff, 8).astype(np.int8)


def rss_loss(yhat, labels, classes: int, target: int = TARGET) -> int:
    """The RSS loss itself (for monitoring; training only needs :func:`rss_error`)."""
    diff = np.asarray(yhat).astype(np.int64) - one_hot_targets(labels, classes, target)
    return int(np.sum(diff * diff))


def head_pool_kernel(channels: int, h: int, w: int, dim: int = DECODER_DIM) -> tuple[int, int]:
    """The head max-pool of a conv block, as the reference chooses it: double ``ks_h``, then
    ``ks_w`` if still needed, alternately, until ``C * ceil(H/ks_h) * ceil(W/ks_w) <= dim``
    (or ``ks_h`` reaches ``H``). Example: ``(128, 32, 32) -> (8, 4)``, ``(20, 24, 24) -> (2, 2)``.
    """
    ks_h = ks_w = 1
    dh, dw = h, w
    d = channels * dh * dw
    while d > dim and ks_h < h:
        ks_h *= 2
        dh = -(-h // ks_h)
        d = channels * dh * dw
        if d > dim:
            ks_w *= 2
            dw = -(-w // ks_w)
            d = channels * dh * dw
    return ks_h, ks_w


def head_pool_padding(h: int, w: int, ks_h: int, ks_w: int) -> tuple[int, int]:
    """Padding (each side) that makes the pool produce ``ceil(H/ks_h)`` rows (reference rule)."""
    return (ks_h * (-(-h // ks_h) - h // ks_h)) // 2, (ks_w * (-(-w // ks_w) - w // ks_w)) // 2


def head_maxpool(x, ks_h: int, ks_w: int, pad_h: int = 0, pad_w: int = 0):
    """``(ks_h, ks_w)`` / stride ``(ks_h, ks_w)`` max-pool of NHWC int8, padding below any
    int8 (never chosen). Returns ``(y int8, idx)``: ``idx`` is the first maximum of each window
    in row-major window order, as the reference's ``argmax``."""
    b, h, w, c = x.shape
    xp = np.pad(
        np.asarray(x).astype(np.int16),
        ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)),
        constant_values=np.iinfo(np.int16).min,
    )
    ho = (h + 2 * pad_h - ks_h) // ks_h + 1
    wo = (w + 2 * pad_w - ks_w) // ks_w + 1
    win = xp[:, : ho * ks_h, : wo * ks_w, :].reshape(b, ho, ks_h, wo, ks_w, c)
    win = win.transpose(0, 1, 3, 5, 2, 4).reshape(b, ho, wo, c, ks_h * ks_w)
    idx = win.argmax(axis=-1)
    y = np.take_along_axis(win, idx[..., None], axis=-1)[..., 0]
    return y.astype(np.int8), idx


def head_maxpool_backward(d, idx, in_shape, ks_h: int, ks_w: int, pad_h: int = 0, pad_w: int = 0):
    """Route each delta to its window's first maximum; padding positions are dropped."""
    b, h, w, c = in_shape
    _, ho, wo, _ = d.shape
    onehot = idx[..., None] == np.arange(ks_h * ks_w)
    routed = np.where(onehot, d[..., None], 0).astype(d.dtype)
    routed = routed.reshape(b, ho, wo, c, ks_h, ks_w).transpose(0, 1, 4, 2, 5, 3)
    out = np.zeros((b, h + 2 * pad_h, w + 2 * pad_w, c), d.dtype)
    out[:, : ho * ks_h, : wo * ks_w, :] = routed.reshape(b, ho * ks_h, wo * ks_w, c)
    return out[:, pad_h : pad_h + h, pad_w : pad_w + w, :]


def input_statistics(train_x, images: int = NORM_IMAGES) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel integer mean and MAD (truncating means) of the first ``images`` NHWC images.
    A MAD of 0 (a constant channel) is raised to 1."""
    x = np.asarray(train_x)[:images].astype(np.int64)
    axes = tuple(range(x.ndim - 1))
    n = int(np.prod([x.shape[a] for a in axes]))
    if n == 0:
        raise ValueError("input_statistics needs at least one training image")
    mean = trunc_div(x.sum(axis=axes), n)
    mad = trunc_div(np.abs(x - mean).sum(axis=axes), n)
    return mean, np.maximum(mad, 1)


def normalize_input(x, mean, mad) -> np.ndarray:
    """``clamp(trunc_div((x - mean) * 51, MAD), -127, 127)`` as int8 (channels last)."""
    z = trunc_div((np.asarray(x).astype(np.int64) - mean) * NORM_GAIN, mad)
    return np.clip(z, -INPUT_LIMIT, INPUT_LIMIT).astype(np.int8)


# ---- layers -------------------------------------------------------------------------------------
@dataclass(eq=False)
class WeightUnit:
    """A NITRO-D weight layer followed by its scaling layer: ``divide(x @ W^T, SF)``.

    ``kind`` is ``"linear"`` (``W`` is ``(out, in)``) or ``"conv"`` (``W`` is
    ``[C_out, k, k, C_in]``, stride 1, zero padding ``pad``).
    """

    name: str
    kind: str
    weight: np.ndarray  # int32
    amp: int
    decay_inv: int
    pad: int = 0
    x: object = field(default=None, repr=False)  # the stored input (im2col rows for a conv)

    @property
    def fan_in(self) -> int:
        return int(np.prod(self.weight.shape[1:]))

    @property
    def scale(self) -> int:
        return SCALE_BASE * self.fan_in

    def tag(self, phase: str) -> OpTag:
        return OpTag(self.name, phase)

    def forward(self, x, be: Backend, keep: bool):
        """int8 ``x`` (NHWC for a conv, (B, in) for a linear) -> int8 scaling output."""
        w = self.weight
        if self.kind == "conv":
            rows, acc, shape = be.conv(x, w, self.pad, self.tag("forward"))
            out = be.divide(acc, self.scale, self.tag("forward")).reshape(shape)
        else:
            rows = x
            acc = be.gemm(x, w.T, self.tag("forward"))
            out = be.divide(acc, self.scale, self.tag("forward"))
        self.x = rows if keep else None
        return out

    def backward_error(self, d, be: Backend):
        """``d @ W`` with the current (old) weights: int8 ``d`` (B, out) -> (B, in)."""
        return be.gemm(d, self.weight, self.tag("backward-error"))

    def update(self, d, lr_inv: int, be: Backend) -> None:
        """Weight gradient ``G^T = x^T @ d`` (int8 A, int32 B), then IntegerSGD."""
        cout = self.weight.shape[0]
        d = d.reshape(-1, cout)
        g_t = be.gemm(self.x.T, d, self.tag("weight-gradient"))
        g = g_t.T.reshape(self.weight.shape)
        self.weight = be.update_div(
            self.weight, g, lr_inv * self.amp, self.decay_inv, self.tag("update")
        )


@dataclass(eq=False)
class Block:
    """A local-loss block: weight layer + scaling + NITRO-LeakyReLU, and its learning head
    (``[MaxPool(ks_h, ks_w)] -> Flatten -> Linear -> scaling``)."""

    fwd: WeightUnit
    head: WeightUnit
    pool: tuple[int, int, int, int] | None = None  # (ks_h, ks_w, pad_h, pad_w) for conv heads
    pre: object = field(default=None, repr=False)  # scaling output (LeakyReLU input)
    out: object = field(default=None, repr=False)  # block output

    @property
    def kind(self) -> str:
        return self.fwd.kind

    def forward(self, x, be: Backend, keep: bool):
        pre = self.fwd.forward(x, be, keep)
        out = nitro_leaky_relu(pre)
        if keep:
            self.pre, self.out = pre, out
        return out

    def train(self, labels, classes: int, lr_inv: int, be: Backend) -> np.ndarray:
        """Head forward on the stored output, loss, head update, block update.
        Returns the head's int8 predictions (for monitoring)."""
        h = self.out
        if self.pool is not None:
            h, idx = head_maxpool(h, *self.pool)
        pooled_shape = h.shape
        yhat = self.head.forward(h.reshape(h.shape[0], -1), be, keep=True)
        dl = be.host.from_host(rss_error(be.host.to_host(yhat), labels, classes))
        dx = self.head.backward_error(dl, be)
        self.head.update(dl, lr_inv, be)
        dx = dx.reshape(pooled_shape)
        if self.pool is not None:
            dx = head_maxpool_backward(dx, idx, self.out.shape, *self.pool)
        d = nitro_leaky_relu_backward(dx, self.pre)  # scaling backward: identity
        self.fwd.update(d, lr_inv, be)
        return yhat


# ---- network ------------------------------------------------------------------------------------
class NitroNetwork:
    """A NITI model spec adapted to NITRO-D (see the module docstring); the interface of
    :class:`nitihw.golden.network.IntegerNetwork`.

    Attributes: ``spec``, ``profile``, ``backend``, ``classes``, ``blocks`` (in forward order),
    ``output`` (the output layer), ``units`` (every weight layer in :meth:`stored_weights`
    order), ``dropped`` (indices of the Dropout specs left out), ``fc_double_update``.
    """

    def __init__(
        self,
        spec: M.ModelSpec,
        profile: Profile | None = None,
        seed: int = 0,
        fwd_decay_inv: int = DEFAULT_FWD_DECAY_INV,
        subnet_decay_inv: int = DEFAULT_SUBNET_DECAY_INV,
        fc_double_update: bool | None = None,
        decoder_dim: int = DECODER_DIM,
    ):
        if fwd_decay_inv < 0 or subnet_decay_inv < 0:
            raise ValueError("decay_inv values must be >= 0 (0: no weight decay)")
        self.spec, self.profile, self.seed = spec, profile, seed
        self.backend: Backend | None = None
        self.mean = np.zeros(spec.input_shape[2], np.int64)
        self.mad = np.full(spec.input_shape[2], NORM_GAIN, np.int64)
        self.blocks: list[Block] = []
        self.dropped: list[int] = []
        self._seq: list[tuple] = []  # ("block", Block) | ("pool", k) | ("flatten",) | ("output",)

        shapes = list(M.layer_shapes(spec))
        if not shapes or not isinstance(shapes[-1][1], M.Linear):
            last = shapes[-1][1] if shapes else None
            raise ValueError(
                f"model {spec.name!r}: NITRO-D needs a final Linear output layer, "
                f"but the last layer is {last!r}"
            )
        self.classes = shapes[-1][1].out_features
        rng = np.random.default_rng(seed)

        def init(shape, fan_in):
            b = kaiming_bound(fan_in)
            return rng.integers(-b, b + 1, size=shape, dtype=np.int32)

        amp_base = AMP_BASE * self.classes
        n = len(shapes)
        i = 0
        self.output: WeightUnit | None = None
        while i < n:
            idx, layer, in_shape, out_shape = shapes[i]
            nxt = shapes[i + 1][1] if i + 1 < n else None
            kind = type(layer).__name__.lower()
            if isinstance(layer, M.Conv | M.Linear) and isinstance(nxt, M.ReLU):
                name = f"{idx}:{kind}"
                if isinstance(layer, M.Conv):
                    k, cin = layer.kernel, in_shape[2]
                    ho, wo, cout = out_shape
                    w = init((cout, k, k, cin), k * k * cin)
                    ks_h, ks_w = head_pool_kernel(cout, ho, wo, decoder_dim)
                    pad_h, pad_w = head_pool_padding(ho, wo, ks_h, ks_w)
                    dec = cout * -(-ho // ks_h) * -(-wo // ks_w)
                    amp = amp_base * ((ho * wo) // (ks_h * ks_w))
                    fwd = WeightUnit(name, "conv", w, amp, fwd_decay_inv, pad=layer.pad)
                    pool = (ks_h, ks_w, pad_h, pad_w) if ks_h * ks_w > 1 else None
                else:
                    dec = out_shape[0]
                    w = init((dec, in_shape[0]), in_shape[0])
                    fwd = WeightUnit(name, "linear", w, amp_base, fwd_decay_inv)
                    pool = None
                head_w = init((self.classes, dec), dec)
                head = WeightUnit(f"{idx}:head", "linear", head_w, 1, subnet_decay_inv)
                block = Block(fwd, head, pool)
                self.blocks.append(block)
                self._seq.append(("block", block))
                i += 2
                continue
            if isinstance(layer, M.Linear) and i == n - 1:
                w = init((layer.out_features, in_shape[0]), in_shape[0])
                self.output = WeightUnit(f"{idx}:linear", "linear", w, 1, subnet_decay_inv)
                self._seq.append(("output",))
            elif isinstance(layer, M.Conv | M.Linear):
                raise ValueError(
                    f"model {spec.name!r}: layer {idx} ({layer!r}) is neither followed by ReLU "
                    "(a NITRO-D block) nor the final Linear (the output layer)"
                )
            elif isinstance(layer, M.MaxPool):
                if not self.blocks:
                    raise ValueError(
                        f"model {spec.name!r}: layer {idx} ({layer!r}) comes before any block"
                    )
                self._seq.append(("pool", layer.kernel))
            elif isinstance(layer, M.Flatten):
                self._seq.append(("flatten",))
            elif isinstance(layer, M.Dropout):
                self.dropped.append(idx)
            else:
                raise ValueError(
                    f"model {spec.name!r}: layer {idx} ({layer!r}) cannot be adapted to NITRO-D "
                    "(a ReLU must follow a Conv or Linear)"
                )
            i += 1

        has_conv = any(b.kind == "conv" for b in self.blocks)
        self.fc_double_update = has_conv if fc_double_update is None else bool(fc_double_update)
        self.units: list[WeightUnit] = [u for b in self.blocks for u in (b.fwd, b.head)]
        self.units.append(self.output)

    # ---- input ----------------------------------------------------------------------------------
    def prepare(self, train_x) -> None:
        """Per-channel integer mean and MAD of the first 25,000 training images (kept in the
        state); the forward normalises every input with them."""
        mean, mad = input_statistics(train_x)
        if mean.shape != (self.spec.input_shape[2],):
            raise ValueError(
                f"prepare: images have {mean.shape[0]} channels, model {self.spec.name!r} "
                f"expects {self.spec.input_shape[2]}"
            )
        self.mean, self.mad = mean, mad

    # ---- steps ----------------------------------------------------------------------------------
    def to_backend(self, be: Backend) -> None:
        self.backend = be
        for u in self.units:
            u.weight = be.host.from_host(u.weight)

    @staticmethod
    def lr_inv(ctx: StepContext) -> int:
        """``2**ctx.mu`` (the paper's 512 is mu = 9)."""
        if not 0 <= ctx.mu <= 30:
            raise ValueError(f"nitro-d: mu is log2(lr_inv) and must be in 0..30, got {ctx.mu}")
        return 1 << int(ctx.mu)

    def forward(self, x_int8, ctx: StepContext, keep: bool = False):
        """The int8 output-layer predictions ``yhat`` (B, classes)."""
        be = ctx.backend
        t = be.host.from_host(normalize_input(x_int8, self.mean, self.mad))
        for item in self._seq:
            if item[0] == "block":
                t = item[1].forward(t, be, keep)
            elif item[0] == "pool":
                t, _ = be.host.maxpool(t, item[1])
            elif item[0] == "flatten":
                t = t.reshape(t.shape[0], -1)
            else:
                t = self.output.forward(t, be, keep)
        return t

    def backward_order(self) -> list[Block]:
        """Blocks in the order they train after the output layer: linear blocks in reverse,
        then (reference quirk, CNN models) every block in reverse again, else the conv blocks
        in reverse."""
        fc = [b for b in self.blocks if b.kind == "linear"]
        conv = [b for b in self.blocks if b.kind == "conv"]
        rest = self.blocks if self.fc_double_update else conv
        return fc[::-1] + rest[::-1]

    def train_step(self, x_int8, labels, ctx: StepContext):
        """Forward, global loss and output update, then every block's local step.
        Returns the host predictions (first maximum of the output)."""
        be = ctx.backend
        lr_inv = self.lr_inv(ctx)
        labels = np.asarray(labels)
        yhat = self.forward(x_int8, ctx, keep=True)
        dl = be.host.from_host(rss_error(be.host.to_host(yhat), labels, self.classes))
        self.output.update(dl, lr_inv, be)  # scaling backward: identity; no error goes further
        for block in self.backward_order():
            block.train(labels, self.classes, lr_inv, be)
        for u in self.units:
            u.x = None
        for b in self.blocks:
            b.pre = b.out = None
        return be.host.to_host(be.host.argmax(yhat))

    def predict(self, x_int8, ctx: StepContext) -> np.ndarray:
        be = ctx.backend
        return be.host.to_host(be.host.argmax(self.forward(x_int8, ctx)))

    # ---- state ----------------------------------------------------------------------------------
    def stored_weights(self) -> list[np.ndarray]:
        """Host int32 weights: per block its weight layer then its head, then the output."""
        to_host = self.backend.host.to_host if self.backend is not None else np.asarray
        return [np.asarray(to_host(u.weight)) for u in self.units]

    def state(self) -> dict[str, np.ndarray]:
        out = {f"w{i}": w for i, w in enumerate(self.stored_weights())}
        out["norm_mean"], out["norm_mad"] = self.mean.copy(), self.mad.copy()
        return out

    def load_state(self, state: dict) -> None:
        for i, u in enumerate(self.units):
            w = np.asarray(state[f"w{i}"])
            if w.shape != u.weight.shape:
                raise ValueError(
                    f"state w{i} ({u.name}): shape {w.shape}, expected {u.weight.shape}"
                )
            u.weight = w.astype(np.int32)
        if "norm_mean" in state:
            self.mean = np.asarray(state["norm_mean"]).astype(np.int64)
            self.mad = np.asarray(state["norm_mad"]).astype(np.int64)
        if self.backend is not None:
            self.to_backend(self.backend)
