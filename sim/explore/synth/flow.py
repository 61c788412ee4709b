"""The Yosys scripts of each target, and reading their results back.

Every module (the Datapath or one block) is synthesised alone, flattened, by one script that
writes, next to its log:

``pre.json``     ``stat -json -width`` after ``proc; flatten``: the ``$mul`` cells (with their
                 output widths) and the memories (count, bits) as the Verilog describes them;
``stat.json``    ``stat -json`` of the mapped netlist;
``ltp.txt``      ``ltp -noff``: the longest path of cells between flip-flops (and ports, and
                 memories);
``cmos.txt``     generic only: ``stat -tech cmos`` as Yosys prints it (flip-flops with enable
                 or reset are not priced, hence its trailing ``+``);
``cmos_all.txt`` generic only: ``stat -tech cmos`` once every flip-flop is a plain D
                 flip-flop (``dfflegalize``: enables and resets become gates) and the SRAMs
                 are left out, so all that remains is priced.

The generic target runs ``synth``'s own steps with one change: only memories of at most
:data:`SRAM_MIN_WORDS` - 1 words become flip-flops (``memory_map``); larger ones stay one
``$mem_v2`` cell each, an SRAM macro, counted in ``sram_macros`` / ``sram_bits`` and not in
the cells, flip-flops or transistors (a 32768-word buffer as flip-flops would dwarf the logic
and take Yosys hours).
"""

from __future__ import annotations

import bisect
import json
import re
from pathlib import Path

TARGETS = ("generic", "xilinx", "ecp5")

#: per target: bump when its script or the meaning of a field changes (part of the cache key)
FLOW_VERSIONS = {"generic": 3, "xilinx": 3, "ecp5": 3}

#: generic target: memories of this many words or more stay SRAM macros
SRAM_MIN_WORDS = 33

# cells that ltp must not walk through (ltp -noff only knows Yosys' own flip-flop cells):
# memories, and on the FPGA targets flip-flops, block RAMs and shift-register LUTs
_LTP_CUT = {
    "generic": ("$mem_v2",),
    "xilinx": ("FD*", "RAMB*", "SRL*"),
    "ecp5": ("TRELLIS_FF", "DP16KD"),
}


def synth_commands(target: str, top: str) -> list[str]:
    if target == "generic":
        # synth -flatten -top TOP, its fine stage spelt out to keep large memories whole
        return [
            f"synth -flatten -top {top} -run begin:fine",
            "opt -fast -full",
            f"memory_map t:$mem_v2 r:SIZE<{SRAM_MIN_WORDS} %i",
            "opt -full",
            "techmap",
            "opt -fast",
            "abc",
            "opt -fast",
            "hierarchy -check",
            "check",
        ]
    if target == "xilinx":
        # -noiopad: the datapath is a block inside a chip, its ports are no pins
        return [f"synth_xilinx -flatten -family xc7 -noiopad -top {top}"]
    if target == "ecp5":
        return [f"synth_ecp5 -top {top}"]  # flattens by default
    raise ValueError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")


def script(target: str, verilog_file: str, top: str) -> str:
    """The Yosys script synthesising module ``top`` of ``verilog_file`` for ``target``."""
    synth = synth_commands(target, top)  # rejects an unknown target
    cut = "".join(f" t:{pattern} %d" for pattern in _LTP_CUT[target])
    lines = [
        f"read_verilog {verilog_file}",
        # Amaranth names some wires "a.b[0]" beside a wire "a.b"; ABC9's reintegration then
        # creates a wire that exists already and Yosys asserts (YosysHQ/yosys#4349): give
        # such wires plain names first
        "rename -unescape w:*]",
        "design -save read",
        f"hierarchy -check -top {top}",
        "proc",
        "flatten",
        "tee -q -o pre.json stat -json -width",
        "design -load read",
        *synth,
        "tee -q -o stat.json stat -json",
        f"tee -q -o ltp.txt ltp -noff *{cut}",
    ]
    if target == "generic":
        lines += [
            "tee -q -o cmos.txt stat -tech cmos",
            "delete t:$scopeinfo t:$mem_v2",
            "dfflegalize -cell $_DFF_P_ 01",
            "tee -q -o cmos_all.txt stat -tech cmos",
        ]
    return "\n".join(lines) + "\n"


