"""``nitihw train --backend rtl --segments A-B``: a whole training run checked on the RTL, in epoch
segments that run side by side.

A run of E epochs on the simulated RTL takes E times an epoch. Every epoch's steps depend only
on the weights (and run state) the epoch starts from, and the golden model computes those in
seconds. So segment ``k`` resumes **golden's checkpoint after epoch k-1** on the RTL, trains
epoch ``k`` there, and must end with **golden's checkpoint after epoch k**: the same weights
(``weights_sha256``) and the same checkpoint arrays (``state_sha256``). If every segment
``1..E`` matches, the RTL run from scratch ends where golden's does, by induction, and the
segments ran in the time of one epoch on enough machines.

Segments are tasks on the executor of ``nitihw sweep`` and ``verify``
(:func:`nitihw.sim.cluster.dask_client`): an embedded Dask cluster (one worker process per
core, ``--workers``) or a running cluster (``--scheduler``). A task carries its starting
checkpoint and returns its record, so workers on other machines need no shared folder (each
builds the Datapath once in its own ``--build-dir``). Each segment simulates on one native
instance. Records are stored as they arrive (``OUT/segments/epoch-KK.json``, atomic) and a rerun
reuses those whose settings and starting checkpoint are unchanged; ``OUT/segments.json`` holds
them all, with the machine and the commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nitihw.golden.checkpoint import CHECKPOINT_NAME, read_checkpoint
from nitihw.golden.errors import InternalError
from nitihw.golden.files import atomic_write_bytes, atomic_write_json
from nitihw.golden.limits import current_names
from nitihw.golden.run_folder import RESULT_NAME, SEGMENTS_NAME
from nitihw.sim.command.provenance import git_rev, machine

#: a segment record's format (a rerun reuses records of this version only)
RECORD_VERSION = 1


def parse_segments(text: str, epochs: int) -> list[int]:
    """``"1-30"``, ``"7"`` or ``"1-3,9"`` as sorted epoch numbers, each within ``1..epochs``."""
    picked: set[int] = set()
    for part in str(text).split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(
                f"--segments {text!r}: expected epochs like 1-30, 7 or 1-3,9"
            ) from None
        if not 1 <= a <= b <= epochs:
            raise ValueError(
                f"--segments {text!r}: {part.strip()} is not within epochs 1..{epochs} "
                f"(--epochs {epochs})"
            )
        picked.update(range(a, b + 1))
    return sorted(picked)


def state_sha256(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of a checkpoint's arrays (every weight and state tensor, by name)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def golden_checkpoints(cfg, data, last: int, folder: Path, say) -> list[dict]:
    """Golden's run of ``cfg`` on ``data``, epoch by epoch up to ``last``: its checkpoint after
    each epoch kept in ``folder`` (``epoch-KK.npz``). Returns ``[{epoch, path, weights_sha256,
    state_sha256, test_accuracy}]`` for epochs 1..last (epoch 0 is a fresh start: no
    checkpoint)."""
    from nitihw.golden.backend import NumpyBackend
    from nitihw.golden.train import train

    folder.mkdir(parents=True, exist_ok=True)
    run = folder / "run"
    if run.exists():  # a fresh golden run every time: seconds, and never a stale one
        for f in run.iterdir():
            f.unlink()
    run.mkdir(exist_ok=True)
    marks = []
    t0 = time.perf_counter()
    for e in range(1, last + 1):
        upto = dataclasses.replace(cfg, backend="golden", epochs=e)
        backend = NumpyBackend(cfg.accumulator_bits, cfg.overflow)
        result = train(upto, data, backend, run, resume=e > 1)
        path = folder / f"epoch-{e:02d}.npz"
        atomic_write_bytes(path, (run / CHECKPOINT_NAME).read_bytes())
        _meta, arrays = read_checkpoint(path)
        marks.append(
            {
                "epoch": e,
                "path": str(path),
                "weights_sha256": result["weights_sha256"],
                "state_sha256": state_sha256(arrays),
                "test_accuracy": result["test_accuracy"],
            }
        )
    say(f"golden: checkpoints after epochs 1..{last} in {time.perf_counter() - t0:.1f} s")
    return marks


@functools.cache
def code_rev() -> str:
    """The commit of the code this process runs: git's HEAD when first asked, which a worker
    does as its first segment starts, having just imported nitihw (a long run's later
    segments would otherwise name commits made while it ran, whose code it never loaded)."""
    return git_rev()


def run_segment(opts: dict, epoch: int, start: bytes | None, build_dir: str) -> dict:
    """One segment, on whatever machine runs it: resume ``start`` (golden's checkpoint after
    epoch ``epoch - 1``; None for epoch 1) on the native RTL, train epoch ``epoch``, and return
    what it ended with. The run's own output is returned as ``log`` (its tail)."""
    from nitihw.sim.command.train_run import rtl_build, run_native_training

    commit = code_rev()  # the commit this process loaded its code at, not today's HEAD
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"nitihw-segment-{epoch}-") as tmp:
        out = Path(tmp) / "run"
        out.mkdir()
        first = 0
        if start is not None:
            (out / CHECKPOINT_NAME).write_bytes(start)
            first = read_checkpoint(out / CHECKPOINT_NAME)[0]["state"]["step"]
        o = {
            **opts,
            "epochs": epoch,
            "out": str(out),
            "resume": start is not None,
            "json": None,
            "sim_instances": 1,
            "build_dir": build_dir,
        }
        params, build = rtl_build(o)
        log = io.StringIO()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            run_native_training(o, params, build)
        result = json.loads((out / RESULT_NAME).read_text())
        _meta, arrays = read_checkpoint(out / CHECKPOINT_NAME)
    last = result["history"][-1]
    cycles = result["cycles"]
    return {
        "version": RECORD_VERSION,
        "epoch": epoch,
        "steps": result["steps"] - first,
        "weights_sha256": result["weights_sha256"],
        "state_sha256": state_sha256(arrays),
        "train_accuracy": last["train_accuracy"],
        "test_accuracy": last["test_accuracy"],
        "seconds": last["seconds"],
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "cycles": cycles["total_cycles"],
        "model_mismatches": cycles["model_mismatches"],
        "datapath_ops": result["datapath_ops"],
        "host": socket.gethostname(),
        "commit": commit,
        "log": log.getvalue()[-2000:],
    }


