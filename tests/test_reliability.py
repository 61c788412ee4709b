"""No run lost or overwritten, every bad input a one-line error (exit 2) before work starts:
each case of the reliability issue, through the command line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from nitihw.golden.checkpoint import (
    CHECKPOINT_NAME,
    PREVIOUS_NAME,
    checksum,
    encode_checkpoint,
    read_checkpoint,
)
from nitihw.golden.limits import LIMITS
from nitihw.golden.run_folder import LOCK_NAME, _process_start
from nitihw.sim.command.cli import build_parser, main
from tests.test_datasets import write_idx_dir

DIGITS = ["--model", "mlp-digits", "--dataset", "digits"]


def train(*argv):
    return main(["train", *DIGITS, *argv])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("nitihw"), err
    assert "Traceback" not in err
    return err


@pytest.fixture
def run_dir(tmp_path, capsys):
    """A folder holding a 2-epoch run (45 steps an epoch at batch 32): its checkpoint is at
    step 90, the one before it (kept) at step 45."""
    out = tmp_path / "run"
    assert train("--batch", "32", "--epochs", "2", "--out", str(out)) == 0
    capsys.readouterr()
    return out


# ---- checkpoints ----------------------------------------------------------------------------
def test_the_previous_checkpoint_is_kept(run_dir):
    assert read_checkpoint(run_dir / CHECKPOINT_NAME)[0]["state"]["step"] == 90
    meta, _ = read_checkpoint(run_dir / PREVIOUS_NAME)
    assert meta["state"]["step"] == 45 and meta["version"] == 2
    assert meta["manifest"]["model"] == "mlp-digits" and meta["manifest"]["step"] == 45
    assert meta["manifest"]["arrays"]["w0"] == {"shape": [128, 64], "dtype": "|i1"}


def _rewrite(path, change_arrays=None, change_meta=None, sign=True):
    """A checkpoint re-encoded with changed contents; ``sign``: with the checksum of the
    changed contents (else the original's)."""
    meta, arrays = read_checkpoint(path)
    if change_arrays:
        arrays = change_arrays(arrays)
    data = encode_checkpoint(meta["identity"], meta["state"], arrays)
    if change_meta:
        import io
        import zipfile

        buf = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buf, "w") as dst:
            for item in src.infolist():
                body = src.read(item)
                if item.filename == "meta.npy":
                    m = json.loads(np.lib.format.read_array(io.BytesIO(body)).tobytes())
                    old = m["sha256"]
                    change_meta(m)
                    if sign and m["sha256"] == old:
                        m["sha256"] = checksum(m, arrays)
                    b = io.BytesIO()
                    np.lib.format.write_array(b, np.frombuffer(json.dumps(m).encode(), np.uint8))
                    body = b.getvalue()
                dst.writestr(item, body)
        data = buf.getvalue()
    path.write_bytes(data)


def _flip(path, at):
    raw = bytearray(path.read_bytes())
    raw[at % len(raw)] ^= 0x40
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage,why",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-700]), "not a valid archive"),
        (lambda p: p.write_bytes(p.read_bytes()[:1500]), "not a valid archive"),
        (lambda p: _flip(p, 2000), ""),  # inside w0's data: CRC or checksum
        (lambda p: _flip(p, 100), ""),  # inside the manifest
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(os.urandom(4096)), "not an .npz archive"),
        (lambda p: _rewrite(p, lambda a: {k: v for k, v in a.items() if k != "w1"}), "arrays"),
        (lambda p: _rewrite(p, lambda a: a | {"w9": np.zeros(3, np.int8)}), "arrays"),
        (
            lambda p: _rewrite(p, lambda a: a | {"w0": a["w0"].astype(np.float64) * 1000}),
            "array 'w0' is float64",
        ),
        (lambda p: _rewrite(p, change_meta=lambda m: m["state"].pop("step")), "run state fields"),
        (lambda p: _rewrite(p, change_meta=lambda m: m["state"].update(x=1)), "run state fields"),
        (lambda p: _rewrite(p, change_meta=lambda m: m.update(sha256="0" * 64)), "checksum"),
        (
            lambda p: _rewrite(p, change_meta=lambda m: m["state"].update(step=7), sign=False),
            "checksum mismatch",
        ),
        (lambda p: _rewrite(p, change_meta=lambda m: m["state"].update(step=7)), "step"),
        (lambda p: _rewrite(p, change_meta=lambda m: m.update(version=99)), "format version 99"),
    ],
)
def test_a_damaged_checkpoint_is_named(run_dir, capsys, damage, why):
    damage(run_dir / CHECKPOINT_NAME)
    rc = train("--batch", "32", "--epochs", "3", "--out", str(run_dir), "--resume")
    err = one_line_error(capsys)
    assert rc == 2
    assert f"checkpoint {run_dir / CHECKPOINT_NAME} is damaged" in err and why in err
    assert "start again without --resume or restore a copy" in err
    assert f"{run_dir / PREVIOUS_NAME} is intact, step 45" in err


