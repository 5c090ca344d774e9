"""Cache-aware routers on the Mooncake synthetic trace (../shared/traces), prefix caching on:
the README's comparison of every router at eight replicas.

    python benches/router_cache_experiment.py [--trace PATH] [--replicates 3] [--load 1.0]

Engines: ``llama-3-8b/h100`` roofline, ``semantics="vllm_v1"`` with prefix caching, the
Mooncake ``hash_ids`` as block hashes. The cache-aware routers run twice: on their own record
of what they sent where (``record``: SGLang's approximate tree, Dynamo's ``--no-kv-events``)
and told each replica's cached prefix exactly by its scheduler (``exact``: Dynamo's KV
events). Each cell: the mean over the trace and jittered copies (arrivals moved by U(-1, 1)
mean gaps, hash_ids kept with their requests; router seeds 0, 1, 2); the last column is the
spread (max / min) of mean TTFT across the copies.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import halffull
from halffull import traces
from prefix_cache_experiment import DEFAULT, jittered

ROUTERS = [("round_robin", False), ("power_of_two", False), ("least_requests", False), ("least_tokens", False),
           ("llumnix", False), ("sal", False), ("cache_aware", False), ("cache_aware", True),
           ("dynamo_kv", False), ("dynamo_kv", True), ("sal_uncached", False), ("sal_uncached", True)]


def cell(copies, policy: str, router: str, exact: bool, load: float) -> tuple[np.ndarray, float]:
    rows = []
    for k, tr in enumerate(copies):
        r = halffull.simulate(tr, replicas=8, policy=policy, router=router, preset="llama-3-8b/h100", load=load,
                              seed=k, semantics="vllm_v1", enable_prefix_caching=True, max_model_len=200_000,
                              record_steps=False, router_exact_overlap=exact)
        s = r.summary()
        ttft = r.requests["ttft"][r.requests["status"] == "finished"]
        rows.append([s["prefix_cache_hit_rate"], s["ttft_mean"], s["ttft_p50"], s["ttft_p99"],
                     float(np.percentile(ttft, 99.9)), float(ttft.max()), s["tpot_mean"], s["e2e_mean"]])
    rows_a = np.asarray(rows)
    return rows_a.mean(axis=0), float(rows_a[:, 1].max() / rows_a[:, 1].min())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default=str(DEFAULT))
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--load", type=float, default=1.0)
    ap.add_argument("--policies", default="fcfs,larry")
    a = ap.parse_args(argv)
    base = traces.load(a.trace)
    copies = [jittered(base, k) for k in range(a.replicates)]
    print(f"{base.name}: {len(base)} requests, 8 replicas, load {a.load} (x capacity without caching), "
          f"prefix caching on, {a.replicates} copies (trace + jittered)\n")
    print("| policy | router | overlap | hit rate | TTFT mean | p50 | p99 | p99.9 | max | TPOT mean | e2e mean "
          "| TTFT spread |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for policy in a.policies.split(","):
        for router, exact in ROUTERS:
            t = time.perf_counter()
            m, spread = cell(copies, policy, router, exact, a.load)
            cache_aware = router in ("cache_aware", "dynamo_kv", "sal_uncached")
            overlap = ("exact" if exact else "record") if cache_aware else "—"
            print(f"| {policy} | {router} | {overlap} | {m[0]:.1%} | {m[1]:.2f} s | {m[2]:.2f} s | {m[3]:.1f} s | "
                  f"{m[4]:.1f} s | {m[5]:.1f} s | {m[6] * 1e3:.0f} ms | {m[7]:.1f} s | {spread:.2f}x |", flush=True)
            print(f"<!-- {time.perf_counter() - t:.0f} s -->", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
