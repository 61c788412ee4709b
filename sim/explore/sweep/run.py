"""Running a sweep on Dask: the points not yet finished, in batches, on an embedded
``LocalCluster`` (default) or the cluster at ``--scheduler``; each point's record is stored
(atomically, ``DIR/points/ID.json``) as it arrives, so a rerun skips what is done and a killed
sweep loses at most the batches in flight.

The folder (:class:`SweepFolder`): one sweep writes it at a time (the run folder's lock,
:class:`~nitihw.golden.run_folder.RunLock`), and it holds one grid (``DIR/sweep.json``). A stored
record is reused only when it is this point's, under this grid's settings, whole and sound
(:func:`load_record`); anything else is computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from nitihw.golden.files import atomic_write_bytes, atomic_write_json
from nitihw.golden.parallel import available_cores
from nitihw.golden.run_folder import SWEEP_NAME, RunFolderError, RunLock, check_writable_dir
from nitihw.sim.cluster import dask_client
from nitihw.sim.explore.sweep.grid import Grid, canonical
from nitihw.sim.explore.sweep.points import check_outputs, output_columns, run_points

#: points per Dask task: a point's estimate takes about a millisecond, a task's round trip more
BATCH = 25
#: a training or RTL point takes seconds to minutes: one a task, so they spread over workers
SLOW_BATCH = 1
SLOW_KINDS = ("train", "rtl")
#: the reports of a sweep (removed with the records by ``--overwrite``)
RESULT_FILES = (
    "results.csv",
    "results.parquet",
    "pareto.csv",
    "energy_vs_cycles.png",
    "accuracy_vs_bits.png",
)
#: a grid above this many points is warned about: its expected time and memory
LARGE = 100_000
#: memory of a sweep's results, per point and column: the records kept (about 1.5 KB a point)
#: then the rows, the frame and the CSV text (1.9 KB at the peak, measured with tracemalloc on
#: 20,000 estimate points of 37 columns): about 3.7 GB at 1,000,000 such points
BYTES_PER_CELL = 100
#: a record file is a few hundred bytes; one far bigger is not a record
MAX_RECORD_BYTES = 1 << 20


class SweepProgress:
    """``sweep: 120/1000 points (2 failed)  35.1 points/s  eta 25s`` on stderr: redrawn in
    place on a terminal, a line every ``every`` seconds in a log."""

    def __init__(self, total: int, done: int, stream=None, every: float = 10.0):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total, self.done, self.start_done, self.failed = total, done, done, 0
        self.t0 = self.last = time.perf_counter()
        self.every = every

    def advance(self, n: int, failed: int) -> None:
        self.done += n
        self.failed += failed
        now = time.perf_counter()
        if self.tty and (now - self.last > 0.2 or self.done == self.total):
            self.stream.write("\r" + self.line(now))
            self.last = now
        elif not self.tty and now - self.last > self.every:
            self.stream.write(self.line(now) + "\n")
            self.last = now
        self.stream.flush()

    def line(self, now: float) -> str:
        rate = (self.done - self.start_done) / max(now - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate else 0.0
        # slow points (training, RTL) read better as seconds per point
        speed = f"{rate:.1f} points/s" if rate >= 1 or not rate else f"{1 / rate:.1f} s/point"
        return (
            f"sweep: {self.done}/{self.total} points ({self.failed} failed)  "
            f"{speed}  eta {_duration(eta)}"
        )

    def close(self) -> None:
        self.stream.write(("\r" if self.tty else "") + self.line(time.perf_counter()) + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _say(msg: str) -> None:
    print(f"nitihw sweep: {msg}", file=sys.stderr, flush=True)


# ---- the records ----------------------------------------------------------------------------


def _checksum(pid: str, point: dict, key: str, record: dict) -> str:
    body = {"id": pid, "point": point, "settings_sha256": key, "record": record}
    return hashlib.sha256(canonical(body)).hexdigest()


def record_file(pid: str, point: dict, key: str, record: dict) -> dict:
    """What ``DIR/points/ID.json`` holds: the point's id, settings (its axis values and the
    hash of the grid's, :attr:`~nitihw.sim.explore.sweep.grid.Grid.key`), its record, and the
    SHA-256 of all of them."""
    return {
        "id": pid,
        "point": point,
        "settings_sha256": key,
        "record": record,
        "sha256": _checksum(pid, point, key, record),
    }


def write_record(path: Path, doc: dict) -> None:
    """Write a record file atomically (a temporary file renamed over it) but without the
    fsync of :func:`~nitihw.golden.files.atomic_write_json`: the fsync was most of a point's
    cost (about 4 ms against an estimate's 1 ms), and a record a power cut leaves empty or
    torn fails :func:`load_record`'s checks and is computed again."""
    atomic_write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode(), fsync=False)


