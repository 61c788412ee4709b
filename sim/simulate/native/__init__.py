"""Native-speed RTL simulation: the Verilated Datapath driven by a compiled C++ harness.

cocotb drives every beat of the Datapath's streams from Python (~20,000 cycles/s). Here
Python hands the simulator whole programs (a GEMM's tiles, a rescale's tensor: commands, din
beats, the number of dout beats) and the cycle loop runs in C++ (``harness.cpp``), over the
Verilator model of the same generated Verilog the cocotb testbenches verify.

* :func:`build_native` builds the model and the harness into a shared library, once per
  parameter set and set of options (cached in the build directory); :func:`native_in_use`
  holds it for a run, so no other run rebuilds it meanwhile;
* :class:`NativeDatapath` loads it with ctypes and is a program port for
  :class:`nitihw.sim.simulate.datapath_driver.DatapathDriver` (``run_program``);
* :func:`call_sync` runs a driver coroutine to completion without an event loop (nothing
  the native port does waits on a simulator event).
"""

from nitihw.sim.simulate.native.build import (
    NativeBuildError,
    NativeOptions,
    build_native,
    native_in_use,
)
from nitihw.sim.simulate.native.port import NativeDatapath, NativeStall, call_sync

__all__ = [
    "NativeBuildError",
    "NativeDatapath",
    "NativeOptions",
    "NativeStall",
    "build_native",
    "call_sync",
    "native_in_use",
]
