"""The array's dataflows: which operand stays in the PEs while the others stream.

- ``os`` (output stationary, the Datapath's): each PE keeps one result; A streams in from the
  left, B from the top, ``K`` products per tile. Its cycles are the cycle model's, measured
  against the RTL (:func:`nitihw.sim.model.cycle_model.gemm_cycles`).
- ``ws`` (weight stationary): a ``rows x cols`` block of B (K by N) is loaded into the PEs,
  the M rows of A stream through, partial sums leave at the bottom.
- ``is`` (input stationary): a block of A (K by M, transposed) is loaded, the N columns of B
  stream through.

The RTL is output stationary only. For ``ws`` and ``is`` there is no RTL: their cycles are
SCALE-Sim 3.0's for the same array, in closed form (:func:`scalesim_cycles`; a test holds it
to SCALE-Sim's own reports, cycle for cycle), and their buffer traffic follows what stays:

========  ==========================  ==========================  ==========================
dataflow  A (ifmap) reads             B (filter) reads            results written (partial)
========  ==========================  ==========================  ==========================
os        ``M K`` per column fold      ``K N`` per row fold        ``M N`` once
ws        ``M K`` per column fold      ``K N`` once                ``M N`` per K fold
is        ``M K`` once                 ``K N`` per column fold     ``M N`` per K fold
========  ==========================  ==========================  ==========================

(for ``ws`` and ``is`` a result is read back per K fold but the first, to add to it).
"""

from __future__ import annotations

DATAFLOWS = ("os", "ws", "is")
#: what the reports say of each
DATAFLOW_NAMES = {
    "os": "output stationary (the Datapath's, cycles from the RTL-checked cycle model)",
    "ws": "weight stationary (no RTL: SCALE-Sim 3.0's cycles, in closed form)",
    "is": "input stationary (no RTL: SCALE-Sim 3.0's cycles, in closed form)",
}


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def check_dataflow(dataflow: str) -> str:
    if dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {', '.join(DATAFLOWS)}, got {dataflow!r}")
    return dataflow


def folds(dataflow: str, m: int, k: int, n: int, rows: int, cols: int) -> tuple[int, int]:
    """The array's folds (the blocks it takes in turn) along its rows and its columns."""
    if dataflow == "os":
        return _ceil(m, rows), _ceil(n, cols)
    if dataflow == "ws":
        return _ceil(k, rows), _ceil(n, cols)
    return _ceil(k, rows), _ceil(m, cols)  # is


def scalesim_cycles(dataflow: str, m: int, k: int, n: int, rows: int, cols: int) -> int:
    """SCALE-Sim 3.0's compute cycles (its ``Total Cycles``, prefetch excluded) of the GEMM
    ``(M, K, N)`` on a ``rows x cols`` array: per fold, the streamed dimension plus the array's
    fill and drain (``rows + cols - 2``), and for ``ws``/``is`` the stationary block's load
    (``rows`` more); minus one."""
    check_dataflow(dataflow)
    if not (m and k and n):
        return 0
    fr, fc = folds(dataflow, m, k, n, rows, cols)
    streamed = {"os": k, "ws": m + rows, "is": n + rows}[dataflow]
    return fr * fc * (streamed + rows + cols - 2) - 1


def buffer_reads(dataflow: str, m: int, k: int, n: int, rows: int, cols: int) -> dict:
    """Elements read from and written to the buffers (module docstring's table): ``a``, ``b``,
    ``out_writes`` and ``out_reads`` (partial sums read back)."""
    check_dataflow(dataflow)
    fr, fc = folds(dataflow, m, k, n, rows, cols)
    if dataflow == "os":
        return {"a": m * k * fc, "b": k * n * fr, "out_writes": m * n, "out_reads": 0}
    partial = {"out_writes": m * n * fr, "out_reads": m * n * (fr - 1)}  # one per K fold
    if dataflow == "ws":
        return {"a": m * k * fc, "b": k * n, **partial}
    return {"a": m * k, "b": k * n * fc, **partial}
