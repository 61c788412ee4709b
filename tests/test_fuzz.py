"""Seeded fuzzing of the file readers: IDX, CIFAR-10 pickle batches, checkpoints, topology CSVs,
the accelerator TOML and energy tables.

The property, for every mutated input: the reader succeeds, or raises its own error class
(DatasetError, CheckpointError, WorkloadError, ConfigError) with a message of one line that
names the file. Any other exception fails, and so does a call over CALL_SECONDS or a checkpoint
that loads into a fresh network anything but exactly the state that was saved.

Each input is a valid seed file put through one or two random mutations: byte-level ones for
every format (truncation, bit and byte flips, insertion, deletion, duplication and replacement
of a span), token- and line-level ones for the text formats, object-level ones for the CIFAR
pickle, and for gzipped IDX files mutations of the raw bytes before compressing as well as of
the compressed ones. One seeded generator per reader makes the inputs; a failure names the
reader, its seed, the input's index and the mutations, and keeps the input under tmp_path.
The default run makes FAST_COUNT inputs per reader; ``-m slow`` makes SLOW_COUNT each, from
other seeds. CRAFTED holds inputs made by hand to break a reader (each once did), and the CLI
tests check that damaged files reach the user as one line, without a traceback.

The checkpoint's semantics are fuzzed apart (``test_checkpoint_state_semantics``): a real
checkpoint's state, identity, history and arrays mutated as values and signed again, so that
only the checks of sense can catch them; refused exactly when this file's own oracle
(``senseless``) says no run can have written it, else loaded exactly as written.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import io
import json
import math
import pickle
import re
import shutil
import signal
import struct
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from nitihw.golden.backend import NumpyBackend
from nitihw.golden.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    checksum,
    manifest,
)
from nitihw.golden.datasets import DatasetError, read_cifar_batch, read_idx
from nitihw.golden.models import get_model_spec
from nitihw.golden.network import build_network
from nitihw.golden.profiles import get_profile
from nitihw.golden.train import (
    MuSchedule,
    RunState,
    TrainConfig,
    load_checkpoint,
    save_checkpoint,
    train,
)
from nitihw.sim.command.cli import main
from nitihw.sim.model.accelerator import (
    TABLE_KEYS,
    TABLES,
    ConfigError,
    load_accelerator,
    load_table,
)
from nitihw.sim.model.workload import CONV_HEADER, GEMM_HEADER, WorkloadError, topology_workload

# numpy reports some corruption only when an array is freed, as an "unraisable" exception
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")

FAST_COUNT = 200
SLOW_COUNT = 10_000
CALL_SECONDS = 5.0
MAX_REPORTED = 5  # failures listed before a reader's run stops


# ---- mutations ----------------------------------------------------------------------------------
def _span(rng, n: int) -> tuple[int, int]:
    """A random ``[start, end)`` of ``n > 0`` bytes: mostly short, sometimes up to the end."""
    start = int(rng.integers(0, n))
    longest = n - start
    top = min(longest, 16) if rng.random() < 0.7 else longest
    return start, start + int(rng.integers(1, top + 1))


def _random_bytes(rng, n: int) -> bytes:
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


def truncate(rng, data: bytes) -> bytes:
    return b"" if rng.random() < 0.05 else data[: int(rng.integers(0, len(data)))]


def flip_bits(rng, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        out[int(rng.integers(0, len(out)))] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def set_bytes(rng, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        out[int(rng.integers(0, len(out)))] = int(rng.integers(0, 256))
    return bytes(out)


def insert_bytes(rng, data: bytes) -> bytes:
    at = int(rng.integers(0, len(data) + 1))
    return data[:at] + _random_bytes(rng, int(rng.integers(1, 17))) + data[at:]


def delete_span(rng, data: bytes) -> bytes:
    a, b = _span(rng, len(data))
    return data[:a] + data[b:]


def duplicate_span(rng, data: bytes) -> bytes:
    a, b = _span(rng, len(data))
    at = int(rng.integers(0, len(data) + 1))
    return data[:at] + data[a:b] + data[at:]


def replace_span(rng, data: bytes) -> bytes:
    a, b = _span(rng, len(data))
    return data[:a] + _random_bytes(rng, b - a) + data[b:]


BYTE_MUTATIONS = (
    truncate,
    flip_bits,
    set_bytes,
    insert_bytes,
    delete_span,
    duplicate_span,
    replace_span,
)

#: what a token of a text file is replaced with
REPLACEMENTS = (
    b"-1",
    b"0",
    b"1e309",
    b"nan",
    b"inf",
    b'"x"',
    b"true",
    b"[1]",
    b"99999999999999999999999",
    b"",
    "\u00e9".encode("latin-1"),  # one byte that is not UTF-8
    b"1.5",
    b"-0",
    b"0x1f",
    b"{}",
    b'"1"',
    b"1_0",
)
CSV_TOKEN = re.compile(rb"[^,\r\n]+")  # a cell, header cells included
TOML_TOKEN = re.compile(rb'"[^"\r\n]*"|[-+]?[0-9][0-9_.eE+-]*|[A-Za-z_][A-Za-z0-9_-]*')


def replace_token(pattern: re.Pattern):
    """A mutation: one random match of ``pattern`` (a value, a key, a cell) replaced by one of
    REPLACEMENTS."""

    def replace_token(rng, data: bytes) -> bytes:
        tokens = list(pattern.finditer(data))
        if not tokens:
            return data
        t = tokens[int(rng.integers(0, len(tokens)))]
        new = REPLACEMENTS[int(rng.integers(0, len(REPLACEMENTS)))]
        return data[: t.start()] + new + data[t.end() :]

    return replace_token


def swap_lines(rng, data: bytes) -> bytes:
    lines = data.split(b"\n")
    i, j = (int(x) for x in rng.integers(0, len(lines), 2))
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def duplicate_line(rng, data: bytes) -> bytes:
    lines = data.split(b"\n")
    i = int(rng.integers(0, len(lines)))
    lines.insert(int(rng.integers(0, len(lines) + 1)), lines[i])
    return b"\n".join(lines)


def delete_line(rng, data: bytes) -> bytes:
    lines = data.split(b"\n")
    del lines[int(rng.integers(0, len(lines)))]
    return b"\n".join(lines)


LINE_MUTATIONS = (swap_lines, duplicate_line, delete_line)


def mutate(rng, data: bytes, kinds) -> tuple[bytes, list[str]]:
    """One mutation of ``data`` (a second one a quarter of the time), and their names."""
    names = []
    for _ in range(1 + (rng.random() < 0.25)):
        if not data:  # nothing left to cut or flip: start again from random bytes
            data, kind = _random_bytes(rng, int(rng.integers(1, 33))), "random_bytes"
        else:
            kind = kinds[int(rng.integers(0, len(kinds)))]
            data = kind(rng, data)
            kind = kind.__name__
        names.append(kind)
    return data, names


# ---- the readers --------------------------------------------------------------------------------
@dataclass
class Case:
    """One mutated input: its bytes, the file name to give it, and how it was made."""

    data: bytes
    name: str
    how: list[str]
    extra: object = None


class Reader:
    """A reader under test: its valid seed files, mutated inputs made from them, how to read
    one and what to check when that succeeds. ``work``: the folder the inputs are read from."""

    error: type[Exception]

    def __init__(self, work: Path):
        self.work = work

    def originals(self) -> list[Case]:
        """The seed files unchanged: each must read, and pass :meth:`check`."""
        raise NotImplementedError

    def case(self, rng) -> Case:
        raise NotImplementedError

    def read(self, path: Path, case: Case):
        raise NotImplementedError

    def check(self, result, case: Case) -> str | None:
        """What is wrong with a successful read (None: nothing)."""
        return None


def idx_bytes(a: np.ndarray) -> bytes:
    dims = b"".join(d.to_bytes(4, "big") for d in a.shape)
    return bytes([0, 0, 0x08, a.ndim]) + dims + a.astype(np.uint8).tobytes()


class Idx(Reader):
    """``read_idx``: images (3 dimensions) and labels (1), raw and gzipped."""

    error = DatasetError

    def __init__(self, work):
        super().__init__(work)
        rng = np.random.default_rng(0)
        self.seeds = [
            (idx_bytes(rng.integers(0, 256, (3, 5, 4))), 3, "train-images-idx3-ubyte"),
            (idx_bytes(rng.integers(0, 10, 7)), 1, "train-labels-idx1-ubyte"),
        ]

    def originals(self):
        return [Case(raw, name, [], ndim) for raw, ndim, name in self.seeds] + [
            Case(gzip.compress(raw, mtime=0), name + ".gz", [], ndim)
            for raw, ndim, name in self.seeds
        ]

    def case(self, rng):
        raw, ndim, name = self.seeds[int(rng.integers(0, len(self.seeds)))]
        way = int(rng.integers(0, 3))
        if way == 0:  # raw
            data, how = mutate(rng, raw, BYTE_MUTATIONS)
        elif way == 1:  # the raw bytes, then gzip
            data, how = mutate(rng, raw, BYTE_MUTATIONS)
            data, how, name = gzip.compress(data, mtime=0), ["raw:", *how], name + ".gz"
        else:  # gzip, then the compressed bytes
            data, how = mutate(rng, gzip.compress(raw, mtime=0), BYTE_MUTATIONS)
            how, name = ["gzip:", *how], name + ".gz"
        return Case(data, name, how, ndim)

    def read(self, path, case):
        return read_idx(path, case.extra)

    def check(self, result, case):
        if not (isinstance(result, np.ndarray) and result.dtype == np.uint8):
            return f"returned {type(result).__name__} {getattr(result, 'dtype', '')}"
        if result.ndim != case.extra:
            return f"returned {result.ndim} dimensions for ndim={case.extra}"
        return None


class Py2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle wrote CIFAR-10's batches (protocol 2, every ``str`` and
    ``bytes`` a byte string: SHORT_BINSTRING / BINSTRING, read back as bytes with
    ``encoding="bytes"``). Python 3's own protocol 2 writes bytes as ``_codecs.encode`` calls."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_byte_string(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_byte_string
    dispatch[str] = save_byte_string


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_pickle(rng, obj) -> tuple[bytes, str]:
    """CIFAR's own pickle format mostly; now and then Python 3's protocol 4."""
    if rng.random() < 0.8:
        return py2_pickle(obj), "py2-protocol-2"
    return pickle.dumps(obj, protocol=4), "protocol-4"


def _cifar_seed() -> dict:
    rng = np.random.default_rng(0)
    return {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [int(v) for v in rng.integers(0, 10, 4)],
        b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
        b"filenames": [b"a.png", b"b.png", b"c.png", b"d.png"],
    }


def _pick(rng, options):
    return options[int(rng.integers(0, len(options)))]


def structure_mutation(rng, obj: dict) -> tuple[object, str]:
    """A CIFAR batch object made wrong before pickling, and what was done."""
    obj = dict(obj)
    obj[b"labels"] = list(obj[b"labels"])
    data, labels = obj[b"data"], obj[b"labels"]
    kind = int(rng.integers(0, 9))
    if kind == 0:
        dtype = _pick(rng, [np.int8, np.int16, np.uint16, np.int64, np.float32, np.float64, bool])
        obj[b"data"] = data.astype(dtype)
        return obj, f"data dtype {np.dtype(dtype)}"
    if kind == 1:
        shapes = {
            "flat": data.reshape(-1),
            "NCHW": data.reshape(-1, 3, 32, 32),
            "3071 columns": data[:, :-1],
            "0 rows": data[:0],
            "3-d": data[None],
            "transposed": data.T,
        }
        what = _pick(rng, sorted(shapes))
        obj[b"data"] = shapes[what]
        return obj, f"data shape {what}"
    if kind == 2:
        key = _pick(rng, [b"data", b"labels"])
        del obj[key]
        return obj, f"no {key!r}"
    if kind == 3:
        return {k.decode(): v for k, v in obj.items()}, "str keys"
    if kind == 4:
        bad = _pick(rng, [-1, 10, 255, 2**31, 2**63, 2**64, -(2**63) - 1, 3.5, "3", None, b"1"])
        labels[int(rng.integers(0, len(labels)))] = bad
        return obj, f"a label {bad!r}"
    if kind == 5:
        obj[b"labels"] = [*labels, 0] if rng.random() < 0.5 else labels[:-1]
        return obj, f"{len(obj[b'labels'])} labels"
    if kind == 6:
        options = [
            np.array(labels, np.uint8),
            np.array(labels, np.float32),
            np.array(labels, bool),
            tuple(labels),
            {},
            b"\x00\x01\x02\x03",
            "0123",
            None,
            7,
            [[v] for v in labels],
        ]
        i = int(rng.integers(0, len(options)))
        obj[b"labels"] = options[i]
        return obj, f"labels as {type(options[i]).__name__} #{i}"
    if kind == 7:
        options = [data.tolist(), data.tobytes(), None, [[1, 2], [3]], data.astype(object)]
        i = int(rng.integers(0, len(options)))
        obj[b"data"] = options[i]
        return obj, f"data as {type(options[i]).__name__} #{i}"
    options = [list(obj.values()), tuple(obj.items()), None, 3, b"data", data, "batch"]
    i = int(rng.integers(0, len(options)))
    return options[i], f"not a dict: {type(options[i]).__name__} #{i}"


class Cifar(Reader):
    """``read_cifar_batch``: CIFAR-10's batch dict, pickled as the real files are."""

    error = DatasetError

    def __init__(self, work):
        super().__init__(work)
        self.seed = _cifar_seed()

    def originals(self):
        return [
            Case(py2_pickle(self.seed), "data_batch_1", [], self.seed),
            Case(pickle.dumps(self.seed, protocol=4), "data_batch_1", [], self.seed),
        ]

    def case(self, rng):
        obj, how = self.seed, []
        structured = rng.random() < 0.5
        if structured:
            obj, what = structure_mutation(rng, obj)
            how.append(what)
        data, protocol = cifar_pickle(rng, obj)
        how.append(protocol)
        if structured and rng.random() < 0.7:
            # only the object was changed: what it reads must be exactly the object pickled
            return Case(data, "data_batch_1", how, obj)
        data, names = mutate(rng, data, BYTE_MUTATIONS)
        return Case(data, "data_batch_1", how + names)

    def read(self, path, case):
        return read_cifar_batch(path)

    def check(self, result, case):
        x, y = result
        if x.dtype != np.uint8 or x.shape[1:] != (32, 32, 3):
            return f"images {x.dtype}{x.shape}"
        if y.dtype != np.int64 or y.shape != (len(x),):
            return f"labels {y.dtype}{y.shape} for {len(x)} images"
        if y.size and not (0 <= y.min() and y.max() <= 9):
            return f"labels {y.tolist()}"
        if case.extra is None:
            return None
        # the batch must be the one pickled (str keys are bytes keys in a Python 2 pickle)
        obj = {k.encode() if isinstance(k, str) else k: v for k, v in case.extra.items()}
        try:
            want = [w.item() if isinstance(w, np.generic) else w for w in obj[b"labels"]]
        except TypeError:
            return f"labels {y.tolist()} read from {obj[b'labels']!r}"
        got = y.tolist()
        if got != want or [type(v) for v in got] != [type(w) for w in want]:
            return f"labels {got} read from {want!r}"
        if not np.array_equal(x.transpose(0, 3, 1, 2).reshape(len(x), -1), obj[b"data"]):
            return "images differ from the pickled data"
        return None


