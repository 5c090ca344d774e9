"""Drive vLLM 0.33's V1 ``Scheduler`` and halffull (``semantics="vllm_v1"``) side by side.

Our own code. vLLM's scheduler is plain Python and is built
here without a GPU or a model: a tiny local Llama ``config.json``, ``DeviceConfig("cuda")``
(never touched), a one-group full-attention ``KVCacheConfig`` with ``num_blocks = N``.

A workload (``make_workload``) is plain data, independent of vLLM: requests with an arrival
step, prompt, ``max_tokens``, the output index at which the fake model emits EOS or a stop
token, an optional abort step and a priority. The fake model's token depends only on the
request and the output index, so every side replays the same run. Each step:

1. add the requests arriving at this step (id order), 2. abort those due (one call each),
3. ``schedule``, 4. one sampled token for each scheduled request whose known tokens are
then all computed, 5. ``update`` (halffull: ``finished=`` the ones whose token is EOS/stop).

``Decision`` is what a side decided in one step, in a form every side produces; the first
difference between sides is reported with the seed, the step and both decisions.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

CACHE_STATS = ("requests", "queries", "hits", "preempted_requests", "preempted_queries", "preempted_hits")
EOS = 2
STOP_IDS = (3, 4)
VOCAB = 1000


# ---------------------------------------------------------------------------- workloads


def random_config(rng: random.Random, policy: str, prefix_caching: bool = False) -> dict:
    """A vLLM-shaped config, KV-tight most of the time (real preemption pressure)."""
    bs = 16
    mml = rng.choice([256, 384, 512])
    if rng.random() < 0.8:
        nb = rng.randint(mml // bs + 2, mml // bs + 40)
    else:
        nb = rng.randint(mml // bs + 100, mml // bs + 200)
    return dict(num_blocks=nb, block_size=bs, max_num_seqs=rng.choice([4, 8, 16]),
                max_num_batched_tokens=rng.choice([64, 128, 256, 512]), max_model_len=mml,
                policy=policy, long_prefill_token_threshold=rng.choice([0, 0, 0, 48]),
                reserve_full_prompt=rng.random() < 0.7,
                watermark=rng.choice([0.0, 0.0, 0.0, 0.05]), enable_prefix_caching=prefix_caching,
                max_steps=4000)


def make_workload(seed: int, config: dict) -> dict:
    rng = random.Random(seed)
    bs = config["block_size"]
    max_prompt = max(2, min(config["max_model_len"] - 1, (config["num_blocks"] - 1) * bs - bs))
    prefixes = [[rng.randrange(10, VOCAB) for _ in range(rng.randint(4, 6) * bs + rng.randint(0, bs))]
                for _ in range(rng.randint(1, 4))]
    horizon = rng.randint(1, 60)
    reqs = []
    for i in range(rng.randint(10, 30)):
        plen = min(max_prompt, int(rng.lognormvariate(4.6, 0.7)) + 2)
        pre = rng.choice(prefixes)[: max(1, plen - rng.randint(0, 40))] if rng.random() < 0.85 else []
        prompt = (pre + [rng.randrange(10, VOCAB) for _ in range(max(1, plen - len(pre)))])[:max_prompt]
        max_tokens = rng.choice([rng.randint(1, 16), rng.randint(16, 120), rng.randint(120, 300)])
        r = dict(id=f"r{i:04d}", arrival_step=rng.randint(0, horizon) if i else 0, prompt=prompt,
                 max_tokens=max_tokens,
                 eos_at=rng.randint(0, max_tokens + 20) if rng.random() < 0.5 else None,
                 eos_token=rng.choice([EOS, EOS, STOP_IDS[0], STOP_IDS[1]]), abort_step=None,
                 priority=rng.randint(0, 3) if config["policy"] == "priority" else 0)
        if rng.random() < 0.1:
            r["abort_step"] = r["arrival_step"] + rng.randint(0, 80)
        reqs.append(r)
    reqs.sort(key=lambda r: (r["arrival_step"], r["id"]))
    return dict(seed=seed, config=config, requests=reqs)


def fake_token(spec: dict, out_idx: int) -> int:
    """The token the fake model samples at output index ``out_idx`` of request ``spec``."""
    if spec["eos_at"] is not None and out_idx == spec["eos_at"]:
        return spec["eos_token"]
    return 10 + zlib.crc32(f"{spec['id']}:{out_idx}".encode()) % (VOCAB - 10)


def arrival_time(spec: dict) -> float:
    """Unique per request: vLLM breaks priority ties on it."""
    return float(spec["arrival_step"]) + int(spec["id"][1:]) * 1e-6


# ---------------------------------------------------------------------------- decisions


@dataclass
class Decision:
    """One step of one side. ``scheduled``: (id, new tokens, computed before, new block ids)
    in the step's order; ``tables``: block table after ``schedule`` of each scheduled request;
    ``ended``: ids that stopped in the update, in order; ``free_queue``: head to tail after the
    update; ``cache_stats``: the prefix cache's counters so far (vLLM's ``PrefixCacheStats``
    fields, summed over steps)."""

    scheduled: list[tuple[str, int, int, list[int]]] = field(default_factory=list)
    tables: dict[str, list[int]] = field(default_factory=dict)
    admitted: list[str] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    finished_in_output: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    num_free: int = 0
    free_queue: list[int] = field(default_factory=list)
    cache_stats: dict[str, int] = field(default_factory=dict)

    def differs(self, other: Decision) -> str | None:
        """The first field that differs, or None."""
        a, b = asdict(self), asdict(other)
        return next((k for k in a if a[k] != b[k]), None)


class HalffullSide:
    """A halffull scheduler (Rust core or reference) in ``semantics="vllm_v1"``."""

    def __init__(self, scheduler_cls: Any, config: dict, make_config: Any = None) -> None:
        import halffull

        make_config = make_config or halffull.SchedulerConfig
        self.cfg = make_config(
            semantics="vllm_v1", num_gpu_blocks=config["num_blocks"], block_size=config["block_size"],
            num_cpu_blocks=0, max_num_seqs=config["max_num_seqs"],
            max_num_batched_tokens=config["max_num_batched_tokens"], max_model_len=config["max_model_len"],
            policy=config["policy"], long_prefill_token_threshold=config["long_prefill_token_threshold"],
            reserve_full_prompt=config["reserve_full_prompt"], watermark=config["watermark"],
            enable_prefix_caching=config.get("enable_prefix_caching", False))
        self.s = scheduler_cls(self.cfg)
        self.specs: dict[str, dict] = {}
        self.unreported = 0                      # ids ended since the last plan

    def add(self, spec: dict) -> None:
        self.specs[spec["id"]] = spec
        self.s.add_request(spec["id"], prompt_token_ids=spec["prompt"], max_output_tokens=spec["max_tokens"],
                           arrival_time=arrival_time(spec), priority=spec["priority"])

    def live(self, rid: str) -> bool:
        try:
            self.s.request_info(rid)
        except Exception:
            return False
        return True

    def abort(self, rid: str) -> None:
        self.s.abort(rid)
        self.unreported += 1

    def has_work(self) -> bool:
        return self.s.has_unfinished_requests() or self.unreported > 0

    def step(self, step: int) -> Decision:
        now = float(step) + 0.5
        plan = self.s.schedule(now=now)
        self.unreported = 0
        new_blocks = dict(plan.new_blocks)
        d = Decision(admitted=list(plan.admitted), preempted=[rid for rid, _ in plan.preempted],
                     finished_in_output=sorted(plan.finished))
        stopped = []
        for rid, n, c, samples in zip(plan.req_ids, plan.num_new_tokens, plan.num_computed_tokens,
                                      plan.samples, strict=True):
            d.scheduled.append((rid, int(n), int(c), [int(b) for b in new_blocks.get(rid, [])]))
            d.tables[rid] = list(self.s.request_info(rid)["block_table"])
            if samples:
                spec = self.specs[rid]
                if fake_token(spec, int(c) + int(n) - len(spec["prompt"])) in (EOS, *STOP_IDS):
                    stopped.append(rid)
        d.ended = list(self.s.update(plan, finished=stopped, now=now))
        self.unreported = len(d.ended)
        d.num_free = self.s.num_free_gpu_blocks
        d.free_queue = self.s.free_gpu_block_ids()
        stats = self.s.prefix_cache_stats()
        d.cache_stats = {k: stats[k] for k in CACHE_STATS}
        return d


# ---------------------------------------------------------------------------- vLLM

_MODEL_DIR: str | None = None


def _model_dir() -> str:
    global _MODEL_DIR
    if _MODEL_DIR is None:
        d = tempfile.mkdtemp(prefix="halffull-llama-")
        cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
               "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
               "num_hidden_layers": 1, "vocab_size": VOCAB, "max_position_embeddings": 1 << 16,
               "torch_dtype": "float16"}
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        _MODEL_DIR = d
    return _MODEL_DIR


def quiet_vllm() -> None:
    """Offline, single-threaded, no log noise; call before importing vllm."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    import logging

    logging.disable(logging.WARNING)


