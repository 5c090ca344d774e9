"""``schedule()`` + ``update_from_output()`` per engine step: vLLM 0.33's ``Scheduler`` against
``halffull.vllm.Scheduler``, as vLLM's ``EngineCore.step`` calls them, in the same run.

Steady state: N requests (32 / 128 / 256) running, 512-token prompts (a 256-token prefix shared
by all, then their own), each stopping on EOS after 64-448 tokens and replaced by a new
arrival, so each step mostly decodes and now and then admits and prefills. Both schedulers get
identical ``Request`` objects and identical fake model outputs; the heap is frozen after
start-up as ``EngineCore`` freezes it; the steps alternate between
them (one vLLM step, one halffull step), so drift in the machine's speed hits both alike.
Reports per-step median / p90 / p99 / max in microseconds and the ratio of medians, over
``--rounds`` rounds (the spread of the ratio is the noise). Prefix caching off and on.

    PYTHONPATH=python .venv-vllm/bin/python benches/bench_vllm_plugin.py [--steps 300] [--rounds 3]
    PYTHONPATH=python .venv-vllm/bin/python benches/bench_vllm_plugin.py --profile   # where our time goes

Needs vLLM; ``pytest benches`` runs a short smoke check (skipped without vLLM).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import vllm_harness as harness  # noqa: E402

BLOCK = 16
PROMPT = 512
SHARED = 256


def _config(running: int, caching: bool) -> dict:
    return dict(num_blocks=running * 64 + 64, block_size=BLOCK, max_num_seqs=running, max_num_batched_tokens=8192,
                max_model_len=4096, policy="fcfs", long_prefill_token_threshold=0, reserve_full_prompt=True,
                watermark=0.0, enable_prefix_caching=caching, max_steps=10**9)


class Side:
    """One scheduler with its own stream of requests (the same stream for every side)."""

    def __init__(self, cls: Any, config: dict, running: int, seed: int) -> None:
        from vllm.v1.structured_output import StructuredOutputManager

        vc, kv, sbs, hbs = harness.vllm_parts(config)
        self.s = cls(vllm_config=vc, kv_cache_config=kv, structured_output_manager=StructuredOutputManager(vc),
                     block_size=sbs, hash_block_size=hbs, log_stats=True)
        self.hasher = harness.request_block_hasher(config)
        self.rng = random.Random(seed)
        self.shared = [self.rng.randrange(10, harness.VOCAB) for _ in range(SHARED)]
        self.specs: dict[str, dict] = {}
        self.next = 0
        self.times: list[float] = []
        for _ in range(running):
            self.arrive()

    def arrive(self) -> None:
        rid = f"r{self.next:06d}"
        own = [self.rng.randrange(10, harness.VOCAB) for _ in range(PROMPT - SHARED)]
        spec = dict(id=rid, arrival_step=self.next, prompt=self.shared + own, max_tokens=4096 - PROMPT - 1,
                    eos_at=self.rng.randint(64, 448), eos_token=harness.EOS, abort_step=None, priority=0)
        self.specs[rid] = spec
        self.next += 1
        self.s.add_request(harness.make_request(spec, self.hasher))

    def step(self) -> int:
        from vllm.v1.outputs import ModelRunnerOutput

        s = self.s
        t0 = time.perf_counter()
        out = s.schedule()
        t1 = time.perf_counter()
        ids = list(out.num_scheduled_tokens)
        sampled = []
        for rid in ids:
            req = s.requests[rid]
            sampled.append([] if req.is_prefill_chunk else
                           [harness.fake_token(self.specs[rid], req.num_computed_tokens - req.num_prompt_tokens)])
        mro = ModelRunnerOutput(req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)},
                                sampled_token_ids=sampled)
        t2 = time.perf_counter()
        ecos = s.update_from_output(out, mro)
        t3 = time.perf_counter()
        self.times.append((t1 - t0) + (t3 - t2))
        ended = sum(o.finish_reason is not None for eco in ecos.values() for o in eco.outputs)
        for _ in range(ended):
            self.arrive()
        return len(ids)


def _freeze_gc() -> None:
    """As ``EngineCore.__init__`` does (``vllm.utils.gc_utils.freeze_gc_heap``): the objects
    alive after start-up leave the collector's generations, so a full collection does not
    walk torch's and vLLM's heap in the middle of a step."""
    import gc

    gc.collect()
    gc.freeze()


def _stats(xs: list[float]) -> dict:
    xs = sorted(x * 1e6 for x in xs)
    q = statistics.quantiles(xs, n=100)
    return dict(median=statistics.median(xs), p90=q[89], p99=q[98], max=xs[-1])


def run(running: int, caching: bool, steps: int, warmup: int = 30, seed: int = 0) -> dict:
    from vllm.v1.core.sched.scheduler import Scheduler as VllmScheduler

    from halffull.vllm import Scheduler as Ours

    cfg = _config(running, caching)
    sides = {"vllm": Side(VllmScheduler, cfg, running, seed), "halffull": Side(Ours, cfg, running, seed)}
    _freeze_gc()
    for k in range(warmup + steps):
        for side in sides.values():
            side.step()
        if k == warmup - 1:
            for side in sides.values():
                side.times.clear()
    for side in sides.values():     # the same stream and decisions: the same requests ended
        assert side.next == sides["vllm"].next
    return {name: _stats(side.times) for name, side in sides.items()}


class _TimedCore:
    """The adapter's Rust core, with the time spent in its ``schedule`` and ``update`` recorded."""

    def __init__(self, core: Any) -> None:
        self._core = core
        self.schedule_s: list[float] = []
        self.update_s: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)

    def schedule(self, **kw: Any) -> Any:
        t = time.perf_counter()
        plan = self._core.schedule(**kw)
        self.schedule_s.append(time.perf_counter() - t)
        return plan

    def update(self, plan: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        ended = self._core.update(plan, **kw)
        self.update_s.append(time.perf_counter() - t)
        return ended


def profile(running: int = 256, caching: bool = True, steps: int = 300) -> None:
    """Where our time goes: the core's calls against the adapter's Python, per step, then
    cProfile's top functions (cProfile inflates Python time; the first table does not)."""
    import cProfile
    import pstats

    from halffull.vllm import Scheduler as Ours

    for cache in (False, True):
        side = Side(Ours, _config(running, cache), running, 0)
        _freeze_gc()
        for _ in range(30):
            side.step()
        timed = side.s.core = _TimedCore(side.s.core)
        side.times.clear()
        for _ in range(steps):
            side.step()
        step = statistics.median(side.times) * 1e6
        core_s = statistics.median(timed.schedule_s) * 1e6
        core_u = statistics.median(timed.update_s) * 1e6
        print(f"{running} running, caching {'on' if cache else 'off'}: step median {step:.0f} µs = core schedule "
              f"{core_s:.0f} + core update {core_u:.0f} + adapter Python {step - core_s - core_u:.0f} "
              f"({(step - core_s - core_u) * 1e3 / running:.0f} ns per running request)")
        side.s.core = timed._core
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        side.step()
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(18)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--running", type=int, nargs="*", default=[32, 128, 256])
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    harness.quiet_vllm()
    if args.profile:
        profile()
        return
    print(f"schedule()+update_from_output() per step, µs ({args.steps} steps x {args.rounds} rounds, interleaved)")
    print("| running | caching | vLLM median | p99 | max | halffull median | p99 | max | ratio (min-max over rounds) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for running in args.running:
        for caching in (False, True):
            rounds = [run(running, caching, args.steps, seed=r) for r in range(args.rounds)]
            ratios = [r["vllm"]["median"] / r["halffull"]["median"] for r in rounds]
            v = {k: statistics.median(r["vllm"][k] for r in rounds) for k in ("median", "p99", "max")}
            h = {k: statistics.median(r["halffull"][k] for r in rounds) for k in ("median", "p99", "max")}
            print(f"| {running} | {'on' if caching else 'off'} | {v['median']:.0f} | {v['p99']:.0f} | {v['max']:.0f} "
                  f"| {h['median']:.0f} | {h['p99']:.0f} | {h['max']:.0f} | {statistics.median(ratios):.1f}x "
                  f"({min(ratios):.1f}-{max(ratios):.1f}) |", flush=True)


def test_bench_smoke():
    """A few steps of both, as the bench runs them (checks that it still works)."""
    pytest.importorskip("vllm", reason="vLLM is not installed")
    harness.quiet_vllm()
    result = run(8, True, steps=5, warmup=5)
    assert set(result) == {"vllm", "halffull"}


if __name__ == "__main__":
    main()
