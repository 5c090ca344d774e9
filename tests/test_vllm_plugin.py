"""``halffull.vllm.Scheduler`` (vLLM's ``scheduler_cls``) against vLLM 0.33's own ``Scheduler``.

Both are built from the same ``VllmConfig`` / ``KVCacheConfig`` (no GPU, as
``vllm_harness.vllm_parts`` builds them), get their own ``Request`` objects for the same
workload (``vllm_harness.make_workload``: shared prefixes, EOS and stop tokens, max_tokens and
max_model_len stops, aborts, KV pressure so that most runs preempt; plus later requests whose
prompt continues an earlier one's prompt *and outputs*, as chat turns do, so that generated
blocks are hit) and the same fake model-runner outputs. After every ``schedule()`` the two
``SchedulerOutput`` objects must be equal field by field, after every ``update_from_output()``
the two ``EngineCoreOutputs`` dicts (tokens, finish and stop reasons, event types, prefill
stats, scheduler stats with the prefix-cache counters and KV usage), and the ``Request``
objects, the request counts and the free block queue must agree. Some aborts arrive between
``schedule()`` and ``update_from_output()``, as ``EngineCore`` processes its abort queue.

Needs vLLM (see README, "Running inside vLLM"): ``make test-vllm``. Skipped without it.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import zlib
from typing import Any

import numpy as np
import pytest

import vllm_harness as harness

harness.quiet_vllm()
pytest.importorskip("vllm", reason="vLLM is not installed")

from vllm.v1.core.sched.scheduler import Scheduler as VllmScheduler  # noqa: E402
from vllm.v1.outputs import LogprobsLists, ModelRunnerOutput  # noqa: E402
from vllm.v1.request import RequestStatus  # noqa: E402
from vllm.v1.structured_output import StructuredOutputManager  # noqa: E402

import halffull  # noqa: E402
from halffull import vllm as hv  # noqa: E402

RUNS_PER_CELL = 75          # 4 cells: 300 workloads, 150 with prefix caching


# ---------------------------------------------------------------------------- building


def build(cls: Any, config: dict, **overrides: Any) -> Any:
    vc, kv, sbs, hbs = harness.vllm_parts(config, **overrides)
    return cls(vllm_config=vc, kv_cache_config=kv, structured_output_manager=StructuredOutputManager(vc),
               block_size=sbs, hash_block_size=hbs, log_stats=True)


def chat_turns(workload: dict, rng: random.Random) -> dict:
    """Make some requests continue an earlier request's prompt and (fake, deterministic)
    outputs, as a chat's next turn does: their prompts can hit the earlier one's generated
    blocks while those are cached."""
    reqs = workload["requests"]
    cfg = workload["config"]
    max_prompt = max(2, min(cfg["max_model_len"] - 1, (cfg["num_blocks"] - 1) * cfg["block_size"] - cfg["block_size"]))
    for j in range(1, len(reqs)):
        if rng.random() < 0.3:
            i = rng.randrange(j)
            prev = reqs[i]
            stop = prev["eos_at"] if prev["eos_at"] is not None else prev["max_tokens"]
            said = [harness.fake_token(prev, k) for k in range(min(prev["max_tokens"], stop))]
            tail = [rng.randrange(10, harness.VOCAB) for _ in range(rng.randint(1, 20))]
            reqs[j]["prompt"] = (prev["prompt"] + said + tail)[:max_prompt]
            reqs[j]["arrival_step"] = max(reqs[j]["arrival_step"], prev["arrival_step"] + rng.randint(5, 40))
    reqs.sort(key=lambda r: (r["arrival_step"], r["id"]))
    return workload


def request_extras(workload: dict, rng: random.Random) -> dict:
    """In half the workloads, some requests come from a second frontend (client index 1),
    carry trace headers, ask for logprobs, salt their cache, or get NaN counts from the model
    at some output index: the outputs must carry each as vLLM's do."""
    if rng.random() < 0.5:
        for r in workload["requests"]:
            if rng.random() < 0.3:
                r["client_index"] = 1
            if rng.random() < 0.1:
                r["trace_headers"] = {"traceparent": f"00-{r['id']}-01"}
            if rng.random() < 0.1:
                r["logprobs"] = 1
            if rng.random() < 0.1:
                r["cache_salt"] = rng.choice(["a", "b"])
            if rng.random() < 0.1:
                r["nans_at"] = rng.randint(0, 20)
    return workload


