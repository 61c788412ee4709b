"""The built-in networks, each defined once as a list of layer specs.

The same spec builds the integer network (:mod:`nitihw.golden.layers`) and its float32 twin
(:mod:`nitihw.golden.float_twin`). Activations are NHWC; conv weights ``[C_out, kh, kw, C_in]``;
flatten order (h, w, c); no biases (as in NITI).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Conv:
    out_channels: int
    kernel: int
    pad: int = 0


@dataclass(frozen=True)
class Linear:
    out_features: int


@dataclass(frozen=True)
class ReLU:
    pass


@dataclass(frozen=True)
class MaxPool:
    kernel: int = 2


@dataclass(frozen=True)
class Flatten:
    pass


@dataclass(frozen=True)
class Dropout:
    pass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_shape: tuple[int, int, int]  # (H, W, C)
    layers: tuple
    mu: str  # default mu schedule, see nitihw.golden.train.MuSchedule
    about: str = ""


def _vgg_small(name: str, cfg: list) -> ModelSpec:
    layers: list = []
    for item in cfg:
        if item == "M":
            layers.append(MaxPool(2))
        else:
            layers += [Conv(item, 3, 1), ReLU()]
    layers += [Flatten(), Dropout(), Linear(10)]
    return ModelSpec(
        name,
        (32, 32, 3),
        tuple(layers),
        mu="5,4@100,3@150",
        about="NITI's CIFAR-10 VGG-small (2021 reference code)",
    )


MODELS: dict[str, ModelSpec] = {
    "mlp-digits": ModelSpec(
        "mlp-digits",
        (8, 8, 1),
        (Flatten(), Linear(128), ReLU(), Linear(10)),
        mu="3",
        about="64-128-10 MLP for scikit-learn's 8x8 digits",
    ),
    "cnn-digits": ModelSpec(
        "cnn-digits",
        (8, 8, 1),
        (Conv(16, 3, 1), ReLU(), MaxPool(2), Flatten(), Linear(10)),
        mu="3",
        about="small CNN for 8x8 digits, sized for RTL simulation",
    ),
    "mlp-mnist": ModelSpec(
        "mlp-mnist",
        (28, 28, 1),
        (Flatten(), Linear(100), ReLU(), Linear(50), ReLU(), Linear(10)),
        mu="3",
        about="784-100-50-10 MLP: NITRO-D's and PocketNN's MNIST MLP",
    ),
    "lenet": ModelSpec(
        "lenet",
        (28, 28, 1),
        (
            Conv(20, 5),
            ReLU(),
            MaxPool(2),
            Conv(50, 5),
            ReLU(),
            MaxPool(2),
            Flatten(),
            Linear(500),
            ReLU(),
            Linear(10),
        ),
        mu="3,2@20",
        about="NITI's MNIST LeNet",
    ),
    "vgg8b": ModelSpec(
        "vgg8b",
        (28, 28, 1),
        (
            *(Conv(128, 3, 1), ReLU(), Conv(256, 3, 1), ReLU(), MaxPool(2)),
            *(Conv(256, 3, 1), ReLU(), Conv(512, 3, 1), ReLU(), MaxPool(2)),
            *(Conv(512, 3, 1), ReLU(), MaxPool(2), Conv(512, 3, 1), ReLU(), MaxPool(2)),
            *(Flatten(), Linear(1024), ReLU(), Linear(10)),
        ),
        mu="3",
        about="NITRO-D's VGG8B for (Fashion-)MNIST: 128C3-256C3-MP-256C3-512C3-MP-512C3-MP-"
        "512C3-MP-FC1024-FC10",
    ),
    "vgg-small-7": _vgg_small("vgg-small-7", [128, 128, "M", 256, 256, "M", 512, 512, "M"]),
    "vgg-small-8": _vgg_small("vgg-small-8", [128] * 3 + ["M", 256, 256, "M", 512, 512, "M"]),
    "vgg-small-9": _vgg_small("vgg-small-9", [128] * 3 + ["M"] + [256] * 3 + ["M", 512, 512, "M"]),
}


def get_model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def layer_shapes(spec: ModelSpec):
    """Yield ``(index, layer_spec, in_shape, out_shape)`` with shapes without the batch dim."""
    shape = spec.input_shape
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, Conv):
            h, w, _c = shape
            out = (
                h + 2 * layer.pad - layer.kernel + 1,
                w + 2 * layer.pad - layer.kernel + 1,
                layer.out_channels,
            )
        elif isinstance(layer, MaxPool):
            out = (shape[0] // layer.kernel, shape[1] // layer.kernel, shape[2])
        elif isinstance(layer, Flatten):
            out = (math.prod(shape),)
        elif isinstance(layer, Linear):
            if len(shape) != 1:
                raise ValueError(f"{spec.name}: layer {i} is Linear but its input is {shape}")
            out = (layer.out_features,)
        else:
            out = shape
        yield i, layer, shape, out
        shape = out


def layer_name(i: int, layer) -> str:
    """A layer's name in reports and checkpoints: ``"3:conv"``."""
    return f"{i}:{type(layer).__name__.lower()}"