CFG = TrainConfig(model="mlp-digits", dataset="digits")


def fresh_network():
    net = build_network(get_model_spec(CFG.model), get_profile(CFG.profile), CFG.seed)
    net.to_backend(NumpyBackend(CFG.accumulator_bits, CFG.overflow))
    return net


class Checkpoint(Reader):
    """``load_checkpoint`` into a fresh network: it may only load exactly what was saved."""

    error = CheckpointError

    def __init__(self, work):
        super().__init__(work)
        net = fresh_network()
        rng = np.random.default_rng(0)
        # weights a fresh network does not have, so a load that changes nothing shows
        net.load_state(
            {k: rng.permutation(a.reshape(-1)).reshape(a.shape) for k, a in net.state().items()}
        )
        # a state train() can have written (the checkpoint is checked for sense): 3 steps into
        # the second epoch of 23 steps (1437 images at batch 64)
        self.state = RunState(
            step=26,
            epoch_correct=150,
            epoch_seen=192,
            seconds=12.5,
            samples=1437 + 192,
            overflow_events=0,
            history=[
                {"epoch": 0, "train_accuracy": 0.5, "test_accuracy": 0.75, "mu": 3, "seconds": 1.5}
            ],
        )
        self.arrays = {k: a.copy() for k, a in net.state().items()}
        assert any(
            not np.array_equal(a, fresh_network().state()[k]) for k, a in self.arrays.items()
        )
        path = work / "seed" / "checkpoint.npz"
        save_checkpoint(path, CFG, net, self.state)
        self.seed = path.read_bytes()

    def originals(self):
        return [Case(self.seed, "checkpoint.npz", [])]

    def case(self, rng):
        data, how = mutate(rng, self.seed, BYTE_MUTATIONS)
        return Case(data, "checkpoint.npz", how)

    def read(self, path, case):
        net = fresh_network()
        state = load_checkpoint(path, CFG, net)
        return state, net.state()

    def check(self, result, case):
        state, arrays = result
        if asdict(state) != asdict(self.state):
            return f"loaded {state}, saved {self.state}"
        if set(arrays) != set(self.arrays):
            return f"loaded arrays {sorted(arrays)}, saved {sorted(self.arrays)}"
        for k, a in self.arrays.items():
            if arrays[k].dtype != a.dtype or not np.array_equal(arrays[k], a):
                return f"array {k!r} loaded differs from the one saved"
        return None


