"""Router decision latency at 64 replicas, every policy, Rust vs the Python reference
(DESIGN §9: a decision through Python under 2 µs).

One timed call = ``route()`` of a new request plus ``on_finish()`` of the same request, so the
cluster's load stays steady however many rounds run. Each case first checks (untimed) that
the Rust router and the reference make the same choices on the same load, then times.

    pytest benches/bench_router.py --benchmark-enable --benchmark-group-by=group
    python benches/bench_router.py          # one-run table of µs per decision (README)
"""

from __future__ import annotations

import itertools
import sys
import time

import pytest

import halffull
from halffull.reference import router as ref

RustRouter = getattr(halffull, "Router", None) or halffull._core.Router
IMPLS = {"rust": RustRouter, "reference": ref.Router}
NUM_REPLICAS = 64


def loaded(cls, policy: str):
    """A cluster mid-run: 8 requests per replica, half of them started and decoding."""
    r = cls(policy, NUM_REPLICAS, seed=1, num_gpu_blocks=2048, block_size=16, max_num_batched_tokens=4096)
    for i in range(8 * NUM_REPLICAS):
        rid = f"warm-{i}"
        r.route(rid, 200 + (i * 7919) % 1800, max_output_tokens=512)
        if i % 2 == 0:
            r.on_progress(rid, (i * 31) % 100)
    return r


def make_step(r):
    ids = itertools.count()

    def step() -> int:
        i = next(ids)
        replica = r.route(i, 128 + (i * 37) % 2000, 256)
        r.on_finish(i, 1 + i % 200)
        return replica

    return step


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("policy", ref.ROUTERS)
def test_route_and_finish_64_replicas(benchmark, policy, impl):
    rust, oracle = make_step(loaded(RustRouter, policy)), make_step(loaded(ref.Router, policy))
    assert [rust() for _ in range(200)] == [oracle() for _ in range(200)]

    benchmark.group = f"route+finish @ {NUM_REPLICAS} replicas: {policy}"
    benchmark(make_step(loaded(IMPLS[impl], policy)))


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_route_many_1000_sal(benchmark, impl):
    prompts = [128 + (i * 37) % 2000 for i in range(1000)]
    a, b = loaded(RustRouter, "sal"), loaded(ref.Router, "sal")
    assert a.route_many(range(1000), prompts).tolist() == b.route_many(range(1000), prompts).tolist()

    def setup():
        return (loaded(IMPLS[impl], "sal"),), {}

    benchmark.group = "route_many(1000) sal @ 64 replicas"
    benchmark.pedantic(lambda r: r.route_many(range(1000), prompts), setup=setup,
                       rounds=3 if impl == "reference" else 30, iterations=1)


def _per_call_us(step, calls: int) -> float:
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(calls):
            step()
        best = min(best, (time.perf_counter() - t) / calls)
    return best * 1e6


def main() -> int:
    print(f"route() + on_finish() at {NUM_REPLICAS} replicas, µs per call (best of 5 runs)")
    print(f"{'policy':<16}{'rust':>10}{'reference':>12}{'ratio':>9}")
    for policy in ref.ROUTERS:
        rust = _per_call_us(make_step(loaded(RustRouter, policy)), 50_000)
        oracle = _per_call_us(make_step(loaded(ref.Router, policy)), 500)
        print(f"{policy:<16}{rust:>10.3f}{oracle:>12.2f}{oracle / rust:>8.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
