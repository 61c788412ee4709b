"""Co-design sweeps: a grid of accelerator and numerics settings (:mod:`.grid`), what each
point computes (:mod:`.points`), the Dask runner that stores each point as it finishes, in a
folder that holds one grid and one writer, reusing only records that pass their checks
(:mod:`.run`), and the results, Pareto front and plots (:mod:`.report`). ``nitihw sweep``."""

from nitihw.sim.explore.sweep.grid import Grid, GridError, GridPoints, load_grid, point_id

__all__ = ["Grid", "GridError", "GridPoints", "load_grid", "point_id"]
