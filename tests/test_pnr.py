"""nitihw synth --pnr: the Datapath placed and routed on an ECP5 behind the narrow top."""

from __future__ import annotations

import json

import pytest

from nitihw.sim.explore.synth import pnr


def test_report_reads_fmax_utilisation_and_the_critical_path(tmp_path):
    path = tmp_path / "report.json"
    step = lambda t, a, b, d: {"type": t, "from": {"cell": a}, "to": {"cell": b}, "delay": d}  # noqa: E731
    path.write_text(
        json.dumps(
            {
                "fmax": {"$glbnet$clk": {"achieved": 66.614, "constraint": 100.0}},
                "utilization": {
                    "TRELLIS_COMB": {"used": 10955, "available": 83640},
                    "TRELLIS_FF": {"used": 4221, "available": 83640},
                    "MULT18X18D": {"used": 16, "available": 156},
                },
                "critical_paths": [
                    {
                        "path": [
                            step("clk-to-q", "dp.dr_row", "dp.dr_row", 0.5),
                            step("logic", "dp.x", "dp.y", 0.25),
                            step("routing", "dp.y", "dp.range_unit.below_3", 0.75),
                        ]
                    }
                ],
            }
        )
    )
    r = pnr._report(path)
    assert r["fmax_mhz"] == 66.6 and r["target_mhz"] == 100.0
    assert r["resources"]["LUT4"] == {"used": 10955, "available": 83640}
    assert r["resources"]["block RAMs (DP16KD)"] == {"used": 0, "available": 0}
    assert r["critical_path"] == {
        "from": "dp.dr_row",
        "to": "dp.range_unit.below_3",
        "delay_ns": 1.5,
        "logic_levels": 1,
    }


def test_narrow_top_keeps_few_pins():
    from amaranth.hdl import Fragment

    from nitihw.rtl.datapath import DatapathParams

    top = pnr.narrow_top(DatapathParams(rows=2, cols=2, kmax=8, result_rows=4))
    assert sum(len(p) for p in top.ports()) <= 32
    Fragment.get(top, None)  # it elaborates


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--target", "generic", "--pnr"], "--pnr places and routes on the ECP5"),
        (["--target", "ecp5", "--pnr", "--verilog", "x"], "--pnr builds its own top"),
    ],
)
def test_pnr_options_are_checked(argv, message, tmp_path, capsys):
    from nitihw.sim.command.cli import main

    rc = main(["synth", "--rows", "2", "--cols", "2", "--out", str(tmp_path), *argv])
    assert rc == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_a_2x2_datapath_places_and_routes(tmp_path):
    """The whole flow on the smallest Datapath (synth_ecp5 and nextpnr: a few minutes)."""
    from nitihw.rtl.datapath import DatapathParams

    r = pnr.place_and_route(DatapathParams(rows=2, cols=2, kmax=8, result_rows=4), tmp_path)
    assert 10 < r["fmax_mhz"] < 500
    lut = r["resources"]["LUT4"]
    assert 0 < lut["used"] < lut["available"] == 83640
    assert r["resources"]["multipliers (18x18)"]["used"] == 4  # one per PE
    assert r["critical_path"]["logic_levels"] > 0
    assert json.loads((tmp_path / f"pnr-{r['design']}" / "pnr.json").read_text()) == r
