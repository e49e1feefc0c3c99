"""Validation of layer and network options, with messages that name the option.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, bad value)
with ``"<owner>: <option> must be <expectation>, got <value>"``, so a mistake in a layer's
options surfaces where it was made instead of inside flax or XLA. The checks return the value
normalised (a tuple for widths, a float for numbers) for ``object.__setattr__`` in a frozen
dataclass's ``__post_init__``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(owner: str, option: str, value, minimum: int = 1) -> int:
    """An int ``>= minimum`` (booleans are rejected)."""
    if not _is_int(value):
        raise TypeError(f"{owner}: {option} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}: {option} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_widths(owner: str, option: str, value, allow_empty: bool = True) -> tuple[int, ...]:
    """A tuple (or list) of positive ints, e.g. ``hidden=(64, 64)``; an int is not a tuple."""
    expect = "a tuple of positive ints such as (64, 64)"
    if allow_empty:
        expect += " (or () for none)"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        hint = f"; for one layer write ({value},)" if _is_int(value) else ""
        raise TypeError(f"{owner}: {option} must be {expect}, got {value!r}{hint}")
    widths = tuple(value)
    if not widths and not allow_empty:
        raise ValueError(f"{owner}: {option} must be {expect}, got {value!r}")
    for w in widths:
        if not _is_int(w):
            raise TypeError(f"{owner}: {option} must be {expect}, got {value!r}")
        if w < 1:
            raise ValueError(f"{owner}: {option} must be {expect}, got {value!r}")
    return tuple(int(w) for w in widths)


def check_real(
    owner: str,
    option: str,
    value,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    below: float | None = None,
) -> float:
    """A finite real number, optionally ``> 0``, ``>= 0`` or ``< below``."""
    expect = "a finite number"
    if positive:
        expect = "a finite number > 0"
    elif nonnegative:
        expect = "a finite number >= 0"
    if below is not None:
        expect += f" and < {below}"
    if not _is_real(value):
        raise TypeError(f"{owner}: {option} must be {expect}, got {value!r}")
    v = float(value)
    bad = (
        not math.isfinite(v)
        or (positive and v <= 0)
        or (nonnegative and v < 0)
        or (below is not None and v >= below)
    )
    if bad:
        raise ValueError(f"{owner}: {option} must be {expect}, got {value!r}")
    return v


def check_choice(owner: str, option: str, value, choices: Sequence) -> object:
    """One of ``choices``."""
    if value not in tuple(choices):
        raise ValueError(
            f"{owner}: {option} must be one of {', '.join(map(repr, choices))}, got {value!r}"
        )
    return value


def check_bool(owner: str, option: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {option} must be True or False, got {value!r}")
    return value
