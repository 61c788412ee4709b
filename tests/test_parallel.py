"""The golden model's fast routes give the datapath's bits: direct convolutions (int8 or float32
im2col rows, col2im backward error) against the lowered GEMMs, and any thread count against
one."""

import contextlib
import dataclasses

import numpy as np
import pytest

from nitihw.golden import NumpyBackend, OpTag, exact_matmul, int8_gemm
from nitihw.golden.backend import AccumulatorOverflowError
from nitihw.golden.datasets import load_dataset
from nitihw.golden.parallel import Workers, check_threads
from nitihw.golden.train import TrainConfig, train

TAG = OpTag("l", "forward")


def _pair(accumulator_bits=32, overflow="error", threads=2):
    fast = NumpyBackend(accumulator_bits, overflow, threads=threads)
    slow = NumpyBackend(accumulator_bits, overflow, threads=1, lowered_convs=True)
    fast.trace, slow.trace = [], []
    return fast, slow


#: the GEMM engines the golden model's own routes may take: the int8 GEMM (where this CPU has
#: AVX-512 VNNI) and float32 BLAS
ENGINES = [
    pytest.param(
        "int8",
        marks=pytest.mark.skipif(
            not int8_gemm.available(), reason=f"int8 GEMM: {int8_gemm.status()}"
        ),
    ),
    "float32",
]


def _engine(name):
    return contextlib.nullcontext() if name == "int8" else int8_gemm.turned_off()


def _same_trace(a, b):
    assert [(e.op, e.tag, e.shape) for e in a.trace] == [(e.op, e.tag, e.shape) for e in b.trace]


@pytest.mark.parametrize(
    "shape,cout,k,pad,lim",
    [
        ((3, 9, 9, 2), 4, 3, 1, 127),
        ((2, 12, 12, 20), 50, 5, 0, 127),  # LeNet's conv2: float32 col2im needs float64 sums
        ((2, 8, 7, 3), 5, 5, 2, 3),
        ((40, 6, 6, 1), 3, 3, 1, 127),  # enough rows to split over the workers
        ((1, 5, 5, 4), 2, 1, 0, 90),
    ],
)
@pytest.mark.parametrize("engine", ENGINES)
def test_direct_convs_equal_lowered(engine, shape, cout, k, pad, lim):
    rng = np.random.default_rng(k * 10 + pad + shape[0])
    x = rng.integers(-lim, lim + 1, shape).astype(np.int8)
    w = rng.integers(-127, 128, (cout, k, k, shape[3])).astype(np.int8)
    fast, slow = _pair()
    with int8_gemm.turned_off():  # the reference: lowered GEMMs on float32 BLAS
        cols_s, acc_s, sh_s = slow.conv(x, w, pad, TAG)
    with _engine(engine):
        _check_direct_convs(fast, slow, x, w, pad, lim, rng, (cols_s, acc_s, sh_s))


def _check_direct_convs(fast, slow, x, w, pad, lim, rng, lowered):
    cout = w.shape[0]
    cols_s, acc_s, sh_s = lowered
    cols_f, acc_f, sh_f = fast.conv(x, w, pad, TAG)
    assert cols_f.dtype == (np.int8 if int8_gemm.available() else np.float32)
    assert cols_s.dtype == np.int8
    np.testing.assert_array_equal(cols_f, cols_s)
    np.testing.assert_array_equal(acc_f, acc_s)
    assert acc_f.dtype == acc_s.dtype and sh_f == sh_s
    err = rng.integers(-lim, lim + 1, sh_f).astype(np.int8)
    e_f = fast.conv_error(err, w, pad, TAG)
    with int8_gemm.turned_off():
        e_s = slow.conv_error(err, w, pad, TAG)
    np.testing.assert_array_equal(e_f, e_s)
    assert e_f.dtype == e_s.dtype
    assert fast.bitwidth(e_f, TAG) == slow.bitwidth(e_s, TAG)
    g_f = fast.gemm(err.reshape(-1, cout).T, cols_f, TAG)
    with int8_gemm.turned_off():
        g_s = slow.gemm(err.reshape(-1, cout).T, cols_s, TAG)
    np.testing.assert_array_equal(g_f, g_s)
    _same_trace(fast, slow)


