"""Co-design sweeps: a grid of accelerator and numerics settings (:mod:`.grid`), what each
point computes (:mod:`.points`), the Dask runner that stores each point as it finishes
(:mod:`.run`), and the results, Pareto front and plots (:mod:`.report`). ``nitihw sweep``."""

from nitihw.sim.sweep.grid import Grid, GridError, load_grid, point_id

__all__ = ["Grid", "GridError", "load_grid", "point_id"]
