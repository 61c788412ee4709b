"""Running a sweep on Dask: the points not yet finished, in batches, on an embedded
``LocalCluster`` (default) or the cluster at ``--scheduler``; each point's record is stored
(atomically, ``DIR/points/ID.json``) as it arrives, so a rerun skips what is done and a killed
sweep loses at most the batches in flight.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from nitihw.golden.errors import ToolError
from nitihw.golden.parallel import available_cores
from nitihw.golden.train import atomic_write_json
from nitihw.sim.sweep.grid import Grid, point_id
from nitihw.sim.sweep.points import run_points

#: points per Dask task: a point's estimate takes about a millisecond, a task's round trip more
BATCH = 25
#: a training or RTL point takes seconds to minutes: one a task, so they spread over workers
SLOW_BATCH = 1
SLOW_KINDS = ("train", "rtl")


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
            f"{speed}  eta {eta:.0f}s"
        )

    def close(self) -> None:
        self.stream.write(("\r" if self.tty else "") + self.line(time.perf_counter()) + "\n")
        self.stream.flush()


def dask_client(scheduler: str | None, workers: int | None):
    """A Dask client, and the embedded cluster it owns (None for ``--scheduler``)."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="5s"), None
        except OSError as exc:
            raise ToolError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
    cluster = LocalCluster(
        n_workers=workers or available_cores(),
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    return Client(cluster), cluster


def run_sweep(
    grid: Grid,
    out: Path,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Run every unfinished point of ``grid``; returns every point's row (settings, outputs,
    ``error``), in the grid's order."""
    out = Path(out)
    store = out / "points"
    store.mkdir(parents=True, exist_ok=True)
    ids = [point_id(p) for p in grid.points]
    todo = [(pid, p) for pid, p in zip(ids, grid.points, strict=True) if not _done(store, pid)]
    bar = SweepProgress(len(ids), len(ids) - len(todo)) if progress else None
    # RTL points build into DIR/rtl (absolute: a worker's working folder may differ)
    args = (grid.compute, {**grid.settings(), "build_dir": str((out / "rtl").resolve())})
    if todo:
        size = SLOW_BATCH if set(SLOW_KINDS) & set(grid.compute) else BATCH
        batches = [todo[i : i + size] for i in range(0, len(todo), size)]
        if workers == 0 and not scheduler:  # inline, no Dask (tests, debugging)
            for b in batches:
                _store(store, run_points(b, *args), bar)
        else:
            from dask.distributed import as_completed

            client, cluster = dask_client(scheduler, workers)
            try:
                futures = [client.submit(run_points, b, *args, pure=False) for b in batches]
                for fut in as_completed(futures):
                    _store(store, fut.result(), bar)
            finally:
                client.close()
                if cluster is not None:
                    cluster.close()
    if bar:
        bar.close()
    return [
        {"point": pid, **p, **json.loads((store / f"{pid}.json").read_text())["record"]}
        for pid, p in zip(ids, grid.points, strict=True)
    ]


def _done(store: Path, pid: str) -> bool:
    path = store / f"{pid}.json"
    if not path.is_file():
        return False
    try:
        json.loads(path.read_text())["record"]
    except (ValueError, KeyError, OSError):
        return False  # unreadable: computed again
    return True


def _store(store: Path, results: list, bar: SweepProgress | None) -> None:
    failed = 0
    for pid, record in results:
        atomic_write_json(store / f"{pid}.json", {"record": record})
        failed += bool(record["error"])
    if bar:
        bar.advance(len(results), failed)
