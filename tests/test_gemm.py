import numpy as np
import pytest

from nitihw.golden import Accumulator, AccumulatorOverflowError, NumpyBackend, OpTag, exact_matmul
from nitihw.golden.gemm import choose_method


def operands(rng, m, k, n, lo=-127, hi=127):
    return rng.integers(lo, hi + 1, (m, k)).astype(np.int8), rng.integers(
        lo, hi + 1, (k, n)
    ).astype(np.int8)


@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 5, 3), (64, 800, 33), (5, 5000, 4)])
def test_all_paths_equal(shape):
    rng = np.random.default_rng(sum(shape))
    a, b = operands(rng, *shape)
    ref = exact_matmul(a, b, "object")
    for method in ("auto", "float32", "float64", "int64"):
        np.testing.assert_array_equal(exact_matmul(a, b, method), ref)


def test_corner_operands_are_exact():
    k = 1000
    a = np.full((3, k), -127, np.int8)
    b = np.full((k, 2), -127, np.int8)
    assert exact_matmul(a, b)[0, 0] == k * 127 * 127
    a[1, ::2] = 127
    assert exact_matmul(a, b, "float64")[1, 0] == 0


def test_wide_operands_use_wider_paths():
    rng = np.random.default_rng(0)
    a = rng.integers(-32767, 32768, (4, 3000)).astype(np.int16)
    b = rng.integers(-32767, 32768, (3000, 5)).astype(np.int16)
    ref = exact_matmul(a, b, "object")
    np.testing.assert_array_equal(exact_matmul(a, b, "int64"), ref)
    np.testing.assert_array_equal(exact_matmul(a, b), ref)
    with pytest.raises(ValueError, match="too large"):
        exact_matmul(a, b, "float32")


def test_choose_method_bounds():
    assert choose_method(2**24 - 1) == "float32"
    assert choose_method(2**30, 127 * 127) == "float32"  # K-chunked
    assert choose_method(2**30, 2**24) == "float64"
    assert choose_method(2**53, 1) == "int64"
    assert choose_method(2**63, 1) == "object"


def test_float32_chunks_hit_the_exact_limit():
    # K * 127 * 127 = 2^24 + 2^24-ish: each chunk's sums sit right at the float32 limit
    k = 2 * ((2**24 - 1) // (127 * 127)) + 7
    a = np.full((2, k), 127, np.int8)
    b = np.full((k, 3), 127, np.int8)
    b[-1] = -127
    ref = exact_matmul(a, b, "object")
    np.testing.assert_array_equal(exact_matmul(a, b, "float32"), ref)
    np.testing.assert_array_equal(exact_matmul(a, b, "float64"), ref)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(M,K\) @ \(K,N\)"):
        exact_matmul(np.zeros((2, 3), np.int8), np.zeros((4, 2), np.int8))


def test_accumulator_wrap_and_count():
    acc = Accumulator(8)
    x = np.array([127, 128, -128, -129, 300, -300])
    assert acc.overflows(x) == 4
    np.testing.assert_array_equal(acc.wrap(x), [127, -128, -128, 127, 44, -44])


def test_backend_overflow_policies():
    a = np.full((2, 4), 127, np.int8)
    b = np.full((4, 2), 127, np.int8)  # sums 64516 > 2^15 - 1
    tag = OpTag("3:linear", "forward")
    with pytest.raises(AccumulatorOverflowError, match=r"3:linear.*forward"):
        NumpyBackend(accumulator_bits=16).gemm(a, b, tag)
    be = NumpyBackend(accumulator_bits=16, overflow="wrap")
    out = be.gemm(a, b, tag)
    assert be.overflow_events == 4
    assert (out == 64516 - 65536).all()
    assert (NumpyBackend(accumulator_bits=17).gemm(a, b, tag) == 64516).all()


def test_trace_records_datapath_ops():
    be = NumpyBackend()
    be.trace = []
    tag = OpTag("l", "forward")
    acc = be.gemm(np.ones((3, 4), np.int8), np.ones((4, 5), np.int8), tag)
    be.rescale(acc, be.bitwidth(acc, tag), "round", tag)
    assert [(e.op, e.shape) for e in be.trace] == [
        ("gemm", (3, 4, 5)),
        ("range", (15,)),
        ("rescale", (15,)),
    ]
