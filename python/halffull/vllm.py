"""halffull as vLLM 0.33's scheduler: ``scheduler_cls="halffull.vllm.Scheduler"``.

vLLM's engine core builds its scheduler from ``SchedulerConfig.scheduler_cls`` and calls
``schedule()`` and ``update_from_output()`` on it every step. This module implements vLLM's
``SchedulerInterface`` on top of halffull's Rust core in ``semantics="vllm_v1"``: the core
decides who runs with how many tokens, whom to preempt, which KV blocks each request gets and
what the prefix cache hits; this layer keeps vLLM's own ``Request`` objects in step with those
decisions, builds vLLM's ``SchedulerOutput`` and ``EngineCoreOutputs``, and applies vLLM's own
stop check (``vllm.v1.core.sched.utils.check_stop``) to the sampled tokens.

Only this module imports vLLM; ``import halffull`` never needs it.

Scope (refused at construction, naming the feature, see ``unsupported_features``): the core
models one decoder-only model with one full-attention KV cache group, sync scheduling, no
speculative decoding, no KV or encoder-cache connectors, no LoRA, no multimodal or encoder
inputs, no pipeline or context parallelism. Per request, structured output, streaming-input
sessions, pooling and (with prefix caching on) prompt logprobs are refused at ``add_request``.

Policy: ``additional_config={"halffull": {"policy": "larry", "larry_alpha": 500.0}}``
(``--additional-config``), else the ``HALFFULL_POLICY`` environment variable, else vLLM's own
``--scheduling-policy`` (fcfs or priority).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from itertools import compress, repeat
from operator import add, attrgetter, not_
from typing import TYPE_CHECKING, Any

from vllm.v1.core.sched.interface import PauseState, SchedulerInterface
from vllm.v1.core.sched.output import CachedRequestData, NewRequestData, SchedulerOutput
from vllm.v1.core.sched.utils import check_stop
from vllm.v1.engine import EngineCoreEventType, EngineCoreOutput, EngineCoreOutputs
from vllm.v1.metrics.stats import PrefixCacheStats, SchedulerStats
from vllm.v1.request import RequestStatus

import halffull

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.outputs import DraftTokenIds, ModelRunnerOutput
    from vllm.v1.request import Request
    from vllm.v1.structured_output import StructuredOutputManager

__all__ = ["Scheduler", "UnsupportedFeatureError", "core_config", "unsupported_features"]

POLICY_ENV = "HALFFULL_POLICY"
#: the ``SchedulerConfig`` settings the adapter takes from vLLM's own configuration
FROM_VLLM = frozenset({"semantics", "num_gpu_blocks", "block_size", "num_cpu_blocks", "max_num_seqs",
                       "max_num_batched_tokens", "max_model_len", "long_prefill_token_threshold",
                       "reserve_full_prompt", "watermark", "enable_prefix_caching", "preemption_mode"})
#: the keys of ``additional_config["halffull"]``: the policy and every policy parameter
#: ``SchedulerConfig`` has (all of its settings that vLLM's configuration does not give)
POLICY_KEYS = tuple(k for k in halffull.SchedulerConfig(num_gpu_blocks=1).to_dict() if k not in FROM_VLLM)
_CACHE_COUNTERS = ("requests", "queries", "hits", "preempted_requests", "preempted_queries", "preempted_hits")


_computed = attrgetter("num_computed_tokens")
_outputs = attrgetter("_output_token_ids")
_request_id = attrgetter("request_id")


def _set_all(objs: list[Any], name: str, values: Iterable[Any]) -> None:
    """``obj.name = value`` for each pair, at C speed (no Python frame per object)."""
    deque(map(setattr, objs, repeat(name), values), maxlen=0)


class UnsupportedFeatureError(ValueError):
    """vLLM is configured with (or a request asks for) something the core does not model."""


def unsupported_features(vllm_config: VllmConfig, kv_cache_config: KVCacheConfig,
                         block_size: int, hash_block_size: int | None) -> list[str]:
    """What in this vLLM configuration halffull's core does not model (empty: supported),
    each with the setting that turns it off where there is one."""
    from vllm.v1.kv_cache_interface import FullAttentionSpec, MLAAttentionSpec

    sc, mc, pc = vllm_config.scheduler_config, vllm_config.model_config, vllm_config.parallel_config
    oc = vllm_config.observability_config
    found = []

    def refuse(cond: Any, what: str) -> None:
        if cond:
            found.append(what)

    refuse(sc.async_scheduling, "async scheduling (pass --no-async-scheduling, or "
           "LLM(..., async_scheduling=False))")
    refuse(vllm_config.speculative_config is not None, "speculative decoding")
    refuse(vllm_config.kv_transfer_config is not None, "KV connectors (kv_transfer_config)")
    refuse(vllm_config.ec_transfer_config is not None, "encoder-cache connectors (ec_transfer_config)")
    refuse(vllm_config.lora_config is not None, "LoRA")
    refuse(mc.is_encoder_decoder, "encoder-decoder models")
    refuse(mc.supports_multimodal_inputs, "multimodal (encoder) inputs")
    refuse(mc.runner_type == "pooling", "pooling models")
    refuse(getattr(mc, "is_diffusion", False), "diffusion models")
    refuse(pc.pipeline_parallel_size > 1, "pipeline parallelism")
    refuse(pc.decode_context_parallel_size > 1 or getattr(pc, "prefill_context_parallel_size", 1) > 1,
           "context parallelism")
    refuse(pc.data_parallel_size > 1, "data parallelism with a shared prefill cadence")
    refuse(not sc.enable_chunked_prefill, "enable_chunked_prefill=False")
    refuse(sc.long_prefill_token_threshold_adaptive, "long_prefill_token_threshold_adaptive")
    refuse(getattr(sc, "prefill_schedule_interval", 1) > 1, "prefill_schedule_interval > 1")
    refuse(vllm_config.num_lookahead_tokens or getattr(vllm_config, "num_prefill_lookahead_tokens", 0)
           or getattr(vllm_config, "num_hash_lookahead_tokens", 0), "lookahead tokens")
    refuse(vllm_config.kv_events_config is not None and vllm_config.kv_events_config.enable_kv_cache_events,
           "KV cache events")
    refuse(oc.kv_cache_metrics, "kv_cache_metrics (eviction events)")
    refuse(oc.enable_mfu_metrics, "enable_mfu_metrics")
    refuse(vllm_config.aux_output_config.enabled, "aux output connectors")
    refuse(vllm_config.ec_manager_config.get_encoder_cache_manager_obj() is not None,
           "a custom encoder cache manager")
    refuse(vllm_config.attention_config.hisparse_config is not None, "HiSparse attention")
    groups = kv_cache_config.kv_cache_groups
    if len(groups) != 1:
        found.append(f"{len(groups)} KV cache groups (hybrid models: one full-attention group only)")
    else:
        spec = groups[0].kv_cache_spec
        refuse(type(spec) not in (FullAttentionSpec, MLAAttentionSpec)
               or spec.sliding_window is not None or spec.attention_chunk_size is not None
               or getattr(spec, "prefix_replay_tokens", 0),
               f"KV cache spec {type(spec).__name__} (sliding-window, chunked-local, Mamba and "
               "hybrid KV groups: one full-attention group only)")
    refuse(kv_cache_config.needs_kv_cache_zeroing, "KV cache zeroing")
    refuse(getattr(kv_cache_config, "hisparse_host_num_blocks", None) is not None, "HiSparse host blocks")
    refuse(hash_block_size not in (None, block_size),
           f"a hash block size ({hash_block_size}) other than the block size ({block_size})")
    return found


def policy_settings(vllm_config: VllmConfig) -> dict[str, Any]:
    """The halffull policy and its parameters: ``additional_config["halffull"]``, else
    ``$HALFFULL_POLICY``, else vLLM's ``scheduler_config.policy``."""
    extra = vllm_config.additional_config
    given = extra.get("halffull", {}) if isinstance(extra, dict) else {}
    if not isinstance(given, dict):
        raise UnsupportedFeatureError(f'additional_config["halffull"] must be a dict, got {given!r}')
    unknown = sorted(set(given) - set(POLICY_KEYS))
    if unknown:
        raise UnsupportedFeatureError(
            f'additional_config["halffull"]: unknown keys {unknown}; valid: {list(POLICY_KEYS)}')
    settings = dict(given)
    settings.setdefault("policy", os.environ.get(POLICY_ENV) or str(vllm_config.scheduler_config.policy))
    return settings