# ---------------------------------------------------------------------------- comparing


_PLAIN = (int, float, str, bool, type(None))


def norm(x: Any) -> Any:
    """A plain, comparable form: dataclasses and msgspec structs as dicts, events by type
    (their timestamps are wall-clock), sampling params by repr."""
    if type(x) in _PLAIN:
        return x
    if type(x) is list and x and type(x[0]) is int:          # token ids, block ids
        return list(x)
    if isinstance(x, np.ndarray):
        return ("array", x.dtype.str, x.tolist())
    if isinstance(x, tuple) and hasattr(x, "_asdict"):      # LogprobsLists
        return {k: norm(v) for k, v in x._asdict().items()}
    fields = _FIELDS.get(type(x))
    if fields is None:
        fields = _FIELDS[type(x)] = _fields_of(x)
    if fields == "event":
        return ("event", x.type)
    if fields == "repr":
        return repr(x)
    if fields:
        return {f: norm(getattr(x, f)) for f in fields}
    if isinstance(x, dict):
        return {k: norm(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(norm(v) for v in x)
    if isinstance(x, (set, frozenset)):
        return sorted(norm(v) for v in x)
    return x


_FIELDS: dict[type, Any] = {}


def _fields_of(x: Any) -> Any:
    name = type(x).__name__
    if name == "EngineCoreEvent":
        return "event"
    if name in ("SamplingParams", "PoolingParams"):
        return "repr"
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return [f.name for f in dataclasses.fields(x)]
    if hasattr(x, "__struct_fields__"):
        return [f for f in x.__struct_fields__ if f != "timestamp"]
    return []


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if a == b and (not isinstance(a, dict) or list(a) == list(b)):
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return f"{path}.{k}: only in one"
            d = first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        if list(a) != list(b):
            return f"{path}: key order {list(a)} vs {list(b)}"
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


REQUEST_FIELDS = ("status", "num_computed_tokens", "is_prefill_chunk", "num_preemptions", "num_in_flight_tokens",
                  "_all_token_ids", "block_hashes", "stop_reason", "num_output_placeholders")


def state(s: Any) -> dict:
    return {"counts": s.get_request_counts(), "unfinished": s.get_num_unfinished_requests(),
            "has_requests": s.has_requests(), "usage": s.get_kv_cache_usage(),
            "requests": {rid: {f: getattr(r, f) for f in REQUEST_FIELDS} for rid, r in s.requests.items()}}


def free_queue(s: Any) -> list[int]:
    if isinstance(s, hv.Scheduler):
        return s.core.free_gpu_block_ids()
    return [b.block_id for b in s.kv_cache_manager.block_pool.free_block_queue.get_all_free_blocks()]


def runner_output(s: Any, out: Any, specs: dict) -> ModelRunnerOutput:
    """The fake model: one token for each scheduled request whose known tokens are all computed."""
    ids = list(out.num_scheduled_tokens)
    sampled = []
    for rid in ids:
        req = s.requests[rid]
        sampled.append([] if req.is_prefill_chunk
                       else [harness.fake_token(specs[rid], req.num_computed_tokens - req.num_prompt_tokens)])
    nans = {}
    for rid, tokens in zip(ids, sampled, strict=True):
        spec = specs[rid]
        if tokens and spec.get("nans_at") is not None \
                and s.requests[rid].num_computed_tokens - s.requests[rid].num_prompt_tokens == spec["nans_at"]:
            nans[rid] = 1 + spec["nans_at"] % 3
    logprobs = None
    if any(specs[rid].get("logprobs") for rid in ids):
        # one row per request (one sampled position each), deterministic in the sampled token
        tok = np.array([t[0] if t else 0 for t in sampled], dtype=np.int64)
        logprobs = LogprobsLists(np.stack([tok, tok + 1], axis=1), np.stack([-tok / 1e4, -tok / 1e3], axis=1),
                                 tok % 7)
    return ModelRunnerOutput(req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)},
                             sampled_token_ids=sampled, logprobs=logprobs, num_nans_in_logits=nans or None)