CONV_CSV = (
    ", ".join(CONV_HEADER) + ",\n"
    "conv1, 28, 28, 5, 5, 1, 20, 1,\n"
    "conv2, 12, 12, 5, 5, 20, 50, 1, 1,\n"
    "conv3, 8, 8, 3, 3, 50, 64, 2,\n"
)
GEMM_CSV = ", ".join(GEMM_HEADER) + ",\nfc1, 1, 500, 800,\nfc2, 1, 10, 500,\n"
TEXT_MUTATIONS_CSV = (*BYTE_MUTATIONS, *[replace_token(CSV_TOKEN)] * 4, *LINE_MUTATIONS)
TEXT_MUTATIONS_TOML = (*BYTE_MUTATIONS, *[replace_token(TOML_TOKEN)] * 4, *LINE_MUTATIONS)


class Topology(Reader):
    """``topology_workload``: SCALE-Sim conv and GEMM CSVs (one with a BOM and CRLFs)."""

    error = WorkloadError

    def __init__(self, work):
        super().__init__(work)
        self.seeds = [
            CONV_CSV.encode(),
            GEMM_CSV.encode(),
            ("\ufeff" + GEMM_CSV.replace("\n", "\r\n")).encode(),
        ]

    def originals(self):
        return [Case(seed, "topology.csv", [], 1) for seed in self.seeds]

    def case(self, rng):
        data, how = mutate(rng, _pick(rng, self.seeds), TEXT_MUTATIONS_CSV)
        return Case(data, "topology.csv", how, int(_pick(rng, [1, 8])))

    def read(self, path, case):
        return topology_workload(path, case.extra)

    def check(self, result, case):
        for lay in result:
            dims = [*lay.forward, *lay.gradient, *(lay.backward or ()), lay.weights]
            if not all(isinstance(d, int) and d >= 1 for d in dims):
                return f"layer {lay}"
        return None