def test_the_kept_checkpoint_resumes_to_the_same_bits(run_dir, tmp_path, capsys):
    (run_dir / CHECKPOINT_NAME).write_bytes(b"torn")
    os.replace(run_dir / PREVIOUS_NAME, run_dir / CHECKPOINT_NAME)  # the restore the error says
    assert train("--batch", "32", "--epochs", "3", "--out", str(run_dir), "--resume") == 0
    assert train("--batch", "32", "--epochs", "3", "--out", str(tmp_path / "fresh")) == 0
    hashes = [json.loads((d / "result.json").read_text())["weights_sha256"] for d in
              (run_dir, tmp_path / "fresh")]  # fmt: skip
    assert hashes[0] == hashes[1]


def test_another_runs_checkpoint_is_refused(run_dir, capsys):
    rc = train("--batch", "16", "--epochs", "3", "--out", str(run_dir), "--resume")
    assert rc == 2
    assert "checkpoint field 'batch' is 32 but this run has 16" in one_line_error(capsys)


# ---- run folders ----------------------------------------------------------------------------
def test_a_run_folder_is_never_clobbered(run_dir, capsys):
    before = (run_dir / CHECKPOINT_NAME).read_bytes()
    assert train("--batch", "32", "--out", str(run_dir)) == 2
    err = one_line_error(capsys)
    assert f"--out {run_dir} already holds a run (checkpoint.npz" in err
    assert "--resume" in err and "--overwrite" in err
    assert (run_dir / CHECKPOINT_NAME).read_bytes() == before
    assert train("--batch", "32", "--out", str(run_dir), "--resume", "--overwrite") == 2
    assert "not both" in one_line_error(capsys)
    assert train("--batch", "32", "--steps", "3", "--out", str(run_dir), "--overwrite") == 0
    assert "--overwrite: removed checkpoint.npz, checkpoint.prev.npz, result.json" in (
        capsys.readouterr().err
    )
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 3
    assert not (run_dir / PREVIOUS_NAME).exists()


def _lock(out, pid, host=None, start=None):
    out.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": host or socket.gethostname(), "start": start, "since": "t"}
    (out / LOCK_NAME).write_text(json.dumps(record))


def test_a_live_lock_refuses_a_second_writer(tmp_path, capsys):
    holder = subprocess.Popen(["sleep", "30"])
    try:
        _lock(tmp_path / "o", holder.pid, start=_process_start(holder.pid))
        assert train("--steps", "1", "--out", str(tmp_path / "o")) == 2
        err = one_line_error(capsys)
        assert f"is in use by another nitihw run (pid {holder.pid} on" in err
    finally:
        holder.kill()
        holder.wait()
    _lock(tmp_path / "p", 1, host="elsewhere")
    assert train("--steps", "1", "--out", str(tmp_path / "p")) == 2
    assert "is locked by pid 1 on host elsewhere" in one_line_error(capsys)


