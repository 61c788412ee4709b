"""``nitihw train --backend rtl --segments``: a run checked on the RTL epoch by epoch against
golden's checkpoints (sim/command/segments.py), inline and on Dask, reused on --resume, and a
segment that does not match stopping as an internal error."""

import json

import pytest

import nitihw.sim.command.segments as segments
from nitihw.sim.command.cli import main
from nitihw.sim.command.segments import parse_segments
from nitihw.sim.tools import simulator_available

pytestmark = pytest.mark.skipif(
    not simulator_available("verilator"), reason="verilator not installed"
)
RUN = ["--model", "mlp-digits", "--dataset", "digits", "--batch", "64", "--epochs", "2"]
RTL = ["--backend", "rtl", "--array", "4x4", "--kmax", "32"]


def train(tmp_path, out, *extra):
    build = str(tmp_path.parent / "rtl-build")
    return main(["train", *RUN, *extra, "--out", str(out), "--build-dir", build])


def test_segments_prove_the_run_and_are_reused(tmp_path, capsys):
    assert train(tmp_path, tmp_path / "golden") == 0
    whole = json.loads((tmp_path / "golden" / "result.json").read_text())
    out = tmp_path / "seg"
    assert train(tmp_path, out, *RTL, "--segments", "1-2", "--workers", "0") == 0
    shown = capsys.readouterr()
    summary = json.loads((out / "segments.json").read_text())
    assert summary["whole_run_proved"] and summary["segments"] == [1, 2]
    assert summary["golden_weights_sha256"] == whole["weights_sha256"]
    for rec in summary["records"]:
        assert rec["matches_golden"] and rec["model_mismatches"] == 0
        assert rec["datapath_ops"]["host"] == 0 and rec["datapath_ops"]["rtl"] > 0
        assert rec["steps"] == 23 and rec["cycles"] > 0
    assert summary["records"][-1]["weights_sha256"] == whole["weights_sha256"]
    assert "whole run ends with golden's weights_sha256" in shown.out
    # the same command again refuses; --resume reuses both segments
    assert train(tmp_path, out, *RTL, "--segments", "1-2", "--workers", "0") == 2
    assert "already holds segments" in capsys.readouterr().err
    assert train(tmp_path, out, *RTL, "--segments", "1-2", "--workers", "0", "--resume") == 0
    assert "2 segment(s) already checked" in capsys.readouterr().err


def test_a_segment_on_the_dask_executor(tmp_path, capsys):
    out = tmp_path / "dask"
    assert train(tmp_path, out, *RTL, "--segments", "2", "--workers", "1") == 0
    assert "1 segment(s) on 1 Dask workers" in capsys.readouterr().err
    rec = json.loads((out / "segments" / "epoch-02.json").read_text())
    assert rec["matches_golden"] and rec["epoch"] == 2


def test_a_segment_that_differs_from_golden_is_an_internal_error(tmp_path, monkeypatch, capsys):
    real = segments.run_segment

    def wrong(*args):
        rec = real(*args)
        return {**rec, "weights_sha256": "0" * 64}

    monkeypatch.setattr(segments, "run_segment", wrong)
    out = tmp_path / "bad"
    assert train(tmp_path, out, *RTL, "--segments", "1", "--workers", "0") == 70
    assert "do not end with golden's checkpoint" in capsys.readouterr().err
    rec = json.loads((out / "segments" / "epoch-01.json").read_text())
    assert rec["matches_golden"] is False


@pytest.mark.parametrize(
    "spec,extra,message",
    [
        ("0-2", RTL, "is not within epochs 1..2"),
        ("3", RTL, "is not within epochs 1..2"),
        ("a-b", RTL, "expected epochs like 1-30"),
        ("1", [], "--backend rtl --sim verilator"),
        ("1", [*RTL, "--steps", "3"], "drop --steps"),
    ],
)
def test_bad_segments_are_one_line(tmp_path, capsys, spec, extra, message):
    assert train(tmp_path, tmp_path / "x", *extra, "--segments", spec) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_parse_segments():
    assert parse_segments("1-3,7, 5", 9) == [1, 2, 3, 5, 7]
