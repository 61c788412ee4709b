"""Every datapath operation of an RTL run runs on the simulated Datapath, by design and by check.

- By design: the RTL backend (and the GPU backend) compose the Backend bookkeeping with a
  host-operations component; no datapath operation can resolve to the golden model's routes.
- By check: the ledger counts each datapath operation by where it ran, and a strict backend
  stops the run at the first one that ran on the host (DatapathLeak, an internal error).
- The golden model's routes that depend on size, thread count or CPU feature (the int8 GEMM,
  float BLAS, direct convolutions, ``gemm_later`` on a worker, split rescales), each crossed by
  an RTL operation on two native instances: golden's integers, 0 host operations.
- The real network: LeNet at batch 64 on the 16x16 Datapath, two instances, golden's hash
  (the run that broke when a golden speed-up leaked into the RTL backend).
"""

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nitihw.golden import NumpyBackend, OpTag, exact_matmul, int8_gemm
from nitihw.golden.backend import DATAPATH_OPERATIONS, HOST, Backend, Ledger, NumpyHostOps
from nitihw.golden.errors import DatapathLeak, InternalError
from nitihw.golden.parallel import KERNEL_MIN_ELEMENTS, MIN_ELEMENTS, MIN_MACS
from nitihw.gpu.backend import CupyBackend
from nitihw.rtl.datapath import DatapathParams
from nitihw.sim.command.cli import main
from nitihw.sim.simulate.datapath_driver import DatapathDriver
from nitihw.sim.simulate.native import NativeDatapath, build_native, call_sync
from nitihw.sim.simulate.native.split import SplitDriver
from nitihw.sim.simulate.rtl_backend import RtlBackend
from nitihw.sim.tools import simulator_available

BUILD = Path(__file__).resolve().parent.parent / "build" / "pytest-native"
HAVE_NATIVE = (
    simulator_available("verilator")
    and (shutil.which("c++") or shutil.which("g++"))
    and shutil.which("make")
)
native = pytest.mark.skipif(
    not HAVE_NATIVE, reason="the native harness needs Verilator, a C++ compiler and make"
)
#: the datapath hooks each datapath backend implements itself
HOOKS = (
    "_gemm",
    "_bitwidth",
    "_max_magnitude",
    "_rescale",
    "_update",
    "_update_master",
    "_divide",
    "_update_div",
)
P8 = DatapathParams(8, 8, kmax=64)
TAG = OpTag("2:conv", "weight-gradient")


def _owner(cls, name):
    return next(c for c in cls.__mro__ if name in vars(c))


@pytest.mark.parametrize("cls", [RtlBackend, CupyBackend])
def test_datapath_operations_resolve_to_the_backend_not_the_golden_model(cls):
    assert not issubclass(cls, NumpyBackend)
    for name in DATAPATH_OPERATIONS:
        assert _owner(cls, name) in (Backend, cls), name
    for name in HOOKS:
        assert _owner(cls, name) is cls, name
    assert cls.place != HOST


def test_host_operations_hold_no_datapath_operation():
    for name in (*DATAPATH_OPERATIONS, *HOOKS):
        assert not hasattr(NumpyHostOps, name), name


@pytest.mark.parametrize("cls", [NumpyBackend, RtlBackend, CupyBackend])
def test_host_operations_are_a_component_not_a_base_class(cls):
    """Every backend holds its host operations as ``backend.host`` (the HostOps protocol) and
    inherits none: a host operation is never a backend's own method."""
    from nitihw.golden.backend import ArrayHostOps, HostOps

    assert not issubclass(cls, ArrayHostOps)
    host_ops = [n for n in vars(HostOps) if not n.startswith("_") and callable(vars(HostOps)[n])]
    assert "relu" in host_ops and "cross_entropy_error" in host_ops
    for name in host_ops:
        assert not hasattr(cls, name), name
    be = NumpyBackend()
    assert isinstance(be.host, NumpyHostOps) and be.xp is np


def test_the_ledger_counts_and_a_strict_one_stops_at_the_first_host_operation():
    lax = Ledger(HOST)
    lax.count("gemm", TAG, (2, 3, 4), None)
    assert lax.as_dict() == {"host": 1}
    strict = Ledger("rtl")
    strict.count("gemm", TAG, (2, 3, 4), "rtl")
    with pytest.raises(DatapathLeak, match=r"gemm \(5, 6, 7\) of layer '2:conv', phase "):
        strict.count("gemm", TAG, (5, 6, 7), None)
    assert strict.as_dict() == {"rtl": 1, "host": 1}
    assert issubclass(DatapathLeak, InternalError)


def test_golden_counts_every_operation_on_the_host():
    be = NumpyBackend(threads=1)
    rng = np.random.default_rng(0)
    acc = be.gemm(rng.integers(-9, 9, (4, 5)).astype(np.int8), np.ones((5, 3), np.int8), TAG)
    be.bitwidth(acc, TAG)
    be.rescale(acc, 2, "round", TAG)
    assert be.ledger.as_dict() == {"host": 3}


@pytest.fixture(scope="module")
def rtl_pair():
    """A factory of RtlBackends over two native 8x8 instances (operations split between them,
    as ``--sim-instances 2`` does)."""
    if not HAVE_NATIVE:
        pytest.skip("the native harness needs Verilator, a C++ compiler and make")
    lib = build_native(P8, BUILD / "8x8_k64")
    made = []

    def make(cls=RtlBackend):
        sims = [NativeDatapath(lib, P8) for _ in range(2)]
        split = SplitDriver([DatapathDriver(s, P8) for s in sims])
        made.append((split, sims))
        return cls(split, call_sync)

    yield make
    for split, sims in made:
        split.close()
        for s in sims:
            s.close()


