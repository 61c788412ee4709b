"""The accelerator an estimate describes, read from a TOML file, and its energy table.

A config file (every section optional; defaults in brackets)::

    [array]
    rows = 8            # [8]  PE rows
    cols = 8            # [8]  PE columns
    kmax = 256          # [256] operand buffer depth of the datapath
    [precision]
    operand_bits = 8        # [8]  2..8 or 16
    accumulator_bits = 32   # [32]
    [buffers]              # on-chip SRAM, KiB
    ifmap_kib = 64          # [64]  A operands (activations, errors)
    filter_kib = 64         # [64]  B operands (weights, activations for gradients)
    ofmap_kib = 256         # [256] int32 results held until their range is known
    [offchip]
    bandwidth_bytes_per_cycle = 16   # [16]
    [clock]
    frequency_mhz = 500     # [500] MHz, or "pnr": the Fmax of this array's Datapath placed
                            # and routed on an ECP5 (nitihw.sim.explore.synth.clock; cached)
    [energy]
    table = "horowitz-45nm" # a shipped table name or a path to a table file
    int8_mult = 0.25        # any table entry (pJ) overrides the table

Unknown sections or keys, wrong types and out-of-range values are errors that name the key.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from nitihw.golden.files import read_text
from nitihw.golden.limits import LimitError, check

TABLES = Path(__file__).parent / "energy_tables"
DEFAULT_TABLE = "horowitz-45nm"
TABLE_KEYS = (
    "int8_add",
    "int16_add",
    "int32_add",
    "int8_mult",
    "int16_mult",
    "int32_mult",
    "fp16_add",
    "fp16_mult",
    "fp32_add",
    "fp32_mult",
    "sram_8kib_64bit",
    "sram_32kib_64bit",
    "sram_1mib_64bit",
    "dram_64bit",
)


class ConfigError(ValueError):
    """A config or energy-table file is wrong: the message names the file and the key."""


@dataclass(frozen=True)
class EnergyTable:
    """Energy per operation in pJ (:data:`TABLE_KEYS`), with where the numbers come from."""

    name: str
    citation: str
    pj: dict
    #: SRAM costs measured by a memory model for particular buffers, in place of the table's
    #: three points: ``(size_bytes, read_pj_per_byte, write_pj_per_byte, area_mm2)`` each
    #: (:func:`nitihw.sim.model.cacti.with_cacti`)
    sram_measured: tuple = ()
    #: where the measured SRAM costs come from (empty: the table's points, interpolated)
    sram_source: str = ""

    def sram_cost(self, size_bytes: int) -> tuple[float, float, float | None, str]:
        """``(read_pj_per_byte, write_pj_per_byte, area_mm2, source)`` of a buffer of
        ``size_bytes``: the measured costs where they cover that size, else the table's
        interpolation (the same energy both ways, no area)."""
        for size, read, write, area in self.sram_measured:
            if size == int(size_bytes):
                return read, write, area, self.sram_source
        e = self.sram_per_byte(size_bytes)
        return e, e, None, f"{self.name} table (interpolated in log2 size)"

    def mult(self, bits: int) -> float:
        """A ``bits`` x ``bits`` multiply: the table's entry for the next width up; below 8
        bits the int8 entry scaled by ``(bits / 8)^2`` (an array multiplier's partial products,
        the same area rule as the mixed-width multiply of :mod:`nitihw.sim.model.estimate`)."""
        if bits < 8:
            return self.pj["int8_mult"] * bits * bits / 64
        return (
            self.pj["int8_mult"]
            if bits <= 8
            else self.pj["int16_mult"]
            if bits <= 16
            else self.pj["int32_mult"]
        )

    def add(self, bits: int) -> float:
        if bits <= 8:
            return self.pj["int8_add"]
        if bits <= 16:
            return self.pj["int16_add"]
        return self.pj["int32_add"] * bits / 32

    def mac(self, operand_bits: int, accumulator_bits: int) -> float:
        """One integer multiply-accumulate: a multiply at the operand width, an add at the
        accumulator width."""
        return self.mult(operand_bits) + self.add(accumulator_bits)

    def sram_per_byte(self, size_bytes: int) -> float:
        """SRAM access energy per byte for a buffer of ``size_bytes``: the table's 64-bit
        access energies at 8 KiB, 32 KiB and 1 MiB, interpolated in log2(size), held flat
        outside that range."""
        points = [
            (13, self.pj["sram_8kib_64bit"]),
            (15, self.pj["sram_32kib_64bit"]),
            (20, self.pj["sram_1mib_64bit"]),
        ]
        x = math.log2(max(size_bytes, 1))
        if x <= points[0][0]:
            e = points[0][1]
        elif x >= points[-1][0]:
            e = points[-1][1]
        else:
            for (x0, e0), (x1, e1) in itertools.pairwise(points):
                if x0 <= x <= x1:
                    e = e0 + (e1 - e0) * (x - x0) / (x1 - x0)
                    break
        return e / 8

    @property
    def dram_per_byte(self) -> float:
        return self.pj["dram_64bit"] / 8


def load_table(
    name_or_path: str | Path, overrides: dict | None = None, where: str = ""
) -> EnergyTable:
    """A shipped table by name (``horowitz-45nm``) or a TOML table file, with overrides."""
    path = Path(name_or_path)
    if not path.suffix:
        path = TABLES / f"{name_or_path}.toml"
        try:
            found = path.is_file()
        except OSError:  # a name too long for the file system
            found = False
        if not found:
            shipped = sorted(p.stem for p in TABLES.glob("*.toml"))
            raise ConfigError(
                f"{where}unknown energy table {str(name_or_path)!r}; shipped: "
                f"{', '.join(shipped)}, or give a .toml path"
            )
    what = f"{where}energy table {path}"  # a config's table: the config file named first
    doc = _read_toml(path, what)
    pj = doc.get("pj")
    if not isinstance(pj, dict):
        raise ConfigError(f"{what}: missing the [pj] table")
    values = {}
    for key in TABLE_KEYS:
        if key not in pj:
            raise ConfigError(f"{what}: missing pj.{key}")
        values[key] = _positive(pj[key], f"{what}: pj.{key}")
    for key in pj:
        if key not in TABLE_KEYS:
            raise ConfigError(f"{what}: unknown key pj.{key}")
    for key, value in (overrides or {}).items():
        values[key] = value
    return EnergyTable(str(doc.get("name", path.stem)), str(doc.get("citation", "")), values)


def _read_toml(path: Path, what: str) -> dict:
    text = read_text(path, what, ConfigError)
    try:
        return tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError, a 4301-digit integer, [[[...
        raise ConfigError(f"{what}: not valid TOML ({_one_line(exc)})") from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _positive(value, what: str) -> float:
    try:
        return check("energy_pj", value, what)
    except LimitError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class Accelerator:
    rows: int = 8
    cols: int = 8
    kmax: int = 256
    operand_bits: int = 8
    accumulator_bits: int = 32
    ifmap_kib: float = 64
    filter_kib: float = 64
    ofmap_kib: float = 256
    bandwidth: float = 16.0  # off-chip bytes per cycle
    frequency_mhz: float = 500.0
    energy: EnergyTable = field(default_factory=lambda: load_table(DEFAULT_TABLE))
    source: str = "defaults"
    #: where ``frequency_mhz`` comes from: ``config`` (the file, or the default), ``pnr``
    #: (asked for, not yet placed: :func:`nitihw.sim.explore.synth.clock.resolve_clock`), or
    #: the place-and-route report's description once resolved
    clock: str = "config"

    @property
    def operand_bytes(self) -> int:
        return -(-self.operand_bits // 8)

    @property
    def acc_bytes(self) -> int:
        return -(-self.accumulator_bits // 8)

    def buffer_bytes(self) -> dict[str, int]:
        """Each on-chip buffer's size in bytes: ``ifmap``, ``filter``, ``ofmap``."""
        return {
            "ifmap": int(self.ifmap_kib * 1024),
            "filter": int(self.filter_kib * 1024),
            "ofmap": int(self.ofmap_kib * 1024),
        }

    def with_array(self, text: str) -> Accelerator:
        from nitihw.sim.model.cycle_model import ArrayConfig

        a = ArrayConfig.parse(text, self.kmax)
        return replace(self, rows=a.rows, cols=a.cols)

    def as_dict(self) -> dict:
        return {
            "array": {"rows": self.rows, "cols": self.cols, "kmax": self.kmax},
            "precision": {
                "operand_bits": self.operand_bits,
                "accumulator_bits": self.accumulator_bits,
            },
            "buffers": {
                "ifmap_kib": self.ifmap_kib,
                "filter_kib": self.filter_kib,
                "ofmap_kib": self.ofmap_kib,
            },
            "offchip": {"bandwidth_bytes_per_cycle": self.bandwidth},
            "clock": {"frequency_mhz": self.frequency_mhz, "source": self.clock},
            "energy": {
                "table": self.energy.name,
                "citation": self.energy.citation,
                "pj": self.energy.pj,
                "buffers": {  # which source priced each buffer's accesses
                    name: dict(
                        zip(
                            ("read_pj_per_byte", "write_pj_per_byte", "area_mm2", "source"),
                            self.energy.sram_cost(size),
                            strict=True,
                        )
                    )
                    for name, size in self.buffer_bytes().items()
                },
            },
            "source": self.source,
        }


