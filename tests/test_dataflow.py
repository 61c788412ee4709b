"""The array's dataflows (sim/model/mapping/dataflow.py): SCALE-Sim 3.0's cycles for os, ws and is,
held to SCALE-Sim's own reports (tests/scalesim_cycles.json, from bench/scalesim_check.py),
and the estimate and the sweep pricing each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nitihw.sim.explore.sweep import GridError, load_grid
from nitihw.sim.model.accelerator import load_accelerator
from nitihw.sim.model.estimate import estimate
from nitihw.sim.model.mapping.dataflow import DATAFLOWS, buffer_reads, scalesim_cycles
from nitihw.sim.model.workload import model_workload

FIXTURE = json.loads((Path(__file__).parent / "scalesim_cycles.json").read_text())


def test_the_closed_form_is_scalesims_cycle_for_cycle():
    assert {row[0] for row in FIXTURE} == set(DATAFLOWS) and len(FIXTURE) == 60
    for dataflow, rows, cols, m, k, n, cycles in FIXTURE:
        assert scalesim_cycles(dataflow, m, k, n, rows, cols) == cycles, (dataflow, rows, cols)


def test_what_stays_is_read_once():
    m, k, n = 40, 24, 12
    os_, ws, is_ = (buffer_reads(d, m, k, n, 8, 4) for d in DATAFLOWS)
    assert ws["b"] == k * n and is_["a"] == m * k  # the stationary operand: once
    assert os_["out_writes"] == m * n and os_["out_reads"] == 0  # results stay in the PEs
    assert ws["out_writes"] == m * n * 3 and ws["out_reads"] == m * n * 2  # K = 24 on 8 rows


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_the_estimate_prices_each_dataflow(dataflow):
    acc = load_accelerator().with_array("8x8")
    r = estimate(model_workload("lenet", 16), acc, 16, 1000, "lenet", dataflow=dataflow)
    assert r["dataflow"] == dataflow and r["per_step"]["array_cycles"] > 0
    os_r = estimate(model_workload("lenet", 16), acc, 16, 1000, "lenet")
    same = r["per_step"]["macs"] == os_r["per_step"]["macs"]
    assert same and (dataflow == "os") == (r["per_step"] == os_r["per_step"])


def test_a_sweep_axis_and_the_rtl_stays_output_stationary(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('[axes]\nmodel = ["mlp-digits"]\ndataflow = ["os", "ws", "is"]\n')
    assert [p["dataflow"] for p in load_grid(grid).points] == ["os", "ws", "is"]
    grid.write_text('[axes]\ndataflow = ["xs"]\n')
    with pytest.raises(GridError, match="unknown dataflow 'xs'"):
        load_grid(grid)
    grid.write_text('compute = ["rtl"]\n[axes]\ndataflow = ["ws"]\n')
    with pytest.raises(GridError, match="output stationary"):
        load_grid(grid)
