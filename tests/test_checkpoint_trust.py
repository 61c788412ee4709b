"""Checkpoints are checked for sense, not only for damage (issue 28, "Reliability v2").

The checksum finds damage, but anyone can recompute it: a file that claims version 1 to skip it,
a run state no run can have written, or weights outside the run's operand range are refused by
``--resume`` as damaged, before the dataset loads; every checkpoint a real run writes, of every
profile, still resumes.
"""

from __future__ import annotations

import copy
import io
import json
import shutil

import numpy as np
import pytest

from nitihw.golden.backend import NumpyBackend
from nitihw.golden.checkpoint import (
    CHECKPOINT_NAME,
    PREVIOUS_NAME,
    CheckpointError,
    ValueRange,
    check_state_sense,
    encode_checkpoint,
    read_checkpoint,
    state_ranges,
)
from nitihw.golden.datasets import load_digits
from nitihw.golden.models import get_model_spec
from nitihw.golden.network import build_network
from nitihw.golden.profiles import get_profile
from nitihw.golden.train import MuSchedule, TrainConfig, check_resume, train
from nitihw.sim.command.cli import main

DIGITS = ["--model", "mlp-digits", "--dataset", "digits"]
N, BATCH, PER_EPOCH = 1437, 64, 23  # digits' training set, the default batch: 23 steps an epoch


@pytest.fixture(scope="module")
def data():
    return load_digits()


def run(tmp, data, name, steps=26, **kw):
    """A real run's folder: ``steps`` steps of mlp-digits (26: 3 steps into the second epoch)."""
    cfg = TrainConfig(model="mlp-digits", dataset="digits", epochs=2, steps=steps, **kw)
    out = tmp / name
    train(cfg, data, out_dir=out)
    return cfg, out


@pytest.fixture(scope="module")
def niti_run(tmp_path_factory, data):
    return run(tmp_path_factory.mktemp("niti"), data, "run")


@pytest.fixture
def ckpt(niti_run, tmp_path):
    """A copy of the niti run's folder; returns its checkpoint's path."""
    out = tmp_path / "run"
    shutil.copytree(niti_run[1], out)
    return out / CHECKPOINT_NAME


def rewrite(path, edit_state=None, edit_arrays=None, edit_identity=None):
    """The checkpoint at ``path`` with edited contents and a recomputed checksum: only the
    checks of sense can tell."""
    meta, arrays = read_checkpoint(path)
    identity, state = copy.deepcopy(meta["identity"]), copy.deepcopy(meta["state"])
    arrays = {k: a.copy() for k, a in arrays.items()}
    for edit, obj in ((edit_state, state), (edit_arrays, arrays), (edit_identity, identity)):
        if edit:
            edit(obj)
    path.write_bytes(encode_checkpoint(identity, state, arrays))


def save_meta(path, meta, arrays):
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    path.write_bytes(buf.getvalue())


def resume(path, monkeypatch, *argv):
    """``nitihw train --resume`` of the run at ``path``; the dataset may not load."""

    def no_data(spec):
        raise AssertionError("the dataset was loaded before the checkpoint was refused")

    monkeypatch.setattr("nitihw.sim.command.train_run.load_dataset", no_data)
    return main(["train", *DIGITS, "--epochs", "3", "--out", str(path.parent), "--resume", *argv])


def refused(capsys, path, *words) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("nitihw"), err  # no traceback
    assert f"checkpoint {path} is damaged (" in err, err
    for w in words:
        assert w in err, (w, err)
    return err


# ---- 1. no version downgrade past the checksum -------------------------------------------------
@pytest.mark.parametrize(
    "keep",
    [("format", "manifest", "sha256"), ("sha256",), ("manifest",), ("format",)],
    ids=lambda k: "+".join(k),
)
def test_version_1_with_version_2_parts_is_refused(ckpt, monkeypatch, capsys, keep):
    meta, arrays = read_checkpoint(ckpt)
    meta["state"]["step"] = 10**15  # what the downgrade would have smuggled past the checksum
    old = {"version": 1, "identity": meta["identity"], "state": meta["state"]}
    save_meta(ckpt, old | {k: meta[k] for k in keep}, arrays)
    assert resume(ckpt, monkeypatch) == 2
    refused(capsys, ckpt, "claims version 1 but carries a version-2 checksum/manifest", keep[0])


