"""Run folders that are never clobbered, and output paths checked before any work starts.

- :func:`check_run_folder` (before the dataset loads): ``--out`` must be a folder this user can
  write, or a path one can be made at; a folder that already holds a run (a checkpoint or a
  ``result.json``) is refused unless ``--resume`` (continue it) or ``--overwrite`` (replace it)
  is given; ``--resume`` needs a checkpoint there.
- :class:`RunLock`: ``DIR/run.lock`` holds the PID, host and start time of the one process
  writing the folder; a second writer is refused. A lock whose process is gone (killed, the
  machine rebooted) is stale: it is removed, with a note, and the new run takes the folder.
- :func:`check_output_file`: a file option such as ``--json`` can be written, checked up front.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from nitihw.golden.checkpoint import (
    CHECKPOINT_NAME,
    PREVIOUS_NAME,
    remove_leftovers,
)

LOCK_NAME = "run.lock"
RESULT_NAME = "result.json"
#: the files that make a folder "hold a run" (the ones --overwrite replaces)
RUN_FILES = (CHECKPOINT_NAME, PREVIOUS_NAME, RESULT_NAME)
#: files a run writes besides those (removed by --overwrite too, so nothing stale is left)
SIDE_FILES = ("rtl_status.json", "datapath.vcd", "simulator.log")


class RunFolderError(ValueError):
    """An output path or run folder that cannot be used: the message names it and the fix."""


def check_writable_dir(path: Path, option: str) -> None:
    """``path`` is a folder this process can write files in: made if missing (with its
    parents), then proven by writing and removing a probe file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{option} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next(p for p in [path, *path.parents] if p.exists() and not p.is_dir())
        raise RunFolderError(
            f"{option} {path}: {blocker} is a file, so no folder can be made there"
        ) from None
    except OSError as exc:
        raise RunFolderError(f"{option} {path}: cannot make the folder ({_why(exc)})") from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunFolderError(f"{option} {path}: cannot write there ({_why(exc)})") from None


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_output_file(path: Path, option: str) -> None:
    """``path`` can be written as a file: it is not a folder, and its folder is writable."""
    path = Path(path)
    if path.is_dir():
        raise RunFolderError(f"{option} {path} is a folder, not a file")
    check_writable_dir(path.parent, f"{option} {path}: its folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise RunFolderError(f"{option} {path} is not writable")


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a run folder a run cannot use (see the module's docstring)."""
    out = Path(out)
    if resume and overwrite:
        raise RunFolderError(
            "give --resume (continue the run) or --overwrite (replace it), not both"
        )
    check_writable_dir(out, "--out")
    held = [n for n in RUN_FILES if (out / n).exists()]
    if resume:
        if not (out / CHECKPOINT_NAME).is_file():
            extra = f" (the folder holds {', '.join(held)})" if held else ""
            raise RunFolderError(f"--resume: no checkpoint at {out / CHECKPOINT_NAME}{extra}")
    elif held and not overwrite:
        raise RunFolderError(
            f"--out {out} already holds a run ({', '.join(held)}): continue it with --resume, "
            "replace it with --overwrite, or choose another --out"
        )


def clear_run_folder(out: Path) -> list[str]:
    """``--overwrite``: remove the previous run's files (under the lock); returns their names."""
    gone = []
    for name in (*RUN_FILES, *SIDE_FILES):
        p = Path(out) / name
        if p.is_file():
            p.unlink()
            gone.append(name)
    return gone


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), so a reused PID is not taken for the
    lock's holder; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except OSError:
        return False
    return True


class RunLock:
    """``with RunLock(out):`` holds ``out/run.lock`` for the block (see the module's
    docstring). ``say`` prints the notes (a stale lock removed)."""

    def __init__(self, out: Path, say=None):
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self.say = say or (lambda msg: print(f"nitihw: {msg}", file=sys.stderr, flush=True))
        self.mine: str | None = None

    def __enter__(self) -> RunLock:
        self.out.mkdir(parents=True, exist_ok=True)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start": _process_start(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "argv": sys.argv,
        }
        self.mine = json.dumps(record)
        tmp = self.out / f".{LOCK_NAME}.{os.getpid()}.tmp"
        tmp.write_text(self.mine)
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)  # atomic: fails if a lock exists
                    break
                except FileExistsError:
                    self._clear_stale()
            else:
                raise RunFolderError(f"could not take the lock {self.path}")
        finally:
            tmp.unlink(missing_ok=True)
        for p in remove_leftovers(self.out):
            self.say(f"removed {p.name}, left by an interrupted write")
        return self

    def _clear_stale(self) -> None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return  # released meanwhile: try again
        try:
            held = json.loads(text)
            pid, host, start = int(held["pid"]), str(held["host"]), held.get("start")
        except (ValueError, KeyError, TypeError):
            self.say(f"removed an unreadable lock {self.path}")
            self.path.unlink(missing_ok=True)
            return
        since = held.get("since", "?")
        if host != socket.gethostname():
            raise RunFolderError(
                f"--out {self.out} is locked by pid {pid} on host {host} (since {since}): "
                f"if no run is using it, delete {self.path}"
            )
        running = _alive(pid) and (start is None or _process_start(pid) in (None, start))
        if running:
            raise RunFolderError(
                f"--out {self.out} is in use by another nitihw run (pid {pid} on {host}, since "
                f"{since}): wait for it to end, or choose another --out"
            )
        self.say(f"removed a stale lock {self.path} (pid {pid} on {host} is no longer running)")
        self.path.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            if self.path.read_text() == self.mine:
                self.path.unlink()