def run_segments(opts: dict, checked: tuple, say=None) -> int:
    """Check ``opts["segments"]`` of the run ``opts`` (``--backend rtl``) on the RTL against
    golden; returns 0 when every segment ends with golden's checkpoint. A segment that does
    not is a fault of nitihw (:class:`InternalError`), raised once every record is stored.
    ``checked``: what :func:`~nitihw.sim.command.train_run.check_options` returned for ``opts``."""
    from nitihw.sim.command.train_run import rtl_build
    from nitihw.sim.simulate.native import build_native

    say = say or (lambda msg: print(f"nitihw train: {msg}", file=sys.stderr, flush=True))
    epochs = parse_segments(opts["segments"], opts["epochs"])
    out = Path(opts["out"])
    store = out / "segments"
    store.mkdir(parents=True, exist_ok=True)
    build_dir = str(Path(opts.get("build_dir") or "build/rtl").resolve())
    cfg, data, array = checked
    params, build = rtl_build({**opts, "build_dir": build_dir}, (cfg, array))
    # what a stored segment record must share with this run to be reused
    identity = {**cfg.identity(), "datapath": params.as_dict()}

    marks = golden_checkpoints(cfg, data, max(epochs), store / "golden", say)
    golden = {m["epoch"]: m for m in marks}

    def start_of(e: int) -> bytes | None:
        return Path(golden[e - 1]["path"]).read_bytes() if e > 1 else None

    def start_sha(e: int) -> str | None:
        return golden[e - 1]["state_sha256"] if e > 1 else None

    records: dict[int, dict] = {}
    todo = []
    for e in epochs:
        rec = _stored(store / f"epoch-{e:02d}.json", identity, start_sha(e))
        if rec is not None:
            records[e] = rec
        else:
            todo.append(e)
    if records:
        say(f"{len(records)} segment(s) already checked in {store}; {len(todo)} to run")
    if todo:
        say(f"building the native Datapath in {build} (once) ...")
        build_native(params, build, log=say)
    scheduler, workers = opts.get("scheduler"), opts.get("workers")

    def keep(e: int, rec: dict) -> None:
        g = golden[e]
        rec["golden_weights_sha256"] = g["weights_sha256"]
        rec["matches_golden"] = (
            rec["weights_sha256"] == g["weights_sha256"]
            and rec["state_sha256"] == g["state_sha256"]
        )
        rec["identity"], rec["start_state_sha256"] = identity, start_sha(e)
        atomic_write_json(store / f"epoch-{e:02d}.json", rec)
        records[e] = rec
        verdict = "= golden" if rec["matches_golden"] else "DIFFERS from golden"
        say(
            f"segment {e}: {rec['steps']} steps, {rec['cycles']:,} cycles, "
            f"{rec['seconds']:.0f} s on {rec['host']}; weights {rec['weights_sha256'][:16]} "
            f"{verdict}, {rec['model_mismatches']} cycle-model mismatches, "
            f"{rec['datapath_ops'].get('host', 0)} host datapath operations "
            f"({len(records)}/{len(epochs)})"
        )

    if todo and workers == 0 and not scheduler:  # inline, no Dask (tests, debugging)
        for e in todo:
            keep(e, run_segment(opts, e, start_of(e), build_dir))
    elif todo:
        from dask.distributed import as_completed

        from nitihw.sim.cluster import dask_client

        client, cluster = dask_client(scheduler, workers)
        try:
            futures = {
                client.submit(run_segment, opts, e, start_of(e), build_dir, pure=False): e
                for e in todo
            }
            where = scheduler or f"{len(client.scheduler_info()['workers'])} Dask workers"
            say(f"{len(todo)} segment(s) on {where} ...")
            for fut in as_completed(futures):
                keep(futures[fut], fut.result())
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    return _report(opts, epochs, records, golden, out, say)


