"""Shared test setup: Hypothesis profiles and tiny factories.

Profiles (``HYPOTHESIS_PROFILE``): ``dev`` (default, fast, for everyday runs) and ``ci``
(thorough: at least 1,000 examples per policy in the parity tests).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import halffull
from halffull import reference

settings.register_profile("dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The real public traces live beside the project, never in it (see ../shared/traces/README.md).
SHARED_TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"

IMPLS = {"rust": halffull.Scheduler, "reference": reference.Scheduler}


@pytest.fixture(params=sorted(IMPLS))
def Sched(request):
    """The scheduler class under test: the Rust core and the reference, in turn."""
    return IMPLS[request.param]


def make_config(**overrides) -> halffull.SchedulerConfig:
    """A tiny config where preemption and edge cases are easy to reach."""
    base = dict(num_gpu_blocks=8, block_size=4, num_cpu_blocks=8, max_num_seqs=4,
                max_num_batched_tokens=32, watermark=0.0)
    base.update(overrides)
    return halffull.SchedulerConfig(**base)


def run_to_completion(s, *, max_steps: int = 100_000, dt: float = 0.01, finish=None) -> list:
    """Step until every request has ended; returns the plans. ``finish(plan)`` may name ids
    to end on EOS."""
    plans = []
    t = s.now
    for _ in range(max_steps):
        if not s.has_unfinished_requests():
            return plans
        plan = s.schedule(now=t)
        plans.append(plan)
        t += dt
        s.update(plan, finished=finish(plan) if finish else (), now=t)
        s.check_invariants()
    raise AssertionError(f"did not drain in {max_steps} steps: {s!r}")
