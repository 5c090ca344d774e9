"""halffull: a fast scheduling core for LLM serving.

The engine scheduler (``Scheduler``: who runs this step, who waits, who is preempted, which
KV blocks each request holds) is written in Rust and exposed here; ``halffull.reference``
holds a plain-Python twin used as the test oracle.
"""

from . import errors
from ._core import Scheduler, StepPlan, policy_names
from .config import PREEMPTION_MODES, SchedulerConfig
from .errors import (
    ClockError,
    ConfigError,
    DuplicateRequestError,
    HalffullError,
    InvalidArgumentError,
    InvalidUpdateError,
    InvariantError,
    RequestTooLargeError,
    StalePlanError,
    TraceError,
    UnknownRequestError,
)

POLICIES: tuple[str, ...] = tuple(policy_names())

__version__ = "0.1.0"

__all__ = [
    "POLICIES",
    "PREEMPTION_MODES",
    "ClockError",
    "ConfigError",
    "DuplicateRequestError",
    "HalffullError",
    "InvalidArgumentError",
    "InvalidUpdateError",
    "InvariantError",
    "RequestTooLargeError",
    "Scheduler",
    "SchedulerConfig",
    "StalePlanError",
    "StepPlan",
    "TraceError",
    "UnknownRequestError",
    "errors",
]
