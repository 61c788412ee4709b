"""nitihw verify --coverage: the functional cover points, Verilator's counts read and summed
per block, the explanations of what cannot be reached, and the command end to end on a
coverage build (the regression must reach every line and branch, or explain it, and take
every functional point)."""

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from nitihw.sim.tools import simulator_available

verilator = pytest.mark.skipif(
    not simulator_available("verilator"), reason="verilator not installed"
)


def _key(**fields) -> str:
    return "".join(f"\x01{k}\x02{v}" for k, v in fields.items())


def _write_dat(path: Path, points) -> Path:
    lines = ["# SystemC::Coverage-3"]
    lines += [f"C '{_key(**fields)}' {count}" for fields, count in points]
    path.write_text("\n".join(lines) + "\n")
    return path


def _verilog(tmp_path: Path) -> Path:
    v = tmp_path / "datapath.v"
    v.write_text(
        "module datapath;\n"  # 1
        "  assign a = b ? c : d;\n"  # 2
        "  assign _105_ = total[32] ? 32'd4294967295 : total[31:0];\n"  # 3
        "  assign y = ored[31] ? z : w;\n"  # 4
        "endmodule\n"
    )
    return v


def _points(v: Path, hits_a: int):
    f = str(v)
    return [
        (dict(f=f, l=2, t="line", page="v_line/datapath", o="block"), 5),
        (dict(f=f, l=2, t="branch", page="v_branch/datapath", o="cond_then"), hits_a),
        (dict(f=f, l=2, t="branch", page="v_branch/datapath", o="cond_else"), 3),
        (dict(f=f, l=3, t="branch", page="v_branch/datapath.range_unit", o="cond_then"), 0),
        (dict(f=f, l=4, t="branch", page="v_branch/datapath.range_unit", o="cond_then"), 0),
        (dict(f=f, l=1, t="toggle", page="v_toggle/datapath.range_unit", o="count[5]:0->1"), 0),
        (dict(f=f, l=1, t="toggle", page="v_toggle/datapath.range_unit", o="count[6]:0->1"), 0),
        (dict(f=f, l=1, t="toggle", page="v_toggle/datapath.range_unit", o="count[0]:0->1"), 9),
        (dict(f=f, l=1, t="toggle", page="v_toggle/datapath", o="cmd___05Fpayload[3]:1->0"), 0),
        (dict(f=f, l=1, t="toggle", page="v_toggle/nitihw_cover", o="busy:0->1"), 0),
        (dict(f=f, l=5, t="user", page="v_user/nitihw_cover", o="op_compute"), 2),
        (dict(f=f, l=6, t="user", page="v_user/nitihw_cover", o="error_raised"), 0),
    ]


def test_counts_merge_and_sum_per_block(tmp_path):
    from nitihw.sim.simulate.coverage.report import format_summary, read_counts, summarize

    v = _verilog(tmp_path)
    a = _write_dat(tmp_path / "a.dat", _points(v, 0))
    b = _write_dat(tmp_path / "b.dat", _points(v, 0))
    counts = read_counts([a, b])
    assert sum(counts.values()) == 2 * sum(c for _, c in _points(v, 0))  # merged: added up
    s = summarize(counts, "test")
    ctl, ru = s.blocks["control"], s.blocks["range_unit"]
    assert (ctl.covered["line"], ctl.total["line"]) == (1, 1)
    assert (ctl.covered["branch"], ctl.total["branch"]) == (1, 2)
    assert (ru.covered["branch"], ru.total["branch"]) == (0, 2)
    assert (ru.covered["toggle"], ru.total["toggle"]) == (1, 3)
    assert "nitihw_cover" not in s.blocks  # the cover module's own ports count for nothing
    assert s.functional == {"op_compute": 4, "error_raised": 0}
    assert s.functional_missed == ["error_raised"]
    assert s.toggles["range_unit"] == {"count": "5-6"}
    assert s.toggles["control"] == {"cmd__payload": "3"}  # Verilator's names made readable
    # the two range-unit branches are explained; the control's is not
    assert [(p.block, p.line) for p, _ in s.unexplained] == [("control", 2)]
    explained = [why for _, _, why in s.missed if why]
    assert len(explained) == 2 and any("2^32" in w for w in explained)
    text = format_summary(s)
    assert "NOT EXPLAINED" in text and "never taken: error_raised" in text
    # once the branch is taken, nothing is unexplained
    s2 = summarize(read_counts([_write_dat(tmp_path / "c.dat", _points(v, 1))]), "test")
    assert s2.unexplained == []
    assert s2.blocks["control"].percent("branch") == 100.0


def test_junit_carries_the_figures_and_fails_what_is_missed(tmp_path):
    from nitihw.sim.simulate.coverage.report import junit_cases, read_counts, summarize
    from nitihw.sim.tools import junit_xml

    v = _verilog(tmp_path)
    s = summarize(read_counts([_write_dat(tmp_path / "a.dat", _points(v, 0))]), "t")
    root = ET.fromstring(junit_xml("cov", junit_cases(s, "nitihw.coverage.t")))
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"control", "range_unit", "functional"}
    props = {p.get("name"): p.get("value") for p in cases["control"].iter("property")}
    assert props["branch_covered"] == "1" and props["branch_total"] == "2"
    assert props["branch_percent"] == "50.0"
    assert cases["control"].find("failure") is not None  # an unexplained branch
    assert cases["range_unit"].find("failure") is None  # only explained misses
    assert "error_raised" in cases["functional"].find("failure").text
    # a training run's report carries the figures and fails nothing
    root = ET.fromstring(junit_xml("cov", junit_cases(s, "nitihw.coverage.t", gate=False)))
    assert root.get("failures") == "0" and len(list(root.iter("property"))) > 0


