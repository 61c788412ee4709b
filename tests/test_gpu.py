"""The CuPy backend against the golden model, element by element.

Every test runs twice: on a real GPU (``cuda``, skipped with the reason where there is none) and
on the CPU stand-in for CuPy (``cpu-standin``, tests/cupy_standin.py), which compiles the same
CUDA kernel sources with g++ and refuses host/device mixing as CuPy does. The stand-in runs in
CI; only the ``cuda`` runs verify the GPU itself. The last two tests check that a missing GPU is
reported clearly.
"""

import numpy as np
import pytest

from nitihw.golden import NumpyBackend, OpTag, counter_hash, exact_matmul, shift_round
from nitihw.golden.backend import AccumulatorOverflowError
from nitihw.golden.loss import cross_entropy_error
from nitihw.gpu.backend import gpu_available
from nitihw.sim.command.cli import main
from tests import cupy_standin, gpu_golden

HAVE_GPU, WHY = gpu_available()
TAG = OpTag("t", "forward")


@pytest.fixture(params=["cuda", "cpu-standin"])
def device(request):
    """Where the GPU backend runs: the GPU, or the CPU stand-in installed as ``cupy``."""
    if request.param == "cuda":
        if not HAVE_GPU:
            pytest.skip(f"no GPU: {WHY}")
        yield request.param
    else:
        if cupy_standin.CXX is None:
            pytest.skip("the CuPy stand-in needs a C++ compiler (g++) for the kernels")
        with cupy_standin.installed():
            yield request.param


@pytest.fixture
def be(device):
    from nitihw.gpu.backend import CupyBackend

    return CupyBackend()


def host(be, x):
    return be.host.to_host(x)


@pytest.mark.parametrize("mode", ["round", "psto", "trunc", "rne", "sto"])
def test_rescale_kernel(be, mode):
    rng = np.random.default_rng(len(mode))
    x = np.concatenate(
        [
            rng.integers(-(2**31), 2**31, 20000),
            [0, 1, -1, 127, -127, 128, -128, 2**31 - 1, -(2**31), 1004, -1012],
        ]
    )
    for dtype in (np.int32, np.int64):
        xs = x.astype(dtype)
        for s in range(-10, 41):  # negative: WAGE's left shifts
            rand = rng.integers(0, 1 << max(s, 0), xs.shape) if mode == "sto" else None
            got = host(
                be,
                be.rescale(
                    be.host.from_host(xs),
                    s,
                    mode,
                    TAG,
                    None if rand is None else be.host.from_host(rand),
                ),
            )
            np.testing.assert_array_equal(
                got, shift_round(xs, s, mode, rand), err_msg=f"{mode} shift {s} {dtype}"
            )


