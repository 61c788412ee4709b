"""Where a figure or a record was made: the commit and the machine (bench scripts, segments)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository (sim/command/ -> the root)


def machine() -> str:
    """``2 cores (AMD EPYC), Python 3.11.7``: this machine's cores, CPU model and Python."""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def git_rev() -> str:
    """The commit measured: ``$NITIHW_GIT_REV`` where set (a copied checkout without .git, as
    on the GPU machines), else git's; ``unknown`` without either."""
    if os.environ.get("NITIHW_GIT_REV"):
        return os.environ["NITIHW_GIT_REV"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"