def run_pair(workload: dict, ours_cls: Any = hv.Scheduler) -> dict:
    """Replay ``workload`` through vLLM's scheduler and ours; assert equality after every call.
    Returns counts (steps, preemptions, hits)."""
    cfg = workload["config"]
    theirs, ours = build(VllmScheduler, cfg), build(ours_cls, cfg)
    sides = {"vllm": theirs, "halffull": ours}
    hasher = harness.request_block_hasher(cfg)
    specs = {r["id"]: r for r in workload["requests"]}
    arrivals: dict[int, list[dict]] = {}
    aborts: dict[int, list[str]] = {}
    for r in workload["requests"]:
        arrivals.setdefault(r["arrival_step"], []).append(r)
        if r["abort_step"] is not None:
            aborts.setdefault(r["abort_step"], []).append(r["id"])
    rng = random.Random(workload["seed"])
    last = max(arrivals)
    steps = preemptions = hits = 0

    def check(what: str, a: Any, b: Any, step: int) -> None:
        d = first_difference(norm(a), norm(b))
        assert d is None, f"seed {workload['seed']} step {step}: {what} differs at {d}\nconfig: {cfg}"

    for step in range(cfg["max_steps"]):
        for spec in arrivals.get(step, []):
            for s in sides.values():
                s.add_request(harness.make_request(spec, hasher))
        mid_step = []
        for rid in sorted(aborts.get(step, [])):
            if rid in theirs.requests:
                if rng.random() < 0.5:
                    mid_step.append(rid)
                    continue
                done = [[r.request_id for r in s.finish_requests(rid, RequestStatus.FINISHED_ABORTED)]
                        for s in sides.values()]
                assert done[0] == done[1]
        check("state", state(theirs), state(ours), step)
        if not theirs.has_requests():
            if step > last:
                break
            continue
        outs = {name: s.schedule() for name, s in sides.items()}
        check("SchedulerOutput", outs["vllm"], outs["halffull"], step)
        check("state after schedule", state(theirs), state(ours), step)
        mros = {name: runner_output(s, outs[name], specs) for name, s in sides.items()}
        for rid in mid_step:                   # EngineCore's abort queue, while the step runs
            for s in sides.values():
                s.finish_requests([rid], RequestStatus.FINISHED_ABORTED)
        ecos = {name: s.update_from_output(outs[name], mros[name]) for name, s in sides.items()}
        check("EngineCoreOutputs", ecos["vllm"], ecos["halffull"], step)
        check("state after update", state(theirs), state(ours), step)
        assert free_queue(theirs) == free_queue(ours), f"seed {workload['seed']} step {step}: free queue"
        steps += 1
        preemptions += len(outs["vllm"].preempted_req_ids or ())
        for eco in ecos["vllm"].values():
            if eco.scheduler_stats is not None:
                pcs = eco.scheduler_stats.prefix_cache_stats
                hits += pcs.hits + pcs.preempted_hits
    else:
        raise AssertionError(f"seed {workload['seed']}: not done after {cfg['max_steps']} steps")
    return dict(steps=steps, preemptions=preemptions, hits=hits)


# ---------------------------------------------------------------------------- parity


