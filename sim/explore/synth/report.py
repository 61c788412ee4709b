"""``nitihw synth``: synthesise the Datapath and each of its blocks, cache and tabulate.

Each module (``datapath`` and every block file beside it, ``pe`` being a 1x1 MAC array) is
synthesised alone by :func:`nitihw.sim.explore.synth.flow.script`, in its own folder
``OUT/NAME-TARGET/MODULE/HASH/`` (script, log, statistics), and its numbers are kept in
``OUT/NAME-TARGET/MODULE/HASH.json``. ``HASH`` covers the module's Verilog text, the target, the
flow version and the Yosys version, so a second run with unchanged Verilog reads the JSON and
runs nothing; a block whose Verilog did not change keeps its result across design changes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from nitihw.golden.limits import current_names
from nitihw.sim.explore.synth.flow import (
    FLOW_VERSIONS,
    TARGETS,
    drop_zero_inits,
    read_results,
    script,
    verilog_memories,
)
from nitihw.sim.explore.synth.yosys import (
    Progress,
    YosysError,
    run_script,
    yosys_command,
    yosys_version,
)

if TYPE_CHECKING:
    from nitihw.rtl.datapath import DatapathParams

TOP = "datapath"
PE = "pe"


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    return target


def design_name(params: dict | None, fallback: str) -> str:
    """``8x8-op8-acc32-k256`` (plus ``-b32`` / ``-div`` where those differ from the default)
    for the parameters as a ``params.json`` holds them."""
    if not params:
        return fallback
    p = params
    name = f"{p['rows']}x{p['cols']}-op{p['operand_bits']}-acc{p['accumulator_bits']}"
    name += f"-k{params['kmax']}"
    if params.get("guard_bits", 8) != 8:
        name += f"-g{params['guard_bits']}"
    if params.get("b_bits", params["operand_bits"]) != params["operand_bits"]:
        name += f"-b{params['b_bits']}"
    if params.get("divide"):
        name += "-div"
    return name


def _sha256(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


# ------------------------------------------------------------------------------ the Verilog


def _rtl_source_hash(params: DatapathParams) -> str:
    """The RTL sources, the Amaranth version and the parameters: what the Verilog comes from."""
    from importlib.metadata import version

    import nitihw.rtl

    parts = [json.dumps(params.as_dict(), sort_keys=True).encode(), version("amaranth").encode()]
    for path in sorted(Path(nitihw.rtl.__file__).parent.glob("*.py")):
        parts += [path.name.encode(), path.read_bytes()]
    return _sha256(*parts)[:16]


def generate_verilog(params: DatapathParams, out_root: Path, progress: Progress) -> Path:
    """Write the Datapath's Verilog (with its blocks and ``pe.v``) once per RTL source state.

    Returns the folder. A folder written from the same sources and parameters is reused.
    """
    from nitihw.rtl.verilog import component_builders, to_verilog, write_if_changed, write_verilog

    folder = Path(out_root) / "verilog" / f"{design_name(params.as_dict(), 'design')}-"
    folder = folder.with_name(folder.name + _rtl_source_hash(params))
    if (folder / "params.json").exists() and (folder / f"{PE}.v").exists():
        return folder
    progress.say(f"writing the Verilog to {folder}")
    write_verilog(folder, params, blocks=True)
    # a processing element: the MAC array of one row and one column
    one = component_builders(replace(params, rows=1, cols=1))["mac_array"]()
    text = to_verilog(one, PE).encode()
    write_if_changed(folder / f"{PE}.v", text)
    return folder


def verilog_modules(folder: Path) -> dict[str, Path]:
    """``{module: file}`` of a Verilog folder: ``datapath.v`` first, then the blocks, ``pe``
    last. Each ``NAME.v`` must define ``module NAME``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no Verilog folder {folder}")
    files = {p.stem: p for p in sorted(folder.glob("*.v"))}
    if TOP not in files:
        raise FileNotFoundError(f"no {TOP}.v in {folder} (write it with: nitihw verilog)")
    order = [TOP, *sorted(n for n in files if n not in (TOP, PE))]
    if PE in files:
        order.append(PE)
    for name in order:
        text = files[name].read_text(errors="replace")
        if f"module {name}(" not in text and f"module {name} (" not in text:
            raise ValueError(f"{files[name]} does not define module {name}")
    return {name: files[name] for name in order}


def read_params(folder: Path) -> dict | None:
    path = Path(folder) / "params.json"
    if not path.exists():
        return None
    params = current_names(json.loads(path.read_text()))  # a folder written before the rename
    return {k: v for k, v in params.items() if k not in ("top", "files")}


# -------------------------------------------------------------------------------- synthesis


