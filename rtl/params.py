"""Parameter checks shared by the RTL components: precise ``ValueError`` messages; and what
generating a Datapath of given parameters costs (:func:`generation_cost`, :func:`cost_line`).

The Datapath's own parameters are limited by :data:`nitihw.golden.limits.LIMITS`
(:func:`require`), the table every command and config file uses; its blocks check the wider
ranges they are built and tested for (:func:`require_int`).
"""

from __future__ import annotations

import os

from nitihw.golden.limits import LIMITS

#: the Verilog netlists the RTL is written as (:data:`nitihw.rtl.verilog.NETLIST_PASSES_BY_NAME`
#: holds their Yosys passes): ``optimized`` (the default) or ``amaranth`` (Amaranth's own)
NETLISTS = ("optimized", "amaranth")


def check_netlist(netlist: str) -> str:
    if netlist not in NETLISTS:
        raise ValueError(f"netlist must be one of {', '.join(NETLISTS)}, got {netlist!r}")
    return netlist


def require(owner, key: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is within ``LIMITS[key]``."""
    limit = LIMITS[key]
    if not limit.ok(value) or not isinstance(value, int):
        reject(owner, f"{key} must be {limit.describe()}, got {value!r}")


def require_int(owner, name: str, value, lo: int, hi: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an int in ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        reject(owner, f"{name} must be an integer in {lo}..{hi}, got {value!r}")


def reject(owner, message: str):
    # A component rejected in its constructor is not an unused one: silence Amaranth's warning
    # (a frozen parameter set, which Amaranth does not watch, refuses the attribute).
    try:
        owner._MustUse__silence = True
    except AttributeError:
        pass
    raise ValueError(message)


#: what generating the Verilog costs (Amaranth's elaboration and conversion), measured with
#: ``nitihw verilog --top-only`` on the 2-core x86 machine with both cores busy (16x16: 27 s,
#: 0.38 GB; 32x32: 51 s, 0.55 GB; 64x64: 198 s, 1.36 GB): a fixed part and a part per PE
GENERATION_SECONDS = (15.0, 0.05)
GENERATION_BYTES = (300e6, 0.27e6)
#: above either estimate, the generation starts with a warning
WARN_SECONDS = 120.0
WARN_BYTES = 2e9


def generation_cost(params) -> tuple[float, float]:
    """The expected seconds and peak bytes of generating the Datapath ``params`` (a
    :class:`~nitihw.rtl.datapath.DatapathParams`)."""
    pes = params.rows * params.cols
    return (
        GENERATION_SECONDS[0] + GENERATION_SECONDS[1] * pes,
        GENERATION_BYTES[0] + GENERATION_BYTES[1] * pes,
    )


def describe_cost(seconds: float, nbytes: float | None = None) -> str:
    """``about 55 min and 18 GB of memory``."""
    if seconds < 90:
        when = f"about {seconds:.0f} s"
    elif seconds < 5400:
        when = f"about {seconds / 60:.0f} min"
    else:
        when = f"about {seconds / 3600:.1f} h"
    if nbytes is None:
        return when
    return when + f" and {nbytes / 1e9:.1f} GB of memory"


def cost_line(what: str, seconds: float, nbytes: float | None = None) -> str:
    """The line long work starts with: what, and its estimate; a warning above
    :data:`WARN_SECONDS` or :data:`WARN_BYTES`, with the machine's memory."""
    line = f"{what} ({describe_cost(seconds, nbytes)}) ..."
    if seconds > WARN_SECONDS or (nbytes or 0) > WARN_BYTES:
        try:
            have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            line += f" (this machine has {have / 1e9:.0f} GB)"
        except (ValueError, OSError):
            pass
        line = "warning: large design: " + line
    return line
