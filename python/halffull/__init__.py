"""halffull: a fast scheduling core for LLM serving.

The engine scheduler (``Scheduler``: who runs this step, who waits, who is preempted, which
KV blocks each request holds), the load balancer (``Router``) and the trace simulator
(``simulate``) are written in Rust and exposed here; ``halffull.reference`` holds plain-Python
twins used as test oracles; ``halffull.traces`` loads and generates traces;
``halffull.engine`` (needs torch) drives a real transformer with the scheduler.
"""

from . import errors, sim, traces
from ._core import Router, Scheduler, StepPlan, block_hashes, policy_names, router_names
from ._core import __version__ as _core_version
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
    SweepError,
    TraceError,
    UnknownRequestError,
)
from .sim import CostModel, SimResult, presets, simulate

POLICIES: tuple[str, ...] = tuple(policy_names())
ROUTERS: tuple[str, ...] = tuple(router_names())

# The one version source is Cargo.toml: maturin writes it into the package metadata, and the
# extension carries it compiled in (the metadata is absent when imported from PYTHONPATH).
__version__: str = _core_version

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
    "SweepError",
    "TraceError",
    "UnknownRequestError",
    "block_hashes",
    "errors",
    "presets",
    "sim",
    "simulate",
    "traces",
]
