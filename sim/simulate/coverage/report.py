"""Verilator's coverage counts, per block: what a run exercised and what it never reached.

A coverage build (:data:`nitihw.sim.simulate.verify.COVERAGE_ARGS`) writes one file of counts
per run (``coverage.dat``: a line ``C '<key>' <count>`` per point, the key a list of fields).
:func:`read_counts` reads and merges them (counts of the same point add up), and
:func:`summarize` sums them per block (the Verilog module: ``datapath`` is the control, the
queue's and buffers' logic; ``datapath.array``, ``datapath.range_unit``... the blocks inside):

- **line**: statement blocks, as Verilator counts them in the netlist's ``always`` blocks;
- **branch**: both ways of every ``if`` and ``?:``, and every ``case`` item;
- **toggle**: every bit's rise and fall (each is a point);
- **functional**: the cover properties of :mod:`nitihw.sim.simulate.coverage.points`.

A point never reached is listed, with the Verilog it counts (lines and branches) or the
signal (toggles, grouped by name); those :data:`EXPLAINED` cannot be reached and say why, so
that "covered or explained" can be checked: :attr:`Summary.unexplained`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

#: the kinds of point, in report order
KINDS = ("line", "branch", "toggle", "functional")
_PAGE_KIND = {"v_line": "line", "v_branch": "branch", "v_toggle": "toggle", "v_user": "functional"}


@dataclass(frozen=True)
class Explanation:
    """Why a line or branch point of ``block`` cannot be reached: it matches when the Verilog
    line it counts matches ``pattern`` (a regular expression)."""

    block: str
    pattern: str
    why: str


#: the branch and line points no run can reach, and why (matched on the Verilog they count)
EXPLAINED = (
    Explanation(
        "range_unit",
        r"\? 32'd4294967295 :",
        "the overflow count saturates at 2^32 - 1: it needs 2^32 overflowed elements, "
        "beyond any simulation (the rule is proven: nitihw prove)",
    ),
    Explanation(
        "range_unit",
        r"ored\[(\d+)\] \?",
        "the OR's top bit: |x| - 1 (or ~x) of a signed value never sets it, so the bit "
        "length's top branch is unreachable by construction",
    ),
)


@dataclass(frozen=True)
class Point:
    kind: str
    block: str
    file: str
    line: int
    what: str  # Verilator's comment: the branch ("if", "else", "cond_then"...)


@dataclass
class BlockStats:
    """Covered and total points of one block, by kind."""

    covered: dict = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    total: dict = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    def percent(self, kind: str) -> float | None:
        return 100.0 * self.covered[kind] / self.total[kind] if self.total[kind] else None


@dataclass
class Summary:
    """A run's coverage: ``blocks`` (name -> :class:`BlockStats`), the points never reached
    (``missed``: lines and branches with their Verilog and explanation; ``toggles``: per block,
    signal -> bits never toggled; ``functional``: names), and the functional hit counts."""

    title: str
    blocks: dict
    missed: list  # (Point, verilog text, explanation or None)
    toggles: dict
    functional: dict  # name -> hits

    @property
    def unexplained(self) -> list:
        """The line and branch points neither reached nor explained."""
        return [(p, text) for p, text, why in self.missed if why is None]

    @property
    def functional_missed(self) -> list[str]:
        return [n for n, hits in self.functional.items() if hits == 0]

    def totals(self) -> BlockStats:
        out = BlockStats()
        for b in self.blocks.values():
            for k in KINDS:
                out.covered[k] += b.covered[k]
                out.total[k] += b.total[k]
        return out

    def as_dict(self) -> dict:
        def stats(b: BlockStats) -> dict:
            return {k: {"covered": b.covered[k], "total": b.total[k]} for k in KINDS}

        return {
            "title": self.title,
            "blocks": {name: stats(b) for name, b in self.blocks.items()},
            "total": stats(self.totals()),
            "missed": [
                {
                    "block": p.block,
                    "kind": p.kind,
                    "file": p.file,
                    "line": p.line,
                    "branch": p.what,
                    "verilog": text,
                    "explained": why,
                }
                for p, text, why in self.missed
            ],
            "toggles_never": {
                blk: {sig: bits for sig, bits in sigs.items()} for blk, sigs in self.toggles.items()
            },
            "functional": self.functional,
        }


def _fields(key: str) -> dict:
    # a key is \x01name\x02value\x01name\x02value...
    return dict(part.split("\x02", 1) for part in key.split("\x01") if part)


def read_counts(paths) -> dict[str, int]:
    """The counts of one or more coverage files, merged (a point's counts add up). A file that
    is missing or not Verilator's coverage format is an error naming it."""
    counts: dict[str, int] = defaultdict(int)
    for path in paths:
        path = Path(path)
        try:
            text = path.read_text(errors="replace")
        except OSError as exc:
            raise FileNotFoundError(f"coverage file {path}: {exc.strerror or exc}") from None
        if not text.startswith("# SystemC::Coverage"):
            raise ValueError(f"coverage file {path}: not Verilator's coverage.dat format")
        for n, line in enumerate(text.splitlines(), 1):
            if not line.startswith("C '"):
                continue
            key, _, count = line[3:].rpartition("' ")
            try:
                counts[key] += int(count)
            except ValueError:
                raise ValueError(f"coverage file {path}, line {n}: bad count {count!r}") from None
    return dict(counts)


def block_name(module: str) -> str:
    """``datapath.range_unit`` -> ``range_unit``; the top module is the ``control``."""
    if module == "datapath":
        return "control"
    return module.split(".", 1)[1] if module.startswith("datapath.") else module


_BIT = re.compile(r"^(.*?)(?:\[(\d+)\])?:(0->1|1->0)$")


def _toggle_signal(what: str) -> tuple[str, int | None]:
    """Verilator's toggle comment ``name[3]:0->1`` -> (``name``, 3); names come mangled
    (``__05F`` for ``_``, ``__02e`` for ``.``): made readable."""
    m = _BIT.match(what)
    name, bit = (m.group(1), m.group(2)) if m else (what, None)
    name = re.sub(r"__0([0-9A-Fa-f]{2})", lambda g: chr(int(g.group(1), 16)), name)
    return name.replace("$", ""), None if bit is None else int(bit)


def summarize(counts: dict[str, int], title: str, ignore_modules=("nitihw_cover",)) -> Summary:
    """Sum ``counts`` (:func:`read_counts`) per block and kind; list what was never reached.
    The cover module's own ports (``ignore_modules``) count for nothing but its properties."""
    blocks: dict[str, BlockStats] = {}
    missed = []
    toggles: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    functional: dict[str, int] = {}
    sources: dict[str, list[str]] = {}
    for key, count in sorted(counts.items()):
        f = _fields(key)
        page_kind, _, module = f.get("page", "").partition("/")
        kind = _PAGE_KIND.get(page_kind)
        if kind is None:
            continue
        if kind == "functional":
            functional[f.get("o", key)] = functional.get(f.get("o", key), 0) + count
            continue
        if module in ignore_modules:
            continue
        block = block_name(module)
        stats = blocks.setdefault(block, BlockStats())
        stats.total[kind] += 1
        if count:
            stats.covered[kind] += 1
            continue
        if kind == "toggle":
            sig, bit = _toggle_signal(f.get("o", ""))
            toggles[block][sig].add(bit)
            continue
        point = Point(kind, block, f.get("f", ""), int(f.get("l", 0)), f.get("o", ""))
        text = _verilog_line(sources, point.file, point.line)
        why = next(
            (e.why for e in EXPLAINED if e.block == block and re.search(e.pattern, text)), None
        )
        missed.append((point, text, why))
    fstats = blocks.setdefault("functional", BlockStats())
    fstats.total["functional"] = len(functional)
    fstats.covered["functional"] = sum(1 for h in functional.values() if h)
    toggled = {
        blk: {sig: _bit_ranges(bits) for sig, bits in sorted(sigs.items())}
        for blk, sigs in sorted(toggles.items())
    }
    return Summary(title, dict(sorted(blocks.items())), missed, toggled, functional)


def _verilog_line(cache: dict, path: str, line: int) -> str:
    if path not in cache:
        try:
            cache[path] = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            cache[path] = []
    lines = cache[path]
    return lines[line - 1].strip() if 0 < line <= len(lines) else ""


def _bit_ranges(bits: set) -> str:
    """{0, 1, 2, 5} -> ``0-2,5`` (``-`` for a one-bit signal)."""
    nums = sorted(b for b in bits if b is not None)
    if not nums:
        return "-"
    out, start, prev = [], nums[0], nums[0]
    for b in [*nums[1:], None]:
        if b is not None and b == prev + 1:
            prev = b
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if b is not None:
            start = prev = b
    return ",".join(out)


def _pct(b: BlockStats, kind: str) -> str:
    p = b.percent(kind)
    return "-" if p is None else f"{p:5.1f}% ({b.covered[kind]}/{b.total[kind]})"


def format_summary(s: Summary, max_toggles: int = 12) -> str:
    """The per-block table, then what was never reached."""
    rows = [(name, b) for name, b in s.blocks.items() if name != "functional"]
    head = f"{'block':<12} {'line':>18} {'branch':>18} {'toggle':>20}"
    out = [f"coverage: {s.title}", head, "-" * len(head)]
    for name, b in [*rows, ("all", s.totals())]:
        out.append(
            f"{name:<12} {_pct(b, 'line'):>18} {_pct(b, 'branch'):>18} {_pct(b, 'toggle'):>20}"
        )
    fb = s.blocks.get("functional", BlockStats())
    out.append(f"functional points: {_pct(fb, 'functional').strip()}")
    if s.functional_missed:
        out.append("  never taken: " + ", ".join(s.functional_missed))
    if s.missed:
        out.append("lines and branches never reached:")
        for p, text, why in s.missed:
            tag = "explained" if why else "NOT EXPLAINED"
            out.append(f"  {p.block}: {p.kind} {p.what} at line {p.line}: {text[:80]}  [{tag}]")
            if why:
                out.append(f"      {why}")
    else:
        out.append("every line and branch reached")
    if s.toggles:
        out.append("signals with bits that never toggled (block: signal[bits]):")
        for blk, sigs in s.toggles.items():
            items = [f"{sig}[{bits}]" if bits != "-" else sig for sig, bits in sigs.items()]
            more = f" ... and {len(items) - max_toggles} more" if len(items) > max_toggles else ""
            out.append(f"  {blk}: " + ", ".join(items[:max_toggles]) + more)
    return "\n".join(out)


def junit_cases(s: Summary, classname: str, gate: bool = True) -> list[tuple]:
    """JUnit cases for :func:`nitihw.sim.tools.junit_xml`: one per block, its figures as the
    case's properties (``line_covered``, ``line_total``, ``line_percent``...). With ``gate``
    (the regression's report) a block fails when it has a line or branch neither reached nor
    explained, and the functional case fails when a point was never taken; without it (a
    training run's, which is not meant to take the error paths) the cases carry figures only."""
    unexplained = defaultdict(list)
    for p, text in s.unexplained:
        unexplained[p.block].append(f"{p.kind} {p.what} at line {p.line}: {text}")
    cases = []
    for name, b in s.blocks.items():
        kinds = ("functional",) if name == "functional" else ("line", "branch", "toggle")
        props = {}
        for k in kinds:
            pct = b.percent(k)
            props |= {
                f"{k}_covered": b.covered[k],
                f"{k}_total": b.total[k],
                f"{k}_percent": "-" if pct is None else f"{pct:.1f}",
            }
        if name == "functional":
            missed = s.functional_missed
            failure = ("never taken", ", ".join(missed)) if missed else None
        else:
            lines = unexplained[name]
            failure = (f"{len(lines)} unexplained", "\n".join(lines)) if lines else None
        cases.append((classname, name, 0.0, failure if gate else None, props))
    return cases