# an "initial" block that only zeroes memory words, as Amaranth writes a memory's init=[]
_ZERO_INIT = re.compile(
    r"^[ \t]*initial begin\n"
    r"(?:[ \t]*(?:\\\S+ |[A-Za-z_][\w$]*)\[\d+\] = \d+'[hdb]0+;\n)+"
    r"[ \t]*end\n",
    re.M,
)


def drop_zero_inits(text: str) -> tuple[str, int]:
    """The Verilog without the blocks that zero whole memories, and how many there were.

    Yosys' Verilog frontend takes minutes over them (8192 words of 256 bits: over two
    minutes, against two seconds without), and they change no count: an SRAM has no initial
    value and zero is a block RAM's power-up value.
    """
    return _ZERO_INIT.subn("", text)


_MEMORY = re.compile(
    r"^[ \t]*reg\s+(?:signed\s+)?(?:\[(\d+):(\d+)\]\s+)?(\\\S+|[A-Za-z_]\w*)\s*\[(\d+):(\d+)\]\s*;",
    re.M,
)


def verilog_memories(text: str, top: str) -> list[dict]:
    """The memories the Verilog declares (``reg [W-1:0] name [D-1:0];``), with the module
    instance each lives in."""
    lines = ModuleLines(text, top)
    found = []
    for m in _MEMORY.finditer(text):
        hi, lo = int(m.group(1) or 0), int(m.group(2) or 0)
        words = abs(int(m.group(4)) - int(m.group(5))) + 1
        width = abs(hi - lo) + 1
        instance = lines.instance(text.count("\n", 0, m.start()) + 1)
        name = m.group(3).lstrip("\\")
        found.append(
            {
                "name": name if instance in (None, top) else f"{instance}.{name}",
                "words": words,
                "width": width,
                "bits": words * width,
            }
        )
    return found


# ---------------------------------------------------------------------------------- parsing


def _design_stats(path: Path) -> dict:
    data = json.loads(path.read_text())
    return data["design"]


def _is_ff(target: str, cell_type: str) -> bool:
    if target == "generic":
        return bool(re.match(r"\$_(S?DFF|ALDFF|DLATCH|SR_)", cell_type))
    if target == "xilinx":
        return bool(re.match(r"(FD[RSCP]E(_1)?|LD[CP]E?)$", cell_type))
    return cell_type == "TRELLIS_FF"


def _sum(types: dict, pattern: str) -> int:
    return sum(n for t, n in types.items() if re.fullmatch(pattern, t))


def _transistors(path: Path) -> tuple[int, bool] | None:
    if not path.exists():
        return None
    m = re.search(r"Estimated number of transistors:\s*(\d+)(\+?)", path.read_text())
    return (int(m.group(1)), m.group(2) == "+") if m else None


_LTP_HEAD = re.compile(r"Longest topological path in (\S+) \(length=(\d+)\)")
_LTP_ITEM = re.compile(r"^\s*(\d+|ff): (\S+)(?: \[(\d+)\])?(?: \(via (\S+)\))?\s*$")
_FLATTEN = re.compile(r"flatten\\([A-Za-z_][\w.]*?)\.[$\\]")
_SRC = re.compile(r"([\w-]+\.v):(\d+)")


class ModuleLines:
    """Maps a line of a Verilog file to the Amaranth module instance it belongs to."""

    def __init__(self, verilog_text: str, top: str):
        self.top = top
        self.starts, self.names = [], []
        for i, line in enumerate(verilog_text.splitlines(), 1):
            m = re.match(r"module (\\?\S+?)\s*\(", line)
            if m:
                self.starts.append(i)
                self.names.append(m.group(1).lstrip("\\"))

    def instance(self, line: int) -> str | None:
        k = bisect.bisect_right(self.starts, line) - 1
        if k < 0:
            return None
        name = self.names[k]
        # Amaranth names a submodule's module "<top>.<instance path>"
        return name[len(self.top) + 1 :] if name.startswith(self.top + ".") else self.top


def _region(name: str, top: str, lines: ModuleLines | None) -> str | None:
    """The hierarchy instance a (flattened) wire or cell name comes from, if it says."""
    if name.startswith("\\"):
        body = name[1:]
        head, dot, _ = body.rpartition(".")
        if dot and head and "$" not in head:
            return head
        if "$" not in body[:1]:
            return top
    m = _FLATTEN.search(name)
    if m:
        return m.group(1)
    m = _SRC.search(name)
    if m and lines is not None:
        return lines.instance(int(m.group(2)))
    return None


