"""The reference cluster router (load balancer): plain Python, written to be read, exact.

It is the oracle the Hypothesis tests compare ``halffull.Router`` (Rust) against: same
constructor, methods, errors and choices, step for step. DESIGN §6.

What the router knows about each replica (``ReplicaLoad``)::

    waiting, running            requests dispatched here: not yet started / started
    queued_prefill_tokens       prompt tokens of the waiting requests
    remaining_decode_tokens     sum of max(0, decode estimate - generated) over outstanding
    used_blocks                 KV blocks of running requests: ceil((prompt + generated) / block_size)
    num_gpu_blocks, block_size, max_num_batched_tokens      capacity, fixed

    outstanding requests = waiting + running
    outstanding tokens   = queued_prefill_tokens + remaining_decode_tokens
    free_blocks          = max(0, num_gpu_blocks - used_blocks)
    queued_blocks        = ceil(queued_prefill_tokens / block_size)

Load comes from the router's own bookkeeping (``route`` → waiting; the first ``on_progress``
→ running; ``on_finish`` / ``on_abort`` → gone) and from engine snapshots
(``update_replica`` overwrites fields; later bookkeeping applies on top, never below zero).

Policies. Every load-based policy picks the replica minimizing
``(score, outstanding requests, index)``:

- ``round_robin``: 0, 1, ..., n-1, 0, ...
- ``random``: ``rng.below(n)`` (one draw per decision, also when n == 1).
- ``power_of_two``: ``i = below(n)``, ``j = below(n - 1)``, ``j += 1 if j >= i``; the one with
  fewer outstanding requests, the lower index on a tie (n == 1: replica 0, no draw).
- ``least_requests``: score 0 (so: fewest outstanding requests, then lowest index).
- ``least_tokens``: fewest outstanding tokens.
- ``llumnix``: most ``(free_blocks - queued_blocks) / (running + 1)``, compared exactly.
- ``sal``: smallest expected start delay in engine iterations (``sal_start_delay``).

The random policies use SplitMix64 (below), bit for bit the same as the Rust core's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from .._util import as_float, check_text_id, items, shown
from ..errors import (
    ConfigError,
    DuplicateRequestError,
    InvalidArgumentError,
    InvariantError,
    UnknownRequestError,
)
from ..limits import MAX_COUNT, MAX_REPLICAS

RequestId = str | int

_MASK64 = 2**64 - 1

ROUTERS = ("round_robin", "random", "power_of_two", "least_requests", "least_tokens", "llumnix", "sal")

DEFAULT_NUM_GPU_BLOCKS = 8192
DEFAULT_BLOCK_SIZE = 16
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
DEFAULT_PRIOR_INPUT_TOKENS = 1024
DEFAULT_PRIOR_OUTPUT_TOKENS = 256


# ---------------------------------------------------------------------------- randomness


class SplitMix64:
    """SplitMix64 (Steele, Lea, Flood 2014), as in Vigna's ``splitmix64.c``."""

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK64

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        """Uniform in ``[0, n)`` without modulo bias (Lemire's multiply-and-reject)."""
        if n == 0:
            return 0
        m = self.next_u64() * n
        low = m & _MASK64
        if low < n:
            threshold = (2**64 - n) % n
            while low < threshold:
                m = self.next_u64() * n
                low = m & _MASK64
        return m >> 64


# ---------------------------------------------------------------------------- state


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class ReplicaLoad:
    num_gpu_blocks: int
    block_size: int
    max_num_batched_tokens: int
    waiting: int = 0
    running: int = 0
    queued_prefill_tokens: int = 0
    remaining_decode_tokens: int = 0
    used_blocks: int = 0
    snapshotted: bool = False          # got an update_replica: exempt from the sum invariant

    @property
    def outstanding_requests(self) -> int:
        return self.waiting + self.running

    @property
    def outstanding_tokens(self) -> int:
        return self.queued_prefill_tokens + self.remaining_decode_tokens

    @property
    def free_blocks(self) -> int:
        return max(0, self.num_gpu_blocks - self.used_blocks)

    @property
    def queued_blocks(self) -> int:
        return _ceil_div(self.queued_prefill_tokens, self.block_size)

    def as_dict(self) -> dict[str, int]:
        return {
            "waiting": self.waiting,
            "running": self.running,
            "queued_prefill_tokens": self.queued_prefill_tokens,
            "remaining_decode_tokens": self.remaining_decode_tokens,
            "used_blocks": self.used_blocks,
            "free_blocks": self.free_blocks,
            "num_gpu_blocks": self.num_gpu_blocks,
            "block_size": self.block_size,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "outstanding_requests": self.outstanding_requests,
            "outstanding_tokens": self.outstanding_tokens,
        }