def test_divide_operations(be):
    """NITRO-D's scaling and IntegerSGD (trunc_div, saturate, int32 wrap) on the device."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.integers(-(2**31), 2**31, 5000), [0, 1, -1, -(2**31), 2**31 - 1]])
    w = rng.integers(-(2**31), 2**31, x.shape).astype(np.int32)
    gold = NumpyBackend()
    for d in (1, 3, 4, 256 * 64, 512 * 640, 12000):
        np.testing.assert_array_equal(
            host(be, be.divide(be.host.from_host(x), d, TAG)), gold.divide(x, d, TAG)
        )
        for decay in (0, 3000):
            got = be.update_div(be.host.from_host(w), be.host.from_host(x), d, decay, TAG)
            np.testing.assert_array_equal(host(be, got), gold.update_div(w, x, d, decay, TAG))


def test_update_kernels_exhaustive(be):
    w, g = np.meshgrid(np.arange(-127, 128, dtype=np.int8), np.arange(-127, 128, dtype=np.int8))
    for limit in (127, 64, 1):  # WAGE clamps at 64
        got = host(be, be.update(be.host.from_host(w), be.host.from_host(g), TAG, limit=limit))
        np.testing.assert_array_equal(got, NumpyBackend().update(w, g, TAG, limit=limit))
    w16 = np.random.default_rng(0).integers(-32767, 32768, g.shape).astype(np.int16)
    w16[0, :4] = [32767, -32767, 255, -255]
    a, b = be.update_master(be.host.from_host(w16), be.host.from_host(g), TAG)
    ra, rb = NumpyBackend().update_master(w16, g, TAG)
    np.testing.assert_array_equal(host(be, a), ra)
    np.testing.assert_array_equal(host(be, b), rb)


def test_counter_hash_and_masks(be):
    x = np.arange(100000, dtype=np.uint32) * np.uint32(2654435761)
    from nitihw.gpu.kernels import counter_hash_kernel

    np.testing.assert_array_equal(
        host(be, counter_hash_kernel()(be.host.from_host(x))), counter_hash(x)
    )
    gold = NumpyBackend()
    np.testing.assert_array_equal(
        host(be, be.host.keep_mask(3, 7, 11, 5000)), gold.host.keep_mask(3, 7, 11, 5000)
    )
    np.testing.assert_array_equal(
        host(be, be.host.random_bits(1, 2, 3, (40, 30), 4)),
        gold.host.random_bits(1, 2, 3, (40, 30), 4),
    )


@pytest.mark.parametrize("path", ["int8", "float32"])
@pytest.mark.parametrize(
    "shape", [(1, 1, 1), (7, 5, 3), (8, 64, 12), (65, 803, 33), (3, 300000, 2)]
)  # (8, 64, 12): no padding needed, operands go to cuBLAS as they are
def test_gemm_paths(device, path, shape):
    from nitihw.gpu.backend import CupyBackend

    b = CupyBackend(gemm=path)
    rng = np.random.default_rng(sum(shape))
    m, k, n = shape
    x = rng.integers(-127, 128, (m, k)).astype(np.int8)
    y = rng.integers(-127, 128, (k, n)).astype(np.int8)
    x[0, : min(k, 50)] = 127
    y[: min(k, 50), 0] = 127
    got = host(b, b.gemm(b.host.from_host(x), b.host.from_host(y), TAG))
    np.testing.assert_array_equal(got, exact_matmul(x, y))
    assert int(b.bitwidth(b.host.from_host(got), TAG)) == NumpyBackend().bitwidth(
        exact_matmul(x, y), TAG
    )


@pytest.mark.parametrize("path", ["int8", "float32"])
def test_gemm_wide_operands(device, path):
    """DFP16 multiplies int16 mantissas: exact on float64 GEMMs, chunked below 2^53."""
    from nitihw.gpu.backend import CupyBackend

    b = CupyBackend(accumulator_bits=56, gemm=path)  # the exact sums reach 2^53
    rng = np.random.default_rng(7)
    for (m, k, n), lim in [((5, 1000, 7), 2**15), ((64, 8, 4), 2**15), ((3, 9000, 2), 2**20)]:
        x = rng.integers(-lim + 1, lim, (m, k)).astype(np.int32)
        y = rng.integers(-lim + 1, lim, (k, n)).astype(np.int32)
        x[0], y[:, 0] = lim - 1, -(lim - 1)  # the largest sums
        got = host(b, b.gemm(b.host.from_host(x), b.host.from_host(y), TAG))
        np.testing.assert_array_equal(got, exact_matmul(x, y), err_msg=f"{(m, k, n)} {lim}")
    huge = np.full((2, 2), 2**27, np.int32)
    with pytest.raises(ValueError, match="does not fit"):
        b.gemm(b.host.from_host(huge), b.host.from_host(huge), TAG)


def test_gemm_overflow_policies(device):
    from nitihw.gpu.backend import CupyBackend

    a = np.full((2, 4), 127, np.int8)
    b = np.full((4, 2), 127, np.int8)
    small = np.ones((2, 4), np.int8)
    # The counts stay on the device until the step is settled: then the first GEMM that
    # overflowed is named, as golden names it at the GEMM itself.
    be16 = CupyBackend(accumulator_bits=16)
    be16.gemm(be16.host.from_host(small), be16.host.from_host(b), OpTag("fc0", "forward"))
    be16.gemm(be16.host.from_host(a), be16.host.from_host(b), OpTag("fc1", "forward"))
    be16.gemm(be16.host.from_host(a), be16.host.from_host(b), OpTag("fc2", "forward"))
    with pytest.raises(AccumulatorOverflowError, match=r"4 accumulator\(s\) .* layer 'fc1'"):
        be16.settle()
    be16.settle()  # read once: nothing left
    w = CupyBackend(accumulator_bits=16, overflow="wrap")
    for _ in range(2):
        got = host(w, w.gemm(w.host.from_host(a), w.host.from_host(b), TAG))
        np.testing.assert_array_equal(got, NumpyBackend(16, "wrap").gemm(a, b, TAG))
    assert w.overflow_events == 8


def test_host_operations_on_the_device(be):
    gold = NumpyBackend()
    rng = np.random.default_rng(5)
    x = rng.integers(-127, 128, (3, 9, 7, 4)).astype(np.int8)
    for k, pad in [(3, 1), (5, 0), (3, 2)]:
        np.testing.assert_array_equal(
            host(be, be.host.im2col(be.host.from_host(x), k, pad)), gold.host.im2col(x, k, pad)
        )
    t = np.zeros((2, 4, 4, 3), np.int8)
    t[0, 0, 1, 0] = t[0, 1, 0, 0] = 5  # a tie: the first maximum wins
    t[1] = rng.integers(-127, 128, (4, 4, 3))
    y, idx = be.host.maxpool(be.host.from_host(t), 2)
    gy, gidx = gold.host.maxpool(t, 2)
    np.testing.assert_array_equal(host(be, y), gy)
    np.testing.assert_array_equal(host(be, idx), gidx)
    err = rng.integers(-127, 128, gy.shape).astype(np.int8)
    np.testing.assert_array_equal(
        host(be, be.host.maxpool_backward(be.host.from_host(err), idx, t.shape, 2)),
        gold.host.maxpool_backward(err, gidx, t.shape, 2),
    )
    np.testing.assert_array_equal(
        host(be, be.host.relu_backward(be.host.from_host(x), be.host.from_host(x[::-1].copy()))),
        gold.host.relu_backward(x, x[::-1].copy()),
    )


def test_device_integers(be):
    """DeviceInt's arithmetic against Python's: ints added and max taken without a kernel,
    sums of two and replacements with one, read back only by int(); never a condition."""
    from nitihw.golden import scalars
    from nitihw.gpu.scalars import DeviceInt

    for v in (-70, -7, 0, 1, 9, 57):
        d = DeviceInt(be.host.const(v))
        for c in (-9, 0, 3):
            assert int(d + c) == v + c and int(c + d) == c + v
            assert int(d - c) == v - c and int(c - d) == c - v
            assert int(scalars.maximum(d - c, 0)) == max(v - c, 0)
            assert int(scalars.maximum(d, c) + 4) == max(v, c) + 4
            e = DeviceInt(be.host.const(c))
            assert int((d + 2).maximum(1) + (e - 5).maximum(-3)) == max(v + 2, 1) + max(c - 5, -3)
            assert int(scalars.maximum(d, 2) - e) == max(v, 2) - c
        assert int(-d) == -v
        assert int(scalars.replace(d, 1, 2)) == (2 if v == 1 else v)
        assert int(scalars.replace(d.maximum(1), 1, 2)) == (2 if max(v, 1) == 1 else max(v, 1))
        with pytest.raises(TypeError, match="synchronisation"):
            bool(d)
        with pytest.raises(TypeError, match="synchronisation"):
            d == 0  # noqa: B015
    d = DeviceInt(be.host.const(5))
    assert (d + 3).maximum(0).base is d.base  # no kernel: the same device value


@pytest.mark.parametrize("mode", ["round", "psto", "trunc", "rne"])
def test_fused_epilogue_kernels(be, mode):
    """Rescale + ReLU + max-pool in one kernel, and its backward, against golden's rescale,
    ReLU and max-pool layers' own operations: windows that do not cover the input, all-negative
    windows (ReLU's zeros tie: the first wins), narrower operands, int32 and int64 sums, the
    shift as an int and as a DeviceInt, and ReLU alone (k = 1)."""
    from nitihw.gpu.scalars import DeviceInt

    gold = NumpyBackend()
    rng = np.random.default_rng(len(mode) + 7)
    cases = [((2, 6, 6, 3), 2, np.int32, 127), ((3, 7, 5, 4), 2, np.int64, 127),
             ((1, 9, 9, 2), 3, np.int32, 31), ((4, 4, 4, 8), 1, np.int32, 127),
             ((2, 5, 6, 1), 2, np.int64, 127)]  # fmt: skip
    for shape, k, dtype, limit in cases:
        acc = rng.integers(-(2**20), 2**20, (int(np.prod(shape[:3])), shape[3])).astype(dtype)
        acc[: acc.shape[0] // 3] = -np.abs(acc[: acc.shape[0] // 3])  # all-negative windows
        for shift in (0, 5, 13):
            want_y, want_idx = gold.rescale_relu_pool(acc, shift, mode, TAG, shape, k, limit)
            for sh in (shift, DeviceInt(be.host.const(shift))):
                y, idx = be.rescale_relu_pool(
                    be.host.from_host(acc), sh, mode, TAG, shape, k, limit
                )
                np.testing.assert_array_equal(host(be, y), want_y, err_msg=f"{shape} {k} {sh}")
                if k > 1:
                    np.testing.assert_array_equal(host(be, idx), want_idx)
            err = rng.integers(-127, 128, want_y.shape).astype(np.int8)
            got = be.host.pool_relu_backward(be.host.from_host(err), y, idx, shape, k)
            want = gold.host.relu_backward(
                gold.host.maxpool_backward(err, want_idx, shape, k) if k > 1 else err,
                gold.host.relu(gold.rescale(acc, shift, mode, TAG, limit=limit).reshape(shape)),
            )  # the unfused layers' backward: pool, then ReLU's mask on its input
            np.testing.assert_array_equal(host(be, got), want, err_msg=f"{shape} {k} backward")


def test_a_step_traces_as_golden_does(device):
    """The GPU's fused epilogues and device scalars leave the trace and the ledger as golden's:
    the same operations, layers, phases, shapes and flags (the shifts on the device are not
    read back, so they are compared after an explicit read)."""
    from nitihw.golden import models as M
    from nitihw.golden.layers import StepContext
    from nitihw.golden.network import build_network
    from nitihw.golden.profiles import get_profile
    from nitihw.gpu.backend import CupyBackend

    rng = np.random.default_rng(3)
    x = rng.integers(0, 128, (8, 28, 28, 1)).astype(np.int8)
    labels = rng.integers(0, 10, 8)
    traces = []
    for be in (NumpyBackend(), CupyBackend()):
        net = build_network(M.get_model_spec("lenet"), get_profile("niti"), seed=0)
        net.to_backend(be)
        be.trace = []
        net.train_step(x, labels, StepContext(be, get_profile("niti")))
        traces.append([(e.op, e.tag, e.shape, {k: int(v) if k == "shift" else v
                        for k, v in e.extra.items()}) for e in be.trace])  # fmt: skip
        counts = sum(be.ledger.as_dict().values())
        assert counts == len(be.trace)
    assert traces[0] == traces[1]


def test_prediction_and_mask_kernels(be):
    """The row argmax kernel (ties: the first maximum) and ReLU's backward kernel against
    golden's host operations."""
    gold = NumpyBackend()
    rng = np.random.default_rng(12)
    x = rng.integers(-4, 4, (50, 10)).astype(np.int8)  # many ties
    x[0] = 3
    np.testing.assert_array_equal(
        host(be, be.host.argmax(be.host.from_host(x))), gold.host.argmax(x)
    )
    np.testing.assert_array_equal(
        host(be, be.host.argmax(be.host.from_host(x.T.copy()).T)), gold.host.argmax(x)
    )  # a transposed (non-contiguous) view
    err = rng.integers(-127, 128, (6, 7)).astype(np.int8)
    np.testing.assert_array_equal(
        host(be, be.host.relu_backward(be.host.from_host(err), be.host.from_host(x[:6, :7]))),
        gold.host.relu_backward(err, x[:6, :7]),
    )


def test_operand_layout_moves_the_same_bytes(be):
    """The word-wide im2col and the 8-byte transpose kernel against plain copies."""
    from nitihw.gpu.kernels import transpose_int8

    gold = NumpyBackend()
    rng = np.random.default_rng(9)
    # (264, 1152), (16, 8), (4096, 40): whole 8 x 8 tiles; the others byte by byte
    for rows, cols in [(8, 1), (16, 5), (264, 1152), (24, 7), (4096, 33), (16, 8), (4096, 40)]:
        x = rng.integers(-128, 128, (rows, cols)).astype(np.int8)
        np.testing.assert_array_equal(host(be, transpose_int8(be.host.from_host(x))), x.T)
        rows_t = host(be, be._int8_rows(be.host.from_host(x).T, cols + 3, rows + 16))
        np.testing.assert_array_equal(rows_t[:cols, :rows], x.T)  # zero-padded as before
        assert not rows_t[cols:].any() and not rows_t[:, rows:].any()
    for c, dtype in [(1, np.int8), (2, np.int8), (3, np.int8), (4, np.int8), (8, np.int8),
                     (24, np.int8), (128, np.int8), (3, np.int16), (4, np.int16)]:  # fmt: skip
        x = rng.integers(-128, 128, (2, 6, 5, c)).astype(dtype)
        for k, pad in [(3, 1), (5, 2), (2, 0)]:
            got = host(be, be.host.im2col(be.host.from_host(x), k, pad))
            np.testing.assert_array_equal(
                got, gold.host.im2col(x, k, pad), err_msg=f"{c} {k} {pad}"
            )
            assert got.dtype == dtype


#: logits exponents across every branch of the loss: the base-2 softmax (e > -7), golden's
#: int64 range (-20..-7), its Python-integer range below, the kernel's two-word range (k <= 41)
#: and its leading-coefficient rule above
LOSS_EXPONENTS = [-1000, -100, -64, -43, -42, -41, -40, -21, -20, -8, -7, -6, -1, 0, 3, 30]


@pytest.mark.parametrize("e", LOSS_EXPONENTS)
@pytest.mark.parametrize("mode", ["psto", "sto"])
def test_loss(be, e, mode):
    """The loss kernel against golden's loss, with the exponent given as an int and as a
    DeviceInt (read on the device), at 10 classes and at class counts that divide 2^11 (where
    Q sits on an integer and the floor is decided by the last bit)."""
    from nitihw.gpu.scalars import DeviceInt

    rng = np.random.default_rng(e + 1050)
    for classes, bits in [(10, 8), (1, 8), (2, 8), (16, 8), (7, 6)]:
        a = rng.integers(-127, 128, (64, classes)).astype(np.int8)
        a[0] = 127
        a[1] = a[1, 0]  # a row of equal logits: Q = 2^11 / C exactly where C divides it
        labels = rng.integers(0, classes, 64)
        rand = rng.integers(0, 1 << (12 - bits), a.shape) if mode == "sto" else None
        want = cross_entropy_error(a, e, labels, mode, rand, bits)
        for exp in (e, DeviceInt(be.host.const(e))):
            got = be.host.cross_entropy_error(
                be.host.from_host(a),
                exp,
                be.host.from_host(labels),
                mode,
                None if rand is None else be.host.from_host(rand),
                bits,
            )
            np.testing.assert_array_equal(host(be, got), want, err_msg=f"{classes} {exp}")


@pytest.mark.parametrize("case", gpu_golden.CASES)
def test_training_is_bit_exact_with_golden(device, tmp_path, case):
    """Whole training runs on the GPU against golden's, as tests/gpu_golden.json records them
    (computed on the CPU; ``test_golden_table_is_current`` keeps the table honest)."""
    gold = gpu_golden.load_table()[case]
    gpu_run = gpu_golden.run_case(case, "gpu", tmp_path)
    assert gpu_run["backend"] == "gpu"
    got = gpu_golden.summary(gpu_run)
    assert got == {k: gold[k] for k in got}
    # the ledger: every datapath operation of the run on the device
    assert gpu_run["datapath_ops"]["host"] == 0 and gpu_run["datapath_ops"]["device"] > 0


@pytest.mark.parametrize("case", gpu_golden.CASES)
def test_golden_table_is_current(tmp_path, case):
    """The golden model still gives what tests/gpu_golden.json says (else: regenerate it with
    ``python -m tests.gpu_golden`` and say why the numbers moved)."""
    table = gpu_golden.load_table()
    assert table[case]["args"] == gpu_golden.CLI_CASES.get(case)
    got = gpu_golden.summary(gpu_golden.run_case(case, "golden", tmp_path))
    assert got == {k: table[case][k] for k in got}


def test_long_table_was_made_with_the_current_short_table():
    """tests/gpu_golden_long.json (the long mode's golden runs, minutes to make) records the
    short table it was made with. The short table is kept current in every default run, so a
    change to the numerics shows here too: regenerate with ``python -m tests.gpu_golden
    --long``. ``test_long_table_is_current`` (slow) trains the long cases again."""
    table = gpu_golden.load_long_table()
    assert table["short_table_sha256"] == gpu_golden.short_table_sha256(), (
        "tests/gpu_golden.json changed since tests/gpu_golden_long.json was made: run "
        "`python -m tests.gpu_golden --long`"
    )
    for case, args in gpu_golden.LONG_CLI_CASES.items():
        assert table["cases"][case]["args"] == args


@pytest.mark.slow
@pytest.mark.parametrize("case", gpu_golden.LONG_CASES)
def test_long_table_is_current(tmp_path, case):
    want = gpu_golden.load_long_table()["cases"][case]
    got = gpu_golden.long_summary(gpu_golden.run_case(case, "golden", tmp_path))
    assert got == {k: want[k] for k in got}


@pytest.mark.gpu_long
@pytest.mark.parametrize("case", gpu_golden.LONG_CASES)
def test_long_run_matches_golden(device, tmp_path, case):
    """The long mode (``bench/gpu_session.sh long``): each whole run on the GPU against the
    long table, every epoch's accuracies and the full hash, printed case by case (``-rA``)."""
    _long_case(device, tmp_path, case)


@pytest.mark.parametrize(
    "case",
    [
        *gpu_golden.LONG_CLI_CASES,
        # about a minute on the stand-in; the chunked GEMM itself is in test_gemm_paths
        pytest.param(gpu_golden.VGG_LONG_CASE, marks=pytest.mark.slow),
    ],
)
def test_long_runner_on_the_standin(tmp_path, case):
    """The long mode's runner on the stand-in, every case cut to 2 steps and compared with
    golden trained here (this checks the runner and the chunked path, not the table)."""
    if cupy_standin.CXX is None:
        pytest.fail("the CuPy stand-in needs a C++ compiler (g++)")
    with cupy_standin.installed():
        _long_case("cpu-standin", tmp_path, case)


def _long_case(device, tmp_path, case):
    table = gpu_golden.load_long_table()["cases"]
    smoke = device != "cuda"
    got = gpu_golden.long_summary(gpu_golden.run_case(case, "gpu", tmp_path, smoke=smoke))
    if smoke:
        want = gpu_golden.long_summary(gpu_golden.run_case(case, "golden", tmp_path, smoke=True))
    else:
        want = {k: table[case][k] for k in got}
    ok, report = gpu_golden.compare_line(case, table[case]["args"], want, got)
    print(report)
    assert ok, report


def test_no_gpu_is_reported_clearly(tmp_path, capsys):
    if HAVE_GPU:
        pytest.skip("a GPU is present")
    rc = main(
        [
            "train",
            "--model",
            "mlp-digits",
            "--dataset",
            "digits",
            "--backend",
            "gpu",
            "--steps",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 2
    assert "--backend gpu:" in capsys.readouterr().err


def test_gpu_available_says_why():
    ok, why = gpu_available()
    assert ok or why  # either usable, or a reason to show


@pytest.mark.skipif(cupy_standin.CXX is None, reason="the CuPy stand-in needs g++")
@pytest.mark.parametrize(
    ("model", "dataset", "profile"),
    [("lenet", "mnist5k", "niti"), ("cnn-digits", "digits", "wage")],
)
def test_a_training_step_stays_on_the_device(model, dataset, profile):
    """What one step moves, counted by the stand-in: up, the batch and its labels; down, the
    batch's predictions (train accuracy), never a tensor, and under NITI no scalar at all
    (WAGE: at most one per GEMM). Two run lengths apart, so that set-up and evaluation
    cancel."""
    from nitihw.golden import models as M
    from nitihw.golden.datasets import load_dataset

    data = load_dataset(dataset)
    batch = 64
    t = cupy_standin.per_step(model, dataset, batch, profile, steps=(3, 6))
    up, down, syncs, launches = (
        t[k] for k in ("to_device_bytes", "to_host_bytes", "syncs", "launches")
    )
    assert up == batch * (data.train_x[0].nbytes + 8)  # int8 images, int64 labels
    weights = sum(isinstance(x, (M.Conv, M.Linear)) for x in M.get_model_spec(model).layers)
    gemms = 3 * weights - 1  # forward, weight gradient, error (none below the first layer)
    if profile == "niti":  # bit-widths, shifts, exponents and the loss all stay on the device
        assert syncs == 0, f"{syncs} scalar reads per step"
        # a small network's step is bound by its launches: 183 before the fused epilogues,
        # the device integers and the one-pass padding, argmax and ReLU mask (docs/gpu.md)
        assert launches <= 80, f"{launches} kernels per step"
    else:  # WAGE reads its ranges (its rounding mode depends on them): at most one per GEMM
        assert syncs <= gemms, f"{syncs} scalar reads per step for {gemms} GEMMs"
    assert down == batch * 8 + 8 * syncs  # int64 predictions, 8-byte scalars
