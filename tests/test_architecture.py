"""The package's shape: no import loop between its modules, counting the imports inside
functions too (they hide loops from Python, not from a reader)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("golden", "rtl", "sim", "gpu")


def modules() -> dict[str, Path]:
    """``nitihw.X.Y`` -> its file, for every module of the package's parts."""
    out = {"nitihw": ROOT / "__init__.py"}
    for part in PARTS:
        for path in (ROOT / part).rglob("*.py"):
            dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out["nitihw." + dotted.removesuffix(".__init__")] = path
    return out


def _owner(name: str, known: dict) -> str | None:
    """The module ``name`` lives in (``a.b.c`` may be a name inside module ``a.b``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, wherever the import statement is."""
    known = modules()
    graph: dict[str, set[str]] = {m: set() for m in known}
    for mod, path in known.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                targets = [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                owner = _owner(t, known) if t.startswith("nitihw") else None
                if owner and owner != mod and not mod.startswith(owner + "."):
                    graph[mod].add(owner)  # a module importing its own package is not a loop
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_loops():
    graph = import_graph()
    loops = cycles(graph)
    assert not loops, "import loops:\n" + "\n".join(
        f"{c}: " + "; ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in loops
    )


def test_the_walk_finds_a_loop():
    """The check can fail: a loop made on paper is found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    # sim/simulate/native/build.py imports the tools inside a function only
    assert "nitihw.sim.tools" in graph["nitihw.sim.simulate.native.build"]
    assert len(graph) == len(modules()) > 60


def test_every_module_imports():
    for name in modules():
        testbenches = ("nitihw.sim.simulate.testbench", "nitihw.sim.command.train_tb")
        if name.startswith((*testbenches, "nitihw.gpu")) or name.endswith("__main__"):
            continue  # cocotb testbenches run inside a simulator; CuPy is optional
        importlib.import_module(name)


#: sim/'s roles, in order: each imports only the roles before it (and sim's shared helpers)
ROLES = ("model", "simulate", "explore", "command")


def _role(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "sim" and parts[2] in ROLES else None


def test_sim_roles_depend_one_way():
    """The estimate needs no simulator, the simulator no command line: a role's modules import
    only earlier roles' (sim/__init__.py), and sim's shared helpers import no role."""
    graph = import_graph()
    wrong = []
    for mod, deps in graph.items():
        mine = _role(mod)
        shared = mine is None and mod.startswith("nitihw.sim.")
        for dep in deps:
            theirs = _role(dep)
            if theirs is None or theirs == mine:
                continue
            if shared or ROLES.index(theirs) > ROLES.index(mine):
                wrong.append(f"{mod} -> {dep}")
    assert not wrong, "\n".join(wrong)
    assert {_role(m) for m in graph} >= set(ROLES)


def test_every_package_is_in_pyproject():
    """A wheel carries the packages pyproject.toml lists: every folder of the package with an
    __init__.py must be there (the editable install used here would not notice one missing)."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {"nitihw"} | {
        "nitihw." + ".".join(init.parent.relative_to(ROOT).parts)
        for part in PARTS
        for init in (ROOT / part).rglob("__init__.py")
    }
    assert found == listed, f"missing {sorted(found - listed)}, stale {sorted(listed - found)}"


def _members(proto) -> dict[str, bool]:
    """A Protocol's members and whether each is a coroutine function."""
    import inspect

    return {
        name: inspect.iscoroutinefunction(value)
        for name, value in vars(proto).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


def _conforms(cls, proto) -> list[str]:
    """What ``cls`` lacks of ``proto``: missing members, or a coroutine where a plain
    method is declared (or the reverse)."""
    import inspect

    wrong = []
    for name, is_async in _members(proto).items():
        if not hasattr(cls, name):
            wrong.append(f"{cls.__name__} has no {name}")
        elif (
            callable(getattr(cls, name))
            and inspect.iscoroutinefunction(getattr(cls, name)) != is_async
        ):
            wrong.append(f"{cls.__name__}.{name} is {'not ' if is_async else ''}async")
    return wrong


def test_every_simulator_port_is_what_it_declares():
    """The driver's two kinds of port (sim/simulate/ports.py) and the classes that implement
    them: Amaranth's and cocotb's step a cycle at a time, the native harness a program."""
    from nitihw.sim.simulate.cocotb_port import CocotbPort
    from nitihw.sim.simulate.native import NativeDatapath
    from nitihw.sim.simulate.ports import AmaranthPort, CyclePort, ProgramPort

    assert set(_members(CyclePort)) == {
        "cycle",
        "set",
        "get",
        "settle",
        "tick",
        "wait_any",
        "wait_low",
    }
    assert set(_members(ProgramPort)) == {"cycle", "run_program"}
    for cls in (AmaranthPort, CocotbPort):
        assert _conforms(cls, CyclePort) == []
    assert _conforms(NativeDatapath, ProgramPort) == []
    # the check can fail: a port without its wait, or with a plain tick
    assert _conforms(NativeDatapath, CyclePort) != []
    lame = type("Lame", (), {"cycle": 0, "run_program": lambda self, c, d, n: None})
    assert _conforms(lame, ProgramPort) == []
    assert _conforms(type("Sync", (AmaranthPort,), {"tick": lambda self: None}), CyclePort) == [
        "Sync.tick is not async"
    ]
