"""The MAC array: an output-stationary systolic array of ROWS x COLS processing elements.

A operands enter from the left (row i), B operands from the top (column j), both already
skewed (row i delayed by i cycles, column j by j cycles; :class:`nitihw.rtl.datapath.Datapath`
does the skewing). Every PE multiplies the pair passing through it, adds the product to its
accumulator and passes A right and B down, so ``a[i, k]`` meets ``b[k, j]`` in PE (i, j) at
cycle ``k + i + j``. A ``first`` flag travels with A and makes a PE start a new sum; a ``valid``
flag marks real operands (bubbles leave the accumulator alone).

Accumulators are ``accumulator_bits`` wide two's complement with wrap-around (numerics.md
§4). Each PE keeps ``guard_bits`` more bits, so the exact sum is known and the overflow flag
means exactly "the exact sum lies outside the signed ``accumulator_bits`` range". The guard
bits hold exact sums of up to
``2^(accumulator_bits + guard_bits - 1) / (2^(a_width-1) * 2^(b_width-1))`` products
(``max_exact_k``); a sum that outgrows even them sets a sticky flag (also reported as overflow).

A wide B operand (``b_width`` 17..32: NITRO-D's int32 weights and deltas against int8
activations) only needs ``accumulator_bits + guard_bits >= a_width + b_width``, so that one
product fits the guard-extended accumulator: a single product may then exceed
``accumulator_bits``, and the sums wrap as int32 arithmetic does. The drained low
``accumulator_bits`` bits are the exact sum modulo ``2^accumulator_bits`` whatever happens above
them; the overflow flag is exact as long as every running sum fits
``accumulator_bits + guard_bits`` bits, and otherwise (sticky) reports an overflow even if the
exact sum came back into range: it never misses one, but may report one too many.

Results drain through a shadow register per PE: ``capture`` copies every guard-extended
accumulator (and its sticky flag) into the shadows at once; ``shift`` moves the shadows up one
row; ``out`` shows the top row wrapped to ``accumulator_bits`` with its overflow flag, and
``out_wide`` / ``out_sticky`` the same row unwrapped, so that a sum drained in parts (partial
sums added up in the Datapath's result buffer) keeps an exact overflow flag. Row 0 is out right
after ``capture``, row ``r`` after ``r`` shifts. The shadows let the next tile compute while the
last one drains.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from nitihw.rtl.params import reject, require_int

NARROW_MAX = 16  # the widest A operand, and the widest B operand of an exact datapath
WIDE_B_MAX = 32  # a wide B operand (NITRO-D's int32 weights and deltas)


def max_exact_k(accumulator_bits: int, guard_bits: int, a_width: int, b_width: int) -> int:
    """Longest sum (in products) whose exact value ``accumulator_bits + guard_bits`` always hold."""
    return (1 << (accumulator_bits + guard_bits - 1)) // (1 << (a_width - 1 + b_width - 1))


def wide_overflow(value, accumulator_bits: int):
    """A guard-extended sum lies outside the signed ``accumulator_bits`` range: its bits from
    ``accumulator_bits - 1`` up are not all equal."""
    top = value[accumulator_bits - 1 :]
    return top.any() & ~top.all()


def check_array_params(owner, rows, cols, a_width, b_width, accumulator_bits, guard_bits):
    for name, value, lo, hi in (
        ("rows", rows, 1, 256),
        ("cols", cols, 1, 256),
        ("a_width", a_width, 2, 16),
        ("b_width", b_width, 2, WIDE_B_MAX),
        ("accumulator_bits", accumulator_bits, 8, 48),
        ("guard_bits", guard_bits, 0, 32),
    ):
        require_int(owner, name, value, lo, hi)
    if b_width <= NARROW_MAX and accumulator_bits < a_width + b_width - 1:
        reject(
            owner,
            f"accumulator_bits ({accumulator_bits}) must hold one product of "
            f"{a_width}x{b_width}-bit operands ({a_width + b_width - 1} bits)",
        )
    if b_width > NARROW_MAX and accumulator_bits + guard_bits < a_width + b_width:
        reject(
            owner,
            f"accumulator_bits + guard_bits ({accumulator_bits} + {guard_bits}) must hold one "
            f"product of {a_width}x{b_width}-bit operands ({a_width + b_width} bits): with a B "
            f"operand wider than {NARROW_MAX} bits the sums wrap to accumulator_bits and the "
            "guard bits keep the overflow flags sound",
        )


class MacArray(wiring.Component):
    """Output-stationary systolic MAC array.

    Parameters
    ----------
    rows, cols : array shape (1..256 each).
    a_width, b_width : signed operand widths (2..16, ``b_width`` up to 32; 8 by default).
    accumulator_bits : accumulator width (default 32).
    guard_bits : extra accumulator bits that make overflow detection exact (default 8).

    Members
    -------
    en : In(1)
        Advance the array this cycle (low: everything holds, including the operand pipeline).
    a : In(signed(a_width)).array(rows)
        Left-edge operands, row i skewed by i cycles.
    a_valid, a_first : In(1).array(rows)
        Travel with ``a``: real operand / first operand of a new sum.
    b : In(signed(b_width)).array(cols)
        Top-edge operands, column j skewed by j cycles.
    capture : In(1)
        Copy every accumulator and overflow flag into the drain shadows (takes effect at the
        clock edge; the accumulator update of the same cycle is not included).
    shift : In(1)
        Move the drain shadows up one row.
    out : Out(signed(accumulator_bits)).array(cols)
        The drain's top row (wrapped to ``accumulator_bits``), valid the cycle after capture/shift.
    out_overflow : Out(1).array(cols)
        Whether that element's exact sum lies outside the ``accumulator_bits`` signed range.
    out_wide : Out(signed(accumulator_bits + guard_bits)).array(cols)
        The same row with its guard bits (the exact sum while ``out_sticky`` is low).
    out_sticky : Out(1).array(cols)
        The sum outgrew even the guard bits (``out_overflow`` is then set too).
    """

    def __init__(
        self,
        rows: int,
        cols: int,
        *,
        a_width: int = 8,
        b_width: int = 8,
        accumulator_bits: int = 32,
        guard_bits: int = 8,
    ):
        check_array_params(self, rows, cols, a_width, b_width, accumulator_bits, guard_bits)
        self._rows, self._cols = rows, cols
        self._a_width, self._b_width = a_width, b_width
        self._accumulator_bits, self._guard_bits = accumulator_bits, guard_bits
        super().__init__(
            {
                "en": In(1),
                "a": In(signed(a_width)).array(rows),
                "a_valid": In(1).array(rows),
                "a_first": In(1).array(rows),
                "b": In(signed(b_width)).array(cols),
                "capture": In(1),
                "shift": In(1),
                "out": Out(signed(accumulator_bits)).array(cols),
                "out_overflow": Out(1).array(cols),
                "out_wide": Out(signed(accumulator_bits + guard_bits)).array(cols),
                "out_sticky": Out(1).array(cols),
            }
        )

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    a_width = property(lambda self: self._a_width)
    b_width = property(lambda self: self._b_width)
    accumulator_bits = property(lambda self: self._accumulator_bits)
    guard_bits = property(lambda self: self._guard_bits)

    @property
    def max_exact_k(self) -> int:
        """Longest sum (in products) whose exact value the guard bits always hold."""
        return max_exact_k(self._accumulator_bits, self._guard_bits, self._a_width, self._b_width)

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols
        accumulator_bits, wide = self._accumulator_bits, self._accumulator_bits + self._guard_bits

        def grid(shape, name):
            return [
                [Signal(shape, name=f"{name}_{i}_{j}") for j in range(cols)] for i in range(rows)
            ]

        a_reg = grid(signed(self._a_width), "a")
        vf_reg = grid(2, "vf")  # valid, first
        b_reg = grid(signed(self._b_width), "b")
        acc = grid(signed(wide), "acc")
        sticky = grid(1, "sticky")  # the exact sum outgrew even the guard bits
        shadow = grid(signed(wide), "shadow")
        shadow_sticky = grid(1, "shadow_sticky")

        for i in range(rows):
            for j in range(cols):
                a_in = self.a[i] if j == 0 else a_reg[i][j - 1]
                vf_in = Cat(self.a_valid[i], self.a_first[i]) if j == 0 else vf_reg[i][j - 1]
                v_in, f_in = vf_in[0], vf_in[1]
                b_in = self.b[j] if i == 0 else b_reg[i - 1][j]
                base = Mux(f_in, 0, acc[i][j])
                total = Signal(signed(wide + 1), name=f"sum_{i}_{j}")
                m.d.comb += total.eq(base + a_in * b_in)
                with m.If(self.en):
                    m.d.sync += [
                        a_reg[i][j].eq(a_in),
                        vf_reg[i][j].eq(vf_in),
                        b_reg[i][j].eq(b_in),
                    ]
                    with m.If(v_in):
                        # ``total`` is one bit wider than the sum it checks: the sum left the
                        # ``wide`` range exactly when its two top bits differ
                        m.d.sync += [
                            acc[i][j].eq(total[:wide]),
                            sticky[i][j].eq(
                                Mux(f_in, 0, sticky[i][j]) | (total[wide] ^ total[wide - 1])
                            ),
                        ]
                # drain shadows: the guard-extended sum; the overflow test is made once per
                # column, on the row leaving the array (``out``)
                with m.If(self.capture):
                    m.d.sync += [shadow[i][j].eq(acc[i][j]), shadow_sticky[i][j].eq(sticky[i][j])]
                with m.Elif(self.shift):
                    if i + 1 < rows:
                        m.d.sync += [
                            shadow[i][j].eq(shadow[i + 1][j]),
                            shadow_sticky[i][j].eq(shadow_sticky[i + 1][j]),
                        ]
                    else:
                        m.d.sync += [shadow[i][j].eq(0), shadow_sticky[i][j].eq(0)]
        for j in range(cols):
            m.d.comb += [
                self.out_wide[j].eq(shadow[0][j]),
                self.out_sticky[j].eq(shadow_sticky[0][j]),
                self.out[j].eq(shadow[0][j][:accumulator_bits]),
                self.out_overflow[j].eq(
                    shadow_sticky[0][j] | wide_overflow(shadow[0][j], accumulator_bits)
                ),
            ]
        return m
