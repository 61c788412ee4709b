"""Formal proofs of the Datapath's blocks against docs/numerics.md (``nitihw prove``).

Simulation shows the RTL bit-exact on the inputs the tests and training runs happen to make;
these proofs cover every input. :mod:`.spec` writes numerics.md's rules as Amaranth
expressions, :mod:`.harness` puts each block beside its rule with every input free, :mod:`.run`
hands them to SymbiYosys and the Yices SMT solver (both from PyPI), and :mod:`.mutants` holds
broken copies of each block that the proofs must reject (the tests check that they do).
docs/prove.md says what is proven, how, and what is not.
"""
