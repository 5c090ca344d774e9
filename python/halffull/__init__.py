"""halffull: a fast scheduling core for LLM serving.

The engine scheduler (``Scheduler``: who runs this step, who waits, who is preempted, which
KV blocks each request holds), the load balancer (``Router``) and the trace simulator
(``simulate``) are written in Rust and exposed here; ``halffull.reference`` holds plain-Python
twins used as test oracles; ``halffull.traces`` loads and generates traces;
``halffull.engine`` (needs torch) drives a real transformer with the scheduler.
"""

from importlib.metadata import version as _version

from . import errors, sim, traces
from ._core import Router, Scheduler, StepPlan, policy_names, router_names
from .config import PREEMPTION_MODES, SchedulerConfig
from .errors import (
    BusyError,
    ClockError,
    ConfigError,
    DuplicateRequestError,
    HalffullError,
    InvalidArgumentError,
    InvalidUpdateError,
    InvariantError,
    OutOfMemoryError,
    RequestTooLargeError,
    StalePlanError,
    TraceError,
    UnknownRequestError,
)
from .sim import CostModel, SimResult, presets, simulate

POLICIES: tuple[str, ...] = tuple(policy_names())
ROUTERS: tuple[str, ...] = tuple(router_names())

# The one version source is Cargo.toml; maturin writes it into the package metadata.
__version__: str = _version("halffull")

__all__ = [
    "POLICIES",
    "PREEMPTION_MODES",
    "ROUTERS",
    "CostModel",
    "Router",
    "SimResult",
    "BusyError",
    "ClockError",
    "ConfigError",
    "DuplicateRequestError",
    "HalffullError",
    "InvalidArgumentError",
    "InvalidUpdateError",
    "InvariantError",
    "OutOfMemoryError",
    "RequestTooLargeError",
    "Scheduler",
    "SchedulerConfig",
    "StalePlanError",
    "StepPlan",
    "TraceError",
    "UnknownRequestError",
    "errors",
    "presets",
    "sim",
    "simulate",
    "traces",
]
