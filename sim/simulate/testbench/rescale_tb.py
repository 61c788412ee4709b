"""cocotb testbench of the rescale lanes alone, on many random 32-bit accumulators.

Environment: ``NITIHW_LANES``, ``NITIHW_ACC_BITS``, ``NITIHW_PER_CASE`` (values per mode and
shift), ``NITIHW_SEED``, ``NITIHW_STATS``. Every mode, every shift 0..max_shift; expected
values from :func:`nitihw.golden.shift_round`.
"""

from __future__ import annotations

import json
import os
import time

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from nitihw.golden import shift_round
from nitihw.rtl.rescale import MODE_BY_NAME, rescale_max_shift
from nitihw.sim.simulate.cocotb_port import start_clock_and_reset
from nitihw.sim.simulate.datapath_driver import ArrayField

MODES = ("round", "psto", "trunc", "rne", "sto")


def test_values(rng, n: int, shift: int, accumulator_bits: int) -> np.ndarray:
    """Uniform values over the whole range, values next to the rounding points of this shift,
    and the extremes."""
    lo, hi = -(1 << (accumulator_bits - 1)), (1 << (accumulator_bits - 1)) - 1
    uniform = rng.integers(lo, hi + 1, n - n // 4)
    q = rng.integers(0, max(1, (hi >> shift) + 1), n // 4 - 8)
    half = (q << shift) + ((1 << shift) >> 1) + rng.integers(-1, 2, q.shape)
    near = np.where(rng.random(q.shape) < 0.5, half, -half).clip(lo, hi)
    ends = np.array([lo, hi, lo + 1, -hi, 0, 1, -1, 127])
    return np.concatenate([uniform, near, ends])


@cocotb.test()
async def every_mode_every_shift(dut):
    lanes = int(os.environ["NITIHW_LANES"])
    accumulator_bits = int(os.environ["NITIHW_ACC_BITS"])
    per_case = int(os.environ["NITIHW_PER_CASE"])
    rng = np.random.default_rng(int(os.environ.get("NITIHW_SEED", "0")))
    ms = rescale_max_shift(accumulator_bits)
    acc_f = ArrayField(0, lanes, accumulator_bits, True)
    rand_f = ArrayField(lanes * accumulator_bits, lanes, ms, False)
    out_f = ArrayField(0, lanes, 8, True)
    dut.i__valid.value = 0
    dut.o__ready.value = 1
    dut.left.value = 0  # right shifts only here; left shifts: tests/test_rtl_blocks.py
    await start_clock_and_reset(dut)
    t0, cycles, checked = time.perf_counter(), 0, 0
    for mode in MODES:
        for s in range(ms + 1):
            x = test_values(rng, per_case, s, accumulator_bits)
            x = np.pad(x, (0, -len(x) % lanes))
            rand = rng.integers(0, 1 << s, x.shape) if mode == "sto" else np.zeros_like(x)
            want = shift_round(x, s, mode, rand if mode == "sto" else None)
            dut.shift.value = s
            dut.mode.value = MODE_BY_NAME[mode].value
            beats = [
                acc_f.pack(x[k : k + lanes]) | rand_f.pack(rand[k : k + lanes])
                for k in range(0, len(x), lanes)
            ]
            got = []
            k = 0
            while len(got) < len(beats):
                if k < len(beats):
                    dut.i__payload.value = beats[k]
                    dut.i__valid.value = 1
                    k += 1
                else:
                    dut.i__valid.value = 0
                await ReadOnly()
                if dut.o__valid.value:
                    got.append(out_f.unpack(dut.o__payload.value.to_unsigned()))
                await RisingEdge(dut.clk)
                cycles += 1
            dut.i__valid.value = 0
            got = np.concatenate(got)
            bad = np.flatnonzero(got != want)
            assert bad.size == 0, (
                f"mode {mode} shift {s}: {bad.size} mismatches, first x={x[bad[0]]} "
                f"rand={rand[bad[0]]} rtl={got[bad[0]]} golden={want[bad[0]]}"
            )
            checked += len(x)
    path = os.environ.get("NITIHW_STATS")
    if path:
        with open(path, "w") as f:
            json.dump({"values": checked, "cycles": cycles, "seconds": time.perf_counter() - t0}, f)
