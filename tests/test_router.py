"""The cluster routers: the Rust ``Router`` against the reference, step for step, for every
policy (with shared prompt prefixes, so the cache-aware ones match, evict and sample); then
targeted behaviour (round robin, join-shortest-queue, SAL's memory awareness, ties, β, SGLang's
and Dynamo's rules) and bad input (typed errors, state unchanged)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import halffull
from halffull import errors
from halffull.reference import router as ref

RustRouter = getattr(halffull, "Router", None) or halffull._core.Router
ROUTERS = tuple(halffull._core.router_names())
IMPLS = {"rust": RustRouter, "reference": ref.Router}


@pytest.fixture(params=sorted(IMPLS))
def Router(request):
    """The router class under test: the Rust core and the reference, in turn."""
    return IMPLS[request.param]


def state(r) -> tuple:
    """Everything observable about a router (for equality across implementations)."""
    return (r.replica_loads(), len(r), r.beta, r.mean_output_tokens, r.num_finished)


def test_registry_matches_reference():
    assert ROUTERS == ref.ROUTERS
    assert set(ROUTERS) == {"round_robin", "random", "power_of_two", "least_requests", "least_tokens",
                            "llumnix", "sal", "cache_aware", "dynamo_kv", "sal_uncached"}


# ---------------------------------------------------------------------------- Rust == reference

ids = st.one_of(st.integers(-5, 40), st.sampled_from(["a", "b", "c", "req-1", "req-2", "é"]))
counts = st.none() | st.integers(0, 2) | st.integers(0, 300)


def family_hashes(family: int, branch: int, split: int, n: int) -> list[int]:
    """Block hashes of a prompt in one of a few families: shared up to ``split``, then per branch
    (so requests share prefixes of many lengths, as chained hashes of real prompts do)."""
    return [family * 10_000 + (j if j < split else 1000 * (branch + 1) + j) for j in range(n)]


def family_tokens(family: int, branch: int, split: int, n: int) -> list[int]:
    """Token ids with the same sharing pattern, ``split`` counted in tokens."""
    return [family * 100_000 + (j if j < split else 10_000 * (branch + 1) + j) for j in range(n)]


@st.composite
def prefix_args(draw, prompt: int, sizes: list[int]) -> dict:
    """``route``'s prefix arguments: none, block hashes or token ids, and maybe exact overlaps."""
    kind = draw(st.sampled_from(["none", "hashes", "hashes", "tokens", "bytes", "bad"]))
    bs = sizes[0]
    family, branch = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    out: dict = {}
    if kind == "hashes":
        n = draw(st.integers(0, prompt // bs + (1 if draw(st.booleans()) and len(set(sizes)) == 1 else 0)))
        out["block_hashes"] = family_hashes(family, branch, draw(st.integers(0, n)), n)
    elif kind == "tokens":
        out["prompt_token_ids"] = family_tokens(family, branch, draw(st.integers(0, prompt)), prompt)
        out["prompt_tokens"] = None if draw(st.booleans()) else prompt + draw(st.sampled_from([0, 0, 0, 1]))
    elif kind == "bad":
        out["block_hashes"] = draw(st.sampled_from([[1, -1], [True], [1.5], 7, "ab", [2**128]]))
    elif kind == "bytes":                # digested to 128 bits in both (other values, same equalities)
        out["block_hashes"] = [b"sys", b"turn-%d" % family][:prompt // bs]
    if draw(st.integers(0, 3)) == 0:
        out["overlap_blocks"] = [draw(st.integers(0, prompt // b + (1 if draw(st.integers(0, 9)) == 0 else 0)))
                                 for b in sizes] + ([0] if draw(st.integers(0, 9)) == 0 else [])
    return out


class RouterParity(RuleBasedStateMachine):
    """Drive both routers with the same operations; they must return the same replica (or
    raise the same error) every time and agree on every replica's load after every step."""

    policy = "round_robin"

    @initialize(
        n=st.integers(1, 6),
        seed=st.integers(0, 2**64 - 1),
        blocks=st.integers(1, 40),
        block_size=st.integers(1, 8),
        budget=st.integers(1, 64),
        hetero=st.booleans(),
        beta=st.none() | st.floats(0.1, 20.0),
        priors=st.tuples(st.integers(1, 100), st.integers(1, 100)),
        cache=st.fixed_dictionaries({
            "cache_threshold": st.none() | st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(0.0, 1.0),
            "balance_abs_threshold": st.none() | st.integers(0, 6),
            "balance_rel_threshold": st.none() | st.floats(1.0, 3.0),
            "max_record_blocks": st.none() | st.integers(1, 12),
            "overlap_score_weight": st.none() | st.sampled_from([0.0, 0.5, 1.0, 2.0]),
            "router_temperature": st.none() | st.just(0.0) | st.floats(0.01, 10.0),
        }),
        data=st.data(),
    )
    def setup(self, n, seed, blocks, block_size, budget, hetero, beta, priors, cache, data):
        if hetero:
            blocks = data.draw(st.lists(st.integers(1, 40), min_size=n, max_size=n))
            block_size = data.draw(st.lists(st.integers(1, 8), min_size=n, max_size=n))
        kwargs = dict(seed=seed, num_gpu_blocks=blocks, block_size=block_size, max_num_batched_tokens=budget,
                      beta=beta, prior_input_tokens=priors[0], prior_output_tokens=priors[1], **cache)
        self.rust = RustRouter(self.policy, n, **kwargs)
        self.ref = ref.Router(self.policy, n, **kwargs)
        self.n = n
        self.sizes = block_size if isinstance(block_size, list) else [block_size] * n
        self.live: list = []          # ids live in both, in routing order (never a set: order matters)
        self.digested = False         # token ids or bytes were hashed: equal structure, other values

    def both(self, method: str, *args, **kwargs):
        """Call ``method`` on both; same result or same exception class and attributes."""
        results = []
        for impl in (self.rust, self.ref):
            try:
                out = getattr(impl, method)(*args, **kwargs)
                results.append(("ok", out.tolist() if isinstance(out, np.ndarray) else out))
            except errors.HalffullError as e:
                attrs = {k: getattr(e, k, None) for k in ("field", "index", "request_id", "num_replicas")}
                results.append((type(e).__name__, attrs))
        assert results[0] == results[1], f"{method}{args}{kwargs}: rust {results[0]} != reference {results[1]}"
        return results[0]

    def pick_live(self, data):
        return data.draw(st.sampled_from(self.live))

    @rule(rid=ids, prompt=st.integers(1, 80), cap=st.none() | st.integers(1, 40),
          predicted=st.none() | st.integers(0, 50))
    def route(self, rid, prompt, cap, predicted):
        kind, out = self.both("route", rid, prompt, max_output_tokens=cap, predicted_output_tokens=predicted)
        if kind == "ok":
            assert 0 <= out < self.n
            self.live.append(rid)
        else:
            assert kind == "DuplicateRequestError" and rid in self.live

    @rule(rid=ids, prompt=st.integers(1, 80), cap=st.none() | st.integers(1, 40), data=st.data())
    def route_with_prefix(self, rid, prompt, cap, data):
        """Prompts from a few prefix families (hashes or token ids), sometimes exact overlaps,
        sometimes invalid prefix arguments: same replica or same error."""
        extra = data.draw(prefix_args(prompt, self.sizes))
        prompt_arg = extra.pop("prompt_tokens", prompt)
        kind, out = self.both("route", rid, prompt_arg, max_output_tokens=cap, **extra)
        if kind == "ok":
            assert 0 <= out < self.n
            self.live.append(rid)
            self.digested |= "prompt_token_ids" in extra or any(
                isinstance(h, bytes) for h in extra.get("block_hashes") or [])
        else:
            assert kind in ("DuplicateRequestError", "InvalidArgumentError")

    @rule(batch=st.lists(st.tuples(ids, st.integers(1, 80), st.none() | st.integers(0, 50)), max_size=5),
          cap=st.none() | st.integers(1, 40))
    def route_many(self, batch, cap):
        rids = [b[0] for b in batch]
        prompts = [b[1] for b in batch]
        caps = None if cap is None else [cap] * len(batch)
        predicted = [b[2] for b in batch]
        if any(p is None for p in predicted):
            predicted = None
        kind, _ = self.both("route_many", rids, prompts, caps, predicted)
        if kind == "ok":
            self.live.extend(rids)
        else:
            assert kind == "DuplicateRequestError"

    @rule(batch=st.lists(st.tuples(ids, st.integers(1, 80), st.integers(0, 2), st.integers(0, 2),
                                   st.integers(0, 12)), max_size=4),
          with_overlap=st.booleans())
    def route_many_with_prefix(self, batch, with_overlap):
        rids = [b[0] for b in batch]
        prompts = [b[1] for b in batch]
        hashes = [None if b[2] == 2 else family_hashes(b[2], b[3], b[4] // 2, min(b[4], b[1] // self.sizes[0]))
                  for b in batch]
        overlap = [[min(b[4] % 3, b[1] // s) for s in self.sizes] for b in batch] if with_overlap else None
        kind, _ = self.both("route_many", rids, prompts, block_hashes=hashes, overlap_blocks=overlap)
        if kind == "ok":
            self.live.extend(rids)
        else:
            assert kind in ("DuplicateRequestError", "InvalidArgumentError")

    @precondition(lambda self: self.live)
    @rule(data=st.data(), step=st.integers(0, 12))
    def progress(self, data, step):
        rid = self.pick_live(data)
        done = self.ref.requests[ref._check_id(rid)].output_tokens
        self.both("on_progress", rid, done + step)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), extra=st.integers(0, 12))
    def finish(self, data, extra):
        rid = self.pick_live(data)
        done = self.ref.requests[ref._check_id(rid)].output_tokens
        kind, _ = self.both("on_finish", rid, done + extra)
        if kind == "ok":
            self.live.remove(rid)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def abort(self, data):
        rid = self.pick_live(data)
        self.both("on_abort", rid)
        self.live.remove(rid)

    @rule(data=st.data(), waiting=counts, running=counts, queued=counts, decode=counts,
          free=st.none() | st.integers(0, 45), uncached=counts)
    def snapshot(self, data, waiting, running, queued, decode, free, uncached):
        """An engine report (often zeros, as after finishes the router has not heard of yet)."""
        index = data.draw(st.integers(0, self.n - 1))
        self.both("update_replica", index, waiting=waiting, running=running, queued_prefill_tokens=queued,
                  remaining_decode_tokens=decode, free_blocks=free, queued_prefill_uncached_tokens=uncached)

    @rule(index=st.sampled_from([-1, 6, 7, 2**70, 1.0, None]), waiting=counts)
    def bad_snapshot(self, index, waiting):
        kind, _ = self.both("update_replica", index, waiting=waiting)
        assert kind == "InvalidArgumentError" or 0 <= index < self.n

    @rule(rid=ids, out=st.integers(-2, 5))
    def bad_feedback(self, rid, out):
        """Unknown ids, negative or backwards counts: the same error, nothing changes."""
        for method in ("on_progress", "on_finish"):
            kind, _ = self.both(method, rid, out)
            if kind == "ok":
                if method == "on_finish":
                    self.live.remove(rid)
                break

    @rule(rid=ids, prompt=st.sampled_from([0, -1, 2**41, 1.5, True, "3", None]))
    def bad_route(self, rid, prompt):
        kind, _ = self.both("route", rid, prompt)
        assert kind in ("InvalidArgumentError", "DuplicateRequestError")

    @invariant()
    def same_state(self):
        if not hasattr(self, "rust"):
            return
        assert state(self.rust) == state(self.ref)
        for rid in self.live[:3]:
            assert self.rust.replica_of(rid) == self.ref.replica_of(rid)
        if not self.digested:
            for i in range(self.n):
                assert self.rust.record_hashes(i) == self.ref.record_hashes(i)
        self.rust.check_invariants()
        self.ref.check_invariants()


@pytest.mark.parametrize("policy", ROUTERS)
def test_rust_matches_reference(policy):
    machine = type(f"RouterParity_{policy}", (RouterParity,), {"policy": policy})
    run_state_machine_as_test(machine, settings=settings(stateful_step_count=40))


@pytest.mark.parametrize("temperature", [0.05, 0.5, 3.0])
def test_dynamo_softmax_parity_over_many_draws(temperature):
    """Hundreds of sampled decisions: a draw near a boundary would expose any difference in
    the softmax arithmetic (order of sums, normalisation, the uniform draw)."""
    rnd = np.random.default_rng(int(temperature * 100))
    kw = dict(seed=11, block_size=16, num_gpu_blocks=64, router_temperature=temperature)
    a, b = RustRouter("dynamo_kv", 8, **kw), ref.Router("dynamo_kv", 8, **kw)
    picks = []
    for i in range(400):
        family, prompt = int(rnd.integers(0, 4)), int(rnd.integers(1, 600))
        hashes = family_hashes(family, 0, 99, prompt // 16)
        picks.append(a.route(i, prompt, block_hashes=hashes))
        assert picks[-1] == b.route(i, prompt, block_hashes=hashes), i
        if i >= 6:
            a.on_finish(i - 6, 3)
            b.on_finish(i - 6, 3)
    assert len(set(picks)) == 8          # sampling spreads over every replica


@settings(max_examples=40)
@given(policy=st.sampled_from(["cache_aware", "dynamo_kv", "sal_uncached"]), n=st.integers(1, 8),
       seed=st.integers(0, 2**64 - 1), temperature=st.sampled_from([0.0, 0.5]),
       requests=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(1, 30), st.integers(1, 600)),
                         min_size=1, max_size=60))
def test_cache_aware_parity_on_longer_runs(policy, n, seed, temperature, requests):
    """Many requests over a few families, finishing as they go: records fill and evict."""
    kw = dict(seed=seed, block_size=16, num_gpu_blocks=64, max_record_blocks=40, router_temperature=temperature,
              balance_abs_threshold=3)
    a, b = RustRouter(policy, n, **kw), ref.Router(policy, n, **kw)
    for i, (family, branch, split, prompt) in enumerate(requests):
        hashes = family_hashes(family, branch, split, prompt // 16)
        assert a.route(i, prompt, block_hashes=hashes) == b.route(i, prompt, block_hashes=hashes)
        if i % 3 == 2:
            a.on_progress(i - 2, 1)
            b.on_progress(i - 2, 1)
        if i % 4 == 3:
            a.on_finish(i - 3, 5)
            b.on_finish(i - 3, 5)
        assert a.replica_loads() == b.replica_loads()
    assert [a.record_hashes(i) for i in range(n)] == [b.record_hashes(i) for i in range(n)]
    a.check_invariants()
    b.check_invariants()


@settings(max_examples=30)
@given(policy=st.sampled_from(ROUTERS), n=st.integers(1, 64), seed=st.integers(0, 2**64 - 1),
       prompts=st.lists(st.integers(1, 4096), min_size=1, max_size=200))
def test_route_many_matches_route_loop(policy, n, seed, prompts):
    a, b, c = (RustRouter(policy, n, seed=seed), RustRouter(policy, n, seed=seed), ref.Router(policy, n, seed=seed))
    one = [a.route(i, p) for i, p in enumerate(prompts)]
    many = b.route_many(range(len(prompts)), prompts)
    assert isinstance(many, np.ndarray) and many.dtype == np.int64
    assert many.tolist() == one == c.route_many(range(len(prompts)), prompts).tolist()
    assert a.replica_loads() == b.replica_loads() == c.replica_loads()


# ---------------------------------------------------------------------------- the PRNG


def test_splitmix64_matches_the_published_vector():
    rng = ref.SplitMix64(1234567)
    assert [rng.next_u64() for _ in range(5)] == [
        6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431,
        16408922859458223821]


def test_random_is_seeded_and_roughly_uniform(Router):
    a = Router("random", 4, seed=42)
    b = Router("random", 4, seed=42)
    picks = [a.route(i, 1) for i in range(4000)]
    assert picks == [b.route(i, 1) for i in range(4000)]
    assert picks != [Router("random", 4, seed=43).route(i, 1) for i in range(4000)]
    counts = np.bincount(picks, minlength=4)
    assert counts.min() > 850, counts


def test_power_of_two_prefers_the_lighter_of_two(Router):
    r = Router("power_of_two", 2, seed=5)
    r.update_replica(1, waiting=3)
    for i in range(50):
        assert r.route(i, 1) == 0
        r.on_abort(i)
    # With equal load, the lower index of the two (with two replicas: always 0).
    r2 = Router("power_of_two", 2, seed=5)
    assert r2.route("x", 1) == 0
    # Three replicas: every replica is sampled sometimes.
    r3 = Router("power_of_two", 3, seed=1)
    seen = set()
    for i in range(60):
        seen.add(r3.route(i, 1))
        r3.on_abort(i)
    assert seen == {0, 1}  # with no load the lower of the two drawn wins: never 2
    r4 = Router("power_of_two", 3, seed=1)
    r4.update_replica(0, waiting=9)
    r4.update_replica(1, waiting=9)
    assert 2 in {r4.route(i, 1) for i in range(30)}


# ---------------------------------------------------------------------------- targeted behaviour


def test_round_robin_cycles(Router):
    r = Router("round_robin", 3)
    assert [r.route(i, 10) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    r.update_replica(1, waiting=100)      # load does not matter
    assert [r.route(i, 10) for i in range(7, 10)] == [1, 2, 0]


def test_least_requests_picks_the_emptiest(Router):
    r = Router("least_requests", 4)
    r.update_replica(0, waiting=3, running=2)
    r.update_replica(1, running=1)
    r.update_replica(2, waiting=2)
    r.update_replica(3, waiting=1, running=1)
    assert r.route("a", 10) == 1
    assert r.route("b", 10) == 1          # 2 = 2 = 2 outstanding on replicas 1, 2, 3: lowest index
    assert r.route("c", 10000) == 2
    r.on_finish("a", 5)
    assert r.route("d", 10) == 1


def test_least_tokens_counts_tokens(Router):
    r = Router("least_tokens", 2)
    r.route("big", 5000, max_output_tokens=10)          # replica 0
    for i in range(3):
        r.route(i, 10, predicted_output_tokens=5)       # all to replica 1: 15 tokens each
    assert [r.replica_of(i) for i in range(3)] == [1, 1, 1]
    assert r.replica(1)["outstanding_tokens"] == 45
    r.on_progress(0, 4)                                 # prefill done: 1 decode token left
    assert r.replica(1)["outstanding_tokens"] == 31


def test_sal_prefers_free_memory_over_a_short_full_queue(Router):
    r = Router("sal", 2, num_gpu_blocks=100, block_size=16, max_num_batched_tokens=2048, beta=4.0)
    r.update_replica(0, running=4, free_blocks=0)                       # short queue, full cache
    r.update_replica(1, waiting=3, queued_prefill_tokens=1000)          # longer queue, free cache
    assert r.route("x", 500) == 1
    # least_tokens would go the other way.
    lt = Router("least_tokens", 2, num_gpu_blocks=100)
    lt.update_replica(0, running=4, free_blocks=0)
    lt.update_replica(1, waiting=3, queued_prefill_tokens=1000)
    assert lt.route("x", 500) == 0


def test_sal_start_delay_formula():
    load = ref.ReplicaLoad(num_gpu_blocks=10, block_size=16, max_num_batched_tokens=100,
                           running=2, queued_prefill_tokens=60, used_blocks=5)
    # queued = 60 + 100 = 160 > free 5 * 16 = 80: deficit 80, release 2 * 4.0 = 8 per iteration
    assert ref.sal_start_delay(load, 100, 4.0) == 10.0
    load.running = 0
    assert ref.sal_start_delay(load, 100, 4.0) == math.inf      # nothing runs: cannot free memory
    assert ref.sal_start_delay(load, 10, 4.0) == 0.7           # fits: queue wait (60 + 10) / 100


def test_sal_infinite_delays_tie_on_requests(Router):
    r = Router("sal", 3, num_gpu_blocks=1, block_size=4)
    r.update_replica(0, waiting=2, queued_prefill_tokens=1)
    r.update_replica(1, waiting=1, queued_prefill_tokens=1)
    r.update_replica(2, waiting=1, queued_prefill_tokens=1)
    assert r.route("x", 100) == 1    # all inf: fewest outstanding requests, then lowest index


def test_llumnix_most_free_per_seat(Router):
    r = Router("llumnix", 3, num_gpu_blocks=100, block_size=10)
    r.update_replica(0, free_blocks=60, running=2)                           # 60 / 3 = 20
    r.update_replica(1, free_blocks=50, running=1)                           # 50 / 2 = 25
    r.update_replica(2, free_blocks=90, running=0, queued_prefill_tokens=651)  # (90 - 66) / 1 = 24
    assert r.route("x", 1) == 1
    r.update_replica(1, queued_prefill_tokens=0)                             # 50 / 2 = 25 again
    r.update_replica(2, queued_prefill_tokens=641)                           # (90 - 65) / 1 = 25: tie
    assert r.route("y", 1) == 2   # tie: replica 2 has fewer outstanding requests (0 < 2)
    r.update_replica(0, free_blocks=75, running=2, waiting=0)                # 75 / 3 = 25: tie, 2 requests
    r.update_replica(2, free_blocks=50, running=1, waiting=1, queued_prefill_tokens=0)
    assert r.route("z", 1) == 0   # three-way tie at 25, 2 outstanding each: lowest index


@pytest.mark.parametrize("policy", ["least_requests", "least_tokens", "llumnix", "sal"])
def test_ties_go_to_the_lowest_index(Router, policy):
    r = Router(policy, 5)
    for i in range(3):                       # an empty cluster: every score ties
        assert r.route(i, 8) == 0
        r.on_abort(i)
    r.update_replica(0, waiting=1, queued_prefill_tokens=8, remaining_decode_tokens=256)
    assert r.route("x", 8) == 1


@pytest.mark.parametrize("policy", ROUTERS)
def test_one_replica_always_zero(Router, policy):
    r = Router(policy, 1, seed=9)
    assert {r.route(i, 1 + i) for i in range(20)} == {0}


def test_bookkeeping_follows_a_request(Router):
    r = Router("least_requests", 2, num_gpu_blocks=64, block_size=4, prior_output_tokens=7)
    r.route("a", 9, max_output_tokens=10)
    assert r.replica(0) == {"waiting": 1, "running": 0, "queued_prefill_tokens": 9,
                            "queued_prefill_uncached_tokens": 9, "remaining_decode_tokens": 7,
                            "used_blocks": 0, "free_blocks": 64, "num_gpu_blocks": 64, "block_size": 4,
                            "max_num_batched_tokens": 8192, "outstanding_requests": 1, "outstanding_tokens": 16,
                            "record_blocks": 0, "active_blocks": 0}
    r.on_progress("a", 1)
    load = r.replica(0)
    assert (load["waiting"], load["running"], load["queued_prefill_tokens"]) == (0, 1, 0)
    assert (load["used_blocks"], load["remaining_decode_tokens"]) == (3, 6)     # ceil(10 / 4)
    r.on_progress("a", 4)
    assert r.replica(0)["used_blocks"] == 4                                      # ceil(13 / 4)
    r.check_invariants()
    r.on_finish("a", 6)
    assert r.replica(0)["outstanding_requests"] == 0 and r.replica(0)["free_blocks"] == 64
    assert r.mean_output_tokens == 6 and r.beta == 15 / 6 and r.num_finished == 1
    r.route("b", 3)
    assert r.replica(0)["remaining_decode_tokens"] == 6      # the learned mean, fixed at routing
    r.on_abort("b")
    assert r.num_finished == 1 and len(r) == 0 and "b" not in r


def test_beta_prior_and_override(Router):
    assert Router("sal", 2).beta == (1024 + 256) / 256
    assert Router("sal", 2, prior_input_tokens=300, prior_output_tokens=100).beta == 4.0
    assert Router("sal", 2, beta=2.5).beta == 2.5
    r = Router("sal", 2)
    r.route(1, 100)
    r.on_finish(1, 0)              # no output yet: still the prior
    assert r.beta == 5.0
    r.route(2, 30)
    r.on_finish(2, 10)
    assert r.beta == (130 + 10) / 10


def test_snapshots_and_saturation(Router):
    r = Router("least_requests", 2, num_gpu_blocks=10, block_size=1)
    r.route("a", 4)
    r.on_progress("a", 2)
    r.update_replica(0, waiting=0, running=0, queued_prefill_tokens=0, remaining_decode_tokens=0, free_blocks=10)
    r.on_finish("a", 3)          # a stale snapshot: counters stay at zero, blocks stay free
    load = r.replica(0)
    assert (load["running"], load["free_blocks"], load["used_blocks"]) == (0, 10, 0)
    r.check_invariants()         # snapshotted replicas are exempt from the sum check


def test_heterogeneous_capacity(Router):
    r = Router("sal", 3, num_gpu_blocks=[10, 1000, 10], block_size=[16, 16, 8], max_num_batched_tokens=512)
    assert [r.replica(i)["num_gpu_blocks"] for i in range(3)] == [10, 1000, 10]
    assert r.replica(2)["block_size"] == 8
    r.update_replica(0, running=1)
    r.update_replica(1, running=1)
    r.update_replica(2, running=1)
    assert r.route("x", 1000) == 1


# ---------------------------------------------------------------------------- cache-aware routers


def chain(family: int, n: int) -> list[int]:
    return [family * 1000 + j for j in range(n)]


def test_cache_aware_sends_a_prefix_back_and_falls_back_to_the_smallest_record(Router):
    r = Router("cache_aware", 3, block_size=4, num_gpu_blocks=64)
    a = chain(1, 8)                                      # 8 blocks of 4 tokens
    assert r.route(1, 34, block_hashes=a) == 0           # empty records tie: replica 0
    assert r.replica(0)["record_blocks"] == 8
    assert r.route(2, 34, block_hashes=a[:6]) == 0       # 24 / 34 cached > 0.3: back to 0
    assert r.route(3, 34, block_hashes=chain(2, 8)) == 1  # no match: smallest record (1 and 2 tie)
    assert r.route(4, 34, block_hashes=chain(3, 8)) == 2
    # 8 / 34 = 0.24 <= 0.3: not enough to follow the match; the smallest record decides, and all
    # three hold 8 blocks: fewest requests (1 and 2 have one each), then the lowest index.
    assert r.route(5, 34, block_hashes=chain(2, 2)) == 1
    assert r.route(6, 34, block_hashes=a, overlap_blocks=[0, 0, 8]) == 2   # exact overlap wins
    assert r.replica(0)["queued_prefill_uncached_tokens"] == 34 + (34 - 24)
    assert r.replica(2)["queued_prefill_uncached_tokens"] == 34 + 2
    r.check_invariants()


def test_cache_aware_balances_before_following_prefixes(Router):
    r = Router("cache_aware", 2, block_size=4, balance_abs_threshold=2, balance_rel_threshold=1.5)
    a = chain(1, 4)
    assert r.route(0, 16, block_hashes=a) == 0
    for i in range(1, 3):                                 # loads 1 vs 0, then 2 vs 0: not over 2
        assert r.route(i, 16, block_hashes=a) == 0        # balanced: the prefix keeps winning
    # Loads 3 vs 0: 3 - 0 > 2 and 3 > 0 * 1.5: imbalanced, the least loaded takes it...
    assert r.route(3, 16, block_hashes=a) == 1
    assert r.record_hashes(1) == list(reversed(a))        # ... and records it there too
    r.on_finish(0, 1)                                     # loads 2 vs 1: balanced again
    assert r.route(4, 16, block_hashes=a) == 1            # both match fully: the fewer requests
    assert r.cache_threshold == 0.3 and r.balance_abs_threshold == 2 and r.balance_rel_threshold == 1.5


def test_cache_aware_defaults_are_sglangs():
    for cls in IMPLS.values():
        r = cls("cache_aware", 2)
        assert (r.cache_threshold, r.balance_abs_threshold, r.balance_rel_threshold) == (0.3, 64, 1.5)
        assert (r.overlap_score_weight, r.router_temperature) == (1.0, 0.0)
        assert list(r.max_record_blocks) == [8192, 8192]


def test_records_evict_least_recently_used_leaves_first(Router):
    r = Router("cache_aware", 1, block_size=4, max_record_blocks=5)
    for f in range(4):
        r.route(f, 64, block_hashes=chain(f, 3))
        assert r.replica(0)["record_blocks"] <= 5
    # The newest prefix whole; the one before it lost its deepest block first.
    assert r.record_hashes(0) == [2001, 2000, 3002, 3001, 3000]
    assert r.max_record_blocks == [5]


def test_dynamo_cost_by_hand(Router):
    r = Router("dynamo_kv", 2, block_size=4, num_gpu_blocks=64)
    a = chain(1, 8)
    assert r.route(1, 34, block_hashes=a) == 0
    assert r.replica(0)["active_blocks"] == 9                       # 8 hashed + the partial block
    # Replica 0: prefill (34 queued + 34 - 32 cached) / 4 = 9, decode 9 + (9 - 8) = 10 -> 19;
    # replica 1: prefill 34 / 4 = 8.5, decode 9 -> 17.5.
    assert r.route(2, 34, block_hashes=a) == 1
    r.on_progress(1, 1)
    r.on_progress(2, 1)
    # Now both: prefill 2 / 4 = 0.5, decode 9 + 1 = 10: a tie, equal records: replica 0.
    assert r.route(3, 34, block_hashes=a) == 0
    assert r.replica(0)["active_blocks"] == 10                      # the shared 8 once, 2 partial
    r.on_progress(1, 7)                                             # 41 tokens: 11 blocks, 3 own
    assert r.replica(0)["active_blocks"] == 8 + 3 + 1
    # Weight 0: decode blocks alone (pure load), the prefix is ignored.
    w0 = Router("dynamo_kv", 2, block_size=4, overlap_score_weight=0.0)
    assert w0.route(1, 34, block_hashes=a) == 0
    assert w0.route(2, 34, block_hashes=a) == 1                     # decode 9 + 1 (sharing 8) > 9
    r.check_invariants()


def test_dynamo_temperature_samples_with_the_seed(Router):
    def picks(seed, temperature):
        r = Router("dynamo_kv", 4, seed=seed, block_size=4, router_temperature=temperature)
        out = []
        for i in range(200):
            out.append(r.route(i, 40, block_hashes=chain(i % 3, 10)))
            if i >= 8:
                r.on_finish(i - 8, 2)
        return out
    hot = picks(5, 2.0)
    assert hot == picks(5, 2.0) and hot != picks(6, 2.0)
    assert set(hot) == {0, 1, 2, 3}
    cold = picks(5, 0.0)
    assert cold == picks(6, 0.0)                                    # temperature 0 draws nothing


def test_softmax_pick_matches_dynamos_rule():
    assert ref.softmax_pick([1.0, 2.0, 3.0], 1e-3, 0.999) == 0      # near 0 K: the cheapest
    assert ref.softmax_pick([3.0, 2.0, 1.0], 1e-3, 0.5) == 2
    assert ref.softmax_pick([1.0, 1.0], 1.0, 0.5) == 0              # all equal: uniform
    assert ref.softmax_pick([1.0, 1.0], 1.0, 0.75) == 1
    # p = softmax(-c / (max - min) / t): with t = 1, costs 0 and 1 give e^0 : e^-1.
    p0 = 1.0 / (1.0 + math.exp(-1.0))
    assert ref.softmax_pick([0.0, 1.0], 1.0, p0 - 1e-9) == 0
    assert ref.softmax_pick([0.0, 1.0], 1.0, p0 + 1e-9) == 1


def test_sal_uncached_counts_only_what_must_be_computed(Router):
    kw = dict(block_size=16, num_gpu_blocks=1000, max_num_batched_tokens=1000)
    r, plain = Router("sal_uncached", 2, **kw), Router("sal", 2, **kw)
    for x in (r, plain):
        x.update_replica(0, waiting=1, queued_prefill_tokens=900, queued_prefill_uncached_tokens=100)
        x.update_replica(1, waiting=1, queued_prefill_tokens=300, queued_prefill_uncached_tokens=300)
    # Replica 0 caches 600 of the 800 tokens: (100 + 200) vs (300 + 800) tokens to compute.
    assert r.route("x", 800, overlap_blocks=[600 // 16, 0]) == 0
    assert plain.route("x", 800, overlap_blocks=[600 // 16, 0]) == 1   # 1700 vs 1100 tokens queued
    assert ref.sal_uncached_start_delay(ref.ReplicaLoad(1000, 16, 1000, queued_prefill_uncached_tokens=100),
                                        200, 1.0) == 0.3


def test_token_ids_and_block_hashes_give_the_same_decisions(Router):
    tokens = list(range(100))
    hashes = halffull.block_hashes(tokens, 16)
    a = Router("cache_aware", 3, block_size=16)
    b = Router("cache_aware", 3, block_size=16)
    for i, n in enumerate([100, 64, 90, 33, 100]):
        other = [t + 7 for t in tokens[:n]] if i % 2 else tokens[:n]
        h = halffull.block_hashes(other, 16)
        assert a.route(i, prompt_token_ids=other) == b.route(i, n, block_hashes=h)
    assert a.replica_loads() == b.replica_loads()
    assert len(hashes) == 6
    np_route = Router("dynamo_kv", 2, block_size=16)
    assert np_route.route("n", prompt_token_ids=np.arange(40)) == 0
    assert np_route.route("m", 40, block_hashes=np.asarray(halffull.block_hashes(list(range(32)), 16)[:2],
                                                             dtype=object)) == 1


@pytest.mark.parametrize("policy", ["cache_aware", "dynamo_kv", "sal_uncached"])
def test_route_many_with_hashes_equals_route_in_a_loop(Router, policy):
    hashes = [chain(i % 3, i % 5) for i in range(30)]
    overlap = [None if i % 4 else [i % 2, 0, 1] for i in range(30)]
    a, b = Router(policy, 3, block_size=4, seed=3), Router(policy, 3, block_size=4, seed=3)
    one = [a.route(i, 20, block_hashes=hashes[i], overlap_blocks=overlap[i]) for i in range(30)]
    many = b.route_many(range(30), [20] * 30, block_hashes=hashes, overlap_blocks=overlap)
    assert many.tolist() == one
    assert a.replica_loads() == b.replica_loads()


def test_prefix_argument_errors_change_nothing(Router):
    r = Router("dynamo_kv", 2, block_size=4)
    r.route("a", 34, block_hashes=chain(1, 8))
    before = state(r)
    cases = [
        ("block_hashes", None, lambda: r.route("b", 34, block_hashes=[1], prompt_token_ids=[1] * 34)),
        ("block_hashes", None, lambda: r.route("b", 34, block_hashes=chain(1, 9))),     # 9 > 34 // 4
        ("block_hashes", 1, lambda: r.route("b", 34, block_hashes=[1, -1])),
        ("block_hashes", 0, lambda: r.route("b", 34, block_hashes=[1.0])),
        ("block_hashes", None, lambda: r.route("b", 34, block_hashes=7)),
        ("prompt_token_ids", 2, lambda: r.route("b", prompt_token_ids=[1, 2, -3])),
        ("prompt_token_ids", None, lambda: r.route("b", prompt_token_ids=[])),
        ("prompt_tokens", None, lambda: r.route("b", 5, prompt_token_ids=[1, 2])),
        ("prompt_tokens", None, lambda: r.route("b")),
        ("overlap_blocks", None, lambda: r.route("b", 34, overlap_blocks=[1, 2, 3])),
        ("overlap_blocks", 1, lambda: r.route("b", 34, overlap_blocks=[0, 9])),
        ("overlap_blocks", 0, lambda: r.route("b", 34, overlap_blocks=[-1, 0])),
        ("overlap_blocks", None, lambda: r.route("b", 34, overlap_blocks=3)),
        ("block_hashes", 1, lambda: r.route_many(["b", "c"], [8, 8], block_hashes=[[1], [True]])),
        ("block_hashes", None, lambda: r.route_many(["b", "c"], [8, 8], block_hashes=[[1]])),
    ]
    for field_name, index, call in cases:
        with pytest.raises(errors.InvalidArgumentError) as e:
            call()
        assert (e.value.field, e.value.index) == (field_name, index), e.value
        assert state(r) == before
    mixed = Router("cache_aware", 2, block_size=[4, 8])
    with pytest.raises(errors.InvalidArgumentError) as e:
        mixed.route("x", 64, block_hashes=[1])
    assert e.value.field == "block_hashes" and "one block size" in str(e.value)
    with pytest.raises(errors.InvalidArgumentError) as e:
        mixed.route("x", prompt_token_ids=[1] * 8)
    assert e.value.field == "prompt_token_ids"
    assert mixed.route("x", 64) == 0                   # without hashes, mixed sizes are fine
    assert mixed.route("y", 64, overlap_blocks=[16, 8]) == 1


# ---------------------------------------------------------------------------- bad input


def test_unknown_policy_lists_valid_names(Router):
    with pytest.raises(errors.ConfigError) as e:
        Router("fastest", 2)
    assert e.value.valid == ROUTERS and e.value.field == "policy"
    assert "least_requests" in str(e.value) and "sal" in str(e.value)
    with pytest.raises(ValueError):      # ConfigError is a ValueError
        Router(3, 2)


@pytest.mark.parametrize("kwargs", [
    dict(num_replicas=0), dict(num_replicas=-1), dict(num_replicas=2.0), dict(num_replicas=2**17),
    dict(seed=-1), dict(seed=2**64), dict(seed=1.5), dict(beta=float("nan")), dict(beta=0.0), dict(beta=-1.0),
    dict(beta=float("inf")), dict(beta="1"), dict(num_gpu_blocks=0), dict(block_size=-4),
    dict(num_gpu_blocks=[4, 4, 4]), dict(max_num_batched_tokens=[1, 0]), dict(block_size=2.0),
    dict(prior_output_tokens=0), dict(prior_input_tokens=2**41),
    dict(cache_threshold=1.5), dict(cache_threshold=-0.1), dict(cache_threshold="0.3"),
    dict(balance_abs_threshold=-1), dict(balance_abs_threshold=1.5), dict(balance_rel_threshold=float("nan")),
    dict(balance_rel_threshold=-1.0), dict(max_record_blocks=0), dict(max_record_blocks=2**41),
    dict(overlap_score_weight=-1.0), dict(overlap_score_weight=float("inf")), dict(router_temperature=-0.5),
    dict(router_temperature=True),
])
def test_bad_config(Router, kwargs):
    args = dict(policy="sal", num_replicas=2)
    args.update(kwargs)
    with pytest.raises(errors.ConfigError) as e:
        Router(args.pop("policy"), args.pop("num_replicas"), **args)
    assert e.value.field == next(iter(kwargs))


def test_errors_leave_state_unchanged(Router):
    twin = Router("power_of_two", 5, seed=11, num_gpu_blocks=20, block_size=4)
    r = Router("power_of_two", 5, seed=11, num_gpu_blocks=20, block_size=4)
    for t in (twin, r):
        t.route("a", 10, max_output_tokens=8)
        t.route(7, 10)
        t.on_progress("a", 2)
    before = state(r)
    cases = [
        (errors.DuplicateRequestError, lambda: r.route("a", 5)),
        (errors.DuplicateRequestError, lambda: r.route_many(["x", "y", "x"], [1, 1, 1])),
        (errors.DuplicateRequestError, lambda: r.route_many(["x", 7], [1, 1])),
        (errors.InvalidArgumentError, lambda: r.route("b", 0)),
        (errors.InvalidArgumentError, lambda: r.route("b", -3)),
        (errors.InvalidArgumentError, lambda: r.route("b", float("nan"))),
        (errors.InvalidArgumentError, lambda: r.route("b", 5, max_output_tokens=0)),
        (errors.InvalidArgumentError, lambda: r.route("b", 5, predicted_output_tokens=-1)),
        (errors.InvalidArgumentError, lambda: r.route(1.5, 5)),
        (errors.InvalidArgumentError, lambda: r.route(True, 5)),
        (errors.InvalidArgumentError, lambda: r.route(2**70, 5)),
        (errors.InvalidArgumentError, lambda: r.route_many(["x", "y"], [1])),
        (errors.InvalidArgumentError, lambda: r.route_many(["x", "y"], [1, 0])),
        (errors.UnknownRequestError, lambda: r.on_finish("zz", 1)),
        (errors.UnknownRequestError, lambda: r.on_progress("zz", 1)),
        (errors.UnknownRequestError, lambda: r.on_abort("zz")),
        (errors.UnknownRequestError, lambda: r.replica_of("zz")),
        (errors.InvalidArgumentError, lambda: r.on_finish("a", -1)),
        (errors.InvalidArgumentError, lambda: r.on_finish("a", 1)),          # went backwards
        (errors.InvalidArgumentError, lambda: r.on_progress("a", 9)),        # past max_output_tokens
        (errors.InvalidArgumentError, lambda: r.on_progress("a", 2.0)),
        (errors.InvalidArgumentError, lambda: r.update_replica(5, waiting=1)),
        (errors.InvalidArgumentError, lambda: r.update_replica(-1, waiting=1)),
        (errors.InvalidArgumentError, lambda: r.update_replica(0, waiting=1, free_blocks=21)),
        (errors.InvalidArgumentError, lambda: r.update_replica(0, waiting=1, running=-1)),
        (errors.InvalidArgumentError, lambda: r.replica(5)),
    ]
    for cls, call in cases:
        with pytest.raises(cls) as e:
            call()
        assert isinstance(e.value, errors.HalffullError)
        assert state(r) == before, e.value
    # The random stream did not move either: the next choices equal an untouched twin's.
    assert [r.route(f"n{i}", 3) for i in range(20)] == [twin.route(f"n{i}", 3) for i in range(20)]


def test_error_attributes(Router):
    r = Router("sal", 3)
    r.route("a", 5)
    with pytest.raises(errors.DuplicateRequestError) as e:
        r.route("a", 5)
    assert e.value.request_id == "a"
    with pytest.raises(errors.UnknownRequestError) as e:
        r.on_finish(42, 1)
    assert e.value.request_id == 42 and isinstance(e.value, KeyError)
    with pytest.raises(errors.InvalidArgumentError) as e:
        r.update_replica(3, waiting=0)
    assert (e.value.field, e.value.value, e.value.num_replicas) == ("index", 3, 3)
    with pytest.raises(errors.InvalidArgumentError) as e:
        r.route("b", -1)
    assert (e.value.field, e.value.value) == ("prompt_tokens", -1)
    with pytest.raises(errors.DuplicateRequestError) as e:
        r.route_many(["c", "a"], [1, 1])
    assert e.value.request_id == "a"


def test_ids_are_int_or_str_and_distinct(Router):
    r = Router("round_robin", 2)
    r.route(1, 5)
    r.route("1", 5)
    r.route(np.int64(2).item(), 5)
    assert 1 in r and "1" in r and 2 in r and 3 not in r and 1.0 not in r and None not in r
    with pytest.raises(errors.InvalidArgumentError):
        r.route(np.int64(3), 5)          # like the scheduler: Python ints and strs only
    r.route("x", np.int64(5), max_output_tokens=np.int32(3))   # counts may be numpy ints
    assert repr(r).startswith("Router(policy='round_robin', num_replicas=2")
