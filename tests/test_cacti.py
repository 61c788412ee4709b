"""The buffers priced by CACTI (sim/model/cacti.py): the worker run in another Python, its
answers cached, the report naming the source of each buffer's price, clear errors. A fake
hwcomponents-cacti stands in where the real one (Python >= 3.12, its own venv) is absent; with
NITIHW_CACTI_PYTHON set, the real one is checked too."""

from __future__ import annotations

import json
import os
import sys

import pytest

from nitihw.sim.command.cli import main
from nitihw.sim.model.accelerator import load_accelerator
from nitihw.sim.model.cacti import buffer_ports, with_cacti

FAKE = '''
class _Cost:
    def __init__(self, energy):
        self.energy = energy


class SRAM:
    """pJ per access: 0.001 per KiB of size times bits of width / 64; area 1 mm^2 per MiB."""

    def __init__(self, tech_node, width, size):
        self.width, self.size = width, size
        self.area = size / 8 / 2**20 * 1e-6
        self.leak_power = 1e-6

    def read(self):
        return _Cost(self.size / 8 / 1024 * 0.001 * self.width / 64 * 1e-12)

    def write(self):
        return _Cost(2 * self.read().energy)
'''


@pytest.fixture
def fake_python(tmp_path, monkeypatch):
    """A "python" whose hwcomponents_cacti is the fake above; the cache in tmp_path."""
    pkg = tmp_path / "fake" / "hwcomponents_cacti"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE)
    script = tmp_path / "python"
    script.write_text(f'#!/bin/sh\nPYTHONPATH="{pkg.parent}" exec "{sys.executable}" "$@"\n')
    script.chmod(0o755)
    monkeypatch.setenv("NITIHW_CACTI_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NITIHW_CACTI_PYTHON", raising=False)
    return str(script)


def test_buffers_priced_by_cacti_and_cached(fake_python, tmp_path, capsys):
    acc = load_accelerator(None, None).with_array("16x16")
    priced = with_cacti(acc, fake_python)
    buffers = priced.as_dict()["energy"]["buffers"]
    ports = buffer_ports(acc)
    for name, (size, width) in ports.items():
        read = size / 1024 * 0.001 * width / 64 / (width / 8)  # pJ per byte, the fake's rule
        assert buffers[name]["read_pj_per_byte"] == pytest.approx(read, rel=1e-12)
        assert buffers[name]["write_pj_per_byte"] == pytest.approx(2 * read, rel=1e-12)
        assert buffers[name]["source"].startswith("CACTI 7 via hwcomponents-cacti unknown, 45 nm")
    assert ports["ifmap"][1] == 16 * 8 and ports["ofmap"][1] == 16 * 32
    # the cache answers without the worker: a Python that cannot run is never called
    assert with_cacti(acc, "/no/python").as_dict()["energy"]["buffers"] == buffers
    out = tmp_path / "est"
    argv = ["estimate", "--model", "lenet", "--batch", "8", "--array", "16x16", "--no-plots"]
    assert main([*argv, "--sram", "cacti", "--cacti-python", fake_python, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "buffers (pJ per byte read/written): ifmap" in text and "CACTI 7" in text
    table = tmp_path / "tab"
    assert main([*argv, "--out", str(table)]) == 0
    a, b = (json.loads((d / "estimate.json").read_text()) for d in (out, table))
    assert a["per_step"]["energy_buffers_pj"] != b["per_step"]["energy_buffers_pj"]
    for key in ("energy_mac_pj", "energy_offchip_pj", "total_cycles"):
        assert a["per_step"][key] == b["per_step"][key]  # only the buffers' price moved
    assert b["accelerator"]["energy"]["buffers"]["ifmap"]["source"].endswith("log2 size)")


def test_cacti_errors_are_clear(fake_python, tmp_path, capsys):
    acc = load_accelerator(None, None)
    with pytest.raises(ValueError, match="--cacti-python PATH or NITIHW_CACTI_PYTHON"):
        with_cacti(acc)
    with pytest.raises(ValueError, match="--sram cacti: cannot run /no/python"):
        with_cacti(acc, "/no/python")
    with pytest.raises(ValueError, match="CACTI failed under .*ModuleNotFoundError"):
        with_cacti(acc, sys.executable)  # this Python has no hwcomponents_cacti
    argv = ["estimate", "--model", "lenet", "--sram", "cacti", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    assert "needs the Python of a venv with hwcomponents-cacti" in capsys.readouterr().err


@pytest.mark.skipif(
    not os.environ.get("NITIHW_CACTI_PYTHON"),
    reason="NITIHW_CACTI_PYTHON is not set (a venv with hwcomponents-cacti; the plumbing is "
    "tested above with a fake)",
)
def test_real_cacti(tmp_path, monkeypatch):
    monkeypatch.setenv("NITIHW_CACTI_CACHE", str(tmp_path / "cache"))
    b = with_cacti(load_accelerator(None, None).with_array("16x16")).as_dict()["energy"]
    for name in ("ifmap", "filter", "ofmap"):
        assert 0.5 < b["buffers"][name]["read_pj_per_byte"] < 20
        assert b["buffers"][name]["area_mm2"] > 0


def test_a_sweep_axis_prices_the_buffers_both_ways(fake_python, tmp_path, monkeypatch):
    """``sram = ["table", "cacti"]`` in a grid: the same points priced by the table and by
    CACTI (NITIHW_CACTI_PYTHON); only the buffers' energy differs."""
    import pandas as pd

    monkeypatch.setenv("NITIHW_CACTI_PYTHON", fake_python)
    grid = tmp_path / "grid.toml"
    grid.write_text('compute = ["estimate"]\n[axes]\nmodel = ["cnn-digits"]\nbatch = 8\n'
                    'rows = 4\ncols = 8\nsram = ["table", "cacti"]\n')  # fmt: skip
    out = tmp_path / "sweep"
    assert main(["sweep", "--grid", str(grid), "--out", str(out), "--workers", "0",
                 "--no-plots"]) == 0  # fmt: skip
    df = pd.read_csv(out / "results.csv").set_index("sram")
    assert df["error"].isna().all()
    assert df.loc["cacti", "energy_buffers_pj"] != df.loc["table", "energy_buffers_pj"]
    for col in ("total_cycles", "energy_mac_pj", "energy_offchip_pj", "dram_bytes"):
        assert df.loc["cacti", col] == df.loc["table", col], col
    bad = tmp_path / "bad.toml"
    bad.write_text('[axes]\nsram = ["cactus"]\n')
    assert main(["sweep", "--grid", str(bad), "--out", str(tmp_path / "b")]) == 2
