"""WAGE: its integer re-expression against the reference's real-number semantics, and training.

The oracle below is written from the TensorFlow code's operators (research notes, others.md
§1.2-1.3) in exact rational arithmetic: Q, clip, Shift, QW, QA, QE, QG, the SSE loss and the
clipped update, with no knowledge of the shifts the integer form uses.
"""

import math
from fractions import Fraction as F

import numpy as np
import pytest

from nitihw.golden import NumpyBackend, shift_round
from nitihw.golden.datasets import load_dataset
from nitihw.golden.layers import StepContext
from nitihw.golden.models import Flatten, Linear, ModelSpec, ReLU, get_model_spec
from nitihw.golden.profiles import get_profile
from nitihw.golden.train import TrainConfig, train
from nitihw.golden.wage import (
    RAND_BITS,
    STREAM_QG,
    WageNetwork,
    alpha_shift,
    round_log2,
    sto_rand,
)


def test_round_log2_is_the_exact_sqrt2_test():
    for m in range(1, 1 << 16):
        assert round_log2(m) == round(math.log2(m)), m
    assert round_log2(181) == 7 and round_log2(182) == 8  # 128 * sqrt 2 = 181.02
    with pytest.raises(ValueError, match="m >= 1"):
        round_log2(0)


def test_ternary_weights_are_a_rne_shift_by_6():
    w = np.arange(-64, 65)
    want = np.sign(w) * (np.abs(w) > 32)  # RNE(W / 64): |W| == 32 is a tie that goes to 0
    np.testing.assert_array_equal(shift_round(w, 6, "rne"), want)


def test_alpha_matches_the_reference_vgg7_values():
    # fan-ins of WAGE's VGG7 (3x3 convs, then the two FC layers) -> the logged alphas
    fan_ins = [27, 1152, 1152, 2304, 2304, 4608, 8192, 1024]
    assert [1 << alpha_shift(f) for f in fan_ins] == [2, 16, 16, 16, 16, 32, 32, 16]


def test_sto_rand_thresholds_are_uniform():
    u = np.arange(1 << 12, dtype=np.int64) << (RAND_BITS - 12)  # every value of the top bits
    for s in (1, 5, 12):
        counts = np.bincount(sto_rand(u, s), minlength=1 << s)
        assert (counts == counts[0]).all() and len(counts) == 1 << s


# ---- the oracle: the reference's operators on exact rationals ------------------------------


def rne(x: F) -> int:
    return round(x)  # Python rounds Fractions half to even, as tf.round


def q(x: F, bits: int) -> F:
    s = 1 << (bits - 1)
    return F(rne(x * s), s)


def clip(x: F, bits: int) -> F:
    lim = 1 - F(1, 1 << (bits - 1))
    return min(max(x, -lim), lim)


def shift_of(m: F) -> F:
    """2^round(log2 m) for a positive rational m, exactly."""
    k = math.floor(math.log2(m))
    while F(2) ** (k + 1) <= m:
        k += 1
    while F(2) ** k > m:
        k -= 1
    return F(2) ** (k + (m * m >= F(2) ** (2 * k + 1)))


def oracle_step(ws, alphas, x, labels, lr_shift, seed, step):
    """One WAGE step of a Linear-ReLU-Linear net on rationals; returns the new stored W."""
    qw = [
        [[q(clip(w, 2), 2) / a for w in row] for row in wl]
        for wl, a in zip(ws, alphas, strict=True)
    ]
    xs = [[F(int(v), 128) for v in row] for row in x]

    def mm(a, w):  # a (B, K) @ w^T, w (N, K)
        return [[sum(ai * wi for ai, wi in zip(r, wr, strict=True)) for wr in w] for r in a]

    z1 = mm(xs, qw[0])
    h = [[max(v, F(0)) for v in r] for r in z1]
    a1 = [[q(clip(v, 8), 8) for v in r] for r in h]
    out = mm(a1, qw[1])
    e = [[out[b][c] - (1 if c == labels[b] else 0) for c in range(len(out[0]))] for b in range(2)]

    def qe(e):
        m = max(abs(v) for r in e for v in r)
        if m == 0:
            return e
        s = shift_of(m)
        return [[q(clip(v / s, 8), 8) for v in r] for r in e]

    e2 = qe(e)
    # backward to the hidden layer: dL/da1 = e2 @ QW2, QA's clip mask, QE, ReLU mask
    ea = [
        [sum(e2[b][c] * qw[1][c][j] for c in range(len(e2[0]))) for j in range(len(h[0]))]
        for b in range(2)
    ]
    ea = [
        [v if h[b][j] <= F(127, 128) else F(0) for j, v in enumerate(r)] for b, r in enumerate(ea)
    ]
    e1 = qe(ea)
    e1 = [[v if z1[b][j] > 0 else F(0) for j, v in enumerate(r)] for b, r in enumerate(e1)]
    grads = [
        [
            [sum(e1[b][o] * xs[b][i] for b in range(2)) for i in range(len(xs[0]))]
            for o in range(len(e1[0]))
        ],
        [
            [sum(e2[b][o] * a1[b][i] for b in range(2)) for i in range(len(a1[0]))]
            for o in range(len(e2[0]))
        ],
    ]
    be = NumpyBackend()
    new = []
    for w, g, unit_index in zip(ws, grads, (1, 3), strict=True):
        m = max(abs(v) for r in g for v in r)
        if m == 0:
            new.append(w)
            continue
        gs = [[v / shift_of(m) * F(2) ** lr_shift for v in r] for r in g]
        # gradients lie on the 2^-14 grid (2^-7 errors times 2^-7 activations), so G has
        # s fractional bits; the random draw is the integer form's: frac > u, u = rand / 2^s
        assert (m * 2**14).denominator == 1
        s = round_log2(int(m * 2**14)) - lr_shift
        u = be.host.random_bits(seed, step, STREAM_QG + unit_index, (len(g), len(g[0])), RAND_BITS)
        rows = []
        for o, r in enumerate(gs):
            row = []
            for i, v in enumerate(r):
                n = math.floor(abs(v))
                if s > 0:
                    n += (abs(v) - n) > F(int(sto_rand(u[o, i], s)), 1 << s)
                n = n if v >= 0 else -n
                row.append(min(max(w[o][i] - F(n, 128), F(-1, 2)), F(1, 2)))
            rows.append(row)
        new.append(rows)
    return new