def test_a_stale_lock_is_removed(tmp_path, capsys):
    gone = subprocess.Popen(["true"])
    gone.wait()
    _lock(tmp_path / "o", gone.pid)
    assert train("--steps", "1", "--out", str(tmp_path / "o")) == 0
    assert f"removed a stale lock {tmp_path / 'o' / LOCK_NAME}" in capsys.readouterr().err
    assert not (tmp_path / "o" / LOCK_NAME).exists()
    # a PID reused by another process (its start time differs) is stale too
    _lock(tmp_path / "o", os.getppid(), start="1")
    assert train("--steps", "1", "--out", str(tmp_path / "o"), "--overwrite") == 0
    assert "removed a stale lock" in capsys.readouterr().err


def test_two_runs_at_once_on_one_folder(tmp_path, capsys):
    out = tmp_path / "o"
    first = subprocess.Popen(
        [sys.executable, "-m", "nitihw", "train", *DIGITS, "--epochs", "200", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            if (out / LOCK_NAME).exists():
                break
            time.sleep(0.05)
        assert train("--epochs", "200", "--out", str(out), "--overwrite") == 2
        assert f"pid {first.pid}" in one_line_error(capsys)
    finally:
        first.kill()
        first.wait()


# ---- output paths, checked before any work --------------------------------------------------
@pytest.mark.parametrize(
    "where,message",
    [
        (lambda t: t / "file", "is a file, not a folder"),
        (lambda t: t / "file" / "run", "is a file, so no folder can be made there"),
        (lambda t: "/proc/nitihw-run", "cannot make the folder"),
    ],
)
def test_a_bad_out_is_refused_before_the_data_loads(tmp_path, capsys, where, message):
    (tmp_path / "file").write_text("x")
    assert train("--out", str(where(tmp_path)), "--dataset", "mnist:/no/such") == 2
    assert message in one_line_error(capsys)


@pytest.mark.parametrize(
    "where,message",
    [
        (lambda t: t, "is a folder, not a file"),
        (lambda t: t / "file" / "r.json", "/file is a file, not a folder"),
    ],
)
def test_a_bad_json_is_refused_before_the_run(tmp_path, capsys, where, message):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "run"
    assert train("--out", str(out), "--json", str(where(tmp_path))) == 2
    assert message in one_line_error(capsys)
    assert not (out / CHECKPOINT_NAME).exists()


# ---- limits: one table, every command -------------------------------------------------------
@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", *DIGITS, "--kmax", "0"], "argument --kmax: must be an integer in 1..65536"),
        (["train", *DIGITS, "--kmax", "-3"], "argument --kmax: must be an integer in 1..65536"),
        # named, and before the dataset (which does not exist) loads
        (
            ["train", "--model", "lenet", "--dataset", "mnist:/no/such", "--seed", "-1"],
            "argument --seed: must be an integer in 0..4294967295, got -1",
        ),
        (["train", *DIGITS, "--array", "1000000x1000000"], "--array rows must be an integer"),
        (["train", *DIGITS, "--epochs", "x"], "argument --epochs: 'x' is not an integer"),
        (["train", *DIGITS, "--lr", "nan"], "argument --lr: must be a number > 0"),
        (["train", *DIGITS, "--threads", "0"], "argument --threads: must be an integer in 1..256"),
        (
            ["estimate", "--model", "lenet", "--train-samples", "0", "--out", "x"],
            "argument --train-samples: must be an integer in 1..",
        ),
        (
            ["estimate", "--model", "lenet", "--array", "1000000x1000000", "--out", "x"],
            "--array rows must be an integer in 1..256",
        ),
        (
            ["verilog", "--operand-bits", "9", "--out", "x"],
            "argument --operand-bits/--op-bits: must be 2, 3, 4, 5, 6, 7, 8 or 16",
        ),
        (["verilog", "--rows", "257", "--out", "x"], "argument --rows: must be an integer in"),
        (
            ["synth", "--rows", "2", "--cols", "2", "--accumulator-bits", "64"],
            "--accumulator-bits/--acc-bits: must be",
        ),
        (["verify", "--shapes", "0x2"], "--shapes rows must be an integer in 1..256"),
    ],
)
def test_every_limit_is_one_line_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x").exists()


