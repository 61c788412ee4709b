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

The checksum finds damage, not tampering: anyone can recompute it. So the contents are also
checked for sense against the run resuming them: :func:`check_state_sense` (the run state's
counters and history are what :func:`~nitihw.golden.train.train` can have written) and
:func:`check_arrays_range` with :func:`state_ranges` (every state array holds values the
network's own arithmetic can produce: a 4-bit run's weights in +-7; float arrays, whose
arithmetic can reach inf and NaN, are any float).

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
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nitihw.golden.files import raise_named

FORMAT = "nitihw-checkpoint"
FORMAT_VERSION = 2
CHECKPOINT_NAME = "checkpoint.npz"
PREVIOUS_NAME = "checkpoint.prev.npz"
#: points of :func:`write_checkpoint` that ``NITIHW_CRASH_AT=POINT[:N]`` can kill the process at
CRASH_POINTS = ("checkpoint-half", "checkpoint-written", "checkpoint-prev", "checkpoint-done")
#: what only version 2 writes: a file claiming version 1 with any of these is damaged
V2_ONLY = ("format", "manifest", "sha256")


@dataclass
class RunState:
    """A run's counters and history: what a checkpoint carries besides the network's arrays
    (:func:`~nitihw.golden.train.train` keeps it; :func:`check_state_sense` checks it)."""

    step: int = 0  # steps done in total
    epoch_correct: int = 0  # running training accuracy of the current epoch
    epoch_seen: int = 0
    seconds: float = 0.0
    samples: int = 0
    overflow_events: int = 0
    history: list = field(default_factory=list)  # per finished epoch


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
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        raise_named(exc, path)
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
    if not isinstance(meta, dict):
        raise damaged(path, "the manifest is not an object")
    version = meta.get("version", 1)
    if type(version) is not int:  # true == 1 and 2.0 == 2 in Python: no version by accident
        raise damaged(path, f"format version {version!r} is not an integer")
    if version == 1:  # no downgrade past the checksum: version 1 wrote identity and state only
        carried = ", ".join(k for k in V2_ONLY if k in meta)
        if carried:
            raise damaged(
                path, f"claims version 1 but carries a version-2 checksum/manifest ({carried})"
            )
        unknown = sorted(set(meta) - {"version", "identity", "state"})
        if unknown:
            raise damaged(path, f"version 1 with fields it never had: {unknown}")
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


# ---- sense: what a run can have written -------------------------------------------------------
#: the keys of a history record (train()'s epoch summary): always these...
RECORD_KEYS = ("epoch", "train_accuracy", "test_accuracy")
#: ...``mu`` unless the method is a float one (versions before 2 wrote it for every method), and
#: ``seconds`` (records written before it existed lack it, and a resumed run keeps them)
RECORD_OPTIONAL = ("mu", "seconds")
INT64_MAX = 2**63 - 1


