"""Calibration: fit the simulator's linear step-cost model to step times measured by the
engine, then check the fitted simulator against the engine on a held-out trace (DESIGN §7-§8)::

    step_s ≈ c0 + c1 * prefill_tokens + c2 * decode_seqs + c3 * kv_tokens

The features mean exactly what ``halffull.sim``'s linear model (``rust/sim/cost.rs``,
``StepShape``) means by them: ``prefill_tokens`` = new tokens of the requests the plan marks
``is_prefill`` (first prefill, chunk or recompute), ``decode_seqs`` = requests decoding one
token, ``kv_tokens`` = sum over the batch of (computed + new) tokens.

The fit is non-negative least squares (a cost never gets cheaper with more work). With four
coefficients exact NNLS is cheap: the optimum is the ordinary least-squares fit on some subset
of the columns with all coefficients >= 0, so we try all 16 subsets and keep the best feasible.

``calibrate(...)`` runs the whole check (``CalibrationReport``); ``halffull calibrate`` prints
it. Only numpy is needed at import (torch is imported by ``calibrate`` itself), so the
simulator can use the fit without torch installed.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations, pairwise
from types import SimpleNamespace
from typing import Any

import numpy as np

from .._util import json_ready
from ..errors import InvalidArgumentError

FEATURES = ("prefill_tokens", "decode_seqs", "kv_tokens")
COEFFICIENTS = ("c0", "c1", "c2", "c3")

Records = Mapping[str, Any] | Sequence[Mapping[str, Any]] | Any


def _columns(step_records: Records, target: str) -> tuple[np.ndarray, np.ndarray]:
    rec = getattr(step_records, "steps", step_records)     # a ServeReport
    if isinstance(rec, Mapping):
        cols = {k: rec[k] for k in (*FEATURES, target) if k in rec}
    else:
        rows = list(rec)
        cols = {k: [r[k] for r in rows] for k in (*FEATURES, target) if rows and k in rows[0]}
    missing = [k for k in (*FEATURES, target) if k not in cols]
    if missing:
        raise InvalidArgumentError(f"step records lack {', '.join(missing)}", field="step_records", value=None)
    x = np.column_stack([np.ones(len(np.asarray(cols[target])))] +
                        [np.asarray(cols[k], dtype=np.float64) for k in FEATURES])
    y = np.asarray(cols[target], dtype=np.float64)
    if len(y) == 0:
        raise InvalidArgumentError("no step records to fit", field="step_records", value=None)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise InvalidArgumentError("step records hold NaN or infinite values", field="step_records", value=None)
    return x, y


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact non-negative least squares for a few columns (all support subsets)."""
    m = a.shape[1]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    an = a / scale
    best, best_res = np.zeros(m), float(np.sum(b * b))
    for k in range(1, m + 1):
        for support in combinations(range(m), k):
            s = list(support)
            coef, *_ = np.linalg.lstsq(an[:, s], b, rcond=None)
            if np.any(coef < 0):
                continue
            res = float(np.sum((an[:, s] @ coef - b) ** 2))
            if res < best_res - 1e-15 * max(1.0, best_res):
                full = np.zeros(m)
                full[s] = coef
                best, best_res = full, res
    return best / scale


def fit_linear_cost_model(step_records: Records, target: str = "step_s") -> dict[str, float]:
    """``{"c0", "c1", "c2", "c3"}`` (seconds; per step, per prefill token, per decode sequence,
    per KV token), all >= 0, fitted to ``target`` (default the whole step's wall time).

    ``step_records``: ``Engine.step_records()``, a ``ServeReport`` (its ``steps``), a mapping of
    columns, or a list of per-step mappings.
    """
    x, y = _columns(step_records, target)
    coef = nnls(x, y)
    return {name: float(v) for name, v in zip(COEFFICIENTS, coef, strict=True)}


def predict_step_time(coefficients: Mapping[str, float], step_records: Records) -> np.ndarray:
    """The model's step times for the records' features."""
    rec = getattr(step_records, "steps", step_records)
    if isinstance(rec, Mapping):
        feats = [np.asarray(rec[k], dtype=np.float64) for k in FEATURES]
    else:
        rows = list(rec)
        feats = [np.asarray([r[k] for r in rows], dtype=np.float64) for k in FEATURES]
    c = [float(coefficients[k]) for k in COEFFICIENTS]
    return c[0] + c[1] * feats[0] + c[2] * feats[1] + c[3] * feats[2]


def fit_quality(coefficients: Mapping[str, float], step_records: Records, target: str = "step_s") -> dict[str, float]:
    """``r2``, ``rmse_s`` and ``mape`` (mean absolute relative error) of a fit on records."""
    _, y = _columns(step_records, target)
    pred = predict_step_time(coefficients, step_records)
    resid = y - pred
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "r2": 1.0 - float(np.sum(resid ** 2)) / ss_tot if ss_tot > 0 else float("nan"),
        "rmse_s": float(np.sqrt(np.mean(resid ** 2))),
        "mape": float(np.mean(np.abs(resid) / np.maximum(np.abs(y), 1e-12))),
        "num_steps": float(len(y)),
    }


