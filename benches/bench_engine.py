"""Engine-loop benchmarks (pytest-benchmark): each checks its result once, then times.

- ``test_scheduler_share``: the same engine loop (tiny model, CPU, many queued requests) with
  the Rust scheduler and with the Python reference; reports each one's share of step time
  (schedule + update) and their ratio. DESIGN §9 target: the Rust share under 2%.
- ``test_tokens_per_second``: output tokens/s of the ``tiny`` and ``small`` (~100M) presets.

Numbers land in ``extra_info`` (``--benchmark-json``) and are printed (``-s``).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from halffull import SchedulerConfig  # noqa: E402
from halffull.engine import Engine, ModelConfig  # noqa: E402

THREADS = 2


@pytest.fixture(autouse=True, scope="module")
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(old)


def _workload(n: int, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(0, vocab, size=int(rng.integers(8, 33))).tolist() for _ in range(n)]
    outputs = rng.integers(4, 17, size=n).tolist()
    return prompts, outputs


def _serve(eng: Engine, prompts, outputs) -> list[list[int]]:
    eng.reset_timings()
    ids = [eng.add_request(p, max_output_tokens=o) for p, o in zip(prompts, outputs, strict=True)]
    for _ in eng.run():
        pass
    return [eng.pop_result(i).output_token_ids for i in ids]


def test_scheduler_share(benchmark):
    """400 requests queued at once, 64 seats, tight cache (preemptions happen): the reference
    re-scores every waiting request per admission, the Rust core does not."""
    model = ModelConfig.preset("tiny")
    sched = SchedulerConfig(num_gpu_blocks=96, block_size=16, max_num_seqs=64, max_num_batched_tokens=512)
    prompts, outputs = _workload(400, model.vocab_size)
    engines = {kind: Engine(model, sched, scheduler=kind) for kind in ("rust", "reference")}
    results, shares, per_step = {}, {}, {}
    for kind, eng in engines.items():
        _serve(eng, prompts[:4], outputs[:4])                         # warm-up
        results[kind] = _serve(eng, prompts, outputs)
        t = eng.timings()
        shares[kind] = t["scheduler_share"]
        per_step[kind] = (t["schedule_s"] + t["update_s"]) / t["steps"]
    assert results["rust"] == results["reference"]                   # same plans, same tokens
    assert [len(o) for o in results["rust"]] == outputs

    benchmark.pedantic(_serve, args=(engines["rust"], prompts, outputs), rounds=2, iterations=1)
    t = engines["rust"].timings()
    shares["rust"] = t["scheduler_share"]
    per_step["rust"] = (t["schedule_s"] + t["update_s"]) / t["steps"]
    info = {
        "steps": t["steps"],
        "sched_share_rust": shares["rust"],
        "sched_share_reference": shares["reference"],
        "share_ratio_reference_over_rust": shares["reference"] / shares["rust"],
        "sched_us_per_step_rust": 1e6 * per_step["rust"],
        "sched_us_per_step_reference": 1e6 * per_step["reference"],
        "preemptions": engines["rust"].num_preemptions,
    }
    benchmark.extra_info.update(info)
    print("\nengine scheduler share:", {k: round(v, 4) if isinstance(v, float) else v for k, v in info.items()})


@pytest.mark.parametrize("preset,num_requests,prompt_len,output_len",
                         [("tiny", 32, 32, 32), ("small", 4, 16, 12)])
def test_tokens_per_second(benchmark, preset, num_requests, prompt_len, output_len):
    model = ModelConfig.preset(preset)
    eng = Engine(model, SchedulerConfig(num_gpu_blocks=128, block_size=16, max_num_batched_tokens=1024))
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, model.vocab_size, size=prompt_len).tolist() for _ in range(num_requests)]
    first = _serve(eng, prompts, [output_len] * num_requests)
    assert [len(o) for o in first] == [output_len] * num_requests

    def once() -> float:
        t0 = time.perf_counter()
        out = _serve(eng, prompts, [output_len] * num_requests)
        assert out == first                                           # deterministic
        return time.perf_counter() - t0

    wall = benchmark.pedantic(once, rounds=2, iterations=1)
    produced = num_requests * output_len
    t = eng.timings()
    info = {
        "parameters_M": model.num_parameters() / 1e6,
        "output_tokens": produced,
        "output_tokens_per_s": produced / wall,
        "tokens_per_s": (produced + num_requests * prompt_len) / wall,
        "forward_share": t["forward_s"] / t["total_s"],
        "sched_share": t["scheduler_share"],
        "threads": THREADS,
    }
    benchmark.extra_info.update(info)
    print(f"\n{preset}:", {k: round(v, 4) if isinstance(v, float) else v for k, v in info.items()})
