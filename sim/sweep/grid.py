"""The grid of a co-design sweep: GRID.toml's axes, checked before anything runs, and the
points they span.

A grid file::

    compute = ["estimate", "area"]  # what each point computes (see POINT_KINDS)
    energy = "horowitz-45nm"        # energy table: a shipped name or a .toml path (optional)
    train_samples = 60000           # per-epoch totals (optional; default: the model's dataset)

    [axes]                          # every axis optional; a missing one keeps the default
    model = ["lenet", "mlp-mnist"]  # or topology = ["net.csv"] (paths relative to the grid)
    profile = ["niti", "wage"]
    batch = [64]
    rows = [8, 16, 32]              # a list,
    cols = {from = 8, to = 32, step = 8}    # an arithmetic range (8, 16, 24, 32),
    kmax = {from = 64, to = 1024, times = 2}  # a geometric one (64, 128, ..., 1024),
    ifmap_kib = 64                  # or one value
    filter_kib = [32, 64]
    ofmap_kib = [256]
    bandwidth = [8, 16]             # off-chip bytes per cycle
    frequency_mhz = [500]
    operand_bits = [8, 16]
    accumulator_bits = [32]

Every value is checked against :data:`nitihw.golden.limits.LIMITS` (the limits of ``nitihw
estimate`` and the accelerator TOML); a bad one is a :class:`GridError` naming the file, the
key and the value. The points are the Cartesian product of the axes, in the order the axes
are listed in :data:`AXES`; each has a stable id, the hash of its settings, so a rerun finds
the points it already finished.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from nitihw.golden.limits import LIMITS

#: what a point can compute
POINT_KINDS = ("estimate", "area", "train", "rtl")
#: the ``[train]`` table of a grid that trains: key -> (limit key or choices, default)
TRAIN_KEYS: dict[str, tuple] = {
    "dataset": (None, "digits"),
    "epochs": ("epochs", 1),
    "seed": ("seed", 0),
    "overflow": (("wrap", "error"), "wrap"),
}
#: the ``[rtl]`` table of a grid that checks RTL: key -> (limit key or choices, default)
RTL_KEYS: dict[str, tuple] = {
    "simulator": (("verilator", "icarus"), "verilator"),
    "seed": ("seed", 0),
}
#: axis -> (limit key or None, the default value)
AXES: dict[str, tuple[str | None, object]] = {
    "model": (None, "lenet"),
    "topology": (None, None),
    "profile": (None, "niti"),
    "batch": ("batch", 64),
    "rows": ("rows", 8),
    "cols": ("cols", 8),
    "kmax": ("kmax", 256),
    "ifmap_kib": ("buffer_kib", 64.0),
    "filter_kib": ("buffer_kib", 64.0),
    "ofmap_kib": ("buffer_kib", 256.0),
    "bandwidth": ("bandwidth", 16.0),
    "frequency_mhz": ("frequency_mhz", 500.0),
    "operand_bits": ("op_bits", 8),
    "accumulator_bits": ("acc_bits", 32),
}
TOP_KEYS = ("compute", "energy", "train_samples", "train", "rtl", "axes")
MAX_POINTS = 1_000_000


class GridError(ValueError):
    """A grid file that cannot be swept: the message names the file, the key and the value."""


@dataclass
class Grid:
    path: Path
    compute: tuple[str, ...]
    axes: dict[str, list]  # every axis of AXES, with its values
    energy: str | None = None
    train_samples: int | None = None
    points: list[dict] = field(default_factory=list)
    train: dict = field(default_factory=dict)
    rtl: dict = field(default_factory=dict)

    def settings(self) -> dict:
        """What every point shares (handed to each Dask task)."""
        return {
            "energy": self.energy,
            "train_samples": self.train_samples,
            "train": self.train,
            "rtl": self.rtl,
        }


def point_id(point: dict) -> str:
    """A point's stable id: the hash of its settings."""
    return hashlib.sha256(json.dumps(point, sort_keys=True).encode()).hexdigest()[:16]


