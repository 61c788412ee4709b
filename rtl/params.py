"""Parameter checks shared by the RTL components: precise ``ValueError`` messages.

The Datapath's own parameters are limited by :data:`nitihw.golden.limits.LIMITS`
(:func:`require`), the table every command and config file uses; its blocks check the wider
ranges they are built and tested for (:func:`require_int`).
"""

from __future__ import annotations

from nitihw.golden.limits import LIMITS


def require(owner, key: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is within ``LIMITS[key]``."""
    limit = LIMITS[key]
    if not limit.ok(value) or not isinstance(value, int):
        reject(owner, f"{key} must be {limit.describe()}, got {value!r}")


def require_int(owner, name: str, value, lo: int, hi: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an int in ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        reject(owner, f"{name} must be an integer in {lo}..{hi}, got {value!r}")


def reject(owner, message: str):
    # A component rejected in its constructor is not an unused one: silence Amaranth's warning.
    owner._MustUse__silence = True
    raise ValueError(message)
