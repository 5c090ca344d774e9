"""Tiny factories shared by the tests (imported as ``support``)."""

from __future__ import annotations

import halffull
from halffull import reference

IMPLS = {"rust": halffull.Scheduler, "reference": reference.Scheduler}


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