@pytest.mark.parametrize("version", [True, 2.0, "2", None])
def test_a_version_that_is_not_an_integer_is_refused(ckpt, monkeypatch, capsys, version):
    meta, arrays = read_checkpoint(ckpt)
    save_meta(ckpt, meta | {"version": version}, arrays)
    assert resume(ckpt, monkeypatch) == 2
    refused(capsys, ckpt, f"format version {version!r}")


@pytest.mark.parametrize("explicit", [False, True], ids=["no-version", "version-1"])
def test_a_genuine_version_1_checkpoint_still_resumes(ckpt, capsys, explicit):
    """Version 1 wrote the identity and state only (docs/reliability.md): still read, and
    checked for sense like any other."""
    meta, arrays = read_checkpoint(ckpt)
    old = {"identity": meta["identity"], "state": meta["state"]}
    save_meta(ckpt, ({"version": 1} if explicit else {}) | old, arrays)
    assert check_resume(ckpt, TrainConfig(model="mlp-digits", dataset="digits")).step == 26
    argv = ["train", *DIGITS, "--epochs", "2", "--out", str(ckpt.parent), "--resume"]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((ckpt.parent / "result.json").read_text())["steps"] == 2 * PER_EPOCH


def test_version_1_is_checked_for_sense_too(ckpt, monkeypatch, capsys):
    meta, arrays = read_checkpoint(ckpt)
    meta["state"]["epoch_correct"] = meta["state"]["epoch_seen"] + 1
    save_meta(ckpt, {"identity": meta["identity"], "state": meta["state"]}, arrays)
    assert resume(ckpt, monkeypatch) == 2
    refused(capsys, ckpt, "epoch_correct")


def test_version_1_with_unknown_fields_is_refused(ckpt, monkeypatch, capsys):
    meta, arrays = read_checkpoint(ckpt)
    save_meta(ckpt, {"identity": meta["identity"], "state": meta["state"], "x": 1}, arrays)
    assert resume(ckpt, monkeypatch) == 2
    refused(capsys, ckpt, "version 1 with fields it never had: ['x']")


# ---- 2. the run state makes sense ---------------------------------------------------------------
TRACEBACK = 'Traceback (most recent call last):\n  File "train.py", line 1\nKeyError: 3'


def _set(**kv):
    return lambda s: s.update(kv)


def _record(**kv):
    return lambda s: s["history"][0].update(kv)


def _drop_key(key):
    return lambda s: s["history"][0].pop(key)


SENSELESS = {
    # state at step 26 of 23-step epochs: epoch_seen 192 (3 batches), samples 1437 + 192
    "correct-above-seen": (_set(epoch_correct=193), "epoch_correct 193 is more than epoch_seen"),
    "step-10^15": (_set(step=10**15), "step 1000000000000000: more than any run takes"),
    "step-past-the-limit": (_set(step=2**40 + 1), f"step {2**40 + 1}"),
    "step-off-the-epochs": (_set(step=27), "step 27, epoch_seen 192, samples 1629 and 1 epoch"),
    "samples-off": (_set(samples=N + 92), "23 steps at batch 64 are 1409..1472 images, these 1337"),
    "samples-above-steps": (_set(samples=26 * BATCH + 1), "samples 1665 in 26 steps"),
    "seen-above-samples": (_set(epoch_seen=5000, epoch_correct=0), "epoch_seen 5000 is more"),
    "seen-not-whole-batches": (_set(epoch_seen=191), "epoch_seen 191 is not a whole number"),
    "seen-a-whole-epoch": (_set(epoch_seen=23 * 64), "no epoch length fits"),
    "history-lost": (_set(history=[]), "0 epoch records do not add up: 26 steps of 64 in the"),
    "history-more-than-steps": (
        lambda s: (
            s.update(step=1, samples=64, epoch_seen=0, epoch_correct=0)
            or s["history"].append(s["history"][0] | {"epoch": 1})
        ),
        "history has 2 epochs after 1 steps",
    ),
    "traceback-as-last-record": (
        lambda s: s["history"].append(TRACEBACK),
        "history[1] is 'Traceback (most recent call last):",
    ),
    "record-a-list": (lambda s: s["history"].__setitem__(0, [0, 0.5]), "history[0] is [0, 0.5]"),
    "record-missing-key": (_drop_key("test_accuracy"), "history[0] has keys"),
    "record-missing-mu": (_drop_key("mu"), "history[0] has keys"),
    "record-extra-key": (_record(loss=1.0), "history[0] has keys"),
    "record-epoch-wrong": (_record(epoch=1), "history[0] epoch is 1, expected 0"),
    "record-epoch-a-string": (_record(epoch="0"), "history[0] epoch is '0'"),
    "record-epoch-bool": (_record(epoch=False), "history[0] epoch is False"),
    "record-accuracy-above-1": (_record(train_accuracy=1.5), "train_accuracy is 1.5"),
    "record-accuracy-nan": (_record(train_accuracy=float("nan")), "train_accuracy is nan"),
    "record-accuracy-a-string": (_record(test_accuracy="0.9"), "test_accuracy is '0.9'"),
    "record-mu-not-the-schedule": (_record(mu=5), "mu is 5; this run's schedule has 3"),
    "record-mu-float": (_record(mu=3.0), "mu is 3.0"),
    "record-seconds-negative": (_record(seconds=-1), "history[0] seconds is -1"),
    "record-seconds-inf": (_record(seconds=float("inf")), "history[0] seconds is inf"),
    "record-seconds-above-state": (_record(seconds=10**6), "is less than its epochs'"),
    "overflow-under-error": (_set(overflow_events=1), "overflow_events 1 in a run whose"),
}


