"""cocotb testbenches of the RTL (run through :mod:`nitihw.sim.verify` or pytest)."""
