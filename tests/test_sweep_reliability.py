"""nitihw sweep, reliability: a point's id covers every setting its result depends on; a stored
record is reused only when it is this point's, whole and sound (and a fuzzer of record files);
one grid and one writer per folder; the scheduler's address and a server that is not Dask's;
topologies (duplicate layers, files that are not topologies); errors found before the sweep;
the exit status when every point failed; big grids that say what they will cost."""

from __future__ import annotations

import json
import math
import random
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nitihw.golden.run_folder import RunLock
from nitihw.sim.cluster import SchedulerError, check_scheduler, parse_scheduler
from nitihw.sim.command.cli import main
from nitihw.sim.explore.sweep import GridError, load_grid, point_id
from nitihw.sim.explore.sweep import points as points_mod
from nitihw.sim.explore.sweep import run as run_mod
from nitihw.sim.explore.sweep.grid import canonical
from nitihw.sim.explore.sweep.report import pareto_mask
from nitihw.sim.explore.sweep.run import load_record, record_file, row, run_sweep
from nitihw.sim.model.workload import WorkloadError, topology_workload

GRID = """
compute = ["estimate"]
train_samples = 1000
[axes]
model = ["mlp-digits"]
batch = 16
rows = [2, 4]
cols = [4, 8]
"""


def write(folder: Path, text: str = GRID, name: str = "grid.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def sweep(path, out, *extra) -> int:
    return main(["sweep", "--grid", str(path), "--out", str(out), "--workers", "0", "--no-plots",
                 *extra])  # fmt: skip


def results(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "results.csv", keep_default_na=False)


def one_error_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.startswith("nitihw: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def stored(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "points").glob("*.json")}


# ---- 1. a point's id covers every setting ---------------------------------------------------


def test_changed_settings_are_computed_again_never_reused(tmp_path, capsys):
    """train_samples, the energy table's contents, the [train] table and the version all
    change the id; a rerun into the same folder gives the new figures."""
    out = tmp_path / "o"
    from nitihw.sim.model.accelerator import TABLES

    table = TABLES / "horowitz-45nm.toml"
    (tmp_path / "my.toml").write_text(table.read_text())
    text = 'energy = "my.toml"\n' + GRID
    path = write(tmp_path, text)
    assert sweep(path, out) == 0
    first = results(out)
    # 60x the samples: 60x the epoch's energy, from new points
    write(tmp_path, text.replace("1000", "60000"))
    assert sweep(path, out) == 0
    assert "changed since the last sweep" in capsys.readouterr().err
    second = results(out)
    assert set(second["point"]).isdisjoint(first["point"])
    ratio = second["epoch_energy_j"] / first["epoch_energy_j"]
    assert np.allclose(ratio, math.ceil(60000 / 16) / math.ceil(1000 / 16), rtol=1e-12)
    # the same table name, other contents: other energies
    doc = (tmp_path / "my.toml").read_text()
    key = re.search(r"^(int8_mult\s*=\s*)([0-9.]+)", doc, re.M)
    (tmp_path / "my.toml").write_text(
        doc.replace(key.group(0), f"{key.group(1)}{float(key.group(2)) * 3}")
    )
    assert sweep(path, out) == 0
    third = results(out)
    assert set(third["point"]).isdisjoint(second["point"])
    assert (third["energy_mac_pj"] > second["energy_mac_pj"]).all()


def test_the_id_covers_compute_tables_version_and_topology_contents(tmp_path, monkeypatch):
    g = load_grid(write(tmp_path))
    base = g.point_id(g.points[0])
    assert g.ids()[0] == base == point_id(g.points[0], g.key, g.files)
    others = [
        GRID.replace('["estimate"]', '["estimate", "area"]'),
        GRID.replace("1000", "1001"),
        GRID.replace('["estimate"]', '["train"]') + "[train]\nepochs = 2\n",
        'energy = "horowitz-45nm"\n' + GRID,  # the default named: the same table, same ids
    ]
    ids = [load_grid(write(tmp_path, t, f"g{i}.toml")).ids()[0] for i, t in enumerate(others)]
    assert len({base, *ids[:3]}) == 4 and ids[3] == base
    import nitihw

    monkeypatch.setattr(nitihw, "__version__", "9.9.9")
    assert load_grid(write(tmp_path)).ids()[0] != base
    monkeypatch.undo()
    topo = tmp_path / "t.csv"
    topo.write_text("Layer, M, N, K,\nfc1, 16, 32, 64,\n")
    tg = write(tmp_path, "[axes]\ntopology = ['t.csv']\n", "t.toml")
    before = load_grid(tg).ids()
    topo.write_text("Layer, M, N, K,\nfc1, 16, 32, 65,\n")
    assert load_grid(tg).ids() != before


def test_points_are_made_on_demand_and_ids_match(tmp_path):
    text = "[axes]\nrows = {from = 1, to = 30, step = 1}\ncols = [2, 4, 8]\nkmax = [64, 256]\n"
    g = load_grid(write(tmp_path, text))
    every = list(g.points)
    assert len(g.points) == len(every) == 180
    assert [g.points[i] for i in (0, 7, 179, -1)] == [every[0], every[7], every[179], every[-1]]
    assert g.points[3:6] == every[3:6]
    assert g.ids() == [g.point_id(p) for p in every]
    with pytest.raises(IndexError):
        g.points[180]


# ---- 2. stored records are checked before reuse ---------------------------------------------


def _fresh(tmp_path) -> tuple[Path, Path, pd.DataFrame]:
    out = tmp_path / "o"
    path = write(tmp_path)
    assert sweep(path, out) == 0
    return path, out, results(out)


def same_results(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.drop(columns="point_seconds"), b.drop(columns="point_seconds"),
                                  check_exact=True)  # fmt: skip


@pytest.mark.parametrize(
    "damage,why",
    [
        (lambda doc, other: {"record": {}}, "not a point record"),
        (lambda doc, other: {**doc, "record": {**doc["record"], "rows": 999}}, "unexpected field"),
        (lambda doc, other: other, "it is the record of point"),
        (lambda doc, other: {**other, "id": doc["id"]}, "not this point's"),
        (lambda doc, other: {**doc, "settings_sha256": "0" * 64}, "other settings"),
        (lambda doc, other: "[" * 100_000 + "]" * 100_000, "not JSON"),
        (lambda doc, other: {**doc, "record": {**doc["record"], "energy_pj": "12x"}}, "energy_pj"),
        (lambda doc, other: {**doc, "record": {**doc["record"], "energy_pj": 1.0}}, "checksum"),
        (lambda doc, other: {**doc, "record": {**doc["record"], "macs": -1}}, "negative"),
        (lambda doc, other: {**doc, "record": {**doc["record"], "macs": 10**40}}, "out of range"),
        (lambda doc, other: {**doc, "record": {**doc["record"], "energy_pj": math.inf}}, "finite"),
        (lambda doc, other: b"\xff\xfe", "not UTF-8"),
    ],
)
def test_a_record_that_fails_its_checks_is_computed_again(tmp_path, capsys, damage, why):
    path, out, before = _fresh(tmp_path)
    pid, other = before["point"][0], before["point"][1]
    docs = stored(out)
    bad = damage(docs[pid], docs[other])
    file = out / "points" / f"{pid}.json"
    if isinstance(bad, bytes):
        file.write_bytes(bad)
    else:
        file.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    capsys.readouterr()
    assert sweep(path, out) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    note = [x for x in err.splitlines() if "failed their checks" in x]
    assert len(note) == 1 and str(file) in note[0] and why in note[0], err
    same_results(results(out), before)
    assert stored(out)[pid]["record"] == docs[pid]["record"] | {
        "point_seconds": stored(out)[pid]["record"]["point_seconds"]
    }


def test_many_bad_records_are_one_note(tmp_path, capsys):
    path, out, before = _fresh(tmp_path)
    for p in (out / "points").glob("*.json"):
        p.write_text('{"record": {}}')
    capsys.readouterr()
    assert sweep(path, out) == 0
    err = capsys.readouterr().err
    assert len([x for x in err.splitlines() if "failed their checks" in x]) == 1
    assert "4 stored point record(s) failed their checks" in err
    same_results(results(out), before)


def test_settings_win_over_any_field_of_a_record():
    r = row("abc", {"rows": 8, "cols": 4}, {"rows": 999, "point": "x", "error": ""})
    assert r == {"point": "abc", "rows": 8, "cols": 4, "error": ""}


def test_failed_points_are_run_again(tmp_path, monkeypatch, capsys):
    path = write(tmp_path)
    out = tmp_path / "o"
    real = points_mod.COMPUTE["estimate"]

    def flaky(point, settings):
        if point["rows"] == 2:
            raise RuntimeError("the worker ran out of disk")
        return real(point, settings)

    monkeypatch.setitem(points_mod.COMPUTE, "estimate", flaky)
    assert sweep(path, out) == 0  # 2 of 4 failed: the sweep goes on, exit 0
    text = capsys.readouterr().out
    assert "4 points, 2 failed" in text and "ran out of disk" in text
    monkeypatch.setitem(points_mod.COMPUTE, "estimate", real)
    assert sweep(path, out) == 0
    captured = capsys.readouterr()
    assert "2 point(s) that failed before are run again" in captured.err
    assert "4 points, 0 failed" in captured.out
    assert (results(out)["error"] == "").all()


def test_a_point_whose_outputs_are_not_sound_is_a_failure(tmp_path, monkeypatch):
    real = points_mod.COMPUTE["estimate"]
    monkeypatch.setitem(points_mod.COMPUTE, "estimate",
                        lambda p, s: {**real(p, s), "energy_pj": float("nan")})  # fmt: skip
    rows = run_sweep(load_grid(write(tmp_path)), tmp_path / "o", workers=0, progress=False)
    assert all("energy_pj is not finite" in r["error"] for r in rows)


# ---- the fuzzer of record files -------------------------------------------------------------

VALUES = [None, True, False, "", "x", "1.5", [], {}, [1], {"a": 1}, 0, -1, 1, 1.0, 0.5, -0.0,
          10**19, 10**300, float("nan"), float("inf"), float("-inf"), 1e308, -1e-300]  # fmt: skip


def _paths(obj, here=()):
    yield here
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*here, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*here, i))


