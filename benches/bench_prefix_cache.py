"""`schedule()` + `update()` per engine step with prefix caching: Rust core vs the reference.

Steady state as in ``bench_scheduler.py`` (256 running requests decode; each step 8 finish on
EOS and 8 are admitted from N = 100 ... 100,000 waiting), in ``semantics="vllm_v1"`` with
prefix caching on and off, and in ``halffull`` semantics. Every prompt is one of 32 shared
512-token system prompts (given as 32 block hashes) plus a unique suffix of 16-1,000 tokens, so
an admitted request finds about half of its prompt in the cache.

    pytest benches/bench_prefix_cache.py --benchmark-enable      # pytest-benchmark tables
    python benches/bench_prefix_cache.py                         # one-run ratio table (README)
"""

from __future__ import annotations

import statistics
import sys
import time

import pytest

import bench_scheduler
import halffull
from bench_scheduler import CHURN, RUNNING
from halffull import reference

SHARED_BLOCKS = 32        # 512 tokens of block_size 16
PREFIXES = 32
MODES = {
    "halffull": dict(semantics="halffull"),
    "vllm_v1": dict(semantics="vllm_v1"),
    "vllm_v1+cache": dict(semantics="vllm_v1", enable_prefix_caching=True),
}


class Workload(bench_scheduler.Workload):
    """``bench_scheduler``'s steady state, in one of ``MODES``, with shared-prefix prompts."""

    def __init__(self, impl, mode: str, waiting: int, seed: int = 0) -> None:
        super().__init__(impl, "fcfs", waiting, seed, **MODES[mode])

    def _add(self) -> None:
        self.x = (self.x * 48271) % 2147483647
        prefix = self.x % PREFIXES
        self.s.add_request(self.next_id, prompt_tokens=16 * SHARED_BLOCKS + 16 + (self.x >> 8) % 985,
                           max_output_tokens=1 << 30, arrival_time=self.t,
                           block_hashes=[prefix << 16 | j for j in range(SHARED_BLOCKS)])
        self.next_id += 1


def make(impl_name: str, mode: str, waiting: int) -> Workload:
    return Workload(halffull.Scheduler if impl_name == "rust" else reference.Scheduler, mode, waiting)


def check(w: Workload, mode: str) -> None:
    for _ in range(3):
        w.arrivals()
        plan = w.step()
    assert len(plan) == RUNNING and len(plan.admitted) == CHURN, plan
    if mode.endswith("cache"):
        assert plan.num_cached_tokens.sum() >= CHURN * 16 * (SHARED_BLOCKS - 1)   # the shared prompt hits
    w.s.check_invariants()


CASES = [(impl, mode, waiting) for impl in ("rust", "reference") for mode in MODES
         for waiting in (100, 10_000, 100_000) if impl == "rust" or waiting <= 10_000]


@pytest.mark.parametrize("impl, mode, waiting", CASES)
def test_step(benchmark, impl, mode, waiting):
    w = make(impl, mode, waiting)
    check(w, mode)
    benchmark.group = f"prefix cache: {mode} waiting={waiting}"
    benchmark.pedantic(w.step, setup=w.arrivals, rounds=200 if impl == "rust" else 10, iterations=1)


def measure(impl: str, mode: str, waiting: int, rounds: int) -> float:
    w = make(impl, mode, waiting)
    check(w, mode)
    times = []
    for _ in range(rounds):
        w.arrivals()
        t0 = time.perf_counter()
        w.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    medians = {}
    for mode in MODES:
        for waiting in (100, 10_000, 100_000):
            rust = [measure("rust", mode, waiting, 300) for _ in range(3)]
            ref = [measure("reference", mode, waiting, 10) for _ in range(2)] if waiting <= 10_000 else []
            r = medians[mode, waiting] = statistics.median(rust)
            line = f"{mode:14} {waiting:>7}  rust {r * 1e6:7.1f} us (runs {min(rust) * 1e6:.1f}-{max(rust) * 1e6:.1f})"
            if ref:
                f = statistics.median(ref)
                line += f"  reference {f * 1e3:7.2f} ms  ratio {f / r:6.0f}x"
            print(line, flush=True)
    for mode in MODES:
        print(f"{mode}: rust 100,000 / 100 waiting = {medians[mode, 100_000] / medians[mode, 100]:.2f}x; "
              f"vs halffull at 10,000: {medians[mode, 10_000] / medians['halffull', 10_000]:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