@dataclass
class LiveRequest:
    replica: int
    prompt_tokens: int
    max_output_tokens: int | None
    decode_estimate: int               # fixed when routed
    output_tokens: int = 0
    started: bool = False
    used_blocks: int = 0               # charged to the replica's used_blocks (0 until started)

    @property
    def remaining_decode(self) -> int:
        return max(0, self.decode_estimate - self.output_tokens)


# ---------------------------------------------------------------------------- policies


def llumnix_freeness(load: ReplicaLoad) -> Fraction:
    """Free KV blocks per seat after the queue is served: ``(free - queued) / (running + 1)``."""
    return Fraction(load.free_blocks - load.queued_blocks, load.running + 1)


def sal_start_delay(load: ReplicaLoad, prompt_tokens: int, beta: float) -> float:
    """SAL's expected iterations before a request with ``prompt_tokens`` can start here::

        queued     = queued_prefill_tokens + prompt
        queue_wait = queued / max_num_batched_tokens
        deficit    = queued - free_blocks * block_size      (= mem(r) - free_kv_tokens(s))
        mem_wait   = 0 if deficit <= 0, inf if nothing runs, else deficit / (running * beta)
        delay      = max(mem_wait, queue_wait)
    """
    queued = load.queued_prefill_tokens + prompt_tokens
    queue_wait = float(queued) / float(load.max_num_batched_tokens)
    free_tokens = load.free_blocks * load.block_size
    if queued <= free_tokens:
        mem_wait = 0.0
    elif load.running == 0:
        mem_wait = math.inf
    else:
        mem_wait = float(queued - free_tokens) / (float(load.running) * beta)
    return max(mem_wait, queue_wait)


class Policy:
    """Picks a replica; may keep its own state (a pointer, a generator) seeded at construction."""

    name = ""

    def __init__(self, seed: int) -> None:
        pass

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float) -> int:
        raise NotImplementedError


def _best(replicas: list[ReplicaLoad], score: Any) -> int:
    """The index minimizing ``(score(replica), outstanding requests, index)``."""
    return min(range(len(replicas)), key=lambda i: (score(replicas[i]), replicas[i].outstanding_requests, i))


class RoundRobin(Policy):
    name = "round_robin"

    def __init__(self, seed: int) -> None:
        self.next = 0

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float) -> int:
        i = self.next % len(replicas)
        self.next = (i + 1) % len(replicas)
        return i


class Random(Policy):
    name = "random"

    def __init__(self, seed: int) -> None:
        self.rng = SplitMix64(seed)

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float) -> int:
        return self.rng.below(len(replicas))


class PowerOfTwo(Policy):
    name = "power_of_two"

    def __init__(self, seed: int) -> None:
        self.rng = SplitMix64(seed)

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float) -> int:
        n = len(replicas)
        if n < 2:
            return 0
        i = self.rng.below(n)
        j = self.rng.below(n - 1)
        if j >= i:
            j += 1
        lo, hi = min(i, j), max(i, j)
        return hi if replicas[hi].outstanding_requests < replicas[lo].outstanding_requests else lo


class LeastRequests(Policy):
    name = "least_requests"

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float) -> int:
        return _best(replicas, lambda r: 0)


class LeastTokens(Policy):
    name = "least_tokens"

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float) -> int:
        return _best(replicas, lambda r: r.outstanding_tokens)


class Llumnix(Policy):
    name = "llumnix"

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float) -> int:
        return _best(replicas, lambda r: -llumnix_freeness(r))