def _get(obj, path):
    for k in path:
        obj = obj[k]
    return obj


def mutate(rng: random.Random, doc: dict) -> str | bytes:
    """A random change of a record file: of its JSON (a field removed, added, retyped, a number
    nudged, NaN, inf, huge, nesting) or of its text (truncated, a byte changed, whitespace)."""
    doc = json.loads(json.dumps(doc))
    kind = rng.randrange(10)
    text = json.dumps(doc, indent=1)
    if kind == 0:
        return text[: rng.randrange(len(text))]
    if kind == 1:
        b = bytearray(text.encode())
        b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == 2:  # the same meaning, other layout: must be accepted
        return json.dumps(doc, indent=rng.choice([None, 0, 4]), sort_keys=rng.random() < 0.5)
    if kind == 3:
        depth = rng.choice([10, 900, 5000])
        return text.replace('"record": {', '"record": ' + "[" * depth + "]" * depth + ', "r": {', 1)
    paths = [p for p in _paths(doc) if p]
    path = rng.choice(paths)
    parent, key = _get(doc, path[:-1]), path[-1]
    if kind == 4:
        del parent[key]
    elif kind == 5:
        parent_dict = parent if isinstance(parent, dict) else doc["record"]
        parent_dict[rng.choice(["rows", "extra", "point", "error", "model"])] = rng.choice(VALUES)
    elif kind == 6:
        parent[key] = rng.choice(VALUES)
    elif kind == 7:
        v = parent[key]
        if isinstance(v, bool | str) or not isinstance(v, int | float):
            parent[key] = rng.choice(VALUES)
        else:
            parent[key] = rng.choice([v + 1, v * (1 + 1e-12), float(v), -v, v * 10**6])
    elif kind == 8:
        nest = rng.choice(VALUES)
        for _ in range(rng.randrange(1, 50)):
            nest = [nest] if rng.random() < 0.5 else {"k": nest}
        parent[key] = nest
    else:
        parent[key] = parent[key]  # unchanged: must be accepted
    return json.dumps(doc, allow_nan=True)