FILE_KEYS = {"id", "point", "settings_sha256", "record", "sha256"}


def load_record(path: Path, pid: str, point: dict, key: str, compute) -> tuple[dict | None, str]:
    """The stored record of ``point`` at ``path`` if it may be reused, else ``(None, why)``:
    it must be a readable JSON object of :func:`record_file`'s fields, of this point (id and
    axis values) under these settings, a finished record whose every output column is of its
    type and within its limits (:func:`~nitihw.sim.explore.sweep.points.check_outputs`) and whose
    checksum matches. ``why`` is ``"failed"`` for a point that failed (it is run again); no
    content of the file raises."""
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            return None, f"{path.stat().st_size:,} bytes, not a record"
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except (ValueError, RecursionError) as exc:  # not JSON, or nested past the parser
        return None, f"not JSON ({' '.join(str(exc).split())[:80]})"
    if not isinstance(doc, dict) or set(doc) != FILE_KEYS:
        return (
            None,
            "not a point record (its fields are not id, point, settings_sha256, record, sha256)",
        )
    if doc["id"] != pid:
        other = doc["id"][:20] if isinstance(doc["id"], str) else type(doc["id"]).__name__
        return None, f"it is the record of point {other!r}"
    if doc["settings_sha256"] != key:
        return None, "computed under other settings"
    stored = doc["point"]
    if not isinstance(stored, dict) or stored.keys() != point.keys():
        return None, "its settings are not this point's"
    for k, v in point.items():
        if type(stored[k]) is not type(v) or stored[k] != v:
            return None, f"its {k} is not this point's"
    record = doc["record"]
    why = check_outputs(record, compute)
    if why:
        return None, why
    if doc["sha256"] != _checksum(pid, point, key, record):
        return None, "its checksum does not match (the file was changed)"
    return record, ""


def row(pid: str, point: dict, record: dict) -> dict:
    """A result row: the id, the point's settings, then its outputs (never a setting), in
    name order (a record read back from its file may list its fields in another order than
    the point's computation did: the columns never depend on it)."""
    return {
        "point": pid,
        **point,
        **{k: record[k] for k in sorted(record) if k not in point and k != "point"},
    }


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


# ---- the folder -----------------------------------------------------------------------------


