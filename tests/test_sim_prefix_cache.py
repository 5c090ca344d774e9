"""Prefix caching in the simulator: trace block ids (Mooncake's ``hash_ids``) become block
hashes, cached prompt tokens are not computed again, and the counters add up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import halffull
from halffull import traces

MOONCAKE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "mooncake-fast25" / "synthetic_trace.jsonl"


def multi_turn(n_conv: int = 12, turns: int = 6, seed: int = 0) -> traces.Trace:
    """Conversations whose every turn repeats the previous turn's prompt (its 512-token blocks)
    and adds a few blocks: prefix reuse shaped as in Mooncake's trace."""
    rng = np.random.default_rng(seed)
    rows = []
    next_id = 0
    for c in range(n_conv):
        ids: list[int] = []
        t = float(c)
        for _ in range(turns):
            new = int(rng.integers(1, 4))
            ids = ids + list(range(next_id, next_id + new))
            next_id += new
            prompt = 512 * (len(ids) - 1) + int(rng.integers(1, 513))
            rows.append((t, prompt, int(rng.integers(4, 64)), list(ids)))
            t += float(rng.uniform(2.0, 6.0))
    rows.sort(key=lambda r: r[0])
    return traces.Trace(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
                        np.array([r[2] for r in rows]), hash_ids=[r[3] for r in rows], name="multi_turn")


def run(trace, caching: bool, **kw):
    return halffull.simulate(trace, replicas=kw.pop("replicas", 1), policy=kw.pop("policy", "fcfs"),
                             router=kw.pop("router", "round_robin"), preset="llama-3-8b/h100",
                             semantics="vllm_v1", enable_prefix_caching=caching, **kw)


@pytest.mark.parametrize("policy", ["fcfs", "larry"])
def test_cached_tokens_are_not_computed(policy):
    tr = multi_turn()
    on = run(tr, True, policy=policy, num_gpu_blocks=4000)
    pc = on.prefix_cache
    assert pc["hits"] > 0 and pc["requests"] == len(tr)
    # every token an admission asked for is either found in the cache or computed
    computed = int(on.steps["prefill_tokens"].sum())
    assert computed == pc["queries"] + pc["preempted_queries"] - pc["hits"] - pc["preempted_hits"]
    assert int(on.requests["cached_tokens"].sum()) == pc["hits"]
    assert on.requests["cached_tokens"].max() % 16 == 0          # block aligned
    assert (on.requests["cached_tokens"] < on.requests["prompt_tokens"]).all()   # one token is computed
    s = on.summary()
    assert s["prefix_cache_hit_rate"] == pytest.approx(pc["hits"] / pc["queries"])
    off = run(tr, False, policy=policy, num_gpu_blocks=4000)
    assert np.isnan(off.summary()["prefix_cache_hit_rate"])
    assert off.requests["cached_tokens"].sum() == 0
    assert int(off.steps["prefill_tokens"].sum()) > computed


def test_caching_without_block_ids_only_rehits_own_blocks():
    tr = multi_turn()
    bare = traces.Trace(tr.arrival_time, tr.prompt_tokens, tr.output_tokens, name="bare")
    r = run(bare, True, num_gpu_blocks=4000)
    assert r.prefix_cache["hits"] == 0                    # nothing is shared without content


def test_a_small_cache_evicts():
    r = run(multi_turn(), True, num_gpu_blocks=300)
    assert r.prefix_cache["evictions"] > 0


def test_bad_hash_block_tokens_is_an_error():
    with pytest.raises(halffull.InvalidArgumentError):
        run(multi_turn(), True, hash_block_tokens=500)    # not a multiple of block_size 16
    with pytest.raises(halffull.InvalidArgumentError):
        run(multi_turn(), True, hash_block_tokens=0)


@pytest.mark.skipif(not MOONCAKE.exists(), reason="the shared Mooncake trace is not on this machine")
def test_mooncake_trace_hits_what_repeats():
    tr = traces.load(str(MOONCAKE)).head(600)
    assert tr.hash_ids is not None
    seen: set[int] = set()
    repeated = total = 0
    for ids in tr.hash_ids:                               # the share of 512-token blocks seen before
        repeated += sum(i in seen for i in ids)
        total += len(ids)
        seen.update(ids)
    # a cache that never evicts finds (about) every repeated block
    rate = run(tr, True, max_model_len=200_000, num_gpu_blocks=1_000_000).summary()["prefix_cache_hit_rate"]
    assert 0.8 * repeated / total < rate < 1.2 * repeated / total
