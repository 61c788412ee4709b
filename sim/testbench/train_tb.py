"""cocotb test that runs a whole ``nitihw train`` on the simulated Datapath.

The training loop is ordinary blocking code (the same :func:`nitihw.sim.train_run.run_training`
the golden backend runs); it runs in a ``cocotb.bridge`` thread, and the RTL backend hands each
datapath operation to the simulator with ``cocotb.resume``. ``NITIHW_TRAIN`` holds the run's
options, ``NITIHW_PARAMS`` the Datapath's parameters, ``NITIHW_STATUS`` where to say how it
ended.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.task import bridge, resume

from nitihw.golden.backend import NumpyBackend
from nitihw.golden.train import atomic_write_json
from nitihw.sim.cocotb_port import CocotbPort, start_clock_and_reset
from nitihw.sim.datapath_driver import DatapathDriver
from nitihw.sim.rtl_backend import RtlBackend
from nitihw.sim.train_run import run_training


@cocotb.test()
async def train_run(dut):
    opts = json.loads(os.environ["NITIHW_TRAIN"])
    params = json.loads(os.environ["NITIHW_PARAMS"])
    status = os.environ["NITIHW_STATUS"]
    drv = DatapathDriver(CocotbPort(dut), params)
    await drv.reset_streams()
    await start_clock_and_reset(dut)

    def call(coro_fn, *args, **kw):
        return resume(coro_fn)(*args, **kw)

    def blocking():
        backend = RtlBackend(drv, call, opts["acc_bits"], opts["overflow"])
        golden_eval = (
            None if opts.get("eval_on_rtl") else NumpyBackend(opts["acc_bits"], opts["overflow"])
        )
        try:
            result = run_training(opts, backend, eval_backend=golden_eval)
        except BaseException as exc:
            atomic_write_json(status, {"error": f"{type(exc).__name__}: {exc}"})
            raise
        atomic_write_json(
            status,
            {
                "ok": True,
                "sim_cycles": backend.sim_cycles,
                "weights_sha256": result["weights_sha256"],
            },
        )

    await bridge(blocking)()