@pytest.mark.parametrize("caching", [False, True], ids=["no-cache", "prefix-cache"])
@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_same_outputs_as_vllm(policy, caching):
    cell = f"plugin:{policy}" + (":cache" if caching else "")
    rng = random.Random(zlib.crc32(cell.encode()))
    with_preemption = with_hits = 0
    for k in range(RUNS_PER_CELL):
        config = harness.random_config(rng, policy, prefix_caching=caching)
        seed = zlib.crc32(f"{cell}:{k}".encode())
        workload = request_extras(chat_turns(harness.make_workload(seed, config), random.Random(seed)),
                                  random.Random(seed + 1))
        counts = run_pair(workload)
        with_preemption += counts["preemptions"] > 0
        with_hits += counts["hits"] > 0
    # the workloads must exercise preemption (and cache hits), or the test proves little
    assert with_preemption >= RUNS_PER_CELL // 2, with_preemption
    assert with_hits >= (RUNS_PER_CELL * 3 // 4 if caching else 0), with_hits


def test_next_turn_hits_generated_blocks():
    """A chat's second turn (turn one's prompt + its outputs + more) hits turn one's generated
    blocks, in vLLM and in ours, because ours names generated blocks with vLLM's hashes."""
    config = dict(num_blocks=64, block_size=16, max_num_seqs=4, max_num_batched_tokens=256, max_model_len=512,
                  policy="fcfs", long_prefill_token_threshold=0, reserve_full_prompt=True, watermark=0.0,
                  enable_prefix_caching=True, max_steps=400)
    first = dict(id="r0000", arrival_step=0, prompt=list(range(10, 50)), max_tokens=60, eos_at=None, eos_token=2,
                 abort_step=None, priority=0)
    said = [harness.fake_token(first, k) for k in range(60)]
    second = dict(first, id="r0001", arrival_step=80, prompt=first["prompt"] + said + [7] * 5)
    workload = dict(seed=0, config=config, requests=[first, second])
    # both sides admit turn two with its hit: the 6 full blocks of turn one's prompt and outputs
    counts = run_pair(workload)
    assert counts["hits"] == (40 + 60) // 16 * 16, counts
    # a mutant that does not pass the generated blocks' hashes to the core hits the prompt's
    # two blocks only, and the comparison catches it
    with pytest.raises(AssertionError, match="step 80: SchedulerOutput differs at .scheduled_new_reqs"):
        run_pair(workload, ours_cls=WithoutGeneratedHashes)


class _NoExtend:
    def __init__(self, core: Any) -> None:
        self._core = core

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)

    def extend_block_hashes(self, *args: Any, **kwargs: Any) -> None:
        return None


