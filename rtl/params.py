"""Parameter checks shared by the RTL components: precise ``ValueError`` messages."""

from __future__ import annotations


def require_int(owner, name: str, value, lo: int, hi: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an int in ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        reject(owner, f"{name} must be an integer in {lo}..{hi}, got {value!r}")


def reject(owner, message: str):
    # A component rejected in its constructor is not an unused one: silence Amaranth's warning.
    owner._MustUse__silence = True
    raise ValueError(message)
