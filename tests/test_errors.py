"""Bad input gets a clear, typed error, and the scheduler is left exactly as it was.

"As it was" is checked by running a twin scheduler that never saw the bad call through the
same steps and comparing every plan."""

from __future__ import annotations

import math

import pytest

import halffull
from support import make_config


def fresh_pair(Sched, **cfg):
    a, b = Sched(make_config(**cfg)), Sched(make_config(**cfg))
    for s in (a, b):
        s.add_request("a", prompt_tokens=9, max_output_tokens=4, arrival_time=0.0)
        s.add_request("b", prompt_tokens=5, max_output_tokens=3, arrival_time=0.0)
    return a, b


def assert_same_future(a, b, steps=12):
    t = max(a.now, b.now)
    for _ in range(steps):
        pa, pb = a.schedule(now=t), b.schedule(now=t)
        assert pa.to_dict() | {"step": 0} == pb.to_dict() | {"step": 0}
        assert a.update(pa, now=t) == b.update(pb, now=t)
        a.check_invariants()
        t += 0.01


BAD_ADDS = [
    (dict(request_id="a", prompt_tokens=3, max_output_tokens=2), halffull.DuplicateRequestError),
    (dict(request_id="x", prompt_tokens=-1, max_output_tokens=2), halffull.InvalidArgumentError),
    (dict(request_id="x", prompt_tokens=0, max_output_tokens=2), halffull.InvalidArgumentError),
    (dict(request_id="x", prompt_tokens=3, max_output_tokens=0), halffull.InvalidArgumentError),
    (dict(request_id="x", prompt_tokens=3.5, max_output_tokens=2), halffull.InvalidArgumentError),
    (dict(request_id="x", prompt_tokens=True, max_output_tokens=2), halffull.InvalidArgumentError),
    (dict(request_id="x", prompt_tokens=2**60, max_output_tokens=2), halffull.InvalidArgumentError),
    (dict(request_id="x", prompt_tokens=3, max_output_tokens=2, arrival_time=math.nan), halffull.InvalidArgumentError),
    (dict(request_id="x", prompt_tokens=3, max_output_tokens=2, arrival_time=math.inf), halffull.InvalidArgumentError),
    (dict(request_id="x", prompt_tokens=3, max_output_tokens=2, arrival_time=-1.0), halffull.InvalidArgumentError),
    (
        dict(request_id="x", prompt_tokens=3, max_output_tokens=2, predicted_output_tokens=-3),
        halffull.InvalidArgumentError,
    ),
    (dict(request_id="x", prompt_tokens=3, max_output_tokens=2, true_output_tokens=0), halffull.InvalidArgumentError),
    (dict(request_id="x", prompt_tokens=3, max_output_tokens=2, priority=1.5), halffull.InvalidArgumentError),
    (dict(request_id=1.5, prompt_tokens=3, max_output_tokens=2), halffull.InvalidArgumentError),
    (dict(request_id=None, prompt_tokens=3, max_output_tokens=2), halffull.InvalidArgumentError),
    (dict(request_id=2**64, prompt_tokens=3, max_output_tokens=2), halffull.InvalidArgumentError),
    (dict(request_id="x", prompt_tokens=32, max_output_tokens=2), halffull.RequestTooLargeError),
]


@pytest.mark.parametrize("kwargs, error", BAD_ADDS, ids=[f"{e.__name__}-{i}" for i, (_, e) in enumerate(BAD_ADDS)])
def test_bad_add_request_is_rejected_and_changes_nothing(Sched, kwargs, error):
    a, b = fresh_pair(Sched)
    with pytest.raises(error) as info:
        a.add_request(**kwargs)
    assert isinstance(info.value, halffull.HalffullError)
    assert_same_future(a, b)


def test_too_large_prompt_says_capacity_and_need(Sched):
    s = Sched(make_config(num_gpu_blocks=8, block_size=4))
    with pytest.raises(halffull.RequestTooLargeError) as info:
        s.add_request("huge", prompt_tokens=40, max_output_tokens=1)
    e = info.value
    assert (e.need_blocks, e.capacity_blocks, e.request_id) == (11, 8, "huge")
    assert "11 blocks" in str(e) and "8" in str(e)
    assert isinstance(e, ValueError)
    assert s.num_waiting == 0


def test_unknown_ids_in_abort_and_update(Sched):
    a, b = fresh_pair(Sched)
    with pytest.raises(halffull.UnknownRequestError) as info:
        a.abort("nope")
    assert info.value.request_id == "nope" and isinstance(info.value, KeyError)
    plan = a.schedule(now=0.0)
    with pytest.raises(halffull.UnknownRequestError):
        a.update(plan, finished=["nope"], now=0.0)
    with pytest.raises(halffull.InvalidArgumentError):
        a.update(plan, finished="a", now=0.0)          # a bare id, not a list
    with pytest.raises(halffull.InvalidArgumentError):
        a.update(plan, finished=[["a"]], now=0.0)
    a.update(plan, now=0.0)
    plan = b.schedule(now=0.0)
    b.update(plan, now=0.0)
    assert_same_future(a, b)