# ---------------------------------------------------------------------------- step periods


def step_periods(step_records: Records, idle_gap_s: float = 1e-3) -> np.ndarray:
    """Each step's *period*: the wall time from its start to the next step's start, which is
    what the simulator's cost model stands for (its steps run back to back).

    ``step_s`` covers ``Engine.step`` only; between two steps the replay loop also spends
    time (clock reads, ``add_request`` for new arrivals), typically 20-50 µs on CPU. A gap
    longer than ``idle_gap_s`` means the engine was idle, waiting for the next arrival; such
    a step (and the last one) gets ``step_s`` plus the median of the busy gaps instead.
    """
    rec: Any = getattr(step_records, "steps", step_records)
    start = np.asarray(rec["start_s"], dtype=np.float64)
    dur = np.asarray(rec["step_s"], dtype=np.float64)
    if start.size == 0:
        return dur.copy()
    gap = start[1:] - (start[:-1] + dur[:-1])
    busy = (gap >= 0) & (gap <= idle_gap_s)
    typical = float(np.median(gap[busy])) if busy.any() else 0.0
    out = dur + typical
    out[:-1][busy] = dur[:-1][busy] + gap[busy]
    return out


def with_periods(step_records: Records, idle_gap_s: float = 1e-3) -> dict[str, np.ndarray]:
    """The step records as columns plus ``period_s`` (``step_periods``)."""
    rec = getattr(step_records, "steps", step_records)
    if not isinstance(rec, Mapping):
        rows = list(rec)
        rec = {k: np.asarray([r[k] for r in rows]) for k in (rows[0] if rows else {})}
    out = {k: np.asarray(v) for k, v in rec.items()}
    out["period_s"] = step_periods(out, idle_gap_s)
    return out


# ---------------------------------------------------------------------------- the check

#: Scheduler of the default calibration run: 8,192 KV tokens, chunked prefill of 512 tokens.
DEFAULT_SCHEDULER: dict[str, Any] = dict(num_gpu_blocks=512, block_size=16, max_num_seqs=64, max_num_batched_tokens=512)
DEFAULT_MODEL = "mini"
DEFAULT_REQUESTS = 200
#: Request rates (req/s) of the default traces for ``mini`` on one CPU thread of the machine
#: the numbers in ``benches/results/CALIBRATION.md`` come from (its capacity there is about
#: 17 req/s); ``calibrate`` instead scales the loads below by the capacity it measures.
DEFAULT_FIT_RATES = (4.0, 8.0, 12.0, 16.0, 20.0)
DEFAULT_HOLDOUT_RATE = 12.0
#: Loads (x the engine's measured capacity) of the default traces. The fit trace ramps through
#: ``DEFAULT_FIT_LOADS`` (equal shares of the requests), so its steps span idle to overloaded
#: (1 to ~60 sequences per batch): the engine's step time is not quite linear in the features
#: (decode attention is padded to the longest context; each prefill chunk is its own
#: attention call), and a fit on one load level extrapolates badly to the batch sizes of
#: another. The held-out trace arrives in Gamma bursts (CV 2) at ``DEFAULT_HOLDOUT_LOAD``.
DEFAULT_FIT_LOADS = (0.23, 0.46, 0.69, 0.92, 1.15)
DEFAULT_HOLDOUT_LOAD = 0.69
DEFAULT_HOLDOUT_CV = 2.0
CAPACITY_REQUESTS = 64
#: With a given fit trace, its pieces replay from 0.5x to 4x the held-out's speed (geometric).
FILE_FIT_SPEEDUPS = (0.5, 4.0)
#: Lengths of the default traces (lognormal, mean tokens and sigma of ln), clipped.
DEFAULT_PROMPT = ("lognormal", 160, 0.8)
DEFAULT_OUTPUT = ("lognormal", 64, 0.8)
DEFAULT_MAX_PROMPT = 512
DEFAULT_MAX_OUTPUT = 256
TARGET = 0.25
METRICS = ("ttft_mean", "ttft_p50", "ttft_p99", "tpot_mean", "tpot_p50", "tpot_p99", "e2e_mean")


def _at_rate(trace: Any, rate: float) -> Any:
    """The trace with its arrivals stretched so its realised rate is exactly ``rate`` (a short
    bursty sample's own rate can be off by 30%)."""
    own = trace.rate
    return trace.scale_rate(rate / own) if math.isfinite(own) and own > 0 else trace


