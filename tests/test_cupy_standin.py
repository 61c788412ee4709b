"""The CuPy stand-in itself: it must refuse what CuPy and cuBLAS refuse, and catch a wrong kernel.

tests/test_gpu.py runs the GPU backend on the stand-in in CI; these tests show that a passing
stand-in run means something (each check here fails on a planted fault).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nitihw.golden import OpTag, shift_round
from nitihw.gpu import kernels
from tests import cupy_standin

pytestmark = pytest.mark.skipif(
    cupy_standin.CXX is None, reason="the CuPy stand-in needs a C++ compiler (g++)"
)
TAG = OpTag("t", "forward")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cp():
    with cupy_standin.installed() as module:
        yield module


def test_device_arrays_refuse_host_mixing(cp):
    d = cp.asarray(np.arange(6, dtype=np.int32).reshape(2, 3))
    host = np.ones(3, np.int32)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(d)
    with pytest.raises(TypeError, match="host array"):
        d + host
    with pytest.raises(TypeError, match="host array"):
        cp.where(d > 2, host, 0)
    # what CuPy allows: explicit transfers, Python scalars, host index arrays, 1-element syncs
    total = (d * 2 + 1).sum()
    assert isinstance(total, cupy_standin.DeviceArray) and total.shape == ()
    assert int(total) == 36
    assert cp.asnumpy(d[np.array([1])]).tolist() == [[3, 4, 5]]
    np.testing.assert_array_equal(cp.asnumpy(cp.maximum(d, 3)), np.maximum(d.get(), 3))


def test_kernel_parameter_types_are_checked(cp):
    w = cp.asarray(np.zeros(4, np.int16))  # update takes int8 weights
    g = cp.asarray(np.zeros(4, np.int8))
    with pytest.raises(TypeError, match="Type is mismatched"):
        kernels.update_kernel()(w, g, np.int32(127))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        kernels.update_kernel()(np.zeros(4, np.int8), g, np.int32(127))


def test_a_planted_kernel_bug_is_caught(cp):
    """Round-half-away written as a strict comparison: the stand-in's kernel run shows it."""
    x = np.arange(-4096, 4097, dtype=np.int32)
    params = ("T x, raw int64 s, int64 sa, int64 sl, int32 mode, int64 u", "int8 y")
    params += (kernels._RESCALE,)
    right = cp.ElementwiseKernel(
        *params, "nitihw_rescale", preamble=kernels._STEP_INT + kernels._SHIFT_ROUND
    )
    planted = cp.ElementwiseKernel(
        *params,
        "nitihw_rescale_planted",
        preamble=kernels._STEP_INT
        + kernels._SHIFT_ROUND.replace("up = r >= half;", "up = r > half;"),
    )
    u = cp.zeros((), np.int64)
    for s in (1, 5):
        mode = np.int32(kernels.MODE_CODES["round"])
        args = (cp.asarray(x), cp.full((1,), s, np.int64), np.int64(0), np.int64(-(2**63)), mode, u)
        np.testing.assert_array_equal(cp.asnumpy(right(*args)), shift_round(x, s, "round"))
        assert (cp.asnumpy(planted(*args)) != shift_round(x, s, "round")).any()


def _gemm_args(a, b, alpha=1, trans=(1, 0)):
    """A row-major ``a @ b`` as the backend asks cuBLAS for it: C^T = (B^T)^T-read x A^T, both
    operands rows of K. Returns the arguments and the arrays behind their pointers, which the
    caller must keep alive."""
    m, k = a.shape
    n = b.shape[1]
    bt = np.ascontiguousarray(b.T)
    c = np.zeros((m, n), np.int32)
    one, beta = np.array(alpha, np.int32), np.array(0, np.int32)
    args = [0, *trans, n, m, k, one.ctypes.data, bt.ctypes.data, 3, k, a.ctypes.data, 3, k]
    args += [beta.ctypes.data, c.ctypes.data, 10, n, 72, -1]
    return args, c, (a, bt, one, beta)


