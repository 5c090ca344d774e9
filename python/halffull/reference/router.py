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
- ``cache_aware`` (SGLang's), ``dynamo_kv`` (Dynamo's KV router), ``sal_uncached`` (SAL on
  the uncached part of each prompt): the cache-aware policies, below.

The random policies use SplitMix64 (below), bit for bit the same as the Rust core's.

Prefixes. A request may carry block hashes (``block_hashes``: ints or bytes naming its prompt's full
blocks, chained so that equal keys mean equal prefixes; or ``prompt_token_ids``, which the
router turns into such keys) and ``overlap_blocks``: per replica, how many leading blocks are
cached there, exactly. Its *cached tokens* on replica i are ``min(overlap_i × block_size,
prompt)``, where ``overlap_i`` is the given one, or (cache-aware policies) the leading run of
its keys in the router's **prefix record** of replica i; 0 when the router cannot tell. The
chosen replica's ``queued_prefill_uncached_tokens`` is charged ``prompt - cached``.

The cache-aware policies make the router keep per replica a ``PrefixRecord`` (the keys it
routed there, least recently used first, at most ``max_record_blocks``, default the replica's
``num_gpu_blocks``; SGLang's approximate radix tree, on keys instead of text) and, for
``dynamo_kv``, ``ActiveBlocks`` (the blocks its live requests hold, a shared key once)::

    cache_aware   load = outstanding requests; imbalanced when
                  max - min > balance_abs_threshold and max > min * balance_rel_threshold
                  imbalanced: fewest outstanding requests
                  else: best = most cached tokens; best if cached(best) / prompt > cache_threshold,
                        else the smallest record                (ties: requests, then index)
    dynamo_kv     cost = overlap_score_weight * (queued_prefill_uncached + prompt - cached) / block_size
                         + decode_blocks        (active blocks + ceil(prompt / bs) - keys already active)
                  router_temperature 0: least cost (within 1e-5), then smallest record, requests, index
                  else softmax over -cost / (max - min) / temperature, one SplitMix64 draw
    sal_uncached  sal_start_delay with queued = queued_prefill_uncached + (prompt - cached)
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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
from .request import BlockHash, given_block_hash, token_block_hashes
from .scheduler import _check_block_hashes, _check_token_ids

RequestId = str | int
#: A block hash: chained, so equal hashes mean equal prefixes (``request.token_block_hashes``).
BlockKey = BlockHash

_MASK64 = 2**64 - 1

ROUTERS = ("round_robin", "random", "power_of_two", "least_requests", "least_tokens", "llumnix", "sal",
           "cache_aware", "dynamo_kv", "sal_uncached")

DEFAULT_NUM_GPU_BLOCKS = 8192
DEFAULT_BLOCK_SIZE = 16
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
DEFAULT_PRIOR_INPUT_TOKENS = 1024
DEFAULT_PRIOR_OUTPUT_TOKENS = 256
# SGLang's router launcher (sglang_router.launch_router) and Dynamo's frontend.
DEFAULT_CACHE_THRESHOLD = 0.3
DEFAULT_BALANCE_ABS_THRESHOLD = 64
DEFAULT_BALANCE_REL_THRESHOLD = 1.5
DEFAULT_OVERLAP_SCORE_WEIGHT = 1.0
DEFAULT_ROUTER_TEMPERATURE = 0.0
#: dynamo_kv at temperature 0: costs this close to the least tie (Dynamo's epsilon).
DYNAMO_TIE_EPSILON = 1e-5


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

    def next_f64(self) -> float:
        """Uniform in ``[0, 1)``: the top 53 bits of one draw, times 2**-53."""
        return (self.next_u64() >> 11) * (1.0 / 9007199254740992.0)


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
    queued_prefill_uncached_tokens: int = 0   # the part of the above not expected from the cache
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
            "queued_prefill_uncached_tokens": self.queued_prefill_uncached_tokens,
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
    cached_tokens: int = 0             # expected from the replica's cache when routed
    keys: tuple[BlockKey, ...] = ()    # charged to the replica's ActiveBlocks (dynamo_kv only)
    own_blocks: int = 0                # likewise: blocks beyond its keyed ones

    @property
    def remaining_decode(self) -> int:
        return max(0, self.decode_estimate - self.output_tokens)

    @property
    def uncached_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    def own_blocks_at(self, block_size: int, output_tokens: int) -> int:
        """Blocks it holds beyond its keyed ones with ``output_tokens`` generated."""
        return max(0, _ceil_div(self.prompt_tokens + output_tokens, block_size) - len(self.keys))


# ---------------------------------------------------------------------------- prefixes


def _leading_run(keys: Sequence[BlockKey], present: Any) -> int:
    """How many leading keys are in ``present``."""
    n = 0
    for key in keys:
        if key not in present:
            break
        n += 1
    return n


class PrefixRecord:
    """The block keys the router sent to one replica, least recently used first.

    ``insert`` touches a request's keys deepest first, so a block is always more recent than
    its descendants and eviction (least recent first, down to ``capacity``) takes leaves
    first: the record stays a prefix tree."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.blocks: OrderedDict[BlockKey, None] = OrderedDict()   # oldest first

    def __len__(self) -> int:
        return len(self.blocks)

    def match(self, keys: Sequence[BlockKey]) -> int:
        return _leading_run(keys, self.blocks)

    def insert(self, keys: Sequence[BlockKey]) -> None:
        for key in reversed(keys):
            self.blocks[key] = None
            self.blocks.move_to_end(key)
        while len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)


@dataclass
class ActiveBlocks:
    """The blocks held by the requests live on one replica: each distinct key once, plus
    blocks only their request has (partial prompt block, generated tokens)."""

    refs: dict[BlockKey, int] = field(default_factory=dict)
    own_blocks: int = 0

    @property
    def blocks(self) -> int:
        return len(self.refs) + self.own_blocks

    def match(self, keys: Sequence[BlockKey]) -> int:
        return _leading_run(keys, self.refs)

    def add(self, keys: Sequence[BlockKey], own_blocks: int) -> None:
        for key in keys:
            self.refs[key] = self.refs.get(key, 0) + 1
        self.own_blocks += own_blocks

    def remove(self, keys: Sequence[BlockKey], own_blocks: int) -> None:
        for key in keys:
            if key in self.refs:
                self.refs[key] -= 1
                if self.refs[key] == 0:
                    del self.refs[key]
        self.own_blocks = max(0, self.own_blocks - own_blocks)


@dataclass
class PrefixView:
    """What a cache-aware policy sees per replica (empty lists for the other policies)."""

    cached_tokens: list[int] = field(default_factory=list)   # this prompt's tokens cached there
    record_blocks: list[int] = field(default_factory=list)   # size of its prefix record
    decode_blocks: list[int] = field(default_factory=list)   # blocks held with this request added


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
    return _start_delay(load, load.queued_prefill_tokens + prompt_tokens, beta)


def sal_uncached_start_delay(load: ReplicaLoad, uncached_prompt_tokens: int, beta: float) -> float:
    """``sal_start_delay`` counting only tokens to compute:
    ``queued = queued_prefill_uncached_tokens + uncached prompt tokens``."""
    return _start_delay(load, load.queued_prefill_uncached_tokens + uncached_prompt_tokens, beta)


def dynamo_cost(load: ReplicaLoad, uncached_prompt_tokens: int, decode_blocks: int, weight: float) -> float:
    """Dynamo's KV-router cost: ``weight * prefill_blocks + decode_blocks``, with
    ``prefill_blocks = (queued_prefill_uncached_tokens + uncached prompt) / block_size``."""
    prefill_tokens = load.queued_prefill_uncached_tokens + uncached_prompt_tokens
    return weight * (float(prefill_tokens) / float(load.block_size)) + float(decode_blocks)


def softmax_pick(costs: list[float], temperature: float, u: float) -> int:
    """Dynamo's softmax sample over costs (lower is likelier) with the uniform draw ``u``."""
    n = len(costs)
    lo, hi = min(costs), max(costs)
    cumulative = 0.0
    if lo == hi:
        p = 1.0 / n
        for i in range(n):
            cumulative += p
            if u <= cumulative:
                return i
        return n - 1
    scaled = [-(c / (hi - lo)) / temperature for c in costs]
    top = max(scaled)
    exps = [math.exp(s - top) for s in scaled]
    total = 0.0
    for e in exps:                     # in index order, as the core sums (not math.fsum, not sum)
        total += e
    for i, e in enumerate(exps):
        cumulative += e / total
        if u <= cumulative:
            return i
    return n - 1


def _start_delay(load: ReplicaLoad, queued: int, beta: float) -> float:
    queue_wait = float(queued) / float(load.max_num_batched_tokens)
    free_tokens = load.free_blocks * load.block_size
    if queued <= free_tokens:
        mem_wait = 0.0
    elif load.running == 0:
        mem_wait = math.inf
    else:
        mem_wait = float(queued - free_tokens) / (float(load.running) * beta)
    return max(mem_wait, queue_wait)


@dataclass
class PolicyParams:
    """The cache-aware policies' settings (the others ignore them)."""

    cache_threshold: float = DEFAULT_CACHE_THRESHOLD
    balance_abs_threshold: int = DEFAULT_BALANCE_ABS_THRESHOLD
    balance_rel_threshold: float = DEFAULT_BALANCE_REL_THRESHOLD
    overlap_score_weight: float = DEFAULT_OVERLAP_SCORE_WEIGHT
    router_temperature: float = DEFAULT_ROUTER_TEMPERATURE


class Policy:
    """Picks a replica; may keep its own state (a pointer, a generator) seeded at construction."""

    name = ""
    #: Prefix state the router keeps for it: "" none, "record", or "record+active".
    prefixes = ""

    def __init__(self, seed: int, params: PolicyParams) -> None:
        self.params = params

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float, view: PrefixView) -> int:
        raise NotImplementedError


