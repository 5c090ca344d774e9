"""Replay a trace through a simulated cluster: N replicas, each the Rust engine scheduler,
behind one router, with step times from a cost model (DESIGN §7).

>>> import halffull
>>> res = halffull.simulate("default", replicas=4, policy="larry", router="sal", load=0.9)
>>> res.summary()["ttft_p99"]                                    # doctest: +SKIP

The simulation itself runs in Rust (``halffull._core.simulate``); this module resolves
presets, scales the arrival rate, measures capacity and summarises the results.

**Load.** ``load=x`` sets the arrival rate to ``x`` times the cluster's capacity, where
capacity is *measured*, not assumed: a sample of the trace's request mix (at most
``capacity_requests`` rows, even stride) arrives all at t = 0 on one replica with the same
engine configuration and cost model, under ``fcfs``; the replica's rate is the number of
requests finished between the 10th and 90th percentile of finish times divided by that span
(so neither the ramp-up nor the drain counts); the cluster's capacity is that times
``replicas``. Results are cached per (trace, cost model, engine configuration). The trace's
arrival times are then divided by ``load * capacity / trace.rate``, keeping its burstiness.
``rate_scale=f`` instead multiplies the trace's own rate by ``f``.

**Times** are seconds of simulated time. A request's ``max_output_tokens`` (the client's
cap, default 2048) is what the scheduler sees (``no_preempt`` reserves it); the trace's true
output length ends the request the way EOS would.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _core
from . import traces as _traces
from ._util import as_float, shown
from .errors import ConfigError, InvalidArgumentError
from .limits import MAX_COUNT, MAX_REPLICAS

CostModel = _core.CostModel

#: Engine policies compared by ``halffull simulate`` with no arguments.
DEFAULT_POLICIES: tuple[str, ...] = ("fcfs", "no_preempt", "sjf", "larry", "oracle_srpt")
DEFAULT_PRESET = "llama-3-8b/h100"
DEFAULT_SLO_TTFT = 2.0
#: ``summary()``'s default starvation threshold: this many times the median service time.
STARVATION_FACTOR = 10.0
DEFAULT_SLO_TPOT = 0.1

_CAPACITY_CACHE: dict[tuple[Any, ...], float] = {}
#: ``requests["status"]`` by the core's status code.
STATUS_NAMES: tuple[str, ...] = ("finished", "rejected", "truncated")


def preset_names() -> list[str]:
    """Names of the model/GPU presets (``llama-3-8b/h100`` ...)."""
    return list(_core.sim_preset_names())


def presets(block_size: int = 16) -> list[dict[str, Any]]:
    """Every preset with its numbers: model shape, GPU peak FLOP/s, bandwidth, memory, and
    the derived KV capacity (``num_gpu_blocks`` of ``block_size`` tokens). Sources of the
    numbers: comments in ``rust/sim/cost.rs``."""
    block_size = _int("block_size", block_size, 1, MAX_COUNT)
    return [dict(_core.sim_preset(name, block_size)) for name in preset_names()]


def preset_name(preset: str | None = None, model: str | None = None, gpu: str | None = None) -> str:
    """Resolve ``preset`` or ``model`` + ``gpu`` (``--model llama-3-8b --gpu h100``; a
    tensor-parallel group is ``--gpu 4xh100``) to a preset name; unknown names raise
    ``ConfigError`` listing the valid ones."""
    if model is not None or gpu is not None:
        if preset is not None:
            raise ConfigError("give preset or model/gpu, not both", field="preset")
        name = f"{model or 'llama-3-8b'}/{(gpu or 'h100').lower()}"
    else:
        name = preset or DEFAULT_PRESET
    valid = preset_names()
    if name not in valid:
        raise ConfigError(
            f"unknown preset {name!r}; valid: {', '.join(valid)}",
            field="preset",
            value=name,
            valid=tuple(valid),
        )
    return name


def _as_trace(trace: Any) -> _traces.Trace:
    return _traces.resolve(trace)


def _number(name: str, value: Any, *, positive: bool = True,
            error: type[ConfigError] | type[InvalidArgumentError] = InvalidArgumentError) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise error(f"{name} must be a number, got {type(value).__name__} {shown(value)}",
                    field=name, value=value)
    v = as_float(value)
    if not math.isfinite(v) or (v <= 0 if positive else v < 0):
        raise error(
            f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {shown(value)}",
            field=name,
            value=value,
        )
    return v


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    """An int (Python's or numpy's, not a bool) in ``[lo, hi]``, or ``ConfigError``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an int, got {type(value).__name__} {shown(value)}",
                          field=name, value=value)
    if not lo <= int(value) <= hi:
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {shown(value)}", field=name, value=value)
    return int(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be a bool, got {type(value).__name__} {shown(value)}",
                          field=name, value=value)
    return bool(value)