@pytest.mark.parametrize("engine", ENGINES)
def test_direct_conv_error_overflow_policy(engine):
    """A 16-bit accumulator overflows in the col2im route exactly as in the lowered GEMM."""
    rng = np.random.default_rng(3)
    err = rng.integers(100, 128, (2, 6, 6, 8)).astype(np.int8)
    w = rng.integers(100, 128, (8, 3, 3, 2)).astype(np.int8)
    fast, slow = _pair(16, "wrap")
    with int8_gemm.turned_off():
        want = slow.conv_error(err, w, 1, TAG)
    with _engine(engine):
        np.testing.assert_array_equal(fast.conv_error(err, w, 1, TAG), want)
        assert fast.overflow_events == slow.overflow_events > 0
        with pytest.raises(AccumulatorOverflowError):
            NumpyBackend(16).conv_error(err, w, 1, TAG)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("m,k,n,lim", [(700, 300, 40, 127), (30, 5000, 20, 127), (90, 90, 9, 3)])
def test_threaded_gemm_equals_one_thread(engine, threads, m, k, n, lim):
    rng = np.random.default_rng(m + k)
    a = rng.integers(-lim, lim + 1, (m, k)).astype(np.int8)
    b = rng.integers(-lim, lim + 1, (k, n)).astype(np.int8)
    want = exact_matmul(a, b, "int64")
    with _engine(engine):
        got = exact_matmul(a, b, workers=Workers(threads))
    np.testing.assert_array_equal(got, want)


def test_rescale_and_range_in_blocks():
    rng = np.random.default_rng(5)
    acc = rng.integers(-(2**20), 2**20, (600, 300)).astype(np.int32)
    rand = rng.integers(0, 2**9, acc.shape)
    one, three = NumpyBackend(threads=1), NumpyBackend(threads=3)
    for mode in ("round", "psto", "trunc", "rne"):
        np.testing.assert_array_equal(
            three.rescale(acc, 9, mode, TAG), one.rescale(acc, 9, mode, TAG)
        )
    np.testing.assert_array_equal(
        three.rescale(acc, 9, "sto", TAG, rand), one.rescale(acc, 9, "sto", TAG, rand)
    )
    assert three.bitwidth(acc, TAG) == one.bitwidth(acc, TAG) == 20
    assert three.max_magnitude(acc, TAG) == int(np.abs(acc).max())


@pytest.mark.parametrize("profile", ["niti", "niti-2020", "wage", "nitro-d"])
def test_training_bits_do_not_depend_on_threads(profile):
    data = load_dataset("mnist5k")
    data = dataclasses.replace(data, test_x=data.test_x[:64], test_y=data.test_y[:64])
    cfg = dict(model="lenet", dataset="mnist5k", profile=profile, epochs=9, batch=64)
    hashes = set()
    overflow = "wrap" if profile == "nitro-d" else "error"
    for threads in (1, 2, 3):
        be = NumpyBackend(overflow=overflow, threads=threads)
        hashes.add(train(TrainConfig(**cfg, steps=2), data, be)["weights_sha256"])
    with int8_gemm.turned_off():  # the float32 BLAS routes, direct and lowered
        for be in (
            NumpyBackend(overflow=overflow, threads=2),
            NumpyBackend(overflow=overflow, threads=1, lowered_convs=True),
        ):
            hashes.add(train(TrainConfig(**cfg, steps=2), data, be)["weights_sha256"])
    assert len(hashes) == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_threads_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="--threads"):
        check_threads(bad)


def test_worker_errors_propagate():
    def boom(lo, hi):
        if lo:
            raise RuntimeError(f"block {lo}")
        return hi

    with pytest.raises(RuntimeError, match="block"):
        Workers(3).run(boom, [(0, 1), (1, 2), (2, 3)])


def _tune(tuner, seconds_for, steps):
    used, last = [], None
    for _ in range(steps):
        threads = tuner.next_threads(last)
        used.append(threads)
        last = seconds_for(threads)
    return used


