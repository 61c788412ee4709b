"""Running the RTL: the driver and its ports, the native harness, the cocotb testbenches,
``nitihw verify``'s regression and the RTL backend. Uses the model (the cycle model the
runs are checked against), never the command line."""