def test_the_record_fuzzer(tmp_path):
    """Each mutated record file is either refused (computed again) or accepted with exactly
    the stored meaning; none raises. Some mutations keep the meaning: those are accepted."""
    g = load_grid(write(tmp_path))
    out = tmp_path / "o"
    run_sweep(g, out, workers=0, progress=False)
    ids = g.ids()
    originals = {pid: json.loads((out / "points" / f"{pid}.json").read_text()) for pid in ids}
    rng = random.Random(28)
    accepted = refused = 0
    target = tmp_path / "case.json"
    for _ in range(1500):
        i = rng.randrange(len(ids))
        pid, point, doc = ids[i], g.points[i], originals[ids[i]]
        data = mutate(rng, doc)
        if isinstance(data, str):
            data = data.encode()
        target.write_bytes(data)
        record, why = load_record(target, pid, point, g.key, g.compute)
        if record is None:
            assert why
            refused += 1
        else:
            assert canonical(record) == canonical(doc["record"]), data[:200]
            accepted += 1
    assert accepted > 100 and refused > 800, (accepted, refused)


def test_fuzzed_records_end_to_end(tmp_path, capsys):
    """Rerunning over mutated records always gives the fresh results."""
    path, out, before = _fresh(tmp_path)
    originals = stored(out)
    rng = random.Random(7)
    for _ in range(6):
        for pid in rng.sample(sorted(originals), 2):
            data = mutate(rng, originals[pid])
            p = out / "points" / f"{pid}.json"
            p.write_bytes(data if isinstance(data, bytes) else data.encode())
        assert sweep(path, out) == 0
        assert "Traceback" not in capsys.readouterr().err
        same_results(results(out), before)


