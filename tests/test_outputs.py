"""Reliability v2, the run folder's side: no output option can name a file a run owns, links to
nothing and impossible locks are one-line errors, a full disk names its file, SIGTERM is a
Ctrl-C, settings that cannot run are refused before the data loads, and a build folder in use
is never rebuilt under its run (docs/reliability.md)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nitihw.golden import files as golden_files
from nitihw.golden.checkpoint import CHECKPOINT_NAME, read_checkpoint, write_checkpoint
from nitihw.golden.run_folder import (
    LOCK_NAME,
    OWNED_NAMES,
    RunFolderError,
    RunLock,
    _process_start,
    check_output_file,
    lock_holder,
)
from nitihw.sim.command import train_run
from nitihw.sim.command.cli import main
from tests.test_reliability import DIGITS, one_line_error, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_a(tmp_path, capsys):
    """A finished 2-step run in ``tmp_path/a``."""
    out = tmp_path / "a"
    assert train("--steps", "2", "--out", str(out)) == 0
    capsys.readouterr()
    return out


def live_lock(folder: Path) -> None:
    """A lock held by this (live) process, as another run's would be."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": _process_start(os.getpid()),
    }
    (folder / LOCK_NAME).write_text(json.dumps({**record, "since": "now"}))


# ---- outputs never replace a run's files ------------------------------------------------------
def test_json_cannot_replace_another_runs_checkpoint(run_a, tmp_path, capsys):
    before = (run_a / CHECKPOINT_NAME).read_bytes()
    rc = train("--steps", "1", "--out", str(tmp_path / "b"), "--json", str(run_a / CHECKPOINT_NAME))
    assert rc == 2
    assert "would replace the checkpoint.npz of the run" in one_line_error(capsys)
    assert (run_a / CHECKPOINT_NAME).read_bytes() == before
    assert not (tmp_path / "b").exists()  # refused before any work: nothing made


def test_json_cannot_replace_a_checkpoint_under_any_name(run_a, tmp_path, capsys):
    copy = tmp_path / "keep.bin"
    copy.write_bytes((run_a / CHECKPOINT_NAME).read_bytes())
    assert train("--steps", "1", "--out", str(tmp_path / "b"), "--json", str(copy)) == 2
    assert "is not a JSON file" in one_line_error(capsys)
    read_checkpoint(copy)  # still a checkpoint


def test_json_cannot_name_the_runs_own_files(tmp_path, capsys):
    for name in ("result.json", CHECKPOINT_NAME, LOCK_NAME):
        out = tmp_path / "own"
        assert train("--steps", "1", "--out", str(out), "--json", str(out / name)) == 2
        assert f"is this run's own {name}" in one_line_error(capsys)


def test_json_in_a_folder_another_run_holds(tmp_path, capsys):
    busy = tmp_path / "busy"
    live_lock(busy)
    assert train("--steps", "1", "--out", str(tmp_path / "b"), "--json", str(busy / "r.json")) == 2
    assert "in use by another nitihw run" in one_line_error(capsys)


def test_a_previous_json_is_replaced(tmp_path, capsys):
    """What --json is for: its own earlier report is overwritten without fuss."""
    report = tmp_path / "report.json"
    report.write_text('{"old": true}')
    assert train("--steps", "1", "--out", str(tmp_path / "b"), "--json", str(report)) == 0
    assert "weights_sha256" in json.loads(report.read_text())


@pytest.mark.parametrize("name", OWNED_NAMES)
def test_no_owned_file_of_a_run_folder_is_writable(run_a, name):
    with pytest.raises(RunFolderError, match="would replace"):
        check_output_file(run_a / name, "--json", kind=None)


