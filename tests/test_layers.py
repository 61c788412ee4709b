"""Layers against direct loop oracles: convolution, its two backward GEMMs, pooling, update."""

import numpy as np
import pytest

from nitihw.golden import NumpyBackend, shift_round
from nitihw.golden.layers import Conv2d, Dropout, Linear, MaxPool2d, StepContext, Tensor
from nitihw.golden.profiles import get_profile


def ctx_for(profile="niti", mu=3, **kw):
    return StepContext(NumpyBackend(), get_profile(profile), mu=mu, **kw)


def conv_oracle(x, w, pad):
    """Direct 7-loop convolution, int64, NHWC x [C_out, k, k, C_in]."""
    b, h, wd, _ = x.shape
    cout, k = w.shape[0], w.shape[1]
    xp = np.pad(x.astype(np.int64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = h + 2 * pad - k + 1, wd + 2 * pad - k + 1
    out = np.zeros((b, ho, wo, cout), np.int64)
    for y in range(ho):
        for xx in range(wo):
            patch = xp[:, y : y + k, xx : xx + k, :]
            out[:, y, xx, :] = np.einsum("bhwc,ohwc->bo", patch, w.astype(np.int64))
    return out


def requant_round(acc):
    m = int(np.abs(acc).max())
    s = max((m - 1).bit_length() - 7, 0) if m else 0
    return shift_round(acc, s, "round"), s


@pytest.mark.parametrize("k,pad", [(3, 1), (5, 0), (3, 0), (3, 2)])
def test_conv_forward_backward_against_loops(k, pad):
    rng = np.random.default_rng(k * 10 + pad)
    x = rng.integers(-127, 128, (2, 7, 6, 3)).astype(np.int8)
    w = rng.integers(-127, 128, (4, k, k, 3)).astype(np.int8)
    conv = Conv2d("c", w.copy(), -7, pad=pad)
    ctx = ctx_for(mu=20)  # mu large: g = G clamped, so the update exposes G's sign pattern
    y = conv.forward(Tensor(x, -7), ctx)
    acc = conv_oracle(x, w, pad)
    a, s = requant_round(acc)
    np.testing.assert_array_equal(y.data, a)
    assert y.exp == -14 + s

    err = rng.integers(-127, 128, y.data.shape).astype(np.int8)
    prev = conv.backward(err, ctx)
    # backward error: d(sum err*y)/dx, by brute force on the linear map
    e32 = np.zeros(x.shape, np.int64)
    xp_shape = (x.shape[1] + 2 * pad, x.shape[2] + 2 * pad)
    full = np.zeros((2, *xp_shape, 3), np.int64)
    for yy in range(err.shape[1]):
        for xx in range(err.shape[2]):
            full[:, yy : yy + k, xx : xx + k, :] += np.einsum(
                "bo,ohwc->bhwc", err[:, yy, xx, :].astype(np.int64), w.astype(np.int64)
            )
    e32 = full[:, pad : pad + x.shape[1], pad : pad + x.shape[2], :]
    np.testing.assert_array_equal(prev, requant_round(e32)[0])
    # weight gradient and update
    xp = np.pad(x.astype(np.int64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    g = np.zeros(w.shape, np.int64)
    for yy in range(err.shape[1]):
        for xx in range(err.shape[2]):
            g += np.einsum(
                "bo,bhwc->ohwc",
                err[:, yy, xx, :].astype(np.int64),
                xp[:, yy : yy + k, xx : xx + k, :],
            )
    want = np.clip(w.astype(np.int64) - np.clip(g, -127, 127), -127, 127)
    np.testing.assert_array_equal(conv.weight, want)


def test_linear_update_rule_cases():
    rng = np.random.default_rng(3)
    x = rng.integers(-127, 128, (8, 5)).astype(np.int8)
    w = rng.integers(-60, 60, (3, 5)).astype(np.int8)
    err = rng.integers(-127, 128, (8, 3)).astype(np.int8)
    g = err.astype(np.int64).T @ x.astype(np.int64)
    m = (int(np.abs(g).max()) - 1).bit_length()
    for mu in (2, 5, m - 1, m + 3):
        lin = Linear("l", w.copy(), -7)
        lin.forward(Tensor(x, -7), ctx_for(mu=mu))
        lin.backward(err, ctx_for(mu=mu))
        shift = m - mu if m - mu >= 1 else 0
        want = np.clip(w - shift_round(g, shift, "psto").astype(np.int64), -127, 127)
        np.testing.assert_array_equal(lin.weight, want, err_msg=f"mu={mu}")


def test_zero_gradient_leaves_weights():
    w = np.ones((2, 3), np.int8)
    lin = Linear("l", w.copy(), -7)
    lin.forward(Tensor(np.zeros((4, 3), np.int8), -7), ctx_for())
    lin.backward(np.ones((4, 2), np.int8), ctx_for())
    np.testing.assert_array_equal(lin.weight, w)


def test_master_weights():
    w = np.array([[10, -20, 127]], np.int8)
    lin = Linear("l", w.copy(), -7, weight_bits=16)
    assert lin.master.dtype == np.int16 and (lin.master == w.astype(np.int16) * 256).all()
    x = np.array([[1, 1, 1]], np.int8)
    lin.forward(Tensor(x, -7), ctx_for(mu=4))
    lin.backward(np.array([[100]], np.int8), ctx_for(mu=4))
    # G = 100 per weight, m = 7, g = psto(100, 3) = 12 (100 = 12*8 + 4: P = 2 > R = 0)
    g = int(shift_round(np.array([100]), 3, "psto")[0])
    np.testing.assert_array_equal(lin.master, w.astype(np.int16) * 256 - g)
    np.testing.assert_array_equal(lin.weight, shift_round(lin.master, 8, "psto"))


def test_maxpool_routes_to_first_maximum():
    x = np.array([[[[3], [5]], [[5], [1]]]], np.int8)  # one 2x2 window, tie 5 at (0,1) and (1,0)
    pool = MaxPool2d("p", 2)
    y = pool.forward(Tensor(x, 0), ctx_for())
    assert y.data.reshape(-1).tolist() == [5]
    back = pool.backward(np.array([[[[9]]]], np.int8), ctx_for())
    assert back.reshape(-1).tolist() == [0, 9, 0, 0]


@pytest.mark.parametrize("shape,k", [((3, 6, 6, 4), 2), ((2, 7, 5, 3), 2), ((2, 9, 10, 2), 3)])
def test_maxpool_against_loops(shape, k):
    """Windows full of ties (values in -2..2) and odd sizes (the last row/column is dropped):
    the output, the first-maximum index and the routed error equal a plain loop's."""
    from nitihw.golden import NumpyBackend

    rng = np.random.default_rng(sum(shape) + k)
    x = rng.integers(-2, 3, shape).astype(np.int8)
    be = NumpyBackend()
    y, idx = be.host.maxpool(x, k)
    b, h, w, c = shape
    ho, wo = h // k, w // k
    err = rng.integers(-127, 128, (b, ho, wo, c)).astype(np.int8)
    back = be.host.maxpool_backward(err, idx, shape, k)
    want_back = np.zeros(shape, np.int8)
    for n, i, j, ch in np.ndindex(b, ho, wo, c):
        window = [int(x[n, i * k + dy, j * k + dx, ch]) for dy in range(k) for dx in range(k)]
        first = window.index(max(window))
        assert (y[n, i, j, ch], idx[n, i, j, ch]) == (max(window), first)
        want_back[n, i * k + first // k, j * k + first % k, ch] = err[n, i, j, ch]
    np.testing.assert_array_equal(back, want_back)


def test_dropout_mask_shared_by_batch_and_identity_at_eval():
    x = np.full((3, 64), 7, np.int8)
    d = Dropout("d", stream_id=5)
    y = d.forward(Tensor(x, -3), ctx_for(seed=1, step=2))
    assert y.exp == -2
    assert (y.data == y.data[0]).all() and 10 < int((y.data[0] == 7).sum()) < 54
    ev = ctx_for(training=False)
    out = d.forward(Tensor(x, -3), ev)
    assert out.exp == -3 and out.data is x


def test_first_argmax_is_numpys_first_maximum_without_argmax():
    """Max-pool and predictions take the FIRST maximum; first_argmax finds it with ``max`` only,
    so a backend's own argmax tie rule (CuPy's is not documented) cannot change the bits."""
    from nitihw.golden import NumpyBackend

    be = NumpyBackend()
    rng = np.random.default_rng(3)
    for shape in [(1000, 4), (200, 10), (5, 7, 9), (3, 1)]:
        for lim in (2, 128, 2**31):  # lim 2: ties in almost every row
            x = rng.integers(-lim, lim, shape)
            np.testing.assert_array_equal(be.host.first_argmax(x), x.argmax(axis=-1))
    x = np.array([[-(2**31), 2**31 - 1, 2**31 - 1, -5], [-7, -7, -7, -7]])
    np.testing.assert_array_equal(be.host.first_argmax(x), [1, 0])
