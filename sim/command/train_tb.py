"""cocotb test that runs a whole ``nitihw train`` on the simulated Datapath.

The training loop is ordinary blocking code (the same
:func:`nitihw.sim.command.train_run.run_training` the golden backend runs); it runs in a
``cocotb.bridge`` thread, and the RTL backend hands each datapath operation to the simulator
with ``cocotb.resume``. ``NITIHW_TRAIN`` holds the run's
options, ``NITIHW_PARAMS`` the Datapath's parameters, ``NITIHW_STATUS`` where to say how it
ended, and ``NITIHW_CONSOLE_OUT`` / ``_ERR`` where the run's own output goes (the launcher
relays them; the simulator's stdout is its log file).
"""

from __future__ import annotations

import contextlib
import json
import os

import cocotb
from cocotb.task import bridge, resume

from nitihw.golden.backend import NumpyBackend
from nitihw.golden.files import atomic_write_json
from nitihw.rtl.datapath import DatapathParams
from nitihw.sim.command.train_run import run_training
from nitihw.sim.simulate.cocotb_port import CocotbPort, start_clock_and_reset
from nitihw.sim.simulate.datapath_driver import DatapathDriver
from nitihw.sim.simulate.rtl_backend import RtlBackend


@cocotb.test()
async def train_run(dut):
    opts = json.loads(os.environ["NITIHW_TRAIN"])
    params = DatapathParams.from_dict(json.loads(os.environ["NITIHW_PARAMS"]))
    status = os.environ["NITIHW_STATUS"]
    drv = DatapathDriver(CocotbPort(dut), params)
    await drv.reset_streams()
    await start_clock_and_reset(dut)

    def call(coro_fn, *args, **kw):
        return resume(coro_fn)(*args, **kw)

    def blocking():
        # the run's own output goes to the files the launcher relays (the simulator's
        # stdout is its log file)
        with contextlib.ExitStack() as stack:
            for var, name in (("NITIHW_CONSOLE_OUT", "stdout"), ("NITIHW_CONSOLE_ERR", "stderr")):
                if os.environ.get(var):
                    f = stack.enter_context(open(os.environ[var], "a", buffering=1))
                    redirect = (
                        contextlib.redirect_stdout
                        if name == "stdout"
                        else (contextlib.redirect_stderr)
                    )
                    stack.enter_context(redirect(f))
            run(opts)

    def run(opts):
        backend = RtlBackend(drv, call, opts["accumulator_bits"], opts["overflow"])
        golden_eval = (
            None
            if opts.get("eval_on_rtl")
            else NumpyBackend(opts["accumulator_bits"], opts["overflow"])
        )
        try:
            result = run_training(opts, backend, eval_backend=golden_eval)
        except BaseException as exc:
            import traceback

            from nitihw.sim.command.cli import USER_ERRORS

            user = isinstance(exc, (*USER_ERRORS, OSError))
            atomic_write_json(
                status,
                {
                    "error": str(exc) if user else f"{type(exc).__name__}: {exc}",
                    "internal": not user,
                    "traceback": "".join(traceback.format_exception(exc)),
                },
            )
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