def test_junit_only_replaces_xml(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("my notes\n")
    with pytest.raises(RunFolderError, match="not a XML file"):
        check_output_file(path, "--junit", kind="xml")
    path.write_text("<testsuites/>")
    check_output_file(path, "--junit", kind="xml")


def test_an_output_folder_another_run_holds(tmp_path, capsys):
    busy = tmp_path / "busy"
    live_lock(busy)
    assert main(["estimate", "--model", "mlp-digits", "--out", str(busy), "--no-plots"]) == 2
    assert "is in use by another nitihw run" in one_line_error(capsys)


# ---- links and locks ------------------------------------------------------------------------
def test_links_to_nothing_and_loops_are_one_line(tmp_path, capsys):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    cases = [
        (["--out", str(tmp_path / "dangling")], "which does not exist"),
        (["--out", str(tmp_path / "dangling" / "run")], "which does not exist"),
        (["--out", str(tmp_path / "loop1")], "loop of symbolic links"),
        (["--out", str(tmp_path / "b"), "--json", str(tmp_path / "loop1" / "r.json")], "loop"),
        (["--out", str(tmp_path / "b"), "--json", str(tmp_path / "dangling")], "does not exist"),
    ]
    for argv, message in cases:
        assert train("--steps", "1", *argv) == 2, argv
        assert message in one_line_error(capsys)
    assert main(["verilog", "--rows", "2", "--cols", "2", "--out", str(tmp_path / "loop2")]) == 2
    assert "loop of symbolic links" in one_line_error(capsys)


@pytest.mark.parametrize("pid", [2**64, 2**22, 0, -1, "12", True, None])
def test_an_impossible_lock_is_taken_as_unreadable(tmp_path, pid):
    """A pid the kernel cannot have (0 and -1 would even signal process groups) never holds a
    folder: the lock is removed with a note, and the run takes the folder."""
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    assert lock_holder(lock) is None
    notes = []
    with RunLock(tmp_path, say=notes.append):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert notes == [f"removed an unreadable lock {lock}"]
    assert not lock.exists()


def test_a_full_disk_names_the_file_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    path = tmp_path / "out" / "result.json"
    with pytest.raises(OSError) as info:
        golden_files.atomic_write_json(path, {"a": 1})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert list((tmp_path / "out").iterdir()) == []
    # a checkpoint: the same
    with pytest.raises(OSError) as info:
        write_checkpoint(tmp_path / "out" / CHECKPOINT_NAME, b"data")
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(tmp_path / "out" / CHECKPOINT_NAME)
    assert list((tmp_path / "out").iterdir()) == []
    # the run's lock: named, and no temporary left beside it
    monkeypatch.undo()

    def no_space(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(RunFolderError, match=r"cannot write the lock .*No space left"):
        with RunLock(tmp_path / "run"):
            pass
    monkeypatch.undo()
    assert list((tmp_path / "run").iterdir()) == []


# ---- SIGTERM is Ctrl-C ---------------------------------------------------------------------
def test_sigterm_checkpoints_the_step_and_releases_the_lock(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nitihw", "train", *DIGITS, "--epochs", "200", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO.parent)}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / CHECKPOINT_NAME).exists():  # past the first epoch: training for sure
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert b"interrupted: checkpoint saved" in err
    assert not (out / LOCK_NAME).exists()
    assert read_checkpoint(out / CHECKPOINT_NAME)[0]["state"]["step"] > 0


# ---- settings that cannot run: refused before the data loads -------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--profile", "nitro-d", "--mu", "-8"], "nitro-d's mu is log2(lr_inv)"),
        (["--profile", "wage", "--weight-bits", "16"], "profile wage has its own weights"),
        (["--profile", "nitro-d", "--weight-bits", "16"], "profile nitro-d has its own weights"),
        (["--backend", "gpu"], "--backend gpu: no GPU here (test)"),
        (["--backend", "rtl", "--build-dir", "{file}/build"], "is a file"),
    ],
)
def test_late_checks_come_first(tmp_path, monkeypatch, capsys, argv, message):
    from nitihw.gpu import backend as gpu_backend

    monkeypatch.setattr(gpu_backend, "gpu_available", lambda: (False, "no GPU here (test)"))

    def no_data(spec):
        raise AssertionError(f"the data loaded ({spec}) before the settings were refused")

    monkeypatch.setattr(train_run, "load_dataset", no_data)
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = [a.replace("{file}", str(blocker)) for a in argv]
    out = tmp_path / "deep" / "run"
    assert train("--steps", "1", "--out", str(out), *argv) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "deep").exists()  # nothing left behind


