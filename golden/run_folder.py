"""Run folders that are never clobbered, and output paths checked before any work starts.

- :func:`check_run_folder` (before the dataset loads): ``--out`` must be a folder this user can
  write, or a path one can be made at; a folder that already holds a run (a checkpoint or a
  ``result.json``) is refused unless ``--resume`` (continue it) or ``--overwrite`` (replace it)
  is given; ``--resume`` needs a checkpoint there.
- :class:`RunLock`: ``DIR/run.lock`` holds the PID, host and start time of the one process
  writing the folder; a second writer is refused. A lock whose process is gone (killed, the
  machine rebooted) is stale: it is removed, with a note, and the new run takes the folder.
- :func:`check_output_file`: a file option such as ``--json`` can be written, checked up front:
  never a file a run owns (:data:`OWNED_NAMES` in a folder that holds a run, or the run's
  own), never in a folder another live process holds the lock of, never over a file that is
  not of the option's kind (a checkpoint named by ``--json`` stays a checkpoint).
- :func:`check_output_dir`: an output folder (``--out`` of verilog, verify, estimate, synth,
  sweep) is writable and not locked by another live run.
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
#: ``nitihw train --segments``: the summary of the segments checked
SEGMENTS_NAME = "segments.json"
#: an internal error's traceback, kept in the command's ``--out``
TRACEBACK_NAME = "internal-error.txt"
#: ``nitihw sweep``: the grid a sweep folder holds
SWEEP_NAME = "sweep.json"
#: the files that make a folder "hold a run" (the ones --overwrite replaces)
RUN_FILES = (CHECKPOINT_NAME, PREVIOUS_NAME, RESULT_NAME)
#: files a run writes besides those (removed by --overwrite too, so nothing stale is left)
SIDE_FILES = ("rtl_status.json", "datapath.vcd", "simulator.log")
#: every file a run folder's owner (a training run, its segments, a sweep) writes: no output
#: option may name one of them in a folder that holds a run
OWNED_NAMES = (*RUN_FILES, *SIDE_FILES, LOCK_NAME, SEGMENTS_NAME, TRACEBACK_NAME, SWEEP_NAME)
#: a process id above the kernel's limit (PID_MAX_LIMIT, 2^22) is no process
PID_LIMIT = 1 << 22
#: what each kind of output file starts with (after white space); an existing file that does
#: not is not replaced
FILE_KINDS = {"json": (b"{", b"["), "xml": (b"<",)}


class RunFolderError(ValueError):
    """An output path or run folder that cannot be used: the message names it and the fix."""


def check_writable_dir(path: Path, option: str) -> None:
    """``path`` is a folder this process can write files in: made if missing (with its
    parents), then proven by writing and removing a probe file."""
    path = Path(path)
    check_links(path, option)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{option} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
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


def check_links(path: Path, option: str) -> None:
    """No part of ``path`` is a symbolic link to nothing or a loop of links (either would make
    every later check fail obscurely)."""
    path = Path(path)
    for p in [path, *path.parents]:
        if not p.is_symlink():
            continue
        try:
            p.resolve(strict=True)
        except FileNotFoundError:
            raise RunFolderError(
                f"{option} {path}: {p} is a symbolic link to {os.readlink(p)}, which does not exist"
            ) from None
        except (RuntimeError, OSError):  # ELOOP (Python 3.11 says RuntimeError)
            raise RunFolderError(f"{option} {path}: {p} is a loop of symbolic links") from None


def check_output_file(
    path: Path, option: str, own: Path | None = None, kind: str | None = "json"
) -> None:
    """``path`` can be written as a file, and writing it loses nothing: it is not a folder, its
    folder is writable and not locked by another live run, it is not a file a run owns
    (:data:`OWNED_NAMES`) there or in ``own`` (this command's run folder), and an existing
    file there is of ``kind`` (:data:`FILE_KINDS`; None: any)."""
    path = Path(path)
    check_links(path, option)
    if path.is_dir():
        raise RunFolderError(f"{option} {path} is a folder, not a file")
    check_writable_dir(path.parent, f"{option} {path}: its folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise RunFolderError(f"{option} {path} is not writable")
    target = path.resolve()
    folder = target.parent
    mine = own is not None and folder == Path(own).resolve()
    if mine and target.name in OWNED_NAMES:
        raise RunFolderError(
            f"{option} {path} is this run's own {target.name}: choose a file outside the run's "
            "files"
        )
    if not mine:
        holder = lock_holder(folder / LOCK_NAME)
        if holder:
            raise RunFolderError(
                f"{option} {path}: its folder {folder} is in use by another nitihw run "
                f"({holder}): choose another path"
            )
        held = [n for n in OWNED_NAMES if (folder / n).exists()]
        if target.name in OWNED_NAMES and held:
            raise RunFolderError(
                f"{option} {path} would replace the {target.name} of the run in {folder} "
                f"(it holds {', '.join(held)}): choose another path"
            )
    if kind is not None and target.is_file():
        _check_kind(path, option, kind)


def _check_kind(path: Path, option: str, kind: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise RunFolderError(f"{option} {path}: cannot read it ({_why(exc)})") from None
    text = head.lstrip()
    if text and not text.startswith(FILE_KINDS[kind]):
        raise RunFolderError(
            f"{option} {path} exists and is not a {kind.upper()} file (it starts with "
            f"{head[:8]!r}): refusing to replace it; remove it or choose another path"
        )


def check_output_dir(path: Path, option: str = "--out") -> None:
    """An output folder: writable (made if missing), and not locked by another live run."""
    check_writable_dir(path, option)
    holder = lock_holder(Path(path) / LOCK_NAME)
    if holder:
        raise RunFolderError(
            f"{option} {path} is in use by another nitihw run ({holder}): wait for it to end, "
            "or choose another folder"
        )


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a run folder a run cannot use (see the module's docstring)."""
    out = Path(out)
    if resume and overwrite:
        raise RunFolderError(
            "give --resume (continue the run) or --overwrite (replace it), not both"
        )
    check_writable_dir(out, "--out")
    for name in (*RUN_FILES, *SIDE_FILES, LOCK_NAME):
        p = out / name
        if p.exists() and not p.is_file():
            raise RunFolderError(
                f"--out {out}: {p} is not a file (a run writes its {name} there): move it away"
            )
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
    if not 0 < pid < PID_LIMIT:  # 0 and -1 would signal a process group: never a holder
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except (OSError, OverflowError):
        return False
    return True


class LockRecord:
    """What ``run.lock`` says: the holder's pid, host, start time and since when."""

    def __init__(self, pid: int, host: str, start, since: str):
        self.pid, self.host, self.start, self.since = pid, host, start, since

    def here(self) -> bool:
        return self.host == socket.gethostname()

    def running(self) -> bool:
        """The holder is alive (on this host: the same process, not a reused pid; on
        another host it cannot be told, so it is taken as alive)."""
        if not self.here():
            return True
        return _alive(self.pid) and (
            self.start is None or _process_start(self.pid) in (None, self.start)
        )

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.since}"


