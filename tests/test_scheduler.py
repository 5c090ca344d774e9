"""Targeted scenarios per policy, run on the Rust core and the reference alike, and the
liveness property: every finite workload drains."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given

import halffull
from support import IMPLS, make_config, run_to_completion


def step(s, now=None, finished=()):
    plan = s.schedule(now=now)
    s.update(plan, finished=finished, now=now)
    s.check_invariants()
    return plan


def test_fcfs_preempts_the_most_recently_admitted(Sched):
    s = Sched(make_config(num_gpu_blocks=6, policy="fcfs"))
    for rid in "abc":
        s.add_request(rid, prompt_tokens=8, max_output_tokens=10, arrival_time=0.0)
    plan = step(s, 0.0)
    assert plan.admitted == ["a", "b", "c"] and s.num_free_gpu_blocks == 0
    plan = step(s, 0.1)                     # a's first decode token needs a new block
    assert plan.preempted == [("c", "recompute")]
    assert list(plan.req_ids) == ["a", "b"]
    assert s.request_info("c")["status"] == "waiting"


def test_priority_preempts_the_worst_priority(Sched):
    s = Sched(make_config(num_gpu_blocks=6, policy="priority"))
    s.add_request("worst", prompt_tokens=7, max_output_tokens=10, arrival_time=0.0, priority=5)
    step(s, 0.0)                            # 7 prompt tokens + 1 sampled fit its 2 blocks
    s.add_request("a", prompt_tokens=8, max_output_tokens=10, arrival_time=0.1, priority=0)
    s.add_request("c", prompt_tokens=8, max_output_tokens=10, arrival_time=0.1, priority=1)
    plan = step(s, 0.1)
    assert plan.admitted == ["a", "c"]      # running order: worst, a, c
    plan = step(s, 0.2)
    assert plan.preempted == [("worst", "recompute")]   # fcfs would have taken "c"


def test_no_preempt_never_preempts_and_never_over_reserves(Sched):
    cfg = make_config(num_gpu_blocks=8, block_size=4, policy="no_preempt", max_num_seqs=8)
    s = Sched(cfg)
    for i in range(12):
        s.add_request(i, prompt_tokens=4, max_output_tokens=12, arrival_time=0.0)
    plan = step(s, 0.0)
    # Each reserves ceil(16/4) = 4 blocks: only two fit, though each prompt needs one block.
    assert plan.admitted == [0, 1]
    plans = run_to_completion(s)
    assert s.num_preemptions == 0
    assert all(not p.preempted for p in plans)


def test_no_preempt_rejects_what_could_never_be_reserved(Sched):
    s = Sched(make_config(num_gpu_blocks=4, block_size=4, policy="no_preempt"))
    try:
        s.add_request("x", prompt_tokens=4, max_output_tokens=13)
    except halffull.RequestTooLargeError as e:
        assert (e.need_blocks, e.capacity_blocks) == (5, 4)
    else:
        raise AssertionError("expected RequestTooLargeError")
    assert s.num_waiting == 0


def _admission_step_of(Sched, aging: float) -> int | None:
    s = Sched(make_config(num_gpu_blocks=64, policy="sjf", sjf_aging=aging, max_num_seqs=1))
    s.add_request("long", prompt_tokens=2, max_output_tokens=100, arrival_time=0.0, predicted_output_tokens=100)
    for t in range(40):
        s.add_request(f"short{t}", prompt_tokens=2, max_output_tokens=1, arrival_time=float(t),
                      predicted_output_tokens=1)
        plan = step(s, float(t))
        if "long" in plan.admitted:
            return t
    return None


def test_sjf_ages_so_a_long_request_is_served(Sched):
    # A short request arrives every second. Without aging the long one waits for the stream
    # to end; with aging 10 tokens/s its 100 predicted tokens are outweighed after ~10 s.
    assert _admission_step_of(Sched, aging=0.0) is None
    t = _admission_step_of(Sched, aging=10.0)
    assert t is not None and 9 <= t <= 12


def test_larry_is_fcfs_with_one_waiting_request(Sched):
    def plans(policy):
        s = Sched(make_config(num_gpu_blocks=64, policy=policy, max_num_seqs=16, larry_alpha=1.0))
        out = []
        for t in range(30):
            s.add_request(t, prompt_tokens=1 + (t * 7) % 13, max_output_tokens=1 + t % 4, arrival_time=float(t))
            out.append(step(s, float(t)).to_dict())
        return out
    assert plans("larry") == plans("fcfs")


def test_larry_admits_small_prompts_first_when_the_queue_is_long(Sched):
    prompts = [30, 25, 20, 3, 15, 2, 10, 1, 5, 8]
    order = {}
    for policy in ("fcfs", "larry"):
        s = Sched(make_config(num_gpu_blocks=64, policy=policy, max_num_seqs=1, larry_alpha=1.0))
        for i, p in enumerate(prompts):
            s.add_request(i, prompt_tokens=p, max_output_tokens=1, arrival_time=0.01 * i)
        admitted = []
        while s.has_unfinished_requests():
            admitted += step(s, 1.0).admitted
        order[policy] = admitted
    assert order["fcfs"] == list(range(10))
    assert [prompts[i] for i in order["larry"][:4]] == [1, 2, 3, 5]


def test_larry_waiting_time_bounds_starvation(Sched):
    # With alpha large, a big old request beats small new ones once it has waited enough.
    s = Sched(make_config(num_gpu_blocks=64, policy="larry", max_num_seqs=1, larry_alpha=100.0))
    s.add_request("big", prompt_tokens=40, max_output_tokens=1, arrival_time=0.0)
    admitted_at = None
    for t in range(1, 60):
        s.add_request(f"s{t}", prompt_tokens=1, max_output_tokens=1, arrival_time=float(t))
        if "big" in step(s, float(t)).admitted:
            admitted_at = t
            break
    assert admitted_at is not None


def _big_then_stream(s, steps=60):
    """A 40-token request at t=0, then one 1-token request per step: with one seat and one
    output token each, a step admits one request. Returns (step admitting "big" or None,
    [(tokens admitted since big joined, tokens waiting) before each step])."""
    s.add_request("big", prompt_tokens=40, max_output_tokens=1, arrival_time=0.0)
    left, waiting, seen = 0, 40, []
    for t in range(1, steps):
        s.add_request(f"s{t}", prompt_tokens=1, max_output_tokens=1, arrival_time=float(t))
        waiting += 1
        seen.append((left, waiting))
        admitted = step(s, float(t)).admitted
        if "big" in admitted:
            return t, seen
        left += len(admitted)
        waiting -= len(admitted)
    return None, seen


def _cfg(policy, **kw):
    return make_config(num_gpu_blocks=64, policy=policy, max_num_seqs=1, larry_alpha=0.0, **kw)


def test_larry_without_aging_starves_a_large_request(Sched):
    # alpha = 0: shortest prompt first, whatever the wait; the stream never lets "big" in.
    assert _big_then_stream(Sched(_cfg("larry")))[0] is None


def test_larry_tail_admits_a_starving_request_at_its_deadline(Sched):
    for deadline in (5.0, 17.0):
        at, _ = _big_then_stream(Sched(_cfg("larry_tail", larry_deadline=deadline)))
        assert at == deadline                       # the first step with now - arrival >= deadline
    # Before its deadline it yields to the small ones, as LARRY does.
    assert _big_then_stream(Sched(_cfg("larry_tail", larry_deadline=1e6)))[0] is None


def test_larry_slack_admits_a_starving_request_once_the_backlog_has_passed_it(Sched):
    for slack in (0.5, 1.0, 1.5):
        at, seen = _big_then_stream(Sched(_cfg("larry_slack", larry_slack=slack)), steps=120)
        # The bound: admitted at the first step where the tokens admitted since it joined
        # reach slack x the tokens waiting, and not before.
        assert at is not None
        left, waiting = seen[-1]
        assert left >= slack * waiting
        assert all(lf < slack * w for lf, w in seen[:-1])
        # Here the backlog stays at big + one small: 41 tokens, so big waits ~slack x 41 steps.
        assert waiting == 41 and at <= slack * 41 + 2
    # slack 0 is FCFS: big goes first.
    assert _big_then_stream(Sched(_cfg("larry_slack", larry_slack=0.0)))[0] == 1


def test_larry_slack_puts_a_preempted_request_back_at_the_head(Sched):
    # Three 8-token requests fill 6 blocks; the first decode preempts c (recompute). c rejoins
    # with the due order's first stamp, so it is admitted again before the later d and e.
    s = Sched(make_config(num_gpu_blocks=6, policy="larry_slack", larry_slack=0.0, larry_alpha=0.0))
    for rid in "abc":
        s.add_request(rid, prompt_tokens=8, max_output_tokens=3, arrival_time=0.0)
    step(s, 0.0)
    plan = step(s, 0.1)
    assert plan.preempted == [("c", "recompute")]
    s.add_request("d", prompt_tokens=2, max_output_tokens=1, arrival_time=0.2)
    s.add_request("e", prompt_tokens=2, max_output_tokens=1, arrival_time=0.2)
    admitted = []
    for p in run_to_completion(s, dt=0.1):
        admitted += p.admitted
    assert admitted[0] == "c"


def test_swap_out_then_in_returns_the_blocks_and_resumes(Sched):
    s = Sched(make_config(num_gpu_blocks=6, num_cpu_blocks=6, preemption_mode="swap"))
    for rid in "abc":
        s.add_request(rid, prompt_tokens=8, max_output_tokens=6, arrival_time=0.0)
    step(s, 0.0)
    held = len(s.request_info("c")["block_table"])
    computed = s.request_info("c")["num_computed_tokens"]
    plan = step(s, 0.1)
    assert plan.preempted == [("c", "swap")]
    (rid, out_map), = plan.swapped_out
    assert rid == "c" and out_map.shape == (held, 2)
    info = s.request_info("c")
    assert info["status"] == "swapped" and info["num_cpu_blocks"] == held
    assert info["num_computed_tokens"] == computed
    t = 0.2
    while True:
        plan = s.schedule(now=t)
        swapped_in = dict(plan.swapped_in)
        if "c" in swapped_in:
            break
        s.update(plan, now=t)
        t += 0.1
    in_map = swapped_in["c"]
    assert in_map.shape[0] == held
    assert sorted(in_map[:, 0].tolist()) == sorted(out_map[:, 1].tolist())   # the same CPU blocks come back
    i = list(plan.req_ids).index("c")
    assert plan.num_computed_tokens[i] == computed and plan.num_new_tokens[i] == 1
    s.update(plan, now=t)
    s.check_invariants()


def test_recompute_folds_generated_tokens_into_the_prefill(Sched):
    s = Sched(make_config(num_gpu_blocks=6, max_num_batched_tokens=64, preemption_mode="recompute"))
    for rid in "abc":
        s.add_request(rid, prompt_tokens=8, max_output_tokens=6, arrival_time=0.0)
    step(s, 0.0)                                   # prefill: each samples its first token
    plan = step(s, 0.1)
    assert plan.preempted == [("c", "recompute")]
    generated = s.request_info("c")["num_output_tokens"]
    assert generated == 1
    t = 0.2
    while True:
        plan = s.schedule(now=t)
        if "c" in plan.admitted:
            break
        s.update(plan, now=t)
        t += 0.1
    i = list(plan.req_ids).index("c")
    assert plan.num_computed_tokens[i] == 0
    assert plan.num_new_tokens[i] == 8 + generated       # prompt + generated, recomputed
    assert plan.is_prefill[i] and plan.samples[i]
    s.update(plan, now=t)
    assert s.request_info("c")["num_output_tokens"] == generated + 1


def test_chunked_prefill_respects_the_token_budget(Sched):
    s = Sched(make_config(num_gpu_blocks=64, max_num_batched_tokens=5))
    s.add_request("a", prompt_tokens=12, max_output_tokens=2, arrival_time=0.0)
    chunks = []
    while True:
        plan = step(s, 0.0)
        chunks.append((int(plan.num_computed_tokens[0]), int(plan.num_new_tokens[0]), bool(plan.samples[0])))
        if plan.samples[0]:
            break
    assert chunks == [(0, 5, False), (5, 5, False), (10, 2, True)]


def test_finished_on_eos_frees_blocks_and_is_reported(Sched):
    s = Sched(make_config())
    s.add_request("a", prompt_tokens=5, max_output_tokens=50)
    plan = s.schedule(now=0.0)
    assert s.update(plan, finished=["a"], now=0.01) == ["a"]
    assert s.num_free_gpu_blocks == 8 and not s.has_unfinished_requests()
    assert s.schedule(now=0.02).finished == ["a"]


workloads = st.lists(
    st.tuples(st.integers(1, 30), st.integers(1, 10), st.floats(0, 2), st.integers(0, 3), st.integers(0, 10)),
    min_size=1, max_size=25,
)


@given(
    impl=st.sampled_from(sorted(IMPLS)),
    policy=st.sampled_from(halffull.POLICIES),
    mode=st.sampled_from(["recompute", "swap"]),
    blocks=st.integers(1, 10),
    block_size=st.integers(1, 4),
    seats=st.integers(1, 4),
    budget=st.integers(1, 16),
    watermark=st.sampled_from([0.0, 0.2]),
    work=workloads,
    eos=st.integers(0, 2**32),
    larry=st.sampled_from([(0.0, 0.0, 0.0), (1.0, 0.5, 0.75), (1000.0, 1e9, 1e9)]),
)
def test_every_finite_workload_drains(impl, policy, mode, blocks, block_size, seats, budget, watermark, work, eos,
                                      larry):
    alpha, deadline, slack = larry                 # LARRY and its tail-safe variants, from FCFS-like to pure LARRY
    cfg = halffull.SchedulerConfig(num_gpu_blocks=blocks, block_size=block_size, num_cpu_blocks=blocks // 2,
                                   max_num_seqs=seats, max_num_batched_tokens=budget, policy=policy,
                                   preemption_mode=mode, watermark=watermark, larry_alpha=alpha,
                                   larry_deadline=deadline, larry_slack=slack)
    s = IMPLS[impl](cfg)
    added, rejected = set(), set()
    for i, (prompt, out, arrival, prio, pred) in enumerate(work):
        try:
            s.add_request(i, prompt_tokens=prompt, max_output_tokens=out, arrival_time=arrival,
                          priority=prio, predicted_output_tokens=pred)
            added.add(i)
        except halffull.RequestTooLargeError:
            rejected.add(i)
    finished: list = []
    plans = run_to_completion(
        s, max_steps=20_000,
        finish=lambda p: [
            r for r, smp in zip(p.req_ids, p.samples, strict=True) if smp and hash((r, p.step, eos)) % 7 == 0
        ],
    )
    for p in plans[1:]:
        finished += p.finished
    finished += s.schedule(now=s.now + 1).finished
    assert sorted(finished) == sorted(added)            # every added request finished, once
    assert added | rejected == set(range(len(work)))
    assert s.num_free_gpu_blocks == blocks and s.num_free_cpu_blocks == blocks // 2