# ---- 3. one grid, one writer ----------------------------------------------------------------


def test_another_grid_is_refused_unless_overwrite(tmp_path, capsys):
    path, out, _ = _fresh(tmp_path)
    sweep_json = json.loads((out / "sweep.json").read_text())
    assert sweep_json["points"] == 4 and sweep_json["grid"] == str(path.resolve())
    other = write(tmp_path, GRID.replace("[2, 4]", "[2, 4, 8]"), "other.toml")
    capsys.readouterr()
    assert sweep(other, out) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "holds the sweep of another grid" in line and str(path.resolve()) in line
    assert "--overwrite" in line
    assert len(list((out / "points").glob("*.json"))) == 4  # nothing touched
    # a copy of the same grid under another name resumes
    copy = write(tmp_path, GRID, "copy.toml")
    assert sweep(copy, out) == 0
    assert sweep(other, out, "--overwrite") == 0
    assert "--overwrite: removed" in capsys.readouterr().err
    assert len(results(out)) == 6 and len(list((out / "points").glob("*.json"))) == 6
    # the same grid, edited (a new axis value), resumes: only the new points run
    stamp = {p: p.stat().st_mtime_ns for p in (out / "points").glob("*.json")}
    write(tmp_path, GRID.replace("[2, 4]", "[2, 4, 8, 16]"), "other.toml")
    assert sweep(other, out) == 0
    new = [p for p in (out / "points").glob("*.json") if p not in stamp]
    assert len(new) == 2 and all(stamp[p] == p.stat().st_mtime_ns for p in stamp)


def test_an_unreadable_sweep_file_is_refused(tmp_path, capsys):
    path, out, _ = _fresh(tmp_path)
    (out / "sweep.json").write_text("{nope")
    capsys.readouterr()
    assert sweep(path, out) == 2
    assert "sweep.json is unreadable" in one_error_line(capsys.readouterr().err)
    assert sweep(path, out, "--overwrite") == 0


def test_a_second_sweep_on_the_folder_is_refused(tmp_path, capsys):
    path = write(tmp_path)
    out = tmp_path / "o"
    with RunLock(out, say=lambda m: None):
        assert sweep(path, out) == 2
        assert "in use by another nitihw run" in one_error_line(capsys.readouterr().err)
        assert not (out / "sweep.json").exists()
    assert sweep(path, out) == 0
    assert not (out / "run.lock").exists()


def test_temporaries_of_a_killed_sweep_are_removed(tmp_path, capsys):
    path, out, before = _fresh(tmp_path)
    junk = [out / "points" / f".{before['point'][0]}.json.{n}.tmp" for n in (123, 456)]
    for p in junk:
        p.write_text('{"id": "half')
    capsys.readouterr()
    assert sweep(path, out) == 0
    assert "removed 2 temporary file(s)" in capsys.readouterr().err
    assert not any(p.exists() for p in junk)


# ---- 4. the scheduler -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address,message",
    [
        ("tls://127.0.0.1:8786", "only tcp:// schedulers are supported, not tls://"),
        ("ucx://127.0.0.1:8786", "only tcp:// schedulers are supported, not ucx://"),
        ("inproc://x", "only tcp://"),
        ("garbage", "no port in it"),
        ("tcp://host:port", "the port must be a number in 1..65535, got 'port'"),
        ("tcp://:8786", "no host"),
        ("tcp://host:0", "got '0'"),
        ("tcp://a/b:1", "no host"),
    ],
)
def test_scheduler_addresses_are_checked_first(tmp_path, capsys, address, message):
    with pytest.raises(SchedulerError, match=re.escape(message)):
        parse_scheduler(address)
    out = tmp_path / "o"
    t = time.monotonic()
    assert main(["sweep", "--grid", str(write(tmp_path)), "--out", str(out), "--scheduler",
                 address]) == 2  # fmt: skip
    assert time.monotonic() - t < 5
    line = one_error_line(capsys.readouterr().err)
    assert message in line and repr(address) in line
    assert not out.exists()