def test_the_limits_are_the_same_everywhere(tmp_path):
    """The Datapath, the accelerator TOML, the cycle model and the options use one table."""
    from nitihw.rtl.datapath import Datapath
    from nitihw.sim.model.accelerator import ConfigError, load_accelerator
    from nitihw.sim.model.cycle_model import ArrayConfig

    for key, section in (("rows", "array"), ("cols", "array"), ("kmax", "array")):
        hi = LIMITS[key].hi
        with pytest.raises(ValueError, match=f"{key} must be an integer in 1..{hi}"):
            Datapath(**{"rows": 2, "cols": 2, key: hi + 1})
        cfg = tmp_path / "a.toml"
        cfg.write_text(f"[{section}]\n{key} = {hi + 1}\n")
        with pytest.raises(ConfigError, match=f"{section}.{key} must be an integer in 1..{hi}"):
            load_accelerator(cfg)
        with pytest.raises(ValueError, match=f"{key} must be an integer in 1..{hi}"):
            ArrayConfig(**{"rows": 2, "cols": 2, key: hi + 1})
        opt = build_parser()._subparsers._group_actions[0].choices["verilog"]
        assert opt.parse_args([f"--{key}", str(hi), "--out", "x"])
    with pytest.raises(ValueError, match="operand_bits must be 2, 3, 4, 5, 6, 7, 8 or 16, got 12"):
        Datapath(2, 2, operand_bits=12)


def test_a_dataset_without_images_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "e").mkdir()
    write_idx_dir(tmp_path / "d", n_train=0)
    assert main(["train", "--model", "lenet", "--dataset", f"mnist:{tmp_path / 'd'}"]) == 2
    assert "the train set has 0 images" in one_line_error(capsys)
    write_idx_dir(tmp_path / "e", n_test=0)
    assert main(["train", "--model", "lenet", "--dataset", f"mnist:{tmp_path / 'e'}"]) == 2
    assert "the test set has 0 images" in one_line_error(capsys)
    assert not (tmp_path / "runs").exists()  # the refused runs left no folder behind


# ---- what a run prints ----------------------------------------------------------------------
def test_a_run_ends_with_its_paths(tmp_path, capsys):
    out = tmp_path / "o"
    assert train("--steps", "2", "--out", str(out), "--json", str(tmp_path / "r.json")) == 0
    text = capsys.readouterr().out
    assert f"result: {out / 'result.json'} and {tmp_path / 'r.json'}" in text
    assert f"checkpoint: {out / CHECKPOINT_NAME}" in text


def test_the_float_twin_shows_its_own_settings(tmp_path, capsys):
    assert train("--profile", "float32", "--out", str(tmp_path / "o")) == 0
    err = capsys.readouterr().err
    header = err.splitlines()[0]
    assert "lr 0.05, momentum 0.9" in header
    assert " mu " not in header and "array" not in header and "cycle model" not in header
    epoch = next(line for line in err.splitlines() if line.startswith("epoch 1/1:"))
    assert " mu " not in epoch


def test_help_shows_defaults_and_the_real_folder_name(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, default in (("--epochs", "1"), ("--batch", "64"), ("--seed", "0")):
        assert f"(default: {default})" in text.split(option, 2)[2].split("--", 1)[0]
    assert "runs/MODEL-DATASET-PROFILE-sSEED" in text


def test_the_docs_print_the_table_of_limits():
    from pathlib import Path

    from nitihw.golden.limits import markdown_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text()
    assert markdown_table() in doc


def test_a_version_1_checkpoint_still_resumes(run_dir, capsys):
    """Checkpoints written before the format had a version, manifest and checksum."""
    import io

    meta, arrays = read_checkpoint(run_dir / CHECKPOINT_NAME)
    old = {"identity": meta["identity"], "state": meta["state"]}
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(old).encode(), np.uint8), **arrays)
    (run_dir / CHECKPOINT_NAME).write_bytes(buf.getvalue())
    assert train("--batch", "32", "--epochs", "3", "--out", str(run_dir), "--resume") == 0
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 135