# (section, key, attribute, limit): the limits are nitihw.golden.limits.LIMITS's
_FIELDS = [
    ("array", "rows", "rows", "rows"),
    ("array", "cols", "cols", "cols"),
    ("array", "kmax", "kmax", "kmax"),
    ("precision", "operand_bits", "operand_bits", "operand_bits"),
    ("precision", "accumulator_bits", "accumulator_bits", "accumulator_bits"),
    ("buffers", "ifmap_kib", "ifmap_kib", "buffer_kib"),
    ("buffers", "filter_kib", "filter_kib", "buffer_kib"),
    ("buffers", "ofmap_kib", "ofmap_kib", "buffer_kib"),
    ("offchip", "bandwidth_bytes_per_cycle", "bandwidth", "bandwidth"),
    ("clock", "frequency_mhz", "frequency_mhz", "frequency_mhz"),
]


def for_profile(acc: Accelerator, profile: str) -> Accelerator:
    """The accelerator a training method runs on: DFP16 on a 16-bit datapath (its operands),
    every other method on ``acc`` as it is."""
    if profile != "dfp16":
        return acc
    from nitihw.golden.dfp16 import DFP_BITS

    return replace(acc, operand_bits=DFP_BITS)


#: the clock "from place and route" (``[clock] frequency_mhz = "pnr"``, ``--clock pnr``)
PNR_CLOCK = "pnr"


