"""Synthesis reports of the Datapath with Yosys (``nitihw synth``; see docs/synth.md)."""

from nitihw.sim.synth.flow import TARGETS
from nitihw.sim.synth.report import format_report, synthesize
from nitihw.sim.synth.yosys import YosysError

__all__ = ["TARGETS", "YosysError", "format_report", "synthesize"]
