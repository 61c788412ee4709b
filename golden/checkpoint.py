"""Checkpoints that are verified, not trusted.

A checkpoint is an ``.npz`` archive (NumPy's, no pickles) of the network's state arrays and one
``meta`` array: UTF-8 JSON with

- ``format`` (``"nitihw-checkpoint"``) and ``version`` (:data:`FORMAT_VERSION`);
- ``identity``: the settings a resuming run must share (:meth:`TrainConfig.identity`);
- ``state``: the run's counters and history (:class:`~nitihw.golden.train.RunState`);
- ``manifest``: model, profile, step, and each array's shape and dtype;
- ``sha256``: the checksum of the arrays (:func:`arrays_sha256`: names, dtypes, shapes, bytes)
  and of the identity, state and manifest above (:func:`checksum`), so an edited run state is
  refused as surely as a flipped weight.

:func:`read_checkpoint` checks all of it, and the arrays against the network the run builds,
before a single weight is loaded; any damage is a :class:`CheckpointError` that says
"checkpoint PATH is damaged (why): start again without --resume or restore a copy".

:func:`write_checkpoint` writes a new checkpoint beside the old one, then keeps the old one as
``checkpoint.prev.npz`` (a hard link, so ``checkpoint.npz`` never disappears) and renames the
new one into place: a crash at any point leaves ``checkpoint.npz`` whole, old or new, and the
one before it. ``NITIHW_CRASH_AT`` (:func:`crash_point`) kills the process at a named point of
that sequence, for the tests that prove it (docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import signal
import zipfile
from dataclasses import fields
from pathlib import Path

import numpy as np

FORMAT = "nitihw-checkpoint"
FORMAT_VERSION = 2
CHECKPOINT_NAME = "checkpoint.npz"
PREVIOUS_NAME = "checkpoint.prev.npz"
#: points of :func:`write_checkpoint` that ``NITIHW_CRASH_AT=POINT[:N]`` can kill the process at
CRASH_POINTS = ("checkpoint-half", "checkpoint-written", "checkpoint-prev", "checkpoint-done")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: damaged, or from another run."""


def damaged(path: Path, why: str) -> CheckpointError:
    path = Path(path)
    msg = f"checkpoint {path} is damaged ({why}): start again without --resume or restore a copy"
    prev = path.with_name(PREVIOUS_NAME)
    if path.name == CHECKPOINT_NAME and prev.is_file():
        try:
            meta, _ = read_checkpoint(prev)
            msg += f" ({prev} is intact, step {meta['state']['step']}: copy it to {path})"
        except CheckpointError:
            pass
    return CheckpointError(msg)


_crash_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Kill this process (SIGKILL: no clean-up) if ``NITIHW_CRASH_AT`` names this point:
    ``POINT`` (its first pass) or ``POINT:N`` (its N-th pass). For the crash tests only."""
    want = os.environ.get("NITIHW_CRASH_AT")
    if not want:
        return
    point, _, nth = want.partition(":")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the arrays in name order: each name, dtype, shape and little-endian bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def checksum(meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """The checkpoint's ``sha256``: its arrays' and its identity, state and manifest's."""
    about = json.dumps([meta.get(k) for k in ("identity", "state", "manifest")], sort_keys=True)
    return hashlib.sha256((about + arrays_sha256(arrays)).encode()).hexdigest()


def manifest(arrays: dict[str, np.ndarray], **about) -> dict:
    return {
        **about,
        "arrays": {k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in arrays.items()},
    }


def encode_checkpoint(identity: dict, state: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """The bytes of a checkpoint (see the module's docstring)."""
    arrays = {k: np.ascontiguousarray(a) for k, a in arrays.items()}
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "identity": identity,
        "state": state,
        "manifest": manifest(
            arrays, model=identity.get("model"), profile=identity.get("profile"), step=state["step"]
        ),
    }
    meta["sha256"] = checksum(meta, arrays)
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    return buf.getvalue()


