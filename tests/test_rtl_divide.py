"""NITRO-D's divide lanes: the reciprocal constants, and the lanes against the golden
``trunc_div`` / ``saturate`` / ``wrap`` (Amaranth's simulator), with back-pressure."""

import numpy as np
import pytest

from nitihw.golden.rounding import saturate, trunc_div, wrap
from nitihw.rtl.divide import DIV_BITS, DivideLanes, divider_constants
from tests.test_rtl_blocks import simulate, stream_lanes

# NITRO-D's divisors: scaling 2^8 * fan_in, lr_inv * amp, decay_inv, LeakyReLU's 4
NITRO_DIVISORS = [1, 3, 4, 7, 256 * 64, 256 * 128, 512, 512 * 640, 12000, 3000, 2**31 - 1]


def edge_values(d: int) -> list[int]:
    top = (1 << DIV_BITS) - 1
    vals = {0, 1, d - 1, d, d + 1, top, top - 1, top // d * d, top // d * d - 1}
    for k in (2, 3, 1000, 12345):
        vals |= {k * d - 1, k * d, k * d + 1}
    return sorted(v for v in vals if 0 <= v <= top)


def test_constants_divide_exactly():
    rng = np.random.default_rng(0)
    divisors = [*range(1, 3000), *NITRO_DIVISORS, *rng.integers(1, 2**32, 500).tolist()]
    for d in divisors:
        magic, shift = divider_constants(int(d))
        assert magic < 1 << (DIV_BITS + 1) and shift < 1 << 7
        ms = edge_values(int(d)) + rng.integers(0, 2**32, 20).tolist()
        for m in ms:
            assert (m * magic) >> shift == m // d, (d, m)


def test_constants_reject_bad_divisors():
    for bad in (0, -3, 2**32, 1.5, True):
        with pytest.raises(ValueError, match="divisor must be"):
            divider_constants(bad)


def run_lanes(jobs, lanes, stall_every=0):
    dut = DivideLanes(lanes)

    def set_beat(ctx, job):
        d0, d1, x, w = job
        m0, s0 = divider_constants(d0)
        m1, s1 = divider_constants(d1 or 1)
        ctx.set(dut.magic0, m0)
        ctx.set(dut.shift0, s0)
        ctx.set(dut.magic1, m1)
        ctx.set(dut.shift1, s1)
        ctx.set(dut.decay, int(d1 > 0))
        ctx.set(dut.i.payload.x, [int(v) for v in x])
        ctx.set(dut.i.payload.w, [int(v) for v in w])

    got = []

    async def tb(ctx):
        got.extend(
            await stream_lanes(
                ctx,
                dut,
                jobs,
                set_beat,
                lambda c: (
                    [c.get(dut.o.payload.q[k]) for k in range(lanes)],
                    [c.get(dut.o.payload.w[k]) for k in range(lanes)],
                ),
                stall_every,
            )
        )

    simulate(dut, tb)
    for (d0, d1, x, w), (q, wn) in zip(jobs, got, strict=True):
        x, w = np.array(x, np.int64), np.array(w, np.int64)
        np.testing.assert_array_equal(q, saturate(trunc_div(x, d0)), err_msg=f"scale /{d0}")
        want = w - trunc_div(x, d0) - (trunc_div(w, d1) if d1 else 0)
        np.testing.assert_array_equal(wn, wrap(want, 32), err_msg=f"sgd /{d0} /{d1}")


@pytest.mark.parametrize("stall_every", [0, 3])
def test_divide_lanes_against_golden(stall_every):
    lanes = 8
    rng = np.random.default_rng(stall_every)
    lo, hi = -(2**31), 2**31 - 1
    corners = [lo, lo + 1, hi, -1, 0, 1, 127, -128, 32767, -32768]
    jobs = []
    for d0 in NITRO_DIVISORS:
        for d1 in (0, 3, 12000, 2**31 - 1):
            for t in range(4):
                if t == 0:
                    x = (corners * 2)[:lanes]
                    w = list(reversed((corners * 2)[:lanes]))
                else:
                    scale = [2**8, 2**20, 2**31][t - 1]
                    x = rng.integers(max(lo, -scale), min(hi, scale), lanes).tolist()
                    w = rng.integers(lo, hi, lanes).tolist()
                jobs.append((d0, d1, x, w))
    run_lanes(jobs, lanes, stall_every)


def test_divide_lanes_reject_bad_parameters():
    with pytest.raises(ValueError, match="lanes must be"):
        DivideLanes(0)
