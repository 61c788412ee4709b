"""Port of :class:`nitihw.sim.simulate.datapath_driver.DatapathDriver` onto a cocotb DUT."""

from __future__ import annotations

from cocotb.clock import Clock
from cocotb.triggers import First, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

CLOCK_NS = 10  # the testbenches' clock period


async def start_clock_and_reset(dut, reset_cycles: int = 2) -> None:
    """Start the testbench clock, hold the synchronous reset for ``reset_cycles`` edges,
    release it and wait one more edge. Drive the inputs' idle values before calling."""
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    await reset(dut, reset_cycles)


async def reset(dut, cycles: int = 2) -> None:
    """Hold the synchronous reset for ``cycles`` edges of the running clock, release it and
    wait one more edge (a reset also clears the Datapath's sticky ``error``)."""
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


class CocotbPort:  # a nitihw.sim.simulate.ports.CyclePort
    """Drives and samples the flat Verilog ports (``cmd__payload``, ``din__valid``...).

    Cycles are counted from simulation time, so a wait for a signal costs one trigger however
    many cycles it lasts.
    """

    def __init__(self, dut):
        self.dut = dut
        self._handles = {}
        self._edge = RisingEdge(dut.clk)
        self._settle = ReadOnly()

    def _h(self, name):
        h = self._handles.get(name)
        if h is None:
            h = self._handles[name] = getattr(self.dut, name)
        return h

    def set(self, name: str, value: int) -> None:
        self._h(name).value = value

    def get(self, name: str) -> int:
        v = self._h(name).value
        return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)

    async def settle(self) -> None:
        await self._settle

    async def tick(self) -> None:
        await self._edge

    @property
    def cycle(self) -> int:
        return int(get_sim_time(unit="ns")) // CLOCK_NS

    async def wait_any(self, names) -> None:
        """Return in the first later cycle (settled) where one of ``names`` rose (call it
        settled, with all of them low)."""
        await First(*(RisingEdge(self._h(n)) for n in names))
        await ReadOnly()

    async def wait_low(self, name: str) -> None:
        """Return in the first cycle (settled) where ``name`` is 0. It looks once a cycle,
        settled: a wait on the signal's falling edge would also wake on a fall that does not
        settle (a combinational output such as ``busy`` glitching low between two delta
        cycles, which Icarus shows of the netlist's ``always @*`` blocks: a quiet drain then
        seemed to end 9 cycles early)."""
        await self._settle
        while self.get(name):
            await self._edge
            await self._settle
