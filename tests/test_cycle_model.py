"""The cycle model against the driver's own command sequence (and so against the RTL, whose
per-command cycles the cocotb tests check against the same formulas)."""

import numpy as np
import pytest

from nitihw.golden import NumpyBackend, OpTag
from nitihw.rtl.schedule import command_cycles
from nitihw.sim.cycle_model import (
    ArrayConfig,
    CycleReport,
    gemm_cycles,
    gemm_tiles,
    op_cycles,
)


def enumerated(m, k, n, rows, cols, kmax):
    tiles = sum(
        command_cycles(op, count, rows, cols)
        for op, count, _ in gemm_tiles(m, k, n, rows, cols, kmax)
    )
    return (
        tiles
        + command_cycles("RANGE_CLEAR", 0, rows, cols)
        + command_cycles("RANGE_READ", 0, rows, cols)
    )


def test_closed_form_equals_the_command_sequence():
    rng = np.random.default_rng(0)
    for _ in range(200):
        m, k, n = (int(x) for x in rng.integers(1, 300, 3))
        rows, cols = (int(x) for x in rng.integers(1, 17, 2))
        kmax = int(rng.choice([3, 7, 32, 256]))
        assert gemm_cycles(m, k, n, rows, cols, kmax) == enumerated(m, k, n, rows, cols, kmax), (
            m,
            k,
            n,
            rows,
            cols,
            kmax,
        )


def test_tiles_cover_the_product_once():
    m, k, n, rows, cols, kmax = 11, 70, 9, 4, 3, 32
    drained = np.zeros((m, n), int)
    for op, count, (i0, j0, _) in gemm_tiles(m, k, n, rows, cols, kmax):
        if op == "DRAIN":
            drained[i0 : i0 + count, j0 : j0 + cols] += 1
    assert (drained == 1).all()


def test_op_cycles_and_report():
    arr = ArrayConfig(4, 4, 32)
    assert op_cycles("range", (100,), arr) == 0
    assert op_cycles("rescale", (17,), arr) == 5 + 4  # 5 beats of 4 lanes
    assert op_cycles("update", (16,), arr) == 4 + 3
    be = NumpyBackend()
    be.trace = CycleReport(arr)
    tag = OpTag("0:linear", "forward")
    acc = be.gemm(np.ones((5, 7), np.int8), np.ones((7, 3), np.int8), tag)
    be.rescale(acc, be.bitwidth(acc, tag), "round", tag)
    rows = be.trace.rows()
    assert rows[0][:2] == ("0:linear", "forward")
    assert rows[0][2] == gemm_cycles(5, 7, 3, 4, 4, 32) + op_cycles("rescale", (15,), arr)
    assert rows[0][4] == 5 * 7 * 3


def test_fed_range_cycles():
    arr = ArrayConfig(4, 3, 32)
    for elements, beats in ((0, 0), (1, 1), (3, 1), (4, 2), (100, 34)):
        want = (
            command_cycles("RANGE_CLEAR", 0, 4, 3)
            + command_cycles("RANGE_FEED", beats, 4, 3)
            + command_cycles("RANGE_READ", 0, 4, 3)
        )
        assert want == 1 + (1 + beats) + 2
        assert op_cycles("range", (elements,), arr, {"fed": True}) == want
        assert op_cycles("range", (elements,), arr, {"fed": False}) == 0
        assert op_cycles("range", (elements,), arr) == 0
    # NITRO-D's divide lanes: 1 + beats + 3, for the scaling and the IntegerSGD update
    assert op_cycles("divide", (10,), arr, {"divisor": 3}) == 1 + 4 + 3
    assert op_cycles("update", (10,), arr, {"divide": True}) == 1 + 4 + 3
    assert op_cycles("update", (10,), arr, {"master": False}) == 1 + 4 + 2
    with pytest.raises(ValueError, match="unknown datapath operation 'sqrt'"):
        op_cycles("sqrt", (10,), arr)
    # the report reads the entry's extra: a fed range costs its cycles, a watched one none
    be = NumpyBackend()
    be.trace = CycleReport(arr)
    tag = OpTag("1:linear", "backward-error")
    acc = be.gemm(np.ones((2, 5), np.int8), np.ones((5, 3), np.int8), tag)
    assert be.max_magnitude(acc, tag) == 5  # watched: free
    assert be.max_magnitude(acc + 1, tag) == 6  # fed: 6 elements, 2 beats of 3
    assert be.trace.total == gemm_cycles(2, 5, 3, 4, 3, 32) + 1 + 3 + 2


@pytest.mark.parametrize("text", ["8", "0x4", "axb", "4x"])
def test_bad_array_is_named(text):
    with pytest.raises(ValueError, match="bad --array"):
        ArrayConfig.parse(text)