def default_traces(num_requests: int = DEFAULT_REQUESTS, *, fit_rates: Sequence[float] = DEFAULT_FIT_RATES,
                   holdout_rate: float = DEFAULT_HOLDOUT_RATE, holdout_cv: float = DEFAULT_HOLDOUT_CV,
                   seed: int = 0, max_prompt_tokens: int = DEFAULT_MAX_PROMPT,
                   max_output_tokens: int = DEFAULT_MAX_OUTPUT) -> tuple[Any, Any]:
    """The fit trace and the held-out trace, ``num_requests`` each, same length distributions
    (lognormal prompts ~160 tokens, outputs ~64 tokens, clipped), other seeds:

    - fit: Poisson arrivals whose rate steps through ``fit_rates`` (equal shares of the
      requests), a load ramp;
    - held out: Gamma arrivals with CV ``holdout_cv`` at mean rate ``holdout_rate``.
    """
    from .. import traces

    common: dict[str, Any] = dict(prompt=DEFAULT_PROMPT, output=DEFAULT_OUTPUT, max_prompt_tokens=max_prompt_tokens,
                  max_output_tokens=max_output_tokens)
    rates = [float(r) for r in fit_rates]
    if not rates or num_requests < 2 * len(rates):
        raise InvalidArgumentError(f"need fit_rates and num_requests >= 2 per rate, got {len(rates)} rates "
                                   f"for {num_requests} requests", field="fit_rates", value=None)
    sizes = np.diff(np.linspace(0, num_requests, len(rates) + 1).round().astype(int))
    parts, t0 = [], 0.0
    for k, (rate, n) in enumerate(zip(rates, sizes, strict=True)):
        seg = traces.synthetic(int(n), rate, arrival="poisson", seed=seed + 101 * k, **common)
        a = np.asarray(seg.arrival_time) + t0
        parts.append((a, seg.prompt_tokens, seg.output_tokens))
        t0 = float(a[-1]) + 1.0 / rate
    fit = traces.Trace(arrival_time=np.concatenate([p[0] for p in parts]),
                       prompt_tokens=np.concatenate([p[1] for p in parts]),
                       output_tokens=np.concatenate([p[2] for p in parts]),
                       name="fit-poisson-ramp-" + "-".join(f"{r:.3g}" for r in rates) + "rps")
    hold = traces.synthetic(num_requests, holdout_rate, arrival="gamma", cv=holdout_cv, seed=seed + 7919,
                            name=f"holdout-gamma-cv{holdout_cv:g}-{holdout_rate:.3g}rps", **common)
    return fit, _at_rate(hold, holdout_rate)


def split_trace(trace: Any, n: int) -> tuple[Any, Any]:
    """The first ``n`` requests of a trace and the next ``n`` (rebased to start at 0), for
    a fit and a held-out replay of one recorded trace."""
    from ..traces import Trace

    arrival = np.asarray(trace.arrival_time, dtype=np.float64)
    order = np.argsort(arrival, kind="stable")
    if len(order) < 2 * n or n < 1:
        raise InvalidArgumentError(f"need at least 2 * {n} requests to split, the trace has {len(order)}",
                                   field="trace", value=None)
    name = getattr(trace, "name", "trace")

    def part(rows: np.ndarray, label: str) -> Trace:
        a = arrival[rows]
        return Trace(arrival_time=a - a[0], prompt_tokens=np.asarray(trace.prompt_tokens)[rows],
                     output_tokens=np.maximum(np.asarray(trace.output_tokens)[rows], 1),
                     name=f"{name}[{label}]")
    return part(order[:n], f":{n}"), part(order[n:2 * n], f"{n}:{2 * n}")


def relative_error(predicted: float, measured: float) -> float:
    """``(predicted - measured) / measured``; NaN when either is not finite or measured is 0."""
    if not (math.isfinite(predicted) and math.isfinite(measured)) or measured == 0:
        return math.nan
    return (predicted - measured) / measured


def _stats(ttft: np.ndarray, tpot: np.ndarray, e2e: np.ndarray) -> dict[str, float]:
    def pick(x: np.ndarray, what: str) -> float:
        x = x[np.isfinite(x)]
        if x.size == 0:
            return math.nan
        return float(x.mean()) if what == "mean" else float(np.percentile(x, float(what[1:])))
    return {"ttft_mean": pick(ttft, "mean"), "ttft_p50": pick(ttft, "p50"), "ttft_p99": pick(ttft, "p99"),
            "tpot_mean": pick(tpot, "mean"), "tpot_p50": pick(tpot, "p50"), "tpot_p99": pick(tpot, "p99"),
            "e2e_mean": pick(e2e, "mean")}


def _describe(trace: Any, max_requests: int | None = None, time_scale: float = 1.0,
              max_prompt_tokens: int | None = None, max_output_tokens: int | None = None) -> dict[str, Any]:
    """The trace as replayed: arrival rate after ``time_scale``, lengths after clipping."""
    a, prompt, output = _rows(trace, max_requests)
    a = a / float(time_scale)
    prompt = prompt if max_prompt_tokens is None else np.minimum(prompt, max_prompt_tokens)
    output = np.maximum(output, 1)
    output = output if max_output_tokens is None else np.minimum(output, max_output_tokens)
    gaps = np.diff(a)
    return {"name": getattr(trace, "name", "trace"), "requests": int(a.size),
            "rate_rps": float((a.size - 1) / (a[-1] - a[0])) if a.size > 1 and a[-1] > a[0] else math.nan,
            "interarrival_cv": float(gaps.std() / gaps.mean()) if gaps.size > 1 and gaps.mean() > 0 else math.nan,
            "prompt_mean": float(np.mean(prompt)) if a.size else math.nan,
            "output_mean": float(np.mean(output)) if a.size else math.nan}


