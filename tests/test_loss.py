import numpy as np
import pytest

from nitihw.golden import cross_entropy_error, random_bits, shift_round
from nitihw.golden.loss import softmax_q11


def q_of(logits, e, labels):
    p = softmax_q11(np.asarray(logits), e).astype(object)
    q = (p * 2048) // p.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    q[rows, labels] -= q.sum(axis=1)
    return q.astype(np.int64)


def test_reference_example_integer_branch():
    a = np.array([[100, -20, 60, 127, 0]])
    np.testing.assert_array_equal(softmax_q11(a, -4), [[255, 0, 15, 1023, 0]])
    np.testing.assert_array_equal(q_of(a, -4, [2]), [[403, 0, -2023, 1620, 0]])
    np.testing.assert_array_equal(
        cross_entropy_error(a, -4, [2]), shift_round(q_of(a, -4, [2]), 4, "psto")
    )


def test_reference_example_small_exponent_branch():
    a = np.array([[100, -20, 60, 127, 0]])
    np.testing.assert_array_equal(q_of(a, -8, [2]), [[478, 301, -1633, 528, 326]])


@pytest.mark.parametrize("e", [-40, -21, -20, -8, -7, -6, -1, 0, 1, 5, 40])
def test_rows_sum_to_zero_before_rounding_and_error_is_int8(e):
    rng = np.random.default_rng(e + 100)
    a = rng.integers(-127, 128, (16, 10))
    labels = rng.integers(0, 10, 16)
    q = q_of(a, e, labels)
    assert (q.sum(axis=1) == 0).all()
    err = cross_entropy_error(a, e, labels)
    assert err.dtype == np.int8 and np.abs(err.astype(int)).max() <= 127
    np.testing.assert_array_equal(err, shift_round(q, 4, "psto"))


def test_large_positive_exponent_only_keeps_the_row_max():
    a = np.array([[5, 4, -3, 5]])
    np.testing.assert_array_equal(softmax_q11(a, 30), [[1023, 0, 0, 1023]])


def test_sto_profile_uses_supplied_bits():
    a = np.random.default_rng(0).integers(-127, 128, (8, 10))
    labels = np.arange(8)
    rand = random_bits(1, 2, 3, a.shape, 4)
    want = shift_round(q_of(a, -3, labels), 4, "sto", rand)
    np.testing.assert_array_equal(cross_entropy_error(a, -3, labels, "sto", rand), want)


def test_bad_labels_are_named():
    with pytest.raises(ValueError, match="labels must be in"):
        cross_entropy_error(np.zeros((2, 3), np.int8), 0, [0, 3])
    with pytest.raises(ValueError, match="labels must have shape"):
        cross_entropy_error(np.zeros((2, 3), np.int8), 0, [0])
