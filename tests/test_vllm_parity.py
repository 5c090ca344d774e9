"""halffull in ``semantics="vllm_v1"`` against vLLM 0.33's own V1 ``Scheduler``.

300 seeded random workloads (fcfs and priority, ``reserve_full_prompt`` both ways, watermark,
long-prefill threshold and ``max_model_len`` stops, aborts, KV-tight configs so that most runs
preempt) go through vLLM's real scheduler, the reference and the Rust core side by side;
after every step every decision must be the same (``vllm_harness.Decision``: scheduled ids,
token counts, computed tokens, new block ids, block tables, admissions, preemptions in order,
finished ids, stops, free block count, the free queue head to tail).

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

RUNS_PER_CELL = 75          # 4 cells: 300 workloads


@pytest.mark.parametrize("reserve_full_prompt", [True, False], ids=["reserve", "chunk-only"])
@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_same_decisions_as_vllm(policy, reserve_full_prompt):
    rng = random.Random(zlib.crc32(f"vllm-parity:{policy}:{reserve_full_prompt}".encode()))
    with_preemption = 0
    for k in range(RUNS_PER_CELL):
        config = harness.random_config(rng, policy)
        config["reserve_full_prompt"] = reserve_full_prompt
        seed = zlib.crc32(f"{policy}:{reserve_full_prompt}:{k}".encode())
        workload = harness.make_workload(seed, config)
        counts = harness.run_side_by_side(workload, {
            "vllm": harness.VllmSide(config),
            "reference": harness.HalffullSide(reference.Scheduler, config),
            "rust": harness.HalffullSide(halffull.Scheduler, config),
        })
        with_preemption += counts["preemptions"] > 0
    # the workloads must exercise preemption, or the test proves little
    assert with_preemption >= RUNS_PER_CELL // 2, with_preemption
