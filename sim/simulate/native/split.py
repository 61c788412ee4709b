"""One operation over several simulated Datapaths at once: :class:`SplitDriver`.

A training step's operations come one after another, but one operation's tiles are
independent: a GEMM's row tiles, a rescale's or an update's beats. :class:`SplitDriver` holds
several Datapath instances (native harnesses, each its own Verilated model) and gives each a
contiguous share of a large operation, in threads (the harness releases the GIL while it
simulates, so the instances run on separate cores). Small operations run on the first
instance alone.

Results are exactly one Datapath's:

* values: each part is the same operation on its rows or elements;
* the range: each part's range unit watches its part; the tensor's fields are the unit's own
  reductions over the parts (bit-width, shift, max magnitude: the largest part's, since the
  unit's running OR and max only grow; the overflow count: the sum, saturating at 32 bits as
  the unit's counter does);
* the result buffer: each instance keeps its part of a GEMM's result, and a rescale or divide
  ``from_buffer`` runs on each instance over what it kept;
* cycles: each part is a program from idle to idle, measured by its instance. One Datapath
  would run the whole operation as one program, overlapping the parts' fill and drain; that
  overlap (the *seam*) is the schedule's: ``program_cycles(whole) - sum(program_cycles(part))``
  (:func:`nitihw.rtl.schedule.program_cycles`). The operation's cycles are the parts' measured
  cycles plus the seam. A part that differs from the schedule by ``d`` cycles makes the
  operation differ by ``d`` from the cycle model, so the run's model check still sees every
  cycle the RTL measured; ``part_mismatches`` counts such parts. (``log`` records carry the
  cycles; their commands are not kept.)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numpy as np

from nitihw.rtl.rescale import MODE_BY_NAME
from nitihw.rtl.schedule import Command, program_cycles
from nitihw.sim.model.cycle_model import drained_rows, gemm_program
from nitihw.sim.simulate.datapath_driver import DatapathDriver, ProgramRecord
from nitihw.sim.simulate.native.port import call_sync

#: operations with fewer din/dout beats than this run on one instance (a thread hand-off
#: costs more than the cycles it would save)
MIN_SPLIT_BEATS = 2048
COUNT_MAX = (1 << 32) - 1  # the range unit's overflow counter saturates here


def _shares(units: int, parts: int) -> list[tuple[int, int]]:
    """``units`` split into at most ``parts`` contiguous, nearly equal ``[lo, hi)`` ranges."""
    parts = max(1, min(parts, units))
    cuts = [units * p // parts for p in range(parts + 1)]
    return [(lo, hi) for lo, hi in pairwise(cuts) if hi > lo]


def combine_ranges(ranges: list[dict]) -> dict:
    """The range unit's fields of a tensor from those of its parts."""
    return {
        "bitwidth": max(r["bitwidth"] for r in ranges),
        "shift": max(r["shift"] for r in ranges),
        "max_magnitude": max(r["max_magnitude"] for r in ranges),
        "overflow_count": min(sum(r["overflow_count"] for r in ranges), COUNT_MAX),
    }