@pytest.mark.parametrize("edit,why", SENSELESS.values(), ids=SENSELESS.keys())
def test_a_senseless_state_is_refused_before_the_data(ckpt, monkeypatch, capsys, edit, why):
    rewrite(ckpt, edit_state=edit)
    assert resume(ckpt, monkeypatch) == 2
    refused(capsys, ckpt, why, f"{ckpt.parent / PREVIOUS_NAME} is intact")


def test_a_test_accuracy_of_nan_is_what_an_empty_test_set_gives(ckpt):
    rewrite(ckpt, edit_state=_record(test_accuracy=float("nan")))
    assert check_resume(ckpt, TrainConfig(model="mlp-digits", dataset="digits")).step == 26


def test_an_identity_value_of_another_type_is_another_run(ckpt, monkeypatch, capsys):
    rewrite(ckpt, edit_identity=lambda i: i.update(batch=64.0))
    assert resume(ckpt, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "checkpoint field 'batch' is 64.0 but this run has 64" in err


def test_a_checkpoint_written_under_the_former_names_resumes(ckpt):
    """Checkpoints written before the accumulator width had one name everywhere carry
    ``acc_bits`` in their identity: the same run, still resumed; another width still refused."""

    def rename(identity):
        identity["acc_bits"] = identity.pop("accumulator_bits")

    rewrite(ckpt, edit_identity=rename)
    assert "acc_bits" in read_checkpoint(ckpt)[0]["identity"]
    assert check_resume(ckpt, TrainConfig(model="mlp-digits", dataset="digits")).step == 26
    other = TrainConfig(model="mlp-digits", dataset="digits", accumulator_bits=24)
    with pytest.raises(CheckpointError, match="'accumulator_bits' is 32 but this run has 24"):
        check_resume(ckpt, other)


def test_a_checkpoint_past_the_runs_epochs_resumes(tmp_path, data, capsys):
    """--epochs is not part of a run's identity: a checkpoint after 2 epochs resumed with
    --epochs 1 is done already (this is how resume works), not refused."""
    cfg, out = run(tmp_path, data, "run", steps=None)
    assert check_resume(out / CHECKPOINT_NAME, cfg).step == 2 * PER_EPOCH
    argv = ["train", *DIGITS, "--epochs", "1", "--out", str(out), "--resume"]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / "result.json").read_text())["steps"] == 2 * PER_EPOCH