def with_clock(acc: Accelerator, text: str) -> Accelerator:
    """``--clock``: a frequency in MHz, or ``pnr`` (from place and route)."""
    if text == PNR_CLOCK:
        return replace(acc, clock=PNR_CLOCK)
    try:
        mhz = check("frequency_mhz", float(text), "--clock")
    except ValueError as exc:
        if isinstance(exc, LimitError):
            raise ConfigError(str(exc)) from None
        raise ConfigError(f"--clock: expected MHz or {PNR_CLOCK}, got {text!r}") from None
    return replace(acc, frequency_mhz=mhz, clock="config")


def load_accelerator(path: str | Path | None = None, energy: str | None = None) -> Accelerator:
    """Read a config file (or the defaults), then ``energy`` (a table name or file) if given."""
    if path is None:
        acc = Accelerator()
        return replace(acc, energy=load_table(energy)) if energy else acc
    path = Path(path)
    doc = _read_toml(path, str(path))
    known = {s for s, *_ in _FIELDS} | {"energy"}
    for section, body in doc.items():
        if section not in known:
            raise ConfigError(
                f"{path}: unknown section [{section}]; expected one of {', '.join(sorted(known))}"
            )
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: {section} must be a table ([{section}])")
    values = {}
    for section, key, attr, limit in _FIELDS:
        body = doc.get(section, {})
        if (section, key) == ("clock", "frequency_mhz") and body.get(key) == PNR_CLOCK:
            values["clock"] = PNR_CLOCK
            continue
        if key in body:
            try:
                values[attr] = check(limit, body[key], f"{path}: {section}.{key}")
            except LimitError as exc:
                raise ConfigError(str(exc)) from None
    for section, body in doc.items():
        if section == "energy":
            continue
        allowed = {k for s, k, *_ in _FIELDS if s == section}
        for key in body:
            if key not in allowed:
                raise ConfigError(
                    f"{path}: unknown key {section}.{key}; expected one of "
                    f"{', '.join(sorted(allowed))}"
                )
    e = doc.get("energy", {})
    overrides = {}
    for key, v in e.items():
        if key == "table":
            continue
        if key not in TABLE_KEYS:
            raise ConfigError(
                f"{path}: unknown key energy.{key}; expected table or one of "
                f"{', '.join(TABLE_KEYS)}"
            )
        overrides[key] = _positive(v, f"{path}: energy.{key}")
    table_name = energy or e.get("table", DEFAULT_TABLE)
    if not isinstance(table_name, str):
        raise ConfigError(f"{path}: energy.table must be a string, got {table_name!r}")
    if "\x00" in table_name:
        raise ConfigError(f"{path}: energy.table {table_name!r} is not a file name (a NUL byte)")
    if not energy and isinstance(e.get("table"), str) and Path(table_name).suffix:
        table_name = str((path.parent / table_name).resolve())
    table = load_table(table_name, overrides, where=f"{path}: energy.table: ")
    return Accelerator(**values, energy=table, source=str(path))
