"""ctypes front of the native harness: one simulator instance, a program port for
:class:`nitihw.sim.simulate.datapath_driver.DatapathDriver`."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from nitihw.golden.errors import InternalError, ToolError

_U64 = ctypes.c_uint64
_PTR = ctypes.c_void_p
#: cycles without any transfer before a program is declared stuck
WATCHDOG_CYCLES = 1 << 22


class NativeStall(InternalError):
    """A program stopped moving: the Datapath took no command or beat and returned no dout
    beat for ``watchdog`` cycles (:data:`WATCHDOG_CYCLES`; the host expected more output than
    its commands produce), or (``checked``) an output moved with its own cycle's inputs."""


def _load(lib: str | Path) -> ctypes.CDLL:
    dll = ctypes.CDLL(str(Path(lib).resolve()))
    dll.nh_words.argtypes, dll.nh_words.restype = [ctypes.c_int], ctypes.c_int
    dll.nh_has_trace.argtypes, dll.nh_has_trace.restype = [], ctypes.c_int
    dll.nh_open.argtypes, dll.nh_open.restype = [ctypes.c_char_p], _PTR
    dll.nh_close.argtypes, dll.nh_close.restype = [_PTR], None
    dll.nh_reset.argtypes, dll.nh_reset.restype = [_PTR, ctypes.c_int], None
    dll.nh_cycle.argtypes, dll.nh_cycle.restype = [_PTR], _U64
    dll.nh_run.argtypes = [
        _PTR,
        _PTR,
        _U64,
        _PTR,
        _U64,
        ctypes.c_int,
        _PTR,
        _U64,
        _U64,
        ctypes.c_int,
        _PTR,
    ]
    dll.nh_run.restype = ctypes.c_int
    return dll


class NativeDatapath:  # a nitihw.sim.simulate.ports.ProgramPort
    """One simulated Datapath in this process, reset and ready.

    ``lib``: the library :func:`nitihw.sim.simulate.native.build_native` built for ``params``;
    ``waves``: a VCD file to record (needs a build with ``NativeOptions(waves=True)``);
    ``checked``: also settle every cycle on its own inputs and fail if an output moved (the
    harness samples the outputs once a cycle, after the clock edge; this tests that the
    Datapath's outputs come from registers; a second eval a cycle, about 1.5x slower).
    """

    def __init__(
        self,
        lib: str | Path,
        params,
        waves: str | Path | None = None,
        checked: bool = False,
        watchdog: int = WATCHDOG_CYCLES,
    ):
        from nitihw.sim.simulate.datapath_driver import Payloads

        self._dll = _load(lib)
        p = params  # a DatapathParams
        pay = Payloads(p.rows, p.cols, p.operand_bits, p.accumulator_bits, p.b_bits, p.divide)
        want = (pay.cmd_bytes, pay.din_bytes, pay.dout_bytes)
        got = tuple(4 * self._dll.nh_words(i) for i in range(3))
        if got != want:
            raise ValueError(
                f"{lib} was built for other Datapath parameters: payload bytes {got}, "
                f"these parameters need {want}"
            )
        self._bytes = want
        self.checked = bool(checked)
        self.watchdog = int(watchdog)
        if waves and not self._dll.nh_has_trace():
            raise ValueError(f"{lib} was built without tracing; build it with waves=True")
        self.waves = str(waves) if waves else None
        self._h = self._dll.nh_open((self.waves or "").encode())
        if not self._h:
            raise ToolError("the native simulator could not start")
        self._dll.nh_reset(self._h, 2)
        self._info = (_U64 * 4)()

    @property
    def cycle(self) -> int:
        return int(self._dll.nh_cycle(self._h))

    def run_program(self, cmds: np.ndarray, din: np.ndarray, n_out: int):
        """Stream one program; returns ``(dout uint8 (n_out, bytes), first accepted cycle,
        first idle cycle, error, error_op)``, as the driver's cycle loop does."""
        if self._h is None:
            raise RuntimeError("this native simulator is closed")
        cb, ib, ob = self._bytes
        cmds = np.ascontiguousarray(cmds, np.uint8)
        din = np.ascontiguousarray(din, np.uint8)
        din_bytes = din.shape[1] if din.ndim == 2 and len(din) else ib
        if cmds.shape[1:] != (cb,) or din_bytes % 4 or not 4 <= din_bytes <= ib:
            raise ValueError(
                f"payload rows must be {cb} bytes (cmd) and 4..{ib} bytes, whole words (din)"
            )
        out = np.zeros((n_out, ob), np.uint8)
        info = self._info
        rc = self._dll.nh_run(
            self._h,
            cmds.ctypes.data,
            len(cmds),
            din.ctypes.data if len(din) else None,
            len(din),
            din_bytes // 4,
            out.ctypes.data if n_out else None,
            n_out,
            self.watchdog,
            int(self.checked),
            info,
        )
        if rc == -2:
            names = ("cmd.ready", "din.ready", "dout.valid", "busy", "dout.payload")
            moved = ", ".join(n for b, n in enumerate(names) if info[2] >> b & 1)
            raise NativeStall(
                f"cycle {info[3]}: Datapath output {moved} changed with the inputs of its own "
                "cycle; "
                "the native harness samples the outputs once a cycle, after the clock edge, "
                "and needs them to come from registers (see harness.cpp)"
            )
        if rc != 0:
            raise NativeStall(
                f"the program stalled at cycle {info[3]}: {info[0]}/{len(cmds)} commands "
                f"and {info[1]}/{len(din)} din beats taken, {info[2]}/{n_out} dout beats "
                f"returned, nothing moving for {self.watchdog} cycles"
            )
        return out, int(info[0]), int(info[1]), int(info[2]), int(info[3])

    def close(self) -> None:
        """End the simulation (and finish the waveform file)."""
        if self._h is not None:
            self._dll.nh_close(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def call_sync(coro_fn, *args, **kw):
    """Run a driver coroutine to completion here and now. With a program port nothing in it
    waits on a simulator event, so it finishes on its first step."""
    coro = coro_fn(*args, **kw)
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError(f"{coro_fn.__name__} waited on a simulator event (not a program port)")