def accelerator_toml(table: str) -> str:
    overrides = "".join(f"{k} = {0.5 + i / 4}\n" for i, k in enumerate(TABLE_KEYS))
    return (
        "[array]\nrows = 8\ncols = 16\nkmax = 256\n"
        "[precision]\noperand_bits = 8\naccumulator_bits = 32\n"
        "[buffers]\nifmap_kib = 64\nfilter_kib = 64.5\nofmap_kib = 256\n"
        "[offchip]\nbandwidth_bytes_per_cycle = 16\n"
        "[clock]\nfrequency_mhz = 500.0\n"
        f'[energy]\ntable = "{table}"\n{overrides}'
    )


class AcceleratorToml(Reader):
    """``load_accelerator``: every key set; the table by name, or by a path beside the file."""

    error = ConfigError

    def __init__(self, work):
        super().__init__(work)
        shutil.copy(TABLES / "horowitz-45nm.toml", work / "e.toml")
        self.seeds = [
            accelerator_toml("horowitz-45nm").encode(),
            accelerator_toml("e.toml").encode(),
        ]

    def originals(self):
        return [Case(seed, "accelerator.toml", []) for seed in self.seeds]

    def case(self, rng):
        data, how = mutate(rng, _pick(rng, self.seeds), TEXT_MUTATIONS_TOML)
        return Case(data, "accelerator.toml", how)

    def read(self, path, case):
        return load_accelerator(path)


class EnergyTable(Reader):
    """``load_table``: the shipped horowitz-45nm table, as a file."""

    error = ConfigError

    def __init__(self, work):
        super().__init__(work)
        self.seed = (TABLES / "horowitz-45nm.toml").read_bytes()

    def originals(self):
        return [Case(self.seed, "table.toml", [])]

    def case(self, rng):
        data, how = mutate(rng, self.seed, TEXT_MUTATIONS_TOML)
        return Case(data, "table.toml", how)

    def read(self, path, case):
        return load_table(path)


READERS = {
    "idx": Idx,
    "cifar": Cifar,
    "checkpoint": Checkpoint,
    "topology": Topology,
    "accelerator": AcceleratorToml,
    "energy-table": EnergyTable,
}


# ---- the property -------------------------------------------------------------------------------
class _Timeout(BaseException):  # not an Exception: a reader's `except Exception` must not eat it
    pass


