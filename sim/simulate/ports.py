"""How the driver reaches a simulator: the two kinds of port, declared.

:class:`~nitihw.sim.simulate.datapath_driver.DatapathDriver` runs every operation as a program
(commands, din beats, dout beats) through a port. A simulator is reached either one clock
cycle at a time (:class:`CyclePort`: Amaranth's simulator, :class:`AmaranthPort`; cocotb's,
:class:`~nitihw.sim.simulate.cocotb_port.CocotbPort`), the driver running the stream protocol
itself, or a whole program at a time (:class:`ProgramPort`: the compiled Verilator harness,
:class:`~nitihw.sim.simulate.native.NativeDatapath`), which runs the same protocol in compiled
code. ``tests/test_architecture.py`` holds each port to its declaration.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class CyclePort(Protocol):
    """A simulator stepped one cycle at a time. Signals are named by their member path
    joined with ``__`` (``cmd__valid``, ``dout__payload``)."""

    @property
    def cycle(self) -> int:
        """Clock edges so far."""

    def set(self, name: str, value: int) -> None:
        """Drive an input for the coming edge."""

    def get(self, name: str) -> int:
        """Sample a signal (after :meth:`settle`)."""

    async def settle(self) -> None:
        """Let the logic settle after the inputs changed."""

    async def tick(self) -> None:
        """Wait for the next clock edge."""

    async def wait_any(self, names) -> None:
        """Return in the first later cycle (settled) where one of ``names`` is 1."""

    async def wait_low(self, name: str) -> None:
        """Return in the first cycle (settled) where ``name`` is 0."""


@runtime_checkable
class ProgramPort(Protocol):
    """A simulator that runs a whole program in one call."""

    @property
    def cycle(self) -> int:
        """Clock edges so far."""

    def run_program(
        self, cmds: np.ndarray, din: np.ndarray, n_out: int
    ) -> tuple[np.ndarray, int, int, int, int]:
        """Stream the command words ``cmds`` and din beats ``din`` (``uint8`` rows), collect
        ``n_out`` dout beats and wait until the Datapath is idle; returns ``(dout rows, first
        accepted cycle, first idle cycle, error, error_op)``."""


#: what a driver accepts
Port = CyclePort | ProgramPort


class AmaranthPort:
    """:class:`CyclePort` onto Amaranth's simulator (``ctx`` of an async testbench)."""

    cycle = 0  # counted by tick

    def __init__(self, ctx, dut):
        self.ctx, self.dut = ctx, dut
        self._sig = {}

    def _resolve(self, name):
        if name not in self._sig:
            obj = self.dut
            for part in name.split("__"):
                obj = getattr(obj, part)
            self._sig[name] = obj.as_value() if hasattr(obj, "as_value") else obj
        return self._sig[name]

    def set(self, name: str, value: int) -> None:
        self.ctx.set(self._resolve(name), value)

    def get(self, name: str) -> int:
        return int(self.ctx.get(self._resolve(name)))

    async def settle(self) -> None:
        return None

    async def tick(self) -> None:
        await self.ctx.tick()
        self.cycle += 1

    async def wait_any(self, names) -> None:
        while True:
            await self.tick()
            await self.settle()
            if any(self.get(n) for n in names):
                return

    async def wait_low(self, name: str) -> None:
        while True:
            await self.settle()
            if not self.get(name):
                return
            await self.tick()
