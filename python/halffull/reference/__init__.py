"""Plain-Python reference implementations: readable first, exact, and the oracle the
Hypothesis tests compare the Rust core against. Slow on purpose (O(n) per decision)."""

from ..config import SchedulerConfig
from .policies import POLICIES
from .router import ROUTERS, Router
from .scheduler import Request, Scheduler, StepPlan

__all__ = ["POLICIES", "ROUTERS", "Request", "Router", "Scheduler", "SchedulerConfig", "StepPlan"]
