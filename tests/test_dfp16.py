"""DFP16: the conversion, the chained integer products, and training."""

import numpy as np
import pytest

from nitihw.golden import NumpyBackend
from nitihw.golden.datasets import load_dataset
from nitihw.golden.dfp16 import HEADROOM, K_CHAIN, Dfp16Matmul, to_dfp
from nitihw.golden.train import TrainConfig, train


def test_to_dfp_puts_the_max_just_below_the_headroom():
    rng = np.random.default_rng(0)
    for scale in (1e-6, 0.3, 1.0, 7.5, 3e4):
        x = (rng.standard_normal(1000) * scale).astype(np.float32)
        i, e = to_dfp(x)
        assert i.dtype == np.int16
        top = int(np.abs(i.astype(int)).max())
        assert 2 ** (14 - HEADROOM) <= top <= 2 ** (15 - HEADROOM)
        np.testing.assert_array_equal(i, np.rint(np.ldexp(x.astype(np.float64), -e)))


def test_to_dfp_rounds_half_to_even_and_handles_zeros():
    i, e = to_dfp(np.array([1024.0, 0.5, 1.5, -2.5], np.float32))  # e = 0 for max 1024
    assert e == 0 and i.tolist() == [1024, 0, 2, -2]
    z, ez = to_dfp(np.zeros(5, np.float32))
    assert ez == 0 and not z.any()


def test_chained_products_are_exact_integer_sums():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 2 * K_CHAIN + 37)).astype(np.float32)
    b = rng.standard_normal((2 * K_CHAIN + 37, 5)).astype(np.float32)
    be = NumpyBackend()
    be.trace = []
    out = Dfp16Matmul(be)(a, b, "l", "forward")
    assert [e.shape for e in be.trace] == [(6, K_CHAIN, 5), (6, K_CHAIN, 5), (6, 37, 5)]
    ia, ea = to_dfp(a)
    ib, eb = to_dfp(b)
    want = np.zeros((6, 5), np.float32)
    for k0 in range(0, a.shape[1], K_CHAIN):
        part = ia[:, k0 : k0 + K_CHAIN].astype(np.int64) @ ib[k0 : k0 + K_CHAIN].astype(np.int64)
        want += np.ldexp(part.astype(np.float32), ea + eb)
    np.testing.assert_array_equal(out, want)
    assert np.allclose(out, a @ b, rtol=2e-2, atol=2e-2 * np.abs(a @ b).max())


@pytest.mark.parametrize("model", ["mlp-digits", "cnn-digits"])
def test_dfp16_trains_like_the_float_twin(model):
    data = load_dataset("digits")
    res = {
        p: train(TrainConfig(model=model, dataset="digits", profile=p, epochs=8), data)
        for p in ("dfp16", "float32")
    }
    assert res["dfp16"]["test_accuracy"] >= 0.9
    assert abs(res["dfp16"]["test_accuracy"] - res["float32"]["test_accuracy"]) <= 0.03
