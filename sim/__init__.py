"""Everything around the RTL, by role, each in its own sub-package:

- :mod:`nitihw.sim.model`: modelling the Datapath without simulating it (the cycle model,
  workloads, accelerators, mappings, the estimate);
- :mod:`nitihw.sim.simulate`: running the RTL (the driver and its ports, the native harness,
  the cocotb testbenches, ``nitihw verify``, the RTL backend);
- :mod:`nitihw.sim.explore`: exploring designs (sweeps, synthesis and the area model);
- :mod:`nitihw.sim.command`: the command line (``nitihw``, training runs, epoch segments).

A role imports only the roles before it in this list (a test holds it), and all may use the
shared helpers here: :mod:`nitihw.sim.cluster` (the Dask client) and :mod:`nitihw.sim.tools`
(the simulators' PATH).
"""
