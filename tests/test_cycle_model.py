"""The cycle model against the schedule's rules applied to the driver's own programs (and so
against the RTL, whose measured program cycles the Amaranth and cocotb tests check against
the same :func:`~nitihw.rtl.schedule.program_cycles`)."""

import numpy as np
import pytest

from nitihw.golden import NumpyBackend, OpTag
from nitihw.rtl.schedule import Command, program_cycles, range_latency
from nitihw.sim.model.cycle_model import (
    ArrayConfig,
    CycleReport,
    Tiling,
    gemm_cycles,
    gemm_program,
    gemm_tile_arrays,
    gemm_tiles,
    op_cycles,
)


def test_closed_form_equals_the_schedule():
    rng = np.random.default_rng(0)
    cases = [(1, 1, 1, 1, 1, 1), (16, 256, 16, 16, 16, 256), (17, 257, 17, 16, 16, 256)]
    for _ in range(300):
        m, k, n = (int(x) for x in rng.integers(1, 120, 3))
        rows, cols = (int(x) for x in rng.integers(1, 17, 2))
        kmax = int(rng.choice([1, 2, 3, 7, 32, 256]))
        cases.append((m, k, n, rows, cols, kmax))
    for m, k, n, rows, cols, kmax in cases:
        program = gemm_program(m, k, n, rows, cols, kmax)
        assert gemm_cycles(m, k, n, rows, cols, kmax) == program_cycles(program, rows, cols), (
            m,
            k,
            n,
            rows,
            cols,
            kmax,
        )
    assert gemm_cycles(0, 5, 3, 4, 4, 8) == program_cycles(gemm_program(0, 5, 3, 4, 4, 8), 4, 4)


def test_tiles_cover_the_product_once_and_alternate_banks():
    m, k, n, rows, cols, kmax = 11, 70, 9, 4, 3, 32
    drained = np.zeros((m, n), int)
    loaded_b = 0
    last = None
    for cmd, (i0, j0, _) in gemm_tiles(m, k, n, rows, cols, kmax):
        if cmd.op == "COMPUTE" and cmd.drain:
            drained[i0 : i0 + cmd.drain_rows, j0 : j0 + cols] += 1
        if cmd.op.startswith("LOAD"):
            if last is not None:  # the next load never writes the bank being computed on
                assert cmd.bank_a != last.bank_a
                if cmd.op == "LOAD_AB":
                    assert cmd.bank_b != last.bank_b
            loaded_b += cmd.op == "LOAD_AB"
        else:
            last = cmd
    assert (drained == 1).all()
    assert loaded_b == 9 * 3  # 9 tiles, K = 70 in three chunks: A and B reload per chunk
    # one chunk: B is loaded once per column tile and stays for its row tiles
    ops = [c.op for c, _ in gemm_tiles(11, 20, 9, 4, 3, 32)]
    assert ops.count("LOAD_AB") == 3 and ops.count("LOAD_A") == 3 * 2


