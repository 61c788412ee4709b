"""Every built-in model builds, has NITI's shapes, and takes integer training steps."""

import numpy as np
import pytest

from nitihw.golden import NumpyBackend
from nitihw.golden.layers import StepContext
from nitihw.golden.models import MODELS, get_model_spec, layer_shapes
from nitihw.golden.network import IntegerNetwork, build_network
from nitihw.golden.profiles import get_profile


def weight_shapes(name):
    net = IntegerNetwork(get_model_spec(name), get_profile("niti"), seed=0)
    return [w.weight.shape for w in net.weight_layers]


def test_lenet_is_nitis():
    assert weight_shapes("lenet") == [(20, 5, 5, 1), (50, 5, 5, 20), (500, 800), (10, 500)]


@pytest.mark.parametrize(
    "name,convs",
    [
        ("vgg-small-7", [128, 128, 256, 256, 512, 512]),
        ("vgg-small-8", [128, 128, 128, 256, 256, 512, 512]),
        ("vgg-small-9", [128, 128, 128, 256, 256, 256, 512, 512]),
    ],
)
def test_vgg_small_shapes(name, convs):
    shapes = weight_shapes(name)
    assert [s[0] for s in shapes[:-1]] == convs
    assert all(s[1:3] == (3, 3) for s in shapes[:-1])
    assert shapes[-1] == (10, 8192)
    kinds = [type(layer).__name__ for _, layer, _, _ in layer_shapes(get_model_spec(name))]
    assert kinds[-3:] == ["Flatten", "Dropout", "Linear"]


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        get_model_spec("resnet")


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("profile", ["niti", "float32", "dfp16"])
def test_every_model_takes_a_step(name, profile):
    spec = get_model_spec(name)
    rng = np.random.default_rng(0)
    x = rng.integers(-127, 128, (2, *spec.input_shape)).astype(np.int8)
    y = np.array([1, 7])
    net = build_network(spec, get_profile(profile), seed=0)
    be = NumpyBackend()
    net.to_backend(be)
    ctx = StepContext(be, get_profile(profile), seed=0, step=0, mu=3)
    before = [w.copy() for w in net.stored_weights()]
    pred = net.train_step(x, y, ctx)
    assert pred.shape == (2,)
    after = net.stored_weights()
    assert any((a != b).any() for a, b in zip(after, before, strict=True))
    for a, b in zip(after, before, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