def test_gemmex_is_column_major_and_refuses_what_cublas_refuses():
    rng = np.random.default_rng(0)
    a = rng.integers(-127, 128, (5, 8)).astype(np.int8)
    b = rng.integers(-127, 128, (8, 12)).astype(np.int8)
    args, c, _keep = _gemm_args(a, b)
    cupy_standin.gemmEx(*args)
    np.testing.assert_array_equal(c, a.astype(np.int64) @ b.astype(np.int64))
    cases = {  # keep each case's arrays alive while cuBLAS reads their pointers
        "multiples of 4": _gemm_args(a[:, :6].copy(), b[:6].copy()),  # K = 6
        "0 or 1": _gemm_args(a, b, alpha=2),
        "contiguous along K": _gemm_args(a, b, trans=(0, 0)),
    }
    for message, (bad, _c, _k) in cases.items():
        with pytest.raises(ValueError, match=message):
            cupy_standin.gemmEx(*bad)
    big = np.full((4, 140000), 127, np.int8)  # 140000 * 127^2 > 2^31
    too_long = _gemm_args(big, np.full((140000, 4), 127, np.int8))
    with pytest.raises(OverflowError):
        cupy_standin.gemmEx(*too_long[0])


def test_a_host_round_trip_in_the_backend_fails(cp):
    """A backend that pulls a tensor through NumPy fails on the stand-in, as it would on CuPy."""
    from nitihw.golden import rounding
    from nitihw.gpu.backend import CupyBackend

    class Leaky(CupyBackend):
        def _bitwidth(self, acc, fed):
            return rounding.bitwidth(np.asarray(acc))

    be = Leaky()
    acc = be.gemm(
        be.host.from_host(np.ones((2, 4), np.int8)),
        be.host.from_host(np.ones((4, 2), np.int8)),
        TAG,
    )
    assert int(CupyBackend().bitwidth(acc, TAG)) == 2
    with pytest.raises(TypeError, match="Implicit conversion"):
        be.bitwidth(acc, TAG)


def test_a_datapath_operation_computed_on_the_host_stops_the_run(cp):
    """An update lanes' result computed by NumPy (a host array) is not a device operation: the
    ledger stops the run there and names it."""
    from nitihw.golden.errors import DatapathLeak
    from nitihw.gpu.backend import CupyBackend

    class Leaky(CupyBackend):
        def _update(self, w, g, limit):
            return self._on_device(
                np.clip(self.host.to_host(w) - self.host.to_host(g), -limit, limit)
            )

    be = Leaky()
    w = be.host.from_host(np.ones(4, np.int8))
    be.rescale(be.host.from_host(np.arange(8, dtype=np.int32)), 1, "round", TAG)
    with pytest.raises(DatapathLeak, match=r"update \(4,\) of layer 't', phase 'forward' ran on"):
        be.update(w, w, TAG)
    assert be.ledger.as_dict() == {"device": 1, "host": 1}


_UB_RUN = """
import numpy as np
from nitihw.golden import OpTag, NumpyBackend
from tests import cupy_standin
from nitihw.gpu import kernels
TAG = OpTag("t", "forward")
with cupy_standin.installed():
    from nitihw.gpu.backend import CupyBackend
    be = CupyBackend()
    rng = np.random.default_rng(0)
    corners = [0, 1, -1, 127, -127, 128, -128, 2**31 - 1, -(2**31), 2**62, -(2**62), 2**63 - 1,
               -(2**63) + 1]
    x = np.concatenate([rng.integers(-(2**63) + 1, 2**63 - 1, 5000), corners])
    for dtype in (np.int32, np.int64):
        xs = be.host.from_host(x.astype(dtype))
        for mode in ("round", "psto", "trunc", "rne", "sto"):
            for s in range(-10, 63):
                rand = rng.integers(0, 1 << max(s, 0), x.shape) if mode == "sto" else None
                be.rescale(xs, s, mode, TAG, None if rand is None else be.host.from_host(rand))
        be.max_magnitude(xs, TAG)
        int(be.bitwidth(xs, TAG))
    acc = rng.integers(-(2**62), 2**62, (2 * 6 * 6, 3))
    for shift in (0, 7, 40, 62):
        for mode in ("round", "psto", "rne"):
            y, idx = be.rescale_relu_pool(be.host.from_host(acc), shift, mode, TAG, (2, 6, 6, 3), 2)
            be.host.pool_relu_backward(y, y, idx, (2, 6, 6, 3), 2)
    x8 = be.host.from_host(rng.integers(-128, 128, (37, 11)).astype(np.int8))
    be._int8_rows(x8, 40, 16)
    kernels.transpose_int8(be.host.from_host(rng.integers(-128, 128, (64, 24)).astype(np.int8)))
    be.host.argmax(x8)
    be.host.relu_backward(x8, x8)
    for e in (-1000, -64, -42, -41, -30, -20, -7, -6, 0, 40):  # every branch of the loss
        for classes in (1, 10, 16):
            a = rng.integers(-128, 128, (16, classes)).astype(np.int8)
            a[0] = 127
            a[1] = -128
            labels = be.host.from_host(rng.integers(0, classes, 16))
            be.host.cross_entropy_error(be.host.from_host(a), e, labels, "psto")
    w, g = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128))
    w8, g8 = be.host.from_host(w.astype(np.int8)), be.host.from_host(g.astype(np.int8))
    for limit in (127, 64, 1):
        be.update(w8, g8, TAG, limit=limit)
    w16 = rng.integers(-32768, 32768, w.shape).astype(np.int16)
    be.update_master(be.host.from_host(w16), g8, TAG)
    kernels.counter_hash_kernel()(be.host.from_host(np.arange(2**16, dtype=np.uint32) * 65537))
print("ok")
"""