def test_thread_tuner_runs_the_faster_setting_and_tries_again_each_period():
    from nitihw.golden.parallel import ThreadTuner

    tuner = ThreadTuner(2, period=12, trial=2, others=lambda: 0.0)
    busy = _tune(tuner, lambda t: {1: 0.010, 2: 0.015}[t], 12)
    assert busy == [2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1]  # trials, then one thread
    idle = _tune(tuner, lambda t: {1: 0.010, 2: 0.006}[t], 12)
    assert idle == [2, 2, 2, 1, 1, 1, 2, 2, 2, 2, 2, 2]  # the next period measures again
    close = _tune(tuner, lambda t: {1: 0.0095, 2: 0.010}[t], 12)
    assert close[6:] == [2] * 6  # one thread must win by the margin
    assert _tune(ThreadTuner(1), lambda t: 0.01, 5) == [1] * 5


def test_thread_tuner_runs_one_thread_when_other_jobs_hold_the_cores():
    """Where other processes kept more cores busy during the trial than the machine can spare
    the workers, one thread runs, even when the trial's times favour splitting (they are a
    coin toss then); with the cores free, the times decide."""
    from nitihw.golden.parallel import ThreadTuner

    load = [1.6]
    tuner = ThreadTuner(2, period=12, trial=2, others=lambda: load[0], cores=2)
    faster_split = lambda t: {1: 0.010, 2: 0.006}[t]  # noqa: E731
    assert _tune(tuner, faster_split, 12)[6:] == [1] * 6
    load[0] = 0.2
    assert _tune(tuner, faster_split, 12)[6:] == [2] * 6
    wide = ThreadTuner(4, period=12, trial=2, others=lambda: 1.6, cores=16)  # cores to spare
    assert _tune(wide, lambda t: {1: 0.010, 4: 0.006}[t], 12)[6:] == [4] * 6
    unknown = ThreadTuner(2, period=12, trial=2, others=lambda: None, cores=2)
    assert _tune(unknown, faster_split, 12)[6:] == [2] * 6


def test_other_load_reads_the_cores_other_processes_use():
    """OtherLoad sees a busy process beside this one, and not this process's own work."""
    import subprocess
    import sys
    import time

    from nitihw.golden.parallel import OtherLoad

    load = OtherLoad()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # this process's own work
        pass
    mine = load.cores()  # about 0 (plus whatever else the machine runs)
    assert mine is not None
    spin = "import time\nend = time.monotonic() + 1.0\nwhile time.monotonic() < end: pass\n"
    proc = subprocess.Popen([sys.executable, "-c", spin])
    time.sleep(0.2)
    load.cores()
    time.sleep(0.5)
    others = load.cores()
    proc.wait()
    # the spinner's core shows; this process's own spinning above did not
    assert others is not None and others >= mine + 0.5


def test_default_backend_tunes_and_fixed_threads_do_not():
    be = NumpyBackend()
    assert be._tuner is not None
    fixed = NumpyBackend(threads=2)
    for _ in range(20):
        fixed.end_step(0.01)
    assert fixed._tuner is None and fixed.workers.threads == 2


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32])
def test_relu_equals_maximum(dtype):
    """The golden ReLU's bit trick against NumPy's maximum, extremes included."""
    info = np.iinfo(dtype) if np.dtype(dtype).kind == "i" else np.finfo(dtype)
    x = np.array([info.min, info.min + 1, -1, 0, 1, info.max - 1, info.max], dtype)
    x = np.concatenate([x, np.random.default_rng(1).integers(-100, 100, 994).astype(dtype)])
    got = NumpyBackend(threads=1).host.relu(x.reshape(-1, 7, 1))
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got.reshape(-1), np.maximum(x, 0))


def test_freed_memory_is_kept_once_a_run_starts():
    from nitihw.golden import memory

    with NumpyBackend(threads=1).session():
        assert memory.retain_freed_memory() is True  # glibc (the Linux machines CI runs on)


def test_a_run_leaves_older_objects_out_of_the_collector():
    """A golden run freezes the objects made before it (gc.freeze) and unfreezes them when it
    ends; objects the run makes are still collected."""
    import gc

    before = gc.get_freeze_count()
    with NumpyBackend(threads=1).session():
        assert gc.get_freeze_count() > before
        cycle = []
        cycle.append(cycle)
        probe = len(gc.get_objects())
        del cycle
        gc.collect()
        assert len(gc.get_objects()) < probe  # the run's own garbage is collected
    assert gc.get_freeze_count() == 0