def test_forward_gemms_against_scale_sim_os():
    """The issue's yardsticks: SCALE-Sim's output-stationary model, ceil(M/R) ceil(N/C)
    (K + R + C - 2) cycles, on a 16x16 array."""

    def scale_sim(m, k, n, r=16, c=16):
        return -(-m // r) * -(-n // c) * (k + r + c - 2)

    for m, k, n in ((64, 64, 64), (256, 500, 800)):
        assert gemm_cycles(m, k, n, 16, 16, 256) <= 1.15 * scale_sim(m, k, n)
    util = 256**3 / (gemm_cycles(256, 256, 256, 16, 16, 256) * 256)
    assert util >= 0.85


def test_op_cycles_and_report():
    arr = ArrayConfig(4, 4, 32)
    assert op_cycles("range", (100,), arr) == 0
    # dispatch (1) + beats + lane latency + the last beat's cycle (1)
    assert op_cycles("rescale", (17,), arr) == 1 + 5 + 3 + 1  # 5 beats of 4 lanes
    assert op_cycles("update", (16,), arr) == 1 + 4 + 2 + 1
    be = NumpyBackend()
    be.trace = CycleReport(arr)
    tag = OpTag("0:linear", "forward")
    acc = be.gemm(np.ones((5, 7), np.int8), np.ones((7, 3), np.int8), tag)
    be.rescale(acc, be.bitwidth(acc, tag), "round", tag)
    rows = be.trace.rows()
    assert rows[0][:2] == ("0:linear", "forward")
    # the rescale of the GEMM's own result reads the result buffer: 5 tile rows, one cycle
    # later than din beats would be (the buffer's read)
    kept = op_cycles("rescale", (15,), arr, {"kept": (5, 3)})
    assert kept == 1 + 5 + 3 + 1 + 1
    assert rows[0][2] == gemm_cycles(5, 7, 3, 4, 4, 32) + kept
    assert rows[0][4] == 5 * 7 * 3
    # a result that does not fit the buffer (4 rows < 5) spills: its 15 values come back on
    # din, 4 beats of 4 lanes
    small = ArrayConfig(4, 4, 32, result_rows=4)
    assert op_cycles("rescale", (15,), small, {"kept": (5, 3)}) == 1 + 4 + 3 + 1
    assert ArrayConfig(4, 4, 32).buffer_rows == 65536 // 4


def test_fed_range_cycles():
    arr = ArrayConfig(4, 3, 32)
    rp = range_latency(3)
    for elements, beats in ((0, 0), (1, 1), (3, 1), (4, 2), (100, 34)):
        feed = [Command("RANGE_FEED", beats)] if beats else []
        want = program_cycles([Command("RANGE_CLEAR"), *feed, Command("RANGE_READ")], 4, 3)
        # accepted at 0, clear at 1, feed at 2 with beats in 3..2+beats; the range unit is
        # idle rp cycles after the last; the read: its dispatch and its beat
        assert want == (2 + beats + rp + 2 if beats else 1 + 1 + 2)
        assert op_cycles("range", (elements,), arr, {"fed": True}) == want
        assert op_cycles("range", (elements,), arr, {"fed": False}) == 0
        assert op_cycles("range", (elements,), arr) == 0
    # NITRO-D's divide lanes: 1 + beats + 3 + 1, for the scaling and the IntegerSGD update
    assert op_cycles("divide", (10,), arr, {"divisor": 3}) == 1 + 4 + 3 + 1
    assert op_cycles("update", (10,), arr, {"divide": True}) == 1 + 4 + 3 + 1
    assert op_cycles("update", (10,), arr, {"master": False}) == 1 + 4 + 2 + 1
    with pytest.raises(ValueError, match="unknown datapath operation 'sqrt'"):
        op_cycles("sqrt", (10,), arr)
    # the report reads the entry's extra: a fed range costs its cycles, a watched one none
    be = NumpyBackend()
    be.trace = CycleReport(arr)
    tag = OpTag("1:linear", "backward-error")
    acc = be.gemm(np.ones((2, 5), np.int8), np.ones((5, 3), np.int8), tag)
    assert be.max_magnitude(acc, tag) == 5  # watched: free
    assert be.max_magnitude(acc + 1, tag) == 6  # fed: 6 elements, 2 beats of 3
    fed = op_cycles("range", (6,), arr, {"fed": True})
    assert be.trace.total == gemm_cycles(2, 5, 3, 4, 3, 32) + fed


def test_schedule_overlaps_loads_computes_and_drains():
    """The rules on hand-made programs: a load into the bank being computed on waits for the
    reads; one into the other bank runs beside them; a serial command waits for everything."""
    r, c = 2, 2
    k = 10
    load0 = Command("LOAD_AB", k, 0, 0)
    comp0 = Command("COMPUTE", k, 0, 0, drain=1, drain_rows=2)
    other = Command("LOAD_A", k, 1, 0)
    same = Command("LOAD_A", k, 0, 0)
    # LOAD_AB: dispatch 1, beats 2..11; COMPUTE at 12 reads 13..22, captures at 12+10+4 = 26
    base = program_cycles([load0, comp0], r, c)
    assert base == 26 + 2 + range_latency(c)  # drain 27, 28; range unit idle after
    # the other bank loads in 14..23, hidden: no cycle added
    assert program_cycles([load0, comp0, other], r, c) == base
    # the same bank waits for the last read (22): loads 24..33, idle at 34
    assert program_cycles([load0, comp0, same], r, c) == max(34, base)
    # a rescale after the compute waits for the whole drain and range
    assert program_cycles([load0, comp0, Command("RESCALE", 1)], r, c) == base + 1 + 3 + 1


@pytest.mark.parametrize(
    "text,message",
    [
        ("8", "bad --array"),
        ("axb", "bad --array"),
        ("4x", "bad --array"),
        ("0x4", "--array rows must be an integer in 1..256, got 0"),
        ("1000000x1000000", "--array rows must be an integer in 1..256, got 1000000"),
        ("4x257", "--array columns must be an integer in 1..256, got 257"),
    ],
)
def test_bad_array_is_named(text, message):
    with pytest.raises(ValueError, match=message):
        ArrayConfig.parse(text)


@pytest.mark.parametrize(
    "m, k, n, rows, cols, kmax",
    [
        (11, 70, 9, 4, 3, 32),
        (11, 20, 9, 4, 3, 32),
        (1, 1, 1, 2, 2, 8),
        (64, 800, 500, 16, 16, 256),
        (33, 257, 17, 16, 16, 256),
        (5, 9, 40, 8, 4, 4),
    ],
)
def test_tile_arrays_are_the_tiles(m, k, n, rows, cols, kmax):
    """gemm_tile_arrays (the native driver's din beats) lists gemm_tiles' loads and drains,
    in order, for one buffer tile and for tilings that cut K into slices."""
    tilings = [None, Tiling("kmn", rows, 2 * cols, max(k // 3, 1)), Tiling("mkn", m, cols, kmax)]
    for tiling in tilings:
        loads, drains = [], []
        for cmd, (i0, j0, k0) in gemm_tiles(m, k, n, rows, cols, kmax, tiling=tiling):
            if cmd.op == "COMPUTE":
                if cmd.drain_rows:
                    drains.append((i0, j0, cmd.drain_rows, cmd.quiet))
            else:
                loads.append((i0, j0, k0, cmd.count, int(cmd.op == "LOAD_AB")))
        got_loads, got_drains = gemm_tile_arrays(m, k, n, rows, cols, kmax, tiling)
        np.testing.assert_array_equal(got_loads, np.array(loads).reshape(-1, 5))
        np.testing.assert_array_equal(got_drains, np.array(drains).reshape(-1, 4))


def test_tiled_gemm_cycles_are_the_programs():
    """gemm_cycles' closed form for a tiling (any order, tiles, K slices of any length, with
    partial sums in the result buffer) equals program_cycles of the program the driver runs,
    and one buffer tile is the walk of every program before tilings."""
    import random

    rnd = random.Random(29)
    for _ in range(300):
        rows, cols, kmax = rnd.randint(1, 5), rnd.randint(1, 5), rnd.choice([2, 3, 4, 8, 256])
        m, k, n = rnd.randint(1, 13), rnd.randint(1, 40), rnd.randint(1, 13)
        tiling = Tiling(
            "".join(rnd.sample("mnk", 3)),
            rnd.choice([m, rows * rnd.randint(1, 3)]),
            rnd.choice([n, cols * rnd.randint(1, 3)]),
            rnd.randint(1, k),
        )
        for keep in (False, True):
            program = gemm_program(m, k, n, rows, cols, kmax, keep, tiling)
            want = program_cycles(program, rows, cols)
            assert gemm_cycles(m, k, n, rows, cols, kmax, tiling) == want, (m, k, n, tiling)
            one = gemm_program(m, k, n, rows, cols, kmax, keep, Tiling("nmk", m, n, k))
            assert one == gemm_program(m, k, n, rows, cols, kmax, keep)
