"""Which faults are the user's and which are nitihw's own.

The command line sorts every exception into one of two kinds (:func:`nitihw.sim.command.cli.main`):

- **user errors**: bad input (an option, a file, a field, a value), a setting the tools cannot
  run (a shift the rescale lanes cannot take, an accumulator that overflows under
  ``overflow = "error"``), or a tool the command needs that is missing or failed (a compiler,
  Yosys, a Dask scheduler that does not answer). One line that names the problem, exit 2.
  :class:`UserError` marks them; the input checks' ``ValueError`` subclasses count too.
- **internal errors**: everything else, a fault of nitihw itself (:class:`InternalError`, and
  any exception nobody expected). The command says so, keeps the traceback (in the run folder
  and, with ``--debug``, on stderr) and exits 70 (``EX_SOFTWARE``). The run's last checkpoint
  stays whole: checkpoints are written atomically, and nothing is written after the fault.
"""

from __future__ import annotations

#: the exit status of an internal error (sysexits.h's EX_SOFTWARE)
EXIT_INTERNAL = 70
#: the exit status of a user error (bad input, a setting or tool that cannot run)
EXIT_USER = 2


class UserError(Exception):
    """A problem of the user's input, settings or tools: a one-line error, exit 2."""


class ToolError(UserError, RuntimeError):
    """A tool a command needs is missing or failed (a build, a simulator, a scheduler)."""


class DatapathLimitError(UserError, ValueError):
    """A setting asks more of the datapath than it was built for (a shift beyond the rescale
    lanes', operands wider than an exact GEMM path takes)."""


class InternalError(RuntimeError):
    """A fault of nitihw itself, not of the user's input: exit 70 with the traceback kept."""


class DatapathLeak(InternalError):
    """A datapath operation of a simulating (or device) backend ran somewhere else: on the host,
    in the golden model's code. The run stops at the first one (:class:`nitihw.golden.backend.
    Ledger`), naming it."""
