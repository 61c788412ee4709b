"""An accelerator's clock from place and route: ``[clock] frequency_mhz = "pnr"``,
``nitihw estimate --clock``, a sweep's ``clock`` axis; placed once per Datapath, then cached."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from nitihw.sim.explore.synth import clock, pnr
from nitihw.sim.explore.synth.clock import resolve_clock
from nitihw.sim.model.accelerator import Accelerator, ConfigError, load_accelerator, with_clock


@pytest.fixture
def fake_pnr(tmp_path, monkeypatch):
    """place_and_route replaced by a recorder that reports 20 MHz per PE row less than 120."""
    calls = []

    def place(params, out, timeout=None):
        calls.append((params.rows, params.cols, params.kmax, params.result_rows))
        return {
            "design": f"{params.rows}x{params.cols}",
            "device": pnr.DEVICE_NAME,
            "params": params.as_dict(),
            "synth_seconds": 1.0,
            "pnr_seconds": 2.0,
            "fmax_mhz": 120.0 - 20 * params.rows,
            "target_mhz": 100.0,
            "resources": {},
            "critical_path": {"from": "a", "to": "b", "delay_ns": 1.0, "logic_levels": 1},
        }

    monkeypatch.setattr(pnr, "place_and_route", place)
    monkeypatch.setenv("NITIHW_PNR_CACHE", str(tmp_path / "cache"))
    return calls


def test_clock_option_and_config_key(tmp_path):
    acc = Accelerator()
    assert with_clock(acc, "250").frequency_mhz == 250.0
    assert with_clock(acc, "pnr").clock == "pnr"
    with pytest.raises(ConfigError, match="--clock: expected MHz or pnr, got 'fast'"):
        with_clock(acc, "fast")
    with pytest.raises(ConfigError, match="--clock"):
        with_clock(acc, "-5")
    cfg = tmp_path / "a.toml"
    cfg.write_text('[clock]\nfrequency_mhz = "pnr"\n')
    assert load_accelerator(cfg).clock == "pnr"
    cfg.write_text('[clock]\nfrequency_mhz = "fast"\n')
    with pytest.raises(ConfigError, match="clock.frequency_mhz"):
        load_accelerator(cfg)
    assert resolve_clock(acc) is acc  # a configured clock is left alone


def test_the_clock_is_placed_once_then_cached(fake_pnr, tmp_path):
    acc = with_clock(Accelerator(rows=2, cols=3), "pnr")
    said = []
    first = resolve_clock(acc, log=said.append)
    assert first.frequency_mhz == 80.0
    assert "place and route" in first.clock and "placed now" in first.clock
    assert fake_pnr == [(2, 3, clock.PNR_KMAX, clock.PNR_RESULT_ROWS)]
    assert said and "minutes" in said[0]
    again = resolve_clock(acc)
    assert again.frequency_mhz == 80.0 and "cached" in again.clock
    assert len(fake_pnr) == 1  # from the cache
    (entry,) = (tmp_path / "cache").glob("2x3_op8_acc32-*.json")
    assert json.loads(entry.read_text())["fmax_mhz"] == 80.0
    # a damaged entry is placed again
    entry.write_text("{not json")
    assert resolve_clock(acc).frequency_mhz == 80.0 and len(fake_pnr) == 2
    # another array, or other widths, is another design
    resolve_clock(with_clock(Accelerator(rows=3, cols=3), "pnr"))
    resolve_clock(with_clock(Accelerator(rows=2, cols=3, accumulator_bits=24), "pnr"))
    assert len(fake_pnr) == 4


def test_an_array_larger_than_the_fpga_is_refused(fake_pnr):
    with pytest.raises(ValueError, match="256 18x18 multipliers.*has 156"):
        resolve_clock(with_clock(Accelerator(rows=16, cols=16), "pnr"))
    assert fake_pnr == []


def test_estimate_prices_seconds_at_the_placed_clock(fake_pnr, tmp_path, capsys):
    from nitihw.sim.command.cli import main

    out = tmp_path / "e"
    argv = ["estimate", "--model", "mlp-digits", "--array", "2x2", "--no-plots"]
    assert main([*argv, "--clock", "pnr", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "80 MHz, place and route (LFE5U-85F" in text
    est = json.loads(next(out.glob("*.json")).read_text())
    assert est["accelerator"]["clock"]["frequency_mhz"] == 80.0
    step = est["per_step"]
    assert step["seconds_at_clock"] == pytest.approx(step["total_cycles"] / 80e6)
    assert main([*argv, "--clock", "400", "--out", str(tmp_path / "f")]) == 0
    assert "at 400 MHz)" in capsys.readouterr().out


def test_a_sweep_clock_axis(fake_pnr, tmp_path, capsys):
    from nitihw.sim.command.cli import main

    grid = tmp_path / "g.toml"
    grid.write_text(
        'compute = ["estimate"]\n[axes]\nmodel = "mlp-digits"\nbatch = 16\n'
        'rows = [2, 3]\ncols = 2\nclock = ["config", "pnr"]\n'
    )
    out = tmp_path / "o"
    assert main(["sweep", "--grid", str(grid), "--out", str(out), "--workers", "0"]) == 0
    df = pd.read_parquet(out / "results.parquet").sort_values(["rows", "clock"])
    assert list(df["clock"]) == ["config", "pnr", "config", "pnr"]
    assert list(df["clock_mhz"]) == [500.0, 80.0, 500.0, 60.0]
    slow, fast = df[df["clock"] == "pnr"], df[df["clock"] == "config"]
    ratio = slow["seconds_per_step"].to_numpy() / fast["seconds_per_step"].to_numpy()
    assert ratio == pytest.approx([500 / 80, 500 / 60])
    grid.write_text('[axes]\nclock = ["fast"]\n')
    assert main(["sweep", "--grid", str(grid), "--out", str(tmp_path / "p")]) == 2
    assert "unknown clock 'fast'" in capsys.readouterr().err


@pytest.mark.slow
def test_estimate_with_a_real_placed_clock(tmp_path, monkeypatch, capsys):
    """The real flow for a 2x2 (synth_ecp5 and nextpnr: a few minutes), then the cache."""
    from nitihw.sim.command.cli import main

    monkeypatch.setenv("NITIHW_PNR_CACHE", str(tmp_path / "cache"))
    argv = ["estimate", "--model", "mlp-digits", "--array", "2x2", "--clock", "pnr"]
    assert main([*argv, "--no-plots", "--out", str(tmp_path / "a")]) == 0
    first = capsys.readouterr()
    assert "placing and routing the 2x2 Datapath" in first.err
    assert "placed now" in first.out
    assert main([*argv, "--no-plots", "--out", str(tmp_path / "b")]) == 0
    assert "cached" in capsys.readouterr().out
    est = json.loads(next((tmp_path / "b").glob("*.json")).read_text())
    assert 10 < est["accelerator"]["clock"]["frequency_mhz"] < 500
