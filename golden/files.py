"""Files written so that a reader never sees half of one: the run's results, reports, records
and generated sources are written to a temporary name beside the target, flushed to disk, then
renamed over it (checkpoints keep their previous one too: :mod:`nitihw.golden.checkpoint`)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def raise_named(exc: BaseException, path: Path) -> None:
    """Raise ``exc`` again as an OSError naming ``path`` when it is one that names no file (a
    failed write, a full disk: ``open`` names its file, ``write`` and ``fsync`` do not);
    otherwise return, for the caller's ``raise``."""
    if isinstance(exc, OSError) and exc.filename is None:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a torn one.
    ``fsync=False`` skips the flush to disk (a file a power cut may leave empty or torn, for
    readers that check what they read, such as sweep records)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise_named(exc, path)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_text(path: Path, what: str, error: type[Exception] = ValueError, sig: bool = False) -> str:
    """The UTF-8 text of ``path`` (``sig``: a byte-order mark dropped), or ``error`` naming
    ``what`` and why: it cannot be read, or it is not a text file (the first byte that is not
    UTF-8 and where; NUL bytes)."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig" if sig else "utf-8")
    except OSError as exc:
        raise error(f"{what}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise error(
            f"{what}: not a text file (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start} is not UTF-8)"
        ) from None
    if "\x00" in text:
        raise error(f"{what}: not a text file (it holds NUL bytes)")
    return text