class Sal(Policy):
    name = "sal"

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float) -> int:
        return _best(replicas, lambda r: sal_start_delay(r, prompt_tokens, beta))


POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (RoundRobin, Random, PowerOfTwo, LeastRequests, LeastTokens, Llumnix, Sal)
}
assert tuple(POLICIES) == ROUTERS


# ---------------------------------------------------------------------------- checks


def _type_name(value: Any) -> str:
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


def _check_id(request_id: Any) -> RequestId:
    if isinstance(request_id, str):
        return str(check_text_id(request_id, InvalidArgumentError))
    if isinstance(request_id, int) and not isinstance(request_id, bool):
        if not -(2**63) <= request_id < 2**63:
            raise InvalidArgumentError("an int request_id must fit in 64 bits", field="request_id")
        return int(request_id)
    raise InvalidArgumentError(f"request_id must be a str or an int, got {_type_name(request_id)}",
                               field="request_id")


def _check_count(name: str, value: Any, minimum: int, error: type = InvalidArgumentError) -> int:
    if not _is_int(value):
        raise error(f"{name} must be an int, got {_type_name(value)} {shown(value)}", field=name, value=value)
    v = int(value)
    if v < minimum or v > MAX_COUNT:
        raise error(f"{name} must be in [{minimum}, 2**40], got {shown(value)}", field=name, value=value)
    return v


def _optional_count(name: str, value: Any, minimum: int) -> int | None:
    return None if value is None else _check_count(name, value, minimum)


def _per_replica(name: str, value: Any, n: int, default: int) -> list[int]:
    if value is None:
        return [default] * n
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        return [_check_count(name, value, 1, ConfigError)] * n
    return [_check_count(name, v, 1, ConfigError)
            for v in items(name, value, "ints (one per replica)", ConfigError)]


def _one_per_replica(name: str, values: list[int], n: int) -> None:
    if len(values) != n:
        raise ConfigError(f"{name} has {len(values)} entries; expected one per replica ({n})", field=name)


# ---------------------------------------------------------------------------- router


