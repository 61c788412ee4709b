"""Synthesis reports of the Datapath with Yosys (``nitihw synth``; see docs/synth.md)."""

from nitihw.sim.explore.synth.flow import TARGETS
from nitihw.sim.explore.synth.report import format_report, synthesize
from nitihw.sim.explore.synth.yosys import YosysError

__all__ = ["TARGETS", "YosysError", "format_report", "synthesize"]
