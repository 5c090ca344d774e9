"""The exceptions halffull raises, all under one base class.

Each class declares the attributes it carries (``ATTRIBUTES``): the numbers and names that
matter (``field``, ``request_id``, ``need_blocks`` ...), so callers need not parse messages.
Every declared attribute is always present (``None`` when it does not apply), and an
undeclared one is refused, so the Rust core, the pure-Python reference and the Python modules
raise the same classes with the same attributes. Where a built-in exception fits, the class
also derives from it (``KeyError`` for unknown ids, ``ValueError`` for bad values), so
``except ValueError`` keeps working for callers who do not know halffull.
"""

from __future__ import annotations

from typing import Any, ClassVar


class HalffullError(Exception):
    """Base class of every error halffull raises on purpose."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, message: str, **attrs: Any) -> None:
        unknown = sorted(set(attrs) - set(self.ATTRIBUTES))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no attribute(s) {', '.join(unknown)}; "
                f"declared: {', '.join(self.ATTRIBUTES) or 'none'}"
            )
        super().__init__(message)
        self.message = message
        for key in self.ATTRIBUTES:
            setattr(self, key, attrs.get(key))

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:  # pickles with its attributes (multiprocessing)
        return (_rebuild, (type(self), self.message, {k: getattr(self, k) for k in self.ATTRIBUTES}))


def _rebuild(cls: type[HalffullError], message: str, attrs: dict[str, Any]) -> HalffullError:
    return cls(message, **attrs)


class ConfigError(HalffullError, ValueError):
    """A configuration value is invalid (zero blocks, unknown policy, bad watermark ...).
    ``field`` names it, ``value`` is what was given, ``valid`` lists the valid names."""

    ATTRIBUTES = ("field", "value", "valid")


class InvalidArgumentError(HalffullError, ValueError):
    """An argument is negative, zero where it may not be, NaN, infinite or of the wrong kind.
    ``field`` names it, ``value`` is what was given (``index``: its position, when the argument
    is an array), ``valid`` lists the valid names; a replica index out of range also carries
    ``num_replicas``."""

    ATTRIBUTES = ("field", "value", "index", "valid", "num_replicas")


class UnknownRequestError(HalffullError, KeyError):
    """No live request has this id (never added, or already finished or aborted)."""

    ATTRIBUTES = ("request_id",)


class DuplicateRequestError(HalffullError, ValueError):
    """A live request already has this id."""

    ATTRIBUTES = ("request_id",)


class RequestTooLargeError(HalffullError, ValueError):
    """The request can never fit in the GPU KV cache (``need_blocks`` > ``capacity_blocks``)."""

    ATTRIBUTES = ("request_id", "need_blocks", "capacity_blocks")


class StalePlanError(HalffullError, ValueError):
    """``update`` got a plan that is not this scheduler's latest, or was already applied;
    or ``schedule`` was called while the previous plan still awaits its ``update``
    (``step``: the plan's step, ``pending_step``: the step awaiting its update, if any)."""

    ATTRIBUTES = ("step", "pending_step")


class ClockError(HalffullError, ValueError):
    """Time went backwards: ``now`` is earlier than the scheduler's ``clock``."""

    ATTRIBUTES = ("now", "clock")


class InvalidUpdateError(HalffullError, ValueError):
    """``update(finished=...)`` names a request that did not produce a token in this step."""

    ATTRIBUTES = ("request_id",)


class TraceError(HalffullError, ValueError):
    """A trace file is missing, empty or malformed: ``path`` and ``line`` (1-based, ``None``
    when no line applies) say where, ``field`` which column, ``valid`` the valid names."""

    ATTRIBUTES = ("path", "line", "field", "valid")


class SweepError(HalffullError, ValueError):
    """A sweep cannot run as given: ``problems`` lists everything wrong (unknown names, bad
    ranges, missing or malformed trace files ...), found before the first simulation."""

    ATTRIBUTES = ("problems",)


class InvariantError(HalffullError, AssertionError):
    """``check_invariants()`` found the scheduler's state inconsistent (a bug: please report);
    ``request_id`` names the request concerned, where one is."""

    ATTRIBUTES = ("request_id",)


class OutOfMemoryError(HalffullError, MemoryError):
    """An allocation sized by a setting or an argument (``field``) could not be made:
    ``bytes`` were asked for. Nothing was changed."""

    ATTRIBUTES = ("field", "bytes")


class BusyError(HalffullError, RuntimeError):
    """The object (``what``: ``"Scheduler"`` or ``"Router"``) is in the middle of another
    call: a re-entrant call from a finalizer or a callback that call ran. Nothing was done."""

    ATTRIBUTES = ("what",)


__all__ = [
    "HalffullError",
    "ConfigError",
    "InvalidArgumentError",
    "UnknownRequestError",
    "DuplicateRequestError",
    "RequestTooLargeError",
    "StalePlanError",
    "ClockError",
    "InvalidUpdateError",
    "TraceError",
    "SweepError",
    "InvariantError",
    "OutOfMemoryError",
    "BusyError",
]