def _replayed(n, batch, steps, correct=0):
    """The counters train() keeps after ``steps`` steps over ``n`` images (no history)."""
    per_epoch = -(-n // batch)
    done, rest = divmod(steps, per_epoch)
    seen = rest * batch
    history = [
        {"epoch": e, "train_accuracy": 0.5, "test_accuracy": 0.5, "mu": 3, "seconds": 0.1}
        for e in range(done)
    ]
    return {
        "step": steps,
        "epoch_correct": min(correct, seen),
        "epoch_seen": seen,
        "seconds": 0.1 * done,
        "samples": done * n + seen,
        "overflow_events": 0,
        "history": history,
    }


SENSE = {"batch": BATCH, "mu": MuSchedule("3"), "float_method": False, "overflow": "error"}


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1437, 1472])
def test_every_state_a_run_can_reach_is_accepted(tmp_path, n):
    for steps in range(0, 4 * -(-n // BATCH) + 2):
        check_state_sense(tmp_path / "c.npz", _replayed(n, BATCH, steps, correct=7), **SENSE)


def test_the_state_bounds_hold_without_the_accounting_in_version_1(tmp_path):
    """Before version 2 a Ctrl-C could lose a record: version 1 gets the bounds only."""
    state = _replayed(N, BATCH, 2 * PER_EPOCH + 3)
    state["history"].pop(0)  # epoch 0's record lost; epoch 1's kept
    path = tmp_path / "c.npz"
    check_state_sense(path, state, **SENSE, version=1)
    with pytest.raises(CheckpointError, match="history.0. epoch is 1, expected 0"):
        check_state_sense(path, state, **SENSE)
    with pytest.raises(CheckpointError, match="epoch_correct 9 is more"):
        check_state_sense(path, state | {"epoch_correct": 9, "epoch_seen": 8}, **SENSE, version=1)


def test_overflow_events_count_only_under_wrap(tmp_path):
    path, state = tmp_path / "c.npz", _replayed(N, BATCH, 30)
    wrap = SENSE | {"overflow": "wrap"}
    check_state_sense(path, state | {"overflow_events": 10**6}, **wrap)
    with pytest.raises(CheckpointError, match="beyond int64"):
        check_state_sense(path, state | {"overflow_events": 2**63}, **wrap)


def test_float_records_have_no_mu(tmp_path):
    path, state = tmp_path / "c.npz", _replayed(N, BATCH, 30)
    check_state_sense(path, state, **SENSE | {"float_method": True})  # an older record's mu
    del state["history"][0]["mu"]
    check_state_sense(path, state, **SENSE | {"float_method": True})
    with pytest.raises(CheckpointError, match="has keys"):
        check_state_sense(path, state, **SENSE)


# ---- 3. the arrays lie in the run's value range --------------------------------------------------
def _net(profile="niti", weight_bits=8, operand_bits=8):
    net = build_network(
        get_model_spec("mlp-digits"), get_profile(profile), 0, weight_bits, operand_bits
    )
    net.to_backend(NumpyBackend())
    return net


def test_the_ranges_come_from_the_network():
    i8, i32 = np.iinfo(np.int8), np.iinfo(np.int32)
    table = {
        ("niti", 8, 8): {"w0": (-127, 127)},
        ("niti-compat", 8, 8): {"w0": (-127, 127)},
        ("niti-2020", 8, 4): {"w0": (-7, 7)},
        ("niti", 8, 2): {"w0": (-1, 1)},
        ("niti", 16, 8): {"w0": (-32767, 32767)},
        ("wage", 8, 8): {"w0": (-64, 64)},
        ("nitro-d", 8, 8): {
            "w0": (int(i32.min), int(i32.max)),
            "norm_mean": (int(i8.min), int(i8.max)),
            "norm_mad": (1, 255),
        },
    }
    for profile in ("float32", "dfp16"):  # float arithmetic reaches inf and NaN: no range
        assert state_ranges(_net(profile)) == {}
    for (profile, wb, ob), want in table.items():
        net = _net(profile, wb, ob)
        ranges = state_ranges(net)
        assert set(ranges) == set(net.state()), profile
        for name, (lo, hi) in want.items():
            assert ranges[name][:2] == (lo, hi), (profile, wb, ob, name)
        for name, r in ranges.items():  # every layer alike
            assert isinstance(r, ValueRange)
            assert "norm" in name or r[:2] == ranges[name[0] + "0"][:2], (profile, name)
        for name, a in net.state().items():  # a fresh network is inside its own ranges
            lo, hi, _ = ranges[name]
            assert lo <= a.min() <= a.max() <= hi


#: (train options, array, index, value, what the refusal says)
OUT_OF_RANGE = {
    "4-bit-127": (["--operand-bits", "4"], "w0", (0, 0), 127, "holds 127 at [0, 0]", "-7..7"),
    "4-bit-minus-8": (["--operand-bits", "4"], "w1", (2, 3), -8, "holds -8 at [2, 3]", "4-bit"),
    "8-bit-minus-128": ([], "w0", (5, 1), -128, "holds -128 at [5, 1]", "-127..127"),
    "master-minus-32768": (["--weight-bits", "16"], "w1", (0, 0), -32768, "-32767..32767", ""),
    "wage-65": (["--profile", "wage"], "w0", (1, 1), 65, "holds 65", "-64..64"),
    "nitro-mad-0": (["--profile", "nitro-d"], "norm_mad", (0,), 0, "holds 0", "1..255"),
    "nitro-mean-200": (["--profile", "nitro-d"], "norm_mean", (0,), 200, "holds 200", "-128..127"),
}


@pytest.fixture(scope="module")
def profile_runs(tmp_path_factory):
    """Real 26-step runs of every profile and width, made once through the command line."""
    root = tmp_path_factory.mktemp("profiles")
    made = {}
    for argv in {tuple(v[0]) for v in OUT_OF_RANGE.values()} | set(REAL):
        out = root / ("run" + "".join(argv).replace("-", "_"))
        args = [*DIGITS, "--epochs", "2", "--steps", "26", "--checkpoint-every", "5"]
        assert main(["train", *args, "--out", str(out), *argv]) == 0
        made[argv] = out
    return made


def _copy(profile_runs, argv, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(profile_runs[tuple(argv)], out)
    return out / CHECKPOINT_NAME


@pytest.mark.parametrize("argv,name,at,value,why,why2", OUT_OF_RANGE.values(), ids=OUT_OF_RANGE)
def test_state_outside_the_runs_range_is_refused(
    profile_runs, tmp_path, monkeypatch, capsys, argv, name, at, value, why, why2
):
    path = _copy(profile_runs, argv, tmp_path)

    def edit(arrays):
        arrays[name][at] = value

    rewrite(path, edit_arrays=edit)
    capsys.readouterr()
    assert resume(path, monkeypatch, *argv) == 2
    refused(capsys, path, f"array {name!r}", why, why2)


#: the runs the profiles' real checkpoints come from
REAL = [
    (),
    ("--profile", "niti-ref"),
    ("--profile", "niti-2020"),
    ("--profile", "niti-compat"),
    ("--profile", "wage"),
    ("--profile", "nitro-d"),
    ("--profile", "float32"),
    ("--profile", "dfp16"),
    ("--operand-bits", "4"),
    ("--operand-bits", "2"),
    ("--weight-bits", "16"),
]


@pytest.mark.parametrize("argv", REAL, ids=lambda a: " ".join(a) or "niti")
def test_real_checkpoints_of_every_profile_resume(profile_runs, tmp_path, capsys, argv):
    """What a run writes is never refused: mid-epoch (every 5 steps) and at the epoch's end,
    the kept one before it too, and what the resumed run writes."""
    path = _copy(profile_runs, argv, tmp_path)
    out = path.parent
    cfg = TrainConfig(**read_checkpoint(path)[0]["identity"])
    assert check_resume(out / PREVIOUS_NAME, cfg).step == 25  # mid-epoch
    assert check_resume(path, cfg).step == 26

    def again(*more):
        capsys.readouterr()
        code = main(["train", *DIGITS, "--out", str(out), "--resume", *argv, *more])
        assert code == 0, capsys.readouterr().err

    again("--epochs", "2", "--steps", "40", "--checkpoint-every", "7")
    again("--epochs", "2")  # from mid-epoch 40 to the end, 46
    assert json.loads((out / "result.json").read_text())["steps"] == 2 * PER_EPOCH
    again("--epochs", "3", "--steps", "47")
    meta, _ = read_checkpoint(path)
    assert meta["state"]["step"] == 47 and len(meta["state"]["history"]) == 2


def test_a_diverged_float_run_resumes(profile_runs, tmp_path, monkeypatch, capsys):
    """The float twin's arithmetic reaches inf and NaN (a learning rate too high): its
    checkpoint is what it wrote, not damage, and resumes."""
    path = _copy(profile_runs, ("--profile", "float32"), tmp_path)

    def diverge(arrays):
        arrays["w0"][0, 0], arrays["v1"][0, 0] = np.nan, np.inf

    rewrite(path, edit_arrays=diverge)
    cfg = TrainConfig(**read_checkpoint(path)[0]["identity"])
    assert check_resume(path, cfg).step == 26