def test_a_run_file_that_is_a_folder_is_refused_up_front(run_a, monkeypatch, capsys):
    (run_a / CHECKPOINT_NAME).unlink()
    (run_a / CHECKPOINT_NAME).mkdir()
    monkeypatch.setattr(train_run, "load_dataset", lambda spec: pytest.fail("data loaded"))
    assert train("--steps", "1", "--out", str(run_a), "--overwrite") == 2
    assert "is not a file (a run writes its checkpoint.npz there)" in one_line_error(capsys)


# ---- a build folder in use is not rebuilt under its run -------------------------------------
def test_a_build_in_use_is_never_rebuilt_under_its_run(tmp_path, monkeypatch):
    """Runs of one parameter set share their build folder (both hold it); a run that would
    rebuild it (its compiler, options or sources changed) is refused while another simulates
    from it, and rebuilds once it is free. The compiler is a stand-in: no C++ is built."""
    from nitihw.rtl.datapath import DatapathParams
    from nitihw.sim.simulate.native import NativeBuildError, build, native_in_use

    built = []

    def fake_compile(verilator, options, out, lib, stamp, want, *rest):
        out.mkdir(parents=True, exist_ok=True)
        lib.write_bytes(b"library")
        stamp.write_text(json.dumps(want))
        built.append(want["cxx"])

    monkeypatch.setattr(build, "_compile", fake_compile)
    monkeypatch.setattr(build, "_need_tools", lambda: "verilator")
    monkeypatch.setattr(build, "cxx_compiler", lambda choice: "c++-one")
    params = DatapathParams(2, 2, kmax=8)
    where = tmp_path / "build"
    with native_in_use(params, where) as lib:
        with native_in_use(params, where) as again:  # a second run of the same parameters
            assert again == lib
        assert built == ["c++-one"]
        monkeypatch.setattr(build, "cxx_compiler", lambda choice: "c++-two")
        with pytest.raises(NativeBuildError, match="another run is simulating from it"):
            build.build_native(params, where)
        assert lib.read_bytes() == b"library"
    build.build_native(params, where)  # free now: rebuilt
    assert built == ["c++-one", "c++-two"]


# ---- long work says so first ----------------------------------------------------------------
def test_large_designs_warn_with_time_and_memory():
    from nitihw.rtl.datapath import DatapathParams
    from nitihw.rtl.params import cost_line, generation_cost

    small = cost_line("x", *generation_cost(DatapathParams(8, 8)))
    big = cost_line("x", *generation_cost(DatapathParams(256, 256)))
    assert not small.startswith("warning") and "GB of memory" in small
    assert big.startswith("warning: large design") and "this machine has" in big
    assert "min" in big or " h " in big


def test_a_256x256_verilog_says_what_it_will_cost_before_it_starts(tmp_path):
    """The first line comes before the minutes of elaboration (the process is stopped there)."""
    cmd = [sys.executable, "-m", "nitihw", "verilog", "--rows", "256", "--cols", "256"]
    env = {**os.environ, "PYTHONPATH": str(REPO.parent)}
    proc = subprocess.Popen(
        [*cmd, "--top-only", "--out", str(tmp_path / "v")], stderr=subprocess.PIPE, env=env
    )
    try:
        line = proc.stderr.readline().decode()
    finally:
        proc.kill()
        proc.wait()
    assert line.startswith("nitihw verilog: warning: large design: generating the Verilog of the "
                           "256x256 Datapath (about"), line  # fmt: skip
    assert "GB of memory" in line


def test_a_cocotb_build_is_one_runs_at_a_time(tmp_path):
    """A cocotb run builds and runs in its build folder (model, results file): a second run on
    the same folder and simulator is refused, another simulator's run is not."""
    from nitihw.golden.errors import ToolError

    with train_run._cocotb_build_held(tmp_path, "icarus"):
        with pytest.raises(ToolError, match="in use by another --sim cocotb-icarus run"):
            with train_run._cocotb_build_held(tmp_path, "icarus"):
                pass
        with train_run._cocotb_build_held(tmp_path, "verilator"):
            pass
    with train_run._cocotb_build_held(tmp_path, "icarus"):  # free again
        pass