def test_scheduler_addresses_that_are_accepted():
    assert parse_scheduler("127.0.0.1:8786") == ("127.0.0.1", 8786, "tcp://127.0.0.1:8786")
    assert parse_scheduler("TCP://h.example:1") == ("h.example", 1, "tcp://h.example:1")
    assert parse_scheduler("tcp://[::1]:8786") == ("::1", 8786, "tcp://[::1]:8786")


class Server:
    """A TCP server on 127.0.0.1 that sends ``reply`` to each connection (nothing: silent),
    then holds it open."""

    def __init__(self, reply: bytes):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.reply, self.conns, self.stop = reply, [], False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(c)
            if self.reply:
                c.sendall(self.reply)

    def close(self):
        self.stop = True
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.mark.parametrize(
    "reply,message",
    [
        (b"\xff" * 64, "not a Dask scheduler (its first message is not Dask's handshake"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not a Dask scheduler"),
        (b"\x20\x00\x00\x00\x00\x00\x00\x00" + b"\x01" + b"\x00" * 31, "not Dask's handshake"),
        (b"", "not a Dask scheduler (no handshake within 5 s)"),
    ],
)
def test_a_server_that_is_not_dask_fails_fast(tmp_path, capsys, reply, message):
    server = Server(reply)
    try:
        address = f"tcp://127.0.0.1:{server.port}"
        t = time.monotonic()
        assert main(["sweep", "--grid", str(write(tmp_path)), "--out", str(tmp_path / "o"),
                     "--scheduler", address]) == 2  # fmt: skip
        assert time.monotonic() - t < 10
    finally:
        server.close()
    line = one_error_line(capsys.readouterr().err)
    assert message in line and address in line


def test_a_closed_port_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SchedulerError, match="cannot connect"):
        check_scheduler(f"127.0.0.1:{port}")


# ---- 5. topologies --------------------------------------------------------------------------


def test_duplicate_layer_names_are_named(tmp_path):
    topo = tmp_path / "t.csv"
    topo.write_text("Layer, M, N, K,\nfc1, 16, 32, 64,\n\nfc2, 16, 10, 32,\nfc1, 4, 4, 4,\n")
    with pytest.raises(WorkloadError, match=r"t.csv, line 5: layer name 'fc1' is used again "
                       r"\(first on line 2\)"):  # fmt: skip
        topology_workload(topo)
    with pytest.raises(GridError, match=r"grid.toml: axes.topology\[0\]: .*line 5: layer name"):
        load_grid(write(tmp_path, "[axes]\ntopology = ['t.csv']\n"))


@pytest.mark.parametrize(
    "value,message",
    [
        ("/etc/passwd", "/etc/passwd, line 1: not a topology"),
        ("notes.txt", "notes.txt, line 1: not a topology"),
        ("../outside.csv", "outside the grid's folder"),
    ],
)
def test_a_topology_must_be_one(tmp_path, capsys, value, message):
    if value == "/etc/passwd" and not Path(value).is_file():
        pytest.skip("no /etc/passwd")
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "notes.txt").write_text("root:x:0:0:root:/root:/bin/bash\nsecret, 1, 2, 3\n")
    (tmp_path / "outside.csv").write_text("Layer, M, N, K,\nfc1, 16, 32, 64,\n")
    path = write(tmp_path / "g", f"[axes]\ntopology = ['{value}']\n")
    out = tmp_path / "o"
    assert sweep(path, out) == 2
    line = one_error_line(capsys.readouterr().err)
    assert message in line and str(path) in line and "axes.topology[0]" in line
    assert not out.exists()