def write_checkpoint(path: Path, data: bytes) -> None:
    """Write ``data`` as ``path``, keeping the checkpoint it replaces as ``checkpoint.prev.npz``
    (see the module's docstring for the order of the steps)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            f.flush()
            crash_point("checkpoint-half")
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        crash_point("checkpoint-written")
        if path.exists():
            prev = path.with_name(PREVIOUS_NAME)
            link = path.with_name(f".{PREVIOUS_NAME}.{os.getpid()}.tmp")
            link.unlink(missing_ok=True)
            try:
                os.link(path, link)
            except OSError:  # a file system without hard links: copy
                link.write_bytes(path.read_bytes())
            os.replace(link, prev)
            # rename() does nothing when both names are links to one file (prev already is
            # this checkpoint: a crash came between these steps before)
            link.unlink(missing_ok=True)
            crash_point("checkpoint-prev")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        crash_point("checkpoint-done")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_leftovers(directory: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``directory``; returns them."""
    gone = []
    for p in Path(directory).glob(".*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def read_checkpoint(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a checkpoint whose every part checks out, else
    :class:`CheckpointError` (a missing file: "no checkpoint at PATH")."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path}: cannot read ({exc.strerror or exc})") from None
    if not raw:
        raise damaged(path, "empty file")
    if not raw.startswith(b"PK\x03\x04"):
        raise damaged(path, f"not an .npz archive: it starts with {raw[:8]!r}")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            names = list(z.files)
            if "meta" not in names:
                raise damaged(path, "no manifest ('meta' is missing)")
            meta_raw = z["meta"]
            arrays = {k: z[k] for k in names if k != "meta"}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise damaged(path, f"not a valid archive: {_one_line(exc)}") from None
    except Exception as exc:  # truncated members, bad headers, CRC errors, pickles, ...
        raise damaged(path, f"unreadable: {type(exc).__name__}: {_one_line(exc)}") from None
    if meta_raw.dtype != np.uint8 or meta_raw.ndim != 1:
        raise damaged(path, "the manifest is not a byte string")
    try:
        meta = json.loads(meta_raw.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # not UTF-8/JSON, a 4301-digit integer, [[[...
        raise damaged(path, f"the manifest is not JSON: {_one_line(exc)}") from None
    _check_meta(path, meta, arrays)
    return meta, arrays


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


def _check_meta(path: Path, meta, arrays: dict) -> None:
    from nitihw.golden.train import RunState

    if not isinstance(meta, dict):
        raise damaged(path, "the manifest is not an object")
    version = meta.get("version", 1)
    if version == FORMAT_VERSION:
        if meta.get("format") != FORMAT:
            raise damaged(path, f"format {meta.get('format')!r}, expected {FORMAT!r}")
        man = meta.get("manifest")
        if not isinstance(man, dict) or not isinstance(man.get("arrays"), dict):
            raise damaged(path, "the manifest has no array list")
        listed = man["arrays"]
        if set(listed) != set(arrays):
            missing = sorted(set(listed) - set(arrays))
            extra = sorted(set(arrays) - set(listed))
            raise damaged(path, f"arrays missing {missing}, unlisted {extra}")
        for k, a in arrays.items():
            want = listed[k]
            if not isinstance(want, dict) or [list(a.shape), a.dtype.str] != [
                want.get("shape"),
                want.get("dtype"),
            ]:
                raise damaged(
                    path,
                    f"array {k!r} is {a.dtype.str}{list(a.shape)}, the manifest says {want!r}",
                )
        if meta.get("sha256") != checksum(meta, arrays):
            raise damaged(path, "checksum mismatch: the contents are not the ones written")
    elif version != 1:  # version 1: before checksums (read, with the checks below)
        raise damaged(
            path,
            f"format version {version!r}; this nitihw reads versions 1..{FORMAT_VERSION}",
        )
    if not isinstance(meta.get("identity"), dict):
        raise damaged(path, "no run identity")
    state = meta.get("state")
    names = {f.name: f for f in fields(RunState)}
    if not isinstance(state, dict) or set(state) != set(names):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise damaged(path, f"run state fields {got}, expected {sorted(names)}")
    for key, value in state.items():
        ok = (
            isinstance(value, list)
            if key == "history"
            else isinstance(value, int | float)
            and not isinstance(value, bool)
            and (isinstance(value, int) or math.isfinite(value))  # no inf (isfinite(10**400) fails)
            and value >= 0
        )
        if key not in ("history", "seconds") and not isinstance(value, int):
            ok = False
        if not ok:
            raise damaged(path, f"run state {key} is {value!r}")
    if version == FORMAT_VERSION and meta["manifest"].get("step") != state["step"]:
        raise damaged(path, "the manifest's step and the run state's differ")


def check_arrays_fit(path: Path, arrays: dict, expected: dict[str, np.ndarray]) -> None:
    """The checkpoint's arrays are exactly the names, shapes and dtypes of ``expected`` (the
    state of the network this run builds), else :class:`CheckpointError`."""
    if set(arrays) != set(expected):
        raise damaged(
            path,
            f"arrays {sorted(arrays)}, but this model's state has {sorted(expected)}",
        )
    for k, want in expected.items():
        a = arrays[k]
        if a.shape != want.shape or a.dtype != want.dtype:
            raise damaged(
                path,
                f"array {k!r} is {a.dtype}{list(a.shape)}, this model's is "
                f"{want.dtype}{list(want.shape)}",
            )