class SweepFolder:
    """``with SweepFolder(out, grid, overwrite):`` holds ``out`` for one sweep of ``grid``:
    the run lock (a second sweep into ``out`` is refused), the temporary files a killed sweep
    left in ``out/points`` removed, and ``out/sweep.json`` checked then written (atomically):
    a folder that holds the sweep of another grid (another file whose axes or settings
    differ) is refused unless ``overwrite``, which removes its records and reports. The same
    grid file, edited, resumes: its changed points get new ids and are computed again."""

    def __init__(self, out: Path, grid: Grid, overwrite: bool = False, say=_say):
        self.out = Path(out)
        self.store = self.out / "points"
        self.grid, self.overwrite, self.say = grid, overwrite, say
        self.lock = RunLock(self.out, say=say)

    def fingerprint(self) -> dict:
        g = self.grid
        return {
            "grid": str(Path(g.path).resolve()),
            "points": len(g.points),
            "compute": list(g.compute),
            "energy": g.energy,
            "settings_sha256": g.key,
            "axes_sha256": g.axes_key,
            "settings": g.identity(),
        }

    def __enter__(self) -> SweepFolder:
        check_writable_dir(self.out, "--out")
        self.lock.__enter__()
        try:
            self._claim()
        except BaseException:
            self.lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.lock.__exit__(*exc)

    def _claim(self) -> None:
        path = self.out / SWEEP_NAME
        new = self.fingerprint()
        old = None
        if path.exists():
            try:
                old = json.loads(path.read_text())
                if not isinstance(old, dict) or not isinstance(old.get("grid"), str):
                    raise ValueError("not a sweep description")
            except (OSError, ValueError, RecursionError) as exc:
                if not self.overwrite:
                    why = " ".join(str(exc).split())[:80]
                    raise RunFolderError(
                        f"--out {self.out}: {path} is unreadable ({why}): "
                        "give --overwrite to start the sweep afresh, or choose another --out"
                    ) from None
                old = None
        same_content = old is not None and all(
            old.get(k) == new[k] for k in ("settings_sha256", "axes_sha256")
        )
        if (
            old is not None
            and old["grid"] != new["grid"]
            and not same_content
            and not self.overwrite
        ):
            raise RunFolderError(
                f"--out {self.out} holds the sweep of another grid ({old['grid']}, "
                f"{_count(old.get('points'))} points; this is {new['grid']}, {new['points']:,} "
                "points): rerun that grid to resume it, give --overwrite to replace it, or "
                "choose another --out"
            )
        self.store.mkdir(exist_ok=True)
        if self.overwrite:
            gone = self._clear()
            if gone:
                self.say(f"--overwrite: removed {gone:,} files of the previous sweep in {self.out}")
        else:
            leftovers = [p for p in self.store.glob(".*.tmp") if p.is_file()]
            for p in leftovers:
                p.unlink(missing_ok=True)
            if leftovers:
                self.say(
                    f"removed {len(leftovers)} temporary file(s) in {self.store}, left by an "
                    "interrupted sweep"
                )
            if old is not None and not same_content:
                self.say(
                    f"{new['grid']} changed since the last sweep into {self.out}: points whose "
                    "settings changed are computed again"
                )
        atomic_write_json(path, new)

    def _clear(self) -> int:
        gone = 0
        for p in [*self.store.glob("*.json"), *self.store.glob(".*.tmp")]:
            p.unlink(missing_ok=True)
            gone += 1
        for name in (*RESULT_FILES, SWEEP_NAME):
            if (self.out / name).is_file():
                (self.out / name).unlink()
                gone += 1
        return gone


# ---- the sweep ------------------------------------------------------------------------------


