"""nitihw: bit-exact simulator and RTL reference for integer-only neural-network training."""

__version__ = "0.1.0"