def _name(name: str, value: Any, valid: list[str]) -> str:
    if not isinstance(value, str) or value not in valid:
        what = shown(value) if isinstance(value, str) else f"{type(value).__name__} {shown(value)}"
        raise ConfigError(f"{name} must be one of {', '.join(valid)}; got {what}"[:300],
                          field=name, value=value, valid=tuple(valid))
    return value


def _cost_model(cost_model: Any) -> Any:
    """``None`` (the preset's roofline, chosen in Rust), a ``CostModel``, or a dict of the
    linear model's coefficients."""
    if cost_model is None or isinstance(cost_model, CostModel):
        return cost_model
    if isinstance(cost_model, Mapping):
        keys = {"c0", "c1", "c2", "c3", "swap_s_per_block"}
        unknown = set(cost_model) - keys
        if unknown or not {"c0", "c1", "c2", "c3"} <= set(cost_model):
            raise ConfigError(
                f"a linear cost model needs c0, c1, c2, c3 (and optionally swap_s_per_block); got {sorted(cost_model)}",
                field="cost_model",
            )
        return CostModel.linear(**dict(cost_model))     # each coefficient checked in Rust
    raise ConfigError(
        f"cost_model must be a CostModel or a dict of c0..c3, got {type(cost_model).__name__}",
        field="cost_model",
    )


