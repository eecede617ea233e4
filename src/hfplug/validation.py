"""Argument checks shared by the core and every plugin: one argument order, one message format.

Every check takes ``(name, value, ...)`` and returns the value in its canonical type, or raises at once
with a message that names the argument, shows the value and says what is accepted:

- :class:`TypeError` when the value has the wrong type (``True`` is not an integer here, ``"no"`` is not
  a bool),
- :class:`ValueError` when the type is right and the value is out of range (NaN is out of every range).

Imports nothing heavy, so plugins' hook modules may use it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Iterable
from typing import Any, TypeVar

_T = TypeVar("_T")


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _bound(value: float) -> str:
    """An integer bound as an integer (``1048576``), any other as ``:g`` (``1e-12``, ``0.5``)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def _interval(minimum: float | None, maximum: float | None, min_open: bool, max_open: bool) -> str:
    if minimum is None and maximum is None:
        return ""
    if maximum is None:
        return f" {'>' if min_open else '>='} {_bound(minimum)}"
    if minimum is None:
        return f" {'<' if max_open else '<='} {_bound(maximum)}"
    low, high = _bound(minimum), _bound(maximum)
    return f" in {'(' if min_open else '['}{low}, {high}{')' if max_open else ']'}"


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (not a truthy string, number or None)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_shown(value)}")
    return value


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` within ``[minimum, maximum]`` (either bound optional).

    Accepts Python and NumPy integers; rejects bools, floats (even ``2.0``) and strings.
    """
    accepted = f"an integer{_interval(minimum, maximum, False, False)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {accepted}, got {_shown(value)}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {accepted}, got {value!r}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """``value`` as a ``float`` in the interval given by the bounds (``*_open`` excludes a bound).

    NaN is always rejected; ``+-inf`` only passes with ``allow_inf=True`` (and the bounds). Bools and
    strings are rejected; any real number type (int, float, NumPy scalars) is accepted.
    """
    accepted = f"a {'' if allow_inf else 'finite '}number{_interval(minimum, maximum, min_open, max_open)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {accepted}, got {_shown(value)}")
    value = float(value)
    bad = math.isnan(value) or (math.isinf(value) and not allow_inf)
    if minimum is not None:
        bad = bad or (value <= minimum if min_open else value < minimum)
    if maximum is not None:
        bad = bad or (value >= maximum if max_open else value > maximum)
    if bad:
        raise ValueError(f"{name} must be {accepted}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Collection[_T]) -> _T:
    """``value`` if it is one of ``choices`` (compared with ``==``, bools never match numbers)."""
    for choice in choices:
        if type(choice) is type(value) and choice == value:
            return choice
    raise ValueError(f"{name} must be one of {list(choices)!r}, got {_shown(value)}")


def check_int_list(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_empty: bool = True,
) -> list[int]:
    """An int or an iterable of ints as a list, each within ``[minimum, maximum]``."""
    items: Iterable[Any]
    if isinstance(value, (str, bytes)) or not isinstance(value, (numbers.Integral, Iterable)):
        raise TypeError(f"{name} must be an integer or a list of integers, got {_shown(value)}")
    items = [value] if isinstance(value, numbers.Integral) else list(value)
    checked = [
        check_int(f"{name}[{index}]", item, minimum=minimum, maximum=maximum)
        for index, item in enumerate(items)
    ]
    if not checked and not allow_empty:
        raise ValueError(f"{name} must hold at least one integer, got {value!r}")
    return checked


__all__ = ["check_bool", "check_choice", "check_float", "check_int", "check_int_list"]
