"""Exploring designs: sweeps over accelerators (Dask) and synthesis reports with the area
model."""