def read_lock(path: Path) -> LockRecord | None:
    """The record of the lock at ``path``; None when it is unreadable or impossible (not
    JSON, a pid outside 1..2^22, a host that is not a string). FileNotFoundError when there
    is none."""
    text = Path(path).read_text(errors="replace")
    try:
        held = json.loads(text)
        pid, host, start = held["pid"], held["host"], held.get("start")
        since = str(held.get("since", "?"))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < PID_LIMIT:
        return None
    if not isinstance(host, str) or not (start is None or isinstance(start, str)):
        return None
    return LockRecord(pid, host, start, since)


def lock_holder(path: Path) -> LockRecord | None:
    """The live holder of the lock at ``path``, or None (no lock, a stale or unreadable one)."""
    try:
        record = read_lock(path)
    except OSError:
        return None
    return record if record is not None and record.running() else None


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
        try:
            try:
                tmp.write_text(self.mine)
            except OSError as exc:  # a full disk: name the folder, leave no temporary
                raise RunFolderError(
                    f"--out {self.out}: cannot write the lock {self.path} ({_why(exc)})"
                ) from None
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
            held = read_lock(self.path)
        except FileNotFoundError:
            return  # released meanwhile: try again
        except OSError as exc:
            raise RunFolderError(f"cannot read the lock {self.path} ({_why(exc)})") from None
        if held is None:
            self.say(f"removed an unreadable lock {self.path}")
            self.path.unlink(missing_ok=True)
            return
        if not held.here():
            raise RunFolderError(
                f"--out {self.out} is locked by pid {held.pid} on host {held.host} (since "
                f"{held.since}): if no run is using it, delete {self.path}"
            )
        if held.running():
            raise RunFolderError(
                f"--out {self.out} is in use by another nitihw run ({held}): wait for it to "
                "end, or choose another --out"
            )
        self.say(
            f"removed a stale lock {self.path} (pid {held.pid} on {held.host} is no longer running)"
        )
        self.path.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            if self.path.read_text() == self.mine:
                self.path.unlink()
