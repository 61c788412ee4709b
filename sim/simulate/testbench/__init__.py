"""cocotb testbenches of the RTL (run through :mod:`nitihw.sim.simulate.verify` or pytest)."""