def _engine(name):
    if name == "int8" and not int8_gemm.available():
        pytest.skip(f"int8 GEMM: {int8_gemm.status()} (the float32 case covers this CPU)")
    return contextlib.nullcontext() if name == "int8" else int8_gemm.turned_off()


@native
@pytest.mark.parametrize("engine", ["int8", "float32"])
def test_operations_across_every_golden_route_run_on_the_datapath(rtl_pair, engine):
    """Shapes over each size threshold of the golden model's routes, with golden on two worker
    threads beside it: the same integers, every operation counted on the RTL."""
    rng = np.random.default_rng(3)
    golden = NumpyBackend(threads=2)
    rtl = rtl_pair()
    assert golden.workers.threads == 2
    a = rng.integers(-128, 128, (128, 160)).astype(np.int8)
    b = rng.integers(-128, 128, (160, 128)).astype(np.int8)
    assert a.shape[0] * a.shape[1] * b.shape[1] >= MIN_MACS  # gemm_later goes to a worker
    x = rng.integers(-127, 128, (4, 12, 12, 20)).astype(np.int8)
    w = rng.integers(-127, 128, (50, 5, 5, 20)).astype(np.int8)
    err = rng.integers(-127, 128, (4, 8, 8, 50)).astype(np.int8)
    assert int8_gemm.takes(x.dtype, w.dtype, 5 * 5 * 20)  # the int8 conv route's shapes
    big = rng.integers(-(2**20), 2**20, KERNEL_MIN_ELEMENTS + 8).astype(np.int32)
    assert big.size >= max(2 * MIN_ELEMENTS, KERNEL_MIN_ELEMENTS)  # split rescales
    with _engine(engine):
        results = []
        for be in (golden, rtl):
            out = [be.gemm(a, b, TAG)]
            out.append(be.bitwidth(out[0], TAG))  # the range unit watched it drain
            out.append(be.gemm_later(a, b, TAG)())
            cols, acc, shape = be.conv(x, w, 2, TAG)
            out += [np.asarray(cols, np.int8), acc, shape]
            out.append(be.conv_error(err, w, 0, TAG))
            out.append(be.bitwidth(big, TAG))  # fed
            out.append(be.max_magnitude(big, TAG))
            out.append(be.rescale(big, 9, "round", TAG))
            out.append(be.rescale(acc, 11, "rne", TAG))  # from the result buffer
            results.append(out)
    for g, r in zip(*results, strict=True):
        np.testing.assert_array_equal(r, g)
    # 4 GEMMs (conv and conv_error are one each), 3 ranges, 2 rescales
    assert rtl.ledger.as_dict() == {"rtl": 9, "host": 0}
    assert golden.ledger.as_dict() == {"host": 9}
    assert rtl.sim_cycles > 0


@native
def test_a_datapath_operation_off_the_datapath_stops_the_run(rtl_pair):
    """What happened when golden's threaded ``gemm_later`` leaked into the RTL backend: the
    product computed by NumPy, even with the same shape as the last GEMM (which the old range
    check could not see), now stops the run and names the operation."""

    class Leaky(RtlBackend):
        def gemm_later(self, a, b, tag):
            shape = (a.shape[0], a.shape[1], b.shape[1])
            return lambda: self._gemm_done(tag, shape, lambda: (exact_matmul(a, b), 0))

    be = rtl_pair(Leaky)
    rng = np.random.default_rng(4)
    a = rng.integers(-128, 128, (16, 24)).astype(np.int8)
    b = rng.integers(-128, 128, (24, 8)).astype(np.int8)
    be.gemm(a, b, OpTag("7:linear", "forward"))
    with pytest.raises(DatapathLeak, match=r"gemm \(16, 24, 8\) of layer '7:linear', phase 'weig"):
        be.gemm_later(a, b, OpTag("7:linear", "weight-gradient"))()
    assert be.ledger.as_dict() == {"rtl": 1, "host": 1}


def _train(tmp_path, name, *args):
    out = tmp_path / name
    rc = main(["train", *args, "--out", str(out), "--build-dir", str(BUILD / "train")])
    assert rc == 0
    return json.loads((out / "result.json").read_text())


@native
def test_lenet_batch_64_on_the_16x16_rtl_with_two_instances(tmp_path):
    """The README's network on the README's array: LeNet/mnist5k, batch 64, two native
    instances (golden on two worker threads beside it: its gemm_later and threaded routes)."""
    args = ["--model", "lenet", "--dataset", "mnist5k", "--batch", "64", "--steps", "1"]
    gold = _train(tmp_path, "golden", *args, "--threads", "2")
    rtl = _train(
        tmp_path, "rtl", *args, "--backend", "rtl", "--array", "16x16", "--sim-instances", "2"
    )
    assert rtl["weights_sha256"] == gold["weights_sha256"]
    assert rtl["datapath_ops"]["host"] == 0
    assert rtl["datapath_ops"]["rtl"] == 37  # a LeNet step's datapath operations
    # evaluation ran on golden, and says so; golden's own ledger holds both
    assert gold["datapath_ops"]["host"] == 37 + rtl["eval_datapath_ops"]["host"]
    assert rtl["cycles"]["model_mismatches"] == 0
