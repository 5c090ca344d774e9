"""The reference engine scheduler: plain Python, written to be read, exact.

It is the oracle the Hypothesis tests compare the Rust core against, so every rule below is
the rule. One step (``schedule`` then ``update``), after DESIGN §4:

1. ``_schedule_running``: running requests, in admission order, each get their next prefill
   chunk or one decode token within the token budget. If the blocks for those tokens are not
   free, the policy picks victims among the running requests not yet scheduled this step
   (the asking one included) until they are; the asking one may be its own victim.
2. ``_schedule_swapped``, if nothing was preempted: swapped requests come back (oldest first)
   while seats, budget and blocks above the watermark allow.
3. ``_schedule_waiting``, if nothing was preempted and nothing is still swapped: waiting
   requests are admitted in policy order while seats, budget and blocks allow, stopping at the
   first that does not fit.
4. ``update`` advances computed tokens. A request whose computed tokens reach its known tokens
   (prompt + generated) samples one token; it finishes at ``max_output_tokens``, when the
   cache could not hold another token, or when the caller names it in ``finished`` (EOS).

Token and block arithmetic for a request with prompt P and o generated tokens::

    tokens:   [ p0 p1 ... p(P-1) | g0 g1 ... g(o-1) ]      num_tokens = P + o
    computed: [ <---- num_computed_tokens ---->      ]      KV present for these
    blocks:   ceil(tokens held / block_size), allocated for the whole prompt at admission,
              then one more each time a decode token crosses a block boundary.

Recompute preemption frees every block and sets ``num_computed_tokens = 0``: the next
admission re-prefills all P + o tokens and then samples token o + 1 (generated tokens are
folded into the prompt). Swap preemption copies the blocks to CPU blocks and keeps the
computed tokens.

``config.max_model_len`` (both semantics) ends a request when prompt + generated reaches it
(vLLM's length stop): it is folded into the effective ``max_output_tokens``.
``config.long_prefill_token_threshold`` (both semantics) caps any request's tokens per step,
except in a step that starts with at most one live request.

``semantics="vllm_v1"``: the step vLLM 0.33's V1 ``Scheduler`` takes (prefix caching off),
rule for rule (vLLM's ``vllm/v1/core/sched/scheduler.py``, ``kv_cache_manager.py``,
``block_pool.py``; our own code); see ``_v1_schedule_running`` and
``_v1_schedule_waiting``. What differs from the above:

- Blocks come from ``VllmBlockPool``: block 0 is the null block (N - 1 usable), allocation
  takes the free queue's head, a freed table goes back reversed onto the head.
- Blocks are allocated per chunk, in ``schedule``, for the tokens scheduled this step only::

      prompt of 10 blocks, budget 4 blocks a step, reserve_full_prompt=True

      step 1   admit: needs all 10 blocks free (+ watermark), takes 4   table [a b c d]
      step 2   running: takes 4 more                                    table [a .. h]
      step 3   running: takes the last 2, the prompt is computed, samples one token
      step k   decode: one more block each time a token starts a new block

- Admission (phase 2) of the waiting request the policy puts first, with ``n`` = its chunk::

      full = ceil(num_tokens / bs)    if reserve_full_prompt   (the whole sequence to recompute)
      wm   = int(watermark * N)       if anything is running, else 0
      admit iff  full + wm <= free  and  ceil(n / bs) + wm <= free      (else stop admitting)

- A running request short of blocks preempts victims among ALL running requests (the policy's
  ``v1_victim``), even ones already scheduled this step, which are then un-scheduled.
  Preempted requests always recompute, and return to the head of FCFS's waiting deque.
- No swap phase; admission happens only if phase 1 preempted nobody.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import numpy as np

from .._util import as_float, check_text_id, items, shown
from ..config import SchedulerConfig
from ..errors import (
    ClockError,
    ConfigError,
    DuplicateRequestError,
    InvalidArgumentError,
    InvalidUpdateError,
    InvariantError,
    OutOfMemoryError,
    RequestTooLargeError,
    StalePlanError,
    UnknownRequestError,
)
from ..limits import MAX_COUNT as _MAX_INT  # counts above this are certainly a caller's bug
from ..limits import MAX_TIME as _MAX_TIME  # seconds; keeps every key exact in float64
from .blocks import BlockPool, VllmBlockPool
from .policies import make_policy
from .request import (
    ABORTED,
    FINISHED,
    RUNNING,
    SWAPPED,
    WAITING,
    BlockHash,
    Request,
    RequestId,
    given_block_hash,
    token_block_hashes,
)

_scheduler_ids = count(1)

HALFFULL, VLLM_V1 = "halffull", "vllm_v1"


def _blocks_for(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


def _object_array(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


@dataclass(eq=False)
class StepPlan:
    """What one step runs. Bulk fields are numpy arrays, one entry per scheduled request:

    - ``req_ids`` (object), ``num_new_tokens`` and ``num_computed_tokens`` (tokens already
      in the cache before this step: the position of the first new token) as int64,
      ``is_prefill`` and ``samples`` (the step ends the request's known tokens, so it
      samples one token) as bool, ``num_cached_tokens`` (int64: tokens an admission found
      in the prefix cache, counted in ``num_computed_tokens``; 0 otherwise).

    The lists, in the order things happened:

    - ``admitted``: ids newly admitted from waiting (their block table starts empty).
    - ``preempted``: ``(id, "recompute" | "swap")``.
    - ``swapped_out``: ``(id, int64[n, 2])`` rows of (GPU block, CPU block) to copy out.
    - ``swapped_in``: ``(id, int64[n, 2])`` rows of (CPU block, GPU block) to copy in (the
      request's block table starts empty, as for admitted ones).
    - ``new_blocks``: ``(id, [block ids])`` appended to the block table of a scheduled request.
    - ``finished``: ids that finished or were aborted since the previous plan.

    The engine copies swap-outs first, then swap-ins, then runs the batch.
    """

    step: int
    scheduler_id: int
    req_ids: np.ndarray
    num_new_tokens: np.ndarray
    num_computed_tokens: np.ndarray
    is_prefill: np.ndarray
    samples: np.ndarray
    num_cached_tokens: np.ndarray
    admitted: list
    preempted: list
    swapped_out: list
    swapped_in: list
    new_blocks: list
    finished: list

    @property
    def num_scheduled(self) -> int:
        return len(self.req_ids)

    @property
    def num_batched_tokens(self) -> int:
        return int(self.num_new_tokens.sum())

    def __len__(self) -> int:
        return len(self.req_ids)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values, for comparing plans and logging."""
        return {
            "step": self.step,
            "req_ids": list(self.req_ids),
            "num_new_tokens": [int(x) for x in self.num_new_tokens],
            "num_computed_tokens": [int(x) for x in self.num_computed_tokens],
            "is_prefill": [bool(x) for x in self.is_prefill],
            "samples": [bool(x) for x in self.samples],
            "num_cached_tokens": [int(x) for x in self.num_cached_tokens],
            "admitted": list(self.admitted),
            "preempted": [tuple(p) for p in self.preempted],
            "swapped_out": [(i, [tuple(int(v) for v in row) for row in m]) for i, m in self.swapped_out],
            "swapped_in": [(i, [tuple(int(v) for v in row) for row in m]) for i, m in self.swapped_in],
            "new_blocks": [(i, [int(b) for b in bl]) for i, bl in self.new_blocks],
            "finished": list(self.finished),
        }

    def __repr__(self) -> str:
        return (f"StepPlan(step={self.step}, scheduled={len(self)}, tokens={self.num_batched_tokens}, "
                f"admitted={len(self.admitted)}, preempted={len(self.preempted)}, "
                f"swapped_in={len(self.swapped_in)}, finished={len(self.finished)})")


@dataclass(eq=False)
class _Step:
    """The running state of one ``schedule`` call, handed from phase to phase: the tokens
    still available (``budget``), the ``(request, new tokens)`` pairs scheduled so far, and
    the lists the plan is made of."""

    budget: int
    scheduled: list[tuple[Request, int]] = field(default_factory=list)
    cached_tokens: dict[RequestId, int] = field(default_factory=dict)
    new_blocks: dict[RequestId, list[int]] = field(default_factory=dict)
    admitted: list[RequestId] = field(default_factory=list)
    preempted: list[tuple[RequestId, str]] = field(default_factory=list)
    swapped_out: list[tuple[RequestId, np.ndarray]] = field(default_factory=list)
    swapped_in: list[tuple[RequestId, np.ndarray]] = field(default_factory=list)

    threshold: int = 0

    def schedule(self, req: Request, n: int) -> None:
        """Run ``n`` new tokens of ``req`` this step."""
        self.scheduled.append((req, n))
        self.budget -= n

    def unschedule(self, req: Request) -> None:
        """vllm_v1: take ``req`` (about to be preempted) out of this step, tokens back."""
        for k, (r, n) in enumerate(self.scheduled):
            if r is req:
                del self.scheduled[k]
                self.budget += n
                self.new_blocks.pop(req.request_id, None)
                return

    def chunk(self, req: Request, cached: int = 0) -> int:
        """The tokens ``req`` may run this step: the rest of its known tokens (after the
        ``cached`` ones a prefix-cache hit supplies), capped by the long-prefill threshold
        (when on), then by the budget."""
        n = req.num_tokens - req.num_computed_tokens - cached
        if 0 < self.threshold < n:
            n = self.threshold
        return min(n, self.budget)


# ---------------------------------------------------------------------------- checks


def _check_id(request_id: Any) -> RequestId:
    if isinstance(request_id, bool) or not isinstance(request_id, (str, int)):
        raise InvalidArgumentError(
            f"request_id must be a str or an int, got {type(request_id).__name__}",
            field="request_id", value=request_id)
    if isinstance(request_id, int) and not -(2**63) <= request_id < 2**63:
        raise InvalidArgumentError("an int request_id must fit in 64 bits", field="request_id", value=request_id)
    if isinstance(request_id, str):
        check_text_id(request_id, InvalidArgumentError)
    return request_id


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{name} must be an int, got {type(value).__name__} {shown(value)}",
                                   field=name, value=value)
    value = int(value)
    if value < minimum or value > _MAX_INT:
        raise InvalidArgumentError(f"{name} must be in [{minimum}, 2**40], got {value}", field=name, value=value)
    return value