def test_bad_coverage_files_are_named(tmp_path):
    from nitihw.sim.simulate.coverage.report import read_counts

    with pytest.raises(FileNotFoundError, match="missing.dat"):
        read_counts([tmp_path / "missing.dat"])
    bad = tmp_path / "bad.dat"
    bad.write_text("hello\n")
    with pytest.raises(ValueError, match="bad.dat: not Verilator's coverage.dat format"):
        read_counts([bad])
    bad.write_text("# SystemC::Coverage-3\nC 'x' many\n")
    with pytest.raises(ValueError, match="bad.dat, line 2: bad count 'many'"):
        read_counts([bad])


def test_cover_points_follow_the_build():
    from nitihw.rtl.datapath import DatapathParams
    from nitihw.sim.simulate.coverage.points import GROUPS, cover_module, cover_points

    plain = {p.name for p in cover_points(DatapathParams(4, 4, kmax=32))}
    div = {p.name for p in cover_points(DatapathParams(4, 4, b_bits=32, divide=True))}
    bare = {p.name for p in cover_points(DatapathParams(2, 2, result_rows=0))}
    assert "error_divide_not_built" in plain and "op_divide" not in plain
    assert {"op_divide", "op_update_div", "update_div_decay"} <= div
    assert "error_divide_not_built" not in div
    assert "error_rescale_from_buffer" in bare and "keep_past_buffer" not in bare
    for mode in ("round", "psto", "trunc", "sto", "rne"):
        assert {f"rescale_{mode}_shift_{r}" for r in ("0", "1_7", "8_15", "16_up")} <= plain
    points = cover_points(DatapathParams(4, 4, b_bits=32, divide=True))
    assert len({p.name for p in points}) == len(points)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", p.name) for p in points)
    assert all(p.group in GROUPS for p in points)
    sv = cover_module(DatapathParams(4, 4, kmax=32))
    assert sv.count("cover property") == len(plain)
    assert "bind datapath nitihw_cover" in sv


@verilator
def test_verify_coverage_reaches_or_explains_everything(tmp_path, capsys):
    """The regression on a coverage build (2x2, 16-bit accumulators: the overflow paths too)
    reaches every line and branch of the Datapath or explains it, and takes every functional
    point; the report and the JUnit figures say so."""
    from nitihw.sim.command.cli import main

    out = tmp_path / "cov"
    junit = tmp_path / "cov.xml"
    argv = ["verify", "--coverage", "--shapes", "2x2", "--accumulator-bits", "16"]
    argv += ["--seeds", "0", "--sims", "verilator", "--coverage-train", "none"]
    rc = main([*argv, "--out", str(out), "--junit", str(junit)])
    text = capsys.readouterr().out
    assert rc == 0, text
    report = json.loads((out / "coverage.json").read_text())
    assert [r["kind"] for r in report] == ["regression"]
    r = report[0]
    assert r["passed"]
    assert all(m["explained"] for m in r["missed"])
    assert r["total"]["line"]["covered"] == r["total"]["line"]["total"] > 0
    assert all(hits > 0 for hits in r["functional"].values())
    assert {"control", "array", "range_unit", "rescale", "update8", "update16"} <= set(r["blocks"])
    root = ET.parse(junit).getroot()
    names = {c.get("name") for c in root.iter("testcase")}
    assert {"2x2_acc16 seed 0", "control", "functional"} <= names
    assert root.get("failures") == "0"
    assert "every line and branch reached" not in text  # two are explained, and listed
    assert "[explained]" in text


def test_verify_coverage_refuses_what_it_cannot_count(tmp_path):
    from nitihw.sim.command.cli import main

    base = ["verify", "--coverage", "--shapes", "2x2", "--out", str(tmp_path / "o")]
    assert main([*base, "--sims", "icarus"]) == 2
    assert main([*base, "--sims", "verilator", "--waves"]) == 2
    assert main([*base, "--sims", "verilator", "--coverage-train", "lenet"]) == 2


def test_train_coverage_needs_the_cocotb_verilator_testbench(tmp_path, capsys):
    from nitihw.sim.command.cli import main

    argv = ["train", "--model", "mlp-digits", "--dataset", "digits", "--steps", "1"]
    argv += ["--coverage", str(tmp_path / "c.dat"), "--out", str(tmp_path / "run")]
    assert main([*argv, "--backend", "rtl"]) == 2
    assert "--sim cocotb-verilator" in capsys.readouterr().err
    assert main([*argv, "--backend", "golden"]) == 2


@pytest.mark.slow
@verilator
def test_training_run_coverage(tmp_path):
    """The short training run's report (cnn-digits on digits, 2 steps of 16, 2x2): the
    operations a network asks for, without the regression's error paths."""
    from nitihw.rtl.datapath import DatapathParams
    from nitihw.sim.simulate.coverage.run import TrainRun, training_coverage

    res = training_coverage(
        DatapathParams(2, 2, kmax=32), TrainRun("cnn-digits", "digits", 2, 16), tmp_path
    )
    assert res.passed, res.detail
    f = res.summary.functional
    assert f["op_compute"] > 0 and f["op_range_read"] > 0
    assert f["error_raised"] == 0  # a good run raises no error
    assert res.summary.blocks["array"].percent("line") == 100.0