def _trace_key(trace: _traces.Trace) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in (trace.arrival_time, trace.prompt_tokens, trace.output_tokens):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _hash_columns(trace: _traces.Trace, block_tokens: Any) -> dict[str, Any]:
    """The trace's prompt block ids, flattened for the core (nothing if it has none)."""
    if trace.hash_ids is None:
        return {}
    if isinstance(block_tokens, bool) or not isinstance(block_tokens, (int, np.integer)) or block_tokens < 1:
        raise InvalidArgumentError(f"hash_block_tokens must be an int >= 1, got {block_tokens!r}",
                                   field="hash_block_tokens", value=block_tokens)
    lengths = np.array([len(ids) for ids in trace.hash_ids], dtype=np.uint64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.uint64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((i for ids in trace.hash_ids for i in ids), dtype=np.uint64, count=int(offsets[-1]))
    return {"hash_ids": flat, "hash_id_offsets": offsets, "hash_block_tokens": int(block_tokens)}


def _columns(trace: _traces.Trace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(trace.arrival_time, dtype=np.float64),
        np.ascontiguousarray(trace.prompt_tokens, dtype=np.int64),
        np.ascontiguousarray(trace.output_tokens, dtype=np.int64),
    )


def measure_capacity(
    trace: Any = None,
    *,
    preset: str | None = None,
    cost_model: Any = None,
    max_output_tokens: int = 2048,
    capacity_requests: int = 2000,
    **engine_config: Any,
) -> float:
    """One replica's capacity in finished requests per second on this trace's request mix
    (the method is in the module docstring). Cached per (trace, cost model, engine)."""
    tr = _as_trace(trace)
    max_output_tokens = _int("max_output_tokens", max_output_tokens, 1, MAX_COUNT)
    capacity_requests = _int("capacity_requests", capacity_requests, 1, MAX_COUNT)
    engine, cost = _setup(preset_name(preset), cost_model, engine_config)
    return _capacity(tr, engine, cost, max_output_tokens, capacity_requests)


def _setup(preset: str, cost_model: Any, engine_config: Mapping[str, Any]) -> tuple[Any, Any]:
    """The engine's ``SchedulerConfig`` and the cost model, the preset resolved once (in
    Rust): ``num_gpu_blocks`` (and under swap ``num_cpu_blocks``) default to the preset's,
    the cost model to its roofline."""
    return _core.sim_setup(preset, _cost_model(cost_model), **engine_config)


def _capacity(tr: _traces.Trace, engine: Any, cost: Any, max_output_tokens: int, capacity_requests: int) -> float:
    engine = engine.replace(policy="fcfs")            # capacity is measured under fcfs
    key = (_trace_key(tr), repr(cost), engine, max_output_tokens, capacity_requests)
    if key not in _CAPACITY_CACHE:
        _CAPACITY_CACHE[key] = float(
            _core.measure_capacity(
                *_columns(tr),
                cost=cost,
                engine=engine,
                max_output_tokens=max_output_tokens,
                max_requests=capacity_requests,
            )
        )
    return _CAPACITY_CACHE[key]


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if x.size else float("nan")


def _max(x: np.ndarray) -> float:
    return float(np.max(x)) if x.size else float("nan")


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else float("nan")


@dataclass
class SimResult:
    """What ``simulate`` returns.

    - ``requests``: per trace row (numpy columns): ``replica`` (-1 if rejected),
      ``arrival_time``, ``first_token_time``, ``finish_time`` (NaN where none),
      ``prompt_tokens``, ``output_tokens``, ``preemptions``, ``status`` (``"finished"``,
      ``"rejected"``: never admitted, or ``"truncated"``: stopped before its true output
      because prompt plus output cannot fit the KV cache or ``max_model_len``), ``reason``
      ("" when finished; ``request_too_large: ...``, ``kv_cache: ...`` or
      ``max_model_len: ...`` with the numbers), ``reject_reason`` (``reason`` where
      rejected, else ""), ``cached_tokens`` (prompt
      tokens found in the prefix cache at its first admission), and derived ``ttft``,
      ``tpot`` (time per output token after the first; NaN with one token), ``e2e``.
    - ``steps``: per engine step: ``time`` (start), ``duration``, ``replica``,
      ``batch_size``, ``prefill_tokens``, ``decode_tokens``, ``kv_blocks_used``,
      ``queue_length`` (waiting + swapped after planning), ``preempted``.
    - ``config``: what ran (trace, replicas, policy, router, preset, engine, load ...).
    """

    requests: dict[str, np.ndarray]
    steps: dict[str, np.ndarray]
    config: dict[str, Any]
    num_steps: int = 0
    end_time: float = 0.0
    wall_time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: The replicas' prefix-cache counters, summed (``Scheduler.prefix_cache_stats``).
    prefix_cache: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.requests["arrival_time"].size)

    def summary(
        self,
        slo_ttft: float = DEFAULT_SLO_TTFT,
        slo_tpot: float = DEFAULT_SLO_TPOT,
        starvation_s: float | None = None,
    ) -> dict[str, Any]:
        """Latency and throughput in seconds. Every row is counted once:
        ``num_finished + num_rejected + num_truncated == num_requests``. Latencies are over
        finished requests (truncated ones did not produce their true output);
        rates are over the span from the first arrival to the last finish. ``goodput``:
        finished requests per second with TTFT <= ``slo_ttft`` and TPOT <= ``slo_tpot``.

        The tail: ``ttft_p999`` / ``ttft_max`` and ``e2e_p999`` / ``e2e_max`` beside the
        percentiles, and starvation: ``starved_share`` is the share of finished requests whose
        TTFT exceeds ``starvation_s`` (reported as ``starvation_threshold_s``). By default
        that is ``STARVATION_FACTOR`` (10) times the run's median service time, a request's
        service time being its time from first token to finish (its decode, which the waiting
        order hardly changes); pass ``starvation_s`` to compare runs on one fixed threshold."""
        slo_ttft = _number("slo_ttft", slo_ttft, positive=False)
        slo_tpot = _number("slo_tpot", slo_tpot, positive=False)
        if starvation_s is not None:
            starvation_s = _number("starvation_s", starvation_s, positive=False)
        r = self.requests
        done = r["status"] == "finished"
        n, nf = len(self), int(done.sum())
        n_rejected = int((r["status"] == "rejected").sum())
        n_truncated = int((r["status"] == "truncated").sum())
        ttft, e2e = r["ttft"][done], r["e2e"][done]
        tpot = r["tpot"][done]
        tpot_ok = tpot[np.isfinite(tpot)]
        out = r["output_tokens"][done]
        pre = r["preemptions"][done]
        span = 0.0
        if nf:
            span = float(np.nanmax(r["finish_time"]) - np.min(r["arrival_time"]))
        per_s = (lambda x: x / span) if span > 0 else (lambda x: float("nan"))
        if starvation_s is None:
            starvation = STARVATION_FACTOR * _pct(e2e - ttft, 50)
        else:
            starvation = float(starvation_s)
        good = (ttft <= slo_ttft) & ((tpot <= slo_tpot) | ~np.isfinite(tpot))
        s: dict[str, Any] = {
            "num_requests": n,
            "num_finished": nf,
            "num_rejected": n_rejected,
            "num_truncated": n_truncated,
            "ttft_mean": _mean(ttft),
            "ttft_p50": _pct(ttft, 50),
            "ttft_p90": _pct(ttft, 90),
            "ttft_p99": _pct(ttft, 99),
            "ttft_p999": _pct(ttft, 99.9),
            "ttft_max": _max(ttft),
            "tpot_mean": _mean(tpot_ok),
            "tpot_p50": _pct(tpot_ok, 50),
            "tpot_p90": _pct(tpot_ok, 90),
            "tpot_p99": _pct(tpot_ok, 99),
            "e2e_mean": _mean(e2e),
            "e2e_p50": _pct(e2e, 50),
            "e2e_p90": _pct(e2e, 90),
            "e2e_p99": _pct(e2e, 99),
            "e2e_p999": _pct(e2e, 99.9),
            "e2e_max": _max(e2e),
            "starved_share": _mean((ttft > starvation).astype(np.float64)) if nf else float("nan"),
            "starvation_threshold_s": starvation,
            "throughput_tokens_per_s": per_s(float(out.sum())),
            "requests_per_s": per_s(float(nf)),
            "preemptions_per_request": _mean(pre.astype(np.float64)),
            "preempted_share": _mean((pre > 0).astype(np.float64)),
            "goodput_requests_per_s": per_s(float(good.sum())),
            "goodput_share": _mean(good.astype(np.float64)),
            "slo_ttft": slo_ttft,
            "slo_tpot": slo_tpot,
            "duration_s": span,
            "num_steps": self.num_steps,
        }
        # vLLM's prefix-cache hit rate: cached / queried tokens over first admissions (NaN with
        # caching off); its cached_token_share counts every admission, re-admissions included
        pc = self.prefix_cache
        queries = pc.get("queries", 0)
        s["prefix_cache_hit_rate"] = pc["hits"] / queries if queries else float("nan")
        all_queries = queries + pc.get("preempted_queries", 0)
        s["prefix_cache_evictions"] = pc.get("evictions", 0)
        s["cached_token_share"] = ((pc["hits"] + pc["preempted_hits"]) / all_queries if all_queries
                                   else float("nan"))
        for k in ("policy", "router", "preset", "replicas", "load", "rate_scale", "offered_rate",
                  "capacity_requests_per_s"):
            s[k] = self.config.get(k)
        return s

    def to_pandas(self) -> Any:
        """The per-request table as a ``pandas.DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("to_pandas() needs pandas: pip install pandas") from e
        return pd.DataFrame(self.requests)

    def steps_to_pandas(self) -> Any:
        """The per-step series as a ``pandas.DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as e:  # pragma: no cover
            raise ImportError("steps_to_pandas() needs pandas: pip install pandas") from e
        return pd.DataFrame(self.steps)


