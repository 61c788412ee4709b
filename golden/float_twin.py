"""The float32 twin: the same networks and data pipeline in float32, trained with SGD with
momentum and a softmax cross-entropy. It is the accuracy baseline integer training is compared
with (as the NITI paper did). NumPy only.

The twin starts from the same Xavier draw the integer network quantises, reads the same int8
inputs (as ``X * 2^-7``), uses the same dropout masks and the same batch order.
"""

from __future__ import annotations

import numpy as np

from nitihw.golden import models as M
from nitihw.golden.backend import NumpyHostOps
from nitihw.golden.datasets import INPUT_EXP
from nitihw.golden.init import init_float_weights
from nitihw.golden.models import layer_name
from nitihw.golden.randomness import random_bits

_host = NumpyHostOps()  # im2col and pooling are dtype-agnostic host operations


def float_matmul(a, b, layer: str, phase: str):
    """The float32 twin's products: plain float32 BLAS."""
    return a @ b


class _Weight:
    def __init__(self, name, w, matmul=float_matmul):
        self.name, self.weight = name, w
        self.velocity = np.zeros_like(w)
        self.grad = None
        self.matmul = matmul  # (a, b, layer, phase) -> float32 product

    def mm(self, a, b, phase):
        return self.matmul(a, b, self.name, phase)


class FLinear(_Weight):
    def forward(self, x, training):
        self.x = x
        return self.mm(x, self.weight.T, "forward")

    def backward(self, d, first):
        self.grad = self.mm(d.T, self.x, "weight-gradient")
        return None if first else self.mm(d, self.weight, "backward-error")


class FConv(_Weight):
    def __init__(self, name, w, pad, matmul=float_matmul):
        super().__init__(name, w, matmul)
        self.k, self.pad = w.shape[1], pad

    def forward(self, x, training):
        b, h, w, _ = x.shape
        cout = self.weight.shape[0]
        self.cols = _host.im2col(x, self.k, self.pad)
        ho, wo = h + 2 * self.pad - self.k + 1, w + 2 * self.pad - self.k + 1
        out = self.mm(self.cols, self.weight.reshape(cout, -1).T, "forward")
        return out.reshape(b, ho, wo, cout)

    def backward(self, d, first):
        b, ho, wo, cout = d.shape
        self.grad = self.mm(d.reshape(-1, cout).T, self.cols, "weight-gradient").reshape(
            self.weight.shape
        )
        if first:
            return None
        k, cin = self.k, self.weight.shape[3]
        flipped = self.weight[:, ::-1, ::-1, :].transpose(1, 2, 0, 3).reshape(k * k * cout, cin)
        dx = self.mm(_host.im2col(d, k, k - 1 - self.pad), flipped, "backward-error")
        return dx.reshape(b, ho - 2 * self.pad + k - 1, wo - 2 * self.pad + k - 1, cin)


class FReLU:
    def forward(self, x, training):
        self.pre = x
        return np.maximum(x, 0)

    def backward(self, d, first):
        return np.where(self.pre > 0, d, 0).astype(d.dtype)


class FMaxPool:
    def __init__(self, k):
        self.k = k

    def forward(self, x, training):
        self.in_shape = x.shape
        y, self.idx = _host.maxpool(x, self.k)
        return y

    def backward(self, d, first):
        return _host.maxpool_backward(d, self.idx, self.in_shape, self.k)


class FFlatten:
    def forward(self, x, training):
        self.in_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, d, first):
        return d.reshape(self.in_shape)


class FDropout:
    """Same masks as the integer Dropout (counter hash), inverted scaling by 2."""

    def __init__(self, stream_id):
        self.stream_id = stream_id
        self.seed = self.step = 0

    def forward(self, x, training):
        if not training:
            self.mask = None
            return x
        n = int(np.prod(x.shape[1:]))
        bits = random_bits(self.seed, self.step, self.stream_id, (n,), 1)
        self.mask = (2.0 * bits).astype(np.float32).reshape(x.shape[1:])
        return x * self.mask

    def backward(self, d, first):
        return d * self.mask


class FloatNetwork:
    """Float32 twin of a model spec; ``lr``, ``momentum`` and ``weight_decay`` set its SGD.
    ``dfp16`` makes its GEMMs DFP16 products on the backend's datapath (profile ``dfp16``)."""

    def __init__(
        self,
        spec: M.ModelSpec,
        seed: int,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        dfp16: bool = False,
    ):
        self.spec, self.seed, self.dfp16 = spec, seed, dfp16
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        floats = iter(init_float_weights(spec, seed))
        self.layers: list = []
        for i, layer, _in, _out in M.layer_shapes(spec):
            name = layer_name(i, layer)
            if isinstance(layer, M.Conv):
                self.layers.append(FConv(name, next(floats), layer.pad))
            elif isinstance(layer, M.Linear):
                self.layers.append(FLinear(name, next(floats)))
            elif isinstance(layer, M.ReLU):
                self.layers.append(FReLU())
            elif isinstance(layer, M.MaxPool):
                self.layers.append(FMaxPool(layer.kernel))
            elif isinstance(layer, M.Flatten):
                self.layers.append(FFlatten())
            elif isinstance(layer, M.Dropout):
                self.layers.append(FDropout(i))
        self.weight_layers = [x for x in self.layers if isinstance(x, _Weight)]

    def to_backend(self, backend) -> None:
        """The twin computes on NumPy; with ``dfp16`` its products go to ``backend``."""
        if not self.dfp16:
            if backend.name != "golden":
                raise ValueError("the float32 twin runs on NumPy only (use --backend golden)")
            return
        from nitihw.golden.dfp16 import Dfp16Matmul

        self._dfp = Dfp16Matmul(backend)
        for layer in self.weight_layers:
            layer.matmul = self._dfp

    def _use(self, ctx) -> None:
        # DFP16 products run on the backend of the step at hand (evaluation may use another)
        if self.dfp16:
            self._dfp.backend = ctx.backend

    def _forward(self, x_int8, training, seed=0, step=0):
        x = x_int8.astype(np.float32) * np.float32(2.0**INPUT_EXP)
        for layer in self.layers:
            if isinstance(layer, FDropout):
                layer.seed, layer.step = seed, step
            x = layer.forward(x, training)
        return x

    def train_step(self, x_int8, labels, ctx) -> np.ndarray:
        self._use(ctx)
        logits = self._forward(x_int8, True, ctx.seed, ctx.step)
        z = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        d = p
        d[np.arange(len(labels)), labels] -= 1.0
        d = (d / len(labels)).astype(np.float32)
        first = self.weight_layers[0]
        for layer in reversed(self.layers):
            d = layer.backward(d, layer is first)
            if d is None:
                break
        for w in self.weight_layers:
            g = w.grad + self.weight_decay * w.weight
            w.velocity = self.momentum * w.velocity + g
            w.weight = (w.weight - self.lr * w.velocity).astype(np.float32)
        return logits.argmax(axis=1)

    def predict(self, x_int8, ctx) -> np.ndarray:
        self._use(ctx)
        return self._forward(x_int8, False).argmax(axis=1)

    def stored_weights(self) -> list[np.ndarray]:
        return [w.weight for w in self.weight_layers]

    def state(self) -> dict[str, np.ndarray]:
        out = {}
        for i, w in enumerate(self.weight_layers):
            out[f"w{i}"], out[f"v{i}"] = w.weight, w.velocity
        return out

    def load_state(self, state: dict) -> None:
        for i, w in enumerate(self.weight_layers):
            w.weight = np.asarray(state[f"w{i}"], np.float32)
            w.velocity = np.asarray(state[f"v{i}"], np.float32)