def _stored(path: Path, identity: dict, start: str | None) -> dict | None:
    """A stored segment record, if it is whole, current and of this run's settings and start."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("version") != RECORD_VERSION:
        return None
    if _current(rec.get("identity")) != identity or rec.get("start_state_sha256") != start:
        return None
    return rec


def _current(identity) -> dict | None:
    """A record's identity under today's names (records checked before the rename keep)."""
    if not isinstance(identity, dict):
        return None
    identity = current_names(identity)
    if isinstance(identity.get("datapath"), dict):
        identity["datapath"] = current_names(identity["datapath"])
    return identity


def _report(opts, epochs, records, golden, out: Path, say) -> int:
    rows = [records[e] for e in epochs]
    bad = [r["epoch"] for r in rows if not r["matches_golden"] or r["model_mismatches"]]
    leaks = [r["epoch"] for r in rows if r["datapath_ops"].get("host", 0)]
    whole = epochs == list(range(1, opts["epochs"] + 1)) and not bad and not leaks
    summary = {
        "model": opts["model"],
        "dataset": opts["dataset"],
        "profile": opts["profile"],
        "array": opts.get("array"),
        "batch": opts["batch"],
        "epochs": opts["epochs"],
        "segments": epochs,
        "commit": git_rev(),
        "machine": f"{platform.node()}: {machine()}",
        "golden_weights_sha256": golden[max(epochs)]["weights_sha256"],
        "whole_run_proved": whole,
        "records": rows,
    }
    atomic_write_json(out / SEGMENTS_NAME, summary)
    print(format_segments(summary))
    print(f"segments: {out / SEGMENTS_NAME}")
    if bad or leaks:
        raise InternalError(
            f"RTL segments {bad + leaks} do not end with golden's checkpoint (or ran datapath "
            f"operations on the host); records in {out / 'segments'}"
        )
    return 0


def format_segments(summary: dict) -> str:
    """The segments as a table, and what they prove."""
    head = ("epoch", "steps", "cycles", "seconds", "host", "weights_sha256", "golden", "mism.")
    rows = [
        (
            str(r["epoch"]),
            str(r["steps"]),
            f"{r['cycles']:,}",
            f"{r['seconds']:.1f}",
            r["host"],
            r["weights_sha256"][:16],
            "=" if r["matches_golden"] else "DIFFERS",
            str(r["model_mismatches"]),
        )
        for r in summary["records"]
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    total = sum(r["cycles"] for r in summary["records"])
    lines.append(f"{len(rows)} segments, {total:,} simulated cycles")
    if summary["whole_run_proved"]:
        lines.append(
            f"every epoch 1..{summary['epochs']} on the RTL ends with golden's checkpoint: the "
            f"whole run ends with golden's weights_sha256 {summary['golden_weights_sha256']}"
        )
    return "\n".join(lines)
