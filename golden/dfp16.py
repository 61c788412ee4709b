"""DFP16: Intel's dynamic fixed point training (Das et al., "Mixed precision training of
convolutional neural networks using integer operations", ICLR 2018).

What is integer: the three GEMMs of every conv and linear layer (forward, backward-error,
weight-gradient). Their float32 operands are converted to DFP16 — int16 values with one shared
power-of-two exponent per tensor — multiplied on the integer datapath (16-bit operands) with
int32 partial sums over chains of at most ``K_CHAIN`` products, and each chain's int32 result is
scaled back to float32 and accumulated in chain order.

What stays floating point, as in the paper: the float32 master weights and the SGD-with-momentum
update, the conversions to and from DFP16, ReLU, pooling, the softmax cross-entropy and its
gradient. The rest of the network is the float32 twin's (:mod:`nitihw.golden.float_twin`).

Choices where the paper is silent (research notes §3): the shared exponent puts the largest
magnitude in ``[2^(14-h), 2^(15-h))`` with ``h = HEADROOM`` bits of headroom (libxsmm's
``add_shift``), rounding is half-to-even with saturation at ±32767, and with ``h = 4`` a product
is below ``2^22``, so a chain of ``K_CHAIN = 512`` products cannot overflow int32.
"""

from __future__ import annotations

import numpy as np

from nitihw.golden.backend import OpTag

DFP_BITS = 16
HEADROOM = 4
K_CHAIN = 512


def to_dfp(x: np.ndarray, bits: int = DFP_BITS, headroom: int = HEADROOM):
    """``(I, e)`` with ``x ≈ I * 2^e``: int16 ``I`` (round half to even, saturating), one
    exponent ``e`` chosen so the largest magnitude has ``bits - 2 - headroom + 1`` bits."""
    x = np.asarray(x, np.float32)
    m = float(np.max(np.abs(x))) if x.size else 0.0
    if m == 0.0:
        return np.zeros(x.shape, np.int16), 0
    _, e = np.frexp(m)  # m = f * 2^e, f in [0.5, 1): floor(log2 m) = e - 1
    exp = int(e) - 1 - (bits - 2 - headroom)
    limit = (1 << (bits - 1)) - 1
    q = np.rint(np.ldexp(x.astype(np.float64), -exp))
    return np.clip(q, -limit, limit).astype(np.int16), exp


class Dfp16Matmul:
    """The products of a DFP16 network, on a Backend's integer GEMM (16-bit operands)."""

    def __init__(self, backend):
        self.backend = backend

    def __call__(self, a, b, layer: str, phase: str):
        be = self.backend
        ia, ea = to_dfp(a)
        ib, eb = to_dfp(b)
        out = np.zeros((a.shape[0], b.shape[1]), np.float32)
        tag = OpTag(layer, phase)
        for k0 in range(0, a.shape[1], K_CHAIN):
            acc = be.gemm(
                be.host.from_host(ia[:, k0 : k0 + K_CHAIN]),
                be.host.from_host(ib[k0 : k0 + K_CHAIN]),
                tag,
            )
            out += np.ldexp(np.asarray(be.host.to_host(acc)).astype(np.float32), ea + eb)
        return out
