"""Training profiles: which rounding each tensor of the step uses (numerics.md §3).

- ``niti`` (default): the 2021 reference code with an integer loss: activations and errors
  ``round``, weight gradients ``psto``, loss error ``psto(Q, 4)`` (no random source).
- ``niti-ref``: as ``niti`` but the loss error uses ``sto`` with ``counter_hash`` random bits,
  as the reference code did with ``torch.randint``.
- ``niti-2020``: the 2020 code (arXiv v1): ``psto`` everywhere, and a requantisation shift of 1
  is raised to 2 (a 1-bit pseudo-random field is degenerate).
- ``niti-compat``: what NITI's 2021 code computes, quirks included (:mod:`nitihw.golden.
  niti_compat`): ranges through float32 ``log2``, unsaturated int8 casts where the shift is 0,
  the float32 loss with ``sto`` (``counter_hash`` bits), convolution sums rounded to float32.
  Not the integer contract: it exists to say "this is what NITI's code computes".
- ``float32``: not an integer profile: the float32 twin (SGD with momentum) used as the
  accuracy baseline.
- ``wage``: WAGE's 2-8-8-8 integer training (:mod:`nitihw.golden.wage`): ternary weights,
  sum-of-squares loss, errors and gradients scaled by ``round(log2 max)``; ``--mu`` is the
  log2 of its learning rate.
- ``nitro-d``: NITRO-D (:mod:`nitihw.golden.nitro_d`): integer local-loss blocks with the NITRO
  scaling layer and LeakyReLU, IntegerSGD; ``--mu`` is the log2 of its ``lr_inv``. int32
  sums wrap silently, as in the reference.
- ``dfp16``: Intel's DFP16 (:mod:`nitihw.golden.dfp16`): the float32 twin whose GEMMs run as
  16-bit dynamic fixed point products with int32 partial sums on the datapath.
"""

from __future__ import annotations

from dataclasses import dataclass

from nitihw.golden import scalars


@dataclass(frozen=True)
class Profile:
    name: str
    integer: bool = True
    act_rounding: str = "round"
    err_rounding: str = "round"
    grad_rounding: str = "psto"
    loss_rounding: str = "psto"
    raise_shift_one: bool = False  # niti-2020: a requant shift of 1 becomes 2
    datapath: bool = True  # its GEMMs run on the backend's integer datapath
    operand_bits: int = 8  # the datapath's operand width it needs
    b_operand_bits: int | None = None  # the B (right) operand's width, if wider than that
    divide: bool = False  # it needs the datapath's divide lanes (DIVIDE, UPDATE_DIV)
    method: str = "niti"  # which network the profile builds: niti | wage | nitro-d | float
    default_mu: str | None = None  # its own --mu schedule (else the model's)
    overflow: str = "error"  # the accumulator overflow policy the method assumes
    # niti-compat: NITI 2021's departures from the integer contract (golden/niti_compat.py)
    float32_range: bool = False  # bit-widths from float32 ceil(log2(float32(max|x|)))
    wrap_int8_casts: bool = False  # shift 0: int32 -> int8 without saturation (128 -> -128)
    float32_loss: bool = False  # ti_loss.py's "/" in float32, then sto(Q, 4)
    float32_conv_sums: bool = False  # convolution sums rounded to float32 (CUTLASS epilogue)

    @property
    def exact(self) -> bool:
        """Whether the profile keeps the exact integer contract (every backend, the RTL)."""
        return not (
            self.float32_range or self.wrap_int8_casts or self.float32_loss
            or self.float32_conv_sums
        )  # fmt: skip

    def requant_shift(self, shift):
        """The shift a requantisation uses (an int, or a device's
        :class:`~nitihw.golden.scalars.StepInt`, replaced where it lives)."""
        return scalars.replace(shift, 1, 2) if self.raise_shift_one else shift


PROFILES: dict[str, Profile] = {
    "niti": Profile("niti"),
    "niti-ref": Profile("niti-ref", loss_rounding="sto"),
    "niti-2020": Profile(
        "niti-2020", act_rounding="psto", err_rounding="psto", raise_shift_one=True
    ),
    "niti-compat": Profile(
        "niti-compat",
        loss_rounding="sto",
        float32_range=True,
        wrap_int8_casts=True,
        float32_loss=True,
        float32_conv_sums=True,
    ),
    "wage": Profile("wage", method="wage", default_mu="3,0@20,-3@25"),
    "nitro-d": Profile(
        "nitro-d",
        method="nitro-d",
        default_mu="9",
        overflow="wrap",
        b_operand_bits=32,  # int8 activations x int32 weights and deltas
        divide=True,  # the scaling layer and IntegerSGD
    ),
    "float32": Profile("float32", integer=False, datapath=False, method="float"),
    "dfp16": Profile("dfp16", integer=False, operand_bits=16, method="float"),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
