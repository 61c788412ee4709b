"""Conformance with NITI's own code (github.com/wangmaolin/niti): the 2021 code (d097335, torch
1.7.0) and the 2020 code (03c3122, torch 1.6.0), both with truncating ``//`` as those torch
versions had it. Each NITI function is written here once more, from its published semantics, in
its own form (``q = x // 2^s`` truncating, then the remainder), and checked against the
profiles: which profile reproduces which behaviour, on the issue's worked examples and on random
int32 inputs. docs/numerics.md, "Conformance with NITI's code", lists the differences."""

import math

import numpy as np
import pytest

from nitihw.golden import layers as L
from nitihw.golden.backend import NumpyBackend, OpTag
from nitihw.golden.loss import cross_entropy_error, softmax_q11
from nitihw.golden.niti_compat import (
    float32_bitwidth,
    float32_round_int,
    float32_sums,
    loss_2021,
    loss_2021_q,
    wrap_int8,
)
from nitihw.golden.profiles import get_profile
from nitihw.golden.rounding import bitwidth, magnitude_bitwidth, shift_round
from nitihw.sim.command.cli import main

RNG = np.random.default_rng(2021)


# ---- NITI's functions, from their semantics (torch <= 1.7: // truncates toward zero) -------


def tdiv(x, d):
    """torch 1.6/1.7 ``//`` on integers: truncation toward zero."""
    x = np.asarray(x, dtype=object)
    q = np.array([abs(int(v)) // int(d) for v in x.ravel()], dtype=object).reshape(x.shape)
    return np.where(x < 0, -q, q)


def clip8(x):
    return np.clip(np.asarray(x, dtype=object), -127, 127).astype(np.int64)


def niti_round_shift(x, s):
    q = tdiv(x, 2**s)
    prob = x - q * 2**s
    return clip8(q + tdiv(prob, 2 ** (s - 1)))


def niti_psto_shift(x, s):
    q = tdiv(x, 2**s)
    prob = np.abs(x - q * 2**s)
    qprob = tdiv(prob, 2 ** (s // 2))
    prand = prob - qprob * 2 ** (s // 2)
    if s % 2 == 1:
        prand = prand * 2
    return clip8(q + np.where(qprob <= prand, 0, 1) * np.sign(x))


def niti_sto_shift(x, s, rand):
    q = tdiv(x, 2**s)
    prob = np.abs(x - q * 2**s)
    return clip8(q + np.where(prob <= rand, 0, 1) * np.sign(x))


def niti_range(x) -> int:
    """``RangeEstimate``: ``ceil(log2(max|x|.float()))`` in float32, by a route of its own:
    float32 of the magnitude, log2 in float64, rounded to float32, then the ceiling."""
    m = int(np.abs(np.asarray(x, dtype=np.int64)).max())
    if m == 0:
        return 0
    return math.ceil(np.float32(math.log2(float(np.float32(m)))))


def cast_int8(x):
    """``int32.type(torch.int8)``: the low 8 bits."""
    return ((np.asarray(x, dtype=np.int64) + 128) % 256) - 128


def niti_act_calc(acc):
    """2021 ``act_calc``/``err_calc``: ``(A, shift)``."""
    s = niti_range(acc) - 7
    return (niti_round_shift(acc, s), s) if s > 0 else (cast_int8(acc), 0)


def niti_grad_calc(g, mu):
    """2021 ``grad_calc``: the int8 update."""
    bw = niti_range(g)
    if bw == 0:
        return np.zeros_like(g)
    if bw - mu < 1:
        return cast_int8(g)
    return niti_psto_shift(g, bw - mu)


def niti_2020_loss_q(a, e, t):
    """The 2020 ``ti_loss.py`` (integer ``//``, truncating) up to ``StoShiftInt32``."""
    a = np.asarray(a, dtype=object)
    if e > -7:
        s = tdiv(a * 47274, 2**15)
        s = s * 2**e if e >= 0 else tdiv(s, 2**-e)
        s = s - (s.max(axis=1) - 10)[:, None]
        s = np.maximum(s, 0)
        p = np.vectorize(lambda v: 2 ** int(v) - 1, otypes=[object])(s)
    else:
        p = 2 ** (1 - 2 * e) + a * 2 ** (1 - e) + a * a
    total = p.sum(axis=1)
    q = np.array([tdiv(row * 2**11, tot) for row, tot in zip(p, total, strict=True)])
    q[np.arange(len(t)), t] -= q.sum(axis=1)
    return q.astype(np.int64)


def random_int32(n, rng=RNG):
    """int32 values at every scale, with the corners (0, +-1, powers of two and their
    neighbours, INT32_MIN + 1, INT32_MAX)."""
    scale = 2 ** rng.integers(0, 32, n)
    x = (rng.random(n) * scale).astype(np.int64) * rng.choice([-1, 1], n)
    pw = 2 ** np.arange(31, dtype=np.int64)
    corners = np.concatenate([[0, 1, -1, 2**31 - 1, -(2**31) + 1], pw, pw + 1, pw - 1, -pw - 1])
    return np.clip(np.concatenate([x, corners]), -(2**31) + 1, 2**31 - 1)


# ---- the worked examples of the issue ---------------------------------------------------


def test_range_is_one_bit_short_above_2_to_the_21():
    """max|x| = 2,097,153: NITI 21, golden 22; d_k, the largest excess that is one bit short."""
    assert float32_bitwidth(2_097_153) == 21 == niti_range([2_097_153])
    assert magnitude_bitwidth(2_097_153) == 22
    d = {}
    for k in range(21, 31):
        lo, hi = 0, 1 << (k - 19)  # d_k < 2^(k-20) ln 2 + float32's rounding of m
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if float32_bitwidth(2**k + mid) == k else (lo, mid - 1)
        d[k] = lo
    assert d[21] == 1 and d[22] == 2 and d[23] == 5 and d[30] == 703
    assert list(d.values()) == [1, 2, 5, 10, 21, 43, 87, 175, 351, 703]
    for k, dk in d.items():  # and exactly those: one more is the exact bit-width again
        assert float32_bitwidth(2**k + dk + 1) == k + 1 == magnitude_bitwidth(2**k + dk + 1)


def requant_both(acc):
    out = {}
    for name in ("niti", "niti-compat"):
        ctx = L.StepContext(NumpyBackend(threads=1), get_profile(name))
        out[name] = L.requant(np.asarray(acc, np.int64), ctx, OpTag("l", "forward"), "round")
    return out


def test_act_calc_at_2_097_153():
    """NITI gives 127 at e + 14, golden 64 at e + 15."""
    r = requant_both([2_097_153, -3, 1000])
    (a, sh), (ac, shc) = r["niti"], r["niti-compat"]
    assert (int(a[0]), sh) == (64, 15)
    assert (int(ac[0]), shc) == (127, 14)
    assert (ac.tolist(), shc) == (niti_act_calc(np.array([2_097_153, -3, 1000]))[0].tolist(), 14)


def test_act_calc_wraps_plus_128():
    """max|x| = 128: shift 0; NITI's int8 cast turns +128 into -128, golden saturates to 127."""
    r = requant_both([128, -128, 5])
    assert r["niti"][0].tolist() == [127, -127, 5] and r["niti"][1] == 0
    assert r["niti-compat"][0].tolist() == [-128, -128, 5] and r["niti-compat"][1] == 0


def update_both(grad, w, mu):
    out = {}
    for name in ("niti", "niti-compat"):
        layer = L.Linear("0:linear", np.array(w, np.int8), 0)
        ctx = L.StepContext(NumpyBackend(threads=1), get_profile(name), mu=mu)
        layer.update_weights(np.array(grad, np.int64), ctx)
        out[name] = layer.weight.tolist()
    return out


def test_update_wraps_when_mu_is_7_or_more():
    """mu = 7, G = 128, W = -20: NITI's int8 cast of G wraps (108), golden saturates (-127)."""
    out = update_both([[128, 3]], [[-20, 0]], mu=7)
    assert out["niti"] == [[-127, -3]] and out["niti-compat"] == [[108, -3]]
    assert (
        out["niti-compat"]
        == np.clip(
            np.array([[-20, 0]]) - niti_grad_calc(np.array([[128, 3]]), 7), -127, 127
        ).tolist()
    )


def test_the_2021_loss_in_float32():
    """All logits 0, e = 0: Q = 204.8 each; NITI's label entry -1835, golden's -1836; NITI's
    rows do not sum to zero."""
    a, t = np.zeros((1, 10), np.int64), np.array([3])
    q = loss_2021_q(a, 0, t)
    p = softmax_q11(a, 0)
    g = (p << 11) // p.sum(axis=1, keepdims=True)
    g[0, 3] -= g.sum()
    assert q[0, 3] == -1835 and g[0, 3] == -1836
    assert q.sum() == 1 and g.sum() == 0
    assert np.array_equal(np.delete(q, 3), np.delete(g, 3))


def test_the_golden_loss_is_the_2020_integer_loss():
    """On random logits, exponents and labels (both branches), golden's Q before the final
    shift is the 2020 code's integer formulation exactly; so are its errors with psto."""
    for e in [*range(-20, 4), 9]:
        a = RNG.integers(-127, 128, (40, 10))
        a[0] = 0
        a[1] = 127
        t = RNG.integers(0, 10, 40)
        want = niti_2020_loss_q(a, e, t)
        p = softmax_q11(a, e)
        q = (p << 11) // p.sum(axis=1, keepdims=True)
        q[np.arange(40), t] -= q.sum(axis=1)
        assert np.array_equal(q, want), e
        assert np.array_equal(
            cross_entropy_error(a, e, t, "psto"), niti_psto_shift(want, 4).astype(np.int8)
        )


def test_the_2021_loss_differs_from_the_integer_one_by_its_fractions():
    """Where both compute the same integer P (e <= -7), NITI 2021's entries are golden's off
    the label, and the label entry is golden's + 1 exactly when its fraction is not zero."""
    for e in range(-20, -6):
        a = RNG.integers(-127, 128, (200, 10))
        t = RNG.integers(0, 10, 200)
        q = loss_2021_q(a, e, t)
        g = niti_2020_loss_q(a, e, t)
        rows = np.arange(200)
        off = np.ones(q.shape, bool)
        off[rows, t] = False
        assert np.array_equal(q[off], g[off])
        p = softmax_q11(a, e)
        frac = (p[rows, t] << 11) % p.sum(axis=1) != 0
        assert np.array_equal(q[rows, t] - g[rows, t], frac.astype(np.int64))


def test_the_loss_error_takes_the_random_integers_it_is_given():
    """NITI rounds the loss error with StoShift and torch.randint; niti-compat takes the same
    integers as an argument (a test hands it NITI's draw) and rounds them NITI's way."""
    a = RNG.integers(-127, 128, (64, 10))
    t = RNG.integers(0, 10, 64)
    rand = RNG.integers(0, 16, (64, 10))
    q = loss_2021_q(a, -3, t)
    assert np.array_equal(loss_2021(a, -3, t, rand), niti_sto_shift(q, 4, rand))
    other = (rand + 7) % 16
    assert not np.array_equal(loss_2021(a, -3, t, rand), loss_2021(a, -3, t, other))


def test_conv_sums_pass_through_float32():
    """CUTLASS's float32 epilogue: exact to 2^24, then rounded to even."""
    x = np.array([2**24, 2**24 + 1, 2**24 + 2, 2**24 + 3, -(2**25) - 3, 123_456_789, 7])
    assert float32_sums(x).tolist() == [
        2**24, 2**24, 2**24 + 2, 2**24 + 4, -(2**25) - 4, 123_456_792, 7
    ]  # fmt: skip
    for v in random_int32(2000):
        assert float32_round_int(abs(int(v))) == abs(int(np.float32(v)))


def test_a_conv_layer_loses_low_bits_only_above_2_to_the_24():
    """A 3x3 convolution of 64 channels: one sample's forward sums stay below 2^24 (the same
    result in both profiles); its weight gradient over 48 samples passes 2^24,
    and niti-compat updates from the float32-rounded sums: at mu = 7 (shift 18) psto's
    pseudo-random low bits decide, so some weights change."""
    k, cin, cout = 3, 64, 4
    w = RNG.integers(-127, 128, (cout, k, k, cin)).astype(np.int8)
    x = RNG.integers(120, 128, (48, 6, 6, cin)).astype(np.int8)
    err = RNG.integers(120, 128, (48, 6, 6, cout)).astype(np.int8)
    layers, outs = {}, {}
    for name in ("niti", "niti-compat"):
        layers[name] = layer = L.Conv2d("0:conv2d", w.copy(), 0, pad=1)
        layer.first = True
        ctx = L.StepContext(NumpyBackend(threads=1), get_profile(name), mu=7)
        outs[name] = layer.forward(L.Tensor(x, 0), ctx)
        layer.backward(err, ctx)
    assert np.array_equal(outs["niti"].data, outs["niti-compat"].data)
    cols = NumpyBackend(threads=1).host.im2col(x, k, 1).astype(np.int64)
    grad = err.reshape(-1, cout).astype(np.int64).T @ cols
    assert int(grad.min()) > 2**24 and not np.array_equal(float32_sums(grad), grad)
    by_hand = L.Conv2d("0:conv2d", w.copy(), 0, pad=1)
    by_hand.update_weights(
        float32_sums(grad), L.StepContext(NumpyBackend(threads=1), get_profile("niti"), mu=7)
    )
    assert np.array_equal(layers["niti-compat"].weight, by_hand.weight)
    assert not np.array_equal(layers["niti-compat"].weight, layers["niti"].weight)


# ---- random int32 inputs: which profile reproduces which function --------------------------


@pytest.mark.parametrize("s", [1, 2, 3, 4, 5, 7, 8, 13, 16, 24, 31])
def test_shift_functions_on_random_int32(s):
    """RoundShift, PstoShift and StoShift (2021; the 2020 Int32 variants are the same
    functions) equal golden's round, psto and sto for every int32 input: every NITI profile
    uses these."""
    x = random_int32(3000)
    rand = RNG.integers(0, 2**s, x.shape)
    assert np.array_equal(shift_round(x, s, "round"), niti_round_shift(x, s))
    assert np.array_equal(shift_round(x, s, "psto"), niti_psto_shift(x, s))
    assert np.array_equal(shift_round(x, s, "sto", rand), niti_sto_shift(x, s, rand))


def test_range_on_random_int32():
    """``RangeEstimate``: niti-compat's is NITI's for every input; golden's exact bit-width
    is NITI's except one bit above, only in (2^k, 2^k + d_k], k >= 21."""
    for v in random_int32(20000):
        m = abs(int(v))
        assert float32_bitwidth(m) == niti_range([v])
        exact = magnitude_bitwidth(m)
        if exact != float32_bitwidth(m):
            k = exact - 1
            assert exact == float32_bitwidth(m) + 1 and k >= 21 and 2**k < m < 2**k + 2**k // 1000


def test_act_calc_on_random_int32_tensors():
    """niti-compat's requantisation is NITI's ``act_calc`` on every tensor; golden's is too
    except at max|x| = 128 and just above 2^k (k >= 21)."""
    agree = differ = 0
    for _ in range(400):
        top = int(2 ** RNG.integers(0, 32))
        acc = RNG.integers(-top, top + 1, 30)
        acc[0] = RNG.choice([128, 2**21 + 1, 2**23 + 5, 2**30 + 700, acc[0]])
        acc = np.clip(acc, -(2**31) + 1, 2**31 - 1)
        want, sh = niti_act_calc(acc)
        r = requant_both(acc)
        assert r["niti-compat"][0].tolist() == want.tolist() and r["niti-compat"][1] == sh
        m = int(np.abs(acc).max())
        quirk = m == 128 or float32_bitwidth(m) != bitwidth(acc)
        if quirk:
            differ += 1
        else:
            assert r["niti"][0].tolist() == want.tolist() and r["niti"][1] == sh
            agree += 1
    assert agree > 100 and differ > 50


@pytest.mark.parametrize("mu", [-1, 0, 3, 5, 7, 9])
def test_grad_calc_and_update_on_random_int32(mu):
    """niti-compat's update is NITI's ``grad_calc`` and clip for every gradient; golden's
    too, except where NITI's int8 cast wraps (no shift, max|G| > 127) or its range is short."""
    for _ in range(100):
        top = int(2 ** RNG.integers(0, 31))
        grad = RNG.integers(-top, top + 1, (4, 6))
        w = RNG.integers(-127, 128, (4, 6))
        want = np.clip(w - niti_grad_calc(grad, mu), -127, 127)
        out = update_both(grad, w, mu)
        assert out["niti-compat"] == want.tolist()
        m = int(np.abs(grad).max())
        wraps = magnitude_bitwidth(m) - mu < 1 and m > 127
        if not wraps and float32_bitwidth(m) == magnitude_bitwidth(m):
            assert out["niti"] == want.tolist()


def test_wrap_int8_is_torchs_cast():
    x = random_int32(5000)
    assert np.array_equal(wrap_int8(x), cast_int8(x))


PROFILE_TABLE = {
    # function: profiles that reproduce NITI 2021's behaviour bit for bit
    "RoundShift, PstoShift, StoShift": {"niti", "niti-ref", "niti-compat"},
    "RangeEstimate (float32 log2)": {"niti-compat"},
    "act_calc / err_calc int8 cast": {"niti-compat"},
    "grad_calc int8 cast": {"niti-compat"},
    "ti_loss.py (float32 /)": {"niti-compat"},
    "loss error StoShift": {"niti-ref", "niti-compat"},
    "CUTLASS float32 epilogue": {"niti-compat"},
}


def test_the_profile_table():
    """Which profile reproduces which behaviour, as docs/numerics.md states it."""
    p = {name: get_profile(name) for name in ("niti", "niti-ref", "niti-2020", "niti-compat")}
    assert {n for n, x in p.items() if x.float32_range} == PROFILE_TABLE[
        "RangeEstimate (float32 log2)"
    ]
    assert {n for n, x in p.items() if x.wrap_int8_casts} == PROFILE_TABLE["grad_calc int8 cast"]
    assert {n for n, x in p.items() if x.float32_loss} == PROFILE_TABLE["ti_loss.py (float32 /)"]
    assert {n for n, x in p.items() if x.float32_conv_sums} == PROFILE_TABLE[
        "CUTLASS float32 epilogue"
    ]
    assert {n for n, x in p.items() if x.loss_rounding == "sto"} == PROFILE_TABLE[
        "loss error StoShift"
    ]
    assert {n for n, x in p.items() if (x.act_rounding, x.err_rounding) == ("round", "round")} == (
        PROFILE_TABLE["RoundShift, PstoShift, StoShift"]
    )
    assert not p["niti-compat"].exact and all(p[n].exact for n in ("niti", "niti-ref", "niti-2020"))


def test_training_with_niti_compat(tmp_path, capsys):
    """The profile trains (deterministically, its loss bits from counter_hash), differs from
    niti, and is refused where it cannot be what it says: on the RTL, at other widths."""
    import json

    def run(name, *extra):
        out = tmp_path / name
        args = ["train", "--model", "cnn-digits", "--dataset", "digits", "--epochs", "1",
                "--out", str(out), *extra]  # fmt: skip
        assert main(args) == 0
        return json.loads((out / "result.json").read_text())

    a = run("a", "--profile", "niti-compat")
    b = run("b", "--profile", "niti-compat")
    ref = run("c", "--profile", "niti-ref")
    assert a["weights_sha256"] == b["weights_sha256"] != ref["weights_sha256"]
    assert a["test_accuracy"] > 0.3
    base = ["train", "--model", "mlp-digits", "--dataset", "digits", "--profile", "niti-compat"]
    for extra, message in (
        (["--backend", "rtl"], "runs on the golden and gpu backends only"),
        (["--operand-bits", "6"], "8-bit operands and int8 weights only"),
        (["--weight-bits", "16"], "8-bit operands and int8 weights only"),
    ):
        capsys.readouterr()
        assert main([*base, *extra, "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