def _best(replicas: list[ReplicaLoad], score: Any) -> int:
    """The index minimizing ``(score(replica), outstanding requests, index)``."""
    return min(range(len(replicas)), key=lambda i: (score(replicas[i]), replicas[i].outstanding_requests, i))


def _best_at(replicas: list[ReplicaLoad], score: Any) -> int:
    """The index minimizing ``(score(index), outstanding requests, index)``."""
    return min(range(len(replicas)), key=lambda i: (score(i), replicas[i].outstanding_requests, i))


class RoundRobin(Policy):
    name = "round_robin"

    def __init__(self, seed: int, params: PolicyParams) -> None:
        self.next = 0

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float, view: PrefixView) -> int:
        i = self.next % len(replicas)
        self.next = (i + 1) % len(replicas)
        return i


class Random(Policy):
    name = "random"

    def __init__(self, seed: int, params: PolicyParams) -> None:
        self.rng = SplitMix64(seed)

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float, view: PrefixView) -> int:
        return self.rng.below(len(replicas))


class PowerOfTwo(Policy):
    name = "power_of_two"

    def __init__(self, seed: int, params: PolicyParams) -> None:
        self.rng = SplitMix64(seed)

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float, view: PrefixView) -> int:
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

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float, view: PrefixView) -> int:
        return _best(replicas, lambda r: 0)


