"""kill -9 at any point of a run, then --resume: the run ends with the uninterrupted run's bits.

Each run is a real ``python -m nitihw train`` process, killed with SIGKILL (no clean-up, no
Ctrl-C handler): at every named point of a checkpoint write (``NITIHW_CRASH_AT``,
:data:`nitihw.golden.checkpoint.CRASH_POINTS`), and, in the slow suite, at random moments of a
chain of runs, each resuming the last (>= 20 kills)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nitihw.golden.checkpoint import CHECKPOINT_NAME, CRASH_POINTS, read_checkpoint
from nitihw.golden.datasets import load_dataset
from nitihw.golden.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--model", "mlp-digits", "--dataset", "digits", "--batch", "32"]


def command(out: Path, epochs: int, resume: bool, every: int = 0) -> list[str]:
    argv = [sys.executable, "-m", "nitihw", "train", *RUN, "--epochs", str(epochs)]
    argv += ["--out", str(out), "--checkpoint-every", str(every), "--threads", "1"]
    return argv + (["--resume"] if resume else [])


def env(crash_at: str | None = None) -> dict:
    e = dict(os.environ)
    e.pop("NITIHW_CRASH_AT", None)
    if crash_at:
        e["NITIHW_CRASH_AT"] = crash_at
    return e


def uninterrupted(epochs: int) -> str:
    cfg = TrainConfig(model="mlp-digits", dataset="digits", batch=32, epochs=epochs)
    return train(cfg, load_dataset("digits"))["weights_sha256"]


def result_hash(out: Path) -> str:
    import json

    return json.loads((out / "result.json").read_text())["weights_sha256"]


def finish(out: Path, epochs: int, every: int = 0) -> subprocess.CompletedProcess:
    """Run to the end: resume if a checkpoint survived, else start again."""
    resume = (out / CHECKPOINT_NAME).exists()
    return subprocess.run(
        command(out, epochs, resume, every), env=env(), capture_output=True, text=True
    )


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_killed_while_writing_a_checkpoint(tmp_path, point):
    out, epochs = tmp_path / "run", 3
    # the second checkpoint write (the end of epoch 2) dies at this point
    killed = subprocess.run(
        command(out, epochs, False), env=env(f"{point}:2"), capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    meta, _ = read_checkpoint(out / CHECKPOINT_NAME)  # whole: the old one or the new one
    assert meta["state"]["step"] in (45, 90)
    assert (out / "run.lock").exists()  # left behind by the kill: stale
    done = finish(out, epochs)
    assert done.returncode == 0, done.stderr
    assert "removed a stale lock" in done.stderr
    assert result_hash(out) == uninterrupted(epochs)
    assert not list(out.glob(".*tmp")) and not (out / "run.lock").exists()


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume(tmp_path):
    """24 kills: 16 at random moments (start-up, training, evaluation, checkpoint writes), 8
    inside checkpoint writes; every run resumes the one before it; the last one finishes."""
    out, epochs, every = tmp_path / "run", 6, 7
    rng = np.random.default_rng(16)
    plan = [("random", None)] * 16 + [("point", p) for p in CRASH_POINTS * 2]
    plan = [plan[i] for i in rng.permutation(len(plan))]
    killed = tries = 0
    while killed < len(plan):
        kind, point = plan[tries % len(plan)]
        tries += 1
        assert tries < 3 * len(plan), "too many runs finished before their kill"
        resume = (out / CHECKPOINT_NAME).exists()
        if kind == "point":
            nth = int(rng.integers(1, 4))
            p = subprocess.run(
                command(out, epochs, resume, every),
                env=env(f"{point}:{nth}"),
                capture_output=True,
                text=True,
            )
            rc = p.returncode
        else:
            proc = subprocess.Popen(
                command(out, epochs, resume, every),
                env=env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(float(rng.uniform(0.2, 2.5)))
            proc.send_signal(signal.SIGKILL)
            rc = proc.wait()
        if rc == 0:  # it finished before the kill: run the chain again from scratch
            for f in out.iterdir():
                f.unlink()
            continue
        assert rc == -signal.SIGKILL
        killed += 1
        if (out / CHECKPOINT_NAME).exists():
            read_checkpoint(out / CHECKPOINT_NAME)  # never torn
    done = finish(out, epochs, every)
    assert done.returncode == 0, done.stderr
    assert result_hash(out) == uninterrupted(epochs)
