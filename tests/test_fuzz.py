"""Issue 11's fuzzing test: Hypothesis state machines that mix valid and invalid calls of
every public method of a ``Scheduler`` and of a ``Router`` (wrong types, extreme values,
stale and foreign plans, aborts in the middle of a step, early finishers that did not
sample, time going backwards ...) against a twin fed only the calls that succeeded.

After every call: a call that succeeded on the subject succeeds on the twin with the same
result (plans compared field by field); every failure is a ``HalffullError``; counters,
requests and free queues of the two are equal; invariants hold. A call that failed but
changed something would make the two drift apart, and the next comparison fails.

The ``ci`` profile (``HYPOTHESIS_PROFILE=ci``, ``make test-ci``) runs each machine for
several thousand examples; the default profile for a few dozen.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import halffull
from halffull.errors import HalffullError
from support import printable_junk as junk

CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"
MACHINE_SETTINGS = settings(max_examples=3000 if CI else 40, stateful_step_count=40, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

IDS = ["a", "b", "c", 1, 2, 3, "ω", -(2**63)]
some_id = st.one_of(st.sampled_from(IDS), st.sampled_from(IDS), junk)


def count_or_junk(lo: int, hi: int) -> st.SearchStrategy[Any]:
    return st.one_of(st.integers(lo, hi), st.integers(lo, hi), st.integers(lo, hi), junk)


def call(fn, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    """(True, result) or (False, the HalffullError); anything else escapes and fails."""
    try:
        return True, fn(*args, **kwargs)
    except HalffullError as e:
        return False, e


def plan_dict(plan: Any) -> dict[str, Any]:
    return plan.to_dict()


CONFIGS = [
    dict(num_gpu_blocks=12, block_size=4, num_cpu_blocks=6, max_num_seqs=3, max_num_batched_tokens=16,
         preemption_mode="swap", watermark=0.0),
    dict(num_gpu_blocks=10, block_size=2, max_num_seqs=4, max_num_batched_tokens=8, policy="larry",
         larry_alpha=5.0),
    dict(num_gpu_blocks=16, block_size=4, max_num_seqs=2, max_num_batched_tokens=12, policy="priority"),
    dict(num_gpu_blocks=20, block_size=4, max_num_seqs=3, max_num_batched_tokens=10, policy="no_preempt"),
    dict(num_gpu_blocks=9, block_size=4, max_num_seqs=3, max_num_batched_tokens=8, policy="sjf",
         semantics="vllm_v1", long_prefill_token_threshold=3),
    dict(num_gpu_blocks=12, block_size=3, max_num_seqs=4, max_num_batched_tokens=20, policy="oracle_srpt",
         max_model_len=20, semantics="vllm_v1", reserve_full_prompt=False),
]


class SchedulerFuzz(RuleBasedStateMachine):
    """One scheduler under fire, one twin that only sees what succeeded."""

    @initialize(cfg=st.sampled_from(CONFIGS))
    def build(self, cfg: dict[str, Any]) -> None:
        config = halffull.SchedulerConfig(**cfg)
        self.s = halffull.Scheduler(config)
        self.twin = halffull.Scheduler(config)
        self.foreign = halffull.Scheduler(config)
        self.plan = self.twin_plan = None
        self.stale: list[tuple[Any, Any]] = []           # (subject's, twin's) applied plans
        self.foreign_plan = self.foreign.schedule(now=0.0)
        self.t = 0.0

    def time(self, dt: float) -> float:
        return self.t + dt

    @rule(rid=some_id, prompt=count_or_junk(1, 40), out=count_or_junk(1, 12),
          arrival=st.one_of(st.none(), st.floats(0, 5), junk), priority=st.one_of(st.none(), st.integers(-3, 3), junk),
          predicted=st.one_of(st.none(), st.integers(0, 20), junk), true=st.one_of(st.none(), st.integers(1, 12), junk))
    def add_request(self, rid, prompt, out, arrival, priority, predicted, true) -> None:
        kw = dict(arrival_time=arrival, priority=priority, predicted_output_tokens=predicted,
                  true_output_tokens=true)
        ok, _ = call(self.s.add_request, rid, prompt, out, **kw)
        if ok:
            assert call(self.twin.add_request, rid, prompt, out, **kw)[0]

    @rule(rid=some_id)
    def abort(self, rid) -> None:                        # also in the middle of a step
        ok, _ = call(self.s.abort, rid)
        if ok:
            assert call(self.twin.abort, rid)[0]

    @rule(dt=st.one_of(st.floats(0, 1), st.just(-0.5), st.just(1e13)), junk_now=st.one_of(st.none(), junk))
    def schedule(self, dt: float, junk_now: Any) -> None:
        now = junk_now if junk_now is not None else self.time(dt)
        ok, plan = call(self.s.schedule, now=now)
        if ok:
            ok_twin, twin_plan = call(self.twin.schedule, now=now)
            assert ok_twin and plan_dict(plan) == plan_dict(twin_plan)
            self.plan, self.twin_plan = plan, twin_plan
            self.t = self.s.now

    @rule(which=st.sampled_from(["pending", "pending", "pending", "stale", "foreign", "junk"]),
          pick=st.lists(st.integers(0, 7), max_size=3), extra=st.one_of(st.none(), some_id),
          finished_junk=st.one_of(st.none(), junk), dt=st.one_of(st.floats(0, 1), st.just(-0.5)))
    def update(self, which, pick, extra, finished_junk, dt) -> None:
        if which == "pending" and self.plan is not None:
            plans = (self.plan, self.twin_plan)
        elif which == "stale" and self.stale:
            plans = self.stale[-1]
        elif which == "foreign":
            plans = (self.foreign_plan, self.foreign_plan)
        else:
            plans = (object(), object())
        if finished_junk is not None:
            finished: Any = finished_junk
        else:
            sampled = [r for r, f in zip(self.plan.req_ids, self.plan.samples, strict=True) if f] \
                if self.plan is not None else []
            finished = [sampled[k % len(sampled)] for k in pick] if sampled else []
            if extra is not None:
                finished.append(extra)                   # may be unknown or not sampled
        now = self.time(dt)
        ok, ended = call(self.s.update, plans[0], finished=finished, now=now)
        if ok:
            ok_twin, twin_ended = call(self.twin.update, plans[1], finished=finished, now=now)
            assert ok_twin and ended == twin_ended
            self.stale.append((self.plan, self.twin_plan))
            self.plan = self.twin_plan = None
            self.t = self.s.now

    @rule(rid=some_id)
    def request_info(self, rid) -> None:
        ok, info = call(self.s.request_info, rid)
        if ok:
            assert info == self.twin.request_info(rid)

    @precondition(lambda self: self.plan is None)
    @rule()
    def step(self) -> None:                              # a plain valid step, to make progress
        self.schedule(0.01, None)
        if self.plan is not None:
            self.update("pending", [], None, None, 0.0)

    @invariant()
    def same_as_the_twin(self) -> None:
        a, b = self.s, self.twin
        assert (a.num_waiting, a.num_running, a.num_swapped, len(a), a.num_free_gpu_blocks, a.num_free_cpu_blocks,
                a.now, a.num_steps, a.num_preemptions) == \
               (b.num_waiting, b.num_running, b.num_swapped, len(b), b.num_free_gpu_blocks, b.num_free_cpu_blocks,
                b.now, b.num_steps, b.num_preemptions)
        assert a.free_gpu_block_ids() == b.free_gpu_block_ids()
        for rid in IDS:
            (ok_a, info_a), (ok_b, info_b) = call(a.request_info, rid), call(b.request_info, rid)
            assert ok_a == ok_b and (info_a == info_b if ok_a else type(info_a) is type(info_b))
        a.check_invariants()

    def teardown(self) -> None:
        """Liveness: with no more arrivals, both drain to nothing, step for step."""
        if not hasattr(self, "s"):
            return
        if self.plan is not None:
            assert self.s.update(self.plan, now=self.t) == self.twin.update(self.twin_plan, now=self.t)
        for _ in range(5000):
            if not self.s.has_unfinished_requests():
                break
            self.t += 0.01
            pa, pb = self.s.schedule(now=self.t), self.twin.schedule(now=self.t)
            assert plan_dict(pa) == plan_dict(pb)
            assert self.s.update(pa, now=self.t) == self.twin.update(pb, now=self.t)
        assert not self.s.has_unfinished_requests() and not self.twin.has_unfinished_requests()


def router_view(r: Any) -> Any:
    """A router's whole state (the generator's included) where it pickles; else (the
    cache-aware policies) its loads and prefix records."""
    if r.policy in PREFIX_ROUTERS:
        return repr(r.replica_loads()), [r.record_hashes(i) for i in range(r.num_replicas)]
    return r.__reduce__()[1]


#: Routers whose prefix records are not part of their pickled state (they refuse to pickle).
PREFIX_ROUTERS = ("cache_aware", "dynamo_kv", "sal_uncached")


class RouterFuzz(RuleBasedStateMachine):
    """One router under fire, one twin that only sees what succeeded (same seed)."""

    @initialize(policy=st.sampled_from(halffull.ROUTERS), n=st.integers(1, 4), seed=st.integers(0, 2**64 - 1))
    def build(self, policy: str, n: int, seed: int) -> None:
        kw = dict(seed=seed, num_gpu_blocks=[32 * (k + 1) for k in range(n)], block_size=4, prior_output_tokens=7)
        self.r, self.twin = halffull.Router(policy, n, **kw), halffull.Router(policy, n, **kw)

    def both(self, name: str, *args: Any, **kwargs: Any) -> None:
        ok, result = call(getattr(self.r, name), *args, **kwargs)
        if ok:
            ok_twin, twin_result = call(getattr(self.twin, name), *args, **kwargs)
            assert ok_twin, twin_result
            assert repr(result) == repr(twin_result)

    @rule(rid=some_id, prompt=count_or_junk(1, 200), out=st.one_of(st.none(), count_or_junk(1, 40)),
          pred=st.one_of(st.none(), count_or_junk(0, 40)))
    def route(self, rid, prompt, out, pred) -> None:
        self.both("route", rid, prompt, out, pred)

    @rule(ids=st.one_of(st.lists(some_id, max_size=4), junk),
          prompts=st.one_of(st.lists(st.integers(1, 50), max_size=4), junk))
    def route_many(self, ids, prompts) -> None:
        self.both("route_many", ids, prompts)

    @rule(rid=some_id, out=count_or_junk(0, 40))
    def on_progress(self, rid, out) -> None:
        self.both("on_progress", rid, out)

    @rule(rid=some_id, out=count_or_junk(0, 40))
    def on_finish(self, rid, out) -> None:
        self.both("on_finish", rid, out)

    @rule(rid=some_id)
    def on_abort(self, rid) -> None:
        self.both("on_abort", rid)

    @rule(index=count_or_junk(0, 4), waiting=st.one_of(st.none(), count_or_junk(0, 9)),
          free=st.one_of(st.none(), count_or_junk(0, 200)))
    def update_replica(self, index, waiting, free) -> None:
        self.both("update_replica", index, waiting=waiting, free_blocks=free)

    @rule(index=count_or_junk(0, 4), rid=some_id)
    def reads(self, index, rid) -> None:
        self.both("replica", index)
        self.both("replica_of", rid)

    @invariant()
    def same_as_the_twin(self) -> None:
        a, b = self.r, self.twin
        assert router_view(a) == router_view(b)
        assert (len(a), a.beta, a.mean_output_tokens, a.num_finished) == (len(b), b.beta, b.mean_output_tokens,
                                                                          b.num_finished)
        a.check_invariants()


TestSchedulerFuzz = SchedulerFuzz.TestCase
TestSchedulerFuzz.settings = MACHINE_SETTINGS
TestRouterFuzz = RouterFuzz.TestCase
TestRouterFuzz.settings = MACHINE_SETTINGS