class LeastTokens(Policy):
    name = "least_tokens"

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float, view: PrefixView) -> int:
        return _best(replicas, lambda r: r.outstanding_tokens)


class Llumnix(Policy):
    name = "llumnix"

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float, view: PrefixView) -> int:
        return _best(replicas, lambda r: -llumnix_freeness(r))


class Sal(Policy):
    name = "sal"

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float, view: PrefixView) -> int:
        return _best(replicas, lambda r: sal_start_delay(r, prompt_tokens, beta))


class SalUncached(Policy):
    name = "sal_uncached"
    prefixes = "record"

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float, view: PrefixView) -> int:
        return _best_at(replicas, lambda i: sal_uncached_start_delay(
            replicas[i], prompt_tokens - view.cached_tokens[i], beta))


class CacheAware(Policy):
    """SGLang's ``cache_aware``: balance first, then prefix affinity, then the emptiest record."""

    name = "cache_aware"
    prefixes = "record"

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float, view: PrefixView) -> int:
        p = self.params
        loads = [r.outstanding_requests for r in replicas]
        if max(loads) - min(loads) > p.balance_abs_threshold and \
                float(max(loads)) > float(min(loads)) * p.balance_rel_threshold:
            return _best(replicas, lambda r: 0)
        best = _best_at(replicas, lambda i: -view.cached_tokens[i])
        if float(view.cached_tokens[best]) / float(prompt_tokens) > p.cache_threshold:
            return best
        return _best_at(replicas, lambda i: view.record_blocks[i])


