"""The one table of limits: every option of every command, every accelerator config value and
every Datapath parameter is checked against :data:`LIMITS`, and nowhere else.

``nitihw train``, ``estimate``, ``verilog``, ``verify`` and ``synth`` build their argparse types
from it (:meth:`Limit.arg`), so a bad value stops the command before any data is loaded or any
work starts; the accelerator TOML (:mod:`nitihw.sim.model.accelerator`), the array of the
cycle model (:class:`nitihw.sim.model.cycle_model.ArrayConfig`), the training configuration
(:class:`nitihw.golden.train.TrainConfig`) and the RTL's top level
(:class:`nitihw.rtl.datapath.Datapath`) call :func:`check` with the same entries. A value
outside its limit is a :class:`LimitError` naming the option (``--kmax``), the key
(``array.kmax``) or the parameter (``kmax``), the limit and the value.

``docs/reliability.md`` prints the table.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass


class LimitError(ValueError):
    """A value outside its entry of :data:`LIMITS`; the message names it."""


@dataclass(frozen=True)
class Limit:
    """The values one setting may take: integers or numbers in ``lo..hi`` (``open_lo`` /
    ``open_hi``: the bound itself excluded), or one of ``choices``."""

    what: str
    lo: float = -math.inf
    hi: float = math.inf
    kind: type = int
    choices: tuple = ()
    open_lo: bool = False
    open_hi: bool = False
    used: str = ""  # the options and config keys it limits (for the docs)

    def describe(self) -> str:
        if self.choices:
            *first, last = map(str, self.choices)
            return f"{', '.join(first)} or {last}" if first else last
        noun = "an integer" if self.kind is int else "a number"
        if self.kind is int and not (self.open_lo or self.open_hi):
            return f"{noun} in {self.lo}..{self.hi}"
        lo = f"> {_num_text(self.lo)}" if self.open_lo else f">= {_num_text(self.lo)}"
        hi = f"< {_num_text(self.hi)}" if self.open_hi else f"<= {_num_text(self.hi)}"
        return f"{noun} {lo} and {hi}"

    def ok(self, value) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not isinstance(value, int | float) or not math.isfinite(value):
            return False
        if self.choices:
            return value in self.choices
        above = value > self.lo if self.open_lo else value >= self.lo
        below = value < self.hi if self.open_hi else value <= self.hi
        return above and below

    def check(self, value, name: str):
        """``value`` if it is within the limit, else :class:`LimitError` naming ``name``."""
        if not self.ok(value):
            raise LimitError(f"{name} must be {self.describe()}, got {value!r}")
        return self.kind(value)

    def arg(self, text: str):
        """An argparse ``type``: the text as a number within the limit."""
        try:
            value = self.kind(text.strip())
        except ValueError:
            noun = "an integer" if self.kind is int else "a number"
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {noun} (must be {self.describe()})"
            ) from None
        if not self.ok(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text.strip()}")
        return value


def _num_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _int(what, lo, hi, used):
    return Limit(what, lo, hi, used=used)


def _num(what, lo, hi, used, open_lo=False, open_hi=False):
    return Limit(what, lo, hi, float, open_lo=open_lo, open_hi=open_hi, used=used)


_ARRAY = "train/estimate `--array`, verilog/synth `--{0}`, verify `--shapes`, TOML `array.{0}`"
#: every limit, by name (the names are the Datapath parameters' and the option names'
#: with hyphens as underscores)
LIMITS: dict[str, Limit] = {
    # the Datapath (RTL), the cycle model and the estimate's accelerator
    "rows": _int("PE rows of the MAC array", 1, 256, _ARRAY.format("rows")),
    "cols": _int("PE columns of the MAC array", 1, 256, _ARRAY.format("cols")),
    "kmax": _int(
        "operand buffer depth (products per chunk)", 1, 1 << 16, "`--kmax`, TOML `array.kmax`"
    ),
    "operand_bits": Limit(
        "operand width in bits",
        choices=(2, 3, 4, 5, 6, 7, 8, 16),
        used="verilog/synth/verify `--operand-bits`, TOML `precision.operand_bits`",
    ),
    "b_bits": Limit(
        "B operand width in bits", choices=(2, 3, 4, 5, 6, 7, 8, 16, 32), used="verilog `--b-bits`"
    ),
    "accumulator_bits": _int(
        "accumulator width in bits",
        8,
        48,
        "`--accumulator-bits` (train, verilog, synth, verify), TOML `precision.accumulator_bits`",
    ),
    "guard_bits": _int(
        "extra accumulator bits that keep the overflow flags exact", 0, 32, "verilog `--guard-bits`"
    ),
    "result_rows": _int("result buffer rows", 0, 1 << 20, "verilog `--result-rows`"),
    "buffer_kib": _num(
        "on-chip buffer size in KiB",
        0,
        1 << 30,
        "TOML `buffers.ifmap_kib`, `filter_kib`, `ofmap_kib`",
        open_lo=True,
    ),
    "bandwidth": _num(
        "off-chip bytes per cycle", 0, 1e12, "TOML `offchip.bandwidth_bytes_per_cycle`", True
    ),
    "frequency_mhz": _num("clock frequency in MHz", 0, 1e6, "TOML `clock.frequency_mhz`", True),
    "energy_pj": _num(
        "energy of one operation in pJ", 0, 1e9, "TOML `energy.*`, energy table `pj.*`"
    ),
    # a training run
    "epochs": _int("epochs", 1, 1_000_000, "train `--epochs`"),
    "batch": _int("mini-batch size", 1, 1 << 16, "train/estimate `--batch`"),
    "seed": _int("random seed", 0, (1 << 32) - 1, "train `--seed`, verify `--seeds`"),
    "steps": _int("steps in total", 1, 1 << 40, "train `--steps`"),
    "mu": _int("NITI learning rate in bits", -8, 15, "train `--mu` (each entry)"),
    "train_operand_bits": _int(
        "operand width of integer training (NITI profiles)", 2, 8, "train `--operand-bits`"
    ),
    "lr": _num("SGD learning rate", 0, 100, "train `--lr`", open_lo=True),
    "momentum": _num("SGD momentum", 0, 1, "train `--momentum`", open_hi=True),
    "weight_decay": _num("weight decay", 0, 1, "train `--weight-decay`"),
    "checkpoint_every": _int(
        "steps between checkpoints (0: at each epoch's end)",
        0,
        1 << 40,
        "train `--checkpoint-every`",
    ),
    "threads": _int("worker threads", 1, 256, "train `--threads`"),
    "sim_instances": _int(
        "simulated Datapath instances (0: one per core)", 0, 64, "train `--sim-instances`"
    ),
    # the estimate and synthesis
    "train_samples": _int("training-set size", 1, 10**10, "estimate `--train-samples`"),
    "topology_dim": _int("a dimension in a topology file", 1, (1 << 31) - 1, "topology CSV fields"),
    "timeout": _num("seconds", 0, 1e7, "synth `--timeout`", open_lo=True),
    "sweep_workers": _int(
        "worker processes of an embedded Dask cluster (0: none, in-process)",
        0,
        256,
        "sweep, verify `--workers`",
    ),
}


def markdown_table() -> str:
    """:data:`LIMITS` as the Markdown table of docs/reliability.md (a test keeps them equal)."""
    rows = ["| limit | what | allowed | where |", "|---|---|---|---|"]
    for key, lim in LIMITS.items():
        rows.append(f"| `{key}` | {lim.what} | {lim.describe()} | {lim.used} |")
    return "\n".join(rows) + "\n"


#: the names two values had before each had one name everywhere: files written then (a
#: checkpoint's identity, a Verilog folder's ``params.json``, a checked segment) are read with
#: :func:`current_names`
FORMER_NAMES = {"op_bits": "operand_bits", "acc_bits": "accumulator_bits"}


def current_names(values: dict) -> dict:
    """``values`` with any key of :data:`FORMER_NAMES` under its current name."""
    return {FORMER_NAMES.get(k, k): v for k, v in values.items()}


def check(key: str, value, name: str | None = None):
    """``value`` checked against ``LIMITS[key]``; errors name it ``name`` (default: ``key``)."""
    return LIMITS[key].check(value, name or key)


def arg(key: str):
    """The argparse ``type`` of an option limited by ``LIMITS[key]``."""
    limit = LIMITS[key]

    def parse(text: str):
        return limit.arg(text)

    parse.__name__ = key  # argparse names the type in some messages
    return parse