class WithoutGeneratedHashes(hv.Scheduler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.core = _NoExtend(self.core)


# ---------------------------------------------------------------------------- configuration


def small(**kw: Any) -> dict:
    return dict(num_blocks=40, block_size=16, max_num_seqs=4, max_num_batched_tokens=128, max_model_len=256,
                policy="fcfs", long_prefill_token_threshold=0, reserve_full_prompt=True, watermark=0.0,
                enable_prefix_caching=False, max_steps=100, **kw)


def test_refuses_async_scheduling_with_the_flag_to_pass():
    with pytest.raises(hv.UnsupportedFeatureError, match="async scheduling.*--no-async-scheduling"):
        build(hv.Scheduler, small(), async_scheduling=True)


def test_refuses_disabled_chunked_prefill():
    with pytest.raises(hv.UnsupportedFeatureError, match="enable_chunked_prefill=False"):
        build(hv.Scheduler, dict(small(), max_num_batched_tokens=256), enable_chunked_prefill=False)


def test_refuses_hybrid_and_sliding_window_kv_groups():
    import torch
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheGroupSpec, SlidingWindowSpec

    vc, kv, sbs, hbs = harness.vllm_parts(small())
    full = kv.kv_cache_groups[0]
    window = SlidingWindowSpec(block_size=16, num_kv_heads=2, head_size=16, dtype=torch.float16, sliding_window=64)
    kv.kv_cache_groups = [full, KVCacheGroupSpec(["model.layers.1.self_attn"], window)]
    with pytest.raises(hv.UnsupportedFeatureError, match="2 KV cache groups"):
        hv.Scheduler(vc, kv, StructuredOutputManager(vc), sbs, hbs)
    kv.kv_cache_groups = [KVCacheGroupSpec(["model.layers.0.self_attn"], window)]
    with pytest.raises(hv.UnsupportedFeatureError, match="SlidingWindowSpec"):
        hv.Scheduler(vc, kv, StructuredOutputManager(vc), sbs, hbs)
    kv.kv_cache_groups = [KVCacheGroupSpec(["model.layers.0.self_attn"], FullAttentionSpec(
        block_size=16, num_kv_heads=2, head_size=16, dtype=torch.float16, sliding_window=64))]
    with pytest.raises(hv.UnsupportedFeatureError, match="FullAttentionSpec"):
        hv.Scheduler(vc, kv, StructuredOutputManager(vc), sbs, hbs)


def test_policy_from_additional_config_env_or_vllm(monkeypatch):
    monkeypatch.delenv(hv.POLICY_ENV, raising=False)
    assert build(hv.Scheduler, small()).config.policy == "fcfs"
    assert build(hv.Scheduler, dict(small(), policy="priority")).config.policy == "priority"
    monkeypatch.setenv(hv.POLICY_ENV, "larry")
    assert build(hv.Scheduler, small()).config.policy == "larry"
    vc, kv, sbs, hbs = harness.vllm_parts(small())
    vc.additional_config = {"halffull": {"policy": "sjf", "sjf_aging": 3.0}}
    s = hv.Scheduler(vc, kv, StructuredOutputManager(vc), sbs, hbs)
    assert (s.config.policy, s.config.sjf_aging) == ("sjf", 3.0)
    vc.additional_config = {"halffull": {"policy": "shortest"}}
    with pytest.raises(halffull.ConfigError, match="larry"):       # the error lists the valid names
        hv.Scheduler(vc, kv, StructuredOutputManager(vc), sbs, hbs)
    vc.additional_config = {"halffull": {"polcy": "larry"}}
    with pytest.raises(hv.UnsupportedFeatureError, match="polcy"):
        hv.Scheduler(vc, kv, StructuredOutputManager(vc), sbs, hbs)
    vc.additional_config = {"halffull": {"block_size": 32}}           # vLLM's own settings stay vLLM's
    with pytest.raises(hv.UnsupportedFeatureError, match="block_size"):
        hv.Scheduler(vc, kv, StructuredOutputManager(vc), sbs, hbs)


def test_every_policy_and_parameter_selectable():
    """Every halffull policy, with every policy parameter SchedulerConfig has, through
    additional_config["halffull"]; the core gets exactly the values given."""
    vc, kv, sbs, hbs = harness.vllm_parts(small())
    params = [k for k in hv.POLICY_KEYS if k != "policy"]
    assert {"larry_alpha", "larry_load", "sjf_aging", "larry_deadline", "larry_slack"} <= set(params)
    assert set(params).isdisjoint(hv.FROM_VLLM)
    defaults = halffull.SchedulerConfig(num_gpu_blocks=1).to_dict()
    for policy in halffull.POLICIES:
        given: dict[str, Any] = {"policy": policy}
        for k in params:                       # a valid value other than the default
            v = defaults[k]
            given[k] = (v * 2 if v else 1.0) if isinstance(v, float) and not isinstance(v, bool) else v
        vc.additional_config = {"halffull": given}
        cfg = hv.Scheduler(vc, kv, StructuredOutputManager(vc), sbs, hbs).config.to_dict()
        assert {k: cfg[k] for k in given} == given, policy


def test_larry_runs_every_request_to_its_vllm_stop(monkeypatch):
    """LARRY reorders admissions, so the schedules differ from vLLM's; every request must still
    end with the tokens and finish reason it gets under vLLM's scheduler (the fake model's
    tokens depend only on the request and position)."""
    monkeypatch.setenv(hv.POLICY_ENV, "larry")
    rng = random.Random(7)
    for k in range(10):
        config = harness.random_config(rng, "fcfs", prefix_caching=k % 2 == 1)
        workload = harness.make_workload(1000 + k, config)
        for r in workload["requests"]:
            r["abort_step"] = None
        ends = []
        for cls in (VllmScheduler, hv.Scheduler):
            s = build(cls, config)
            if cls is hv.Scheduler:
                assert s.config.policy == "larry"
                s.clock = itertools.count(1.0).__next__     # one second per step
            ends.append(drive(s, workload))
        assert ends[0] == ends[1]


def drive(s: Any, workload: dict) -> dict:
    """Run ``workload`` to the end; each request's (tokens, finish reason)."""
    hasher = harness.request_block_hasher(workload["config"])
    specs = {r["id"]: r for r in workload["requests"]}
    got: dict[str, list] = {rid: [[], None] for rid in specs}
    for step in range(workload["config"]["max_steps"]):
        for spec in workload["requests"]:
            if spec["arrival_step"] == step:
                s.add_request(harness.make_request(spec, hasher))
        if not s.has_requests():
            if step > max(r["arrival_step"] for r in workload["requests"]):
                break
            continue
        out = s.schedule()
        for eco in s.update_from_output(out, runner_output(s, out, specs)).values():
            for o in eco.outputs:
                got[o.request_id][0] += o.new_token_ids
                if o.finish_reason is not None:
                    got[o.request_id][1] = str(o.finish_reason)
    return {rid: (tuple(t), f) for rid, (t, f) in got.items()}