def _run_with_ubsan(code: str):
    env = dict(os.environ, NITIHW_STANDIN_UBSAN="1")
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT
    )


def test_kernels_have_no_undefined_behaviour():
    """The kernels built with UBSan, run over the whole int32/int64 range and every shift: no
    signed overflow or oversized shift, whose result a GPU could give differently."""
    done = _run_with_ubsan(_UB_RUN)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_ubsan_run_catches_a_planted_overflow():
    code = """
import numpy as np
from tests import cupy_standin
with cupy_standin.installed() as cp:
    k = cp.ElementwiseKernel("int32 x", "int32 y", "y = x << 31;", "planted_shift")
    k(cp.asarray(np.array([3], np.int32)))
print("ok")
"""
    done = _run_with_ubsan(code)
    assert done.returncode != 0 and "runtime error" in done.stderr


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA compiler) is not installed")
def test_kernel_sources_compile_as_cuda(tmp_path):
    """Every kernel, with each type it is used with, built as CUDA device code for the H100/H200
    (sm_90) with warnings as errors. No GPU is needed to compile; NVRTC itself runs on a GPU."""
    i32, i64 = np.dtype(np.int32), np.dtype(np.int64)
    with cupy_standin.installed():
        elementwise = [
            (kernels.rescale_kernel(), {"T": i32}, {"x", "u"}),
            (kernels.rescale_kernel(), {"T": i64}, {"x", "u"}),
            (kernels.update_kernel(), {}, {"w", "g"}),
            (kernels.update_master_kernel(), {}, {"w16", "g"}),
            (kernels.counter_hash_kernel(), {}, {"x"}),
            (kernels.transpose8_kernel(), {}, set()),
            (kernels.transpose8x8_kernel(), {}, set()),
            (kernels.loss_kernel(), {}, {"u"}),
            (kernels.rescale_relu_pool_kernel(), {"T": i32}, set()),
            (kernels.rescale_relu_pool_kernel(), {"T": i64}, set()),
            (kernels.rescale_relu_kernel(), {"T": i32}, {"x"}),
            (kernels.pool_relu_backward_kernel(), {"T": np.dtype(np.int8)}, set()),
            (kernels.step_int_kernel(), {}, set()),
            (kernels.pad_int8_kernel(), {}, set()),
            (kernels.first_argmax_kernel(), {"T": np.dtype(np.int8)}, set()),
            (
                kernels.relu_backward_kernel(),
                {"T": np.dtype(np.int8), "P": np.dtype(np.int8)},
                {"err", "pre"},
            ),
        ]
        reductions = [kernels.max_abs_kernel(), kernels.bitwidth_kernel()]
    parts = [
        k.source(typemap, arrays, cuda=True, name=f"{k.name}_{n}")
        for n, (k, typemap, arrays) in enumerate(elementwise)
    ]
    parts += [
        r.source({"T": np.dtype(t)}, cuda=True, name=f"{r.name}_{np.dtype(t).name}")
        for r in reductions
        for t in (np.int8, np.int16, np.int32, np.int64)
    ]
    cu = tmp_path / "nitihw_kernels.cu"
    cu.write_text("".join(f"namespace k{n} {{\n{p}}}\n" for n, p in enumerate(parts)))
    done = subprocess.run(
        [NVCC, "-arch=sm_90", "-ptx", "--Werror", "all-warnings", "-o", str(tmp_path / "k.ptx"),
         str(cu)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stderr}\n{cu.read_text()}"
    ptx = (tmp_path / "k.ptx").read_text()
    assert ptx.count(".entry") == len(parts)
