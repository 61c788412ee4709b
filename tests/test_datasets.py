"""Loaders on small files the tests make: valid ones load, broken ones are named."""

import gzip
import pickle

import numpy as np
import pytest

from nitihw.golden.datasets import (
    DatasetError,
    colour_to_int8,
    grey_to_int8,
    load_dataset,
)


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, arr.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in arr.shape
    )
    return header + arr.astype(np.uint8).tobytes()


def write_idx_dir(d, n_train=6, n_test=4, gz=False, size=28):
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, arr in files.items():
        data = idx_bytes(arr)
        if gz:
            (d / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (d / name).write_bytes(data)
    return files


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("kind", ["mnist", "fashion-mnist"])
def test_idx_directory_loads(tmp_path, gz, kind):
    files = write_idx_dir(tmp_path, gz=gz)
    ds = load_dataset(f"{kind}:{tmp_path}")
    assert ds.name == kind
    assert ds.train_x.shape == (6, 28, 28, 1) and ds.train_x.dtype == np.int8
    np.testing.assert_array_equal(
        ds.train_x[..., 0], grey_to_int8(files["train-images-idx3-ubyte"], 255)
    )
    np.testing.assert_array_equal(ds.test_y, files["t10k-labels-idx1-ubyte"])


@pytest.mark.parametrize(
    "breakage,message",
    [
        (lambda d: (d / "t10k-labels-idx1-ubyte").unlink(), "missing t10k-labels-idx1-ubyte"),
        (lambda d: (d / "train-images-idx3-ubyte").write_bytes(b"\x00\x01"), "too short"),
        (
            lambda d: (d / "train-images-idx3-ubyte").write_bytes(b"\x01\x00\x08\x03" + bytes(12)),
            "bad IDX magic",
        ),
        (
            lambda d: (d / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(6), 0x0D)),
            "type code 0x0d",
        ),
        (
            lambda d: (d / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros((6, 1)))),
            "has 2 dimensions, expected 1",
        ),
        (
            lambda d: (d / "train-images-idx3-ubyte").write_bytes(
                idx_bytes(np.zeros((6, 28, 28)))[:-5]
            ),
            "need 4704 data bytes, file has 4699",
        ),
        (
            lambda d: (d / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5))),
            "5 labels for 6 images",
        ),
        (
            lambda d: (d / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(4, 12))),
            "label value 12",
        ),
        (
            lambda d: (d / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((4, 20, 20)))),
            "test images",
        ),
        (lambda d: (d / "train-labels-idx1-ubyte").write_bytes(b"\x1f\x8bgarbage"), "corrupt gzip"),
    ],
)
def test_broken_idx_files_are_named(tmp_path, breakage, message):
    write_idx_dir(tmp_path)
    breakage(tmp_path)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"mnist:{tmp_path}")


def write_cifar(d, n=4, mutate=None):
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(),
            b"batch_label": name.encode(),
        }
        if mutate and name == "data_batch_3":
            mutate(batch)
        batches[name] = batch
        (d / name).write_bytes(pickle.dumps(batch))
    return batches


def test_cifar_loads_nhwc(tmp_path):
    batches = write_cifar(tmp_path)
    ds = load_dataset(f"cifar10:{tmp_path}")
    assert ds.train_x.shape == (20, 32, 32, 3) and ds.test_x.shape == (4, 32, 32, 3)
    raw = batches["data_batch_1"][b"data"][0]
    # pixel (y=2, x=5), green channel lives at 1024 + 2*32 + 5
    assert ds.train_x[0, 2, 5, 1] == colour_to_int8(np.array([raw[1024 + 2 * 32 + 5]]))[0]
    assert ds.train_y.tolist()[:4] == batches["data_batch_1"][b"labels"]


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda b: b.pop(b"labels"), "missing field 'labels'"),
        (lambda b: b.__setitem__(b"data", np.zeros((4, 100), np.uint8)), r"shape \(4, 100\)"),
        (lambda b: b.__setitem__(b"data", np.zeros((4, 3072), np.int32)), "dtype int32"),
        (lambda b: b.__setitem__(b"labels", [1, 2]), "2 entries for 4 images"),
        (lambda b: b.__setitem__(b"labels", [1, 2, 3, 10]), "outside 0..9"),
    ],
)
def test_broken_cifar_is_named(tmp_path, mutate, message):
    write_cifar(tmp_path, mutate=mutate)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar_refuses_foreign_pickles(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": print}))
    with pytest.raises(DatasetError, match=r"refusing to load builtins\.print"):
        load_dataset(f"cifar10:{tmp_path}")
    (tmp_path / "data_batch_5").unlink()
    with pytest.raises(DatasetError, match="missing CIFAR-10 batch file data_batch_5"):
        load_dataset(f"cifar10:{tmp_path}")


def test_bad_specs():
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(DatasetError, match="needs a directory"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="is not a directory"):
        load_dataset("mnist:/nonexistent/dir")


def test_pixel_rules():
    np.testing.assert_array_equal(
        grey_to_int8(np.array([0, 1, 2, 128, 255]), 255), [0, 0, 1, 64, 127]
    )
    np.testing.assert_array_equal(grey_to_int8(np.array([0, 1, 8, 16]), 16), [0, 8, 64, 127])
    np.testing.assert_array_equal(colour_to_int8(np.array([0, 127, 128, 255])), [-127, 0, 0, 127])


def test_shipped_datasets():
    d = load_dataset("digits")
    assert (len(d.train_y), len(d.test_y)) == (1437, 360) and d.input_shape == (8, 8, 1)
    m = load_dataset("mnist5k")
    assert (len(m.train_y), len(m.test_y)) == (4000, 1000) and m.input_shape == (28, 28, 1)
    assert set(np.bincount(m.train_y).tolist()) != {400}  # shuffled, not class-sorted halves
    assert m.train_x.max() == 127 and m.train_x.min() == 0
    np.testing.assert_array_equal(load_dataset("mnist5k").train_y, m.train_y)  # fixed split
