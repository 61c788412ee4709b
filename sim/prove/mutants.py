"""Broken copies of the Datapath's blocks, one per block: each proof must fail on its mutant,
or the proof could be passing for a reason that is not the rule (a vacuous assumption, a
property that checks nothing). ``nitihw prove --mutant NAME`` runs a block's proofs on one;
tests/test_prove.py checks that every mutant is caught.

Each mutant patches one function or class the block's ``elaborate`` uses, for as long as its
context is held (the harness is converted to RTLIL inside it).
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    block: str  # the harness block it breaks
    what: str

    def applied(self):
        return _PATCHES[self.name]()


@contextlib.contextmanager
def _patched(module, name, value):
    # as stored (a class's staticmethod stays one when it is put back)
    old = inspect.getattr_static(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def _tie_to_even():
    from nitihw.rtl import rescale

    original = rescale.round_up

    def round_up(m, s, rand, width, masks=None):
        q, ups = original(m, s, rand, width, masks)
        return q, {**ups, rescale.RoundingMode.ROUND: ups[rescale.RoundingMode.RNE]}

    return _patched(rescale, "round_up", round_up)


def _saturate_short():
    from nitihw.rtl import rescale
    from nitihw.sim.prove import harness

    def lanes(lanes=1, accumulator_bits=32, limit=rescale.INT8_MAX):
        return rescale.RescaleLanes(lanes, accumulator_bits, limit - 1)

    return _patched(harness, "RescaleLanes", lanes)


def _clamp_low_short():
    from nitihw.rtl import update

    def clamp(m, value, limit, width):
        from amaranth import Mux, Signal, signed

        out = Signal(signed(width))
        m.d.comb += out.eq(Mux(value > limit, limit, Mux(value < -limit, 1 - limit, value)))
        return out

    return _patched(update, "_clamp", clamp)


def _bitwidth_short():
    from nitihw.rtl import range_unit

    original = range_unit.bit_length

    def bit_length(m, x, name):
        return original(m, x >> 1, name)

    return _patched(range_unit, "bit_length", bit_length)


def _war_ignored():
    from amaranth import Const

    from nitihw.rtl import datapath

    def never(*_args):
        return Const(0, 1)

    return _patched(datapath.Datapath, "_write_after_read", staticmethod(never))


_PATCHES = {
    "rescale-tie-to-even": _tie_to_even,
    "rescale-saturate-short": _saturate_short,
    "update-clamp-low-short": _clamp_low_short,
    "range-bitwidth-short": _bitwidth_short,
    "control-war-ignored": _war_ignored,
}

#: every mutant, by name
MUTANTS = {
    m.name: m
    for m in (
        Mutant("rescale-tie-to-even", "rescale", "mode round breaks a tie to even, not away"),
        Mutant("rescale-saturate-short", "rescale", "the lanes saturate one below the bound"),
        Mutant("update-clamp-low-short", "update", "the low clamp is one above -limit"),
        Mutant("range-bitwidth-short", "range", "the bit length of the OR shifted right once"),
        Mutant(
            "control-war-ignored",
            "control",
            "a load does not wait for the array to finish reading its bank",
        ),
    )
}
