"""The area model of the Datapath: transistors of its logic from synthesised blocks, SRAM from
its buffer sizes, and both in mm^2 at 45 nm.

Too slow to synthesise per sweep point (a 16x16 Datapath takes minutes), so the model is
calibrated once per (operand bits, accumulator bits) from two small Datapaths (2x2 and 4x4,
every block synthesised alone with ``nitihw synth``'s generic flow) and kept in
``area_calibration.json`` beside this file:

    logic(R, C) = a R C + b (R + C)      the MAC array: a PE each, plus the edge registers
                + l C + l0               rescale, update (both) and range lanes, per column
                + k C + k0               control: the Datapath less its blocks

each pair of terms solved from the two shapes. Widths between calibrated ones are interpolated
linearly in the accumulator width. ``bench/area_model.py`` calibrates and checks the model
against whole-Datapath synthesis at 8x8 and 16x16 (docs/dse.md has the errors).

mm^2 at 45 nm: logic transistors / 4 NAND2 equivalents x 0.798 um^2 (NAND2_X1 of the Nangate
45 nm Open Cell Library), and SRAM bits x 0.346 um^2 (the 6T bit cell of Intel's 45 nm
process, Mistry et al., IEDM 2007): bit cells only, without the arrays' periphery (decoders,
sense amplifiers), so the SRAM figure is a lower bound.
"""

from __future__ import annotations

import json
from pathlib import Path

from nitihw.golden.errors import ToolError

CALIBRATION = Path(__file__).with_name("area_calibration.json")
SHAPES = ((2, 2), (4, 4))
#: (operand bits, accumulator bits) calibrated; a 16-bit operand needs a 31-bit accumulator
WIDTHS = (
    (4, 16),
    (4, 32),
    (6, 16),
    (6, 32),
    (8, 16),
    (8, 24),
    (8, 32),
    (8, 40),
    (8, 48),
    (16, 32),
    (16, 40),
    (16, 48),
)
LANES = ("rescale_lanes", "update_lanes", "update_lanes_master", "range_unit")
TERMS = ("a", "b", "l", "l0", "k", "k0")
NAND2_UM2 = 0.798  # Nangate 45 nm Open Cell Library, NAND2_X1
SRAM_BIT_UM2 = 0.346  # Intel 45 nm 6T SRAM cell (Mistry et al., IEDM 2007)
TRANSISTORS_PER_NAND2 = 4


class AreaModelError(ValueError):
    """A width the calibration does not cover, or no calibration file."""


def _terms(reports: dict) -> dict:
    """The model's coefficients from the 2x2 and 4x4 reports of one width."""
    (r1, c1), (r2, c2) = SHAPES
    t = {shape: {m: v["transistors"] for m, v in rep["modules"].items()} for shape, rep in
         reports.items()}  # fmt: skip
    s1, s2 = t[SHAPES[0]], t[SHAPES[1]]
    # mac_array = a R C + b (R + C)
    det = r1 * c1 * (r2 + c2) - r2 * c2 * (r1 + c1)
    a = (s1["mac_array"] * (r2 + c2) - s2["mac_array"] * (r1 + c1)) / det
    b = (r1 * c1 * s2["mac_array"] - r2 * c2 * s1["mac_array"]) / det
    lanes1, lanes2 = (sum(s[m] for m in LANES) for s in (s1, s2))
    l_ = (lanes2 - lanes1) / (c2 - c1)
    ctl1, ctl2 = (s["datapath"] - s["mac_array"] - sum(s[m] for m in LANES) for s in (s1, s2))
    k = (ctl2 - ctl1) / (c2 - c1)
    return {
        "a": a,
        "b": b,
        "l": l_,
        "l0": lanes1 - l_ * c1,
        "k": k,
        "k0": ctl1 - k * c1,
        "pe_alone": s1["pe"],
        # what the fit was made from: the model gives these back exactly (a test checks it)
        "synthesised": {f"{r}x{c}": t[(r, c)]["datapath"] for r, c in SHAPES},
    }


def calibrate(out_root: Path = Path("build/synth"), progress=None) -> dict:
    """Synthesise the calibration Datapaths (cached by ``nitihw synth``) and fit the model."""
    from nitihw.rtl.datapath import DatapathParams
    from nitihw.sim.explore.synth import synthesize

    per_width = {}
    yosys = None
    for op, acc in WIDTHS:
        reports = {}
        for rows, cols in SHAPES:
            params = DatapathParams(rows, cols, operand_bits=op, accumulator_bits=acc, kmax=256)
            rep = synthesize("generic", params=params, out_root=out_root, progress=progress)
            if rep["failed"]:
                raise ToolError(f"synthesis of {rep['design']} failed: {rep['failed']}")
            reports[(rows, cols)] = rep
            yosys = rep["yosys"]
        per_width[f"{op}/{acc}"] = _terms(reports)
    return {"shapes": [list(s) for s in SHAPES], "yosys": yosys, "per_width": per_width}


def load_calibration(path: Path = CALIBRATION) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise AreaModelError(f"area calibration {path}: cannot read ({exc})") from None


def coefficients(operand_bits: int, accumulator_bits: int, cal: dict) -> dict:
    """The model's terms at these widths (linear in the accumulator width between the
    calibrated ones of the same operand width)."""
    have = sorted(
        int(k.split("/")[1]) for k in cal["per_width"] if int(k.split("/")[0]) == operand_bits
    )
    if not have or not have[0] <= accumulator_bits <= have[-1]:
        span = f"{have[0]}..{have[-1]}" if have else "none"
        raise AreaModelError(
            f"the area model is calibrated for {operand_bits}-bit operands with accumulators of "
            f"{span} bits, not {accumulator_bits}"
        )
    lo = max(w for w in have if w <= accumulator_bits)
    hi = min(w for w in have if w >= accumulator_bits)
    c_lo, c_hi = cal["per_width"][f"{operand_bits}/{lo}"], cal["per_width"][f"{operand_bits}/{hi}"]
    f = 0.0 if hi == lo else (accumulator_bits - lo) / (hi - lo)
    return {k: c_lo[k] + f * (c_hi[k] - c_lo[k]) for k in TERMS}


def logic_transistors(rows, cols, operand_bits, accumulator_bits, cal: dict | None = None) -> dict:
    """The Datapath's logic transistors by part: ``array``, ``lanes``, ``control``, ``total``."""
    c = coefficients(operand_bits, accumulator_bits, cal or load_calibration())
    parts = {
        "array": c["a"] * rows * cols + c["b"] * (rows + cols),
        "lanes": c["l"] * cols + c["l0"],
        "control": c["k"] * cols + c["k0"],
    }
    parts["total"] = sum(parts.values())
    return parts


def area(
    rows, cols, operand_bits, accumulator_bits, sram_kib: float, cal: dict | None = None
) -> dict:
    """Transistors and mm^2 (45 nm) of a Datapath with ``sram_kib`` KiB of on-chip buffers."""
    logic = logic_transistors(rows, cols, operand_bits, accumulator_bits, cal)
    sram_bits = sram_kib * 1024 * 8
    logic_mm2 = logic["total"] / TRANSISTORS_PER_NAND2 * NAND2_UM2 / 1e6
    sram_mm2 = sram_bits * SRAM_BIT_UM2 / 1e6
    return {
        "logic_transistors": round(logic["total"]),
        "array_transistors": round(logic["array"]),
        "sram_bits": int(sram_bits),
        "logic_mm2": logic_mm2,
        "sram_mm2": sram_mm2,
        "area_mm2": logic_mm2 + sram_mm2,
    }
