"""Router decision latency, Rust vs the Python reference (DESIGN §9: a decision through Python
under 2 µs at 64 replicas).

1. Every policy at 64 replicas, prompts as token counts only. One timed call = ``route()`` of
   a new request plus ``on_finish()`` of the same request, so the cluster's load stays steady.
2. The cache-aware policies (and ``sal`` as the baseline that only converts the hashes) at 8
   and 64 replicas with Mooncake-like prompts: 10-30 trace blocks of 512 tokens, i.e. 320-960
   chained block hashes of 16 tokens each (128-bit Python ints, as ``halffull.block_hashes``
   returns them), from multi-turn sessions that share prefixes. One timed call = ``route()``
   of a new request plus ``on_finish()`` of the oldest live one (8 live per replica).

Each case first checks (untimed) that the Rust router and the reference make the same choices
on the same load, then times.

    pytest benches/bench_router.py --benchmark-enable --benchmark-group-by=group
    python benches/bench_router.py          # one-run tables (README)
"""

from __future__ import annotations

import itertools
import random
import sys
import time
from collections import deque

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


# ---------------------------------------------------------------------------- with block hashes

PREFIX_ROUTERS = ("cache_aware", "dynamo_kv", "sal_uncached", "sal")
TRACE_BLOCK = 512          # tokens per Mooncake hash id
BLOCK = 16                 # tokens per router / engine block


def mooncake_like(n: int, seed: int) -> list[tuple[int, list[int]]]:
    """``n`` prompts as (tokens, block hashes): 64 multi-turn sessions in 8 tenants; a session
    starts from its tenant's 4-block system prompt and grows by 1-4 trace blocks a turn,
    restarting past 30; each trace block expands to 32 random 128-bit hashes (one per 16
    tokens), fixed per (trace block, position) so shared prefixes share hashes."""
    rng = random.Random(seed)
    expand: dict[tuple[int, int], int] = {}
    next_id = itertools.count(1000)
    tenants = [[next(next_id) for _ in range(4)] for _ in range(8)]
    sessions = [list(tenants[s % 8]) for s in range(64)]
    out = []
    for _ in range(n):
        s = rng.randrange(64)
        ids = sessions[s]
        ids.extend(next(next_id) for _ in range(rng.randint(1, 4)))
        if len(ids) > 30:
            ids[:] = tenants[s % 8] + [next(next_id) for _ in range(6)]
        if len(ids) < 10:
            ids.extend(next(next_id) for _ in range(10 - len(ids)))
        prompt = len(ids) * TRACE_BLOCK - rng.randrange(TRACE_BLOCK)
        hashes = [expand.setdefault((ids[g // 32], g % 32), rng.getrandbits(128)) for g in range(prompt // BLOCK)]
        out.append((prompt, hashes))
    return out


def hashed_step(r, requests: list[tuple[int, list[int]]], live_per_replica: int = 8):
    """A cluster mid-run: the first ``live_per_replica × n`` requests warm it up, then each
    call routes the next one and finishes the oldest live one."""
    live: deque[int] = deque()
    ids = itertools.count()
    width = live_per_replica * r.num_replicas

    def step() -> int:
        i = next(ids)
        prompt, hashes = requests[i % len(requests)]
        replica = r.route(i, prompt, max_output_tokens=256, block_hashes=hashes)
        live.append(i)
        if len(live) > width:
            r.on_finish(live.popleft(), 1 + i % 200)
        return replica

    for _ in range(width):
        step()
    return step


def hashed_router(cls, policy: str, n: int):
    return cls(policy, n, seed=1, num_gpu_blocks=25_720, block_size=BLOCK, max_num_batched_tokens=8192)


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("n", [8, 64])
@pytest.mark.parametrize("policy", PREFIX_ROUTERS)
def test_route_with_block_hashes(benchmark, policy, n, impl):
    requests = mooncake_like(3000, seed=0)
    rust, oracle = hashed_step(hashed_router(RustRouter, policy, n), requests), \
        hashed_step(hashed_router(ref.Router, policy, n), requests)
    assert [rust() for _ in range(60)] == [oracle() for _ in range(60)]

    benchmark.group = f"route+finish with ~600 block hashes @ {n} replicas: {policy}"
    benchmark(hashed_step(hashed_router(IMPLS[impl], policy, n), requests))


def _per_call_tail_us(step, calls: int) -> dict[str, float]:
    """Each call timed on its own: mean, p50, p99, p99.9 and max in µs."""
    times = []
    for _ in range(calls):
        t = time.perf_counter_ns()
        step()
        times.append(time.perf_counter_ns() - t)
    times.sort()

    def q(p: float) -> float:
        return times[min(len(times) - 1, int(p * len(times)))] / 1e3

    return {"mean": sum(times) / len(times) / 1e3, "p50": q(0.5), "p99": q(0.99), "p999": q(0.999),
            "max": times[-1] / 1e3}


def hashed_table(seeds=(0, 1, 2), rust_calls: int = 10_000, ref_calls: int = 300) -> None:
    print(f"\nroute() + on_finish() with Mooncake-like block hashes (320-960 per prompt, 600 on average), µs per "
          f"call; Rust: {rust_calls} calls per seed, the reference: {ref_calls}; seeds {list(seeds)}; tails: the "
          f"worst seed; ratios: reference / Rust")
    print(f"{'policy':<14}{'n':>4}  {'rust mean':>10}{'p50':>8}{'p99':>8}{'p99.9':>8}{'max':>9}"
          f"  {'ref mean':>9}{'p50':>8}  {'ratio mean':>10}{'p50':>6}  {'seed spread':>11}")
    for policy in PREFIX_ROUTERS:
        for n in (8, 64):
            runs, oracle = [], []
            for seed in seeds:
                requests = mooncake_like(rust_calls + 64 * 8 + 10, seed)
                runs.append(_per_call_tail_us(hashed_step(hashed_router(RustRouter, policy, n), requests), rust_calls))
                oracle.append(_per_call_tail_us(hashed_step(hashed_router(ref.Router, policy, n), requests), ref_calls))
            mean = sum(x["mean"] for x in runs) / len(runs)
            p50 = sum(x["p50"] for x in runs) / len(runs)
            tail = {k: max(x[k] for x in runs) for k in ("p99", "p999", "max")}
            ref_mean = sum(x["mean"] for x in oracle) / len(oracle)
            ref_p50 = sum(x["p50"] for x in oracle) / len(oracle)
            spread = max(x["p50"] for x in runs) / min(x["p50"] for x in runs)
            print(f"{policy:<14}{n:>4}  {mean:>10.1f}{p50:>8.1f}{tail['p99']:>8.0f}{tail['p999']:>8.0f}"
                  f"{tail['max']:>9.0f}  {ref_mean:>9.0f}{ref_p50:>8.0f}  {ref_mean / mean:>9.1f}x"
                  f"{ref_p50 / p50:>5.1f}x  {spread:>10.2f}x", flush=True)


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
    hashed_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
