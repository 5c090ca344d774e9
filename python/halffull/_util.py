"""Small helpers several halffull modules share, so each is written once.

- ``json_ready(x)``: a value ``json.dumps`` writes as strict JSON (NaN and infinities become
  ``None``, numpy scalars Python numbers, tuples lists, mapping keys strings).
- ``unknown_name(cls, what, name, valid, field=...)``: the error for a name that is not one
  of ``valid``, worded and attributed the same way everywhere.
- ``items(field, value, what, error)``: the items of a "list" argument, read the way the Rust
  bindings read them (``rust/bindings/convert.rs``).
- ``as_float(value)``: a number as a float, huge ints as infinities.
- ``shown(value)``: a caller's value in a message (short, and never raising).
- ``check_text_id(request_id, error)``: a str request id Rust can hold (no lone surrogates).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import numpy as np

from .errors import HalffullError

E = TypeVar("E", bound=HalffullError)


def json_ready(x: Any, *, digits: int | None = None) -> Any:
    """``x`` with every non-finite float replaced by ``None``, numpy scalars turned into
    Python ones, tuples into lists and mapping keys into strings (recursively). With
    ``digits``, finite floats are rounded to that many significant digits."""
    if isinstance(x, Mapping):
        return {str(k): json_ready(v, digits=digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v, digits=digits) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        if not math.isfinite(x):
            return None
        if digits is not None:
            return float(f"{x:.{digits}g}")
    return x


def unknown_name(cls: type[E], what: str, name: Any, valid: Iterable[str], *, field: str) -> E:
    """``cls("unknown WHAT 'NAME'; valid: a, b, c", field=field, value=name, valid=(...))``."""
    names = tuple(valid)
    return cls(f"unknown {what} {name!r}; valid: {', '.join(names)}", field=field, value=name, valid=names)


def as_float(value: Any) -> float:
    """``float(value)`` for a number, with an int beyond float range as an infinity of its
    sign (rather than ``OverflowError``)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message: cut to ``limit`` characters (a 300-digit int),
    and never raising (an object whose ``__repr__`` raises is shown by its type)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a message must not fail
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[:limit] + "..."


def items(field: str, value: Any, what: str, error: type[E]) -> list[Any]:
    """The items of a "list" argument: any iterable but a str, bytes, bytearray or mapping
    (their items would be characters, byte values or keys), read whole, up front. Those,
    a non-iterable, and an exception raised while iterating (chained as ``__cause__``; a
    ``HalffullError``, a ``MemoryError`` and non-``Exception``s such as ``KeyboardInterrupt``
    pass through) raise ``error`` naming ``field``."""
    def refuse(why: str) -> E:
        return error(f"{field} must be a list of {what}, got {type(value).__name__}{why}", field=field, value=value)

    if isinstance(value, (str, bytes, bytearray)):
        raise refuse(" (a single value, not a list)")
    if isinstance(value, Mapping):
        raise refuse(" (a mapping: its keys would be read)")
    try:
        try:
            iterator = iter(value)
        except TypeError:
            raise refuse(" (not iterable)") from None
        return list(iterator)
    except (HalffullError, MemoryError):
        raise
    except Exception as exc:
        raise error(f"{field}: reading it raised {type(exc).__name__}: {exc}", field=field) from exc


def check_text_id(request_id: str, error: type[E]) -> str:
    """``request_id`` if it is valid Unicode; a lone surrogate (``"\\ud800"``), which Rust
    cannot hold, raises ``error``."""
    try:
        request_id.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"request_id {request_id!r} is not valid Unicode (it holds a lone surrogate)",
                    field="request_id", value=request_id) from None
    return request_id


__all__ = ["as_float", "check_text_id", "items", "json_ready", "shown", "unknown_name"]