def simulate(
    trace: Any = None,
    *,
    replicas: int = 8,
    policy: str = "fcfs",
    router: str = "round_robin",
    preset: str | None = None,
    model: str | None = None,
    gpu: str | None = None,
    load: float | None = None,
    rate_scale: float | None = None,
    seed: int = 0,
    cost_model: Any = None,
    max_output_tokens: int = 2048,
    snapshot_interval: float | None = None,
    record_steps: bool = True,
    capacity_requests: int = 2000,
    predictor: Any = None,
    sal_beta: float | None = None,
    hash_block_tokens: int = 512,
    router_exact_overlap: bool = False,
    **engine_config: Any,
) -> SimResult:
    """Replay ``trace`` (a ``Trace``, a path, a built-in name; default: the built-in
    ``default``) through ``replicas`` engines running ``policy`` behind ``router``.

    - ``preset`` (``"llama-3-8b/h100"``) or ``model`` + ``gpu`` picks the roofline cost model
      and the KV capacity; ``cost_model`` overrides the step cost (a ``CostModel`` or a dict
      ``{"c0", "c1", "c2", "c3"}`` for the linear model).
    - ``load`` (x the measured capacity) or ``rate_scale`` (x the trace's own rate) sets the
      arrival rate; neither: the trace as it is.
    - ``predictor``: output-length predictions the scheduler (``sjf``) and the router see:
      ``None`` (none: ``sjf`` falls back to the declared cap, i.e. FCFS), ``"oracle"`` (the
      true length) or a float ``sigma`` (the true length times lognormal noise
      ``exp(N(0, sigma))``, seeded by ``seed``; ``"noisy:0.5"`` also works).
    - ``sal_beta`` fixes SAL's β (KV tokens freed per running request per iteration);
      ``None`` learns it from finished requests.
    - Prefix caching: pass ``semantics="vllm_v1", enable_prefix_caching=True``; a trace with
      ``hash_ids`` (Mooncake) then gives each request its prompt's block hashes, each id
      naming ``hash_block_tokens`` tokens (Mooncake: 512; a multiple of ``block_size``).
      Cached prompt tokens are not computed again, so they cost no prefill time;
      ``summary()`` reports the hit rate, ``requests["cached_tokens"]`` each request's hit.
      The cache-aware routers (``cache_aware``, ``dynamo_kv``, ``sal_uncached``) get the same
      hashes; with ``router_exact_overlap=True`` they also learn each replica's cached
      prefix of the request from its scheduler (as Dynamo's KV events tell it), else they go
      by their own record of what they sent where (as SGLang's router does).
    - ``snapshot_interval``: also push replica snapshots to the router every so many
      seconds (its own bookkeeping of dispatches and finishes is always on). An interval
      giving more than ``MAX_SNAPSHOTS`` (10 million) snapshots over the trace's span of
      arrivals, or too small to move the clock, raises ``ConfigError`` before the run.
    - ``**engine_config``: ``SchedulerConfig`` fields (``num_gpu_blocks``,
      ``max_num_seqs``, ``max_num_batched_tokens``, ``preemption_mode``, ``watermark``,
      ``larry_alpha`` ...); ``num_gpu_blocks`` defaults to the preset's.

    Simulated time must stay within ``MAX_TIME`` (1e12 s). A row that could not finish by
    then even alone (its arrival plus one step per output token, each at least the cost
    model's empty-step time) raises ``InvalidArgumentError`` (``field="trace"``, ``index``:
    the row) before the run; if queueing pushes a step's end past 1e12 s, the run ends with
    the same error naming that step's start and duration, the cost model and the trace's
    last arrival (no partial result). Long runs check for Ctrl-C about every 50 ms and raise
    ``KeyboardInterrupt``.
    """
    tr = _as_trace(trace)
    if len(tr) == 0:
        raise InvalidArgumentError("the trace has no requests", field="trace")
    # Every argument is checked before anything runs (the capacity measurement takes time).
    replicas = _int("replicas", replicas, 1, MAX_REPLICAS)
    router = _name("router", router, list(_core.router_names()))
    seed = _int("seed", seed, 0, 2**64 - 1)
    max_output_tokens = _int("max_output_tokens", max_output_tokens, 1, MAX_COUNT)
    capacity_requests = _int("capacity_requests", capacity_requests, 1, MAX_COUNT)
    record_steps = _flag("record_steps", record_steps)
    if snapshot_interval is not None:
        snapshot_interval = _number("snapshot_interval", snapshot_interval, error=ConfigError)
    if sal_beta is not None:
        sal_beta = _number("sal_beta", sal_beta)
    if load is not None and rate_scale is not None:
        raise InvalidArgumentError("give load or rate_scale, not both", field="load")
    if load is not None:
        _number("load", load)
    if rate_scale is not None:
        _number("rate_scale", rate_scale)
    if not (predictor is None or (isinstance(predictor, str) and predictor in ("none", "oracle"))):
        _predictor_sigma(predictor)
    name = preset_name(preset, model, gpu)
    engine, cost = _setup(name, cost_model, {**engine_config, "policy": policy})
    config: dict[str, Any] = {
        "trace": tr.name,
        "replicas": replicas,
        "policy": policy,
        "router": router,
        "preset": name,
        "cost_model": cost.kind,
        "seed": seed,
        "max_output_tokens": max_output_tokens,
        "snapshot_interval": snapshot_interval,
        "engine": engine.to_dict(),
        "load": None,
        "rate_scale": None,
        "capacity_requests_per_s": None,
    }
    if load is not None:
        x = _number("load", load)
        per_replica = _capacity(tr, engine, cost, max_output_tokens, capacity_requests)
        capacity = per_replica * replicas
        rate = tr.rate if tr.rate > 0 else float("nan")
        if not math.isfinite(rate) or rate <= 0:
            raise InvalidArgumentError(
                "load needs a trace whose arrivals span time (its rate is undefined)", field="load"
            )
        tr = _scaled(tr, x * capacity / rate, "load", load)
        config.update(load=x, capacity_requests_per_s=capacity)
    elif rate_scale is not None:
        tr = _scaled(tr, _number("rate_scale", rate_scale), "rate_scale", rate_scale)
        config["rate_scale"] = float(rate_scale)
    config["offered_rate"] = tr.rate
    predicted = predict_output_tokens(tr.output_tokens, predictor, seed)
    config["predictor"] = None if predictor is None else str(predictor)
    config["sal_beta"] = sal_beta
    config["router_exact_overlap"] = bool(router_exact_overlap)
    t0 = time.perf_counter()
    raw = _core.simulate(
        *_columns(tr),
        replicas=replicas,
        router=router,
        cost=cost,
        engine=engine,
        seed=seed,
        max_output_tokens=max_output_tokens,
        snapshot_interval=snapshot_interval,
        record_steps=record_steps,
        predicted_output_tokens=predicted,
        sal_beta=sal_beta,
        **_hash_columns(tr, hash_block_tokens),
        router_exact_overlap=bool(router_exact_overlap),
    )
    wall = time.perf_counter() - t0
    return _result(raw, config, wall)