def _readable(name: str) -> str | None:
    """A wire name worth showing: public, and not one of Amaranth's numbered temporaries."""
    if not name.startswith("\\"):
        return None
    body = name[1:]
    last = body.rpartition(".")[2]
    return None if last.startswith("$") else body


def parse_ltp(text: str, top: str, lines: ModuleLines | None = None) -> dict:
    """The longest path from ``ltp`` output: its length in cells, where it starts and ends,
    the hierarchy instances it runs through (in order) and the named wires on it."""
    head = _LTP_HEAD.search(text)
    if not head:
        return {"length": None}
    items = []
    for line in text[head.end() :].splitlines():
        m = _LTP_ITEM.match(line)
        if m:
            items.append(m.groups())
    regions, named = [], []
    for _, wire, _, via in items:
        region = _region(wire, top, lines) or (via and _region(via, top, lines))
        if region and (not regions or regions[-1] != region):
            regions.append(region)
        shown = _readable(wire)
        if shown and shown not in named:
            named.append(shown)

    def describe(item):
        if item is None:
            return None
        _, wire, bit, _ = item
        text_ = wire.lstrip("\\")
        return f"{text_}[{bit}]" if bit is not None else text_

    path = [i for i in items if i[0] != "ff"]
    end_ff = next((i for i in items if i[0] == "ff"), None)
    return {
        "length": int(head.group(2)),
        "start": describe(path[0] if path else None),
        "end": describe(end_ff or (path[-1] if path else None)),
        "end_is_ff": end_ff is not None,
        "regions": regions,
        "named": named[:16],
    }


def read_results(workdir: Path, target: str, top: str, verilog_text: str) -> dict:
    """The numbers of one finished script run in ``workdir``."""
    workdir = Path(workdir)
    pre = _design_stats(workdir / "pre.json")
    final = _design_stats(workdir / "stat.json")
    types = dict(final["num_cells_by_type"])
    scopeinfo = types.pop("$scopeinfo", 0)
    srams = types.pop("$mem_v2", 0)
    muls = {t: n for t, n in pre["num_cells_by_type"].items() if t.startswith("$mul")}
    result = {
        "cells": final["num_cells"] - scopeinfo - srams,
        "ff_bits": sum(n for t, n in types.items() if _is_ff(target, t)),
        "multipliers": sum(muls.values()),
        "multipliers_by_width": muls,
        "memories": pre["num_memories"],
        "memory_bits": pre["num_memory_bits"],
        "memory_list": verilog_memories(verilog_text, top),
        "cells_by_type": types,
    }
    if target == "generic":
        big = [m for m in result["memory_list"] if m["words"] >= SRAM_MIN_WORDS]
        result["sram_macros"] = srams
        result["sram_bits"] = sum(m["bits"] for m in big)
        raw, complete = _transistors(workdir / "cmos.txt"), _transistors(workdir / "cmos_all.txt")
        result["transistors"] = complete[0] if complete else None
        result["transistors_complete"] = bool(complete) and not complete[1]
        result["transistors_yosys"] = raw[0] if raw else None
        result["transistors_yosys_has_unpriced"] = bool(raw) and raw[1]
    elif target == "xilinx":
        result["luts"] = _sum(types, r"LUT[1-6]")
        result["carry"] = _sum(types, r"CARRY[48]")
        result["dsps"] = _sum(types, r"DSP48E1")
        result["bram_36"] = _sum(types, r"RAMB36E1")
        result["bram_18"] = _sum(types, r"RAMB18E1")
        result["lutram"] = _sum(types, r"RAM\d+[MSX].*")
        result["srl"] = _sum(types, r"SRL.*")
    else:
        result["luts"] = _sum(types, r"LUT4")
        result["carry"] = _sum(types, r"CCU2C")
        result["dsps"] = _sum(types, r"MULT18X18D")
        result["bram_dp16kd"] = _sum(types, r"DP16KD")
        result["lutram"] = _sum(types, r"TRELLIS_DPR16X4")
    lines = ModuleLines(verilog_text, top)
    result["longest_path"] = parse_ltp((workdir / "ltp.txt").read_text(), top, lines)
    return result
