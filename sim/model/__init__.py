"""Modelling the Datapath without simulating it: the cycle model, the step's operations
(workloads), accelerators, their mappings and the estimate. Needs no simulator and no
command line."""
