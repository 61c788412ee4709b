"""The RTL backend's datapath operations, one by one, against the golden backend.

:class:`nitihw.sim.simulate.rtl_backend.RtlBackend` runs on the Datapath in Amaranth's simulator (no
external tools): the simulator runs in a worker thread whose testbench executes the driver
coroutines the backend hands it, so the backend stays synchronous, as in the cocotb training
testbench. Checked: results equal NumpyBackend's, and every traced operation's measured cycles
equal the cycle model's.
"""

import queue
import threading

import numpy as np
import pytest
from amaranth.sim import Simulator

from nitihw.golden import NumpyBackend, OpTag, shift_round
from nitihw.golden.rounding import trunc_div, wrap
from nitihw.rtl.datapath import Datapath
from nitihw.sim.model.cycle_model import ArrayConfig, CycleReport, op_cycles
from nitihw.sim.simulate.datapath_driver import DatapathDriver
from nitihw.sim.simulate.ports import AmaranthPort
from nitihw.sim.simulate.rtl_backend import RtlBackend

TAG = OpTag("0:linear", "forward")


class SimulatedBackend:
    """An RtlBackend on Amaranth's simulator, usable from the test's own thread."""

    def __init__(self, dut, accumulator_bits=32, overflow="error"):
        self._jobs = queue.Queue()
        self._replies = queue.Queue()
        driver_box = queue.Queue()

        async def testbench(ctx):
            drv = DatapathDriver(AmaranthPort(ctx, dut), dut.params)
            await drv.reset_streams()
            driver_box.put(drv)
            while (job := self._jobs.get()) is not None:
                fn, args, kw = job
                try:
                    self._replies.put((True, await fn(*args, **kw)))
                except Exception as exc:  # handed back to the caller's thread
                    self._replies.put((False, exc))

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(testbench)
        self._error = None

        def run():
            try:
                sim.run()
            except BaseException as exc:
                self._error = exc
                self._replies.put((False, exc))
                driver_box.put(None)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        drv = driver_box.get(timeout=60)
        assert drv is not None, self._error
        self.backend = RtlBackend(drv, self._call, accumulator_bits, overflow)

    def _call(self, fn, *args, **kw):
        self._jobs.put((fn, args, kw))
        ok, value = self._replies.get(timeout=600)
        if not ok:
            raise value
        return value

    def close(self):
        self._jobs.put(None)
        self._thread.join(timeout=60)
        assert self._error is None, self._error


@pytest.fixture
def rtl():
    made = []

    def make(rows, cols, kmax=16, overflow="error", **datapath):
        sb = SimulatedBackend(Datapath(rows, cols, kmax=kmax, **datapath), overflow=overflow)
        made.append(sb)
        return sb.backend

    yield make
    for sb in made:
        sb.close()


def same_ops(be, data):
    """The operations WAGE adds, on one backend; returns every result."""
    a, b, x, small, w, g, w16 = data
    out = {}
    acc = be.gemm(a, b, TAG)
    out["acc"] = acc
    out["max watched"] = be.max_magnitude(acc, TAG)
    out["bw watched"] = be.bitwidth(acc, TAG)
    out["max fed"] = be.max_magnitude(x, TAG)
    out["bw fed"] = be.bitwidth(x, TAG)
    out["max fed copy"] = be.max_magnitude(acc.copy(), TAG)  # equal values, another tensor
    out["max watched again"] = be.max_magnitude(acc, TAG)  # still the last GEMM's result
    out["max int8"] = be.max_magnitude(small.astype(np.int8), TAG)
    for s in (-1, -3, -7, -9):
        out[f"left {s}"] = be.rescale(small, s, "round", TAG)
    out["right"] = be.rescale(acc, max(be.bitwidth(acc, TAG) - 7, 0), "psto", TAG)
    out["update 64"] = be.update(w, g, TAG, limit=64)
    out["update 127"] = be.update(w, g, TAG)
    out["update 5"] = be.update(w, g, TAG, limit=5)
    out["master"] = be.update_master(w16, g, TAG)
    return out


