"""The compiled int8 GEMMs (golden/int8_gemm*.c) against NumPy's int64 matmul, element by
element: every kernel this CPU can run (forced, as ``NITIHW_KERNELS`` does, so the AVX2 kernel
is tested on AVX-512 machines too), every panel width, direct and flipped, every padding case
(K, N and M tails), operand layouts, the int32 extremes, thread splits; the choice of kernel;
and the golden model's fallbacks when none is available. The ARM64 kernel runs under
qemu-aarch64 (tests/test_int8_gemm_arm64.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from nitihw.golden import exact_matmul, int8_gemm
from nitihw.golden.gemm import exact_matmul_range
from nitihw.golden.parallel import Workers

needs_int8 = pytest.mark.skipif(
    not int8_gemm.available(), reason=f"int8 GEMM: {int8_gemm.status()}"
)
#: the kernels this CPU runs (on x86 with AVX-512 VNNI: both x86 kernels)
HERE = [k for k in int8_gemm.KERNELS if int8_gemm.kernel_status(k) == "available"]


@pytest.fixture(params=HERE or [None], ids=lambda k: k or "none")
def kernel(request):
    """Each kernel this CPU can run, forced for the test."""
    if request.param is None:
        pytest.skip(f"no int8 kernel runs here: {int8_gemm.status()}")
    with int8_gemm.forced(request.param):
        yield request.param


def plans() -> list:
    """``(flipped, nv)`` of every microkernel of the kernel in use."""
    return [(flip, nv) for flip in (False, True) for nv in sorted(int8_gemm._load().rows)]


#: every kernel this CPU runs with every plan of it: ``(kernel, (flipped, nv))``
KERNEL_PLANS = [
    (name, (flip, nv))
    for name in HERE
    for flip in (False, True)
    for nv in sorted(int8_gemm._load_kernel(name).rows)
]


@pytest.fixture(
    params=KERNEL_PLANS or [None],
    ids=lambda p: f"{p[0]}-{'flipped' if p[1][0] else 'direct'}-nv{p[1][1]}" if p else "none",
)
def kernel_plan(request):
    """Each plan of each kernel this CPU can run, the kernel forced for the test."""
    if request.param is None:
        pytest.skip(f"no int8 kernel runs here: {int8_gemm.status()}")
    name, plan = request.param
    with int8_gemm.forced(name):
        yield plan


def _want(a, b):
    out = a.astype(np.int64) @ b.astype(np.int64)
    return out, (int(out.min()), int(out.max())) if out.size else (0, 0)


def _check(a, b, **kw):
    got, lo, hi = int8_gemm.matmul_range(a, b, **kw)
    want, (wlo, whi) = _want(a, b)
    assert got.dtype == np.int32 and got.flags.c_contiguous and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert (lo, hi) == (wlo, whi)


@pytest.mark.parametrize(
    "m,k,n",
    [(1, 1, 1), (5, 3, 7), (17, 4, 16), (16, 5, 17), (33, 6, 48), (49, 7, 65), (6, 257, 100)],
)
def test_every_kernel_and_padding(kernel_plan, m, k, n):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    _check(a, b, plan=kernel_plan)


def test_operand_layouts(kernel_plan):
    """C order, Fortran order, transposed views, slices with gaps and reversed axes."""
    rng = np.random.default_rng(7)
    big_a = rng.integers(-128, 128, (40, 90)).astype(np.int8)
    big_b = rng.integers(-128, 128, (90, 60)).astype(np.int8)
    layouts_a = [big_a[:37, :41], np.asfortranarray(big_a[:37, :41]), big_a[1:38:1, ::2][:, :41]]
    layouts_a.append(big_a[::-1][:37, :41])
    layouts_b = [big_b[:41, :50], np.asfortranarray(big_b[:41, :50]), big_b[::2, ::-1][:41, :50]]
    layouts_b.append(np.ascontiguousarray(big_b[:50, :41].T))
    for a in layouts_a:
        for b in layouts_b:
            _check(a, b, plan=kernel_plan)


@pytest.mark.parametrize("k", [15, 16, 17, 32, 47])
def test_b_with_contiguous_columns(kernel_plan, k):
    """B the transpose of a row-major array (a weight-gradient GEMM's layout), with K around
    the 16-row blocks the AVX2 packing transposes, panels whole and partial, and the int8
    extremes in every block."""
    rng = np.random.default_rng(k)
    a = rng.integers(-128, 128, (13, k)).astype(np.int8)
    bt = rng.integers(-128, 128, (37, k)).astype(np.int8)  # (N, K) row-major
    bt[::5] = -128
    bt[1::7] = 127
    _check(a, bt.T, plan=kernel_plan)
    _check(bt, a.T, plan=kernel_plan)  # the other operand's turn


def test_int32_extremes(kernel):
    """The longest K whose sums all fit int32 (MAX_K), with -128 and 127 everywhere: the offset
    of the unsigned operand wraps the int32 lanes on the way, the result must not."""
    k = int8_gemm.MAX_K
    a = np.full((3, k), -128, np.int8)
    a[1] = 127
    a[2, ::2] = -128
    a[2, 1::2] = 127
    b = np.full((k, 3), -128, np.int8)
    b[:, 1] = 127
    b[::3, 2] = 0
    for plan in (plans()[0], plans()[-1]):
        _check(a, b, plan=plan)
        got = int8_gemm.matmul_range(a, b, plan=plan)[0]
        assert got[0, 0] == k * 128 * 128 and got[0, 0] < 2**31


def test_zero_sizes(kernel):
    for m, k, n in [(0, 5, 3), (4, 0, 3), (4, 5, 0)]:
        got, lo, hi = int8_gemm.matmul_range(np.ones((m, k), np.int8), np.ones((k, n), np.int8))
        assert got.shape == (m, n) and not got.any() and (lo, hi) == (0, 0)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("m,k,n", [(4096, 50, 500), (50, 4096, 500), (20, 25, 9000)])
def test_row_blocks_over_workers(kernel, threads, m, k, n):
    rng = np.random.default_rng(threads + m)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    _check(a, b, workers=Workers(threads))


@needs_int8
def test_exact_matmul_takes_it_and_can_be_forced():
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, (64, 300)).astype(np.int8)
    b = rng.integers(-128, 128, (300, 70)).astype(np.int8)
    want = a.astype(np.int64) @ b
    for method in ("auto", "int8"):
        out, lo, hi = exact_matmul_range(a, b, method)
        np.testing.assert_array_equal(out, want)
        assert out.dtype == np.int32 and (lo, hi) == (want.min(), want.max())
    with int8_gemm.turned_off():
        assert not int8_gemm.available() and "turned off" in int8_gemm.status()
        np.testing.assert_array_equal(exact_matmul(a, b), want)  # float32 BLAS
        with pytest.raises(ValueError, match="turned off"):
            exact_matmul(a, b, "int8")
    assert int8_gemm.available()


def test_int8_needs_int8_operands_and_short_k():
    a16 = np.ones((4, 8), np.int16)
    with pytest.raises(ValueError, match="int8 operands"):
        exact_matmul(a16, np.ones((8, 2), np.int8), "int8")
    # past MAX_K the int32 result is not guaranteed: auto takes an exact float route
    k = int8_gemm.MAX_K + 1
    a = np.full((1, k), -128, np.int8)
    out = exact_matmul(a, np.full((k, 1), -128, np.int8))
    assert out.dtype == np.int64 and out[0, 0] == k * 128 * 128


def _fresh_status(env) -> str:
    code = "from nitihw.golden import int8_gemm; print(int8_gemm.status())"
    done = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_turned_off_by_environment():
    assert _fresh_status({"NITIHW_KERNELS": "numpy"}) == "turned off (NITIHW_KERNELS=numpy)"
    assert _fresh_status({"NITIHW_KERNELS": "blas"}) == "turned off (NITIHW_KERNELS=blas)"


@needs_int8
def test_a_failing_compiler_falls_back(tmp_path):
    """A compiler that fails leaves the golden model on its float routes, saying why."""
    cc = tmp_path / "broken-cc"
    cc.write_text("#!/bin/sh\necho 'broken-cc 1.0'\n[ \"$1\" = --version ] && exit 0\nexit 1\n")
    cc.chmod(0o755)
    status = _fresh_status({"CC": str(cc), "NITIHW_CACHE_DIR": str(tmp_path / "cache")})
    # every kernel this CPU has was tried, and each says why it could not be had
    for name in HERE:
        assert f"{name}: could not build it: " in status and "broken-cc failed" in status
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-written left behind


@needs_int8
def test_compiled_once_into_the_cache(tmp_path):
    env = {"NITIHW_CACHE_DIR": str(tmp_path)}
    assert _fresh_status(env) == "in use"
    built = list(tmp_path.glob("int8_gemm-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    assert _fresh_status(env) == "in use"
    assert built[0].stat().st_mtime_ns == stamp and len(list(tmp_path.iterdir())) == 1


def _conv_error_want(err, weight, pad):
    """The full convolution with the flipped kernel, in int64 loops over the taps."""
    b, ho, wo, cout = err.shape
    _, k, _, cin = weight.shape
    h, w = ho - 2 * pad + k - 1, wo - 2 * pad + k - 1
    full = np.zeros((b, ho + k - 1, wo + k - 1, cin), np.int64)
    for kh in range(k):
        for kw in range(k):
            part = err.reshape(-1, cout).astype(np.int64) @ weight[:, kh, kw, :].astype(np.int64)
            full[:, kh : kh + ho, kw : kw + wo] += part.reshape(b, ho, wo, cin)
    return full[:, pad : pad + h, pad : pad + w].reshape(b * h * w, cin)


@pytest.mark.parametrize(
    "shape,k,cin,pad,block_bytes,threads",
    [
        ((64, 8, 8, 50), 5, 20, 0, 1 << 19, 2),  # LeNet's conv2
        ((3, 6, 5, 7), 3, 17, 1, 1, 1),  # one image a block, C_in past one vector
        ((5, 12, 11, 33), 5, 3, 4, 4000, 3),  # the largest padding
        ((2, 3, 3, 1), 1, 40, 0, 1 << 19, 1),
    ],
)
def test_conv_error(kernel, shape, k, cin, pad, block_bytes, threads):
    rng = np.random.default_rng(k + cin + pad)
    err = rng.integers(-128, 128, shape).astype(np.int8)
    weight = rng.integers(-128, 128, (shape[3], k, k, cin)).astype(np.int8)
    got, lo, hi = int8_gemm.conv_error_range(err, weight, pad, Workers(threads), block_bytes)
    want = _conv_error_want(err, weight, pad)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    assert (lo, hi) == (want.min(), want.max())


def _fresh(env, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True
    )


@pytest.mark.parametrize("name", HERE)
def test_nitihw_kernels_forces_a_kernel(name, tmp_path):
    """``NITIHW_KERNELS=avx2`` runs the AVX2 kernel on a machine that has a better one (so
    CI tests it on every x86 machine)."""
    code = "from nitihw.golden import int8_gemm as g; print(g.kernel(), '|', g.status())"
    done = _fresh({"NITIHW_KERNELS": name, "NITIHW_CACHE_DIR": str(tmp_path)}, code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{name} | in use"
    auto = _fresh({"NITIHW_KERNELS": "auto", "NITIHW_CACHE_DIR": str(tmp_path)}, code)
    assert auto.stdout.strip() == f"{HERE[0]} | in use"  # the best this CPU has


def test_nitihw_kernels_names_what_it_cannot_do(tmp_path):
    code = "from nitihw.golden import int8_gemm as g; print(g.kernel(), '|', g.status())"
    env = {"NITIHW_CACHE_DIR": str(tmp_path)}
    other = next(
        k.name for k in int8_gemm.KERNELS.values() if k.arch != int8_gemm.machine()
    )  # a kernel for another architecture
    done = _fresh({**env, "NITIHW_KERNELS": other}, code)
    assert done.returncode == 0, done.stderr
    none, why = done.stdout.strip().split(" | ")
    assert none == "None" and why.startswith(f"NITIHW_KERNELS={other}: it is for ")
    bad = _fresh({**env, "NITIHW_KERNELS": "sse9"}, code)
    assert bad.returncode != 0
    assert (
        "NITIHW_KERNELS='sse9': choose from auto, blas, numpy, avx512vnni, avx2, i8mm, neon"
        in bad.stderr
    )
    with pytest.raises(ValueError, match=f"the {other} int8 kernel cannot run here"):
        with int8_gemm.forced(other):
            pass


@pytest.mark.parametrize("name", HERE)
def test_the_golden_model_has_the_same_bits_on_every_kernel(name):
    """A few LeNet steps on each kernel and on the float BLAS routes: the same weights."""
    from nitihw.golden.datasets import load_dataset
    from nitihw.golden.train import TrainConfig, train

    data = load_dataset("mnist5k")
    data.test_x, data.test_y = data.test_x[:64], data.test_y[:64]
    cfg = TrainConfig(model="lenet", dataset="mnist5k", batch=64, steps=3)
    with int8_gemm.turned_off():
        want = train(cfg, data)["weights_sha256"]
    with int8_gemm.forced(name):
        assert train(cfg, data)["weights_sha256"] == want


def test_a_tuned_kernel_times_every_plan_in_turns(kernel, monkeypatch):
    """The kernels whose plans are chosen by timing (all but VNNI's) run each plan of a large
    GEMM TUNE_ROUNDS times on its first call, the plans taking turns, keep the fastest for its
    shape and layout, and give the same integers either way."""
    if not int8_gemm._load().kernel.tuned:
        pytest.skip(f"{kernel} plans by its cost model")
    monkeypatch.setattr(int8_gemm, "_tuned", {})
    calls = []
    run = int8_gemm._run
    monkeypatch.setattr(int8_gemm, "_run", lambda *a: calls.append(a[3:5]) or run(*a))
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, (150, 90)).astype(np.int8)
    b = rng.integers(-128, 128, (90, 120)).astype(np.int8)
    _check(a, b)
    every = plans()
    assert calls == every * int8_gemm.TUNE_ROUNDS  # every plan, in turns
    (plan,) = int8_gemm._tuned.values()
    calls.clear()
    _check(a, b)
    assert calls == [plan]  # then the fastest only
    _check(a[:, :40], b[:40])  # another shape: below MIN_TUNE_MACS, the cost model's plan
    assert len(int8_gemm._tuned) == 1