class SplitDriver:
    """The operations of :class:`DatapathDriver` (those :class:`nitihw.sim.simulate.rtl_backend.
    RtlBackend` uses) over ``drivers``, one per Datapath instance (program ports)."""

    def __init__(self, drivers: list[DatapathDriver], min_split_beats: int = MIN_SPLIT_BEATS):
        if not drivers:
            raise ValueError("SplitDriver needs at least one driver")
        self.drivers = drivers
        self.params = drivers[0].params
        self.rows, self.cols = drivers[0].rows, drivers[0].cols
        self.kmax, self.result_rows = drivers[0].kmax, drivers[0].result_rows
        self.min_split_beats = min_split_beats
        self.log: list[ProgramRecord] = []
        #: ``(M, N, [(instance, row0, row1)])``: which instance keeps which rows of the last
        #: kept GEMM result (``None``: the result buffers hold no usable tensor)
        self.kept = None
        self.part_mismatches = 0
        self.split_ops = 0
        self._models: dict = {}  # key -> (schedule cycles of the whole, of each part)
        self._pool = ThreadPoolExecutor(max_workers=len(drivers), thread_name_prefix="datapath")

    def close(self) -> None:
        self._pool.shutdown()

    @property
    def tiling(self):
        """The GEMMs' tilings (:attr:`DatapathDriver.tiling`): every instance follows them on
        its part, and the one-Datapath program of the seam on the whole."""
        return self.drivers[0].tiling

    @tiling.setter
    def tiling(self, tiling) -> None:
        for drv in self.drivers:
            drv.tiling = tiling

    # ---- running parts ------------------------------------------------------------------
    def _run_parts(self, name: str, jobs, whole, key):
        """Run ``jobs`` (``(instance, coroutine function, args)``) side by side; log one
        record for the operation (cycles: measured parts plus the seam); returns the results
        in order. ``whole()`` gives the one-Datapath program; the schedule's cycles of it and
        of the parts depend only on the operation's shape and split, ``key``, and are
        computed once per key."""
        for drv in self.drivers:
            del drv.log[:]
        if len(jobs) == 1:
            results = [call_sync(jobs[0][1], *jobs[0][2])]
        else:
            futures = [self._pool.submit(call_sync, fn, *args) for _, fn, args in jobs]
            results = [f.result() for f in futures]
        records = [rec for inst, _, _ in jobs for rec in self.drivers[inst].log]
        for inst, _, _ in jobs:
            del self.drivers[inst].log[:]
        cycles = sum(rec.cycles for rec in records)
        if len(jobs) > 1:  # one instance ran the whole program: nothing to add
            model = self._models.get(key)
            if model is None:
                parts = [program_cycles(rec.commands, self.rows, self.cols) for rec in records]
                model = (program_cycles(whole(), self.rows, self.cols), parts)
                if len(self._models) < 4096:
                    self._models[key] = model
            self.part_mismatches += sum(
                rec.cycles != want for rec, want in zip(records, model[1], strict=True)
            )
            cycles += model[0] - sum(model[1])  # the seam
            self.split_ops += 1
        self.log.append(ProgramRecord(name, [], cycles))
        return results

    def _n_parts(self, beats: int) -> int:
        return len(self.drivers) if beats >= self.min_split_beats else 1

    # ---- the operations -----------------------------------------------------------------
    async def gemm_tensor(self, a, b, keep: bool = True):
        a, b = np.asarray(a), np.asarray(b)
        (m, k), n = a.shape, b.shape[1]
        R, C = self.rows, self.cols
        keep = keep and m * n > 0 and drained_rows(m, n, C) <= self.result_rows
        tiles = -(-m // R)
        beats = tiles * -(-n // C) * k
        shares = _shares(tiles, self._n_parts(beats)) if m else [(0, 0)]
        parts = [(i, lo * R, min(hi * R, m)) for i, (lo, hi) in enumerate(shares)]
        jobs = [(i, self.drivers[i].gemm_tensor, (a[r0:r1], b, keep)) for i, r0, r1 in parts]
        out = self._run_parts(
            "gemm",
            jobs,
            lambda: gemm_program(
                m, k, n, R, C, self.kmax, keep, self.drivers[0].tiling_of(m, k, n)
            ),
            ("gemm", m, k, n, keep, tuple(parts)),
        )
        self.kept = (m, n, parts) if keep else None
        acc = np.concatenate([o[0] for o in out]) if len(out) > 1 else out[0][0]
        ovf = np.concatenate([o[1] for o in out]) if len(out) > 1 else out[0][1]
        return acc, ovf, combine_ranges([o[2] for o in out])

    def _flat_parts(self, size: int):
        """Element ranges of a flat tensor, whole beats each: ``[(instance, lo, hi)]``."""
        beats = -(-size // self.cols)
        return [
            (i, lo * self.cols, min(hi * self.cols, size))
            for i, (lo, hi) in enumerate(_shares(beats, self._n_parts(beats)))
        ] or [(0, 0, 0)]

    async def feed_tensor(self, x):
        flat = np.asarray(x).reshape(-1)
        parts = self._flat_parts(flat.size)
        jobs = [(i, self.drivers[i].feed_tensor, (flat[lo:hi],)) for i, lo, hi in parts]
        beats = -(-flat.size // self.cols)
        feed = [Command("RANGE_FEED", beats)] if beats else []
        whole = [Command("RANGE_CLEAR"), *feed, Command("RANGE_READ")]
        out = self._run_parts("range", jobs, lambda: whole, ("range", flat.size, tuple(parts)))
        return combine_ranges(out)

    def _elementwise(self, name: str, size: int, job, fields=()):
        """An operation on flat tensors of ``size`` elements, split by whole beats: ``job(i,
        lo, hi)`` gives instance ``i``'s ``(coroutine function, args)`` for elements
        ``lo:hi``. Returns the parts' results in order."""
        parts = self._flat_parts(size)
        jobs = [(i, *job(i, lo, hi)) for i, lo, hi in parts]
        whole = [Command(name, -(-size // self.cols), fields=fields)]
        return self._run_parts(name, jobs, lambda: whole, (name, size, tuple(parts)))

    def _kept_parts(self, op: str, acc):
        if self.kept is None or self.kept[0] * self.kept[1] != np.asarray(acc).size:
            raise ValueError(f"{op} from_buffer: the result buffers do not hold this tensor")
        return self.kept

    async def rescale(self, acc, shift: int, mode: str, rand=None, from_buffer: bool = False):
        acc = np.asarray(acc)
        fields = (
            ("shift", abs(int(shift))),
            ("mode", MODE_BY_NAME[mode].value),
            ("left", int(shift < 0)),
        )
        if from_buffer:
            m, n, parts = self._kept_parts("rescale", acc)
            rows = acc.reshape(m, n)
            jobs = [
                (i, self.drivers[i].rescale, (rows[r0:r1], shift, mode, None, True))
                for i, r0, r1 in parts
            ]
            whole = [
                Command("RESCALE", drained_rows(m, n, self.cols), from_buffer=1, fields=fields)
            ]
            out = self._run_parts(
                "RESCALE", jobs, lambda: whole, ("RESCALE-buffer", m, n, tuple(parts))
            )
            return np.concatenate(out).reshape(acc.shape)
        flat = acc.reshape(-1)
        r = None if rand is None else np.asarray(rand).reshape(-1)

        def job(i, lo, hi):
            part_rand = None if r is None else r[lo:hi]
            return self.drivers[i].rescale, (flat[lo:hi], shift, mode, part_rand)

        out = self._elementwise("RESCALE", flat.size, job, fields)
        return np.concatenate(out).reshape(acc.shape)

    async def update(self, w, g, master: bool = False, limit: int = 127):
        w = np.asarray(w)
        fw, fg = w.reshape(-1), np.asarray(g).reshape(-1)
        fields = (("master", int(master)), ("limit", int(limit)))

        def job(i, lo, hi):
            return self.drivers[i].update, (fw[lo:hi], fg[lo:hi], master, limit)

        out = self._elementwise("UPDATE", fw.size, job, fields)
        wn = np.concatenate([o[0] for o in out]).reshape(w.shape)
        w8 = np.concatenate([o[1] for o in out]).reshape(w.shape)
        return wn, w8

    async def divide(self, acc, divisor: int, from_buffer: bool = False):
        acc = np.asarray(acc)
        if from_buffer:
            m, n, parts = self._kept_parts("divide", acc)
            rows = acc.reshape(m, n)
            jobs = [
                (i, self.drivers[i].divide, (rows[r0:r1], divisor, True)) for i, r0, r1 in parts
            ]
            whole = [Command("DIVIDE", drained_rows(m, n, self.cols), from_buffer=1)]
            out = self._run_parts(
                "DIVIDE", jobs, lambda: whole, ("DIVIDE-buffer", m, n, tuple(parts))
            )
            return np.concatenate(out).reshape(acc.shape)
        flat = acc.reshape(-1)

        def job(i, lo, hi):
            return self.drivers[i].divide, (flat[lo:hi], divisor)

        return np.concatenate(self._elementwise("DIVIDE", flat.size, job)).reshape(acc.shape)

    async def update_div(self, w, g, lr_div: int, decay_div: int):
        w = np.asarray(w)
        fw, fg = w.reshape(-1), np.asarray(g).reshape(-1)

        def job(i, lo, hi):
            return self.drivers[i].update_div, (fw[lo:hi], fg[lo:hi], lr_div, decay_div)

        return np.concatenate(self._elementwise("UPDATE_DIV", fw.size, job)).reshape(w.shape)