def core_config(vllm_config: VllmConfig, kv_cache_config: KVCacheConfig, block_size: int) -> halffull.SchedulerConfig:
    """The halffull ``SchedulerConfig`` (``semantics="vllm_v1"``) that decides as vLLM's
    scheduler does with this configuration. Unknown policies raise ``ConfigError`` listing
    the valid ones."""
    sc = vllm_config.scheduler_config
    budget = sc.max_num_batched_tokens
    if sc.max_num_scheduled_tokens is not None:
        budget = min(budget, sc.max_num_scheduled_tokens)
    seats = sc.max_num_seqs if sc.max_num_active_seqs is None else sc.max_num_active_seqs
    return halffull.SchedulerConfig(
        semantics="vllm_v1", num_gpu_blocks=kv_cache_config.num_blocks, block_size=block_size,
        num_cpu_blocks=0, max_num_seqs=seats, max_num_batched_tokens=budget,
        max_model_len=vllm_config.model_config.max_model_len,
        long_prefill_token_threshold=sc.long_prefill_token_threshold,
        reserve_full_prompt=sc.scheduler_reserve_full_isl, watermark=sc.watermark,
        enable_prefix_caching=bool(vllm_config.cache_config.enable_prefix_caching),
        **policy_settings(vllm_config))


class _Live:
    """A request the core has, with what the per-step fast path reads. vLLM's ``check_stop``
    can stop a single sampled token only if it is in ``stop_ids`` (EOS, stop token ids) or the
    request's tokens reach ``limit`` (max_tokens, max_model_len); its block hasher adds a
    hash only when the tokens reach ``next_full``. ``general``: the request needs vLLM's full
    per-token path (logprobs, repetition detection, trace headers, NaN counts)."""

    __slots__ = ("all", "client", "general", "known_hashes", "limit", "next_full", "out", "req", "stop_ids")

    def __init__(self, req: Request, max_model_len: int, block_size: int, known_hashes: int) -> None:
        sp = req.sampling_params
        self.req = req
        self.out = req._output_token_ids
        self.all = req._all_token_ids
        self.client = req.client_index
        self.stop_ids = frozenset((sp.eos_token_id, *(sp.stop_token_ids or ())))
        self.limit = min(req.num_prompt_tokens + req.max_tokens, max_model_len)
        self.general = (sp.num_logprobs is not None or sp.repetition_detection is not None
                        or req.trace_headers is not None)
        self.next_full = 0
        self.known_hashes = known_hashes          # block hashes the core has
        self.block_hashed(block_size)

    def block_hashed(self, block_size: int) -> None:
        """Where the request's next full block ends (never, without a hasher)."""
        if self.req._block_hasher is None:
            self.next_full = 1 << 62
        else:
            self.next_full = (len(self.req.block_hashes) + 1) * block_size