def vllm_parts(config: dict, **scheduler_overrides: Any) -> tuple[Any, Any, int, int]:
    """What vLLM's ``EngineCore`` hands a scheduler for ``config``, built without a GPU:
    ``(vllm_config, kv_cache_config, block_size, hash_block_size)``."""
    quiet_vllm()
    import torch
    from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.core.kv_cache_utils import resolve_kv_cache_block_sizes
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec

    torch.set_num_threads(1)
    mc = ModelConfig(model=_model_dir(), skip_tokenizer_init=True, dtype="float16",
                     max_model_len=config["max_model_len"])
    sc_args: dict[str, Any] = dict(
        max_num_seqs=config["max_num_seqs"], max_num_batched_tokens=config["max_num_batched_tokens"],
        max_model_len=config["max_model_len"], is_encoder_decoder=False, enable_chunked_prefill=True,
        policy=config["policy"] if config["policy"] in ("fcfs", "priority") else "fcfs",
        long_prefill_token_threshold=config["long_prefill_token_threshold"],
        scheduler_reserve_full_isl=config["reserve_full_prompt"], watermark=config["watermark"],
        async_scheduling=False)
    sc_args.update(scheduler_overrides)
    sc = SchedulerConfig(**sc_args)
    caching = config.get("enable_prefix_caching", False)
    cc = CacheConfig(block_size=config["block_size"], enable_prefix_caching=caching)
    vc = VllmConfig(model_config=mc, scheduler_config=sc, cache_config=cc,
                    device_config=DeviceConfig(device="cuda"))
    vc.cache_config.num_gpu_blocks = config["num_blocks"]
    spec = FullAttentionSpec(block_size=config["block_size"], num_kv_heads=2, head_size=16,
                             dtype=torch.float16)
    kv = KVCacheConfig(num_blocks=config["num_blocks"], kv_cache_tensors=[],
                       kv_cache_groups=[KVCacheGroupSpec(["model.layers.0.self_attn"], spec)])
    sbs, hbs = resolve_kv_cache_block_sizes(kv, vc)
    kv.hash_block_size = hbs
    return vc, kv, sbs, hbs


