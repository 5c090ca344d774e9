"""Issue 11, item 7: every mistake at the Python boundary is a typed ``HalffullError`` naming
the argument, and leaves the object exactly as it was.

For each public call of ``Scheduler``, ``Router``, ``CostModel`` and the simulator, Hypothesis
replaces one or more arguments of a valid call with an arbitrary value (``None``, NaN, huge
ints, bools and numpy bools, numpy scalars of every kind, strings with lone surrogates,
bytes, mappings, objects, iterables that raise ...). ``ACCEPTS`` states, per kind of
argument, what the boundary takes (the rules of ``rust/bindings/convert.rs`` and
``rust/limits.rs``); a value outside them must raise a ``HalffullError`` whose ``field`` names
the argument, and a call that raises must change nothing: the state read back is equal, and
a twin that never saw the call makes the same decisions afterwards. The scheduler and
router tests run on the reference too: it accepts and refuses exactly the same values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import halffull
from halffull import CostModel, reference, sim, traces
from halffull.errors import HalffullError
from halffull.limits import MAX_COUNT, MAX_REPLICAS, MAX_TIME
from support import RaisesMidway, RaisesOnIter, junk

# ---------------------------------------------------------------------------- arbitrary values: support.junk


# ---------------------------------------------------------------------------- what each kind accepts


def is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def real(v: Any) -> float:
    """``float(v)``, with ints beyond float range as infinities."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def count(lo: int, hi: int = MAX_COUNT) -> Callable[[Any], bool]:
    return lambda v: is_int(v) and lo <= int(v) <= hi


def opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def time_value(v: Any) -> bool:
    return is_number(v) and math.isfinite(real(v)) and 0.0 <= real(v) <= MAX_TIME


def request_id(v: Any) -> bool:
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63


def list_of(item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if isinstance(v, (str, bytes, bytearray, Mapping, RaisesOnIter, RaisesMidway)):
            return False
        try:
            values = list(v)
        except TypeError:
            return False
        return all(item(x) for x in values)
    return check


def flag(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_))


def anything(v: Any) -> bool:  # the call's own rules decide (a name, a semantic check)
    return True


def finite_number(v: Any) -> bool:
    return is_number(v) and math.isfinite(real(v))


# ---------------------------------------------------------------------------- the harness


def check_call(call: Callable[..., Any], kwargs: dict[str, Any], accepts: dict[str, Callable[[Any], bool]],
               state: Callable[[], Any], replaced: set[str]) -> tuple[bool, Any]:
    """Call ``call(**kwargs)``. If an argument in ``replaced`` is outside what ``accepts``
    allows, it must raise a HalffullError naming one of the replaced arguments. If it raises,
    ``state()`` must read the same before and after. Returns (succeeded, result)."""
    invalid = {k for k in replaced if not accepts[k](kwargs[k])}
    before = state()
    try:
        result = call(**kwargs)
    except HalffullError as e:
        assert state() == before, f"a failed call changed the state: {kwargs}"
        if invalid and isinstance(e, (halffull.InvalidArgumentError, halffull.ConfigError)):
            assert e.field in replaced or any((e.field, k) in FIELD_ALIASES for k in replaced), \
                f"{type(e).__name__} names {e.field!r}, not one of {sorted(invalid)}: {e}"
        return False, e
    except BaseException as e:  # noqa: BLE001 - the point: nothing else may escape
        raise AssertionError(f"{type(e).__name__} escaped the HalffullError hierarchy for {kwargs}: {e}") from e
    assert not invalid, f"accepted invalid {sorted(invalid)}: {kwargs} -> {result!r}"
    return True, result


# (field named, argument): an error about one argument that names a related field (a list's
# items are request ids; a per-replica list whose length no longer matches num_replicas).
FIELD_ALIASES = {("eff_compute", "eff_memory"), ("request_id", "finished"), ("request_id", "request_ids"),
                 ("num_gpu_blocks", "num_replicas"), ("block_size", "num_replicas"),
                 ("max_num_batched_tokens", "num_replicas")}


