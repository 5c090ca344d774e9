"""halffull in ``semantics="vllm_v1"`` against vLLM 0.33's own V1 ``Scheduler``.

400 seeded random workloads (fcfs and priority, ``reserve_full_prompt`` both ways, prefix
caching off and on, watermark, long-prefill threshold and ``max_model_len`` stops, aborts,
KV-tight configs so that most runs preempt; prompts share a few prefixes, so cache hits, shared
blocks and evictions are common) go through vLLM's real scheduler, the reference and the Rust
core side by side; after every step every decision must be the same
(``vllm_harness.Decision``: scheduled ids, token counts, computed tokens (so cache hits),
new block ids, block tables, admissions, preemptions in order, finished ids, stops, free block
count, the free queue head to tail, the prefix cache counters).

Needs vLLM (see README, "vLLM-exact mode"): ``make test-vllm``. Skipped without it.
"""

from __future__ import annotations

import random
import zlib

import pytest

import vllm_harness as harness

harness.quiet_vllm()
pytest.importorskip("vllm", reason="vLLM is not installed")

import halffull  # noqa: E402
from halffull import reference  # noqa: E402

RUNS_PER_CELL = 50          # 8 cells: 400 workloads, 200 with prefix caching


@pytest.mark.parametrize("caching", [False, True], ids=["no-cache", "prefix-cache"])
@pytest.mark.parametrize("reserve_full_prompt", [True, False], ids=["reserve", "chunk-only"])
@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_same_decisions_as_vllm(policy, reserve_full_prompt, caching):
    cell = f"{policy}:{reserve_full_prompt}" + (":cache" if caching else "")
    rng = random.Random(zlib.crc32(f"vllm-parity:{cell}".encode()))
    with_preemption = with_hits = 0
    for k in range(RUNS_PER_CELL):
        config = harness.random_config(rng, policy, prefix_caching=caching)
        config["reserve_full_prompt"] = reserve_full_prompt
        seed = zlib.crc32(f"{cell}:{k}".encode())
        workload = harness.make_workload(seed, config)
        counts = harness.run_side_by_side(workload, {
            "vllm": harness.VllmSide(config),
            "reference": harness.HalffullSide(reference.Scheduler, config),
            "rust": harness.HalffullSide(halffull.Scheduler, config),
        })
        with_preemption += counts["preemptions"] > 0
        with_hits += counts["cache_hits"] > 0
    # the workloads must exercise preemption (and cache hits), or the test proves little
    assert with_preemption >= RUNS_PER_CELL // 2, with_preemption
    assert with_hits >= (RUNS_PER_CELL * 3 // 4 if caching else 0), with_hits