@contextlib.contextmanager
def deadline(seconds: float):
    """Interrupt the block after ``seconds`` (SIGALRM; where there is none, time it only)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise _Timeout

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def violation(reader: Reader, path: Path, case: Case, must_read: bool = False) -> str | None:
    """What is wrong with reading ``path`` (None: the property holds). ``must_read``: a valid
    file, which the reader may not refuse."""
    start = time.perf_counter()
    try:
        with deadline(CALL_SECONDS):
            result = reader.read(path, case)
    except _Timeout:
        return f"still reading after {CALL_SECONDS} s"
    except reader.error as exc:
        msg, problem = str(exc), None
        if must_read:
            problem = f"refused a valid file: {msg}"
        elif "\n" in msg:
            problem = f"{type(exc).__name__} of more than one line: {msg!r}"
        elif str(path) not in msg:
            problem = f"{type(exc).__name__} that does not name the file: {msg!r}"
    except Exception as exc:
        where = "".join(traceback.format_tb(exc.__traceback__)[-2:])
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
        return f"unexpected {kind}: {exc}\n{where}"
    else:
        problem = reader.check(result, case)
        if problem:
            problem = "silent success on bad data: " + problem
    elapsed = time.perf_counter() - start
    if problem is None and elapsed > CALL_SECONDS:
        problem = f"took {elapsed:.1f} s"
    return problem


def fuzz(name: str, count: int, seed: int, folder: Path) -> None:
    """Read ``count`` mutated inputs with reader ``name``; fail listing the first violations."""
    work = folder / "inputs"
    work.mkdir()
    reader = READERS[name](work)
    for case in reader.originals():  # else the fuzzing would only ever reach the first check
        path = work / case.name
        path.write_bytes(case.data)
        assert violation(reader, path, case, must_read=True) is None, f"{name}: {case.name}"
    rng = np.random.default_rng(seed)
    failures = []
    for i in range(count):
        case = reader.case(rng)
        path = work / case.name
        path.write_bytes(case.data)
        problem = violation(reader, path, case)
        if problem:
            kept = folder / "failures" / f"{i}-{case.name}"
            kept.parent.mkdir(exist_ok=True)
            kept.write_bytes(case.data)
            failures.append(
                f"{name} seed {seed} input #{i} ({' '.join(case.how)}; {len(case.data)} bytes; "
                f"kept as {kept}): {problem}"
            )
            if len(failures) == MAX_REPORTED:
                break
    assert not failures, "\n".join(failures)


def fast_and_slow(names, fast: int, slow: int, seed: int) -> list:
    """``(name, count, seed)`` parameters: ``fast`` cases per name in the default run (seeds
    from ``seed``), ``slow`` ones under ``-m slow`` (seeds from ``seed + 100``)."""
    return [
        pytest.param(name, fast, seed + i, id=f"{name}-{fast}") for i, name in enumerate(names)
    ] + [
        pytest.param(name, slow, seed + 100 + i, id=f"{name}-{slow}", marks=pytest.mark.slow)
        for i, name in enumerate(names)
    ]


FUZZ_RUNS = fast_and_slow(READERS, FAST_COUNT, SLOW_COUNT, 100)


@pytest.mark.parametrize("name,count,seed", FUZZ_RUNS)
def test_reader_survives_mutated_files(name, count, seed, tmp_path):
    fuzz(name, count, seed, tmp_path)


# ---- inputs made to break a reader ------------------------------------------------------------
class Reduce:
    """Pickles as ``callable(*args)`` then ``__setstate__(state)``: any object numpy may build."""

    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def numpy_array_state(state):
    from numpy._core.multiarray import _reconstruct

    return Reduce(_reconstruct, (np.ndarray, (0,), b"b"), state)


def with_meta(seed: bytes, edit) -> bytes:
    """A checkpoint whose manifest JSON is ``edit(text)``, re-zipped (so the CRCs hold)."""
    with np.load(io.BytesIO(seed)) as z:
        arrays = {k: z[k] for k in z.files}
    text = edit(arrays.pop("meta").tobytes().decode())
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(text.encode(), np.uint8), **arrays)
    return buf.getvalue()


def _meta(edit):
    return lambda reader: with_meta(reader.seed, edit)


# an object array's state with a list shorter than its shape: numpy reads past the list
SHORT_OBJECTS = (1, (4, 3072), np.dtype("O"), False, [1] * 10)
# a structured dtype with an object field whose state says it holds no objects: numpy would take
# the raw bytes for pointers
FAKE_PLAIN = Reduce(
    np.dtype, ("V8", False, True), (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0)
)
# a copy of the uint8 dtype whose state gives it the flags of an object dtype
UINT8_OBJECTS = Reduce(np.dtype, ("u1", True, True), (3, "|", None, None, None, -1, -1, 63))
# a dtype state one item short (the fields left out): numpy takes the -1 after it for them
SHORT_DTYPE_STATE = Reduce(np.dtype, ("u1", False, True), (3, "|", None, -1, -1, 0))
HUGE_INT = "9" * 5000  # past Python's 4300-digit limit of int(str)

#: name: (reader, the file's bytes, or a function of the reader that makes them)
CRAFTED = {
    "idx-dims-product-wraps-in-int64": (  # 2**24 * 2**24 * 2**16 is 0 in int64
        "idx",
        bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (1 << 24, 1 << 24, 1 << 16)),
    ),
    "cifar-object-array-short-list": (
        "cifar",
        py2_pickle({b"data": numpy_array_state(SHORT_OBJECTS), b"labels": [0] * 4}),
    ),
    "cifar-dtype-hiding-objects": (
        "cifar",
        py2_pickle(
            {
                b"data": np.zeros((1, 3072), np.uint8),
                b"labels": numpy_array_state((1, (1,), FAKE_PLAIN, False, b"abcdabcd")),
            }
        ),
    ),
    "cifar-uint8-with-object-flags": (
        "cifar",
        py2_pickle(
            {
                b"data": numpy_array_state((1, (1, 3072), UINT8_OBJECTS, False, [1] * 3072)),
                b"labels": [0],
            }
        ),
    ),
    "cifar-dtype-state-one-short": (
        "cifar",
        py2_pickle({b"data": SHORT_DTYPE_STATE, b"labels": [0]}),
    ),
    "checkpoint-json-nested-deep": ("checkpoint", _meta(lambda t: "[" * 100_000)),
    "checkpoint-json-5000-digit-int": (
        "checkpoint",
        _meta(lambda t: t.replace('"step": 26', f'"step": {HUGE_INT}')),
    ),
    "checkpoint-seconds-infinity": (
        "checkpoint",
        _meta(lambda t: t.replace('"seconds": 12.5', '"seconds": Infinity')),
    ),
    "accelerator-nested-deep": ("accelerator", b"[array]\nrows = " + b"[" * 100_000),
    "accelerator-5000-digit-int": ("accelerator", f"[array]\nrows = {HUGE_INT}\n".encode()),
    "accelerator-table-name-nul": ("accelerator", b'[energy]\ntable = "e\\u0000.toml"\n'),
    "accelerator-table-name-too-long": (
        "accelerator",
        b'[energy]\ntable = "' + b"e" * 5000 + b'"\n',
    ),
    "accelerator-table-file-missing": ("accelerator", b'[energy]\ntable = "missing.toml"\n'),
    "energy-table-nested-deep": (
        "energy-table",
        b"[pj]\nint8_add = " + b"{a=" * 5000 + b"1" + b"}" * 5000,
    ),
    "energy-table-5000-digit-int": ("energy-table", f"[pj]\nint8_add = {HUGE_INT}\n".encode()),
}


@pytest.mark.parametrize("what", CRAFTED)
def test_reader_refuses_crafted_file(what, tmp_path):
    name, data = CRAFTED[what]
    reader = READERS[name](tmp_path)
    data = data(reader) if callable(data) else data
    case = replace(reader.originals()[0], data=data, how=[what])
    path = tmp_path / case.name
    path.write_bytes(case.data)
    assert violation(reader, path, case) is None
    with pytest.raises(reader.error):
        reader.read(path, case)


# ---- through the command line -------------------------------------------------------------------
def assert_one_line_error(code: int, err: str, what: str) -> int:
    """Exit code 2 and one line "nitihw...: error" on stderr, or 0 (the input is still valid)."""
    assert "Traceback" not in err, f"{what}: {err}"
    assert code in (0, 2), f"{what}: exit code {code}: {err}"
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nitihw"), f"{what}: {err!r}"
    return code


def test_cli_reports_a_mutated_topology_in_one_line(tmp_path, capsys):
    rng = np.random.default_rng(300)
    path = tmp_path / "topology.csv"
    codes = []
    for i in range(6):
        data, how = mutate(
            rng, _pick(rng, [CONV_CSV.encode(), GEMM_CSV.encode()]), TEXT_MUTATIONS_CSV
        )
        path.write_bytes(data)
        code = main(
            ["estimate", "--topology", str(path), "--out", str(tmp_path / "out"), "--no-plots"]
        )
        err = capsys.readouterr().err
        codes.append(assert_one_line_error(code, err, f"input #{i} ({how}): {data!r}"))
    assert 2 in codes, codes


def test_cli_reports_a_mutated_config_in_one_line(tmp_path, capsys):
    rng = np.random.default_rng(301)
    shutil.copy(TABLES / "horowitz-45nm.toml", tmp_path / "e.toml")
    seeds = [accelerator_toml("horowitz-45nm").encode(), accelerator_toml("e.toml").encode()]
    path = tmp_path / "accelerator.toml"
    codes = []
    for i in range(6):
        data, how = mutate(rng, _pick(rng, seeds), TEXT_MUTATIONS_TOML)
        path.write_bytes(data)
        argv = ["estimate", "--model", "mlp-digits", "--config", str(path)]
        code = main([*argv, "--out", str(tmp_path / "out"), "--no-plots"])
        err = capsys.readouterr().err
        codes.append(assert_one_line_error(code, err, f"input #{i} ({how}): {data!r}"))
    assert 2 in codes, codes


def test_cli_reports_a_damaged_checkpoint_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    train = ["train", "--model", "mlp-digits", "--dataset", "digits", "--out", str(out)]
    assert main([*train, "--steps", "1"]) == 0
    capsys.readouterr()
    path = out / "checkpoint.npz"
    good = path.read_bytes()
    rng = np.random.default_rng(302)
    damages = {
        "truncated": good[: len(good) // 2],
        "bits flipped": flip_bits(rng, good),
        "bytes set": set_bytes(rng, good),
        "span replaced": replace_span(rng, good),
        "empty": b"",
        "random bytes": _random_bytes(rng, len(good)),
    }
    codes = []
    for what, data in damages.items():
        path.write_bytes(data)
        code = main([*train, "--resume", "--steps", "1"])
        codes.append(assert_one_line_error(code, capsys.readouterr().err, what))
    assert codes.count(2) >= 4, codes


# ---- checkpoint semantics: a recomputed checksum, contents that make no sense --------------------
# The readers above mutate bytes, and the checksum catches nearly all of it. Here a real
# checkpoint's run state, identity, history and arrays are mutated as values and the file is
# signed again (manifest and checksum recomputed), so only the checks of sense can tell. The
# oracle, `senseless`, is this file's own statement of what a run can have written; a mutant must
# be refused with a CheckpointError (one line, naming the file) exactly when it says so, and
# otherwise load exactly what was written. Any other exception fails.

#: the runs whose checkpoints are mutated: their settings, and the values each state array (by
#: name without its layer number) can hold, from the layers' arithmetic: b-bit NITI weights in
#: +-(2^(b-1) - 1), NITRO-D's int32 weights wrapping, its input statistics of int8 images, the
#: float twin's floats, any value (None: its arithmetic reaches inf and NaN)
SENSE_RUNS = {
    "niti-4bit": ({"operand_bits": 4}, {"w": (-7, 7)}),
    "nitro-d": (
        {"profile": "nitro-d"},
        {"w": (-(2**31), 2**31 - 1), "norm_mean": (-128, 127), "norm_mad": (1, 255)},
    ),
    "float32": ({"profile": "float32"}, {"w": None, "v": None}),
}
SENSE_FAST, SENSE_SLOW = 150, 5_000
STATE_FIELDS = ("step", "epoch_correct", "epoch_seen", "seconds", "samples", "overflow_events")
RECORD_REQUIRED = ("epoch", "train_accuracy", "test_accuracy")
MOST_STEPS = 2**40  # LIMITS["steps"]: no run takes more


@dataclass
class SenseSeed:
    cfg: TrainConfig
    identity: dict
    state: dict
    arrays: dict
    ranges: dict
    n: int  # the training set's size


def json_kind(x):
    return bool if isinstance(x, bool) else float if isinstance(x, float) else type(x)


def is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def replay(n: int, batch: int, steps: int) -> tuple[int, int, int]:
    """``(finished epochs, samples, epoch_seen)`` after ``steps`` steps of train()'s loop over
    ``n`` images: epochs of ``ceil(n / batch)`` batches, each ``batch`` images but the last."""
    per_epoch = -(-n // batch)
    finished, into = divmod(steps, per_epoch)
    this_epoch = min(into * batch, n)
    return finished, finished * n + this_epoch, this_epoch


def senseless(seed: SenseSeed, identity, state, arrays) -> str | None:
    """Why no run with ``seed.cfg``'s settings can have written this (None: one can).

    The identity is the run's (same keys, same JSON kinds and values). The state has exactly
    RunState's fields: counts (integers >= 0), seconds (a finite number >= 0), a history list;
    step at most 2^40; no overflow events under the "error" policy, at most int64's under
    "wrap". Some training set of n >= 1 images replays to the counters: with k records,
    n = (samples - epoch_seen) / k (k > 0) or any n > step * batch (k == 0), and train()'s loop
    over n images for `step` steps finishes k epochs with these samples and epoch_seen;
    epoch_correct <= epoch_seen. Record i is a dict with epoch i, accuracies in 0..1 (test's
    NaN allowed), mu (required unless the method is a float one) the schedule's at epoch i,
    optional seconds (finite, >= 0); no other keys; their seconds sum to at most the state's
    plus 1 ms each. The arrays have the fresh network's names, dtypes and shapes, and values
    in SENSE_RUNS's ranges."""
    cfg = seed.cfg
    mine = cfg.identity()
    if not isinstance(identity, dict) or set(identity) != set(mine):
        return "identity keys"
    for key, value in mine.items():
        if json_kind(value) is not json_kind(identity[key]) or value != identity[key]:
            return f"identity {key}"
    if not isinstance(state, dict) or set(state) != {*STATE_FIELDS, "history"}:
        return "state fields"
    for key in STATE_FIELDS:
        value = state[key]
        ok = is_number(value) and math.isfinite(value) and value >= 0
        if not (ok if key == "seconds" else is_count(value)):
            return f"state {key} {value!r}"
    history = state["history"]
    if not isinstance(history, list):
        return "history not a list"
    step, seen, samples = state["step"], state["epoch_seen"], state["samples"]
    if step > MOST_STEPS:
        return "step beyond any run"
    events = state["overflow_events"]
    if events > (0 if cfg.overflow == "error" else 2**63 - 1):
        return "overflow events"
    k = len(history)
    if k:
        n, part = divmod(samples - seen, k)
        if part or n < 1:
            return "no training set size fits"
    else:
        n = step * cfg.batch + 1
    if replay(n, cfg.batch, step) != (k, samples, seen):
        return f"counters do not replay (n {n})"
    if state["epoch_correct"] > seen:
        return "epoch_correct above epoch_seen"
    float_method = get_profile(cfg.profile).method == "float"
    schedule = MuSchedule(cfg.mu_text)
    for i, record in enumerate(history):
        if not isinstance(record, dict):
            return f"record {i} not a dict"
        keys = set(record)
        if not {*RECORD_REQUIRED, *(() if float_method else ("mu",))} <= keys:
            return f"record {i} misses keys"
        if not keys <= {*RECORD_REQUIRED, "mu", "seconds"}:
            return f"record {i} has other keys"
        if not is_count(record["epoch"]) or record["epoch"] != i:
            return f"record {i} epoch"
        for key in ("train_accuracy", "test_accuracy"):
            a = record[key]
            if not is_number(a) or not (0 <= a <= 1 or (key == "test_accuracy" and a != a)):
                return f"record {i} {key}"
        if "mu" in record:
            mu = record["mu"]
            if not isinstance(mu, int) or isinstance(mu, bool) or mu != schedule(i):
                return f"record {i} mu"
        if "seconds" in record:
            s = record["seconds"]
            if not (is_number(s) and math.isfinite(s) and s >= 0):
                return f"record {i} seconds"
    spent = math.fsum(r.get("seconds", 0) for r in history)
    if spent > state["seconds"] + 0.001 * k + 1e-9 * spent + 1e-6:
        return "records' seconds above the state's"
    fresh = fresh_sense_network(cfg).state()
    if set(arrays) != set(fresh):
        return "array names"
    for name, a in arrays.items():
        if a.dtype != fresh[name].dtype or a.shape != fresh[name].shape:
            return f"array {name} dtype/shape"
        lo_hi = seed.ranges[re.sub(r"\d+$", "", name)]
        if lo_hi is None:
            continue
        if a.size and not lo_hi[0] <= int(a.min()) <= int(a.max()) <= lo_hi[1]:
            return f"array {name} out of range"
    return None