def _loadavg() -> float:
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):  # pragma: no cover - not on every platform
        return math.nan


@dataclass(eq=False)
class CalibrationReport:
    """What ``calibrate`` measured. Times in seconds.

    - ``coefficients``: the fitted ``c0..c3``; ``fit``: its quality on the fit trace's steps
      (``r2``, ``rmse_s``, ``mape``, ``num_steps``); ``holdout_fit``: the same on the held-out
      trace's steps (out of sample), plus ``measured_over_predicted``: their summed measured
      time over the model's (1.0: the steps cost what the fit says; above: the engine ran
      slower on the held-out replays, e.g. a busier machine, or its batches were outside the
      fit's range); ``share_outside_fit_range``: the share of held-out steps with a feature
      above the fit's largest (``format`` warns above 1%: the model extrapolates there).
    - ``engine`` / ``simulator``: on the held-out trace, ``ttft_mean``, ``ttft_p50``,
      ``ttft_p99``, ``tpot_mean`` ... ``e2e_mean``, and ``num_requests``, ``num_steps``,
      ``mean_batch`` (sequences per step), ``busy_share`` (share of the span spent in steps),
      ``duration_s``, ``preemptions``.
    - ``relative_error``: ``(simulator - engine) / engine`` per metric of ``METRICS``.
    - ``config``: model, device, threads, scheduler config, traces, time scale, target;
      ``wall_s``: seconds per phase; ``loadavg``: the 1-minute load average before and after.
    - ``fit_reports``, ``holdout_reports`` (``ServeReport`` per round), ``sim_results``
      (``SimResult`` per held-out round): the raw runs (not in ``to_dict``).
    """

    coefficients: dict[str, float]
    fit: dict[str, float]
    holdout_fit: dict[str, float]
    engine: dict[str, float]
    simulator: dict[str, float]
    relative_error: dict[str, float]
    config: dict[str, Any]
    wall_s: dict[str, float] = field(default_factory=dict)
    loadavg: tuple[float, float] = (math.nan, math.nan)
    target: float = TARGET
    fit_reports: list[Any] = field(default_factory=list, repr=False)
    holdout_reports: list[Any] = field(default_factory=list, repr=False)
    sim_results: list[Any] = field(default_factory=list, repr=False)

    @property
    def within_target(self) -> bool:
        """Mean TTFT and mean TPOT both predicted within ``target`` (relative)."""
        errs = [self.relative_error.get(k, math.nan) for k in ("ttft_mean", "tpot_mean")]
        return all(math.isfinite(e) and abs(e) <= self.target for e in errs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None)."""
        return json_ready({
            "coefficients": self.coefficients, "fit": self.fit, "holdout_fit": self.holdout_fit,
            "engine": self.engine, "simulator": self.simulator, "relative_error": self.relative_error,
            "within_target": self.within_target, "target": self.target, "config": self.config,
            "wall_s": self.wall_s, "loadavg": list(self.loadavg)})

    def format(self) -> str:
        """A plain-text report."""
        c, cfg, sc = self.coefficients, self.config, self.config.get("scheduler_config", {})
        ft, ht = cfg.get("fit_trace", {}), cfg.get("holdout_trace", {})

        def trace_line(label: str, t: Mapping[str, Any]) -> str:
            return (f"{label}{t.get('name')}: {t.get('requests')} requests, {t.get('rate_rps', math.nan):.2f} req/s "
                    f"(inter-arrival CV {t.get('interarrival_cv', math.nan):.2f}), "
                    f"prompt {t.get('prompt_mean', math.nan):.0f} / output {t.get('output_mean', math.nan):.0f} "
                    "tokens on average")
        lines = [
            f"calibration: {cfg.get('model')} on {cfg.get('device')}, {cfg.get('scheduler')} scheduler, "
            f"{cfg.get('threads')} torch thread(s); {sc.get('policy')}, {sc.get('num_gpu_blocks')} blocks x "
            f"{sc.get('block_size')}, <= {sc.get('max_num_seqs')} seqs, <= {sc.get('max_num_batched_tokens')} "
            f"tokens/step; time scale {cfg.get('time_scale'):g}; {cfg.get('rounds')} round(s) fit/held-out",
            *([f"capacity: {cfg['capacity_rps']:.2f} req/s (measured: {CAPACITY_REQUESTS} requests at once); "
               f"traces at loads relative to it"] if cfg.get("capacity_rps") else []),
            trace_line("fit:      ", ft),
            trace_line("held out: ", ht),
            *([f"          fit pieces replayed {', '.join(f'{x:.2g}' for x in cfg['fit_speedups'])}x as fast "
               "as the held-out ones"] if any(x != 1.0 for x in cfg.get("fit_speedups") or []) else []),
            f"fitted:   step = {1e3 * c['c0']:.4f} ms + {1e6 * c['c1']:.3f} us * prefill_tokens + "
            f"{1e6 * c['c2']:.3f} us * decode_seqs + {1e9 * c['c3']:.2f} ns * kv_tokens",
            f"          R^2 {self.fit.get('r2', math.nan):.3f} on {int(self.fit.get('num_steps', 0))} fit steps, "
            f"{self.holdout_fit.get('r2', math.nan):.3f} on {int(self.holdout_fit.get('num_steps', 0))} held-out steps "
            f"(target: {cfg.get('fit_target')}); held-out steps took "
            f"{self.holdout_fit.get('measured_over_predicted', math.nan):.3f}x the model's time",
            *([f"warning:  {100 * self.holdout_fit['share_outside_fit_range']:.1f}% of the held-out steps lie "
               "beyond the fit's range (more sequences, prefill or KV tokens than any fit step): "
               "the model extrapolates there"] if self.holdout_fit.get("share_outside_fit_range", 0) > 0.01 else []),
            "",
            f"{'held-out trace':<18}{'engine':>12}{'simulator':>12}{'rel. error':>12}",
        ]
        for key in METRICS:
            name = key.split("_")[0].upper() + " " + key.split("_")[1]
            lines.append(f"{name + ' (ms)':<18}{1e3 * self.engine[key]:>12.2f}{1e3 * self.simulator[key]:>12.2f}"
                         f"{100 * self.relative_error[key]:>+11.1f}%")
        for key, label, fmt in (("num_steps", "steps", "{:>12.0f}"), ("mean_batch", "mean batch", "{:>12.2f}"),
                                ("busy_share", "busy share", "{:>12.2f}"), ("duration_s", "span (s)", "{:>12.2f}"),
                                ("preemptions", "preemptions", "{:>12.0f}")):
            lines.append(f"{label:<18}" + fmt.format(self.engine.get(key, math.nan))
                         + fmt.format(self.simulator.get(key, math.nan)))
        verdict = "met" if self.within_target else "NOT met"
        lines += ["",
                  f"target (mean TTFT and mean TPOT within {100 * self.target:.0f}%): {verdict}; "
                  f"load average {self.loadavg[0]:.2f} -> {self.loadavg[1]:.2f}; "
                  f"{sum(self.wall_s.values()):.1f} s wall"]
        return "\n".join(lines)


def measure_engine_capacity(engine: Any, num_requests: int = CAPACITY_REQUESTS, *, seed: int = 0,
                            max_prompt_tokens: int = DEFAULT_MAX_PROMPT,
                            max_output_tokens: int = DEFAULT_MAX_OUTPUT) -> float:
    """The engine's throughput in requests/s on the default length mix: ``num_requests``
    requests arriving at once, finished requests over the time the last one finished (the
    queue drains at full batch most of that time). Takes a few seconds for ``mini`` on CPU."""
    from .. import traces

    tr = traces.synthetic(num_requests, 1.0, prompt=DEFAULT_PROMPT, output=DEFAULT_OUTPUT,
                          max_prompt_tokens=max_prompt_tokens, max_output_tokens=max_output_tokens,
                          seed=seed + 65537)
    burst = SimpleNamespace(arrival_time=np.zeros(num_requests), prompt_tokens=tr.prompt_tokens,
                            output_tokens=tr.output_tokens)
    rep = engine.serve_trace(burst, seed=seed + 65537)
    ok = ~rep.rejected
    last = float(np.nanmax(rep.finish_s)) if ok.any() else math.nan
    return int(ok.sum()) / last if last > 0 else math.nan


def _rows(trace: Any, max_requests: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A trace's columns in arrival order, the first ``max_requests`` of them."""
    cols = []
    for name in ("arrival_time", "prompt_tokens", "output_tokens"):
        if not hasattr(trace, name):
            raise InvalidArgumentError(f"trace has no attribute {name!r}", field=name, value=None)
        cols.append(np.asarray(getattr(trace, name)))
    order = np.argsort(cols[0].astype(np.float64), kind="stable")
    if max_requests is not None:
        order = order[:max_requests]
    return cols[0].astype(np.float64)[order], cols[1][order], cols[2][order]


