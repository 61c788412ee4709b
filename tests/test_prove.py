"""nitihw prove: the Datapath's blocks proven against numerics.md for every input, each proof
non-vacuous (its covers reached) and able to fail (each block's mutant is caught)."""

from __future__ import annotations

import json

import pytest

from nitihw.sim.prove import harness as H
from nitihw.sim.prove.mutants import MUTANTS
from nitihw.sim.prove.run import ProofToolError, check_tools, run_harness

try:
    check_tools()
    HAVE_TOOLS = True
except ProofToolError:  # pragma: no cover - the project's dependencies install them
    HAVE_TOOLS = False

pytestmark = pytest.mark.skipif(not HAVE_TOOLS, reason="yowasp-sby / yices-smt2 missing")

#: small widths that take seconds: every path of each block is there at any width
QUICK = {
    "rescale": H.RescaleHarness(12, 7),
    "update": H.UpdateHarness(master=False),
    "update-master": H.UpdateHarness(master=True),
    "range": H.RangeHarness(2, 10),
    "control": H.ControlHarness(),
}


@pytest.mark.parametrize("name", sorted(QUICK))
def test_each_block_is_proven_and_its_covers_reached(name, tmp_path):
    r = run_harness(QUICK[name], tmp_path)
    assert [t.task for t in r.tasks] == list(QUICK[name].tasks)
    assert r.passed, [t.__dict__ for t in r.tasks]


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_each_mutant_fails_its_proof(name, tmp_path):
    """A broken block fails its proof: the properties check the rule, not nothing."""
    mutant = MUTANTS[name]
    h = QUICK[mutant.block]
    with mutant.applied():
        r = run_harness(h, tmp_path)
    assert not r.passed
    checks = [t for t in r.tasks if t.task in ("prove", "bmc")]
    assert all(t.status == "FAIL" and "failed assertion" in t.detail for t in checks)


def test_an_unreachable_cover_fails_the_run(tmp_path):
    """A cover that cannot be reached fails the cover task (the proof could be vacuous)."""
    from amaranth.hdl import Cover

    class Unreachable(H.UpdateHarness):
        def build(self, m, i, stalls):
            super().build(m, i, stalls)
            m.d.comb += Cover(i["valid"] & ~i["valid"], "never")

    r = run_harness(Unreachable(master=False), tmp_path)
    cover = next(t for t in r.tasks if t.task == "cover")
    assert cover.status == "FAIL" and not r.passed


def test_cli_proves_a_block_and_writes_json_and_junit(tmp_path, capsys):
    from nitihw.sim.command.cli import main

    out, js, ju = tmp_path / "w", tmp_path / "r.json", tmp_path / "r.xml"
    rc = main(
        ["prove", "--blocks", "update", "--out", str(out), "--json", str(js), "--junit", str(ju)]
    )
    assert rc == 0
    body = json.loads(js.read_text())
    assert {r["label"] for r in body["results"]} == {"update-master0", "update-master1"}
    assert all(r["passed"] for r in body["results"])
    assert b'failures="0"' in ju.read_bytes()
    assert "2 of 2 harnesses proven" in capsys.readouterr().out


def test_cli_mutant_fails_with_exit_1(tmp_path, capsys):
    from nitihw.sim.command.cli import main

    rc = main(["prove", "--mutant", "update-clamp-low-short", "--out", str(tmp_path)])
    assert rc == 1
    assert "failed: update-master0" in capsys.readouterr().out


def test_cli_refuses_unknown_blocks_and_mutants(tmp_path, capsys):
    from nitihw.sim.command.cli import main

    assert main(["prove", "--blocks", "mac", "--out", str(tmp_path)]) == 2
    assert "unknown block 'mac' for --blocks" in capsys.readouterr().err
    assert main(["prove", "--mutant", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown --mutant 'nope'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("h", H.DEFAULT, ids=lambda h: h.label())
def test_the_default_proofs(h, tmp_path):
    """What ``nitihw prove`` runs: 32- and 16-bit accumulators, 8- and 4-bit operands."""
    r = run_harness(h, tmp_path)
    assert r.passed, [t.__dict__ for t in r.tasks]