def test_the_same_command_twice_keeps_the_first_run(tmp_path, monkeypatch, capsys):
    """The README's command run again: its default folder holds a run, so it is refused."""
    monkeypatch.chdir(tmp_path)
    assert train("--steps", "2") == 0
    first = (tmp_path / "runs" / "mlp-digits-digits-niti-s0" / "result.json").read_text()
    capsys.readouterr()
    assert train("--steps", "2") == 2
    assert "--out runs/mlp-digits-digits-niti-s0 already holds a run" in one_line_error(capsys)
    assert (tmp_path / "runs" / "mlp-digits-digits-niti-s0" / "result.json").read_text() == first


# ---- internal errors ------------------------------------------------------------------------


def _fault_in_step(monkeypatch, after: int):
    """Make the golden ReLU fail (an IndexError: nitihw's own fault) from its ``after``-th call."""
    from nitihw.golden.backend import NumpyHostOps

    calls = {"n": 0}
    relu = NumpyHostOps.relu

    def faulty(self, x):
        calls["n"] += 1
        if calls["n"] > after:
            raise IndexError("index 7 is out of bounds (injected)")
        return relu(self, x)

    monkeypatch.setattr(NumpyHostOps, "relu", faulty)


@pytest.mark.parametrize("debug", [False, True])
def test_an_internal_fault_is_not_a_user_error(tmp_path, monkeypatch, capsys, debug):
    """Exit 70, said to be nitihw's fault, the traceback kept in the run folder (and on stderr
    with --debug), and the last checkpoint whole: the run resumes to the uninterrupted bits."""
    out = tmp_path / "run"
    argv = ["--batch", "32", "--epochs", "2", "--checkpoint-every", "10", "--out", str(out)]
    _fault_in_step(monkeypatch, after=25)  # one ReLU a step: step 25, after step 20's checkpoint
    rc = train(*argv, *(["--debug"] if debug else []))
    err = capsys.readouterr().err
    assert rc == 70
    line = next(x for x in err.splitlines() if x.startswith("nitihw: internal error"))
    assert "a fault in nitihw, not in your input" in line
    assert "input): model 'mlp-digits', step 25: IndexError: index 7 is out of bounds" in line
    kept = out / "internal-error.txt"
    assert f"traceback in {kept}" in line
    assert "Traceback (most recent call last)" in kept.read_text()
    assert "faulty" in kept.read_text()
    assert ("Traceback (most recent call last)" in err) == debug
    assert read_checkpoint(out / CHECKPOINT_NAME)[0]["state"]["step"] == 20
    monkeypatch.undo()
    assert train(*argv, "--resume") == 0
    capsys.readouterr()
    assert train("--batch", "32", "--epochs", "2", "--out", str(tmp_path / "whole")) == 0
    resumed = json.loads((out / "result.json").read_text())
    whole = json.loads((tmp_path / "whole" / "result.json").read_text())
    assert resumed["weights_sha256"] == whole["weights_sha256"]


def test_an_unexpected_error_outside_a_step_is_internal_too(monkeypatch, capsys, tmp_path):
    import nitihw.sim.command.train_run as train_run

    def broken(*a, **k):
        raise KeyError("settings")

    monkeypatch.setattr(train_run, "run_training", broken)
    assert train("--steps", "1", "--out", str(tmp_path / "r")) == 70
    assert "nitihw: internal error" in capsys.readouterr().err


def test_bad_input_stays_a_one_line_user_error(tmp_path, capsys):
    assert train("--batch", "0", "--out", str(tmp_path / "r")) == 2
    one_line_error(capsys)