def _number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def check_state_sense(
    path: Path,
    state: dict,
    *,
    batch: int,
    mu: Callable[[int], int],
    float_method: bool,
    overflow: str,
    version: int = FORMAT_VERSION,
) -> None:
    """The run state of a checkpoint :func:`read_checkpoint` passed is one
    :func:`~nitihw.golden.train.train` can have written for a run with these settings (``batch``,
    its ``mu`` schedule, whether its method is a float one (no ``mu`` in its records), its
    ``overflow`` policy); else a :class:`CheckpointError` naming the field and value.

    The dataset is not loaded yet, so its size is not known; the state itself says it. train()
    runs epochs of ``P = ceil(n / batch)`` steps over ``n`` images, every batch full but an
    epoch's last, adds a history record at each epoch's end and sets the epoch's counters to 0.
    A state after ``k`` finished epochs and ``r`` steps of the next is therefore exactly
    ``len(history) == k``, ``epoch_seen == r * batch``, ``samples == k * n + r * batch`` with
    ``r < P``, and ``step == k * P + r``: ``P`` and ``n`` follow from the state and must fit
    (``(P - 1) * batch < n <= P * batch``). Before version 2 the first train() could save a
    step half-counted on Ctrl-C, so version 1 states get the bounds but not this accounting.
    Bounds for every version: ``step`` at most ``--steps``'s limit, ``epoch_correct <=
    epoch_seen <= samples <= step * batch``, at most one record per step, no overflow events
    under the "error" policy (the first overflow stops the run), counters within int64, each
    record an epoch summary (keys, types, its epoch's mu, accuracies in 0..1; test accuracy NaN
    for an empty test set), their seconds no more than the state's.
    """
    from nitihw.golden.limits import LIMITS

    def bad(why: str) -> CheckpointError:
        return damaged(path, f"run state {why}")

    step, correct, seen = state["step"], state["epoch_correct"], state["epoch_seen"]
    samples, events, history = state["samples"], state["overflow_events"], state["history"]
    max_steps = int(LIMITS["steps"].hi)
    if step > max_steps:
        raise bad(f"step {step}: more than any run takes (at most {max_steps})")
    if correct > seen:
        raise bad(f"epoch_correct {correct} is more than epoch_seen {seen}")
    if seen > samples:
        raise bad(f"epoch_seen {seen} is more than samples {samples}")
    if samples > step * batch:
        raise bad(f"samples {samples} in {step} steps of at most {batch} (--batch)")
    if events > INT64_MAX:
        raise bad(f"overflow_events {events} is beyond int64")
    if events and overflow == "error":
        raise bad(
            f"overflow_events {events} in a run whose overflow policy is 'error' "
            "(its first overflow stops it)"
        )
    max_epochs = int(LIMITS["epochs"].hi)
    if len(history) > min(step, max_epochs):
        raise bad(f"history has {len(history)} epochs after {step} steps")
    last = -1
    for i, record in enumerate(history):
        _check_record(path, i, record, last, mu, float_method, version, step)
        last = record["epoch"]
    spent = math.fsum(r.get("seconds", 0) for r in history)
    # each record's seconds are round(part, 3) of a part the state's seconds hold
    if spent > state["seconds"] + 0.001 * len(history) + 1e-9 * spent + 1e-6:
        raise bad(f"seconds {state['seconds']!r} is less than its epochs' {spent:.3f}")
    if version < 2:
        return
    k = len(history)
    counted = f"step {step}, epoch_seen {seen}, samples {samples} and {k} epoch records"
    if k == 0:
        if not seen == samples == step * batch:
            raise bad(f"{counted} do not add up: {step} steps of {batch} in the first epoch")
        return
    r, part = divmod(seen, batch)
    if part:
        raise bad(f"epoch_seen {seen} is not a whole number of batches of {batch}")
    per_epoch, part = divmod(step - r, k)
    if part or per_epoch <= r:
        raise bad(f"{counted} do not add up: no epoch length fits")
    n, part = divmod(samples - seen, k)
    if part or not (per_epoch - 1) * batch < n <= per_epoch * batch:
        images = f"{(per_epoch - 1) * batch + 1}..{per_epoch * batch}"
        raise bad(
            f"{counted} do not add up: epochs of {per_epoch} steps at batch {batch} are "
            f"{images} images, these {(samples - seen) / k:g}"
        )