def synth_module(
    name: str,
    verilog_file: Path,
    target: str,
    design_dir: Path,
    progress: Progress,
    force: bool = False,
    timeout: float | None = None,
) -> dict:
    """Synthesise one module alone (or read its cached result)."""
    text = Path(verilog_file).read_bytes()
    yosys = yosys_version()
    parts = (str(FLOW_VERSIONS[target]), yosys, target, name)
    key = _sha256(*(p.encode() for p in parts), text)[:16]
    cache = design_dir / name / f"{key}.json"
    if cache.exists() and not force:
        result = json.loads(cache.read_text())
        result.setdefault("memory_list", verilog_memories(text.decode(errors="replace"), name))
        result["cached"] = True
        return result
    from nitihw.golden.files import atomic_write_json

    workdir = design_dir / name / key
    workdir.mkdir(parents=True, exist_ok=True)
    prepared, dropped = drop_zero_inits(text.decode(errors="replace"))
    (workdir / f"{name}.v").write_text(prepared)
    for stale in ("pre.json", "stat.json", "ltp.txt", "cmos.txt", "cmos_all.txt"):
        (workdir / stale).unlink(missing_ok=True)
    seconds = run_script(workdir, script(target, f"{name}.v", name), name, progress, timeout)
    result = read_results(workdir, target, name, text.decode(errors="replace"))
    result.update(
        module=name,
        target=target,
        seconds=round(seconds, 1),
        verilog_sha256=hashlib.sha256(text).hexdigest(),
        zero_init_blocks_dropped=dropped,
        yosys=yosys,
        workdir=str(workdir),
        log=str(workdir / f"{name}.log"),
    )
    atomic_write_json(cache, result)
    result["cached"] = False
    return result


def synthesize(
    target: str = "generic",
    *,
    params: DatapathParams | None = None,
    verilog_dir: str | Path | None = None,
    out_root: str | Path = "build/synth",
    blocks: bool = True,
    force: bool = False,
    timeout: float | None = None,
    progress: Progress | None = None,
) -> dict:
    """Synthesise the Datapath of ``params`` (its Verilog generated here), or the Verilog
    already in ``verilog_dir``, for ``target``; with ``blocks``, also each block alone."""
    check_target(target)
    progress = progress or Progress()
    out_root = Path(out_root)
    if (params is None) == (verilog_dir is None):
        raise ValueError("give the datapath parameters or a Verilog folder (--verilog DIR)")
    yosys_command()  # fails early, with the install hint, when yosys is missing
    yosys = yosys_version()
    if verilog_dir is None:
        verilog_dir = generate_verilog(params, out_root, progress)
    verilog_dir = Path(verilog_dir)
    # the report describes the design as its folder does (a folder nitihw did not write may
    # have no params.json)
    params = read_params(verilog_dir) or (params.as_dict() if params else None)
    modules = verilog_modules(verilog_dir)
    if not blocks:
        modules = {TOP: modules[TOP]}
    design_dir = out_root / design_name(params, verilog_dir.resolve().name)
    design_dir = design_dir.with_name(f"{design_dir.name}-{target}")
    progress.say(
        f"synth {design_dir.name}: {len(modules)} module(s) ({', '.join(modules)}), "
        f"{yosys}, results in {design_dir}"
    )
    t0 = time.perf_counter()
    results = {}
    for k, (name, path) in enumerate(modules.items(), 1):
        progress.say(f"[{k}/{len(modules)}] {name}")
        try:
            results[name] = synth_module(name, path, target, design_dir, progress, force, timeout)
        except YosysError as exc:
            if name == TOP:
                raise
            # a block that Yosys cannot synthesise alone does not cost the whole report
            progress.say(f"  {name}: {exc}")
            results[name] = {"module": name, "error": str(exc), "cached": False, "seconds": 0}
            continue
        if results[name]["cached"]:
            progress.say(f"  {name}: cached ({results[name]['seconds']:.0f} s when run)")
    return {
        "design": design_dir.name,
        "target": target,
        "yosys": yosys,
        "flow_version": FLOW_VERSIONS[target],
        "params": params,
        "verilog_dir": str(verilog_dir),
        "top": TOP,
        "modules": results,
        "failed": [name for name, r in results.items() if "error" in r],
        "synth_seconds": round(sum(r["seconds"] for r in results.values()), 1),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }


# ----------------------------------------------------------------------------------- report


def where(path: dict) -> str:
    """``start -> end (through a > b)``: where a longest path runs."""
    if not path or path.get("length") is None:
        return "-"
    text = f"{path['start']} -> {path['end']}"
    regions = path.get("regions") or []
    if regions:
        text += f"  [{' > '.join(regions)}]"
    return text


def _columns(target: str):
    common = [("cells", lambda r: r["cells"]), ("FF bits", lambda r: r["ff_bits"])]
    if target == "generic":
        extra = [
            ("$mul", lambda r: r["multipliers"]),
            ("mem bits", lambda r: r["memory_bits"]),
            ("SRAM bits", lambda r: r["sram_bits"]),
            ("transistors", lambda r: r["transistors"]),
        ]
    elif target == "xilinx":
        extra = [
            ("LUTs", lambda r: r["luts"]),
            ("DSP48E1", lambda r: r["dsps"]),
            ("RAMB36/18", lambda r: f"{r['bram_36']}/{r['bram_18']}"),
        ]
    else:
        extra = [
            ("LUT4", lambda r: r["luts"]),
            ("MULT18", lambda r: r["dsps"]),
            ("DP16KD", lambda r: r["bram_dp16kd"]),
        ]
    return [*common, *extra, ("path", lambda r: r["longest_path"]["length"])]


