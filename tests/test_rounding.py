"""The primitives of numerics.md §2 against the spec's test vectors and a scalar oracle."""

import numpy as np
import pytest

from nitihw.golden import ROUNDING_MODES, bitwidth, range_shift, saturate, shift_round
from nitihw.golden.rounding import trunc_div, wrap


def scalar_oracle(x: int, s: int, mode: str, u: int = 0) -> int:
    """numerics.md §2, one Python int at a time, written straight from the table."""
    if s == 0:
        return max(-127, min(127, x))
    m = abs(x)
    q, r = m >> s, m & ((1 << s) - 1)
    if mode == "round":
        up = r >= 1 << (s - 1)
    elif mode == "psto":
        h = s // 2
        p, rr = r >> h, r & ((1 << h) - 1)
        if s % 2:
            rr *= 2
        up = p > rr
    elif mode == "trunc":
        up = False
    elif mode == "sto":
        up = r > u
    else:
        half = 1 << (s - 1)
        up = r > half or (r == half and q % 2 == 1)
    mag = min(q + int(up), 127)
    return -mag if x < 0 else mag


@pytest.mark.parametrize(
    "x,s,mode,want",
    [
        (1004, 3, "round", 126),
        (-5, 1, "round", -3),
        (1012, 4, "round", 63),
        (1003, 3, "psto", 125),
        (1004, 3, "psto", 126),
        (1012, 4, "psto", 64),
        (-1012, 4, "psto", -64),
        (6, 2, "psto", 2),
        (7, 2, "psto", 1),
        (5, 1, "rne", 2),
        (7, 1, "rne", 4),
        (-5, 1, "rne", -2),
        (1023, 3, "trunc", 127),
        (-1023, 2, "trunc", -127),
        (128, 0, "round", 127),
        (-128, 0, "psto", -127),
    ],
)
def test_spec_vectors(x, s, mode, want):
    assert int(shift_round(np.array([x]), s, mode)[0]) == want


def test_psto_shift4_rounds_up_exactly_for_the_listed_remainders():
    r = np.arange(16)
    up = shift_round(16 * 5 + r, 4, "psto") - 5
    assert set(np.flatnonzero(up).tolist()) == {4, 8, 9, 12, 13, 14}


@pytest.mark.parametrize("mode", [m for m in ROUNDING_MODES if m != "sto"])
def test_exhaustive_against_oracle(mode):
    x = np.arange(-(1 << 13), 1 << 13, dtype=np.int64)
    for s in range(0, 15):
        got = shift_round(x, s, mode)
        want = np.array([scalar_oracle(int(v), s, mode) for v in x], dtype=np.int8)
        np.testing.assert_array_equal(got, want, err_msg=f"mode {mode} shift {s}")
        assert got.dtype == np.int8


def test_sto_uses_the_supplied_random_integers():
    rng = np.random.default_rng(1)
    x = rng.integers(-(2**20), 2**20, size=5000)
    for s in (1, 4, 9):
        u = rng.integers(0, 1 << s, size=x.shape)
        want = [scalar_oracle(int(a), s, "sto", int(b)) for a, b in zip(x, u, strict=True)]
        np.testing.assert_array_equal(shift_round(x, s, "sto", u), want)


def test_int32_extremes_and_large_shifts():
    x = np.array([-(2**31), 2**31 - 1, -(2**31) + 1, 0], dtype=np.int32)
    for mode in ("round", "psto", "trunc", "rne"):
        for s in (24, 25, 31, 32):
            want = [scalar_oracle(int(v), s, mode) for v in x]
            np.testing.assert_array_equal(shift_round(x, s, mode), want)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown rounding mode"):
        shift_round([1], 1, "nearest")
    with pytest.raises(ValueError, match="shift must be"):
        shift_round([1], -63, "round")
    with pytest.raises(ValueError, match="shift must be"):
        shift_round([1], 63, "round")
    with pytest.raises(ValueError, match="needs rand"):
        shift_round([1], 2, "sto")
    with pytest.raises(ValueError, match="rand has shape"):
        shift_round([1, 2], 2, "sto", rand=[0])
    with pytest.raises(TypeError, match="integer array"):
        shift_round([1.5], 2, "round")


@pytest.mark.parametrize(
    "values,bw",
    [([0], 0), ([1], 0), ([-2], 1), ([3], 2), ([128], 7), ([-129], 8), ([2**21 + 1], 22)],
)
def test_bitwidth(values, bw):
    assert bitwidth(np.array(values)) == bw


def test_bitwidth_of_empty_and_int_min():
    assert bitwidth(np.array([], dtype=np.int32)) == 0
    assert bitwidth(np.array([-(2**31)], dtype=np.int32)) == 31


def test_range_shift():
    assert range_shift(np.array([1004])) == 3
    assert range_shift(np.array([127])) == 0
    assert range_shift(np.array([128])) == 0  # saturates to 127 at shift 0
    assert range_shift(12) == 5


def test_saturate():
    np.testing.assert_array_equal(saturate(np.array([128, -200, 5])), [127, -127, 5])


def test_negative_shift_is_an_exact_left_shift_then_saturation():
    x = np.arange(-300, 301)
    for s in range(1, 12):
        want = np.sign(x) * np.minimum(np.abs(x) << s, 127)
        for mode in ROUNDING_MODES:
            rand = np.zeros_like(x)
            np.testing.assert_array_equal(shift_round(x, -s, mode, rand), want, err_msg=mode)
    big = np.array([2**31 - 1, -(2**31), 1, -1, 0], np.int64)
    np.testing.assert_array_equal(shift_round(big, -62, "round"), [127, -127, 127, -127, 0])


def test_trunc_div_rounds_toward_zero():
    x = np.arange(-50, 51)
    for d in (1, 2, 3, 4, 7, 50, 51):
        want = [int(v / d) for v in x.tolist()]  # C division: toward zero
        np.testing.assert_array_equal(trunc_div(x, d), want)
    assert trunc_div(np.array([-(2**31)]), 3).tolist() == [-715827882]
    np.testing.assert_array_equal(trunc_div([7, -7, 7], [2, 2, 4]), [3, -3, 1])
    with pytest.raises(ValueError, match="positive divisors"):
        trunc_div([1], 0)
    with pytest.raises(TypeError, match="integer array"):
        trunc_div([1.5], 2)


def test_wrap_is_twos_complement():
    x = np.array([2**31, 2**31 - 1, -(2**31) - 1, 2**32 + 5, -5])
    np.testing.assert_array_equal(wrap(x, 32), [-(2**31), 2**31 - 1, 2**31 - 1, 5, -5])
    np.testing.assert_array_equal(wrap(x, 32), x.astype(np.int32))


def test_zero_dimensional_input():
    for mode in ("round", "psto", "trunc", "rne"):
        got = shift_round(np.array(-1004), 3, mode)
        assert got.shape == () and got.dtype == np.int8
        assert int(got) == int(shift_round(np.array([-1004]), 3, mode)[0])
    assert int(shift_round(np.array(9), -3, "round")) == 72
    assert int(shift_round(np.array(37), 4, "sto", np.array(3))) == 3  # 37 = 2*16 + 5 > 3: up