def _check_record(path, i, record, last, mu, float_method, version, step) -> None:
    def bad(why: str) -> CheckpointError:
        return damaged(path, f"run state history[{i}] {why}")

    if not isinstance(record, dict):
        raise bad(f"is {_short(record)}, not an epoch record")
    keys = set(record)
    want = set(RECORD_KEYS) | (set() if float_method else {"mu"})
    if not want <= keys <= set(RECORD_KEYS) | set(RECORD_OPTIONAL):
        raise bad(f"has keys {sorted(keys)}: an epoch record has {sorted(want)} and seconds")
    epoch = record["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        raise bad(f"epoch is {_short(epoch)}")
    if version >= 2 and epoch != i:  # epochs 0, 1, 2, ...
        raise bad(f"epoch is {epoch}, expected {i}")
    if not last < epoch < step:  # version 1: a Ctrl-C during an evaluation could lose a record
        raise bad(f"epoch is {epoch}, expected {last + 1}..{step - 1}")
    for key in ("train_accuracy", "test_accuracy"):
        value = record[key]
        nan_ok = key == "test_accuracy"  # evaluate() of an empty test set
        if not _number(value) or not (0 <= value <= 1 or (nan_ok and value != value)):
            raise bad(f"{key} is {_short(value)}, not an accuracy in 0..1")
    if "mu" in record:
        value = record["mu"]
        expected = mu(epoch)
        if not isinstance(value, int) or isinstance(value, bool) or value != expected:
            raise bad(f"mu is {_short(value)}; this run's schedule has {expected} at epoch {epoch}")
    if "seconds" in record:
        value = record["seconds"]
        if not _number(value) or not (math.isfinite(value) and value >= 0):
            raise bad(f"seconds is {_short(value)}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- range: what the network's arithmetic can have produced ----------------------------------
class ValueRange(NamedTuple):
    """The values an integer state array can hold: ``lo..hi``; ``why`` says where the range
    comes from."""

    lo: int
    hi: int
    why: str


def state_ranges(net) -> dict[str, ValueRange]:
    """For each array of ``net.state()``, the values the network's own arithmetic can produce
    (derived from its layers and constants, in the order ``state()`` lists the arrays):

    - NITI networks (``niti*``, ``niti-compat``): int8 weights in ``+-(2^(b-1) - 1)`` for
      ``b``-bit operands (127 for 8): the initial quantisation maps the largest to it, every
      update saturates to it; 16-bit masters in ``+-MASTER_LIMIT`` (the master update's clamp);
    - WAGE: ``+-WEIGHT_LIMIT`` (64: the update's limit; the initial weights are 0 or +-64);
    - NITRO-D: int32 weights wrap (any int32); the input statistics are the mean (int8) and
      mean absolute deviation (1..255, raised to 1) of int8 images;
    - the float32 twin and DFP16: none (their float arithmetic can reach inf and NaN: a
      diverged run's checkpoint is what it wrote, not damage).

    Arrays of other networks: none."""
    from nitihw.golden.backend import MASTER_LIMIT
    from nitihw.golden.network import IntegerNetwork
    from nitihw.golden.nitro_d import NitroNetwork
    from nitihw.golden.rounding import value_limit
    from nitihw.golden.wage import WEIGHT_LIMIT, WageNetwork

    state = net.state()
    if isinstance(net, IntegerNetwork):
        b = net.operand_bits
        lim = value_limit(b)
        master = ValueRange(-MASTER_LIMIT, MASTER_LIMIT, f"16-bit masters lie in +-{MASTER_LIMIT}")
        weight = ValueRange(-lim, lim, f"the weights of a {b}-bit run lie in +-{lim}")
        ranges = [weight if x.master is None else master for x in net.weight_layers]
    elif isinstance(net, WageNetwork):
        w = ValueRange(-WEIGHT_LIMIT, WEIGHT_LIMIT, f"WAGE weights lie in +-{WEIGHT_LIMIT}")
        ranges = [w] * len(net.units)
    elif isinstance(net, NitroNetwork):
        i8, i32 = np.iinfo(np.int8), np.iinfo(np.int32)
        w = ValueRange(int(i32.min), int(i32.max), "NITRO-D's int32 weights wrap")
        ranges = [w] * len(net.units) + [
            ValueRange(int(i8.min), int(i8.max), "the input mean of int8 images"),
            ValueRange(1, int(i8.max) - int(i8.min), "the input MAD of int8 images (at least 1)"),
        ]
    else:  # the float twin, DFP16 (FloatNetwork), anything else: float arrays, no range
        return {}
    return dict(zip(state, ranges, strict=True))


def check_arrays_range(path: Path, arrays: dict, ranges: dict[str, ValueRange]) -> None:
    """Every array named in ``ranges`` holds only values in its range (:func:`state_ranges`),
    else :class:`CheckpointError` naming the array, the first value outside and where it is."""
    for name, want in ranges.items():
        a = np.asarray(arrays[name])
        limits = f"{want.lo}..{want.hi}"
        if a.dtype.kind in "iub":
            outside = (a < want.lo) | (a > want.hi)
        else:  # check_arrays_fit gave it the network's dtype: integer; never a float here
            outside = ~np.isfinite(a) | (a < want.lo) | (a > want.hi)
        if outside.any():
            at = tuple(int(i) for i in np.argwhere(outside)[0])
            raise damaged(
                path,
                f"array {name!r} holds {a[at].item()!r} at {list(at)}, {int(outside.sum())} "
                f"value(s) outside {limits} ({want.why})",
            )
