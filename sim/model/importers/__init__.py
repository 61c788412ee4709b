"""The user's own network as an estimator workload: ONNX files (:mod:`.onnx_graph`) and
PyTorch modules (:mod:`.torch_graph`, through ONNX), read into the weight layers
(:class:`~nitihw.sim.model.workload.LayerShape`) whose training step the estimate prices
exactly as it prices the built-in models. :mod:`.onnx_graph` also writes a built-in model as
ONNX (:func:`~.onnx_graph.builtin_to_onnx`): the check that an import prices the same."""

from pathlib import Path


def file_workload(path: str | Path, batch: int = 1):
    """The weight layers of a workload file: an ONNX model (``.onnx``) or a SCALE-Sim topology
    CSV. What a sweep's ``topology`` axis and ``nitihw estimate --topology`` read."""
    from nitihw.sim.model.workload import topology_workload

    if Path(path).suffix.lower() == ".onnx":
        from nitihw.sim.model.importers.onnx_graph import onnx_workload

        return onnx_workload(path, batch)
    return topology_workload(path, batch)