def _scaled(tr: _traces.Trace, factor: float, field: str, given: Any) -> _traces.Trace:
    """``tr.scale_rate(factor)``, its error naming ``field`` (what the caller gave)."""
    try:
        return tr.scale_rate(factor)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"{field}={shown(given)}: {e}", field=field, value=given) from None


#: Largest noise level ``sigma`` of the ``noisy`` predictor: at 100 a prediction is already
#: off by a factor e**100 at one standard deviation (clipped to ``[1, MAX_COUNT]``).
MAX_PREDICTOR_SIGMA = 100.0


def _predictor_sigma(predictor: Any) -> float:
    """The noise level of ``predictor`` (a number, or ``"noisy:X"``), or InvalidArgumentError."""
    text = predictor
    if isinstance(predictor, str):
        text = predictor[len("noisy:"):] if predictor.startswith("noisy:") else None
    sigma = math.nan
    if isinstance(text, str):
        try:
            sigma = float(text)
        except ValueError:
            pass
    elif isinstance(text, (int, float, np.integer, np.floating)) and not isinstance(text, (bool, np.bool_)):
        sigma = as_float(text)
    if not (math.isfinite(sigma) and 0.0 <= sigma <= MAX_PREDICTOR_SIGMA):
        raise InvalidArgumentError(
            "predictor must be None, 'oracle', or a noise level sigma in [0, "
            f"{MAX_PREDICTOR_SIGMA:g}] (a number or 'noisy:0.5'), got {shown(predictor)}",
            field="predictor", value=predictor)
    return sigma + 0.0                                  # -0.0 is 0.0