def mutate(draw: Any, valid: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """``valid`` with one to three of its arguments replaced by arbitrary values."""
    names = sorted(valid)
    replaced = set(draw(st.lists(st.sampled_from(names), min_size=1, max_size=min(3, len(names)), unique=True)))
    kwargs = dict(valid)
    for name in replaced:
        kwargs[name] = draw(junk)
    return kwargs, replaced


# ---------------------------------------------------------------------------- Scheduler


def sched_config() -> halffull.SchedulerConfig:
    return halffull.SchedulerConfig(num_gpu_blocks=16, block_size=4, num_cpu_blocks=8, max_num_seqs=4,
                                    max_num_batched_tokens=16, watermark=0.0, preemption_mode="swap")


def sched_state(s: Any) -> Any:
    live = [i for i in ("a", "b", 7) if _live(s, i)]
    return (s.num_waiting, s.num_running, s.num_swapped, s.num_free_gpu_blocks, s.num_free_cpu_blocks, s.now,
            s.num_steps, s.num_preemptions, len(s), tuple(s.free_gpu_block_ids()),
            tuple((i, repr(sorted(s.request_info(i).items()))) for i in live))


def _live(s: Any, rid: Any) -> bool:
    try:
        s.request_info(rid)
    except halffull.UnknownRequestError:
        return False
    return True


IMPLS = {"rust": (halffull.Scheduler, halffull.Router), "reference": (reference.Scheduler, reference.Router)}
impls = pytest.mark.parametrize("impl", sorted(IMPLS))


def sched_pair(step: bool, impl: str = "rust") -> tuple[Any, Any, Any, Any]:
    """Two identical schedulers with requests "a", "b", 7; with ``step``, a plan pending."""
    pair = []
    for _ in range(2):
        s = IMPLS[impl][0](sched_config())
        s.add_request("a", 9, 4, 0.0)
        s.add_request("b", 5, 3, 0.0, priority=1)
        s.add_request(7, 3, 2, 0.0)
        pair.append(s)
    plans = [s.schedule(now=0.5) if step else None for s in pair]
    return pair[0], pair[1], plans[0], plans[1]


def same_future(a: Any, b: Any, pa: Any, pb: Any) -> None:
    t = min(max(a.now, b.now) + 0.01, MAX_TIME)
    if pa is not None:
        assert a.update(pa, now=t) == b.update(pb, now=t)
    for _ in range(10):
        t = min(t + 0.01, MAX_TIME)
        qa, qb = a.schedule(now=t), b.schedule(now=t)
        assert {**qa.to_dict(), "step": 0} == {**qb.to_dict(), "step": 0}
        assert a.update(qa, now=t) == b.update(qb, now=t)
        a.check_invariants()


ADD = dict(request_id=request_id, prompt_tokens=count(1), max_output_tokens=count(1),
           arrival_time=opt(time_value), priority=opt(lambda v: is_int(v) and -(2**63) <= int(v) < 2**63),
           predicted_output_tokens=opt(count(0)), true_output_tokens=opt(count(1)))


@impls
@given(data=st.data())
def test_scheduler_add_request(impl, data):
    a, b, _, _ = sched_pair(step=False, impl=impl)
    valid = dict(request_id="new", prompt_tokens=4, max_output_tokens=3, arrival_time=0.25, priority=0,
                 predicted_output_tokens=5, true_output_tokens=2)
    kwargs, replaced = mutate(data.draw, valid)
    ok, _ = check_call(a.add_request, kwargs, ADD, lambda: sched_state(a), replaced)
    if ok:
        b.add_request(**kwargs)
    same_future(a, b, None, None)


@impls
@given(data=st.data(), step=st.booleans())
def test_scheduler_abort_and_request_info(impl, data, step):
    a, b, pa, pb = sched_pair(step, impl)
    rid = data.draw(junk)
    check_call(a.request_info, dict(request_id=rid), dict(request_id=request_id), lambda: sched_state(a),
               {"request_id"})
    ok, _ = check_call(a.abort, dict(request_id=rid), dict(request_id=request_id), lambda: sched_state(a),
                       {"request_id"})
    if ok:
        b.abort(rid)
    same_future(a, b, pa, pb)


@impls
@given(now=junk)
def test_scheduler_schedule(impl, now):
    a, b, _, _ = sched_pair(step=False, impl=impl)
    ok, plan = check_call(a.schedule, dict(now=now), dict(now=opt(time_value)), lambda: sched_state(a), {"now"})
    pb = b.schedule(now=now) if ok else None
    same_future(a, b, plan if ok else None, pb)


@impls
@given(data=st.data())
def test_scheduler_update(impl, data):
    a, b, pa, pb = sched_pair(step=True, impl=impl)
    valid = dict(plan=pa, finished=[], now=1.0)
    kwargs, replaced = mutate(data.draw, valid)
    accepts = dict(plan=lambda v: v is pa, finished=opt(list_of(request_id)), now=opt(time_value))
    if isinstance(kwargs["finished"], (int, np.integer)) and not isinstance(kwargs["finished"], bool):
        accepts["finished"] = lambda v: False               # a single id
    ok, _ = check_call(a.update, kwargs, accepts, lambda: sched_state(a), replaced)
    if ok:
        b.update(pb, finished=kwargs["finished"], now=kwargs["now"])
        pa = pb = None
    same_future(a, b, pa, pb)


@given(config=junk)
def test_scheduler_constructor_takes_only_a_config(config):
    with pytest.raises(halffull.ConfigError) as info:
        halffull.Scheduler(config)
    assert info.value.field == "config"


CONFIG_FIELDS = ["num_gpu_blocks", "block_size", "num_cpu_blocks", "max_num_seqs", "max_num_batched_tokens",
                 "policy", "preemption_mode", "watermark", "larry_alpha", "larry_load", "sjf_aging", "semantics",
                 "max_model_len", "long_prefill_token_threshold", "reserve_full_prompt"]


@given(data=st.data())
def test_scheduler_config_fields(data):
    valid = dict(num_gpu_blocks=16, block_size=4)
    field = data.draw(st.sampled_from(CONFIG_FIELDS))
    value = data.draw(junk)
    kinds = dict(policy=str, preemption_mode=str, larry_load=str, semantics=str, reserve_full_prompt=flag,
                 watermark=opt(finite_number), larry_alpha=finite_number, sjf_aging=finite_number,
                 max_model_len=opt(count(1)))
    accept = kinds.get(field, count(0))
    accept = (lambda v: isinstance(v, str)) if accept is str else accept
    check_call(lambda **kw: halffull.SchedulerConfig(**kw), {**valid, field: value},
               {**{k: anything for k in valid}, field: accept}, lambda: None, {field})


# ---------------------------------------------------------------------------- Router


def router_state(r: Any) -> Any:
    live = tuple((i, r.replica_of(i)) for i in ("a", "b", 7) if i in r)
    return (repr(r.replica_loads()), len(r), r.beta, r.mean_output_tokens, r.num_finished, live)


def router_pair(policy: str, impl: str = "rust") -> tuple[Any, Any]:
    pair = []
    for _ in range(2):
        r = IMPLS[impl][1](policy, 3, seed=5, num_gpu_blocks=[64, 32, 16], block_size=4)
        r.route("a", 10, 8)
        r.route("b", 20, 8)
        r.route(7, 5, 4)
        r.on_progress("a", 1)
        pair.append(r)
    return pair[0], pair[1]


def same_router_future(a: Any, b: Any) -> None:
    for k in range(12):
        rid = f"next-{k}"
        assert a.route(rid, 3 + 7 * k % 40, 16) == b.route(rid, 3 + 7 * k % 40, 16)
        if k % 3 == 0:
            a.on_finish(rid, 2)
            b.on_finish(rid, 2)
    assert router_state(a) == router_state(b)
    a.check_invariants()


ROUTER_CALLS: dict[str, tuple[dict[str, Any], dict[str, Callable[[Any], bool]]]] = {
    "route": (dict(request_id="new", prompt_tokens=12, max_output_tokens=8, predicted_output_tokens=4),
              dict(request_id=request_id, prompt_tokens=count(1), max_output_tokens=opt(count(1)),
                   predicted_output_tokens=opt(count(0)))),
    "route_many": (dict(request_ids=["x", "y"], prompt_tokens=[3, 4], max_output_tokens=[5, 6],
                        predicted_output_tokens=None),
                   dict(request_ids=list_of(request_id), prompt_tokens=list_of(count(1)),
                        max_output_tokens=opt(list_of(count(1))), predicted_output_tokens=opt(list_of(count(0))))),
    "on_progress": (dict(request_id="b", output_tokens=2), dict(request_id=request_id, output_tokens=count(0))),
    "on_finish": (dict(request_id="a", output_tokens=3), dict(request_id=request_id, output_tokens=count(0))),
    "on_abort": (dict(request_id=7), dict(request_id=request_id)),
    "update_replica": (dict(index=1, waiting=2, running=1, queued_prefill_tokens=30, remaining_decode_tokens=4,
                            free_blocks=10),
                       dict(index=count(0, 2), waiting=opt(count(0)), running=opt(count(0)),
                            queued_prefill_tokens=opt(count(0)), remaining_decode_tokens=opt(count(0)),
                            free_blocks=opt(count(0)))),
    "replica": (dict(index=2), dict(index=count(0, 2))),
    "replica_of": (dict(request_id="a"), dict(request_id=request_id)),
}


@impls
@given(data=st.data(), call=st.sampled_from(sorted(ROUTER_CALLS)),
       policy=st.sampled_from(["round_robin", "random", "power_of_two", "sal", "llumnix"]))
def test_router_calls(impl, data, call, policy):
    a, b = router_pair(policy, impl)
    valid, accepts = ROUTER_CALLS[call]
    kwargs, replaced = mutate(data.draw, valid)
    if call == "update_replica":
        kwargs = {"index": kwargs.pop("index"), **kwargs}
        fn: Callable[..., Any] = lambda index, **kw: a.update_replica(index, **kw)  # noqa: E731
    else:
        fn = getattr(a, call)
    ok, _ = check_call(fn, kwargs, accepts, lambda: router_state(a), replaced)
    if ok:
        kw = dict(kwargs)
        if call == "update_replica":
            b.update_replica(kw.pop("index"), **kw)
        else:
            getattr(b, call)(**kw)
    same_router_future(a, b)


ROUTER_NEW = dict(policy="sal", num_replicas=2, seed=1, num_gpu_blocks=[8, 8], block_size=4,
                  max_num_batched_tokens=64, beta=None, prior_input_tokens=100, prior_output_tokens=10)
ROUTER_NEW_ACCEPTS = dict(
    policy=lambda v: isinstance(v, str) and v in halffull.ROUTERS, num_replicas=count(1, MAX_REPLICAS),
    seed=opt(count(0, 2**64 - 1)),
    num_gpu_blocks=opt(lambda v: count(1)(v) or list_of(count(1))(v)),
    block_size=opt(lambda v: count(1)(v) or list_of(count(1))(v)),
    max_num_batched_tokens=opt(lambda v: count(1)(v) or list_of(count(1))(v)),
    beta=opt(lambda v: finite_number(v) and 0 < float(v) <= 1e12),
    prior_input_tokens=opt(count(1)), prior_output_tokens=opt(count(1)))


@impls
@given(data=st.data())
def test_router_constructor(impl, data):
    kwargs, replaced = mutate(data.draw, ROUTER_NEW)
    check_call(lambda policy, num_replicas, **kw: IMPLS[impl][1](policy, num_replicas, **kw), kwargs,
               ROUTER_NEW_ACCEPTS, lambda: None, replaced)


# ---------------------------------------------------------------------------- CostModel


@given(data=st.data())
def test_cost_model_constructors(data):
    valid = dict(c0=0.01, c1=1e-5, c2=1e-4, c3=1e-7, swap_s_per_block=0.0)
    kwargs, replaced = mutate(data.draw, valid)
    nonneg = lambda v: finite_number(v) and float(v) >= 0  # noqa: E731
    accepts = dict(c0=lambda v: finite_number(v) and float(v) > 0, c1=nonneg, c2=nonneg, c3=nonneg,
                   swap_s_per_block=opt(nonneg))
    check_call(CostModel.linear, kwargs, accepts, lambda: None, replaced)

    valid = dict(name="llama-3-8b/h100", block_size=16, overhead_s=None, eff_compute=0.5, eff_memory=None,
                 host_bw=None)
    kwargs, replaced = mutate(data.draw, valid)
    frac = lambda v: finite_number(v) and 0 < float(v) <= 1  # noqa: E731
    accepts = dict(name=lambda v: isinstance(v, str) and v in sim.preset_names(), block_size=opt(count(1)),
                   overhead_s=opt(nonneg), eff_compute=opt(frac), eff_memory=opt(frac),
                   host_bw=opt(lambda v: finite_number(v) and float(v) > 0))
    check_call(lambda name, **kw: CostModel.preset(name, **kw), kwargs, accepts, lambda: None, replaced)


@given(data=st.data())
def test_cost_model_step_time(data):
    cm = CostModel.preset("llama-3-8b/a100")
    valid = dict(num_new_tokens=[16, 1], num_computed_tokens=[0, 40], is_prefill=[True, False], swap_blocks=0)
    kwargs, replaced = mutate(data.draw, valid)

    def same_length(_: Any) -> bool:
        try:
            lengths = {len(list(kwargs[k])) for k in ("num_new_tokens", "num_computed_tokens", "is_prefill")}
        except TypeError:
            return False
        return len(lengths) == 1

    accepts = dict(num_new_tokens=list_of(count(0)), num_computed_tokens=list_of(count(0)),
                   is_prefill=list_of(flag), swap_blocks=opt(count(0)))
    ok, result = check_call(lambda **kw: cm.step_time(**kw), kwargs, accepts, lambda: None, replaced)
    if ok:
        assert same_length(None) and math.isfinite(result) and result > 0


# ---------------------------------------------------------------------------- the simulator


@pytest.fixture(scope="module")
def tiny_trace() -> traces.Trace:
    return traces.builtin("default").head(12)


SIM_VALID = dict(replicas=2, policy="fcfs", router="round_robin", seed=0, max_output_tokens=64,
                 snapshot_interval=None, record_steps=False, capacity_requests=8, predictor=None, sal_beta=None,
                 load=None)
SIM_ACCEPTS = dict(
    replicas=count(1, MAX_REPLICAS), policy=lambda v: isinstance(v, str) and v in halffull.POLICIES,
    router=lambda v: isinstance(v, str) and v in halffull.ROUTERS, seed=count(0, 2**64 - 1),
    max_output_tokens=count(1), snapshot_interval=opt(lambda v: finite_number(v) and float(v) > 0),
    record_steps=flag, capacity_requests=count(1), predictor=anything,
    sal_beta=opt(lambda v: finite_number(v) and float(v) > 0), load=opt(lambda v: finite_number(v) and float(v) > 0))


@given(data=st.data())
def test_simulate(data, tiny_trace):
    kwargs, replaced = mutate(data.draw, SIM_VALID)
    if SIM_ACCEPTS["replicas"](kwargs["replicas"]) and int(kwargs["replicas"]) > 3:
        kwargs["replicas"] = 3                          # valid but slow: keep the run small
    cache = dict(sim._CAPACITY_CACHE)   # a memo of measured capacities: may grow, never change
    ok, res = check_call(lambda **kw: sim.simulate(tiny_trace, **kw), kwargs, SIM_ACCEPTS, lambda: None, replaced)
    if ok:
        assert res.summary()["num_requests"] == len(tiny_trace)
    assert all(sim._CAPACITY_CACHE[k] == v for k, v in cache.items())


@given(data=st.data())
def test_measure_capacity_presets_and_summary(data, tiny_trace):
    kwargs, replaced = mutate(data.draw, dict(max_output_tokens=64, capacity_requests=8))
    check_call(lambda **kw: sim.measure_capacity(tiny_trace, **kw), kwargs,
               dict(max_output_tokens=count(1), capacity_requests=count(1)), lambda: None, replaced)
    bs = data.draw(junk)
    check_call(lambda block_size: sim.presets(block_size), dict(block_size=bs), dict(block_size=count(1)),
               lambda: None, {"block_size"})
    res = sim.simulate(tiny_trace, replicas=1, record_steps=False)
    kwargs, replaced = mutate(data.draw, dict(slo_ttft=2.0, slo_tpot=0.1))
    nonneg = lambda v: finite_number(v) and float(v) >= 0  # noqa: E731
    check_call(res.summary, kwargs, dict(slo_ttft=nonneg, slo_tpot=nonneg), lambda: None, replaced)


@given(path=junk)
def test_traces_load_names_the_path(path):
    if isinstance(path, str):
        return                                          # a str is a path: TraceError if missing
    with pytest.raises(HalffullError) as info:
        traces.load(path)
    assert info.value.field == "path"


# ---------------------------------------------------------------------------- the issue's cases


def test_issue_reproducers():
    s = halffull.Scheduler(sched_config())
    for rid in ("\ud800", "a\udfffb"):
        for call in (lambda rid=rid: s.add_request(rid, 4, 4), lambda rid=rid: s.abort(rid),
                     lambda rid=rid: s.request_info(rid)):
            with pytest.raises(halffull.InvalidArgumentError) as info:
                call()
            assert info.value.field == "request_id"
    s.add_request(7, 4, 4)
    plan = s.schedule(now=0.0)
    for bad in (1.5, np.int64(3), object(), b"\x07", {7: 1}, "7", bytearray(b"\x07"), RaisesOnIter()):
        with pytest.raises(halffull.InvalidArgumentError) as info:
            s.update(plan, finished=bad, now=0.0)
        assert info.value.field == "finished"
    with pytest.raises(halffull.InvalidArgumentError) as info:
        s.update(plan, finished=RaisesMidway(7), now=0.0)
    assert isinstance(info.value.__cause__, ValueError)
    assert s.update(plan, finished=(i for i in [7]), now=0.0) == [7]   # a one-shot generator
    with pytest.raises(halffull.ConfigError, match="policy"):
        halffull.SchedulerConfig(num_gpu_blocks=4, policy=["fcfs"])
    with pytest.raises(halffull.ConfigError, match="watermark"):
        halffull.SchedulerConfig(num_gpu_blocks=4, watermark=2**1100)
    r = halffull.Router("sal", 2)
    with pytest.raises(halffull.InvalidArgumentError):
        r.route_many("abc", [1, 2, 3])
    with pytest.raises(halffull.ConfigError):
        halffull.Router("sal", 2, num_gpu_blocks={1: 1, 2: 2})
    assert len(r) == 0
    tr = traces.builtin("default").head(5)
    for kw, field in [(dict(router=None), "router"), (dict(seed=-1), "seed"), (dict(seed=None), "seed"),
                      (dict(max_output_tokens=-1), "max_output_tokens"),
                      (dict(capacity_requests=-1, load=0.5), "capacity_requests"),
                      (dict(record_steps=1), "record_steps"), (dict(replicas=2**63), "replicas"),
                      (dict(load=2**1100), "load"), (dict(cost_model={"c0": "x", "c1": 0, "c2": 0, "c3": 0}), "c0"),
                      (dict(max_output_tokens=2.9), "max_output_tokens"),
                      (dict(max_output_tokens=2.9, load=0.5), "max_output_tokens")]:
        with pytest.raises(HalffullError) as info:
            sim.simulate(tr, replicas=kw.pop("replicas", 1), **kw)
        assert info.value.field == field, (kw, info.value)
    for call in (lambda: CostModel.linear(-1, 0, 0, 0), lambda: CostModel.linear("x", 0, 0, 0),
                 lambda: CostModel.preset("llama-3-8b/h100", block_size=-1), lambda: CostModel.preset(None),
                 lambda: CostModel.linear(1, 0, 0, 0).step_time([-1], [0], [True]),
                 lambda: CostModel.linear(1, 0, 0, 0).step_time("ab", [0, 1], [True, True])):
        with pytest.raises(HalffullError):
            call()
    with pytest.raises(halffull.InvalidArgumentError):
        traces.load(None)
