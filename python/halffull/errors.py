"""The exceptions halffull raises, all under one base class.

Each carries the numbers that matter as attributes (``need_blocks``, ``capacity_blocks``,
``request_id``, ``valid`` ...), so callers need not parse messages. The Rust core and the
pure-Python reference raise the same classes. Where a built-in exception fits, the class also
derives from it (``KeyError`` for unknown ids, ``ValueError`` for bad values), so
``except ValueError`` keeps working for callers who do not know halffull.
"""

from __future__ import annotations

from typing import Any


class HalffullError(Exception):
    """Base class of every error halffull raises on purpose."""

    def __init__(self, message: str, **attrs: Any) -> None:
        super().__init__(message)
        self.message = message
        for key, value in attrs.items():
            setattr(self, key, value)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.message


class ConfigError(HalffullError, ValueError):
    """A configuration value is invalid (zero blocks, unknown policy, bad watermark ...)."""


class InvalidArgumentError(HalffullError, ValueError):
    """An argument is negative, zero where it may not be, NaN, infinite or of the wrong kind."""


class UnknownRequestError(HalffullError, KeyError):
    """No live request has this id (never added, or already finished or aborted)."""


class DuplicateRequestError(HalffullError, ValueError):
    """A live request already has this id."""


class RequestTooLargeError(HalffullError, ValueError):
    """The request can never fit in the GPU KV cache (``need_blocks`` > ``capacity_blocks``)."""


class StalePlanError(HalffullError, ValueError):
    """``update`` got a plan that is not this scheduler's latest, or was already applied;
    or ``schedule`` was called while the previous plan still awaits its ``update``."""


class ClockError(HalffullError, ValueError):
    """Time went backwards: ``now`` is earlier than the scheduler's clock."""


class InvalidUpdateError(HalffullError, ValueError):
    """``update(finished=...)`` names a request that did not produce a token in this step."""


class TraceError(HalffullError, ValueError):
    """A trace file is missing, empty or malformed (the message names file and line)."""


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
]


class InvariantError(HalffullError, AssertionError):
    """``check_invariants()`` found the scheduler's state inconsistent (a bug: please report)."""


__all__.append("InvariantError")
