"""One fixed sequence of Datapath operations, run through any driver: the native harness is
held to the cocotb testbench with it (``tests/test_rtl_native.py``, the ``crosscheck_ops``
cocotb test). Every output, range and program cycle count goes into a JSON-able record."""

from __future__ import annotations

import numpy as np

from nitihw.sim.model.cycle_model import Tiling, drained_rows


def _ints(x) -> list:
    return np.asarray(x).astype(np.int64).reshape(-1).tolist()


async def run_ops(drv, seed: int = 0) -> dict:
    """GEMMs (shapes off the array's grid, K over ``kmax``), rescales from din (every mode,
    ``sto`` with its random integers, a left shift) and from the result buffer, a range
    feed, int8 and master-weight updates, and on a divide build DIVIDE (din and buffer) and
    UPDATE_DIV. Returns ``{"outputs": {...}, "programs": [(name, cycles, start)]}``, starts
    relative to the first program's."""
    rng = np.random.default_rng(seed)
    R, C, kmax = drv.rows, drv.cols, drv.kmax
    out: dict = {}
    b_hi = 1 << (drv.b_bits - 1)
    shapes = [(2 * R + 1, kmax + 3, C + 2), (R - 1 or 1, 5, 2 * C - 1)]
    for g, (m, k, n) in enumerate(shapes):
        a = rng.integers(-128, 128, (m, k))
        b = rng.integers(-min(b_hi, 128), min(b_hi, 128), (k, n))
        acc, ovf, rng_fields = await drv.gemm_tensor(a, b)
        out[f"gemm{g}"] = _ints(acc)
        out[f"gemm{g}_overflow"] = _ints(ovf)
        out[f"gemm{g}_range"] = rng_fields
        kept = drv.kept is not None and drained_rows(m, n, C) <= drv.result_rows
        if kept:
            q = await drv.rescale(acc, 6, "round", None, True)
            out[f"gemm{g}_rescale_buffer"] = _ints(q)
            if drv.has_divide:
                d = await drv.divide(acc, 37, True)
                out[f"gemm{g}_divide_buffer"] = _ints(d)
    # K in slices of the tiling: partial sums wait in the result buffer (quiet drains, then
    # drains that add what it holds), kept, and spilled
    m, k, n = 2 * R + 1, 2 * kmax + 3, C + 2
    a = rng.integers(-128, 128, (m, k))
    b = rng.integers(-min(b_hi, 128), min(b_hi, 128), (k, n))
    drv.tiling = lambda *_shape: Tiling("kmn", R, C, max(kmax // 2, 1))
    for keep in (True, False):
        acc, ovf, rng_fields = await drv.gemm_tensor(a, b, keep)
        out[f"gemm_sliced_{keep}"] = _ints(acc) + _ints(ovf)
        out[f"gemm_sliced_{keep}_range"] = rng_fields
    drv.tiling = None
    x = rng.integers(-(1 << 20), 1 << 20, 3 * C + 1)
    for mode in ("round", "psto", "trunc", "rne"):
        out[f"rescale_{mode}"] = _ints(await drv.rescale(x, 9, mode))
    rand = rng.integers(0, 1 << 30, x.shape)
    out["rescale_sto"] = _ints(await drv.rescale(x, 9, "sto", rand))
    out["rescale_left"] = _ints(await drv.rescale(rng.integers(-3, 4, 2 * C), -2, "round"))
    out["range_feed"] = await drv.feed_tensor(x)
    w = rng.integers(-127, 128, 2 * C + 3)
    g = rng.integers(-128, 128, w.shape)
    new, w8 = await drv.update(w, g, False, 100)
    out["update"] = _ints(new)
    w16 = rng.integers(-30000, 30000, w.shape)
    new, w8 = await drv.update(w16, g, True)
    out["update_master"] = _ints(new) + _ints(w8)
    if drv.has_divide:
        y = rng.integers(-(1 << 30), 1 << 30, 2 * C + 1)
        out["divide"] = _ints(await drv.divide(y, 1000))
        w32 = rng.integers(-(1 << 30), 1 << 30, y.shape)
        out["update_div"] = _ints(await drv.update_div(w32, y, 64, 1000))
    first = drv.log[0].start if drv.log else 0
    programs = [[rec.name, rec.cycles, rec.start - first] for rec in drv.log]
    return {"outputs": out, "programs": programs}
