"""PyTorch modules as estimator workloads: ``--torch MODULE:FACTORY`` imports ``MODULE``
(from the working directory or ``sys.path``), calls ``FACTORY()`` for an ``nn.Module``, exports
it to ONNX in memory (PyTorch's TorchScript-based exporter, ``dynamo=False``, which needs no
package beyond torch and onnx) with one sample of the shape the module's ``example_input``
attribute or ``--input-shape`` gives, and reads that as :mod:`.onnx_graph` reads a file. Torch
stays optional: without it this route says so and nothing else changes.
"""

from __future__ import annotations

import importlib
import io
import sys
import warnings
from pathlib import Path

from nitihw.sim.model.importers.onnx_graph import (
    OnnxImportError,
    _onnx,
    infer_shapes,
    model_workload_from_onnx,
)
from nitihw.sim.model.workload import LayerShape, WorkloadError


def parse_input_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise WorkloadError(f"--input-shape {text!r}: expected C,H,W (integers)") from None
    if not dims or any(d < 1 for d in dims):
        raise WorkloadError(f"--input-shape {text!r}: every dimension must be >= 1")
    return dims


def load_factory(spec: str):
    """``FACTORY()`` of ``MODULE:FACTORY``: the module, with clear errors."""
    if spec.count(":") != 1 or not all(spec.split(":")):
        raise WorkloadError(f"--torch {spec!r}: expected MODULE:FACTORY, e.g. mynet:build")
    module_name, factory_name = spec.split(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # a module next to where the user runs nitihw
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WorkloadError(f"--torch {spec!r}: cannot import {module_name!r} ({exc})") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise WorkloadError(f"--torch {spec!r}: {module_name} has no callable {factory_name!r}")
    return factory()


def torch_workload(
    spec: str, batch: int, input_shape: str | None = None
) -> tuple[list[LayerShape], str]:
    """``(layers, name)`` of the module ``spec`` names, at ``batch`` samples per step."""
    try:
        import torch
    except ImportError:
        raise WorkloadError(
            "--torch needs PyTorch (pip install torch, or nitihw's bench extra); --onnx reads "
            "a file exported elsewhere"
        ) from None
    onnx = _onnx()
    net = load_factory(spec)
    if not isinstance(net, torch.nn.Module):
        raise WorkloadError(f"--torch {spec!r}: the factory returned {type(net).__name__}, not "
                            "an nn.Module")  # fmt: skip
    if input_shape is not None:
        shape = parse_input_shape(input_shape)
    elif getattr(net, "example_input", None) is not None:
        shape = tuple(int(d) for d in tuple(net.example_input.shape)[-3:])
    else:
        raise WorkloadError(
            f"--torch {spec!r}: give --input-shape C,H,W (one sample's shape), or an "
            "example_input attribute on the module"
        )
    buffer = io.BytesIO()
    net.eval()  # BatchNormalization exported for folding, dropout as identity
    try:
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(net, (torch.zeros(1, *shape),), buffer, dynamo=False)
    except Exception as exc:
        raise OnnxImportError(
            f"--torch {spec!r}: PyTorch's ONNX export failed ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:160]})"
        ) from None
    model = infer_shapes(onnx.load_from_string(buffer.getvalue()), f"--torch {spec}")
    return model_workload_from_onnx(model, batch, f"--torch {spec}"), spec