def assert_cycles_match(be, gold, arr):
    """The RTL's measured cycles are the cycle model's, op by op and in total."""
    measured, model = CycleReport(arr, measured=True), CycleReport(arr)
    for e in be.trace:
        measured.append(e)
    for e in gold.trace:
        model.append(e)
    assert measured.mismatches == 0
    assert measured.total == model.total == be.sim_cycles


@pytest.mark.parametrize("rows,cols", [(2, 3), (4, 4)])
def test_wage_ops_match_golden_and_cycle_model(rtl, rows, cols):
    rng = np.random.default_rng(rows + 10 * cols)
    data = (
        rng.integers(-127, 128, (5, 11)).astype(np.int8),
        rng.integers(-127, 128, (11, 7)).astype(np.int8),
        rng.integers(-(2**31), 2**31, (3, 9)),  # fed: not a GEMM result
        np.concatenate([[0, 1, -1, 127, -127, 15, -16, 31], rng.integers(-40, 41, 21)]),
        rng.integers(-127, 128, 37).astype(np.int8),
        rng.integers(-127, 128, 37).astype(np.int8),
        rng.integers(-32767, 32768, 37).astype(np.int16),
    )
    be = rtl(rows, cols)
    gold = NumpyBackend()
    be.trace, gold.trace = [], []
    got, want = same_ops(be, data), same_ops(gold, data)
    assert got.keys() == want.keys()
    for key in want:
        g, w = got[key], want[key]
        for gi, wi in zip(g, w, strict=True) if isinstance(w, tuple) else [(g, w)]:
            np.testing.assert_array_equal(gi, wi, err_msg=key)
            if key != "acc" and isinstance(wi, np.ndarray):  # (GEMM sums: int64 vs int32)
                assert gi.dtype == wi.dtype, key
    # the values themselves, not only the agreement
    x = data[2]
    assert got["max fed"] == max(int(x.max()), -int(x.min()))
    assert got["max watched"] == got["max fed copy"] == np.abs(got["acc"]).max()
    np.testing.assert_array_equal(got["update 64"], np.clip(data[4] - data[5].astype(int), -64, 64))

    # every operation's measured cycles equal the cycle model's, fed ranges included
    arr = ArrayConfig(rows, cols, 16)
    assert [(e.op, e.shape, e.extra.get("fed")) for e in be.trace] == [
        (e.op, e.shape, e.extra.get("fed")) for e in gold.trace
    ]
    fed = [e.extra.get("fed") for e in be.trace if e.op == "range"]
    assert fed == [False, False, True, True, True, False, True, False]
    for e in be.trace:
        assert e.extra["cycles"] == op_cycles(e.op, e.shape, arr, e.extra), e
        assert (e.extra["cycles"] > 0) == (e.op != "range" or e.extra["fed"]), e
    assert_cycles_match(be, gold, arr)


def test_left_shifts_beyond_the_lanes_saturate_as_golden(rtl):
    """Every left shift of 7 or more saturates each nonzero value, so the backend sends 8."""
    be = rtl(2, 2)
    ms = be.driver.params.max_shift
    x = np.array([0, 1, -1, 100])
    for s in (7, 8, ms, ms + 1, 62):
        want = shift_round(x, -s, "trunc")
        np.testing.assert_array_equal(be.rescale(x, -s, "trunc", TAG), want)
        np.testing.assert_array_equal(want, [0, 127, -127, 127])
    with pytest.raises(ValueError, match=f"shift {ms + 1} exceeds"):
        be.rescale(x, ms + 1, "trunc", TAG)


