"""The Rust scheduler against the plain-Python reference: same operations, same plans.

A Hypothesis state machine adds requests (random sizes, priorities, predictions, str and int
ids, reused ids), schedules, updates with random early finishes, and aborts, on tiny configs
for every policy, both semantics ("halffull" with both preemption modes; "vllm_v1" with
reserve_full_prompt both ways, prefix caching off and on) and sometimes a max_model_len and a
long-prefill threshold, comparing plans (block ids and cache hits included), return values,
errors, counters and every live request's block table after every operation and checking both
schedulers' invariants (reference counts and the cache map included).

With prefix caching, prompts are drawn from two shared prefixes over a four-token vocabulary,
given as token ids or as precomputed block hashes, so hits, shared blocks and evictions are
common; ``reset_prefix_cache`` and ``prefix_hit_blocks`` are compared too.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import halffull
from halffull import reference


def configs(policy: str, semantics: str = "halffull", caching: bool = False):
    v1 = semantics == "vllm_v1"
    return st.builds(
        halffull.SchedulerConfig,
        num_gpu_blocks=st.integers(1, 24 if caching else 12),   # caching: room for blocks to stay cached
        block_size=st.sampled_from([1, 2, 3, 4]),
        num_cpu_blocks=st.just(0) if v1 else st.integers(0, 10),
        max_num_seqs=st.integers(1, 5),
        max_num_batched_tokens=st.integers(1, 24),
        policy=st.just(policy),
        preemption_mode=st.just("recompute") if v1 else st.sampled_from(["recompute", "swap"]),
        watermark=st.sampled_from([None, 0.0, 0.1, 0.25]) if v1 else st.sampled_from([0.0, 0.1, 0.25]),
        larry_alpha=st.sampled_from([0.0, 1.0, 10.0, 1000.0]),
        larry_load=st.sampled_from(["waiting", "outstanding"]),
        sjf_aging=st.sampled_from([0.0, 1.0, 100.0]),
        semantics=st.just(semantics),
        max_model_len=st.none() | st.integers(1, 48),
        long_prefill_token_threshold=st.sampled_from([0, 0, 1, 3, 8]),
        reserve_full_prompt=st.booleans(),
        enable_prefix_caching=st.just(caching),
        larry_deadline=st.sampled_from([0.0, 0.5, 1.0, 3.0, 1e9]),
        larry_slack=st.sampled_from([0.0, 0.5, 1.0, 2.0, 1e9]),
    )


def outcome(fn, *args, **kwargs):
    """(result, None) or (None, exception type)."""
    try:
        return fn(*args, **kwargs), None
    except halffull.HalffullError as e:
        return None, type(e)


class ParityMachine(RuleBasedStateMachine):
    policy = "fcfs"
    semantics = "halffull"
    caching = False

    def __init__(self) -> None:
        super().__init__()
        self.rust = self.ref = None
        self.t = 0.0
        self.next_id = 0
        self.ended: list = []

    @initialize(data=st.data())
    def setup(self, data):
        cfg = data.draw(configs(self.policy, self.semantics, self.caching), label="config")
        self.rust = halffull.Scheduler(cfg)
        self.ref = reference.Scheduler(cfg)
        self.block_size = cfg.block_size
        # two prefixes over a tiny vocabulary: shared blocks are common
        self.prefixes = [data.draw(st.lists(st.integers(0, 3), min_size=40, max_size=40), label=f"prefix {k}")
                         for k in range(2)]

    def both(self, method, *args, **kwargs):
        a = outcome(getattr(self.rust, method), *args, **kwargs)
        b = outcome(getattr(self.ref, method), *args, **kwargs)
        assert a[1] == b[1], f"{method}: rust raised {a[1]}, reference raised {b[1]}"
        return a, b

    @rule(
        prompt=st.integers(1, 40) | st.integers(1, 10),   # half of them short: they fit the tiny caches
        max_out=st.integers(1, 12),
        back=st.sampled_from([0.0, 0.0, 0.3, 2.0]),
        priority=st.integers(-2, 2),
        pred=st.none() | st.integers(0, 12),
        true=st.none() | st.integers(1, 12),
        as_str=st.booleans(),
        reuse=st.booleans(),
        content=st.sampled_from(["none", "ids", "ids", "hashes"]),
        prefix=st.integers(0, 1),
        shared=st.sampled_from([0, 4, 8, 12, 40, 40]),
        tail=st.lists(st.integers(0, 3), max_size=6),
    )
    def add(self, prompt, max_out, back, priority, pred, true, as_str, reuse, content, prefix, shared, tail):
        if reuse and self.ended:
            rid = self.ended.pop(0)
        else:
            rid = f"r{self.next_id}" if as_str else self.next_id
            self.next_id += 1
        kwargs = dict(prompt_tokens=prompt, max_output_tokens=max_out, arrival_time=max(0.0, self.t - back),
                      priority=priority, predicted_output_tokens=pred, true_output_tokens=true)
        tokens = (self.prefixes[prefix][:shared] + tail + [0] * prompt)[:prompt]
        if content == "ids":
            kwargs["prompt_token_ids"] = tokens
        elif content == "hashes":
            # precomputed hashes of the shared part only; the rest of the prompt is the request's own
            bs = self.block_size
            kwargs["block_hashes"] = [prefix * 1000 + j for j in range(min(shared, prompt) // bs)]
        self.both("add_request", rid, **kwargs)

    @precondition(lambda self: self.ref is not None and len(self.ref.requests) > 0)
    @rule(data=st.data())
    def abort(self, data):
        rid = data.draw(st.sampled_from(sorted(self.ref.requests, key=repr)), label="abort")
        self.both("abort", rid)
        self.ended.append(rid)

    @precondition(lambda self: self.ref is not None and len(self.ref.requests) > 0)
    @rule(data=st.data(), late=st.booleans(), extra=st.integers(0, 1), prefix=st.integers(0, 1))
    def extend_block_hashes(self, data, late, extra, prefix):
        # name generated blocks as an engine would (vLLM's Request.block_hashes): some continue
        # a shared prefix's hashes, so other requests can hit them; a wrong start or one block
        # too many must fail the same way in both
        rid = data.draw(st.sampled_from(sorted(self.ref.requests, key=repr)), label="extend")
        req = self.ref.requests[rid]
        held, full = len(req.block_hashes), req.num_tokens // self.block_size
        n = data.draw(st.integers(0, max(full - held, 0) + extra), label="n")
        start = held + 1 if late and data.draw(st.booleans(), label="wrong start") else held
        self.both("extend_block_hashes", rid, [prefix * 1000 + held + j for j in range(n)], start=start)

    @rule()
    def reset_prefix_cache(self):
        (a, _), (b, _) = self.both("reset_prefix_cache")
        assert a == b

    @rule(prefix=st.integers(0, 1), n=st.integers(0, 12))
    def prefix_hit_blocks(self, prefix, n):
        (a, _), (b, _) = self.both("prefix_hit_blocks", [prefix * 1000 + j for j in range(n)])
        assert a == b

    @rule(dt=st.sampled_from([0.0, 0.01, 0.5, 3.0]), data=st.data())
    def step(self, dt, data):
        self.t += dt
        (pa, _), (pb, _) = self.both("schedule", now=self.t)
        da, db = pa.to_dict(), pb.to_dict()
        assert da == db, f"plans differ\nrust: {da}\nref:  {db}"
        sampled = [r for r, s in zip(db["req_ids"], db["samples"], strict=True) if s]
        early = data.draw(st.lists(st.sampled_from(sampled), unique=True) if sampled else st.just([]),
                          label="finished")
        if sampled and data.draw(st.booleans(), label="abort mid-step"):
            victim = data.draw(st.sampled_from(sampled), label="aborted")
            self.both("abort", victim)
        ra, rb = self.rust.update(pa, finished=early, now=self.t), self.ref.update(pb, finished=early, now=self.t)
        assert ra == rb
        self.ended.extend(rb)
        # A second update with the same plan is stale for both; a plan of the other is too.
        for s, plan in ((self.rust, pa), (self.ref, pb), (self.rust, pb), (self.ref, pa)):
            with pytest.raises(halffull.StalePlanError):
                s.update(plan, now=self.t)

    @invariant()
    def same_state(self):
        if self.ref is None:
            return
        self.rust.check_invariants()
        self.ref.check_invariants()
        for name in ("num_waiting", "num_running", "num_swapped", "num_free_gpu_blocks",
                     "num_free_cpu_blocks", "num_preemptions", "num_steps"):
            assert getattr(self.rust, name) == getattr(self.ref, name), name
        assert len(self.rust) == len(self.ref)
        assert self.rust.free_gpu_block_ids() == self.ref.free_gpu_block_ids()
        assert self.rust.prefix_cache_stats() == self.ref.prefix_cache_stats()
        for rid in self.ref.requests:
            assert self.rust.request_info(rid) == self.ref.request_info(rid), rid


def _machine_for(policy: str, semantics: str = "halffull", caching: bool = False):
    machine = type(f"Parity_{policy}_{semantics}{'_cached' if caching else ''}", (ParityMachine,),
                   {"policy": policy, "semantics": semantics, "caching": caching})
    return machine.TestCase


@pytest.mark.parametrize("semantics", ["halffull", "vllm_v1", "vllm_v1+prefix_caching"])
@pytest.mark.parametrize("policy", halffull.POLICIES)
def test_rust_matches_reference(policy, semantics):
    semantics, _, caching = semantics.partition("+")
    case = _machine_for(policy, semantics, bool(caching))
    # the profile's examples for halffull (the CI profile: 1,000 per policy); a third of them
    # for each vllm_v1 variant, whose rules tests/test_vllm_parity.py also checks against vLLM
    examples = settings().max_examples
    if semantics != "halffull":
        examples = max(20, examples // 3)
    case.settings = settings(case.settings, stateful_step_count=40, max_examples=examples)
    case("runTest").runTest()


def test_registries_agree():
    assert tuple(halffull.POLICIES) == tuple(reference.POLICIES)


# ---------------------------------------------------------------------------- vllm_v1 by hand
# A few of vLLM V1's rules as literals (checked against vLLM 0.33 by hand), for both implementations (``Sched``); the
# vLLM parity test (tests/test_vllm_parity.py) checks them all against vLLM itself.


def _v1(**overrides) -> halffull.SchedulerConfig:
    base = dict(semantics="vllm_v1", num_gpu_blocks=6, block_size=4, num_cpu_blocks=0, max_num_seqs=4,
                max_num_batched_tokens=32)
    base.update(overrides)
    return halffull.SchedulerConfig(**base)


def _step(s, finished=()):
    plan = s.schedule(now=s.now)
    s.update(plan, finished=finished, now=s.now)
    s.check_invariants()
    return plan


def test_v1_null_block_and_lifo_free_queue(Sched):
    s = Sched(_v1())
    assert s.num_free_gpu_blocks == 5 and s.free_gpu_block_ids() == [1, 2, 3, 4, 5]
    s.add_request("a", prompt_tokens=8, max_output_tokens=1)
    assert _step(s).new_blocks == [("a", [1, 2])]
    # a's table [1, 2] is freed last block first, onto the head
    assert s.free_gpu_block_ids() == [2, 1, 3, 4, 5]
    s.add_request("b", prompt_tokens=12, max_output_tokens=1)
    assert _step(s).new_blocks == [("b", [2, 1, 3])]


@pytest.mark.parametrize("reserve", [True, False])
def test_v1_reserve_full_prompt(Sched, reserve):
    # 5 usable blocks; a takes two; b's prompt needs 4 blocks, its first chunk (4 tokens) one
    s = Sched(_v1(num_gpu_blocks=6, max_num_batched_tokens=12, reserve_full_prompt=reserve))
    s.add_request("a", prompt_tokens=8, max_output_tokens=20)
    s.add_request("b", prompt_tokens=16, max_output_tokens=2)
    plan = _step(s)
    assert plan.admitted == (["a", "b"] if not reserve else ["a"])
    assert list(plan.num_new_tokens) == ([8, 4] if not reserve else [8])
    if not reserve:
        assert s.request_info("b")["block_table"] == [3]       # only its chunk's block


def test_v1_priority_unschedules_an_already_scheduled_victim(Sched):
    # vLLM's priority victim: B (worst priority) is scheduled first in the step where A needs
    # a block and none is free; B is un-scheduled and preempted, A gets B's last block.
    s = Sched(_v1(num_gpu_blocks=6, block_size=16, max_num_batched_tokens=256, policy="priority"))
    s.add_request("B", prompt_tokens=33, max_output_tokens=30, priority=3, arrival_time=0.0)
    assert _step(s).new_blocks == [("B", [1, 2, 3])]
    s.add_request("A", prompt_tokens=24, max_output_tokens=12, priority=0, arrival_time=1.0)
    assert _step(s).new_blocks == [("A", [4, 5])]
    for _ in range(20):
        plan = _step(s)
        if plan.preempted:
            break
    assert plan.preempted == [("B", "recompute")]
    assert list(plan.req_ids) == ["A"] and plan.new_blocks == [("A", [3])]


def test_block_hashes_take_numpy_ints_and_bytes_and_refuse_the_rest(Sched):
    import numpy as np

    s = Sched(_v1(num_gpu_blocks=16, enable_prefix_caching=True))
    s.add_request("a", prompt_tokens=9, max_output_tokens=1, block_hashes=np.array([7, 8], dtype=np.uint64))
    s.add_request("b", prompt_tokens=9, max_output_tokens=1, block_hashes=[np.int64(7), b"x"])
    plan = _step(s)
    assert list(plan.num_cached_tokens) == [0, 4]          # b shares a's first block
    for bad in ([True], [1.0], [-1], [2**128], ["7"], "78", [np.bool_(True)]):
        with pytest.raises(halffull.InvalidArgumentError) as info:
            s.add_request("c", prompt_tokens=9, max_output_tokens=1, block_hashes=bad)
        assert info.value.field == "block_hashes"
    assert s.num_waiting == 0 and len(s) == 0