class DynamoKv(Policy):
    """Dynamo's KV router: least ``overlap_score_weight × prefill blocks + decode blocks``."""

    name = "dynamo_kv"
    prefixes = "record+active"

    def __init__(self, seed: int, params: PolicyParams) -> None:
        super().__init__(seed, params)
        self.rng = SplitMix64(seed)

    def choose(self, replicas: list[ReplicaLoad], prompt_tokens: int, beta: float, view: PrefixView) -> int:
        costs = [dynamo_cost(r, prompt_tokens - view.cached_tokens[i], view.decode_blocks[i],
                             self.params.overlap_score_weight)
                 for i, r in enumerate(replicas)]
        if self.params.router_temperature > 0.0:
            return softmax_pick(costs, self.params.router_temperature, self.rng.next_f64())
        least = min(costs)
        return _best_at(replicas, lambda i: (abs(costs[i] - least) >= DYNAMO_TIE_EPSILON,
                                             view.record_blocks[i]))


POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (RoundRobin, Random, PowerOfTwo, LeastRequests, LeastTokens, Llumnix, Sal,
                              CacheAware, DynamoKv, SalUncached)
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


def _config_float(name: str, value: Any, default: float, lo: float, hi: float) -> float:
    """A float setting: a number (not a bool), finite and in ``[lo, hi]``."""
    if value is None:
        return default
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a number, got {_type_name(value)}", field=name, value=value)
    x = float(value)
    if not (math.isfinite(x) and lo <= x <= hi):
        raise ConfigError(f"{name} must be finite and in [{lo}, {hi}], got {value!r}", field=name, value=value)
    return x


def _is_sequence(value: Any) -> bool:
    return not isinstance(value, str) and hasattr(value, "__len__")


def _block_hashes(value: Any) -> list[BlockKey]:
    """``block_hashes`` as the scheduler takes them (ints in ``[0, 2**128)``, or bytes digested)."""
    return [given_block_hash(h) for h in _check_block_hashes(value)]


def _overlap_counts(value: Any) -> list[int]:
    """``overlap_blocks``: a sequence of counts, one per replica."""
    if not _is_sequence(value):
        raise InvalidArgumentError(
            f"overlap_blocks must be a sequence of ints (one per replica), got {_type_name(value)}",
            field="overlap_blocks", value=value)
    out = []
    for i, o in enumerate(value):
        try:
            out.append(_check_count("overlap_blocks", o, 0))
        except InvalidArgumentError as e:
            raise _at(e, i) from None
    return out


