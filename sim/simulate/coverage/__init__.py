"""Coverage of the RTL regression and of a training run (``nitihw verify --coverage``).

- :mod:`~nitihw.sim.simulate.coverage.points`: the functional cover points (opcodes, rounding modes,
  shift ranges, error paths, flow control), bound into the Datapath as SystemVerilog;
- :mod:`~nitihw.sim.simulate.coverage.report`: Verilator's counts read, merged and summed per block
  (line, toggle, functional), with what was never reached and why;
- :mod:`~nitihw.sim.simulate.coverage.run`: the coverage builds and runs.
"""
