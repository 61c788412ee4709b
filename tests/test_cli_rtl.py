"""nitihw verilog and nitihw verify from the command line."""

import json
import re
import shutil
import subprocess

import pytest

from nitihw.sim.command.cli import main
from nitihw.sim.tools import simulator_available


def test_verilog_writes_datapath_blocks_and_parameters(tmp_path, capsys):
    assert (
        main(
            [
                "verilog",
                "--rows",
                "3",
                "--cols",
                "2",
                "--accumulator-bits",
                "24",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    names = {p.name for p in tmp_path.glob("*.v")}
    assert names == {
        "datapath.v",
        "mac_array.v",
        "range_unit.v",
        "rescale_lanes.v",
        "update_lanes.v",
        "update_lanes_master.v",
    }
    params = json.loads((tmp_path / "params.json").read_text())
    assert (params["rows"], params["cols"], params["accumulator_bits"], params["top"]) == (
        3,
        2,
        24,
        "datapath",
    )
    assert "module datapath(" in (tmp_path / "datapath.v").read_text()
    assert "datapath.v" in capsys.readouterr().out


def test_the_former_flag_names_keep_working_with_a_note(tmp_path, capsys):
    """``--op-bits`` and ``--acc-bits`` are now ``--operand-bits`` and ``--accumulator-bits``
    (the names the sweep grid, the estimate and the code use): the old ones still work."""
    argv = ["verilog", "--rows", "2", "--cols", "2", "--top-only", "--out", str(tmp_path)]
    assert main([*argv, "--op-bits", "6", "--acc-bits", "24"]) == 0
    params = json.loads((tmp_path / "params.json").read_text())
    assert (params["operand_bits"], params["accumulator_bits"]) == (6, 24)
    err = capsys.readouterr().err
    assert "--op-bits is now --operand-bits" in err
    assert "--acc-bits is now --accumulator-bits" in err


def test_verilog_netlists(tmp_path):
    """--netlist amaranth writes Amaranth's own Verilog (each register behind always-@*
    chains); the default folds them into enables and resets, names kept."""
    from nitihw.rtl.params import NETLISTS
    from nitihw.rtl.verilog import NETLIST_PASSES_BY_NAME

    assert tuple(NETLIST_PASSES_BY_NAME) == NETLISTS  # one list of names, passes for each
    texts = {}
    for netlist in NETLISTS:
        out = tmp_path / netlist
        argv = ["verilog", "--rows", "2", "--cols", "2", "--top-only", "--netlist", netlist]
        assert main([*argv, "--out", str(out)]) == 0
        texts[netlist] = (out / "datapath.v").read_text()
    opt, plain = texts["optimized"], texts["amaranth"]
    assert plain.count("always @*") > 2 * opt.count("always @*")
    assert "else if (vf_0_0[0]) acc_0_1 <=" in opt  # an enable, in the register's own block
    for name in ("reg [39:0] acc_1_1", "reg [1:0] vf_1_0", "reg [39:0] shadow_1_1"):
        assert name in opt and name in plain
    # Yosys's own names written plain: Icarus reads a call of a function named \$x as a
    # system function's
    functions = re.findall(r"^\s*function (?:\[[^\]]*\] )?(\S+)", opt, re.M)
    assert functions and not [f for f in functions if f.startswith("\\")]


@pytest.mark.skipif(not shutil.which("iverilog"), reason="iverilog not installed")
def test_emitted_verilog_compiles_in_icarus(tmp_path):
    assert (
        main(["verilog", "--rows", "2", "--cols", "2", "--top-only", "--out", str(tmp_path)]) == 0
    )
    out = subprocess.run(
        ["iverilog", "-g2005", "-o", str(tmp_path / "a.vvp"), str(tmp_path / "datapath.v")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    "argv,message",
    [
        (["verilog", "--rows", "0", "--out", "x"], "--rows: must be an integer in 1..256, got 0"),
        (
            ["verilog", "--operand-bits", "20", "--out", "x"],
            "--operand-bits/--op-bits: must be 2, 3, 4, 5, 6, 7, 8 or 16, got 20",
        ),
        (
            ["verilog", "--op-bits", "1", "--out", "x"],  # the former name: the same check
            "--operand-bits/--op-bits: must be 2, 3, 4, 5, 6, 7, 8 or 16, got 1",
        ),
        (["verilog", "--kmax", "0", "--out", "x"], "--kmax: must be an integer in 1..65536"),
        (["verify", "--shapes", "8by8"], "bad --shapes '8by8': expected ROWSxCOLS"),
        (["verify", "--sims", "modelsim"], "unknown simulator 'modelsim'"),
        (["verify", "--seeds", "a"], "bad seeds list 'a'"),
        (["verify", "--seeds", "-1"], "--seeds -1 must be an integer in 0..4294967295"),
        (["verify", "--shapes", "2x999"], "--shapes columns must be an integer in 1..256"),
        (["verify", "--accumulator-bits", "4"], "--accumulator-bits 4 must be an integer in 8..48"),
    ],
)
def test_bad_arguments_are_named(tmp_path, capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(not simulator_available("icarus"), reason="iverilog not installed")
def test_verify_prints_a_table_and_passes(tmp_path, capsys):
    rc = main(
        [
            "verify",
            "--shapes",
            "2x2",
            "--sims",
            "icarus",
            "--seeds",
            "3",
            "--accumulator-bits",
            "32",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "PASS" in out and "1 passed, 0 failed" in out


@pytest.mark.skipif(not simulator_available("icarus"), reason="iverilog not installed")
def test_verify_at_six_bit_operands(tmp_path, capsys):
    """--operand-bits 6: the Datapath's rescale lanes saturate at +-31 and its range unit shifts to
    5 magnitude bits; the regression checks both against golden."""
    argv = [
        "verify",
        "--shapes",
        "2x3",
        "--sims",
        "icarus",
        "--seeds",
        "1",
        "--accumulator-bits",
        "32",
    ]
    assert main([*argv, "--operand-bits", "6", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2x3 op6" in out and "1 passed, 0 failed" in out
    assert (tmp_path / "2x3_op6_acc32").is_dir()


@pytest.mark.skipif(not simulator_available("icarus"), reason="iverilog not installed")
def test_verify_on_dask_writes_junit(tmp_path, capsys):
    """The regression matrix on the sweep's executor (an embedded Dask cluster), as JUnit."""
    from xml.etree import ElementTree as ET

    junit = tmp_path / "junit.xml"
    argv = ["verify", "--shapes", "2x2,3x2", "--sims", "icarus", "--seeds", "3"]
    argv += [
        "--accumulator-bits",
        "32",
        "--out",
        str(tmp_path),
        "--workers",
        "2",
        "--junit",
        str(junit),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 passed, 0 failed" in out and f"JUnit XML: {junit}" in out
    table = out[out.index("array  acc") :]
    assert table.index("2x2") < table.index("3x2")  # the serial run's order
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert suite.get("tests") == "2" and suite.get("failures") == "0"
    assert [c.get("name") for c in cases] == ["2x2_acc32 seed 3", "3x2_acc32 seed 3"]
    assert all(c.get("classname") == "nitihw.verify.icarus" and not list(c) for c in cases)


def test_junit_names_a_failure():
    from xml.etree import ElementTree as ET

    from nitihw.rtl.datapath import DatapathParams
    from nitihw.sim.simulate.verify import RunResult, junit_xml

    params = DatapathParams(2, 2)
    bad = RunResult("verilator", params, 1, 5, 2, {}, 1.0, 2.0, "/b/2x2_acc32", None)
    root = ET.fromstring(junit_xml([bad]))
    (fail,) = root.iter("failure")
    assert root.get("failures") == "1" and fail.get("message") == "2 of 5 cocotb tests failed"
    assert fail.text == "log: /b/2x2_acc32/sim_seed1.log"