class Router:
    """The reference router. Same constructor, methods and choices as ``halffull.Router``."""

    def __init__(
        self,
        policy: str,
        num_replicas: int,
        *,
        seed: int | None = 0,
        num_gpu_blocks: int | Sequence[int] | None = DEFAULT_NUM_GPU_BLOCKS,
        block_size: int | Sequence[int] | None = DEFAULT_BLOCK_SIZE,
        max_num_batched_tokens: int | Sequence[int] | None = DEFAULT_MAX_NUM_BATCHED_TOKENS,
        beta: float | None = None,
        prior_input_tokens: int | None = DEFAULT_PRIOR_INPUT_TOKENS,
        prior_output_tokens: int | None = DEFAULT_PRIOR_OUTPUT_TOKENS,
    ) -> None:
        if not isinstance(policy, str):
            raise ConfigError(f"policy must be a str naming a router; valid: {', '.join(ROUTERS)}",
                              field="policy", value=policy, valid=ROUTERS)
        if not isinstance(num_replicas, int) or isinstance(num_replicas, bool):
            raise ConfigError(f"num_replicas must be an int, got {_type_name(num_replicas)}",
                              field="num_replicas", value=num_replicas)
        seed = 0 if seed is None else seed
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise ConfigError(f"seed must be an int in [0, 2**64), got {shown(seed)}", field="seed", value=seed)
        if beta is not None and (isinstance(beta, bool) or not isinstance(beta, (int, float))):
            raise ConfigError(f"beta must be a number, got {_type_name(beta)}", field="beta", value=beta)
        if policy not in POLICIES:
            raise ConfigError(f"unknown router policy {shown(policy)}; valid: {', '.join(ROUTERS)}",
                              field="policy", value=policy, valid=ROUTERS)
        if not 1 <= num_replicas <= MAX_REPLICAS:
            raise ConfigError(f"num_replicas must be in [1, {MAX_REPLICAS}], got {num_replicas}",
                              field="num_replicas", value=num_replicas)
        n = num_replicas
        blocks = _per_replica("num_gpu_blocks", num_gpu_blocks, n, DEFAULT_NUM_GPU_BLOCKS)
        sizes = _per_replica("block_size", block_size, n, DEFAULT_BLOCK_SIZE)
        budgets = _per_replica("max_num_batched_tokens", max_num_batched_tokens, n, DEFAULT_MAX_NUM_BATCHED_TOKENS)
        self.prior_input_tokens = DEFAULT_PRIOR_INPUT_TOKENS if prior_input_tokens is None else \
            _check_count("prior_input_tokens", prior_input_tokens, 1, ConfigError)
        self.prior_output_tokens = DEFAULT_PRIOR_OUTPUT_TOKENS if prior_output_tokens is None else \
            _check_count("prior_output_tokens", prior_output_tokens, 1, ConfigError)
        # Every value checked, then the lengths (a bad value is named before a short list).
        for name, values in (("num_gpu_blocks", blocks), ("block_size", sizes), ("max_num_batched_tokens", budgets)):
            _one_per_replica(name, values, n)
        if beta is not None:
            if isinstance(beta, (bool, np.bool_)) or not isinstance(beta, (int, float, np.integer, np.floating)):
                raise ConfigError(f"beta must be a number, got {_type_name(beta)} {shown(beta)}", field="beta",
                                  value=beta)
            beta = as_float(beta)
            if not (math.isfinite(beta) and 0.0 < beta <= 1e12):
                raise ConfigError(f"beta must be finite and in (0, 1e12], got {beta}", field="beta")
        self.beta_override = beta
        self.seed = seed
        self._policy = POLICIES[policy](seed)
        self.replicas = [ReplicaLoad(b, s, m) for b, s, m in zip(blocks, sizes, budgets, strict=True)]
        self.requests: dict[RequestId, LiveRequest] = {}
        self.num_finished = 0
        self.sum_input_tokens = 0
        self.sum_output_tokens = 0

    # -- read-only

    @property
    def policy(self) -> str:
        return self._policy.name

    @property
    def num_replicas(self) -> int:
        return len(self.replicas)

    @property
    def beta(self) -> float:
        """KV tokens a running request frees per iteration: ``(Σ in + Σ out) / Σ out`` over
        finished requests (the priors until one with output has finished), or the override."""
        if self.beta_override is not None:
            return self.beta_override
        if self.sum_output_tokens > 0:
            total_in, total_out = self.sum_input_tokens, self.sum_output_tokens
        else:
            total_in, total_out = self.prior_input_tokens, self.prior_output_tokens
        return float(total_in + total_out) / float(total_out)

    @property
    def mean_output_tokens(self) -> int:
        """Mean output length of finished requests, rounded half up (the prior before any)."""
        if self.num_finished == 0:
            return self.prior_output_tokens
        n = self.num_finished
        return (2 * self.sum_output_tokens + n) // (2 * n)

    def decode_estimate(self, max_output_tokens: int | None, predicted_output_tokens: int | None) -> int:
        guess = self.mean_output_tokens if predicted_output_tokens is None else predicted_output_tokens
        return guess if max_output_tokens is None else min(guess, max_output_tokens)

    def __len__(self) -> int:
        return len(self.requests)

    def __contains__(self, request_id: Any) -> bool:
        try:
            return _check_id(request_id) in self.requests
        except InvalidArgumentError:
            return False

    def __repr__(self) -> str:
        return f"Router(policy={self.policy!r}, num_replicas={self.num_replicas}, live={len(self)})"

    def _index(self, index: Any) -> int:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise InvalidArgumentError(f"index must be an int, got {_type_name(index)}", field="index", value=index)
        if not 0 <= int(index) < self.num_replicas:
            raise InvalidArgumentError(
                f"replica index {shown(index)} is out of range: the router has {self.num_replicas} replicas",
                field="index", value=index, num_replicas=self.num_replicas)
        return int(index)

    def replica(self, index: int) -> dict[str, int]:
        return self.replicas[self._index(index)].as_dict()

    def replica_loads(self) -> list[dict[str, int]]:
        return [r.as_dict() for r in self.replicas]

    def _live(self, request_id: Any, original: Any) -> LiveRequest:
        try:
            return self.requests[request_id]
        except KeyError:
            raise UnknownRequestError(f"no live request {request_id!r}", request_id=original) from None

    def replica_of(self, request_id: RequestId) -> int:
        return self._live(_check_id(request_id), request_id).replica

    # -- routing

    def route(
        self,
        request_id: RequestId,
        prompt_tokens: int,
        max_output_tokens: int | None = None,
        predicted_output_tokens: int | None = None,
    ) -> int:
        """Pick a replica, record the request there as waiting, return the replica's index."""
        rid = _check_id(request_id)
        prompt = _check_count("prompt_tokens", prompt_tokens, 1)
        cap = _optional_count("max_output_tokens", max_output_tokens, 1)
        predicted = _optional_count("predicted_output_tokens", predicted_output_tokens, 0)
        if rid in self.requests:
            raise DuplicateRequestError(f"request {rid!r} is already live", request_id=request_id)
        return self._dispatch(rid, prompt, cap, predicted)

    def route_many(
        self,
        request_ids: Iterable[RequestId],
        prompt_tokens: Iterable[int],
        max_output_tokens: Iterable[int] | None = None,
        predicted_output_tokens: Iterable[int] | None = None,
    ) -> np.ndarray:
        """``route`` for each request in order; everything is checked first."""
        ids = items("request_ids", request_ids, "request ids", InvalidArgumentError)
        keys = [_check_id(i) for i in ids]

        def column(name: str, values: Iterable[int] | None, minimum: int) -> list[int] | None:
            if values is None and name != "prompt_tokens":      # prompt_tokens is required
                return None
            return [_check_count(name, v, minimum) for v in items(name, values, "ints", InvalidArgumentError)]

        # Every value first, then the lengths (a bad value is named before a short column).
        prompts = column("prompt_tokens", prompt_tokens, 1) or []
        caps = column("max_output_tokens", max_output_tokens, 1)
        predictions = column("predicted_output_tokens", predicted_output_tokens, 0)
        for name, values in (("prompt_tokens", prompts), ("max_output_tokens", caps),
                             ("predicted_output_tokens", predictions)):
            if values is not None and len(values) != len(ids):
                raise InvalidArgumentError(f"{name} has {len(values)} entries but request_ids has {len(ids)}",
                                           field=name)
        seen: set[RequestId] = set()
        for key, original in zip(keys, ids, strict=True):
            if key in self.requests or key in seen:
                raise DuplicateRequestError(f"request {key!r} is already live", request_id=original)
            seen.add(key)
        chosen = [
            self._dispatch(key, prompts[k], None if caps is None else caps[k],
                           None if predictions is None else predictions[k])
            for k, key in enumerate(keys)
        ]
        return np.asarray(chosen, dtype=np.int64)

    def _dispatch(self, rid: RequestId, prompt: int, cap: int | None, predicted: int | None) -> int:
        estimate = self.decode_estimate(cap, predicted)
        index = self._policy.choose(self.replicas, prompt, self.beta)
        load = self.replicas[index]
        load.waiting += 1
        load.queued_prefill_tokens += prompt
        load.remaining_decode_tokens += estimate
        self.requests[rid] = LiveRequest(replica=index, prompt_tokens=prompt, max_output_tokens=cap,
                                         decode_estimate=estimate)
        return index

    # -- feedback

    @staticmethod
    def _check_output(req: LiveRequest, output_tokens: int) -> None:
        if output_tokens < req.output_tokens:
            raise InvalidArgumentError(
                f"output_tokens is cumulative and went backwards: {output_tokens} < {req.output_tokens}",
                field="output_tokens", value=output_tokens)
        if req.max_output_tokens is not None and output_tokens > req.max_output_tokens:
            raise InvalidArgumentError(
                f"output_tokens {output_tokens} exceeds the request's max_output_tokens {req.max_output_tokens}",
                field="output_tokens", value=output_tokens)

    def on_progress(self, request_id: RequestId, output_tokens: int) -> None:
        """The request has started (prefill done) and generated ``output_tokens`` so far."""
        rid = _check_id(request_id)
        out = _check_count("output_tokens", output_tokens, 0)
        req = self._live(rid, request_id)
        self._check_output(req, out)
        load = self.replicas[req.replica]
        old_remaining = req.remaining_decode
        if not req.started:
            req.started = True
            load.waiting = max(0, load.waiting - 1)
            load.running += 1
            load.queued_prefill_tokens = max(0, load.queued_prefill_tokens - req.prompt_tokens)
        req.output_tokens = out
        used = _ceil_div(req.prompt_tokens + out, load.block_size)
        load.used_blocks += used - req.used_blocks
        req.used_blocks = used
        load.remaining_decode_tokens = max(0, load.remaining_decode_tokens - (old_remaining - req.remaining_decode))

    def on_finish(self, request_id: RequestId, output_tokens: int) -> None:
        """The request finished with ``output_tokens`` tokens; its lengths feed β."""
        rid = _check_id(request_id)
        out = _check_count("output_tokens", output_tokens, 0)
        req = self._live(rid, request_id)
        self._check_output(req, out)
        del self.requests[rid]
        self._release(req)
        self.num_finished += 1
        self.sum_input_tokens += req.prompt_tokens
        self.sum_output_tokens += out

    def on_abort(self, request_id: RequestId) -> None:
        """The request ended early; β does not learn from it."""
        rid = _check_id(request_id)
        req = self._live(rid, request_id)
        del self.requests[rid]
        self._release(req)

    def _release(self, req: LiveRequest) -> None:
        load = self.replicas[req.replica]
        if req.started:
            load.running = max(0, load.running - 1)
            load.used_blocks = max(0, load.used_blocks - req.used_blocks)
        else:
            load.waiting = max(0, load.waiting - 1)
            load.queued_prefill_tokens = max(0, load.queued_prefill_tokens - req.prompt_tokens)
        load.remaining_decode_tokens = max(0, load.remaining_decode_tokens - req.remaining_decode)

    def update_replica(
        self,
        index: int,
        *,
        waiting: int | None = None,
        running: int | None = None,
        queued_prefill_tokens: int | None = None,
        remaining_decode_tokens: int | None = None,
        free_blocks: int | None = None,
    ) -> None:
        """Overwrite the given fields of replica ``index``'s load (an engine's report)."""
        i = self._index(index)
        fields = {
            "waiting": _optional_count("waiting", waiting, 0),
            "running": _optional_count("running", running, 0),
            "queued_prefill_tokens": _optional_count("queued_prefill_tokens", queued_prefill_tokens, 0),
            "remaining_decode_tokens": _optional_count("remaining_decode_tokens", remaining_decode_tokens, 0),
        }
        free = _optional_count("free_blocks", free_blocks, 0)
        load = self.replicas[i]
        if free is not None:
            if free > load.num_gpu_blocks:
                raise InvalidArgumentError(
                    f"free_blocks {free} exceeds replica {i}'s num_gpu_blocks {load.num_gpu_blocks}",
                    field="free_blocks", value=free)
            load.used_blocks = load.num_gpu_blocks - free
        for name, value in fields.items():
            if value is not None:
                setattr(load, name, value)
        load.snapshotted = True

    def check_invariants(self) -> None:
        sums = [[0, 0, 0, 0, 0] for _ in self.replicas]
        for rid, req in self.requests.items():
            if not 0 <= req.replica < self.num_replicas:
                raise InvariantError(f"request {rid!r} is on replica {req.replica} of {self.num_replicas}")
            s = sums[req.replica]
            if req.started:
                s[1] += 1
                s[4] += req.used_blocks
            else:
                s[0] += 1
                s[2] += req.prompt_tokens
            s[3] += req.remaining_decode
        for i, (load, s) in enumerate(zip(self.replicas, sums, strict=True)):
            got = [load.waiting, load.running, load.queued_prefill_tokens, load.remaining_decode_tokens,
                   load.used_blocks]
            if not load.snapshotted and got != s:
                raise InvariantError(f"replica {i}: counters {got} but its live requests sum to {s}")


__all__ = ["ROUTERS", "Router", "SplitMix64", "llumnix_freeness", "sal_start_delay"]