class Scheduler(SchedulerInterface):
    """vLLM's ``SchedulerInterface`` with halffull's Rust core deciding (module docstring)."""

    def __init__(
        self,
        vllm_config: VllmConfig,
        kv_cache_config: KVCacheConfig,
        structured_output_manager: StructuredOutputManager,
        block_size: int,
        hash_block_size: int | None = None,
        mm_registry: Any = None,
        include_finished_set: bool = False,
        log_stats: bool = False,
    ) -> None:
        missing = unsupported_features(vllm_config, kv_cache_config, block_size, hash_block_size)
        if missing:
            raise UnsupportedFeatureError(
                "halffull.vllm.Scheduler does not support: " + "; ".join(missing)
                + ". Use vLLM's own scheduler for these (leave scheduler_cls unset).")
        self.vllm_config = vllm_config
        self.scheduler_config = vllm_config.scheduler_config
        self.cache_config = vllm_config.cache_config
        self.kv_cache_config = kv_cache_config
        self.structured_output_manager = structured_output_manager
        self.block_size = block_size
        self.hash_block_size = block_size
        self.log_stats = log_stats
        self.max_model_len = vllm_config.model_config.max_model_len
        self.caching = bool(self.cache_config.enable_prefix_caching)
        self.use_v2_model_runner = bool(vllm_config.use_v2_model_runner)
        self.uses_mrope = vllm_config.model_config.uses_mrope
        self.return_sampling_mask = vllm_config.model_config.return_sampling_mask
        self.spec_decode_metrics_level = vllm_config.observability_config.per_request_spec_decode_metrics
        self.num_gpu_blocks = kv_cache_config.num_blocks
        self.config = core_config(vllm_config, kv_cache_config, block_size)
        self.core = halffull.Scheduler(self.config)
        # what vLLM's engine and connectors look for on a scheduler
        self.connector = None
        self.ec_connector = None
        self.requests: dict[str, Request] = {}
        self.finished_req_ids: set[str] = set()
        self.finished_req_ids_dict: dict[int, set[str]] | None = defaultdict(set) if include_finished_set else None
        self.prev_step_scheduled_req_ids: set[str] = set()   # V1 model runner only
        self._pause_state = PauseState.UNPAUSED
        self._held: list[Request] = []            # added while PAUSED_NEW: queued at resume
        self._live: dict[str, _Live] = {}         # the requests the core has
        self._clients: dict[int, int] = {}        # their client (frontend) indices, counted
        self._chunking: set[str] = set()          # ids whose is_prefill_chunk is True
        self._plan: Any = None                    # the core's plan of the step in flight
        self._now = 0.0
        #: the core's clock (seconds, as vLLM's ``Request.arrival_time``): LARRY's waiting time
        self.clock = time.time
        self._stats_seen = dict.fromkeys(_CACHE_COUNTERS, 0)
        self._stats_reset = False
        from vllm.v1.metrics.stats import KV_FETCH_STAGES  # noqa: PLC0415 (where vLLM defines it)

        self._kv_fetch_counts = dict.fromkeys(KV_FETCH_STAGES, 0)

    # ------------------------------------------------------------------ requests

    def add_request(self, request: Request) -> None:
        rid = request.request_id
        if rid in self.requests:
            raise UnsupportedFeatureError(f"request {rid}: streaming-input sessions (a second add of a live id)")
        why = self._unsupported_request(request)
        if why:
            raise UnsupportedFeatureError(f"request {rid}: halffull.vllm.Scheduler does not support {why}")
        if self._pause_state == PauseState.PAUSED_NEW:
            self._held.append(request)
        else:
            self._add_to_core(request)
        self.requests[rid] = request
        if self.spec_decode_metrics_level != "none":
            from vllm.v1.metrics.stats import RequestSpecDecodeMetrics

            request.spec_decode_metrics = RequestSpecDecodeMetrics.new(0)
        if self.log_stats:
            request.record_event(EngineCoreEventType.QUEUED)

    def _unsupported_request(self, request: Request) -> str | None:
        if request.use_structured_output:
            return "structured output"
        if request.pooling_params is not None:
            return "pooling"
        if request.lora_request is not None:
            return "LoRA"
        if request.mm_features:
            return "multimodal inputs"
        if request.resumable:
            return "streaming-input sessions"
        if request.kv_transfer_params:
            return "KV transfer"
        if self.caching and request.skip_reading_prefix_cache:
            return "requests that skip the prefix cache (prompt logprobs) with prefix caching on"
        return None

    def _add_to_core(self, request: Request) -> None:
        hashes = list(request.block_hashes) if self.caching else None
        self.core.add_request(request.request_id, prompt_tokens=request.num_prompt_tokens,
                              max_output_tokens=request.max_tokens, arrival_time=request.arrival_time,
                              priority=request.priority, block_hashes=hashes)
        self._clients[request.client_index] = self._clients.get(request.client_index, 0) + 1
        self._live[request.request_id] = _Live(request, self.max_model_len, self.block_size,
                                                len(hashes) if hashes else 0)

    def has_request(self, request_id: str) -> bool:
        return request_id in self.requests

    def finish_requests(self, request_ids: str | Iterable[str] | None,
                        finished_status: RequestStatus) -> list[Request]:
        assert RequestStatus.is_finished(finished_status)
        if isinstance(request_ids, str):
            request_ids = (request_ids,)
        elif request_ids is not None:
            request_ids = set(request_ids)       # vLLM's order: a set's
        else:
            request_ids = list(self.requests)
        done = []
        for rid in request_ids:
            request = self.requests.get(rid)
            if request is None or request.is_finished():
                continue
            done.append(request)
        for request in done:
            request.status = finished_status
            self._free_request(request)
        return done

    def _free_request(self, request: Request) -> None:
        rid = request.request_id
        if request in self._held:
            self._held.remove(request)
        else:
            self.core.abort(rid)
        self._forget(request)

    def _forget(self, request: Request) -> None:
        rid = request.request_id
        self.finished_req_ids.add(rid)
        if self.finished_req_ids_dict is not None:
            self.finished_req_ids_dict[request.client_index].add(rid)
        del self.requests[rid]
        if self._live.pop(rid, None) is not None:
            ci = request.client_index
            self._clients[ci] -= 1
            if not self._clients[ci]:
                del self._clients[ci]
        self._chunking.discard(rid)

    # ------------------------------------------------------------------ the step

    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:
        if self._plan is not None:
            raise RuntimeError("schedule() called twice without update_from_output(): "
                               "halffull.vllm.Scheduler needs sync scheduling (--no-async-scheduling)")
        if self._pause_state == PauseState.PAUSED_ALL:
            return self._empty_output()
        now = self._now = max(self._now, self.clock())
        ts = time.monotonic()
        plan = self.core.schedule(now=now)
        self._plan = plan
        requests = self.requests
        log_stats = self.log_stats
        preempted = plan.preempted
        for rid, _ in preempted:
            req = requests[str(rid)]
            req.status = RequestStatus.PREEMPTED
            req.num_computed_tokens = 0
            req.spec_token_ids = []
            req.drop_stale_output = False
            req.num_stale_output_tokens = req.num_in_flight_tokens
            req.num_output_placeholders = 0
            req.num_preemptions += 1
            if log_stats:
                req.record_event(EngineCoreEventType.PREEMPTED, ts)
        ids = plan.req_ids.tolist()
        counts = plan.num_new_tokens.tolist()
        computed = plan.num_computed_tokens.tolist()
        reqs = list(map(requests.__getitem__, ids))
        new_blocks = {str(rid): b for rid, b in plan.new_blocks}     # the ids are vLLM's str ids
        admitted = plan.admitted
        new_reqs: list[Request] = []
        resumed: list[Request] = []
        if admitted:
            # in plan order, as vLLM lists them
            admitted_set = set(admitted)
            running = []
            for req, c in zip(reqs, computed, strict=True):
                if req.request_id not in admitted_set:
                    running.append(req)
                    continue
                if req.prefill_stats and req.num_preemptions <= 0:
                    req.prefill_stats.set(num_prompt_tokens=req.num_prompt_tokens, num_local_cached_tokens=c,
                                          num_external_cached_tokens=0)
                (new_reqs if req.status == RequestStatus.WAITING else resumed).append(req)
                req.status = RequestStatus.RUNNING
                req.num_computed_tokens = c
                if log_stats:
                    req.record_event(EngineCoreEventType.SCHEDULED, ts)
        else:
            running = reqs
        num_scheduled = dict(zip(ids, counts, strict=True))
        out = self._output(new_reqs, resumed, running, new_blocks, num_scheduled,
                           {str(rid) for rid, _ in preempted} if preempted else set(),
                           None if admitted else (ids, computed))
        # what vLLM's _update_after_schedule does (no spec tokens, no encoder inputs), as
        # C-level maps: num_computed_tokens += n, num_in_flight_tokens += n, is_prefill_chunk
        # (in flight: sync scheduling applies every step before the next, so it was 0);
        # is_prefill_chunk = not samples, set where it changes
        _set_all(reqs, "num_computed_tokens", map(add, computed, counts))
        _set_all(reqs, "num_in_flight_tokens", counts)
        samples = plan.samples
        if self._chunking or not samples.all():
            chunking = set(compress(ids, map(not_, samples.tolist())))
            was = self._chunking
            for rid in chunking - was:
                requests[rid].is_prefill_chunk = True
            for rid in was.intersection(num_scheduled).difference(chunking):
                requests[rid].is_prefill_chunk = False
            self._chunking = was.difference(num_scheduled) | chunking
        self.finished_req_ids = set()
        return out

    def _output(self, new_reqs: list[Request], resumed: list[Request], running: list[Request],
                new_blocks: dict[str, list[int]], num_scheduled: dict[str, int],
                preempted: set[str], listed: tuple[list[str], list[int]] | None = None) -> SchedulerOutput:
        """vLLM's ``SchedulerOutput`` for this step; ``new_blocks``: the block ids each
        request gained (absent: none), as the core's plan lists them; ``listed``: the
        cached requests' ids and computed tokens where the plan already lists them in order."""
        mrope = self.uses_mrope

        def blocks(rid: str) -> tuple[list[int]] | None:
            b = new_blocks.get(rid)
            return (b,) if b else None

        if self.use_v2_model_runner:
            new_reqs = new_reqs + resumed
            resumed = []
            new_data = [NewRequestData.from_request(r, blocks(r.request_id), r._all_token_ids, uses_mrope=mrope)
                        for r in new_reqs]
        else:
            new_data = [NewRequestData.from_request(r, blocks(r.request_id), uses_mrope=mrope) for r in new_reqs]
        cached = running + resumed if resumed else running
        cached_ids = listed[0] if listed is not None else list(map(_request_id, cached))
        all_token_ids = {}
        resumed_ids = set()
        if not self.use_v2_model_runner:
            prev = self.prev_step_scheduled_req_ids
            if not prev.issuperset(cached_ids):
                all_token_ids = {r.request_id: r.all_token_ids.copy() for r in cached if r.request_id not in prev}
            resumed_ids = {r.request_id for r in resumed}
            self.prev_step_scheduled_req_ids = set(num_scheduled)
        # most running requests gain no block in a step: fill in the few that do
        new_block_ids: list[tuple[list[int]] | None] = [None] * len(cached_ids)
        if new_blocks:
            pos = dict(zip(cached_ids, range(len(cached_ids)), strict=True))
            for rid, b in new_blocks.items():
                k = pos.get(rid)
                if k is not None and b:
                    new_block_ids[k] = (b,)
        cached_data = CachedRequestData(
            req_ids=cached_ids, resumed_req_ids=resumed_ids, new_token_ids=[],
            all_token_ids=all_token_ids, new_block_ids=new_block_ids,
            num_computed_tokens=listed[1].copy() if listed is not None else list(map(_computed, cached)),
            # sync scheduling: no output placeholders
            num_output_tokens=list(map(len, map(_outputs, cached))))
        return SchedulerOutput(
            scheduled_new_reqs=new_data, scheduled_cached_reqs=cached_data,
            num_scheduled_tokens=num_scheduled, total_num_scheduled_tokens=sum(num_scheduled.values()),
            scheduled_spec_decode_tokens={}, scheduled_encoder_inputs={},
            preempted_req_ids=preempted, finished_req_ids=self.finished_req_ids, free_encoder_mm_hashes=[])

    def _empty_output(self) -> SchedulerOutput:
        out = self._output([], [], [], {}, {}, set())
        self.finished_req_ids = set()
        return out

    def update_from_output(self, scheduler_output: SchedulerOutput,
                           model_runner_output: ModelRunnerOutput) -> dict[int, EngineCoreOutputs]:
        plan, self._plan = self._plan, None
        mro = model_runner_output
        sampled = mro.sampled_token_ids
        index = mro.req_id_to_index
        masks = mro.sampling_masks if self.return_sampling_mask else None
        # per-step extras (prompt logprobs, NaN counts, sampling masks) take the general path
        general_step = bool(masks is not None or mro.prompt_logprobs_dict or mro.prompt_token_id_logprobs_dict
                            or mro.num_nans_in_logits)
        outputs: dict[int, list[EngineCoreOutput]] = defaultdict(list)
        live = self._live
        max_model_len = self.max_model_len
        bs = self.block_size
        caching = self.caching
        stopped: list[Request] = []
        hashed: list[_Live] = []        # requests that filled a block (prefix caching on)
        single = len(self._clients) == 1          # one frontend: one list, in step order
        ecos: list[EngineCoreOutput] = []
        for rid, n in scheduler_output.num_scheduled_tokens.items():
            st = live.get(rid)
            if st is None:
                continue                          # aborted while the step ran
            req = st.req
            req.num_in_flight_tokens -= n
            tokens = sampled[index[rid]] if sampled else None
            if not tokens:
                continue                          # a partial prefill samples nothing
            if general_step or st.general or len(tokens) != 1:
                eco, stop = self._update_general(req, rid, tokens, index[rid], mro, masks)
                st.block_hashed(bs)
                if req.num_nans_in_logits:
                    st.general = True             # every later output carries the count
                if caching and len(req.block_hashes) > st.known_hashes:
                    hashed.append(st)
            else:
                # the usual decode step, as append_output_token_ids + check_stop do it
                tok = tokens[0]
                st.out.append(tok)
                every = st.all
                every.append(tok)
                m = len(every)
                if m >= st.next_full:
                    req.update_block_hashes()     # only a full block adds a hash
                    st.block_hashed(bs)
                    if caching:
                        hashed.append(st)
                stop = (m >= st.limit or tok in st.stop_ids) and check_stop(req, max_model_len)
                eco = EngineCoreOutput(rid, tokens)
                if req.prefill_stats is not None:
                    eco.prefill_stats = self._take_prefill_stats(req)
                if req.events:
                    eco.events, req.events = req.events, []
                if stop:
                    eco.stop_reason = req.stop_reason
                    eco.finish_reason = req.get_finished_reason()
                    eco.spec_decode_metrics = req.spec_decode_metrics
            if stop:
                stopped.append(req)
            if single:
                ecos.append(eco)
            else:
                outputs[st.client].append(eco)
        if ecos:
            outputs[next(iter(self._clients))] = ecos
        if plan is not None:
            stopped_ids = [req.request_id for req in stopped]
            ended = self.core.update(plan, finished=stopped_ids, now=self._now)
            if len(ended) != len(stopped_ids):
                raise RuntimeError(f"halffull core ended {sorted(ended)} but vLLM's stop check "
                                   f"stopped {sorted(stopped_ids)}: please report this")
        for req in stopped:
            self._forget(req)
        if hashed:
            core = self.core
            for st in hashed:
                rid = st.req.request_id
                if rid in live:
                    have, now_known = st.known_hashes, st.req.block_hashes
                    core.extend_block_hashes(rid, now_known[have:], start=have)
                    st.known_hashes = len(now_known)
        eco_all = {ci: EngineCoreOutputs(outputs=outs) for ci, outs in outputs.items()}
        if self.finished_req_ids_dict:
            for ci, finished in self.finished_req_ids_dict.items():
                if ci in eco_all:
                    eco_all[ci].finished_requests = finished
                else:
                    eco_all[ci] = EngineCoreOutputs(finished_requests=finished)
            self.finished_req_ids_dict.clear()
        kv_stats = mro.kv_connector_output
        stats = self.make_stats(cudagraph_stats=mro.cudagraph_stats,
                                kv_connector_stats=kv_stats.kv_connector_stats if kv_stats else None)
        if stats is not None:
            first = next(iter(eco_all.values()), None)
            if first is None:
                first = eco_all[0] = EngineCoreOutputs()
            first.scheduler_stats = stats
        return eco_all

    def _take_prefill_stats(self, req: Request) -> Any:
        prefill_stats = req.take_prefill_stats()
        if prefill_stats is not None:
            # vLLM's estimate: tokens covered by the table's hashed blocks; the step just
            # scheduled registered every full block of the computed tokens
            bs = self.block_size
            prefill_stats.finalize(req.num_computed_tokens // bs * bs if self.caching else 0)
        return prefill_stats

    def _update_general(self, req: Request, rid: str, tokens: list[int], i: int, mro: ModelRunnerOutput,
                        masks: Any) -> tuple[EngineCoreOutput, bool]:
        """One request's sampled tokens, every feature as vLLM's ``update_from_output``
        applies them (logprobs, masks, NaN counts, prompt logprobs, several tokens)."""
        stop = False
        for k, tok in enumerate(tokens, 1):
            req.append_output_token_ids(tok)
            stop = check_stop(req, self.max_model_len)
            if stop:
                req.num_computed_tokens -= len(tokens) - k
                del tokens[k:]
                break
        prefill_stats = self._take_prefill_stats(req)
        new_logprobs = None
        if req.sampling_params is not None and req.sampling_params.num_logprobs is not None and mro.logprobs:
            new_logprobs = mro.logprobs.slice_request(i, len(tokens))
        finish_reason = req.get_finished_reason() if stop else None
        mask = masks.slice_request(i, len(tokens)) if masks is not None else None
        nans = mro.num_nans_in_logits
        if nans is not None and rid in nans:
            req.num_nans_in_logits = nans[rid]
        eco = EngineCoreOutput(
            request_id=rid, new_token_ids=tokens, finish_reason=finish_reason, new_logprobs=new_logprobs,
            new_sampling_mask=mask, new_prompt_logprobs_tensors=mro.prompt_logprobs_dict.get(rid),
            prompt_token_id_logprobs=mro.prompt_token_id_logprobs_dict.get(rid), pooling_output=None,
            stop_reason=req.stop_reason, events=req.take_events(), prefill_stats=prefill_stats,
            spec_decode_metrics=req.spec_decode_metrics if finish_reason is not None else None,
            trace_headers=req.trace_headers, num_nans_in_logits=req.num_nans_in_logits)
        return eco, stop

    # ------------------------------------------------------------------ the rest

    def get_grammar_bitmask(self, scheduler_output: SchedulerOutput) -> None:
        return None                                # structured output is refused

    def update_draft_token_ids(self, draft_token_ids: DraftTokenIds) -> None:
        raise UnsupportedFeatureError("speculative decoding")

    def update_draft_token_ids_in_output(self, draft_token_ids: DraftTokenIds,
                                         scheduler_output: SchedulerOutput) -> None:
        raise UnsupportedFeatureError("speculative decoding")

    def get_request_counts(self) -> tuple[int, int]:
        return self.core.num_running, self.core.num_waiting + len(self._held)

    def get_num_unfinished_requests(self) -> int:
        if self._pause_state == PauseState.PAUSED_ALL:
            return 0
        running, waiting = self.get_request_counts()
        if self._pause_state == PauseState.PAUSED_NEW:
            waiting = 0                            # vLLM counts only KV-holding waiters (none here)
        return running + waiting

    def has_finished_requests(self) -> bool:
        return bool(self.finished_req_ids)

    @property
    def pause_state(self) -> PauseState:
        return self._pause_state

    def set_pause_state(self, pause_state: PauseState) -> None:
        """PAUSED_ALL schedules nothing. PAUSED_NEW holds requests added meanwhile back from
        the core until UNPAUSED (as vLLM does); requests the core already queued, or preempts
        meanwhile, may still be admitted (vLLM would hold them too)."""
        self._pause_state = PauseState(pause_state)
        if self._pause_state != PauseState.PAUSED_NEW:
            held, self._held = self._held, []
            for request in held:
                self._add_to_core(request)

    def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        if reset_running_requests and self.core.num_running:
            raise UnsupportedFeatureError("reset_prefix_cache(reset_running_requests=True) with requests "
                                          "running (the core does not preempt on request)")
        ok = self.core.reset_prefix_cache()
        if ok and self.log_stats:
            self._stats_reset = True
        return ok

    def reset_encoder_cache(self) -> None:
        return None                                # no encoder inputs

    def get_kv_cache_usage(self) -> float:
        usable = self.num_gpu_blocks - 1           # block 0 is vLLM's null block
        return 1.0 - self.core.num_free_gpu_blocks / usable if usable else 0.0

    def make_stats(self, spec_decoding_stats: Any = None, kv_connector_stats: Any = None,
                   cudagraph_stats: Any = None, perf_stats: Any = None,
                   ec_connector_stats: Any = None) -> SchedulerStats | None:
        if not self.log_stats:
            return None
        now = self.core.prefix_cache_stats()
        seen = self._stats_seen
        pcs = PrefixCacheStats(reset=self._stats_reset)
        for k in _CACHE_COUNTERS:
            setattr(pcs, k, now[k] - seen[k])
            seen[k] = now[k]
        self._stats_reset = False
        running, waiting = self.get_request_counts()
        return SchedulerStats(
            num_running_reqs=running, num_waiting_reqs=waiting, num_skipped_waiting_reqs=0,
            num_kv_fetch_reqs_by_stage=self._kv_fetch_counts.copy(), kv_cache_usage=self.get_kv_cache_usage(),
            prefix_cache_stats=pcs, connector_prefix_cache_stats=None, kv_cache_eviction_events=[],
            spec_decoding_stats=spec_decoding_stats,
            kv_connector_stats=kv_connector_stats.to_dict() if kv_connector_stats else None,
            cudagraph_stats=cudagraph_stats, perf_stats=perf_stats,
            ec_connector_stats=ec_connector_stats.data if ec_connector_stats else None)

    def shutdown(self) -> None:
        return None
