"""The compiled kernels of nitihw.golden.kernels against the NumPy rules, element by element."""

import numpy as np
import pytest

from nitihw.golden import NumpyBackend, OpTag, kernels
from nitihw.golden.rounding import ROUNDING_MODES, shift_round

pytestmark = pytest.mark.skipif(
    not kernels.available(), reason="Numba kernels turned off (NITIHW_KERNELS=numpy)"
)
TAG = OpTag("l", "backward-error")


def _edges(shift: int) -> np.ndarray:
    """Values around every rounding decision of ``shift``, and the int32 extremes."""
    one = 1 << shift
    centres = [0, one // 2, one, 127 * one, 127 * one + one // 2, 128 * one, 2**31 - 1]
    near = [c + d for c in centres for d in (-2, -1, 0, 1, 2)]
    values = np.array([v for v in near if -(2**31) < v < 2**31], np.int64)
    return np.concatenate([values, -values, [-(2**31), 2**31 - 1]]).astype(np.int32)


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_rescale_kernel_equals_shift_round_at_every_shift(mode):
    rng = np.random.default_rng(ROUNDING_MODES.index(mode))
    for shift in range(1, 32):
        kernel = kernels.rescale_kernel(np.int32, shift)
        x = np.concatenate(
            [_edges(shift), rng.integers(-(2**31), 2**31, 3000, dtype=np.int64).astype(np.int32)]
        )
        rand = rng.integers(0, 1 << shift, x.size, dtype=np.int64)
        out = np.empty(x.size, np.int8)
        kernel(x, shift, kernels.MODE_CODES[mode], rand, out)
        want = shift_round(x, shift, mode, rand if mode == "sto" else None)
        np.testing.assert_array_equal(out, want, err_msg=f"{mode} shift {shift}")


def test_rescale_kernel_applies_to_int32_shifts_1_to_31_only():
    assert kernels.rescale_kernel(np.int32, 0) is None
    assert kernels.rescale_kernel(np.int32, 32) is None
    assert kernels.rescale_kernel(np.int64, 5) is None
    assert kernels.rescale_kernel(np.int32, 31) is not None


@pytest.mark.parametrize("pad,k,lim", [(0, 5, 127), (1, 3, 9), (2, 5, 127), (0, 1, 50)])
def test_col2im_kernel_equals_numpy_route(pad, k, lim, monkeypatch):
    rng = np.random.default_rng(k + pad)
    err = rng.integers(-lim, lim + 1, (3, 7, 6, 11)).astype(np.int8)
    w = rng.integers(-127, 128, (11, k, k, 4)).astype(np.int8)
    got = NumpyBackend(threads=2).conv_error(err, w, pad, TAG)
    from nitihw.golden import backend

    monkeypatch.setattr(backend, "COL2IM_BLOCK_BYTES", 1)  # one image at a time
    np.testing.assert_array_equal(NumpyBackend(threads=1).conv_error(err, w, pad, TAG), got)
    monkeypatch.setattr(kernels, "_compiled", False)  # the NumPy route
    assert not kernels.available()
    np.testing.assert_array_equal(got, NumpyBackend(threads=1).conv_error(err, w, pad, TAG))


@pytest.mark.parametrize(
    "shape,lim",
    [((64, 24, 24, 20), 127), ((2, 7, 9, 5), 1), ((3, 8, 8, 50), 0), ((1, 1, 3, 2), 127)],
)
def test_maxpool2_kernel_equals_numpy_passes(shape, lim):
    """The compiled 2 x 2 max-pool gives the NumPy passes' maximum and FIRST-maximum index:
    odd heights and widths (the last row or column dropped), ties everywhere (lim 0 and 1),
    the int8 extremes, and a strided input."""
    from nitihw.golden.backend import ArrayHostOps, NumpyHostOps

    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-lim - 1 if lim == 127 else -lim, lim + 1, shape).astype(np.int8)
    assert kernels.maxpool2_kernel(x, 2) is not None
    for v in (x, x[:, ::-1], np.full(shape, -128, np.int8)):
        want_y, want_idx = ArrayHostOps().maxpool(v, 2)  # the NumPy passes
        got_y, got_idx = NumpyHostOps().maxpool(v, 2)
        np.testing.assert_array_equal(got_y, want_y)
        np.testing.assert_array_equal(got_idx, want_idx)
        assert got_y.dtype == got_idx.dtype == np.int8


def test_maxpool2_kernel_applies_to_2x2_int8_only():
    x = np.zeros((1, 4, 4, 2), np.int8)
    assert kernels.maxpool2_kernel(x, 3) is None
    assert kernels.maxpool2_kernel(x.astype(np.int16), 2) is None
    assert kernels.maxpool2_kernel(x, 2) is not None