def test_a_long_topology_keeps_its_layer_order(tmp_path):
    """10,000 layers read and estimated (the order of the rows comes from one lookup table,
    not a scan per row: its speed is in bench/estimate_speed.py)."""
    from nitihw.sim.model.accelerator import load_accelerator
    from nitihw.sim.model.estimate import estimate

    topo = tmp_path / "big.csv"
    topo.write_text("Layer, M, N, K,\n" + "".join(f"fc{i}, 16, 32, 64,\n" for i in range(10_000)))
    layers = topology_workload(topo, 16)
    assert [lay.name for lay in layers] == [f"fc{i}" for i in range(10_000)]
    rows = estimate(layers, load_accelerator(), 16, 16, "big")["rows"]
    order = [r["layer"] for r in rows]
    assert [n for i, n in enumerate(order) if i == 0 or n != order[i - 1]] == [
        f"fc{i}" for i in range(10_000)
    ]


# ---- 6. errors found before the sweep, and the exit status ----------------------------------


@pytest.mark.parametrize(
    "spec,message",
    [
        ("nope", "unknown dataset 'nope'"),
        ("mnist", "needs a directory"),
        ("mnist:/no/such/folder", "/no/such/folder is not a folder"),
        ("digits:/tmp", "unknown dataset 'digits:/tmp'"),
    ],
)
def test_a_bogus_dataset_is_named_up_front(tmp_path, capsys, spec, message):
    text = f'compute = ["train"]\n[train]\ndataset = "{spec}"\n[axes]\nmodel = ["mlp-digits"]\n'
    path = write(tmp_path, text)
    out = tmp_path / "o"
    assert sweep(path, out) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{path}: train.dataset" in line and message in line
    assert not out.exists()


def test_every_point_failed_exits_1(tmp_path, capsys):
    topo = tmp_path / "t.csv"
    topo.write_text("Layer, M, N, K,\nfc1, 16, 32, 64,\nfc2, 16, 10, 32,\n")
    out = tmp_path / "o"
    assert sweep(write(tmp_path, "[axes]\ntopology = ['t.csv']\nprofile = ['nitro-d']\n"), out) == 1
    text = capsys.readouterr().out
    assert "1 points, 1 failed" in text and "first failure" in text and "needs a built-in" in text
    both = write(
        tmp_path, "[axes]\ntopology = ['t.csv']\nprofile = ['niti', 'nitro-d']\n", "b.toml"
    )
    assert sweep(both, tmp_path / "b") == 0
    assert "2 points, 1 failed" in capsys.readouterr().out


# ---- 7. big grids -----------------------------------------------------------------------------


def test_a_big_grid_says_what_it_will_cost(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_mod, "LARGE", 3)
    path = write(tmp_path)
    assert sweep(path, tmp_path / "o") == 0
    err = capsys.readouterr().err
    assert "hashing 4 point ids" in err
    warning = [x for x in err.splitlines() if "warning:" in x]
    assert len(warning) == 1 and "4 points (4 to compute)" in warning[0]
    assert "ms a point (measured here)" in warning[0] and "GB of memory" in warning[0]
    assert len(results(tmp_path / "o")) == 4


def test_bulk_ids_are_the_points_ids(tmp_path):
    """Grid.ids() hashes in bulk (its speed: bench/sweep_speed.py); each id is the point's."""
    text = "[axes]\nrows = {from = 1, to = 100, step = 1}\ncols = {from = 1, to = 100, step = 1}\n"
    text += "kmax = {from = 1, to = 10, step = 1}\n"
    g = load_grid(write(tmp_path, text))
    assert len(g.points) == 100_000
    ids = g.ids()
    for i in (0, 1, 12_345, 99_999):
        assert ids[i] == g.point_id(g.points[i])
    assert len(set(ids)) == len(ids)


def test_the_pareto_front_matches_every_pair_compared():
    rng = np.random.default_rng(3)
    for t in range(60):
        v = rng.integers(0, 5, (int(rng.integers(0, 200)), 3)).astype(float)
        if t % 2:
            v = rng.random(v.shape)
        brute = np.array([not np.any(np.all(v <= p, axis=1) & np.any(v < p, axis=1)) for p in v],
                         bool)  # fmt: skip
        assert (pareto_mask(v, block=int(rng.integers(1, 40))) == brute).all()


def test_record_files_hold_the_point_and_its_settings(tmp_path):
    g = load_grid(write(tmp_path))
    run_sweep(g, tmp_path / "o", workers=0, progress=False)
    pid = g.ids()[0]
    doc = json.loads((tmp_path / "o" / "points" / f"{pid}.json").read_text())
    assert doc["id"] == pid and doc["point"] == g.points[0] and doc["settings_sha256"] == g.key
    assert doc == record_file(pid, g.points[0], g.key, doc["record"])
