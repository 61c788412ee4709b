"""Operand widths other than 8 (numerics.md §2, "Operand width"): values in
``+-(2^(b-1) - 1)``, shifts ``max(bitwidth - (b - 1), 0)``, through rounding, the loss, the
layers and a whole training run; b = 8 is the int8 contract, unchanged."""

import json

import numpy as np
import pytest

from nitihw.golden import layers as L
from nitihw.golden.backend import NumpyBackend, OpTag
from nitihw.golden.init import quantize_weights
from nitihw.golden.loss import ERROR_SHIFT, cross_entropy_error, error_shift
from nitihw.golden.profiles import get_profile
from nitihw.golden.rounding import ROUNDING_MODES, shift_round, value_limit
from nitihw.sim.command.cli import main

MODES = ROUNDING_MODES


def test_value_limit():
    assert [value_limit(b) for b in range(2, 9)] == [1, 3, 7, 15, 31, 63, 127]
    for bad in (1, 9, 16, "8"):
        with pytest.raises(ValueError, match="operand bits must be in 2..8"):
            value_limit(bad)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("mode", MODES)
def test_shift_round_saturates_at_the_operand_width(bits, mode):
    """Rounding first, then the narrower bound: the int8 result clamped again, for every
    value of 12 bits and every right and left shift."""
    lim = value_limit(bits)
    x = np.arange(-2048, 2048)
    rng = np.random.default_rng(bits)
    for s in range(-8, 14):
        rand = rng.integers(0, 1 << max(s, 0), x.shape) if mode == "sto" and s > 0 else None
        m = mode if rand is not None or mode != "sto" else "round"
        got = shift_round(x, s, m, rand, lim)
        want = np.clip(shift_round(x, s, m, rand), -lim, lim)
        np.testing.assert_array_equal(got, want, err_msg=f"shift {s}")
        assert got.dtype == np.int8


def test_shift_round_limit_is_checked():
    for bad in (0, 128, -1, True, 3.0):
        with pytest.raises(ValueError, match="limit must be an integer in 1..127"):
            shift_round(np.array([5]), 1, "round", None, bad)


def test_loss_shift_follows_the_width():
    assert error_shift(8) == ERROR_SHIFT == 4 and error_shift(6) == 6 and error_shift(2) == 10
    rng = np.random.default_rng(1)
    logits = rng.integers(-31, 32, (64, 10))
    labels = rng.integers(0, 10, 64)
    for e in (-9, -5, 0):
        e8 = cross_entropy_error(logits, e, labels, "psto")
        assert np.array_equal(e8, cross_entropy_error(logits, e, labels, "psto", None, 8))
        e6 = cross_entropy_error(logits, e, labels, "psto", None, 6)
        assert np.abs(e6).max() <= 31 and np.abs(e6).max() > 0
        # the same Q, shifted 2 more bits: the label column is -2^11 .. 0, so it saturates
        q_shifted = cross_entropy_error(logits, e, labels, "trunc", None, 6)
        assert q_shifted[np.arange(64), labels].min() >= -31


def test_initial_weights_use_the_width():
    w = np.linspace(-0.3, 0.2, 50, dtype=np.float32)
    w8, e8 = quantize_weights(w)
    w6, e6 = quantize_weights(w, 6)
    assert np.abs(w8).max() == 127 and np.abs(w6).max() == 31
    assert e6 == e8 + 2  # two fewer magnitude bits: the exponent rises by two


def test_requant_and_update_stay_in_range():
    """A layer step at 5 bits: every activation, error and weight in +-15, shifts of
    bitwidth - 4."""
    be = NumpyBackend(threads=1)
    ctx = L.StepContext(be, get_profile("niti"), operand_bits=5, mu=3)
    rng = np.random.default_rng(3)
    w = rng.integers(-15, 16, (7, 12)).astype(np.int8)
    layer = L.Linear("0:linear", w, -4)
    x = L.Tensor(rng.integers(-15, 16, (9, 12)).astype(np.int8), -4)
    y = layer.forward(x, ctx)
    acc = x.data.astype(np.int64) @ w.T.astype(np.int64)
    bw = int(np.abs(acc).max() - 1).bit_length()
    assert bw > 4 and y.exp == -8 + bw - 4
    np.testing.assert_array_equal(y.data, shift_round(acc, bw - 4, "round", limit=15))
    layer.first = False
    prev = layer.backward(rng.integers(-15, 16, (9, 7)).astype(np.int8), ctx)
    assert np.abs(prev).max() <= 15 and np.abs(layer.weight).max() <= 15


def test_rescale_limit_on_the_backend():
    be = NumpyBackend(threads=1)
    tag = OpTag("l", "forward")
    acc = np.array([1000, -1000, 17, -3])
    assert be.rescale(acc, 2, "round", tag, limit=31).tolist() == [31, -31, 4, -1]
    with pytest.raises(ValueError, match="rescale limit must be in 1..127"):
        be.rescale(acc, 2, "round", tag, limit=200)


def _train(tmp_path, name, *args):
    out = tmp_path / name
    code = main(["train", "--model", "mlp-digits", "--dataset", "digits", "--batch", "32",
                 "--out", str(out), *args])  # fmt: skip
    assert code == 0
    return json.loads((out / "result.json").read_text())


def test_training_at_six_bits(tmp_path):
    """8 bits is the int8 contract (the same weights as a run that never names the width);
    6 bits trains, deterministically, with every stored weight within +-31."""
    plain = _train(tmp_path, "plain", "--steps", "20")
    eight = _train(tmp_path, "eight", "--steps", "20", "--operand-bits", "8")
    assert plain["weights_sha256"] == eight["weights_sha256"]
    six = _train(tmp_path, "six", "--epochs", "1", "--operand-bits", "6")
    again = _train(tmp_path, "again", "--epochs", "1", "--operand-bits", "6")
    assert six["weights_sha256"] == again["weights_sha256"] != plain["weights_sha256"]
    assert six["operand_bits"] == 6 and six["test_accuracy"] > 0.6
    ckpt = np.load(tmp_path / "six" / "checkpoint.npz")
    weights = [ckpt[k] for k in ckpt.files if k.startswith("w")]
    assert weights and max(int(np.abs(w).max()) for w in weights) <= 31


def test_resume_needs_the_same_width(tmp_path, capsys):
    _train(tmp_path, "run", "--steps", "5", "--operand-bits", "6")
    out = tmp_path / "run"
    args = ["train", "--model", "mlp-digits", "--dataset", "digits", "--batch", "32",
            "--out", str(out), "--resume", "--steps", "8"]  # fmt: skip
    assert main(args) == 2
    assert "'operand_bits' is 6 but this run has None" in capsys.readouterr().err
    assert main([*args, "--operand-bits", "6"]) == 0


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--operand-bits", "9"], "--operand-bits: must be an integer in 2..8, got 9"),
        (["--operand-bits", "1"], "--operand-bits: must be an integer in 2..8, got 1"),
        (["--operand-bits", "6", "--profile", "wage"], "profile wage has its own widths"),
        (["--operand-bits", "6", "--weight-bits", "16"], "needs --weight-bits 8"),
    ],
)
def test_bad_widths_are_named(tmp_path, capsys, extra, message):
    args = ["train", "--model", "mlp-digits", "--dataset", "digits", "--out", str(tmp_path / "r")]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
