"""Small helpers several halffull modules share, so each is written once.

- ``json_ready(x)``: a value ``json.dumps`` writes as strict JSON (NaN and infinities become
  ``None``, numpy scalars Python numbers, tuples lists, mapping keys strings).
- ``unknown_name(cls, what, name, valid, field=...)``: the error for a name that is not one
  of ``valid``, worded and attributed the same way everywhere.
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


__all__ = ["json_ready", "unknown_name"]
