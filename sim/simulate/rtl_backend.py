"""The RTL backend: every GEMM, range, rescale, update and (NITRO-D) divide of a training step
executed by the simulated Datapath (the Verilog of :mod:`nitihw.rtl`), tile by tile.

The backend is composed of two parts, and inherits neither from the golden model:
:class:`~nitihw.golden.backend.Backend` (trace, overflow policy, ledger) whose datapath
operations (:data:`~nitihw.golden.backend.DATAPATH_OPERATIONS`) are implemented here on the
driver and nowhere else, and its ``host`` component, :class:`~nitihw.golden.backend.NumpyHostOps`
(im2col, ReLU, pooling, the loss), in NumPy as a controller core would run it. None of the
golden model's own routes (its int8 GEMM, float BLAS, direct convolutions, worker threads) is
in reach, and the ledger stops the run at the first datapath operation whose result did not
come from the Datapath (:class:`~nitihw.golden.errors.DatapathLeak`).

The backend is synchronous, like every Backend; it reaches the simulator
through ``call(coroutine_function, *args)``, which runs one driver coroutine to completion
(inside cocotb: ``cocotb.resume``; the training loop runs in a ``cocotb.bridge`` thread).
"""

from __future__ import annotations

import numpy as np

from nitihw.golden.backend import Backend, NumpyHostOps
from nitihw.golden.errors import DatapathLimitError, InternalError
from nitihw.sim.simulate.datapath_driver import DatapathDriver


class RtlBackend(Backend):
    """Datapath operations on the simulated RTL; host operations in NumPy.

    Each operation ends with the datapath idle, so the cycles its commands took are exact;
    they are added to the trace entry (``extra['cycles']``) and to ``sim_cycles``.
    """

    name = "rtl"
    place = "rtl"

    def __init__(
        self, driver: DatapathDriver, call, accumulator_bits: int = 32, overflow: str = "error"
    ):
        super().__init__(accumulator_bits, overflow, host=NumpyHostOps())
        p = driver.params
        if p.accumulator_bits != accumulator_bits:
            raise ValueError(
                f"the datapath has {p.accumulator_bits}-bit accumulators, the run asks for "
                f"{accumulator_bits}"
            )
        self.driver, self._call = driver, call
        # lanes built for narrower operands saturate to that width's bound themselves
        self.rescale_limit = p.rescale_limit
        self.sim_cycles = 0  # datapath cycles of every operation so far
        self._op_cycles = 0
        self._gemm_range: tuple | None = None  # (shape, range fields) of the last GEMM's tensor

    def follow(self, array) -> None:
        """Run every GEMM with the tiling ``array`` gives it (an
        :class:`~nitihw.sim.model.cycle_model.ArrayConfig` with buffers:
        :func:`~nitihw.sim.model.cycle_model.gemm_tiling`), the one the cycle report prices; one
        buffer tile when ``array`` has none."""
        from nitihw.sim.model.cycle_model import gemm_tiling

        if not array.mapped:
            self.driver.tiling = None
            return
        if array.buffer_rows != self.driver.result_rows:
            raise ValueError(
                f"the run prices a {array.buffer_rows}-row result buffer, but the Datapath "
                f"has {self.driver.result_rows} rows"
            )
        self.driver.tiling = lambda m, k, n: gemm_tiling(m, k, n, array)

    def _run(self, coro_fn, *args, **kw):
        first = len(self.driver.log)
        out = self._call(coro_fn, *args, **kw)
        self._ran(self.place)  # the result came from the Datapath
        self._op_cycles = sum(r.cycles for r in self.driver.log[first:])
        self.sim_cycles += self._op_cycles
        del self.driver.log[:]  # records are summed per operation; keep memory flat
        return out

    def _finish(self, entry) -> None:
        entry.extra["cycles"] = self._op_cycles
        self._op_cycles = 0
        super()._finish(entry)

    def status(self) -> dict:
        return {"sim cycles": f"{self.sim_cycles:,}"}

    def _gemm(self, a, b):
        acc, ovf, rng = self._run(self.driver.gemm_tensor, a, b)
        self._gemm_range = (acc.shape, rng)
        return acc, int(ovf.sum())

    def _range_of(self, x, fed: bool) -> dict:
        """The range unit's fields for ``x``: read after the last GEMM's drain when the unit
        watched ``x`` drain, otherwise measured by streaming ``x`` through it (RANGE_FEED)."""
        if fed:
            return self._run(self.driver.feed_tensor, x)
        # the range unit watched the GEMM's tiles drain; its result belongs to that tensor
        if self._gemm_range is None or self._gemm_range[0] != x.shape:
            raise InternalError(
                f"the RTL range unit was asked for the range of a {x.shape} tensor as the last "
                "GEMM's result, but it watched "
                + ("no GEMM" if self._gemm_range is None else f"a {self._gemm_range[0]} one")
            )
        self._ran(self.place)  # read from the range unit's registers
        return self._gemm_range[1]

    def _bitwidth(self, acc, fed) -> int:
        return int(self._range_of(acc, fed)["bitwidth"])

    def _max_magnitude(self, x, fed) -> int:
        return int(self._range_of(x, fed)["max_magnitude"])

    def _in_buffer(self, x, rand=None) -> bool:
        """Whether ``x`` is the last GEMM's result and the Datapath kept it in its result
        buffer: the rule of :meth:`Backend._kept` plus the fit, as the cycle model prices it."""
        return self._kept(x, rand) is not None and self.driver.kept is not None

    def _rescale(self, acc, shift, mode, rand):
        shift = max(shift, -8)  # any left shift of 7 or more saturates every nonzero value
        if abs(shift) > self.driver.params.max_shift:
            raise DatapathLimitError(
                f"shift {shift} exceeds the rescale lanes' {self.driver.params.max_shift}"
            )
        buffered = self._in_buffer(acc, rand)
        out = self._run(self.driver.rescale, acc, shift, mode, rand, buffered)
        return out.astype(np.int8)

    def _update(self, w, g, limit):
        new, _ = self._run(self.driver.update, w, g, False, limit)
        return new.astype(np.int8)

    def _divide(self, acc, divisor):
        buffered = self._in_buffer(acc)
        return self._run(self.driver.divide, acc, divisor, buffered).astype(np.int8)

    def _update_div(self, w, g, lr_div, decay_div):
        return self._run(self.driver.update_div, w, g, lr_div, decay_div).astype(np.int32)

    def _update_master(self, w16, g):
        new, w8 = self._run(self.driver.update, w16, g, True)
        return new.astype(np.int16), w8.astype(np.int8)