def predict_output_tokens(true_output: np.ndarray, predictor: Any, seed: int = 0) -> np.ndarray | None:
    """Predicted output lengths for a trace: ``None``, ``"oracle"``, or a noise level
    ``sigma`` in ``[0, MAX_PREDICTOR_SIGMA]`` (a number, or ``"noisy:SIGMA"``):
    ``round(true * exp(N(0, sigma)))``, clipped to ``[1, MAX_COUNT]`` (the range the core
    accepts). Anything else raises ``InvalidArgumentError`` with ``field="predictor"``."""
    if predictor is None or (isinstance(predictor, str) and predictor == "none"):
        return None
    true = np.asarray(true_output, dtype=np.int64)
    if isinstance(predictor, str) and predictor == "oracle":
        return true.copy()
    sigma = _predictor_sigma(predictor)
    noise = np.random.default_rng(seed).normal(0.0, sigma, size=len(true))
    # |noise| > 60 gives a factor below 1e-26 or above 1e26, clipped to 1 or MAX_COUNT (2**40
    # ~ 1.1e12) anyway: clipping the noise first changes no prediction and keeps exp finite.
    factor = np.exp(np.clip(noise, -60.0, 60.0))
    return np.clip(np.rint(true * factor), 1, MAX_COUNT).astype(np.int64)