def fresh_sense_network(cfg: TrainConfig):
    spec, profile = get_model_spec(cfg.model), get_profile(cfg.profile)
    net = build_network(spec, profile, cfg.seed, cfg.weight_bits, cfg.operand_bits)
    net.to_backend(NumpyBackend(cfg.accumulator_bits, cfg.overflow))
    return net


def signed(identity, state, arrays) -> bytes:
    """A version-2 checkpoint of these contents, manifest and checksum made for them."""
    step = state.get("step") if isinstance(state, dict) else None
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "identity": identity, "state": state}
    meta["manifest"] = manifest(arrays, step=step)
    meta["sha256"] = checksum(meta, arrays)
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    return buf.getvalue()


def _values(rng, v, batch):
    """Replacement values for a number ``v``: near it, far, the limits, other JSON kinds."""
    v = v if is_number(v) else 1
    pool = [-1, 0, 1, v - 1, v + 1, v + batch, v - batch, 2 * v, v * batch, 10**15]
    pool += [MOST_STEPS, MOST_STEPS + 1, 2**63, float(v), 0.5, True, None, str(v), [v]]
    pool += [float("nan"), float("inf"), -0.0]
    return pool[int(rng.integers(0, len(pool)))]


def _record(rng, seed, epoch):
    rec = {"epoch": epoch, "train_accuracy": float(rng.random()), "test_accuracy": rng.random()}
    if get_profile(seed.cfg.profile).method != "float":
        rec["mu"] = MuSchedule(seed.cfg.mu_text)(epoch)
    rec["seconds"] = round(float(rng.random()), 3)
    return rec