def _pieces(trace: Any, rounds: int, max_requests: int | None) -> list[SimpleNamespace]:
    """The trace cut into ``rounds`` consecutive pieces of (nearly) equal request counts."""
    arrival, prompt, output = _rows(trace, max_requests)
    n = len(arrival)
    if n < rounds:
        raise InvalidArgumentError(f"{n} requests cannot be replayed in {rounds} rounds",
                                   field="rounds", value=rounds)
    cuts = np.linspace(0, n, rounds + 1).round().astype(int)
    name = getattr(trace, "name", "trace")
    return [SimpleNamespace(arrival_time=arrival[i:j], prompt_tokens=prompt[i:j], output_tokens=output[i:j],
                            name=f"{name}[{i}:{j}]") for i, j in pairwise(cuts)]


def _concat_steps(reports: Sequence[Any]) -> dict[str, np.ndarray]:
    parts = [with_periods(r.steps) for r in reports]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def calibrate(
    model: Any = DEFAULT_MODEL,
    scheduler_config: Any = None,
    *,
    fit_trace: Any = None,
    holdout_trace: Any = None,
    time_scale: float = 1.0,
    max_requests: int | None = None,
    rounds: int = 5,
    seed: int = 0,
    max_prompt_tokens: int | None = None,
    max_output_tokens: int | None = None,
    device: str = "cpu",
    scheduler: str = "rust",
    dtype: str = "float32",
    threads: int | None = 1,
    capacity: float | None = None,
    fit_loads: Sequence[float] = DEFAULT_FIT_LOADS,
    holdout_load: float = DEFAULT_HOLDOUT_LOAD,
    holdout_cv: float = DEFAULT_HOLDOUT_CV,
    fit_speedups: Sequence[float] | None = None,
    fit_target: str = "period_s",
    engine: Any = None,
    log: Callable[[str], None] | None = None,
) -> CalibrationReport:
    """Fit the linear cost model on the engine, then predict a held-out trace with it.

    1. Replay ``fit_trace`` on a real engine (``model``: a preset name or ``ModelConfig``;
       ``scheduler_config``: a ``SchedulerConfig`` or dict, default ``DEFAULT_SCHEDULER``)
       and fit ``c0..c3`` to its steps' ``fit_target``: ``"period_s"`` (default; the step
       plus the replay loop's gap to the next step, ``step_periods``) or ``"step_s"``.
    2. Replay ``holdout_trace`` on the same engine for the measured TTFT / TPOT.
    3. Simulate the held-out replay with the fitted model: the arrival times the engine used
       (the trace's, divided by ``time_scale``), the same clipped prompt and output lengths,
       the same scheduler config and policy, one replica; the trace's output length ends each
       request (the engine uses it as ``max_output_tokens`` with EOS off).

    ``rounds``: both traces are cut into this many consecutive pieces (by request count,
    first ``max_requests`` of each), replayed alternately (fit 1, held-out 1, fit 2, ...), each
    piece from an idle engine; the simulator replays each held-out piece the same way. On a
    shared machine whose speed drifts over seconds this makes the fit and the check see the
    same machine. ``rounds=1``: one replay each.

    Traces default to ``default_traces`` (``max_requests`` or 200 each, at ``fit_loads`` and
    ``holdout_load`` times ``capacity``, which is measured with ``measure_engine_capacity``
    when not given); a ``fit_trace`` without a ``holdout_trace`` is split in two
    (``split_trace``). ``fit_speedups`` (one per round) replays fit piece ``k`` at
    ``time_scale * fit_speedups[k]``, so the fit sees lighter and heavier load than the
    held-out replay, as the default synthetic ramp does (a fit that never saw the held-out's
    batch sizes extrapolates, and the engine's step time is not linear out there). Default:
    with a given ``fit_trace``, geometrically from 0.5 to 4 (``FILE_FIT_SPEEDUPS``) over the
    rounds; with the default traces, all 1. ``threads`` sets torch's
    CPU threads for the run (1 by default: on a shared machine, a multi-threaded torch whose
    threads are descheduled makes steps erratic); ``None`` leaves it. ``engine`` reuses a
    built (idle) ``Engine`` instead of building one.
    """
    import torch

    from ..config import SchedulerConfig
    from ..sim import simulate
    from ..traces import Trace
    from .engine import Engine
    from .model import ModelConfig

    say = log or (lambda _msg: None)
    if fit_target not in ("period_s", "step_s"):
        raise InvalidArgumentError(f"fit_target must be 'period_s' or 'step_s', got {fit_target!r}",
                                   field="fit_target", value=fit_target)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InvalidArgumentError(f"rounds must be an int >= 1, got {rounds!r}", field="rounds", value=rounds)
    if fit_trace is None and holdout_trace is not None:
        raise InvalidArgumentError("a holdout_trace needs a fit_trace", field="fit_trace", value=None)
    if fit_trace is not None and holdout_trace is None:
        n = max_requests or len(np.asarray(fit_trace.arrival_time)) // 2
        fit_trace, holdout_trace = split_trace(fit_trace, n)
    if fit_trace is not None:
        fit_pieces = _pieces(fit_trace, rounds, max_requests)
        hold_pieces = _pieces(holdout_trace, rounds, max_requests)
    if fit_speedups is not None:
        speedups = [float(x) for x in fit_speedups]
    elif fit_trace is None or rounds == 1:
        speedups = [1.0] * rounds          # the default fit trace is a load ramp already
    else:
        speedups = np.geomspace(*FILE_FIT_SPEEDUPS, rounds).tolist()
    if len(speedups) != rounds or not all(math.isfinite(x) and x > 0 for x in speedups):
        raise InvalidArgumentError(f"fit_speedups needs {rounds} positive numbers (one per round), got "
                                   f"{fit_speedups!r}", field="fit_speedups", value=None)
    if capacity is not None:
        capacity = float(capacity)
        if not (math.isfinite(capacity) and capacity > 0):
            raise InvalidArgumentError(f"capacity must be a positive number of requests/s, got {capacity!r}",
                                       field="capacity", value=capacity)

    if engine is None:
        if scheduler_config is None:
            scheduler_config = SchedulerConfig(**DEFAULT_SCHEDULER)
        elif isinstance(scheduler_config, Mapping):
            scheduler_config = SchedulerConfig(**{**DEFAULT_SCHEDULER, **scheduler_config})
        mcfg = ModelConfig.preset(model, dtype=dtype, seed=seed) if isinstance(model, str) else model
        model_name = model if isinstance(model, str) else "custom"
    else:
        scheduler_config, mcfg, model_name = engine.scheduler_config, engine.model_config, "engine"

    old_threads = torch.get_num_threads()
    load0 = _loadavg()
    wall = {"build_and_warm_up": 0.0, "fit_replay": 0.0, "holdout_replay": 0.0, "simulate": 0.0}
    caps = dict(max_prompt_tokens=max_prompt_tokens, max_output_tokens=max_output_tokens)
    fit_reps: list[Any] = []
    hold_reps: list[Any] = []
    try:
        if threads is not None:
            torch.set_num_threads(int(threads))
        t = time.perf_counter()
        if engine is None:
            engine = Engine(mcfg, scheduler_config, device=device, scheduler=scheduler)
        _warm_up(engine, seed)
        wall["build_and_warm_up"] = time.perf_counter() - t
        if fit_trace is None:
            # Default traces, at loads relative to what this engine on this machine can do.
            if capacity is None:
                say(f"measuring the engine's capacity ({CAPACITY_REQUESTS} requests at once) ...")
                t = time.perf_counter()
                capacity = measure_engine_capacity(engine, seed=seed)
                wall["capacity"] = time.perf_counter() - t
            fit_trace, holdout_trace = default_traces(
                max_requests or DEFAULT_REQUESTS, fit_rates=[x * capacity for x in fit_loads],
                holdout_rate=holdout_load * capacity, holdout_cv=holdout_cv, seed=seed)
            fit_pieces = _pieces(fit_trace, rounds, max_requests)
            hold_pieces = _pieces(holdout_trace, rounds, max_requests)
        for k in range(rounds):
            for label, pieces, reps in (("fit", fit_pieces, fit_reps), ("held-out", hold_pieces, hold_reps)):
                piece = pieces[k]
                say(f"round {k + 1}/{rounds}: replaying {len(piece.arrival_time)} {label} requests ...")
                t = time.perf_counter()
                scale = time_scale * (speedups[k] if label == "fit" else 1.0)
                reps.append(engine.serve_trace(piece, time_scale=scale, seed=seed + 2 * k + (label != "fit"),
                                               **caps))
                wall["fit_replay" if label == "fit" else "holdout_replay"] += time.perf_counter() - t
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)
    load1 = _loadavg()

    fit_steps = _concat_steps(fit_reps)
    coef = fit_linear_cost_model(fit_steps, target=fit_target)
    if coef["c0"] <= 0:                      # the simulator needs a step to cost something
        coef["c0"] = max(float(np.min(fit_steps[fit_target])) * 1e-3, 1e-9)
    quality = fit_quality(coef, fit_steps, target=fit_target)
    hold_steps = _concat_steps(hold_reps)
    hold_quality = fit_quality(coef, hold_steps, target=fit_target)
    # Step-level drift: the held-out steps' measured time over what the model says for them.
    hold_quality["measured_over_predicted"] = float(
        np.sum(hold_steps[fit_target]) / np.sum(predict_step_time(coef, hold_steps)))
    # Extrapolation: held-out steps with a feature beyond anything the fit saw.
    outside = np.zeros(len(hold_steps[fit_target]), dtype=bool)
    for feat in FEATURES:
        if len(fit_steps[feat]):
            outside |= hold_steps[feat] > np.max(fit_steps[feat])
    hold_quality["share_outside_fit_range"] = float(outside.mean()) if outside.size else 0.0

    # Each held-out piece as the engine replayed it: scaled arrival times, clipped lengths.
    say("simulating the held-out replays with the fitted model ...")
    t = time.perf_counter()
    sched = scheduler_config.to_dict()
    policy = sched.pop("policy")
    sims, eng_cols, sim_cols = [], [], []
    for piece, rep in zip(hold_pieces, hold_reps, strict=True):
        ok = ~rep.rejected
        intended = np.maximum(np.asarray(piece.output_tokens, dtype=np.int64)[rep.trace_index], 1)
        if max_output_tokens is not None:
            intended = np.minimum(intended, max_output_tokens)
        eng_cols.append((rep.ttft[ok], rep.tpot[ok], rep.e2e[ok], rep.num_preemptions[ok]))
        if not ok.any():
            continue
        sim_trace = Trace(arrival_time=rep.arrival_s[ok], prompt_tokens=rep.prompt_tokens[ok],
                          output_tokens=intended[ok], name=f"{piece.name} (as replayed)")
        res = simulate(sim_trace, replicas=1, policy=policy, cost_model=coef,
                       max_output_tokens=int(intended[ok].max()), record_steps=True, **sched)
        r = res.requests
        done = r["status"] == "finished"
        span = float(np.nanmax(r["finish_time"]) - np.min(r["arrival_time"])) if done.any() else 0.0
        sim_cols.append((r["ttft"][done], r["tpot"][done], r["e2e"][done], r["preemptions"][done], span))
        sims.append(res)
    wall["simulate"] = time.perf_counter() - t

    def cat(cols: list[tuple], i: int) -> np.ndarray:
        return np.concatenate([c[i] for c in cols]) if cols else np.zeros(0)

    duration = float(sum(r.duration_s for r in hold_reps))
    eng_stats = _stats(cat(eng_cols, 0), cat(eng_cols, 1), cat(eng_cols, 2))
    eng_stats.update(num_requests=int(cat(eng_cols, 0).size), num_steps=int(len(hold_steps["step_s"])),
                     mean_batch=float(np.mean(hold_steps["num_seqs"])) if len(hold_steps["num_seqs"]) else math.nan,
                     busy_share=float(np.sum(hold_steps["period_s"]) / duration) if duration > 0 else math.nan,
                     duration_s=duration, preemptions=int(cat(eng_cols, 3).sum()))
    sim_span = float(sum(c[4] for c in sim_cols))
    sim_batches = np.concatenate([s.steps["batch_size"] for s in sims]) if sims else np.zeros(0)
    sim_busy = float(sum(np.sum(s.steps["duration"]) for s in sims))
    sim_stats = _stats(cat(sim_cols, 0), cat(sim_cols, 1), cat(sim_cols, 2))
    sim_stats.update(num_requests=int(cat(sim_cols, 0).size), num_steps=int(sum(s.num_steps for s in sims)),
                     mean_batch=float(np.mean(sim_batches)) if sim_batches.size else math.nan,
                     busy_share=sim_busy / sim_span if sim_span > 0 else math.nan,
                     duration_s=sim_span, preemptions=int(cat(sim_cols, 3).sum()))
    errors = {k: relative_error(sim_stats[k], eng_stats[k]) for k in METRICS}
    config = {
        "model": model_name, "parameters": int(mcfg.num_parameters()), "device": str(engine.device),
        "scheduler": scheduler if isinstance(scheduler, str) else "custom", "threads": threads,
        "scheduler_config": scheduler_config.to_dict(), "time_scale": float(time_scale),
        "max_requests": max_requests, "rounds": rounds, "seed": seed, "fit_target": fit_target,
        "capacity_rps": capacity, "fit_speedups": speedups,
        "max_prompt_tokens": max_prompt_tokens, "max_output_tokens": max_output_tokens,
        "fit_trace": _describe(fit_trace, max_requests, time_scale, max_prompt_tokens, max_output_tokens),
        "holdout_trace": _describe(holdout_trace, max_requests, time_scale, max_prompt_tokens, max_output_tokens),
        "holdout_rejected": int(sum(int(r.rejected.sum()) for r in hold_reps)),
    }
    return CalibrationReport(coefficients=coef, fit=quality, holdout_fit=hold_quality, engine=eng_stats,
                             simulator=sim_stats, relative_error=errors, config=config, wall_s=wall,
                             loadavg=(load0, load1), fit_reports=fit_reps, holdout_reports=hold_reps,
                             sim_results=sims)


def _warm_up(engine: Any, seed: int) -> None:
    """Run a few batches of the shapes a replay will see (a full prefill chunk, mixed
    prefill + decode, plain decode), so first-use costs do not land on measured steps."""
    cfg = engine.scheduler_config
    vocab = engine.model_config.vocab_size
    rng = np.random.default_rng(seed + 104729)
    longest = max(1, min(cfg.max_num_batched_tokens, cfg.num_gpu_blocks * cfg.block_size // 2))
    lengths = [longest] + [int(x) for x in rng.integers(4, max(5, longest // 4), size=7)]
    prompts = [rng.integers(0, vocab, size=n).tolist() for n in lengths]
    saved = engine.eos_token_id
    engine.set_eos_token_id(None)
    try:
        engine.generate(prompts, max_output_tokens=8)
    finally:
        engine.set_eos_token_id(saved)
