"""The command line: ``nitihw`` and its subcommands, training runs (progress, epoch
segments, provenance) and the cocotb testbench that runs ``nitihw train`` inside a
simulator."""
