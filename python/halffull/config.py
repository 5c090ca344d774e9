"""``SchedulerConfig``: the one description of a scheduler, shared by the Rust core, the
pure-Python reference, the simulator and the torch engine.

The class is the Rust core's own (``halffull._core.SchedulerConfig``, frozen): its defaults,
its checks and its valid names are written once, in ``rust/config.rs``, so a bad config
fails where it is written (``ConfigError`` naming the field) rather than on the first step.
"""

from __future__ import annotations

from ._core import LARRY_LOADS, PREEMPTION_MODES, SEMANTICS, SchedulerConfig, policy_names

#: Valid ``policy`` names, in registry order.
POLICIES: tuple[str, ...] = tuple(policy_names())

__all__ = ["LARRY_LOADS", "POLICIES", "PREEMPTION_MODES", "SEMANTICS", "SchedulerConfig"]
