"""Training profiles: which rounding each tensor of the step uses (numerics.md §3).

- ``niti`` (default): the 2021 reference code with an integer loss: activations and errors
  ``round``, weight gradients ``psto``, loss error ``psto(Q, 4)`` (no random source).
- ``niti-ref``: as ``niti`` but the loss error uses ``sto`` with ``counter_hash`` random bits,
  as the reference code did with ``torch.randint``.
- ``niti-2020``: the 2020 code (arXiv v1): ``psto`` everywhere, and a requantisation shift of 1
  is raised to 2 (a 1-bit pseudo-random field is degenerate).
- ``float32``: not an integer profile: the float32 twin (SGD with momentum) used as the
  accuracy baseline.
- ``dfp16``: Intel's DFP16 (:mod:`nitihw.golden.dfp16`): the float32 twin whose GEMMs run as
  16-bit dynamic fixed point products with int32 partial sums on the datapath.
"""

from __future__ import annotations

from dataclasses import dataclass


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

    def requant_shift(self, shift: int) -> int:
        return 2 if self.raise_shift_one and shift == 1 else shift


PROFILES: dict[str, Profile] = {
    "niti": Profile("niti"),
    "niti-ref": Profile("niti-ref", loss_rounding="sto"),
    "niti-2020": Profile(
        "niti-2020", act_rounding="psto", err_rounding="psto", raise_shift_one=True
    ),
    "float32": Profile("float32", integer=False, datapath=False),
    "dfp16": Profile("dfp16", integer=False, operand_bits=16),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