def _at(e: InvalidArgumentError, index: int) -> InvalidArgumentError:
    """The same error, naming position ``index`` of an array argument."""
    return InvalidArgumentError(str(e), field=getattr(e, "field", None), value=getattr(e, "value", None),
                                index=index)


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
        cache_threshold: float | None = DEFAULT_CACHE_THRESHOLD,
        balance_abs_threshold: int | None = DEFAULT_BALANCE_ABS_THRESHOLD,
        balance_rel_threshold: float | None = DEFAULT_BALANCE_REL_THRESHOLD,
        max_record_blocks: int | None = None,
        overlap_score_weight: float | None = DEFAULT_OVERLAP_SCORE_WEIGHT,
        router_temperature: float | None = DEFAULT_ROUTER_TEMPERATURE,
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
        self.params = PolicyParams(
            cache_threshold=_config_float("cache_threshold", cache_threshold, DEFAULT_CACHE_THRESHOLD, 0.0, 1.0),
            balance_abs_threshold=DEFAULT_BALANCE_ABS_THRESHOLD if balance_abs_threshold is None else
            _check_count("balance_abs_threshold", balance_abs_threshold, 0, ConfigError),
            balance_rel_threshold=_config_float("balance_rel_threshold", balance_rel_threshold,
                                                DEFAULT_BALANCE_REL_THRESHOLD, 0.0, 1e12),
            overlap_score_weight=_config_float("overlap_score_weight", overlap_score_weight,
                                               DEFAULT_OVERLAP_SCORE_WEIGHT, 0.0, 1e12),
            router_temperature=_config_float("router_temperature", router_temperature,
                                             DEFAULT_ROUTER_TEMPERATURE, 0.0, 1e12),
        )
        record_cap = None if max_record_blocks is None else \
            _check_count("max_record_blocks", max_record_blocks, 1, ConfigError)
        self._policy = POLICIES[policy](seed, self.params)
        self.replicas = [ReplicaLoad(b, s, m) for b, s, m in zip(blocks, sizes, budgets, strict=True)]
        self.max_record_blocks = [b if record_cap is None else record_cap for b in blocks]
        self.requests: dict[RequestId, LiveRequest] = {}
        self.num_finished = 0
        self.sum_input_tokens = 0
        self.sum_output_tokens = 0
        # The cache-aware policies' prefix state, one per replica (empty lists otherwise).
        uses = self._policy.prefixes
        self.records = [PrefixRecord(cap) for cap in self.max_record_blocks] if uses else []
        self.active = [ActiveBlocks() for _ in blocks] if uses == "record+active" else []

    # -- read-only

    @property
    def policy(self) -> str:
        return self._policy.name

    @property
    def num_replicas(self) -> int:
        return len(self.replicas)

    @property
    def cache_threshold(self) -> float:
        return self.params.cache_threshold

    @property
    def balance_abs_threshold(self) -> int:
        return self.params.balance_abs_threshold

    @property
    def balance_rel_threshold(self) -> float:
        return self.params.balance_rel_threshold

    @property
    def overlap_score_weight(self) -> float:
        return self.params.overlap_score_weight

    @property
    def router_temperature(self) -> float:
        return self.params.router_temperature

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

    def _load_dict(self, i: int) -> dict[str, int]:
        d = self.replicas[i].as_dict()
        d["record_blocks"] = len(self.records[i]) if self.records else 0
        d["active_blocks"] = self.active[i].blocks if self.active else 0
        return d

    def replica(self, index: int) -> dict[str, int]:
        return self._load_dict(self._index(index))

    def replica_loads(self) -> list[dict[str, int]]:
        return [self._load_dict(i) for i in range(self.num_replicas)]

    def record_hashes(self, index: int) -> list[BlockKey]:
        """Replica ``index``'s prefix record, least recently used first."""
        i = self._index(index)
        return list(self.records[i].blocks) if self.records else []

    def _live(self, request_id: Any, original: Any) -> LiveRequest:
        try:
            return self.requests[request_id]
        except KeyError:
            raise UnknownRequestError(f"no live request {request_id!r}", request_id=original) from None

    def replica_of(self, request_id: RequestId) -> int:
        return self._live(_check_id(request_id), request_id).replica

    # -- routing

    def _hash_block_size(self, field: str) -> int:
        """The block size block keys are taken at: every replica's (they must agree)."""
        sizes = [r.block_size for r in self.replicas]
        other = next((b for b in sizes if b != sizes[0]), None)
        if other is not None:
            raise InvalidArgumentError(
                f"{field} needs one block size on every replica; the replicas have {sizes[0]} and {other}",
                field=field)
        return sizes[0]

    def _check_prefix(self, prompt: int, keys: Sequence[BlockKey], overlap: list[int] | None) -> None:
        if keys:
            bs = self._hash_block_size("block_hashes")
            if len(keys) > prompt // bs:
                raise InvalidArgumentError(
                    f"{len(keys)} block_hashes for a prompt of {prompt} tokens, which has {prompt // bs} "
                    f"full blocks of {bs}", field="block_hashes", value=len(keys))
        if overlap is not None:
            if len(overlap) != self.num_replicas:
                raise InvalidArgumentError(
                    f"overlap_blocks has {len(overlap)} entries; expected one per replica ({self.num_replicas})",
                    field="overlap_blocks")
            for i, (o, load) in enumerate(zip(overlap, self.replicas, strict=True)):
                if o > prompt // load.block_size:
                    raise InvalidArgumentError(
                        f"overlap_blocks[{i}] = {o} exceeds the prompt's {prompt // load.block_size} full blocks "
                        f"on replica {i}", field="overlap_blocks", value=o, index=i)

    def route(
        self,
        request_id: RequestId,
        prompt_tokens: int | None = None,
        max_output_tokens: int | None = None,
        predicted_output_tokens: int | None = None,
        *,
        block_hashes: Sequence[int] | None = None,
        prompt_token_ids: Sequence[int] | None = None,
        overlap_blocks: Sequence[int] | None = None,
    ) -> int:
        """Pick a replica, record the request there as waiting, return the replica's index."""
        rid = _check_id(request_id)
        prompt = _optional_count("prompt_tokens", prompt_tokens, 1)
        cap = _optional_count("max_output_tokens", max_output_tokens, 1)
        predicted = _optional_count("predicted_output_tokens", predicted_output_tokens, 0)
        if block_hashes is not None and prompt_token_ids is not None:
            raise InvalidArgumentError("give block_hashes or prompt_token_ids, not both", field="block_hashes")
        keys: list[BlockKey] = []
        if prompt_token_ids is not None:
            tokens = _check_token_ids(prompt_token_ids)
            if not tokens:
                raise InvalidArgumentError("prompt_token_ids is empty", field="prompt_token_ids")
            if prompt is not None and prompt != len(tokens):
                raise InvalidArgumentError(
                    f"prompt_tokens {prompt} does not match len(prompt_token_ids) {len(tokens)}",
                    field="prompt_tokens", value=prompt)
            prompt = len(tokens)
            keys = token_block_hashes(tokens, self._hash_block_size("prompt_token_ids"))
        elif block_hashes is not None:
            keys = list(_block_hashes(block_hashes))
        if prompt is None:
            raise InvalidArgumentError("prompt_tokens is required (or prompt_token_ids)", field="prompt_tokens")
        overlap = None if overlap_blocks is None else _overlap_counts(overlap_blocks)
        self._check_prefix(prompt, keys, overlap)
        if rid in self.requests:
            raise DuplicateRequestError(f"request {rid!r} is already live", request_id=request_id)
        return self._dispatch(rid, prompt, cap, predicted, keys, overlap)

    def route_many(
        self,
        request_ids: Iterable[RequestId],
        prompt_tokens: Iterable[int],
        max_output_tokens: Iterable[int] | None = None,
        predicted_output_tokens: Iterable[int] | None = None,
        *,
        block_hashes: Iterable[Sequence[int] | None] | None = None,
        overlap_blocks: Iterable[Sequence[int] | None] | None = None,
    ) -> np.ndarray:
        """``route`` for each request in order; everything is checked first."""
        ids = items("request_ids", request_ids, "request ids", InvalidArgumentError)
        keys = [_check_id(i) for i in ids]

        def column(name: str, values: Iterable[int] | None, minimum: int) -> list[int] | None:
            if values is None and name != "prompt_tokens":      # prompt_tokens is required
                return None
            return [_check_count(name, v, minimum) for v in items(name, values, "ints", InvalidArgumentError)]

        prompts = column("prompt_tokens", prompt_tokens, 1) or []
        caps = column("max_output_tokens", max_output_tokens, 1)
        predictions = column("predicted_output_tokens", predicted_output_tokens, 0)

        def rows(name: str, values: Iterable[Any] | None, parse: Any) -> list[Any] | None:
            """One optional sequence per request; an error names the request's position."""
            if values is None:
                return None
            out = []
            for k, row in enumerate(items(name, values, "sequences (one per request)", InvalidArgumentError)):
                try:
                    out.append(None if row is None else parse(row))
                except InvalidArgumentError as e:
                    raise _at(e, k) from None
            return out

        hash_rows = rows("block_hashes", block_hashes, _block_hashes)
        overlap_rows = rows("overlap_blocks", overlap_blocks, _overlap_counts)
        # Every value first, then the lengths (a bad value is named before a short column).
        for name, values in (("prompt_tokens", prompts), ("max_output_tokens", caps),
                             ("predicted_output_tokens", predictions), ("block_hashes", hash_rows),
                             ("overlap_blocks", overlap_rows)):
            if values is not None and len(values) != len(ids):
                raise InvalidArgumentError(f"{name} has {len(values)} entries but request_ids has {len(ids)}",
                                           field=name)
        rids = keys
        seen: set[RequestId] = set()
        for k, (rid, original) in enumerate(zip(rids, ids, strict=True)):
            self._check_prefix(prompts[k], (hash_rows[k] or []) if hash_rows else [],
                               overlap_rows[k] if overlap_rows else None)
            if rid in self.requests or rid in seen:
                raise DuplicateRequestError(f"request {rid!r} is already live", request_id=original)
            seen.add(rid)
        chosen = [
            self._dispatch(rid, prompts[k], None if caps is None else caps[k],
                           None if predictions is None else predictions[k],
                           (hash_rows[k] or []) if hash_rows else [],
                           overlap_rows[k] if overlap_rows else None)
            for k, rid in enumerate(rids)
        ]
        return np.asarray(chosen, dtype=np.int64)

    def _prefix_view(self, prompt: int, keys: Sequence[BlockKey], overlap: list[int] | None) -> PrefixView:
        """What each replica holds of this prompt (only for the cache-aware policies)."""
        view = PrefixView()
        for i, (load, record) in enumerate(zip(self.replicas, self.records, strict=True)):
            blocks = overlap[i] if overlap is not None else record.match(keys)
            view.cached_tokens.append(min(blocks * load.block_size, prompt))
            view.record_blocks.append(len(record))
        if self.active:
            for load, active in zip(self.replicas, self.active, strict=True):
                new_blocks = _ceil_div(prompt, load.block_size) - active.match(keys)
                view.decode_blocks.append(active.blocks + new_blocks)
        return view

    def _dispatch(self, rid: RequestId, prompt: int, cap: int | None, predicted: int | None,
                  keys: Sequence[BlockKey] = (), overlap: list[int] | None = None) -> int:
        estimate = self.decode_estimate(cap, predicted)
        view = self._prefix_view(prompt, keys, overlap) if self.records else PrefixView()
        index = self._policy.choose(self.replicas, prompt, self.beta, view)
        load = self.replicas[index]
        if view.cached_tokens:
            cached = view.cached_tokens[index]
        elif overlap is not None:
            cached = min(overlap[index] * load.block_size, prompt)
        else:
            cached = 0
        req = LiveRequest(replica=index, prompt_tokens=prompt, max_output_tokens=cap,
                          decode_estimate=estimate, cached_tokens=cached)
        load.waiting += 1
        load.queued_prefill_tokens += prompt
        load.queued_prefill_uncached_tokens += req.uncached_tokens
        load.remaining_decode_tokens += estimate
        if self.records:
            self.records[index].insert(keys)
        if self.active:
            req.keys = tuple(keys)
            req.own_blocks = req.own_blocks_at(load.block_size, 0)
            self.active[index].add(req.keys, req.own_blocks)
        self.requests[rid] = req
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
            load.queued_prefill_uncached_tokens = max(0, load.queued_prefill_uncached_tokens - req.uncached_tokens)
        if self.active:
            own = req.own_blocks_at(load.block_size, out)
            active = self.active[req.replica]
            active.own_blocks = max(0, active.own_blocks - req.own_blocks) + own
            req.own_blocks = own
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
            load.queued_prefill_uncached_tokens = max(0, load.queued_prefill_uncached_tokens - req.uncached_tokens)
        load.remaining_decode_tokens = max(0, load.remaining_decode_tokens - req.remaining_decode)
        if self.active:
            self.active[req.replica].remove(req.keys, req.own_blocks)

    def update_replica(
        self,
        index: int,
        *,
        waiting: int | None = None,
        running: int | None = None,
        queued_prefill_tokens: int | None = None,
        remaining_decode_tokens: int | None = None,
        free_blocks: int | None = None,
        queued_prefill_uncached_tokens: int | None = None,
    ) -> None:
        """Overwrite the given fields of replica ``index``'s load (an engine's report)."""
        i = self._index(index)
        fields = {
            "waiting": _optional_count("waiting", waiting, 0),
            "running": _optional_count("running", running, 0),
            "queued_prefill_tokens": _optional_count("queued_prefill_tokens", queued_prefill_tokens, 0),
            "remaining_decode_tokens": _optional_count("remaining_decode_tokens", remaining_decode_tokens, 0),
        }
        uncached = _optional_count("queued_prefill_uncached_tokens", queued_prefill_uncached_tokens, 0)
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
        if uncached is not None:
            load.queued_prefill_uncached_tokens = uncached
        load.snapshotted = True

    def check_invariants(self) -> None:
        sums = [[0, 0, 0, 0, 0, 0] for _ in self.replicas]
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
                s[5] += req.uncached_tokens
            s[3] += req.remaining_decode
        for i, (load, s) in enumerate(zip(self.replicas, sums, strict=True)):
            got = [load.waiting, load.running, load.queued_prefill_tokens, load.remaining_decode_tokens,
                   load.used_blocks, load.queued_prefill_uncached_tokens]
            if not load.snapshotted and got != s:
                raise InvariantError(f"replica {i}: counters {got} but its live requests sum to {s}")
        for i, record in enumerate(self.records):
            if len(record) > record.capacity:
                raise InvariantError(f"replica {i}'s prefix record holds {len(record)} > {record.capacity} blocks")
        for i, active in enumerate(self.active):
            live = [req for req in self.requests.values() if req.replica == i]
            want = (len({k for req in live for k in req.keys}), sum(req.own_blocks for req in live))
            if (len(active.refs), active.own_blocks) != want:
                raise InvariantError(f"replica {i}: active blocks {(len(active.refs), active.own_blocks)}, "
                                     f"its live requests hold {want}")


__all__ = ["ROUTERS", "ActiveBlocks", "PrefixRecord", "Router", "SplitMix64", "dynamo_cost", "llumnix_freeness",
           "sal_start_delay", "sal_uncached_start_delay", "softmax_pick"]