def request_block_hasher(config: dict) -> Any:
    """The engine's block hasher for new ``Request`` objects (None with caching off)."""
    if not config.get("enable_prefix_caching", False):
        return None
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash

    hash_fn = get_hash_fn_by_name("sha256")
    init_none_hash(hash_fn)
    return get_request_block_hasher(config["block_size"], hash_fn)


def make_request(spec: dict, block_hasher: Any) -> Any:
    """vLLM's ``Request`` for workload request ``spec`` (EOS and stop tokens as the fake model's)."""
    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import Request

    sp = SamplingParams(max_tokens=spec["max_tokens"], stop_token_ids=list(STOP_IDS), logprobs=spec.get("logprobs"))
    sp.update_from_generation_config({}, eos_token_id=EOS)
    return Request(request_id=spec["id"], prompt_token_ids=list(spec["prompt"]), sampling_params=sp,
                   pooling_params=None, arrival_time=arrival_time(spec), priority=spec["priority"],
                   block_hasher=block_hasher, client_index=spec.get("client_index", 0),
                   trace_headers=spec.get("trace_headers"), cache_salt=spec.get("cache_salt"))


class VllmSide:
    """vLLM 0.33's real (sync) V1 ``Scheduler``, prefix caching as the config says (requests
    then carry the engine's SHA-256 block hasher, as ``EngineCore`` gives them)."""

    def __init__(self, config: dict) -> None:
        from vllm.v1.core.sched.scheduler import Scheduler
        from vllm.v1.structured_output import StructuredOutputManager

        vc, kv, sbs, hbs = vllm_parts(config)
        self.s = Scheduler(vllm_config=vc, kv_cache_config=kv,
                           structured_output_manager=StructuredOutputManager(vc),
                           block_size=sbs, hash_block_size=hbs, log_stats=True)
        self.block_hasher = request_block_hasher(config)
        self.cache_stats = dict.fromkeys(CACHE_STATS, 0)
        self.specs: dict[str, dict] = {}
        self._preempted: list[str] = []
        original = self.s._preempt_request

        def record(request: Any, *args: Any, **kwargs: Any) -> Any:   # observe the order only
            self._preempted.append(request.request_id)
            return original(request, *args, **kwargs)

        self.s._preempt_request = record

    def add(self, spec: dict) -> None:
        self.specs[spec["id"]] = spec
        self.s.add_request(make_request(spec, self.block_hasher))

    def live(self, rid: str) -> bool:
        return rid in self.s.requests and not self.s.requests[rid].is_finished()

    def abort(self, rid: str) -> None:
        from vllm.v1.request import RequestStatus

        self.s.finish_requests(rid, RequestStatus.FINISHED_ABORTED)

    def has_work(self) -> bool:
        return self.s.has_requests()

    def step(self, step: int) -> Decision:
        from vllm.v1.outputs import ModelRunnerOutput

        s = self.s
        self._preempted.clear()
        out = s.schedule()
        new = {r.req_id: r for r in out.scheduled_new_reqs}
        cached = out.scheduled_cached_reqs
        at = {rid: i for i, rid in enumerate(cached.req_ids)}
        d = Decision(preempted=list(self._preempted), finished_in_output=sorted(out.finished_req_ids))
        sampled = []
        for rid, n in out.num_scheduled_tokens.items():
            req = s.requests[rid]
            if rid in new:
                before, blocks = new[rid].num_computed_tokens, new[rid].block_ids
                d.admitted.append(rid)
            else:
                i = at[rid]
                before, blocks = cached.num_computed_tokens[i], cached.new_block_ids[i]
                if rid in cached.resumed_req_ids:
                    d.admitted.append(rid)
            d.scheduled.append((rid, n, before, list(blocks[0]) if blocks else []))
            d.tables[rid] = list(s.kv_cache_manager.get_block_ids(rid)[0])
            spec = self.specs[rid]
            sampled.append([] if req.is_prefill_chunk
                           else [fake_token(spec, req.num_computed_tokens - req.num_prompt_tokens)])
        req_ids = list(out.num_scheduled_tokens)
        mro = ModelRunnerOutput(req_ids=req_ids, req_id_to_index={r: i for i, r in enumerate(req_ids)},
                                sampled_token_ids=sampled)
        for eco in s.update_from_output(out, mro).values():
            d.ended += [o.request_id for o in eco.outputs if o.finish_reason is not None]
            pcs = eco.scheduler_stats.prefix_cache_stats if eco.scheduler_stats else None
            if pcs is not None:
                for k in CACHE_STATS:
                    self.cache_stats[k] += getattr(pcs, k)
        d.cache_stats = dict(self.cache_stats)
        pool = s.kv_cache_manager.block_pool
        d.num_free = pool.get_num_free_blocks()
        d.free_queue = [b.block_id for b in pool.free_block_queue.get_all_free_blocks()]
        return d


