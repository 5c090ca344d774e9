"""Prefix caching on the Mooncake synthetic trace (../shared/traces): engine policies and
routers with caching on and off. Prints a markdown table (the README's).

    python benches/prefix_cache_experiment.py [--trace PATH] [--replicates 3]

Each cell: the mean over the trace and jittered copies (arrivals moved by U(-1, 1) mean gaps,
hash_ids kept with their requests) of TTFT mean / p99 / p99.9 / max and the prefix-cache hit
rate. Arrival rate: ``load`` x one replica's capacity measured under FCFS without caching
(so caching's gain shows as lower latency at the same offered load).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import halffull
from halffull import traces

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "traces" / "mooncake-fast25" / "synthetic_trace.jsonl"


def jittered(tr: traces.Trace, k: int) -> traces.Trace:
    if k == 0:
        return tr
    rng = np.random.default_rng(1000 + k)
    gap = tr.duration / max(len(tr) - 1, 1)
    t = np.maximum(tr.arrival_time + rng.uniform(-1.0, 1.0, len(tr)) * gap, 0.0)
    order = np.argsort(t, kind="stable")
    assert tr.hash_ids is not None
    return traces.Trace(arrival_time=t[order] - t[order][0], prompt_tokens=tr.prompt_tokens[order],
                        output_tokens=tr.output_tokens[order], hash_ids=[tr.hash_ids[i] for i in order],
                        name=f"{tr.name}~jitter{k}", source=tr.source)


def cell(copies, replicas, policy, router, caching, load):
    rows = []
    for tr in copies:
        r = halffull.simulate(tr, replicas=replicas, policy=policy, router=router, preset="llama-3-8b/h100",
                              load=load, semantics="vllm_v1", enable_prefix_caching=caching,
                              max_model_len=200_000, record_steps=False)
        s = r.summary()
        ttft = r.requests["ttft"][r.requests["status"] == "finished"]
        rows.append([s["ttft_mean"], s["ttft_p99"], float(np.percentile(ttft, 99.9)), float(ttft.max()),
                     s["e2e_mean"], s["prefix_cache_hit_rate"] if caching else 0.0])
    return np.mean(rows, axis=0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default=str(DEFAULT))
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--load", type=float, default=0.8)
    a = ap.parse_args(argv)
    base = traces.load(a.trace)
    copies = [jittered(base, k) for k in range(a.replicates)]
    print(f"{base.name}: {len(base)} requests, load {a.load}, {a.replicates} copies (trace + jittered)\n")
    print("| replicas | policy | router | cache | hit rate | TTFT mean | p99 | p99.9 | max | e2e mean |")
    print("|---:|---|---|---|---:|---:|---:|---:|---:|---:|")
    setups = [(1, "fcfs", "round_robin"), (1, "larry", "round_robin")] + [
        (8, p, r) for p in ("fcfs", "larry") for r in ("round_robin", "least_tokens", "sal")]
    for replicas, policy, router in setups:
        for caching in (False, True):
            m = cell(copies, replicas, policy, router, caching, a.load)
            print(f"| {replicas} | {policy} | {router} | {'on' if caching else 'off'} | {m[5]:.1%} | "
                  f"{m[0]:.2f} s | {m[1]:.2f} s | {m[2]:.2f} s | {m[3]:.2f} s | {m[4]:.2f} s |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