def _check_time(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(f"{name} must be a number, got {type(value).__name__} {shown(value)}",
                                   field=name, value=value)
    v = as_float(value)
    if not math.isfinite(v) or v < 0.0 or v > _MAX_TIME:
        raise InvalidArgumentError(f"{name} must be finite and in [0, 1e12] seconds, got {shown(value)}",
                                   field=name, value=value)
    return v


def _sequence(name: str, value: Any) -> list:
    if isinstance(value, (str, bytes)):
        raise InvalidArgumentError(f"{name} must be a sequence, not a str or bytes", field=name, value=value)
    try:
        return list(value)
    except Exception as e:
        raise InvalidArgumentError(f"{name} must be a sequence: {e}", field=name, value=value) from None


def _check_token_ids(value: Any) -> list[int]:
    ids = _sequence("prompt_token_ids", value)
    for i, t in enumerate(ids):
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= int(t) < 2**32:
            raise InvalidArgumentError(f"a token id must be an int in [0, 2**32), got {t!r}",
                                       field="prompt_token_ids", value=t, index=i)
    return [int(t) for t in ids]


def _check_block_hashes(value: Any) -> list[int | bytes]:
    hashes = _sequence("block_hashes", value)
    for i, h in enumerate(hashes):
        if not isinstance(h, bytes) and (isinstance(h, bool) or not isinstance(h, (int, np.integer))
                                         or not 0 <= int(h) < 2**128):
            raise InvalidArgumentError(f"a block hash must be an int in [0, 2**128) or bytes, got {h!r}",
                                       field="block_hashes", value=h, index=i)
    return [h if isinstance(h, bytes) else int(h) for h in hashes]


# ---------------------------------------------------------------------------- scheduler


class Scheduler:
    """The reference scheduler. Same constructor, methods and plans as ``halffull.Scheduler``."""

    def __init__(self, config: SchedulerConfig) -> None:
        if not isinstance(config, SchedulerConfig):
            raise ConfigError(f"expected a SchedulerConfig, got {type(config).__name__}")
        self.config = config
        self.policy = make_policy(config)
        self.scheduler_id = next(_scheduler_ids)
        self.v1 = config.semantics == VLLM_V1
        self.caching = config.enable_prefix_caching
        try:
            self.gpu: BlockPool = (VllmBlockPool(config.num_gpu_blocks, caching=config.enable_prefix_caching)
                                   if self.v1 else BlockPool(config.num_gpu_blocks))
            self.cpu = BlockPool(config.num_cpu_blocks)
        except MemoryError:                               # as the core: a typed error, not an abort
            field = "num_gpu_blocks" if config.num_gpu_blocks >= config.num_cpu_blocks else "num_cpu_blocks"
            raise OutOfMemoryError(f"cannot allocate the block pools ({config.num_gpu_blocks} + "
                                   f"{config.num_cpu_blocks} blocks)", field=field) from None
        self.requests: dict[RequestId, Request] = {}     # live requests only
        self.waiting: list[Request] = []                  # unordered: the policy orders it
        self.running: list[Request] = []                  # admission order
        self.swapped: list[Request] = []                  # unordered: oldest is swapped in first
        self.now = 0.0
        self.num_steps = 0
        self.num_preemptions = 0
        self.reserved_blocks = 0                          # no_preempt: sum of running requests' reservations
        self._seq = count()
        self._pending: StepPlan | None = None
        self._pending_scheduled: list[tuple[Request, int]] = []
        self._aborted_in_step: set[RequestId] = set()
        self._ended_since_plan: list[RequestId] = []
        self._last_plan_tokens = 0
        self._last_plan_seqs = 0

    # -- read-only counters

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_swapped(self) -> int:
        return len(self.swapped)

    @property
    def num_free_gpu_blocks(self) -> int:
        return self.gpu.num_free

    @property
    def num_free_cpu_blocks(self) -> int:
        return self.cpu.num_free

    def free_gpu_block_ids(self) -> list[int]:
        """The GPU free queue, head (allocated next) to tail."""
        return list(self.gpu.free)

    def prefix_cache_stats(self) -> dict[str, int]:
        """The prefix cache's counters since construction (see ``VllmBlockPool``); all 0 with
        caching off."""
        if isinstance(self.gpu, VllmBlockPool):
            return dict(self.gpu.stats)
        return dict.fromkeys(("requests", "queries", "hits", "preempted_requests", "preempted_queries",
                              "preempted_hits", "evictions"), 0)

    def prefix_hit_blocks(self, block_hashes: Iterable[int | bytes]) -> int:
        """How many leading ``block_hashes`` the prefix cache holds now."""
        hashes = [given_block_hash(h) for h in _check_block_hashes(block_hashes)]
        return len(self.gpu.lookup(hashes)) if self.caching and isinstance(self.gpu, VllmBlockPool) else 0

    def reset_prefix_cache(self) -> bool:
        """Forget every cached hash, only when no GPU block is held (returns whether it did)."""
        if self.gpu.num_free != self.gpu.num_usable:
            return False
        if isinstance(self.gpu, VllmBlockPool):
            self.gpu.clear_cache()
        return True

    def __len__(self) -> int:
        return len(self.requests)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def request_info(self, request_id: RequestId) -> dict[str, Any]:
        req = self._live(request_id)
        return {
            "status": req.status,
            "num_computed_tokens": req.num_computed_tokens,
            "num_output_tokens": req.num_output_tokens,
            "num_preemptions": req.num_preemptions,
            "block_table": list(req.block_table),
            "num_cpu_blocks": len(req.cpu_blocks),
        }

    # -- requests

    def add_request(
        self,
        request_id: RequestId,
        prompt_tokens: int | None = None,
        max_output_tokens: int | None = None,
        arrival_time: float | None = None,
        *,
        priority: int = 0,
        predicted_output_tokens: int | None = None,
        true_output_tokens: int | None = None,
        prompt_token_ids: Iterable[int] | None = None,
        block_hashes: Iterable[int | bytes] | None = None,
    ) -> None:
        """Queue a request. Raises (and changes nothing) on a duplicate live id, a bad value,
        or a request that can never fit in the GPU cache.

        For prefix caching, the prompt's content comes as ``prompt_token_ids`` (whose length
        is the prompt's) or as ``block_hashes``, the chained hashes of its first full blocks."""
        cfg = self.config
        request_id = _check_id(request_id)
        prompt_tokens, hashes = self._prompt(prompt_tokens, prompt_token_ids, block_hashes)
        if max_output_tokens is None:
            raise InvalidArgumentError("max_output_tokens is required", field="max_output_tokens")
        max_output_tokens = _check_count("max_output_tokens", max_output_tokens, 1)
        arrival = self.now if arrival_time is None else _check_time("arrival_time", arrival_time)
        if isinstance(priority, bool) or not isinstance(priority, (int, np.integer)) \
                or not -(2**63) <= int(priority) < 2**63:
            raise InvalidArgumentError(f"priority must be a 64-bit int, got {shown(priority)}",
                                       field="priority", value=priority)
        if predicted_output_tokens is not None:
            predicted_output_tokens = _check_count("predicted_output_tokens", predicted_output_tokens, 0)
        if true_output_tokens is not None:
            true_output_tokens = _check_count("true_output_tokens", true_output_tokens, 1)
        if request_id in self.requests:
            raise DuplicateRequestError(f"request {request_id!r} is already live", request_id=request_id)
        full_blocks = prompt_tokens // cfg.block_size
        if len(hashes) > full_blocks:
            raise InvalidArgumentError(
                f"request {request_id}: {len(hashes)} block hashes for a prompt of {prompt_tokens} tokens, "
                f"which has {full_blocks} full blocks of {cfg.block_size}", field="block_hashes", value=len(hashes))
        usable = self.gpu.num_usable                  # vllm_v1: the null block is not
        capacity = usable * cfg.block_size
        if prompt_tokens + 1 > capacity:
            need = _blocks_for(prompt_tokens + 1, cfg.block_size)
            raise RequestTooLargeError(
                f"request {request_id!r}: prompt of {prompt_tokens} tokens plus one output token needs "
                f"{need} blocks of {cfg.block_size} tokens; the GPU cache has {usable}",
                request_id=request_id, need_blocks=need, capacity_blocks=usable)
        if cfg.max_model_len is not None:
            if prompt_tokens + 1 > cfg.max_model_len:
                need = _blocks_for(prompt_tokens + 1, cfg.block_size)
                raise RequestTooLargeError(
                    f"request {request_id!r}: prompt of {prompt_tokens} tokens plus one output token is "
                    f"longer than max_model_len {cfg.max_model_len}", request_id=request_id,
                    need_blocks=need, capacity_blocks=_blocks_for(cfg.max_model_len, cfg.block_size))
            capacity = min(capacity, cfg.max_model_len)
        if self.policy.reserves_full_output:
            reserve = prompt_tokens + max_output_tokens      # as declared, before any cap
            need = _blocks_for(reserve, cfg.block_size)
            if need > usable:
                raise RequestTooLargeError(
                    f"request {request_id!r}: no_preempt reserves prompt + max_output_tokens = "
                    f"{reserve} tokens = {need} blocks; the GPU cache has "
                    f"{usable}", request_id=request_id, need_blocks=need,
                    capacity_blocks=usable)
        req = Request(
            request_id=request_id, seq=next(self._seq), arrival_time=arrival,
            prompt_tokens=prompt_tokens,
            # the cache (or max_model_len) ends the request when it could not hold another token
            max_output_tokens=min(max_output_tokens, capacity - prompt_tokens),
            priority=int(priority), predicted_output_tokens=predicted_output_tokens,
            true_output_tokens=true_output_tokens, block_hashes=hashes if self.caching else [],
        )
        self.requests[request_id] = req
        self.waiting.append(req)
        self.policy.enqueued(req)

    def _prompt(self, prompt_tokens: Any, token_ids: Any, block_hashes: Any) -> tuple[int, list[BlockHash]]:
        """The prompt's length and block hashes from ``add_request``'s arguments."""
        declared = None if prompt_tokens is None else _check_count("prompt_tokens", prompt_tokens, 1)
        if token_ids is not None and block_hashes is not None:
            raise InvalidArgumentError("give prompt_token_ids or block_hashes, not both", field="block_hashes")
        if token_ids is not None:
            ids = _check_token_ids(token_ids)
            if declared is not None and declared != len(ids):
                raise InvalidArgumentError(f"prompt_tokens={declared} but prompt_token_ids has {len(ids)} tokens",
                                           field="prompt_tokens", value=declared)
            if not ids:
                raise InvalidArgumentError("prompt_token_ids is empty", field="prompt_token_ids")
            return len(ids), token_block_hashes(ids, self.config.block_size)
        if declared is None:
            raise InvalidArgumentError("prompt_tokens is required (or give prompt_token_ids)", field="prompt_tokens")
        if block_hashes is None:
            return declared, []
        return declared, [given_block_hash(h) for h in _check_block_hashes(block_hashes)]

    def extend_block_hashes(self, request_id: RequestId, block_hashes: Iterable[int | bytes], *,
                            start: int) -> None:
        """Prefix caching: name the request's next full blocks, from block ``start``, with the
        caller's hashes (vLLM's ``Request.block_hashes`` as generated tokens fill blocks), so
        generated blocks are found by content rather than by the request's own hashes.
        ``start`` must be the number of hashes it holds now; the blocks must be full of known
        tokens. No-op with caching off."""
        _check_id(request_id)
        start = _check_count("start", start, 0)
        hashes = [given_block_hash(h) for h in _check_block_hashes(block_hashes)]
        req = self._live(request_id)
        if not self.caching:
            return
        held = len(req.block_hashes)
        if start != held:
            raise InvalidArgumentError(
                f"request {request_id!r}: hashes must continue at block {held} (it holds {held} block hashes), "
                f"not {start}", field="start", value=start)
        full = req.num_tokens // self.config.block_size
        if held + len(hashes) > full:
            raise InvalidArgumentError(
                f"request {request_id!r}: {len(hashes)} more block hashes after {held}, but its {req.num_tokens} "
                f"known tokens fill {full} blocks of {self.config.block_size}", field="block_hashes",
                value=len(hashes))
        req.block_hashes.extend(hashes)

    def abort(self, request_id: RequestId) -> None:
        """End a live request now, wherever it is; its blocks are freed at once."""
        req = self._live(request_id)
        if req.status == WAITING:
            self.waiting.remove(req)
            self.policy.dequeued(req)
        elif req.status == RUNNING:
            self.running.remove(req)
            if self.policy.reserves_full_output:
                self.reserved_blocks -= self._max_blocks(req)
        elif req.status == SWAPPED:
            self.swapped.remove(req)
        self.gpu.release(req.block_table)
        self.cpu.release(req.cpu_blocks)
        req.block_table, req.cpu_blocks = [], []
        req.status = ABORTED
        del self.requests[request_id]
        self._ended_since_plan.append(request_id)
        if self._pending is not None:
            self._aborted_in_step.add(request_id)

    # -- the step

    def schedule(self, now: float | None = None) -> StepPlan:
        """Decide this step. Call ``update`` with the plan before the next ``schedule``."""
        if self._pending is not None:
            raise StalePlanError(f"step {self._pending.step} is still pending: call update(plan) first",
                                 pending_step=self._pending.step)
        now = self.now if now is None else self._check_clock(now)
        self.now = now
        step = _Step(budget=self.config.max_num_batched_tokens)
        if len(self.requests) > 1:
            step.threshold = self.config.long_prefill_token_threshold

        if self.v1:
            self._v1_schedule_running(step)
            if not step.preempted:
                self._v1_schedule_waiting(step)
        else:
            self._schedule_running(step)
            if not step.preempted:
                self._schedule_swapped(step)
                if not self.swapped:
                    self._schedule_waiting(step)

        self.num_steps += 1
        scheduled = step.scheduled
        plan = StepPlan(
            step=self.num_steps,
            scheduler_id=self.scheduler_id,
            req_ids=_object_array([r.request_id for r, _ in scheduled]),
            num_new_tokens=np.array([n for _, n in scheduled], dtype=np.int64),
            num_computed_tokens=np.array([r.num_computed_tokens for r, _ in scheduled], dtype=np.int64),
            is_prefill=np.array([r.num_output_tokens == 0 or r.num_computed_tokens < r.num_tokens - 1
                                 for r, _ in scheduled], dtype=bool),
            samples=np.array([r.num_computed_tokens + n == r.num_tokens for r, n in scheduled], dtype=bool),
            num_cached_tokens=np.array([step.cached_tokens.get(r.request_id, 0) for r, _ in scheduled],
                                       dtype=np.int64),
            admitted=step.admitted,
            preempted=step.preempted,
            swapped_out=step.swapped_out,
            swapped_in=step.swapped_in,
            new_blocks=[(r.request_id, step.new_blocks[r.request_id]) for r, _ in scheduled
                        if step.new_blocks.get(r.request_id)],
            finished=self._ended_since_plan,
        )
        self._ended_since_plan = []
        self._pending = plan
        self._pending_scheduled = scheduled
        self._last_plan_tokens = sum(n for _, n in scheduled)
        self._last_plan_seqs = len(scheduled)
        return plan

    def _schedule_running(self, step: _Step) -> None:
        """Phase 1, running requests: each, in admission order, gets its next prefill chunk or
        one decode token within the budget. When the blocks for them are not free, the policy
        preempts victims among the running requests not yet scheduled (``running[i:]``, the
        asking one included) until they are; if it picks the asking one, that one is dropped
        from this step and the next request moves up to index ``i``."""
        i = 0
        while i < len(self.running) and step.budget > 0:
            req = self.running[i]
            n = step.chunk(req)
            need = _blocks_for(req.num_computed_tokens + n, self.config.block_size) - len(req.block_table)
            while need > self.gpu.num_free:
                victim = self.policy.choose_victim(self.running[i:])
                step.preempted.append((victim.request_id, self._preempt(victim, step.swapped_out)))
                if victim is req:
                    break
            if req.status != RUNNING:
                continue                  # preempted itself; the next request moved to index i
            if need > 0:
                blocks = self.gpu.allocate(need)
                req.block_table.extend(blocks)
                step.new_blocks[req.request_id] = blocks
            step.schedule(req, n)
            i += 1

    def _schedule_swapped(self, step: _Step) -> None:
        """Phase 2, swap-in (only if phase 1 preempted nothing): swapped requests come back,
        oldest first, while seats, budget and blocks above the watermark allow. The GPU table
        is allocated whole, for the CPU blocks and this step's tokens."""
        for req in sorted(self.swapped, key=lambda r: (r.arrival_time, r.seq)):
            if len(self.running) >= self.config.max_num_seqs or step.budget == 0:
                break
            n = step.chunk(req)
            total = max(len(req.cpu_blocks), _blocks_for(req.num_computed_tokens + n, self.config.block_size))
            if not self._fits(total):
                break
            gpu_blocks = self.gpu.allocate(total)
            # the CPU blocks' contents go to the first GPU blocks; any further ones are for the new tokens
            mapping = np.array(list(zip(req.cpu_blocks, gpu_blocks, strict=False)), dtype=np.int64).reshape(-1, 2)
            self.cpu.release(req.cpu_blocks)
            req.cpu_blocks, req.block_table = [], gpu_blocks
            self.swapped.remove(req)
            req.status = RUNNING
            step.swapped_in.append((req.request_id, mapping))
            step.new_blocks[req.request_id] = list(gpu_blocks)
            step.schedule(req, n)
            self.running.append(req)

    def _schedule_waiting(self, step: _Step) -> None:
        """Phase 3, admission (only if nothing was preempted and nothing is still swapped):
        waiting requests are admitted in policy order while seats, budget and blocks allow;
        stop at the first that does not fit. Blocks are allocated for all its known tokens;
        ``no_preempt`` checks its reservation of prompt + ``max_output_tokens`` instead."""
        cfg = self.config
        while self.waiting and len(self.running) < cfg.max_num_seqs and step.budget > 0:
            load = len(self.waiting)
            if cfg.larry_load == "outstanding":
                load += len(self.running) + len(self.swapped)
            req = min(self.waiting, key=lambda r: self.policy.waiting_key(r, load, self.now))
            need = _blocks_for(req.num_tokens, cfg.block_size)
            n = step.chunk(req)
            if self.policy.reserves_full_output:
                if self._max_blocks(req) > self.gpu.num_usable - self.reserved_blocks:
                    break
                self.reserved_blocks += self._max_blocks(req)
            elif not self._fits(need):
                break
            self.waiting.remove(req)
            self.policy.dequeued(req)
            req.block_table = self.gpu.allocate(need)
            req.status = RUNNING
            step.admitted.append(req.request_id)
            step.new_blocks[req.request_id] = list(req.block_table)
            step.schedule(req, n)
            self.running.append(req)

    # -- the vllm_v1 step (vLLM 0.33: Scheduler.schedule, KVCacheManager.allocate_slots)

    def _v1_schedule_running(self, step: _Step) -> None:
        """vllm_v1 phase 1 (``Scheduler.schedule``'s running loop): each running request, in
        admission order, gets its chunk, and blocks for just those tokens::

            need = ceil((computed + n) / bs) - blocks held        (no watermark for running)

        While ``need`` exceeds the free blocks, the policy's ``v1_victim`` among ALL running
        requests is preempted; one already scheduled this step is un-scheduled first (its
        tokens return to the budget, its new blocks are freed with the rest). If the victim is
        the asking request itself, it is dropped and the loop goes on at the same index (for
        FCFS everything after it is already preempted, so this ends the phase as vLLM's
        ``break`` does). Unvisited requests once the budget is spent just wait a step.

        (vLLM also caps ``n`` at ``max_model_len - computed - 1``; without speculative tokens a
        running request never reaches that cap, so it is not written here.)"""
        i = 0
        while i < len(self.running) and step.budget > 0:
            req = self.running[i]
            n = step.chunk(req)
            need = max(_blocks_for(req.num_computed_tokens + n, self.config.block_size)
                       - len(req.block_table), 0)
            while need > self.gpu.num_free:
                victim = self.policy.v1_victim(self.running)
                if self.running.index(victim) < i:
                    i -= 1                 # it was scheduled this step: un-schedule it
                    step.unschedule(victim)
                step.preempted.append((victim.request_id, self._preempt(victim, step.swapped_out)))
                if victim is req:
                    break
            if req.status != RUNNING:
                continue                  # preempted itself; the next request moved to index i
            if need > 0:
                blocks = self.gpu.allocate(need)
                req.block_table.extend(blocks)
                step.new_blocks[req.request_id] = blocks
            self._cache_full_blocks(req, req.num_computed_tokens + n)
            step.schedule(req, n)
            i += 1

    def _v1_schedule_waiting(self, step: _Step) -> None:
        """vllm_v1 phase 2 (only if phase 1 preempted nobody): the policy's next waiting
        request is admitted while seats and budget last, if (``KVCacheManager.allocate_slots``)

            reserve_full_prompt:  ceil(num_tokens / bs)  - hit + evictable + wm <= free   (whole sequence)
            always:               ceil((H + n) / bs)     - hit + evictable + wm <= free   (this step's chunk)

        with ``wm = int(watermark * N)`` when anything is running, else 0. With prefix caching,
        ``hit`` blocks (``H`` tokens) are the longest cached prefix of the request's full
        blocks, at most ``num_tokens - 1`` tokens so that one is computed; ``evictable`` of
        them are free now (taking them back empties those free slots); ``n`` is the chunk
        after them. It then takes a reference on the hit blocks, and new blocks for the chunk.
        The first request that does not fit stops admission (whatever its priority: admission
        never preempts). ``no_preempt`` must also fit its reservation of prompt +
        ``max_output_tokens`` blocks."""
        cfg = self.config
        bs = cfg.block_size
        pool = self.gpu
        assert isinstance(pool, VllmBlockPool)
        while self.waiting and len(self.running) < cfg.max_num_seqs and step.budget > 0:
            load = len(self.waiting)
            if cfg.larry_load == "outstanding":
                load += len(self.running)
            req = self.policy.v1_next_waiting(self.waiting, load, self.now)
            hit = pool.lookup(req.hashes_upto((req.num_tokens - 1) // bs)) if self.caching else []
            cached = len(hit) * bs
            n = step.chunk(req, cached)
            wm = cfg.watermark_blocks if self.running else 0
            evictable = sum(1 for b in hit if pool.ref_cnt[b] == 0)
            table_blocks = _blocks_for(cached + n, bs)
            extra = evictable - len(hit) + wm
            if cfg.reserve_full_prompt and _blocks_for(req.num_tokens, bs) + extra > pool.num_free:
                break
            if table_blocks + extra > pool.num_free:
                break
            if self.policy.reserves_full_output:
                if self._max_blocks(req) > pool.num_usable - self.reserved_blocks:
                    break
                self.reserved_blocks += self._max_blocks(req)
            self.waiting.remove(req)
            self.policy.dequeued(req)
            pool.touch(hit)
            req.block_table = hit + pool.allocate(table_blocks - len(hit))
            req.num_computed_tokens = cached
            req.num_cached_blocks = len(hit)
            req.status = RUNNING
            if self.caching:
                key = "preempted_" if req.num_preemptions else ""
                pool.stats[key + "requests"] += 1
                pool.stats[key + "queries"] += req.num_tokens
                pool.stats[key + "hits"] += cached
                self._cache_full_blocks(req, cached + n)
            step.admitted.append(req.request_id)
            step.new_blocks[req.request_id] = list(req.block_table)
            step.cached_tokens[req.request_id] = cached
            step.schedule(req, n)
            self.running.append(req)

    def _cache_full_blocks(self, req: Request, upto: int) -> None:
        """Prefix caching: register the request's blocks that are full once its table holds
        ``upto`` tokens and are not registered yet (vLLM's ``cache_blocks``, in ``schedule``,
        before the KV is computed: a request admitted later in the same step can hit them)."""
        if not self.caching:
            return
        assert isinstance(self.gpu, VllmBlockPool)
        full = min(upto, req.num_tokens) // self.config.block_size
        hashes = req.hashes_upto(full)
        for j in range(req.num_cached_blocks, full):
            self.gpu.register(req.block_table[j], hashes[j])
        req.num_cached_blocks = max(req.num_cached_blocks, full)

    def update(self, plan: StepPlan, finished: Iterable[RequestId] | None = (),
               now: float | None = None) -> list[RequestId]:
        """Apply what the step produced; returns the ids that finished, in plan order.

        Every scheduled request whose known tokens are all computed after the step sampled one
        token. ``finished`` names requests that stopped early (EOS); each must have sampled in
        this step. On any error nothing changes.
        """
        if self._pending is None or plan is not self._pending:
            raise StalePlanError(
                "this plan is not the scheduler's pending plan (already applied, stale, or from "
                "another scheduler)", step=getattr(plan, "step", None),
                pending_step=None if self._pending is None else self._pending.step)
        now = self.now if now is None else self._check_clock(now)
        early = self._early_finishers(plan.step, finished)   # validate before changing anything

        self.now = now
        ended: list[RequestId] = []
        for req, n in self._pending_scheduled:
            if req.status != RUNNING:
                continue                  # aborted after the plan was made
            req.num_computed_tokens += n
            if req.num_computed_tokens == req.num_tokens:
                req.num_output_tokens += 1
                if req.num_output_tokens >= req.max_output_tokens or req.request_id in early:
                    self._finish(req)
                    ended.append(req.request_id)
        self._pending = None
        self._pending_scheduled = []
        self._aborted_in_step = set()
        self._ended_since_plan.extend(ended)
        return ended

    def _early_finishers(self, step: int, finished: Iterable[RequestId] | None) -> set[RequestId]:
        """The live requests that ``finished`` names (EOS in step ``step``), each checked to
        have sampled in the pending plan; ids aborted during the step are skipped. Changes
        nothing."""
        if finished is None:
            return set()
        if isinstance(finished, (str, int)):
            raise InvalidArgumentError("finished must be a list of request ids, not a single id",
                                       field="finished", value=finished)
        finished = items("finished", finished, "request ids", InvalidArgumentError)
        sampling = {r.request_id for r, n in self._pending_scheduled
                    if r.num_computed_tokens + n == r.num_tokens}
        early: set[RequestId] = set()
        for rid in finished:
            _check_id(rid)
            if rid in self._aborted_in_step:
                continue
            if rid not in self.requests:
                raise UnknownRequestError(f"no live request {rid!r}", request_id=rid)
            if rid not in sampling:
                raise InvalidUpdateError(
                    f"request {rid!r} did not sample a token in step {step}, so it cannot "
                    "finish on EOS; use abort() to end it", request_id=rid)
            early.add(rid)
        return early

    # -- invariants

    def check_invariants(self) -> None:
        """Raise ``InvariantError`` naming the request or block if the state is inconsistent."""
        cfg = self.config

        def fail(msg: str) -> None:
            raise InvariantError(msg)

        for name, pool, attr in (("GPU", self.gpu, "block_table"), ("CPU", self.cpu, "cpu_blocks")):
            tables = [getattr(r, attr) for r in self.requests.values()]
            if any(len(set(t)) != len(t) for t in tables):
                fail(f"{name} blocks: a request holds a block twice")
            held = sorted({b for t in tables for b in t})
            if not isinstance(pool, VllmBlockPool) or not pool.caching:
                held = sorted(b for t in tables for b in t)        # unshared: each block held once
            if sorted(held + list(pool.free)) != pool.all_ids():
                fail(f"{name} blocks: some block is held twice, held and free, lost, or is the null block")
            if isinstance(pool, VllmBlockPool):
                holders = Counter(b for t in tables for b in t)
                for b in pool.all_ids():
                    if pool.ref_cnt[b] != holders[b]:
                        fail(f"{name} block {b}: reference count {pool.ref_cnt[b]}, held by {holders[b]} requests")
                for b, h in pool.block_hash.items():
                    if b not in pool.cache.get(h, []):
                        fail(f"{name} block {b} carries a hash the cache does not map to it")
                if sum(len(v) for v in pool.cache.values()) != len(pool.block_hash):
                    fail(f"{name} prefix cache maps blocks that carry no hash")
        for req in self.requests.values():
            cached = req.num_cached_blocks
            if cached > len(req.block_table) or any(
                    self.gpu.block_hash.get(req.block_table[j]) != req.block_hashes[j]   # type: ignore[attr-defined]
                    for j in range(cached)):
                fail(f"request {req.request_id!r}: its {cached} cached blocks are not in the cache under its hashes")
        if self.v1:
            pending = {r.request_id: n for r, n in self._pending_scheduled if r.status == RUNNING}
            for req in self.running:
                tokens = req.num_computed_tokens + pending.get(req.request_id, 0)
                if len(req.block_table) != _blocks_for(tokens, cfg.block_size):
                    fail(f"vllm_v1: running request {req.request_id!r} holds {len(req.block_table)} "
                         f"blocks for {tokens} computed and scheduled tokens")
        queues = {WAITING: self.waiting, RUNNING: self.running, SWAPPED: self.swapped}
        if sum(len(q) for q in queues.values()) != len(self.requests):
            fail("a live request is in no queue, or in two")
        for status, queue in queues.items():
            for req in queue:
                if req.status != status or self.requests.get(req.request_id) is not req:
                    fail(f"request {req.request_id!r} is in the {status} queue with status {req.status}")
        if len(self.running) > cfg.max_num_seqs:
            fail(f"{len(self.running)} running > max_num_seqs {cfg.max_num_seqs}")
        if self._last_plan_tokens > cfg.max_num_batched_tokens or self._last_plan_seqs > cfg.max_num_seqs:
            fail("the last plan exceeded the token budget or the seats")
        for req in self.requests.values():
            if req.status == RUNNING and len(req.block_table) < _blocks_for(req.num_computed_tokens, cfg.block_size):
                fail(f"running request {req.request_id!r} holds {len(req.block_table)} blocks for "
                     f"{req.num_computed_tokens} computed tokens")
            if req.status == SWAPPED and (req.block_table or len(req.cpu_blocks) <
                                          _blocks_for(req.num_computed_tokens, cfg.block_size)):
                fail(f"swapped request {req.request_id!r} holds GPU blocks or too few CPU blocks")
            if req.status == WAITING and (req.block_table or req.cpu_blocks or req.num_computed_tokens):
                fail(f"waiting request {req.request_id!r} holds blocks or computed tokens")
            if not 0 <= req.num_computed_tokens <= req.num_tokens:
                fail(f"request {req.request_id!r} has {req.num_computed_tokens} computed of {req.num_tokens}")
        if self.policy.reserves_full_output:
            reserved = sum(self._max_blocks(r) for r in self.running)
            if reserved != self.reserved_blocks or reserved > self.gpu.num_usable:
                fail(f"no_preempt reservations {self.reserved_blocks} (recounted {reserved}) exceed "
                     f"{self.gpu.num_usable} blocks or drifted")
            if self.num_preemptions:
                fail("no_preempt preempted")

    # -- internals

    def _live(self, request_id: Any) -> Request:
        _check_id(request_id)
        req = self.requests.get(request_id)
        if req is None:
            raise UnknownRequestError(f"no live request {request_id!r}", request_id=request_id)
        return req

    def _check_clock(self, now: Any) -> float:
        t = _check_time("now", now)
        if t < self.now:
            raise ClockError(f"time went backwards: now={t} < scheduler clock {self.now}",
                             now=t, clock=self.now)
        return t

    def _fits(self, blocks: int) -> bool:
        """Admission (and swap-in) rule: keep the watermark free, unless nothing runs."""
        if not self.running:
            return blocks <= self.gpu.num_free
        return blocks <= self.gpu.num_free - self.config.watermark_blocks

    def _max_blocks(self, req: Request) -> int:
        return _blocks_for(req.prompt_tokens + req.max_output_tokens, self.config.block_size)

    def _preempt(self, req: Request, swapped_out: list) -> str:
        self.running.remove(req)
        req.num_preemptions += 1
        self.num_preemptions += 1
        if self.config.preemption_mode == "swap" and len(req.block_table) <= self.cpu.num_free:
            cpu_blocks = self.cpu.allocate(len(req.block_table))
            swapped_out.append((req.request_id, np.array(list(zip(req.block_table, cpu_blocks, strict=True)),
                                                         dtype=np.int64).reshape(-1, 2)))
            self.gpu.release(req.block_table)
            req.block_table, req.cpu_blocks = [], cpu_blocks
            req.status = SWAPPED
            self.swapped.append(req)
            return "swap"
        self.gpu.release(req.block_table)
        req.block_table = []
        req.num_cached_blocks = 0
        req.num_computed_tokens = 0
        req.status = WAITING
        if self.v1:
            self.waiting.insert(0, req)   # the head of vLLM's waiting deque
            self.policy.enqueued(req)
        else:
            self.waiting.append(req)
            self.policy.enqueued(req)
        return "recompute"

    def _finish(self, req: Request) -> None:
        self.running.remove(req)
        if self.policy.reserves_full_output:
            self.reserved_blocks -= self._max_blocks(req)
        self.gpu.release(req.block_table)
        req.block_table = []
        req.status = FINISHED
        del self.requests[req.request_id]