def _values(path: Path, key: str, spec) -> list:
    where = f"{path}: axes.{key}"
    if isinstance(spec, dict):
        unknown = set(spec) - {"from", "to", "step", "times"}
        if unknown or "from" not in spec or "to" not in spec:
            raise GridError(
                f"{where}: a range is {{from = A, to = B, step = S}} or "
                f"{{from = A, to = B, times = T}}, got {spec!r}"
            )
        lo, hi = spec["from"], spec["to"]
        step, times = spec.get("step"), spec.get("times")
        for name, v in (("from", lo), ("to", hi), ("step", step), ("times", times)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise GridError(f"{where}.{name} must be a number, got {v!r}")
        if (step is None) == (times is None):
            raise GridError(f"{where}: give one of step or times, got {spec!r}")
        if hi < lo:
            raise GridError(f"{where}: to ({hi!r}) is below from ({lo!r})")
        out, v = [], lo
        if (step is not None and step <= 0) or (times is not None and times <= 1):
            raise GridError(f"{where}: step must be > 0 and times > 1, got {spec!r}")
        while v <= hi and len(out) <= MAX_POINTS:
            out.append(v)
            v = v + step if step is not None else v * times
        return out
    values = spec if isinstance(spec, list) else [spec]
    if not values:
        raise GridError(f"{where}: an empty list")
    return values


def _check_value(path: Path, key: str, i: int, value, base: Path):
    where = f"{path}: axes.{key}[{i}]"
    limit, _default = AXES[key]
    if limit is not None:
        if isinstance(value, float) and value.is_integer() and LIMITS[limit].kind is int:
            value = int(value)
        if not LIMITS[limit].ok(value):
            raise GridError(f"{where} must be {LIMITS[limit].describe()}, got {value!r}")
        return LIMITS[limit].kind(value)
    if not isinstance(value, str):
        raise GridError(f"{where} must be a string, got {value!r}")
    if key == "model":
        from nitihw.golden.models import MODELS

        if value not in MODELS:
            raise GridError(f"{where}: unknown model {value!r}; choose from {sorted(MODELS)}")
    elif key == "profile":
        from nitihw.sim.workload import PROFILES

        if value not in PROFILES:
            raise GridError(f"{where}: unknown profile {value!r}; choose from {list(PROFILES)}")
    elif key == "topology":
        topo = (base / value).resolve()
        if not topo.is_file():
            raise GridError(f"{where}: no topology file {topo}")
        return str(topo)
    return value


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file, and expand its points."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise GridError(f"{path}: cannot read the grid ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise GridError(
            f"{path}: not a text file (byte at offset {exc.start} is not UTF-8)"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise GridError(f"{path}: not valid TOML ({' '.join(str(exc).split())})") from None
    for key in doc:
        if key not in TOP_KEYS:
            raise GridError(f"{path}: unknown key {key!r}; expected one of {', '.join(TOP_KEYS)}")
    compute = doc.get("compute", ["estimate"])
    compute = compute if isinstance(compute, list) else [compute]
    for c in compute:
        if c not in POINT_KINDS:
            raise GridError(
                f"{path}: compute {c!r} is not a point kind; choose from {', '.join(POINT_KINDS)}"
            )
    energy = doc.get("energy")
    if energy is not None and not isinstance(energy, str):
        raise GridError(f"{path}: energy must be a table name or a .toml path, got {energy!r}")
    if energy is not None and Path(energy).suffix:
        energy = str((path.parent / energy).resolve())
    samples = doc.get("train_samples")
    if samples is not None and not LIMITS["train_samples"].ok(samples):
        raise GridError(
            f"{path}: train_samples must be {LIMITS['train_samples'].describe()}, got {samples!r}"
        )
    raw = doc.get("axes", {})
    if not isinstance(raw, dict):
        raise GridError(f"{path}: axes must be a table ([axes])")
    for key in raw:
        if key not in AXES:
            raise GridError(f"{path}: unknown axis {key!r}; expected one of {', '.join(AXES)}")
    if "model" in raw and "topology" in raw:
        raise GridError(f"{path}: give axes.model or axes.topology, not both")
    axes = {}
    for key, (_limit, default) in AXES.items():
        if key in raw:
            values = [_check_value(path, key, i, v, path.parent) for i, v in
                      enumerate(_values(path, key, raw[key]))]  # fmt: skip
            axes[key] = list(dict.fromkeys(values))  # each value once, in order
        else:
            axes[key] = [default]
    if "topology" in raw:
        axes["model"] = [None]
    n = 1
    for values in axes.values():
        n *= len(values)
    if n > MAX_POINTS:
        raise GridError(f"{path}: the axes span {n:,} points; at most {MAX_POINTS:,}")
    points = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    train = _table(path, "train", TRAIN_KEYS, doc.get("train"), "train" in compute)
    rtl = _table(path, "rtl", RTL_KEYS, doc.get("rtl"), "rtl" in compute)
    return Grid(path, tuple(compute), axes, energy, samples, points, train, rtl)


def _table(path: Path, name: str, keys: dict, raw, needed: bool) -> dict:
    """The ``[train]`` or ``[rtl]`` table: every key of ``keys`` checked, defaults filled in."""
    if raw is None:
        raw = {}
    elif not needed:
        raise GridError(f"{path}: a [{name}] table, but compute has no {name!r}")
    if not isinstance(raw, dict):
        raise GridError(f"{path}: {name} must be a table ([{name}])")
    for key in raw:
        if key not in keys:
            raise GridError(f"{path}: unknown key {name}.{key}; expected one of {', '.join(keys)}")
    out = {}
    for key, (rule, default) in keys.items():
        value = raw.get(key, default)
        where = f"{path}: {name}.{key}"
        if isinstance(rule, str) and not LIMITS[rule].ok(value):
            raise GridError(f"{where} must be {LIMITS[rule].describe()}, got {value!r}")
        if isinstance(rule, tuple) and value not in rule:
            raise GridError(f"{where} must be {' or '.join(rule)}, got {value!r}")
        if rule is None and not isinstance(value, str):
            raise GridError(f"{where} must be a string, got {value!r}")
        out[key] = value
    return out