def test_one_step_equals_the_reference_semantics():
    spec = ModelSpec("tiny", (3, 3, 1), (Flatten(), Linear(5), ReLU(), Linear(3)), mu="3")
    rng = np.random.default_rng(3)
    clipped = 0
    for trial in range(12):
        net = WageNetwork(spec, get_profile("wage"), seed=trial)
        for u in net.units:  # weights anywhere on the grid, not just the initial {-64, 0, 64}
            u.weight = rng.integers(-64, 65, u.weight.shape).astype(np.int8)
        ws = [[[F(int(v), 128) for v in row] for row in u.weight] for u in net.units]
        alphas = [1 << u.s for u in net.units]
        x = rng.integers(32, 128, (2, 3, 3, 1)).astype(np.int8)
        labels = rng.integers(0, 3, 2)
        lr_shift = [3, 0, -3][trial % 3]
        want = oracle_step(ws, alphas, x.reshape(2, -1), labels, lr_shift, seed=7, step=trial)
        be = NumpyBackend()
        net.to_backend(be)
        net.train_step(
            x, labels, StepContext(be, get_profile("wage"), seed=7, step=trial, mu=lr_shift)
        )
        clipped += int((~net.units[0].kept).sum())
        for u, w in zip(net.units, want, strict=True):
            np.testing.assert_array_equal(
                u.weight.astype(np.int64), np.array([[int(v * 128) for v in r] for r in w])
            )
    assert clipped >= 3  # QA's clip mask was exercised


def test_trace_uses_the_datapath_for_every_quantiser():
    data = load_dataset("digits")
    net = WageNetwork(get_model_spec("mlp-digits"), get_profile("wage"), seed=0)
    be = NumpyBackend()
    be.trace = []
    net.to_backend(be)
    net.train_step(data.train_x[:32], data.train_y[:32], StepContext(be, get_profile("wage"), mu=3))
    ops = [
        (e.op, e.tag.layer, e.tag.phase, e.extra.get("mode"), e.extra.get("fed")) for e in be.trace
    ]
    assert ("rescale", "1:linear", "forward", "rne", None) in ops  # ternary weights
    assert ("range", "3:linear", "backward-error", None, True) in ops  # QE of the loss: fed
    assert ("range", "3:linear", "weight-gradient", None, False) in ops  # QG: watched
    assert ("rescale", "3:linear", "weight-gradient", "sto", None) in ops
    ups = [e for e in be.trace if e.op == "update"]
    assert len(ups) == 2
    assert all(abs(int(w)) <= 64 for u in net.units for w in u.weight.ravel())


def test_wage_trains_mlp_digits_deterministically():
    data = load_dataset("digits")
    cfg = TrainConfig(model="mlp-digits", dataset="digits", profile="wage", epochs=4)
    a, b = train(cfg, data), train(cfg, data)
    assert a["weights_sha256"] == b["weights_sha256"]
    assert a["test_accuracy"] >= 0.85  # measured 0.90 after 4 epochs
    assert a["mu"] == "3,0@20,-3@25"


def test_unadaptable_model_is_named():
    spec = ModelSpec("odd", (2, 2, 1), (Flatten(), Linear(4), Linear(3)), mu="3")
    with pytest.raises(ValueError, match="odd: layer 1"):
        WageNetwork(spec, get_profile("wage"), seed=0)


def test_the_rtl_left_shift_case_really_shifts_left():
    """tests/test_rtl_train.py's mlp-digits-2x2-wage-left-shifts run: QG shifts left in it."""
    be = NumpyBackend()
    be.trace = []
    cfg = TrainConfig(
        model="mlp-digits", dataset="digits", profile="wage", batch=2, steps=3, mu="15"
    )
    train(cfg, load_dataset("digits"), backend=be)
    shifts = [e.extra["shift"] for e in be.trace if e.op == "rescale"]
    assert min(shifts) < 0