class _Ticker:
    """A phase's progress on stderr (``sweep: hashing points 300,000/999,999``): a line every
    ``every`` s, so a long phase is never silent."""

    def __init__(self, what: str, total: int, every: float = 2.0, say=_say):
        self.what, self.total, self.every, self.say = what, total, every, say
        self.t0 = self.last = time.perf_counter()

    def __call__(self, n: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.say(f"{self.what} {n:,}/{self.total:,}")
            self.last = now


def _expected(grid: Grid, todo: int, seconds: float, workers: int | None, scheduler) -> str:
    """The warning of a large grid: its time at the measured seconds a point, and memory."""
    # the axes, point and error, the outputs (point_seconds too), pes, buffer_kib and pareto
    columns = len(grid.axes) + 2 + len(output_columns(grid.compute)) + 3
    gb = len(grid.points) * columns * BYTES_PER_CELL / 1e9
    if scheduler:
        where = "on one core (divide by the cluster's)"
        total = todo * seconds
    else:
        n = 1 if workers == 0 else workers or available_cores()
        where = f"on {n} process{'es' if n != 1 else ''}"
        total = todo * seconds / n
    return (
        f"warning: {len(grid.points):,} points ({todo:,} to compute) at {seconds * 1e3:.2g} ms a "
        f"point (measured here): about {_duration(total)} {where}, and about {gb:.1f} GB of "
        "memory for the results; interrupting keeps the finished points"
    )


def run_sweep(
    grid: Grid,
    out: Path,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    folder: SweepFolder | None = None,
) -> list[dict]:
    """Run every unfinished point of ``grid``; returns every point's row (settings, outputs,
    ``error``), in the grid's order. ``folder``: the :class:`SweepFolder` the caller holds
    (else one is taken for the call)."""
    if folder is None:
        with SweepFolder(out, grid, overwrite) as held:
            return _run(grid, held, scheduler, workers, progress)
    return _run(grid, folder, scheduler, workers, progress)


def _run(grid: Grid, folder: SweepFolder, scheduler, workers, progress: bool) -> list[dict]:
    out, store, say = folder.out, folder.store, folder.say
    n = len(grid.points)
    large = n > LARGE
    t0 = time.perf_counter()
    if large:
        say(f"hashing {n:,} point ids")
    ids = grid.ids(tick=_Ticker("hashed point ids", n, say=say) if large else None)
    if large:
        say(f"hashed {n:,} point ids in {time.perf_counter() - t0:.1f} s")
    # which points are done: only the records present are read
    with os.scandir(store) as it:
        present = {e.name[:-5] for e in it if e.name.endswith(".json")}
    records: dict[str, dict] = {}
    bad: list[tuple[Path, str]] = []
    retried = 0
    stored = sum(pid in present for pid in ids)
    tick = _Ticker("checked stored points", stored, say=say) if stored > 20_000 else None
    if tick:
        say(f"checking {stored:,} stored points")
    todo = []
    seen = 0
    for pid, point in zip(ids, grid.points, strict=True):
        if pid in present:
            seen += 1
            if tick:
                tick(seen)
            record, why = load_record(store / f"{pid}.json", pid, point, grid.key, grid.compute)
            if record is not None:
                records[pid] = record
                continue
            if why == "the point failed":
                retried += 1
            else:
                bad.append((store / f"{pid}.json", why))
        todo.append((pid, point))
    if bad:
        path, why = bad[0]
        say(
            f"{len(bad):,} stored point record(s) failed their checks and are computed again "
            f"(the first: {path}: {why})"
        )
    if retried:
        say(f"{retried:,} point(s) that failed before are run again")
    bar = SweepProgress(n, n - len(todo)) if progress else None
    # RTL points build into DIR/rtl (absolute: a worker's working folder may differ)
    args = (grid.compute, {**grid.settings(), "build_dir": str((out / "rtl").resolve())})

    def keep(results):
        failed = 0
        for pid, record in results:
            write_record(store / f"{pid}.json", record_file(pid, points_of[pid], grid.key, record))
            records[pid] = record
            failed += bool(record["error"])
        if bar:
            bar.advance(len(results), failed)

    points_of = dict(todo)
    if large and todo:
        # measure a point's time on a few of them (kept as results), then say what it costs
        # (computing and storing them: storing is the client's, whatever the workers)
        sample = todo[: 1 if set(SLOW_KINDS) & set(grid.compute) else 50]
        run_points(sample[:1], *args)  # the first point pays for the imports: not timed
        t = time.perf_counter()
        keep(run_points(sample, *args))
        seconds = (time.perf_counter() - t) / len(sample)
        todo = todo[len(sample) :]
        say(_expected(grid, len(todo) + len(sample), seconds, workers, scheduler))
    if todo:
        size = SLOW_BATCH if set(SLOW_KINDS) & set(grid.compute) else BATCH
        batches = [todo[i : i + size] for i in range(0, len(todo), size)]
        if workers == 0 and not scheduler:  # inline, no Dask (tests, debugging)
            for b in batches:
                keep(run_points(b, *args))
        else:
            from dask.distributed import as_completed

            client, cluster = dask_client(scheduler, workers)
            try:
                futures = [client.submit(run_points, b, *args, pure=False) for b in batches]
                for fut in as_completed(futures):
                    keep(fut.result())
            finally:
                client.close()
                if cluster is not None:
                    cluster.close()
    if bar:
        bar.close()
    return [row(pid, p, records[pid]) for pid, p in zip(ids, grid.points, strict=True)]