def _result(raw: dict[str, Any], config: dict[str, Any], wall: float) -> SimResult:
    status = np.asarray(STATUS_NAMES, dtype=object)[np.asarray(raw["status"], dtype=np.int64)].astype(str)
    reason = np.array(raw["reject_reason"], dtype=object)
    arrival, first, finish = raw["arrival_time"], raw["first_token_time"], raw["finish_time"]
    out = raw["output_tokens"]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (finish - first) / np.maximum(out - 1, 1), np.nan)
    requests = {
        "replica": raw["replica"],
        "arrival_time": arrival,
        "first_token_time": first,
        "finish_time": finish,
        "prompt_tokens": raw["prompt_tokens"],
        "output_tokens": out,
        "preemptions": raw["preemptions"],
        "status": status,
        "reason": reason,
        "reject_reason": np.where(status == "rejected", reason, ""),
        "cached_tokens": raw["cached_tokens"],
        "ttft": first - arrival,
        "tpot": tpot,
        "e2e": finish - arrival,
    }
    steps = {k[len("step_"):]: raw[k] for k in raw if k.startswith("step_")}
    return SimResult(
        requests=requests,
        steps=steps,
        config=config,
        num_steps=int(raw["num_steps"]),
        end_time=float(raw["end_time"]),
        wall_time_s=wall,
        prefix_cache=dict(raw["prefix_cache"]),
    )


__all__ = [
    "DEFAULT_POLICIES",
    "DEFAULT_PRESET",
    "STARVATION_FACTOR",
    "CostModel",
    "SimResult",
    "measure_capacity",
    "preset_name",
    "predict_output_tokens",
    "preset_names",
    "presets",
    "simulate",
]
