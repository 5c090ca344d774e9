"""The traces shipped inside the package (``builtin``, ``builtin_names``; ``traces/README.md``
says how they were made), and ``resolve``: the one way a trace argument (a ``Trace``, a path
or a built-in name) becomes a ``Trace``, used by the simulator and both CLIs alike."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .._util import unknown_name
from ..errors import InvalidArgumentError, TraceError
from .files import load
from .trace import Trace

_DATA_DIR = Path(__file__).resolve().parent.parent / "data"

BUILTIN_PREFIX = "builtin:"
"""``resolve("builtin:NAME")`` always means the built-in trace ``NAME``."""


def builtin_names() -> list[str]:
    """Names of the traces shipped with the package (``halffull/data/*.csv``), sorted."""
    return sorted(p.name[: -len(".csv")] for p in _DATA_DIR.glob("*.csv"))


def builtin(name: str = "default") -> Trace:
    """A small synthetic trace shipped with the package. ``default``: 2,000 requests,
    Azure-conversation-like lengths, Poisson arrivals at 5 req/s; ``builtin_names()`` lists
    the others and ``traces/README.md`` describes them. Raises ``InvalidArgumentError`` on an
    unknown name."""
    names = builtin_names()
    if name not in names:
        raise unknown_name(InvalidArgumentError, "built-in trace", name, names, field="name")
    path = _DATA_DIR / f"{name}.csv"
    return replace(load(path, format="halffull"), name=name)


def resolve(spec: Any = None, *, format: str | None = None) -> Trace:
    """The trace ``spec`` names, in this order of precedence:

    1. ``None``: the built-in ``default``; a ``Trace``: itself.
    2. ``"builtin:NAME"``: the built-in ``NAME`` (``InvalidArgumentError`` listing the
       built-ins if there is none).
    3. A ``pathlib.Path``: that file, always (``load``).
    4. A ``str`` naming an existing file or directory: that path (``load``), even if it is
       also a built-in name.
    5. A ``str`` that is a built-in name: the built-in.
    6. Any other ``str``: ``TraceError`` ("no such trace file"), listing the built-ins in
       its message and in ``valid``.

    ``format`` is passed to ``load`` for files (see ``FORMATS``); built-ins are always in
    the project's own format. Anything else raises ``InvalidArgumentError`` (``field``
    ``"trace"``).
    """
    if spec is None:
        return builtin("default")
    if isinstance(spec, Trace):
        return spec
    if isinstance(spec, str) and spec.startswith(BUILTIN_PREFIX):
        return builtin(spec[len(BUILTIN_PREFIX) :])
    if isinstance(spec, Path):
        return load(spec, format=format)
    if isinstance(spec, str):
        if Path(spec).exists():
            return load(spec, format=format)
        names = builtin_names()
        if spec in names:
            return builtin(spec)
        raise TraceError(
            f"{spec}: no such trace file, and not a built-in trace; built-ins: {', '.join(names)}",
            path=spec,
            line=None,
            valid=tuple(names),
        )
    raise InvalidArgumentError(
        f"trace must be a halffull.traces.Trace, a path or a built-in name, got {type(spec).__name__}",
        field="trace",
    )


__all__ = ["BUILTIN_PREFIX", "builtin", "builtin_names", "resolve"]