def test_finished_must_have_sampled_this_step(Sched):
    s = Sched(make_config(max_num_batched_tokens=4))
    s.add_request("a", prompt_tokens=9, max_output_tokens=4)
    plan = s.schedule(now=0.0)                            # a prefill chunk: no token sampled
    with pytest.raises(halffull.InvalidUpdateError):
        s.update(plan, finished=["a"], now=0.0)
    assert s.update(plan, now=0.0) == []
    assert s.request_info("a")["num_computed_tokens"] == 4


def test_stale_and_foreign_plans(Sched):
    a, b = fresh_pair(Sched)
    pa, pb = a.schedule(now=0.0), b.schedule(now=0.0)
    with pytest.raises(halffull.StalePlanError):
        a.schedule(now=0.0)                               # the previous plan is pending
    with pytest.raises(halffull.StalePlanError):
        a.update(pb, now=0.0)                             # another scheduler's plan
    with pytest.raises(halffull.StalePlanError):
        a.update(object(), now=0.0)
    a.update(pa, now=0.0)
    b.update(pb, now=0.0)
    with pytest.raises(halffull.StalePlanError):
        a.update(pa, now=0.0)                             # already applied
    assert_same_future(a, b)


def test_time_going_backwards(Sched):
    a, b = fresh_pair(Sched)
    for s in (a, b):
        s.update(s.schedule(now=5.0), now=5.0)
    with pytest.raises(halffull.ClockError) as info:
        a.schedule(now=4.0)
    assert info.value.clock == 5.0
    for bad in (math.nan, math.inf, -1.0):
        with pytest.raises(halffull.InvalidArgumentError):
            a.schedule(now=bad)
    plan = a.schedule(now=6.0)
    with pytest.raises(halffull.ClockError):
        a.update(plan, now=5.5)
    a.update(plan, now=6.0)
    b.update(b.schedule(now=6.0), now=6.0)
    assert_same_future(a, b)


@pytest.mark.parametrize("field, value", [
    ("num_gpu_blocks", 0), ("max_num_seqs", 0), ("max_num_batched_tokens", 0), ("block_size", 0),
    ("num_cpu_blocks", -1), ("num_gpu_blocks", 2.5), ("watermark", 1.0), ("watermark", math.nan),
    ("larry_alpha", -1.0), ("sjf_aging", math.inf), ("larry_deadline", -1.0), ("larry_deadline", math.inf),
    ("larry_slack", math.nan), ("larry_slack", -0.5),
])
def test_bad_config_values(field, value):
    with pytest.raises(halffull.ConfigError) as info:
        make_config(**{field: value})
    assert info.value.field == field and field in str(info.value)


@pytest.mark.parametrize("field, value, valid", [
    ("policy", "lary", "larry"), ("preemption_mode", "evict", "swap"), ("larry_load", "tokens", "waiting"),
])
def test_unknown_names_list_the_valid_ones(field, value, valid):
    with pytest.raises(halffull.ConfigError) as info:
        make_config(**{field: value})
    assert valid in info.value.valid and valid in str(info.value)


def test_scheduler_wants_a_config(Sched):
    with pytest.raises(halffull.ConfigError):
        Sched({"num_gpu_blocks": 4})


def test_rust_validates_a_config_that_skipped_python_checks():
    # The config is the Rust core's own frozen class: there are no Python checks to skip,
    # and the bypass a frozen dataclass allowed now fails instead of reaching Rust.
    cfg = make_config()
    with pytest.raises(AttributeError):
        object.__setattr__(cfg, "policy", "nonsense")
    assert halffull.Scheduler(cfg).config.policy == "fcfs"
    with pytest.raises(halffull.ConfigError) as info:
        cfg.replace(policy="nonsense")
    assert "larry" in info.value.valid


def test_abort_everywhere_frees_blocks(Sched):
    s = Sched(make_config(num_gpu_blocks=6, num_cpu_blocks=6, preemption_mode="swap"))
    for rid in "abcd":
        s.add_request(rid, prompt_tokens=8, max_output_tokens=6, arrival_time=0.0)
    s.update(s.schedule(now=0.0), now=0.0)
    plan = s.schedule(now=0.1)
    s.update(plan, now=0.1)
    states = {rid: s.request_info(rid)["status"] for rid in "abcd"}
    assert {"running", "swapped", "waiting"} <= set(states.values())
    for rid in "abcd":
        s.abort(rid)
        s.check_invariants()
    assert (s.num_free_gpu_blocks, s.num_free_cpu_blocks) == (6, 6)
    assert sorted(s.schedule(now=0.2).finished) == list("abcd")