# ---------------------------------------------------------------------------- side by side


def run_side_by_side(workload: dict, sides: dict[str, Any]) -> dict:
    """Replay ``workload`` through every side; after every step compare every side's
    ``Decision`` with the first side's. Raises AssertionError at the first difference (seed,
    step, field, both decisions). Returns counts: steps, preemptions, cache_hits (tokens)."""
    cfg = workload["config"]
    names = list(sides)
    by_step: dict[int, list[dict]] = {}
    aborts: dict[int, list[str]] = {}
    for r in workload["requests"]:
        by_step.setdefault(r["arrival_step"], []).append(r)
        if r["abort_step"] is not None:
            aborts.setdefault(r["abort_step"], []).append(r["id"])
    last_arrival = max(by_step)
    steps = preemptions = 0
    for step in range(cfg["max_steps"]):
        for spec in by_step.get(step, []):
            for side in sides.values():
                side.add(spec)
        first = sides[names[0]]
        for rid in sorted(aborts.get(step, [])):
            if first.live(rid):
                for side in sides.values():
                    side.abort(rid)
        work = {name: side.has_work() for name, side in sides.items()}
        assert len(set(work.values())) == 1, f"seed {workload['seed']} step {step}: has work: {work}"
        if not work[names[0]]:
            if step > last_arrival:
                break
            continue
        decisions = {name: side.step(step) for name, side in sides.items()}
        ref = decisions[names[0]]
        for name in names[1:]:
            k = ref.differs(decisions[name])
            assert k is None, (
                f"seed {workload['seed']} step {step}: {k} differs\n"
                f"config: {cfg}\n{names[0]}: {asdict(ref)}\n{name}: {asdict(decisions[name])}")
        steps += 1
        preemptions += len(ref.preempted)
    hits = ref.cache_stats.get("hits", 0) + ref.cache_stats.get("preempted_hits", 0) if steps else 0
    return dict(steps=steps, preemptions=preemptions, cache_hits=hits)