def m_counter(rng, seed, identity, state, arrays):
    key = STATE_FIELDS[int(rng.integers(0, len(STATE_FIELDS)))]
    state[key] = _values(rng, state[key], seed.cfg.batch)
    return f"state {key}={state[key]!r}"


def m_field(rng, seed, identity, state, arrays):
    if rng.random() < 0.5:
        key = [*STATE_FIELDS, "history"][int(rng.integers(0, len(STATE_FIELDS) + 1))]
        del state[key]
        return f"state without {key}"
    state["epoch"] = 1
    return "state with an epoch field"


def m_consistent(rng, seed, identity, state, arrays):
    """Counters and history of another point of a run over n (or a nearby n) images: valid."""
    batch = seed.cfg.batch
    n = seed.n if rng.random() < 0.6 else max(1, seed.n + int(rng.integers(-80, 81)))
    step = int(rng.integers(0, 3 * -(-n // batch) + 3))
    k, samples, seen = replay(n, batch, step)
    history = [_record(rng, seed, e) for e in range(k)]
    state.update(step=step, samples=samples, epoch_seen=seen, history=history)
    state["epoch_correct"] = int(rng.integers(0, seen + 2))  # seen + 1: one too many
    state["seconds"] = math.fsum(r["seconds"] for r in history) + float(rng.random())
    return f"consistent n={n} step={step} correct={state['epoch_correct']}"


TRACE = "Traceback (most recent call last):\n  ...\nValueError: boom"


def m_history(rng, seed, identity, state, arrays):
    h = state["history"]
    what = int(rng.integers(0, 9))
    i = int(rng.integers(0, len(h))) if h else 0
    rec = h[i] if h and isinstance(h[i], dict) else None  # a record to edit
    keys = [*RECORD_REQUIRED, "mu", "seconds"]
    key = keys[int(rng.integers(0, len(keys)))]
    if what == 0 and h:
        h.pop(i)
        return f"history drop {i}"
    if what == 1 and h:
        h.insert(i, copy.deepcopy(h[i]))
        return f"history duplicate {i}"
    if what == 3:
        h.append(_record(rng, seed, len(h)))
        return "history one more record"
    if what == 4 and h:
        h[i] = [None, 0, "x", 1.5, {}][int(rng.integers(0, 5))]
        return f"history[{i}] not a record"
    if what == 5 and rec is not None:
        rec.pop(key, None)
        return f"history[{i}] without {key}"
    if what == 6 and rec is not None:
        rec["loss"] = 0.1
        return f"history[{i}] with loss"
    if what >= 7 and rec is not None:
        rec[key] = _values(rng, rec.get(key, 0), 1) if rng.random() < 0.7 else rng.random()
        return f"history[{i}] {key}={rec[key]!r}"
    h.append(TRACE)
    return "history traceback"


def m_identity(rng, seed, identity, state, arrays):
    key = sorted(identity)[int(rng.integers(0, len(identity)))]
    what = int(rng.integers(0, 4))
    if what == 0:
        del identity[key]
        return f"identity without {key}"
    if what == 1:
        identity["threads"] = 4
        return "identity with threads"
    v = identity[key]
    if what == 2 and is_number(v):
        identity[key] = float(v) if isinstance(v, int) else int(v) if v == int(v) else v * 2
        return f"identity {key}={identity[key]!r}"
    identity[key] = _values(rng, v, 1)
    return f"identity {key}={identity[key]!r}"


def m_array(rng, seed, identity, state, arrays):
    name = sorted(arrays)[int(rng.integers(0, len(arrays)))]
    a = arrays[name]
    what = int(rng.integers(0, 10))
    if what == 0:
        del arrays[name]
        return f"array {name} dropped"
    if what == 1:
        with np.errstate(over="ignore"):  # 1e30 as float16 is inf: refused either way
            arrays[name] = a.astype(np.float64 if a.dtype.kind != "f" else np.float16)
        return f"array {name} as {arrays[name].dtype}"
    if what == 2:
        arrays[name] = a.reshape(-1)
        return f"array {name} flattened"
    if what == 3:
        arrays["w99"] = a.copy()
        return "array w99 added"
    lo_hi = seed.ranges[re.sub(r"\d+$", "", name)]
    if a.dtype.kind == "f":  # the float twin's, or cast by an earlier mutation
        options = [np.nan, np.inf, -np.inf, 1e30, -0.0, float(rng.normal())]
    else:
        info = np.iinfo(a.dtype)
        lo, hi = lo_hi
        options = [lo, hi, lo - 1, hi + 1, info.min, info.max, 0]
        options = [x for x in options if info.min <= x <= info.max]
    value = options[int(rng.integers(0, len(options)))]
    at = tuple(int(rng.integers(0, s)) for s in a.shape)
    with np.errstate(over="ignore"):
        a[at] = value
    return f"array {name}{list(at)}={value!r}"


SENSE_MUTATIONS = (
    m_counter,
    m_counter,
    m_field,
    m_consistent,
    m_consistent,
    m_history,
    m_history,
    m_identity,
    m_array,
    m_array,
)


@pytest.fixture(scope="module")
def sense_seeds(tmp_path_factory):
    from nitihw.golden.datasets import load_digits

    data = load_digits()
    seeds = {}
    for name, (settings, ranges) in SENSE_RUNS.items():
        out = tmp_path_factory.mktemp(name)
        cfg = TrainConfig(model="mlp-digits", dataset="digits", epochs=2, steps=26, **settings)
        train(cfg, data, out_dir=out)  # 3 steps into the second epoch
        with np.load(out / "checkpoint.npz") as z:
            meta = json.loads(z["meta"].tobytes())
            arrays = {k: z[k] for k in z.files if k != "meta"}
        n = len(data.train_y)
        seeds[name] = SenseSeed(cfg, meta["identity"], meta["state"], arrays, ranges, n)
    return seeds


def sense_problem(seed: SenseSeed, path: Path, identity, state, arrays) -> str | None:
    why = senseless(seed, identity, state, arrays)
    try:
        with deadline(CALL_SECONDS):
            net = fresh_sense_network(seed.cfg)
            loaded = load_checkpoint(path, seed.cfg, net)
    except _Timeout:
        return f"still loading after {CALL_SECONDS} s"
    except CheckpointError as exc:
        msg = str(exc)
        if "\n" in msg or str(path) not in msg:
            return f"a CheckpointError of more than one line or not naming the file: {msg!r}"
        return f"refused what a run can write: {msg}" if why is None else None
    except Exception as exc:
        where = "".join(traceback.format_tb(exc.__traceback__)[-2:])
        return f"unexpected {type(exc).__name__}: {exc}\n{where}"
    if why is not None:
        return f"accepted, but {why}"
    if json.dumps(asdict(loaded), sort_keys=True) != json.dumps(state, sort_keys=True):
        return f"loaded state {asdict(loaded)}, written {state}"
    got = net.state()
    for name, a in arrays.items():
        if not np.array_equal(got[name], a, equal_nan=a.dtype.kind == "f"):  # NaN is NaN
            return f"array {name} loaded differs from the one written"
    return None


SENSE_FUZZ = fast_and_slow(SENSE_RUNS, SENSE_FAST, SENSE_SLOW, 400)


@pytest.mark.parametrize("name,count,seed", SENSE_FUZZ)
def test_checkpoint_state_semantics(sense_seeds, name, count, seed, tmp_path):
    base = sense_seeds[name]
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(signed(base.identity, base.state, base.arrays))
    assert senseless(base, base.identity, base.state, base.arrays) is None
    assert sense_problem(base, path, base.identity, base.state, base.arrays) is None
    rng = np.random.default_rng(seed)
    failures, outcomes = [], {"refused": 0, "loaded": 0}
    for i in range(count):
        identity, state = copy.deepcopy(base.identity), copy.deepcopy(base.state)
        arrays = {k: a.copy() for k, a in base.arrays.items()}
        how = []
        for _ in range(1 + (rng.random() < 0.3)):
            if set(state) != {*STATE_FIELDS, "history"} or not isinstance(state["history"], list):
                break  # a field gone or added: the next mutation would need it
            kind = SENSE_MUTATIONS[int(rng.integers(0, len(SENSE_MUTATIONS)))]
            how.append(kind(rng, base, identity, state, arrays))
        path.write_bytes(signed(identity, state, arrays))
        problem = sense_problem(base, path, identity, state, arrays)
        outcomes["loaded" if senseless(base, identity, state, arrays) is None else "refused"] += 1
        if problem:
            failures.append(f"{name} seed {seed} mutant #{i} ({'; '.join(how)}): {problem}")
            if len(failures) == MAX_REPORTED:
                break
    assert not failures, "\n".join(failures)
    assert min(outcomes.values()) >= count // 10, outcomes  # both sides of the oracle reached
