"""Mappings of the step's GEMMs onto the accelerator's memory hierarchy (:mod:`.mapper`: the
searched DRAM-level tiling and loop order with the fewest off-chip bytes) and the lower bounds
on that traffic (:mod:`.bounds`), reported by ``nitihw estimate`` beside its figures."""

from nitihw.sim.model.mapping.bounds import (
    compulsory_bytes,
    io_lower_bound_bytes,
    lower_bound_bytes,
)
from nitihw.sim.model.mapping.mapper import (
    OBJECTIVES,
    ORDERS,
    GemmShape,
    Hierarchy,
    Mapping,
    check_objective,
    evaluate,
    priced_mapping,
    search,
)

__all__ = [
    "OBJECTIVES",
    "ORDERS",
    "GemmShape",
    "Hierarchy",
    "Mapping",
    "check_objective",
    "compulsory_bytes",
    "evaluate",
    "io_lower_bound_bytes",
    "lower_bound_bytes",
    "priced_mapping",
    "search",
]