def format_report(report: dict) -> str:
    cols = _columns(report["target"])
    headers = ["module", *(c[0] for c in cols), "longest path runs"]
    rows = []
    for name, r in report["modules"].items():
        label = f"{name} (1x1 array)" if name == PE else name
        if "error" in r:
            rows.append([label, *("-" for _ in cols), "failed: " + r["error"]])
            continue
        cells = [f"{v:,}" if isinstance(v, int) else str(v) for v in (f(r) for _, f in cols)]
        rows.append([label, *cells, where(r["longest_path"])])
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers) - 1)]

    def line(row):
        first = [row[0].ljust(widths[0])]
        mid = [c.rjust(w) for c, w in zip(row[1:-1], widths[1:], strict=True)]
        return "  ".join([*first, *mid, row[-1]])

    out = [f"{report['design']}: {report['yosys']}, flow {report['flow_version']}"]
    out += [line(headers), "  ".join("-" * w for w in widths) + "  " + "-" * 17]
    out += [line(row) for row in rows]
    ran = [r for r in report["modules"].values() if not r["cached"]]
    out.append(
        f"synthesis time: {report['synth_seconds']:.0f} s in all "
        f"({len(ran)} run now, {len(report['modules']) - len(ran)} cached); "
        "path = cells on the longest flip-flop-to-flip-flop (or port) path"
    )
    return "\n".join(out)


# --------------------------------------------------------------------- markdown for the docs


def _short_where(path: dict) -> str:
    if not path or path.get("length") is None:
        return "-"
    regions = [r for r in path.get("regions") or [] if r != TOP] or path.get("regions") or []
    ends = f"`{path['start']}`"
    if path.get("end_is_ff") or not str(path["end"]).startswith("$"):
        ends += f" -> `{path['end']}`"  # an anonymous end (LUT output) says nothing
    return f"{path['length']} ({' > '.join(regions) or '?'}: {ends})"


def _memories(mod: dict) -> str:
    shapes: dict = {}
    for m in mod.get("memory_list", []):
        shapes[(m["words"], m["width"])] = shapes.get((m["words"], m["width"]), 0) + 1
    text = ", ".join(f"{n}x {w}x{b}" for (w, b), n in shapes.items())
    return f"{text} ({mod['memory_bits']:,} bits)" if text else f"{mod['memory_bits']:,} bits"


def markdown_tables(reports: list[dict]) -> str:
    """Two Markdown tables of several reports (as docs/synth.md shows them): the Datapath's
    totals, then the longest path of each block synthesised alone."""
    out = [
        "| array | target | cells | FF bits | multipliers | memories | LUTs | transistors "
        "| longest path (cells) and where | Yosys time |",
        "|---|---|--:|--:|--:|---|--:|--:|---|--:|",
    ]
    for rep in reports:
        top, target = rep["modules"][TOP], rep["target"]
        params = rep.get("params") or {}
        array = f"{params.get('rows', '?')}x{params.get('cols', '?')}"
        if target == "generic":
            mult = f"{top['multipliers']} `$mul`"
            mem = f"{_memories(top)}; {top['sram_macros']} kept as SRAM"
            luts, trans = "-", f"{top['transistors']:,}"
        else:
            mult = f"{top['dsps']} {'DSP48E1' if target == 'xilinx' else 'MULT18X18D'}"
            mem = _memories(top) + (
                f" -> {top['bram_36']} RAMB36 + {top['bram_18']} RAMB18"
                if target == "xilinx"
                else f" -> {top['bram_dp16kd']} DP16KD"
            )
            luts, trans = f"{top['luts']:,}", "-"
        seconds = sum(m.get("seconds", 0) for m in rep["modules"].values())
        out.append(
            f"| {array} | {target} | {top['cells']:,} | {top['ff_bits']:,} | {mult} | {mem} "
            f"| {luts} | {trans} | {_short_where(top['longest_path'])} "
            f"| {top['seconds']:.0f} s (+{seconds - top['seconds']:.0f} s blocks) |"
        )
    blocks = [n for n in (reports[0]["modules"] if reports else {}) if n != TOP]
    if not blocks:
        return "\n".join(out)
    out += [
        "",
        "| array | target | " + " | ".join(blocks) + " |",
        "|---|---|" + "--:|" * len(blocks),
    ]
    for rep in reports:
        params = rep.get("params") or {}
        cells = []
        for name in blocks:
            r = rep["modules"].get(name)
            if r is None or "error" in r:
                cells.append("-")
            else:
                cells.append(str(r["longest_path"]["length"]))
        array = f"{params.get('rows', '?')}x{params.get('cols', '?')}"
        out.append(f"| {array} | {rep['target']} | " + " | ".join(cells) + " |")
    return "\n".join(out)