# ---- NITRO-D: int8 x int32 GEMMs that wrap, the scaling layer and IntegerSGD ---------------

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def nitro_ops(be, data):
    """A NITRO-D layer's datapath operations, in the order of golden/nitro_d.py."""
    x, w, d8, lr, decay = data
    out = {}
    acc = be.gemm(x, w.T, TAG)  # forward: int8 x int32 weights, wrapping
    out["acc"] = acc
    out["scaled"] = be.divide(acc, 256 * x.shape[1], TAG)
    out["scaled 1"] = be.divide(acc, 1, TAG)
    out["err"] = be.gemm(d8, w, TAG)  # head backward error
    delta = be.divide(acc, 3, TAG).astype(np.int64) * 1000  # an int32 delta (B, out)
    g = be.gemm(x.T, delta, TAG).T  # weight gradient
    out["g"] = g
    out["w decay"] = be.update_div(w, g, lr, decay, TAG)
    out["w no decay"] = be.update_div(w, g, lr, 0, TAG)
    corner = np.array([INT32_MIN, INT32_MAX, 0, -1, 1, INT32_MIN + 1, 77, -77], np.int64)
    out["w corners"] = be.update_div(
        np.repeat(corner, 8).astype(np.int32), np.tile(corner, 8), 1, 1, TAG
    )
    out["div corners"] = be.divide(corner, 7, TAG)
    out["events"] = be.overflow_events
    return out


@pytest.mark.parametrize("rows,cols", [(2, 3), (4, 4)])
def test_nitro_d_ops_match_golden_and_cycle_model(rtl, rows, cols):
    rng = np.random.default_rng(rows * 3 + cols)
    x = rng.integers(-128, 128, (6, 11)).astype(np.int8)
    x[0, :3] = -128
    w = rng.integers(-64, 65, (5, 11)).astype(np.int32)
    w[0, :4] = [INT32_MIN, INT32_MAX, INT32_MIN, INT32_MAX]  # forward sums that wrap
    w[1] = rng.integers(INT32_MIN, 2**31, 11)
    d8 = rng.integers(-128, 128, (6, 5)).astype(np.int8)
    data = (x, w, d8, 512 * 3, 3000)
    be = rtl(rows, cols, overflow="wrap", b_bits=32, divide=True)
    gold = NumpyBackend(32, "wrap")
    be.trace, gold.trace = [], []
    got, want = nitro_ops(be, data), nitro_ops(gold, data)
    for key in want:
        if key == "events":
            continue
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        if key not in ("acc", "err", "g"):  # (GEMM sums: int64 either way)
            assert got[key].dtype == want[key].dtype, key
    assert got["scaled"].dtype == np.int8 and got["w decay"].dtype == np.int32
    # overflow flags follow the running sums in 40 bits: they never miss an overflow the
    # golden model counts, and here (no running sum leaves 40 bits) they are exact
    assert got["events"] == want["events"] > 0
    # the values themselves, not only the agreement
    np.testing.assert_array_equal(
        got["w no decay"],
        wrap(w.astype(np.int64) - trunc_div(got["g"], 512 * 3), 32),
    )
    np.testing.assert_array_equal(got["div corners"], [-127, 127, 0, 0, 0, -127, 11, -11])

    arr = ArrayConfig(rows, cols, 16)
    assert [(e.op, e.shape) for e in be.trace] == [(e.op, e.shape) for e in gold.trace]
    ops = [e.op for e in be.trace]
    assert ops.count("divide") == 4 and ops.count("update") == 3
    for e in be.trace:
        assert e.extra["cycles"] == op_cycles(e.op, e.shape, arr, e.extra), e
        assert e.extra["cycles"] > 0
    assert_cycles_match(be, gold, arr)


def test_divide_refused_without_the_divide_lanes(rtl):
    be = rtl(2, 2)
    with pytest.raises(ValueError, match="no divide lanes"):
        be.divide(np.array([1, 2, 3]), 3, TAG)
    with pytest.raises(ValueError, match="no divide lanes"):
        be.update_div(np.zeros(3, np.int32), np.zeros(3, np.int64), 3, 0, TAG)
