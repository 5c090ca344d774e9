"""`schedule()` + `update()` per engine step: Rust core vs the Python reference.

Steady state: 256 running requests decode; each step 8 of them finish on EOS and 8 new
requests arrive, so every step admits 8 from the waiting queue in policy order. The waiting
queue holds N = 100 ... 100,000 requests (varied prompt sizes, so LARRY's order matters).
``larry_tail`` runs with a 1 s deadline, so after 50 steps its admissions take the due
(oldest-first) path; ``larry_slack`` with its default slack takes LARRY's.

    pytest benches/bench_scheduler.py --benchmark-enable      # pytest-benchmark tables
    python benches/bench_scheduler.py                         # one-run ratio table (README)
"""

from __future__ import annotations

import statistics
import sys
import time

import pytest

import halffull
from halffull import reference

RUNNING = 256
CHURN = 8


class Workload:
    """A scheduler in steady state with `RUNNING` running and `waiting` waiting requests."""

    def __init__(self, impl, policy: str, waiting: int, seed: int = 0, **config) -> None:
        cfg = halffull.SchedulerConfig(
            num_gpu_blocks=1 << 20, block_size=16, max_num_seqs=RUNNING, max_num_batched_tokens=1 << 20,
            policy=policy, larry_alpha=10.0, larry_deadline=1.0, **config,
        )
        self.s = impl(cfg)
        self.t = 0.0
        self.next_id = 0
        self.x = seed * 7919 + 1
        for _ in range(RUNNING):
            self._add()
        plan = self.s.schedule(now=0.0)                 # admit 256 (prefill), queue still empty
        self.s.update(plan, now=0.0)
        for _ in range(waiting):
            self._add()
        self.plan = None

    def _add(self) -> None:
        self.x = (self.x * 48271) % 2147483647          # a tiny LCG: reproducible sizes
        self.s.add_request(self.next_id, prompt_tokens=16 + self.x % 2000, max_output_tokens=1 << 30,
                           arrival_time=self.t)
        self.next_id += 1

    def arrivals(self) -> None:
        """Outside the timed region: the next step's new requests."""
        self.t += 0.02
        for _ in range(CHURN):
            self._add()

    def step(self):
        s = self.s
        plan = s.schedule(now=self.t)
        ids = plan.req_ids
        s.update(plan, finished=[ids[0], ids[37], ids[70], ids[101], ids[140], ids[170], ids[201], ids[250]],
                 now=self.t)
        return plan


def make(impl_name: str, policy: str, waiting: int) -> Workload:
    impl = halffull.Scheduler if impl_name == "rust" else reference.Scheduler
    return Workload(impl, policy, waiting)


def check(w: Workload) -> None:
    w.arrivals()
    w.step()                                            # 8 finish on EOS ...
    w.arrivals()
    plan = w.step()                                     # ... and 8 are admitted in their place
    assert len(plan) == RUNNING and len(plan.admitted) == CHURN, plan
    w.s.check_invariants()


# The O(n) reference takes seconds per step at 100,000 waiting; the target compares at 10,000.
POLICIES = ("fcfs", "larry", "larry_tail", "larry_slack")
CASES = [(impl, policy, waiting) for impl in ("rust", "reference") for policy in POLICIES
         for waiting in (100, 1_000, 10_000, 100_000) if impl == "rust" or waiting <= 10_000]


@pytest.mark.parametrize("impl, policy, waiting", CASES)
def test_step(benchmark, impl, policy, waiting):
    w = make(impl, policy, waiting)
    check(w)
    benchmark.group = f"{policy} waiting={waiting}"
    benchmark.pedantic(w.step, setup=w.arrivals, rounds=200 if impl == "rust" else 20, iterations=1)


def measure(impl: str, policy: str, waiting: int, rounds: int) -> float:
    """Median seconds per step over `rounds` steps."""
    w = make(impl, policy, waiting)
    check(w)
    times = []
    for _ in range(rounds):
        w.arrivals()
        t0 = time.perf_counter()
        w.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    rows = []
    for policy in POLICIES:
        for waiting in (100, 1_000, 10_000, 100_000):
            rust = [measure("rust", policy, waiting, 300) for _ in range(3)]
            ref = [measure("reference", policy, waiting, 10) for _ in range(2)] if waiting <= 10_000 else []
            rows.append((policy, waiting, rust, ref))
            r = statistics.median(rust)
            line = (f"{policy:11} {waiting:>7}  rust {r * 1e6:8.1f} us "
                    f"(runs {min(rust) * 1e6:.1f}-{max(rust) * 1e6:.1f})")
            if ref:
                f = statistics.median(ref)
                line += f"  reference {f * 1e3:8.2f} ms  ratio {f / r:7.0f}x"
            print(line, flush=True)
    for policy in POLICIES:
        times = {w: statistics.median(r) for p, w, r, _ in rows if p == policy}
        print(f"{policy}: rust 100,000 / 100 waiting = {times[100_000] / times[100]:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
