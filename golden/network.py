"""Building a network from its spec, and the integer training step (numerics.md §3).

:func:`build_network` turns a :class:`~nitihw.golden.models.ModelSpec` into an
:class:`IntegerNetwork` (profiles ``niti``, ``niti-ref``, ``niti-2020``) or its float32 twin.
:meth:`IntegerNetwork.train_step` is the one training step every backend runs.
"""

from __future__ import annotations

import numpy as np

from nitihw.golden import layers as L
from nitihw.golden import models as M
from nitihw.golden import niti_compat
from nitihw.golden.backend import Backend
from nitihw.golden.datasets import INPUT_EXP
from nitihw.golden.init import init_float_weights, quantize_weights
from nitihw.golden.loss import error_shift
from nitihw.golden.models import layer_name
from nitihw.golden.profiles import Profile
from nitihw.golden.randomness import STREAM_LOSS
from nitihw.golden.rounding import shift_round, value_limit


class IntegerNetwork:
    """An integer network: a list of layers from :mod:`nitihw.golden.layers`."""

    def __init__(
        self,
        spec: M.ModelSpec,
        profile: Profile,
        seed: int,
        weight_bits: int = 8,
        operand_bits: int = 8,
    ):
        value_limit(operand_bits)  # checks it
        if operand_bits != 8 and weight_bits != 8:
            raise ValueError(
                f"--weight-bits {weight_bits} keeps int16 masters rounded to int8: it needs "
                f"8-bit operands, got --operand-bits {operand_bits}"
            )
        self.spec, self.profile, self.weight_bits = spec, profile, weight_bits
        self.operand_bits = operand_bits
        floats = iter(init_float_weights(spec, seed))
        self.layers: list = []
        for i, layer, _in, _out in M.layer_shapes(spec):
            name = layer_name(i, layer)
            if isinstance(layer, M.Conv | M.Linear):
                w, e = quantize_weights(next(floats), operand_bits)
                if isinstance(layer, M.Conv):
                    self.layers.append(L.Conv2d(name, w, e, layer.pad, weight_bits))
                else:
                    self.layers.append(L.Linear(name, w, e, weight_bits))
            elif isinstance(layer, M.ReLU):
                self.layers.append(L.ReLU(name))
            elif isinstance(layer, M.MaxPool):
                self.layers.append(L.MaxPool2d(name, layer.kernel))
            elif isinstance(layer, M.Flatten):
                self.layers.append(L.Flatten(name))
            elif isinstance(layer, M.Dropout):
                self.layers.append(L.Dropout(name, stream_id=i))
            else:
                raise TypeError(f"{spec.name}: unsupported layer {layer!r}")
        #: what a step runs: the layers, with each weight layer's ReLU and max-pool joined to
        #: it (:class:`~nitihw.golden.layers.Epilogue`)
        self.steps = L.with_epilogues(self.layers)
        self.weight_layers = [x for x in self.layers if isinstance(x, L.WeightLayer)]
        self.weight_layers[0].first = True
        self.backend: Backend | None = None

    def to_backend(self, backend: Backend) -> None:
        self.backend = backend
        for layer in self.weight_layers:
            layer.to_backend(backend)

    def forward(self, x_int8: np.ndarray, ctx: L.StepContext) -> L.Tensor:
        t = L.Tensor(ctx.backend.host.from_host(self.narrow_input(x_int8)), self.input_exp)
        for step in self.steps:
            t = step.forward(t, ctx)
        return t

    @property
    def input_exp(self) -> int:
        return INPUT_EXP + 8 - self.operand_bits

    def narrow_input(self, x_int8: np.ndarray) -> np.ndarray:
        """The dataset's int8 input at ``operand_bits``: rounded ``8 - b`` bits to the right
        (a host step, like the datasets' own quantisation); unchanged for int8."""
        if self.operand_bits == 8:
            return x_int8
        return shift_round(
            x_int8, 8 - self.operand_bits, "round", limit=value_limit(self.operand_bits)
        )

    def train_step(self, x_int8: np.ndarray, labels: np.ndarray, ctx: L.StepContext):
        """Forward, integer loss, backward with per-layer updates. Returns the predictions."""
        be = ctx.backend
        logits = self.forward(x_int8, ctx)
        rand = None
        bits = self.operand_bits
        if self.profile.loss_rounding == "sto":
            shape = logits.data.shape
            rand = be.host.random_bits(ctx.seed, ctx.step, STREAM_LOSS, shape, error_shift(bits))
        if self.profile.float32_loss:  # niti-compat: NITI 2021's float32 loss, on the host
            host = niti_compat.loss_2021(
                be.host.to_host(logits.data), logits.exp, labels, be.host.to_host(rand)
            )
            err = be.host.from_host(host)
        else:
            err = be.host.cross_entropy_error(
                logits.data,
                logits.exp,
                be.host.from_host(labels),
                self.profile.loss_rounding,
                rand,
                bits,
            )
        for step in reversed(self.steps):
            err = step.backward(err, ctx)
            if err is None:
                break
        return be.host.to_host(be.host.argmax(logits.data))

    def predict(self, x_int8: np.ndarray, ctx: L.StepContext) -> np.ndarray:
        be = ctx.backend
        return be.host.to_host(be.host.argmax(self.forward(x_int8, ctx).data))

    # ---- state ------------------------------------------------------------------------------
    def stored_weights(self) -> list[np.ndarray]:
        """Host copies of every weight layer's stored weights (int8, or int16 masters)."""
        return [
            np.asarray(self.backend.host.to_host(x.stored_weights())) for x in self.weight_layers
        ]

    def state(self) -> dict[str, np.ndarray]:
        return {f"w{i}": w for i, w in enumerate(self.stored_weights())}

    def load_state(self, state: dict) -> None:
        for i, layer in enumerate(self.weight_layers):
            w = np.asarray(state[f"w{i}"])
            if layer.master is not None:
                layer.master = w.astype(np.int16)
                layer.weight = shift_round(w, 8, "psto").reshape(w.shape)
            else:
                layer.weight = w.astype(np.int8)
        if self.backend is not None:
            self.to_backend(self.backend)


def build_network(
    spec: M.ModelSpec,
    profile: Profile,
    seed: int,
    weight_bits: int = 8,
    operand_bits: int = 8,
    **float_kw,
):
    """The network a profile trains: NITI's, WAGE's, NITRO-D's, or the float32 twin."""
    if profile.method in ("wage", "nitro-d") and weight_bits != 8:
        raise ValueError(f"--weight-bits {weight_bits}: profile {profile.name} has its own weights")
    if profile.method != "niti" and operand_bits != 8:
        raise ValueError(
            f"--operand-bits {operand_bits}: profile {profile.name} has its own widths; "
            "narrower operands are for the niti profiles"
        )
    if profile.method == "wage":
        from nitihw.golden.wage import WageNetwork

        return WageNetwork(spec, profile, seed)
    if profile.method == "nitro-d":
        from nitihw.golden.nitro_d import NitroNetwork

        return NitroNetwork(spec, profile, seed)
    if profile.integer:
        return IntegerNetwork(spec, profile, seed, weight_bits, operand_bits)
    from nitihw.golden.float_twin import FloatNetwork

    return FloatNetwork(spec, seed, dfp16=profile.name == "dfp16", **float_kw)
