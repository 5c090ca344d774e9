#!/usr/bin/env python
"""The experiments of the README's "Results" section (issue 3, item 6), in one script.

    python benches/experiments.py            # everything: a few minutes on one core
    python benches/experiments.py --quick    # one replicate, fewer loads (to /tmp)

On the shared Azure conversation trace and the Mooncake synthetic trace
(``../shared/traces``, or ``$HALFFULL_SHARED_TRACES``; skipped with a message when absent):

- (a) one replica: ``fcfs``, ``no_preempt``, ``sjf`` (noisy predictor, sigma 0.5),
  ``larry``, ``oracle_srpt`` at loads 0.5 ... 1.2;
- (b) eight replicas: ``round_robin``, ``power_of_two``, ``least_requests``,
  ``least_tokens``, ``llumnix``, ``sal``, each with ``fcfs`` and with ``larry``, at loads
  0.7 ... 1.1;
- LARRY's alpha (one replica) and SAL's beta (eight replicas) sensitivity;
- (t) the tail: one replica, ``fcfs``, ``larry`` and the tail-safe ``larry_tail``
  (deadline) and ``larry_slack`` (slack 0.5, 0.75 = the default, 1.0) at loads 0.5 ... 1.1,
  every figure as a ratio to FCFS on the same trace variant: TTFT mean, p50, p99, p99.9, max,
  e2e mean and p99, preemptions per request;
- a robustness check of the headline comparisons on Poisson resamples of each trace.

Settings (``SETTINGS``): Llama-3-8B on H100 with its full KV cache (25,720 blocks), and two
memory-constrained variants: Azure with 2,048 KV blocks (the one where preemption happens)
and Mooncake with 12,800 blocks.

Every configuration runs on ``--replicates`` versions of the trace: #0 the trace itself, #k
(k >= 1) the same requests with each arrival moved by U(-1, 1) mean inter-arrival gaps
(re-sorted), and ``seed=k`` for the router's RNG and the predictor's noise. Tables report
the mean over replicates; ``_lo``/``_hi`` columns (and the bands in the plots) their range.

Load = offered rate / measured capacity, where capacity is ``halffull.sim.measure_capacity``
of the *real* trace with the setting's engine (FCFS, saturated, per replica) times the
number of replicas; the same offered rate is used for every policy and router. Writes
``experiments.csv`` (one row per run), ``experiments_summary.csv`` (aggregated),
``experiments.json`` (setup, capacities, paired comparisons), ``tables.md`` and PNG plots to
``benches/results/``. Only metrics are written: no trace data.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import halffull
from halffull import plots, traces
from halffull._util import json_ready

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HALFFULL_SHARED_TRACES", REPO.parent / "shared" / "traces"))
TRACE_FILES = {
    "azure": SHARED / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv",
    "mooncake": SHARED / "mooncake-fast25" / "synthetic_trace.jsonl",
}
PRESET = "llama-3-8b/h100"
MAX_OUTPUT_TOKENS = 2048
SJF_PREDICTOR = "noisy:0.5"


@dataclass(frozen=True)
class Setting:
    trace: str
    preset: str
    engine: dict[str, Any] = field(default_factory=dict)
    about: str = ""


SETTINGS: dict[str, Setting] = {
    "azure-h100": Setting("azure", PRESET, {}, "Azure conv, Llama-3-8B/H100, 25,720 KV blocks (411k tokens)"),
    # Memory-constrained: the same GPU cost model with 2,048 KV blocks (32k tokens, 4 GiB of
    # KV): KV memory, not seats or compute, limits the batch, and FCFS preempts.
    "azure-h100-kv2k": Setting("azure", PRESET, {"num_gpu_blocks": 2048},
                               "Azure conv, Llama-3-8B/H100 with 2,048 KV blocks (32k tokens): memory-bound"),
    "mooncake-h100": Setting("mooncake", PRESET, {}, "Mooncake synthetic, Llama-3-8B/H100, 25,720 KV blocks"),
    # Mooncake's largest prompt is 191k tokens: 12,800 blocks (205k tokens) still admit it.
    "mooncake-h100-kv12k": Setting("mooncake", PRESET, {"num_gpu_blocks": 12800},
                                   "Mooncake synthetic, Llama-3-8B/H100 with 12,800 KV blocks (205k tokens)"),
}

A_SETTINGS = ["azure-h100", "azure-h100-kv2k", "mooncake-h100", "mooncake-h100-kv12k"]
B_SETTINGS = ["azure-h100", "azure-h100-kv2k", "mooncake-h100"]
SWEEP_SETTINGS = ["azure-h100", "azure-h100-kv2k", "mooncake-h100"]
A_POLICIES = ["fcfs", "no_preempt", "sjf", "larry", "oracle_srpt"]
B_ROUTERS = ["round_robin", "power_of_two", "least_requests", "least_tokens", "llumnix", "sal"]
B_POLICIES = ["fcfs", "larry"]
ALPHAS = [1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0]
BETAS: list[float | None] = [None, 1.1, 1.5, 2.0, 4.0, 8.0]
DEFAULT_ALPHA = 1000.0

METRICS = [
    "ttft_p50", "ttft_p90", "ttft_p99", "ttft_p999", "ttft_max", "ttft_mean", "tpot_p50", "tpot_p99",
    "e2e_mean", "e2e_p50", "e2e_p99", "e2e_p999", "e2e_max", "starved_share", "throughput_tokens_per_s",
    "preemptions_per_request", "preempted_share", "goodput_share", "num_rejected", "duration_s",
]
KEYS = ["experiment", "setting", "replicas", "policy", "router", "load", "larry_alpha", "sal_beta", "family",
        "variant"]
# (t): the tail-safe LARRYs against FCFS and LARRY; (label, policy, engine settings).
T_SETTINGS = ["azure-h100", "azure-h100-kv2k", "mooncake-h100"]
T_VARIANTS: list[tuple[str, str, dict[str, Any]]] = [
    ("fcfs", "fcfs", {}),
    ("larry", "larry", {}),
    ("larry_tail", "larry_tail", {}),
    ("larry_slack 0.5", "larry_slack", {"larry_slack": 0.5}),
    ("larry_slack", "larry_slack", {}),
    ("larry_slack 1.0", "larry_slack", {"larry_slack": 1.0}),
]
T_METRICS = [("ttft_mean", "TTFT mean"), ("ttft_p50", "p50"), ("ttft_p99", "p99"), ("ttft_p999", "p99.9"),
             ("ttft_max", "max"), ("e2e_mean", "e2e mean"), ("e2e_p99", "e2e p99")]


# ----------------------------------------------------------------------------------------
# Traces and runs
# ----------------------------------------------------------------------------------------


class Lab:
    def __init__(self, replicates: int, verbose: bool = True):
        self.replicates = replicates
        self.verbose = verbose
        self.base: dict[str, traces.Trace] = {}
        self.variants: dict[tuple[str, int, str], traces.Trace] = {}
        self.capacity: dict[str, float] = {}
        self.rows: list[dict[str, Any]] = []
        self.sim_wall = 0.0

    def trace(self, name: str, replicate: int = 0, family: str = "trace") -> traces.Trace:
        """Replicate ``k`` of a trace: ``family="trace"``: #0 the trace, #k a jittered copy;
        ``"poisson"``: #k = Poisson arrivals at the trace's mean rate with (prompt, output)
        pairs resampled from it (``halffull.traces.synthetic``, seed ``k``)."""
        if name not in self.base:
            self.base[name] = traces.load(TRACE_FILES[name])
        base = self.base[name]
        if family == "trace" and replicate == 0:
            return base
        key = (name, replicate, family)
        if key not in self.variants:
            if family == "poisson":
                self.variants[key] = traces.synthetic(len(base), base.rate, prompt=base, seed=replicate,
                                                      name=f"{base.name}~poisson{replicate}")
            else:
                self.variants[key] = jittered(base, replicate)
        return self.variants[key]

    def capacity_per_replica(self, setting: str) -> float:
        if setting not in self.capacity:
            s = SETTINGS[setting]
            self.capacity[setting] = halffull.sim.measure_capacity(
                self.trace(s.trace), preset=s.preset, max_output_tokens=MAX_OUTPUT_TOKENS, **s.engine)
        return self.capacity[setting]

    def run(self, experiment: str, setting: str, *, replicas: int, policy: str, router: str, load: float,
            larry_alpha: float | None = None, sal_beta: float | None = None,
            family: str = "trace", variant: str = "", extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        s = SETTINGS[setting]
        cap = self.capacity_per_replica(setting)
        engine = dict(s.engine, **(extra or {}))
        if larry_alpha is not None:
            engine["larry_alpha"] = larry_alpha
        out = []
        for k in range(self.replicates):
            tr = self.trace(s.trace, k, family)
            offered = load * cap * replicas
            res = halffull.simulate(
                tr, replicas=replicas, policy=policy, router=router, preset=s.preset,
                rate_scale=offered / tr.rate, seed=k, max_output_tokens=MAX_OUTPUT_TOKENS,
                predictor=SJF_PREDICTOR if policy == "sjf" else None, sal_beta=sal_beta,
                record_steps=False, **engine,
            )
            self.sim_wall += res.wall_time_s
            summ = res.summary()
            row = {
                "experiment": experiment, "setting": setting, "trace": s.trace, "preset": s.preset,
                "num_gpu_blocks": res.config["engine"]["num_gpu_blocks"], "replicas": replicas,
                "policy": policy, "router": router, "load": load,
                "larry_alpha": ((larry_alpha if larry_alpha is not None else DEFAULT_ALPHA)
                                if policy.startswith("larry") else None),
                "sal_beta": ("learned" if sal_beta is None else sal_beta) if router == "sal" else None,
                "replicate": k, "seed": k, "family": family, "variant": variant, "offered_rate": offered,
                "capacity_per_replica": cap,
                "predictor": SJF_PREDICTOR if policy == "sjf" else None,
            }
            row.update({m: summ[m] for m in METRICS})
            self.rows.append(row)
            out.append(row)
        return out


def jittered(tr: traces.Trace, k: int) -> traces.Trace:
    """The same requests, each arrival moved by U(-1, 1) mean gaps (seeded by ``k``), sorted:
    the trace's burstiness and drift stay, the exact interleaving changes."""
    rng = np.random.default_rng(1000 + k)
    gap = tr.duration / max(len(tr) - 1, 1)
    t = np.maximum(tr.arrival_time + rng.uniform(-1.0, 1.0, len(tr)) * gap, 0.0)
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order][0]
    return traces.Trace(arrival_time=t, prompt_tokens=tr.prompt_tokens[order],
                        output_tokens=tr.output_tokens[order], name=f"{tr.name}~jitter{k}", source=tr.source)


def saturated_rate(lab: Lab, setting: str, policy: str, n: int = 2000) -> dict[str, float]:
    """Throughput of one replica when ``n`` requests of the trace's mix (even stride) all
    arrive at t = 0: requests and output tokens per second over the makespan (the time the
    last one finishes), so the order a policy picks does not bias it."""
    s = SETTINGS[setting]
    tr = lab.trace(s.trace)
    idx = np.unique(np.linspace(0, len(tr) - 1, min(n, len(tr))).round().astype(int))
    sample = traces.Trace(arrival_time=np.zeros(len(idx)), prompt_tokens=tr.prompt_tokens[idx],
                          output_tokens=tr.output_tokens[idx], name="sample")
    res = halffull.simulate(sample, replicas=1, policy=policy, preset=s.preset, record_steps=False,
                            max_output_tokens=MAX_OUTPUT_TOKENS,
                            predictor=SJF_PREDICTOR if policy == "sjf" else None, **s.engine)
    makespan = float(np.nanmax(res.requests["finish_time"]))
    return {"requests_per_s": len(idx) / makespan,
            "tokens_per_s": float(res.requests["output_tokens"].sum()) / makespan}


# ----------------------------------------------------------------------------------------
# Aggregation and comparisons
# ----------------------------------------------------------------------------------------


def aggregate(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in KEYS)].append(r)
    out = []
    for key, rs in groups.items():
        a = dict(zip(KEYS, key, strict=True))
        a.update(trace=rs[0]["trace"], preset=rs[0]["preset"], num_gpu_blocks=rs[0]["num_gpu_blocks"],
                 capacity_per_replica=rs[0]["capacity_per_replica"], n=len(rs))
        for m in METRICS:
            v = np.array([float(r[m]) for r in rs])
            a[m], a[f"{m}_lo"], a[f"{m}_hi"] = float(v.mean()), float(v.min()), float(v.max())
        out.append(a)
    return out


def select(rows: Iterable[dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]


def one(rows: Iterable[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    found = select(rows, **kw)
    if len(found) != 1:
        raise LookupError(f"{len(found)} rows for {kw}")
    return found[0]


def paired(raw: list[dict[str, Any]], metric: str, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``a`` over ``b`` in ``metric``, per replicate (same trace variant and seed): the mean
    ratio, its range, and whether every replicate agrees on the direction."""
    ra = {r["replicate"]: float(r[metric]) for r in select(raw, **a)}
    rb = {r["replicate"]: float(r[metric]) for r in select(raw, **b)}
    ks = sorted(set(ra) & set(rb))
    ratios = [ra[k] / rb[k] if rb[k] > 0 else (1.0 if ra[k] == 0 else math.inf) for k in ks]
    if not ratios:
        return {"ratio": math.nan, "lo": math.nan, "hi": math.nan, "consistent": False, "n": 0}
    return {
        "ratio": float(np.mean(ratios)), "lo": float(min(ratios)), "hi": float(max(ratios)),
        "consistent": bool(all(x < 1 for x in ratios) or all(x > 1 for x in ratios)), "n": len(ratios),
    }


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------


def fmt(v: Any, kind: str = "s") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else "inf"
    if kind == "s":  # seconds: 3 significant digits
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "ms":
        return f"{1000 * v:.0f}"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "x":
        return f"{v:.2f}x"
    return str(v)


def pm(r: dict[str, Any], m: str, kind: str = "s") -> str:
    """``mean`` or ``mean ±half-range`` when the replicates differ by more than 2%."""
    v, lo, hi = r[m], r[f"{m}_lo"], r[f"{m}_hi"]
    half = (hi - lo) / 2
    if r.get("n", 1) > 1 and half > 0.02 * abs(v) and half > 0:
        return f"{fmt(v, kind)} ±{fmt(half, kind) if kind != 's' else f'{half:.2g}'}"
    return fmt(v, kind)


def md_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})


# ----------------------------------------------------------------------------------------
# Experiments
# ----------------------------------------------------------------------------------------


def experiment_a(lab: Lab, loads: list[float]) -> None:
    for setting in A_SETTINGS:
        t0 = time.perf_counter()
        for load in loads:
            for policy in A_POLICIES:
                lab.run("a", setting, replicas=1, policy=policy, router="round_robin", load=load)
        log(lab, f"(a) {setting}: {len(loads) * len(A_POLICIES) * lab.replicates} runs "
                 f"in {time.perf_counter() - t0:.1f} s")


def experiment_b(lab: Lab, loads: list[float]) -> None:
    for setting in B_SETTINGS:
        t0 = time.perf_counter()
        for load in loads:
            for policy in B_POLICIES:
                for router in B_ROUTERS:
                    lab.run("b", setting, replicas=8, policy=policy, router=router, load=load)
        log(lab, f"(b) {setting}: {len(loads) * len(B_POLICIES) * len(B_ROUTERS) * lab.replicates} runs "
                 f"in {time.perf_counter() - t0:.1f} s")


def experiment_alpha(lab: Lab, loads: list[float]) -> None:
    for setting in SWEEP_SETTINGS:
        t0 = time.perf_counter()
        for load in loads:
            lab.run("alpha", setting, replicas=1, policy="fcfs", router="round_robin", load=load)
            for alpha in ALPHAS:
                lab.run("alpha", setting, replicas=1, policy="larry", router="round_robin", load=load,
                        larry_alpha=alpha)
        log(lab, f"alpha sweep {setting}: {time.perf_counter() - t0:.1f} s")


def experiment_beta(lab: Lab, loads: list[float]) -> None:
    for setting in SWEEP_SETTINGS:
        t0 = time.perf_counter()
        for load in loads:
            for policy in B_POLICIES:
                for beta in BETAS:
                    lab.run("beta", setting, replicas=8, policy=policy, router="sal", load=load, sal_beta=beta)
        log(lab, f"beta sweep {setting}: {time.perf_counter() - t0:.1f} s")


def experiment_poisson(lab: Lab, loads: list[float]) -> None:
    """The headline comparisons again on Poisson resamples of each trace (stationary, no
    drift): LARRY vs FCFS on one replica, and the routers on eight."""
    for setting in B_SETTINGS:
        t0 = time.perf_counter()
        for load in loads:
            for policy in B_POLICIES:
                lab.run("poisson1", setting, replicas=1, policy=policy, router="round_robin", load=load,
                        family="poisson")
                for router in B_ROUTERS:
                    lab.run("poisson8", setting, replicas=8, policy=policy, router=router, load=load,
                            family="poisson")
        log(lab, f"poisson resamples {setting}: {time.perf_counter() - t0:.1f} s")


def experiment_tail(lab: Lab, loads: list[float]) -> None:
    for setting in T_SETTINGS:
        t0 = time.perf_counter()
        for load in loads:
            for label, policy, extra in T_VARIANTS:
                lab.run("t", setting, replicas=1, policy=policy, router="round_robin", load=load,
                        variant=label, extra=extra)
        log(lab, f"(t) {setting}: {len(loads) * len(T_VARIANTS) * lab.replicates} runs "
                 f"in {time.perf_counter() - t0:.1f} s")


def report_tail(agg: list[dict[str, Any]], raw: list[dict[str, Any]], loads: list[float],
                out: Path) -> tuple[list[str], dict[str, Any]]:
    """Per setting and load: FCFS's figures in seconds, every other variant's as the mean
    over replicates of its ratio to FCFS on the same trace variant (* every replicate on the
    same side of 1)."""
    md, comp, plot_rows = [], {}, []
    for setting in T_SETTINGS:
        md.append(f"### (t) the tail: {SETTINGS[setting].about}; 1 replica\n")
        md.append("FCFS in seconds; the others as ratio to FCFS (< 1 better; * every replicate agrees). "
                  "Columns: TTFT mean / p50 / p99 / p99.9 / max, e2e mean / p99, preemptions per request.\n")
        body, c = [], {}
        for load in loads:
            base = dict(experiment="t", setting=setting, load=load, variant="fcfs")
            f = one(agg, **base)
            body.append([f"{load:.1f}", "fcfs"] + [pm(f, m) for m, _ in T_METRICS]
                        + [fmt(f["preemptions_per_request"], "s")])
            for label, _, _ in T_VARIANTS[1:]:
                r = one(agg, experiment="t", setting=setting, load=load, variant=label)
                cells = [f"{load:.1f}", label]
                prow = {"setting": setting, "load": load, "variant": label}
                for m, _ in T_METRICS:
                    p = paired(raw, m, dict(experiment="t", setting=setting, load=load, variant=label), base)
                    c[f"{label}/fcfs {m} @{load}"] = p
                    cells.append(ratio_cell(p))
                    prow[f"{m}_ratio"] = p["ratio"]
                cells.append(fmt(r["preemptions_per_request"], "s"))
                body.append(cells)
                plot_rows.append(prow)
        md.append(md_table(["load", "policy"] + [h for _, h in T_METRICS] + ["preempt/req"], body) + "\n")
        comp[setting] = c
        plots.sweep_panels(
            [r for r in plot_rows if r["setting"] == setting],
            [("ttft_mean_ratio", "TTFT mean / FCFS"), ("ttft_p99_ratio", "TTFT p99 / FCFS"),
             ("ttft_p999_ratio", "TTFT p99.9 / FCFS"), ("ttft_max_ratio", "TTFT max / FCFS")],
            out / f"t_{setting}.png", label=lambda r: r["variant"],
            logy=("ttft_mean_ratio", "ttft_p99_ratio", "ttft_p999_ratio", "ttft_max_ratio"),
            hlines={k: 1.0 for k in ("ttft_mean_ratio", "ttft_p99_ratio", "ttft_p999_ratio", "ttft_max_ratio")},
            title=f"(t) tail-safe LARRY, one replica: {SETTINGS[setting].about} (ratio to FCFS)")
    return md, comp


def log(lab: Lab, msg: str) -> None:
    if lab.verbose:
        print(msg, flush=True)


# ----------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------


def report_a(agg: list[dict[str, Any]], raw: list[dict[str, Any]], loads: list[float], show: list[float],
             out: Path, lab: Lab) -> tuple[list[str], dict[str, Any]]:
    md, comp = [], {}
    for setting in A_SETTINGS:
        rows = select(agg, experiment="a", setting=setting)
        cap = lab.capacity_per_replica(setting)
        md.append(f"### (a) {SETTINGS[setting].about}; 1 replica, capacity {cap:.3g} req/s\n")
        body = []
        for load in [x for x in show if x in loads]:
            for policy in A_POLICIES:
                r = one(rows, load=load, policy=policy)
                body.append([policy, f"{load:.1f}", pm(r, "ttft_p50"), pm(r, "ttft_p99"), pm(r, "ttft_mean"),
                             pm(r, "e2e_mean"), pm(r, "tpot_p50", "ms"), fmt(r["preemptions_per_request"], "s"),
                             fmt(r["preempted_share"], "pct"), fmt(r["throughput_tokens_per_s"], "int")])
        md.append(md_table(["policy", "load", "TTFT p50 s", "TTFT p99 s", "TTFT mean s", "e2e mean s",
                            "TPOT p50 ms", "preempt/req", "preempted", "tok/s"], body) + "\n")
        c: dict[str, Any] = {}
        for load in loads:
            for other in ("no_preempt", "sjf", "oracle_srpt", "larry"):
                for m in ("ttft_p50", "ttft_p99", "ttft_mean", "e2e_mean", "e2e_p99", "preempted_share"):
                    c[f"{other}/fcfs {m} @{load}"] = paired(
                        raw, m, dict(experiment="a", setting=setting, policy=other, load=load),
                        dict(experiment="a", setting=setting, policy="fcfs", load=load))
        comp[setting] = c
        preempting = any(r["preempted_share"] > 0.001 for r in rows)
        last = ("preempted_share", "share of requests preempted") if preempting else ("ttft_mean", "TTFT mean (s)")
        plots.sweep_panels(
            rows, [("ttft_p50", "TTFT p50 (s)"), ("ttft_p99", "TTFT p99 (s)"), ("e2e_mean", "mean e2e latency (s)"),
                   last],
            out / f"a_{setting}.png", label=lambda r: r["policy"],
            logy=("ttft_p50", "ttft_p99", "e2e_mean", "ttft_mean"),
            title=f"(a) one replica: {SETTINGS[setting].about}" + ("" if preempting else " (no preemptions)"))
        # LARRY against FCFS at every load, per replicate.
        body = []
        for load in loads:
            cells = [f"{load:.1f}"]
            for m in ("ttft_p50", "ttft_p99", "ttft_mean", "e2e_mean", "e2e_p99"):
                cells.append(ratio_cell(c[f"larry/fcfs {m} @{load}"]))
            fcfs, larry = one(rows, load=load, policy="fcfs"), one(rows, load=load, policy="larry")
            cells.append(f"{fmt(fcfs['preempted_share'], 'pct')} -> {fmt(larry['preempted_share'], 'pct')}")
            body.append(cells)
        md.append(f"LARRY / FCFS, {setting} (ratio < 1: LARRY better; * every replicate agrees):\n")
        md.append(md_table(["load", "TTFT p50", "TTFT p99", "TTFT mean", "e2e mean", "e2e p99",
                            "preempted fcfs -> larry"], body) + "\n")
    return md, comp


def ratio_cell(c: dict[str, Any]) -> str:
    if not c.get("n"):
        return "-"
    star = "*" if c["n"] > 1 and c["consistent"] else ""

    def r(x: float) -> str:
        return f"{x:.2f}" if x >= 0.095 else f"{x:.1g}"

    if c["n"] > 1 and c["hi"] - c["lo"] > 0.04 * c["ratio"]:
        return f"{r(c['ratio'])}{star} ({r(c['lo'])}-{r(c['hi'])})"
    return f"{r(c['ratio'])}{star}"


def report_b(agg: list[dict[str, Any]], raw: list[dict[str, Any]], loads: list[float], show: list[float],
             out: Path) -> tuple[list[str], dict[str, Any]]:
    md, comp = [], {}
    for setting in B_SETTINGS:
        rows = select(agg, experiment="b", setting=setting)
        md.append(f"### (b) {SETTINGS[setting].about}; 8 replicas\n")
        head = ["router"] + [f"{p} {m} @{x:.1f}" for x in show if x in loads for p in B_POLICIES
                             for m in ("TTFT p99", "e2e mean")]
        body = []
        for router in B_ROUTERS:
            line = [router]
            for load in [x for x in show if x in loads]:
                for policy in B_POLICIES:
                    r = one(rows, load=load, policy=policy, router=router)
                    line += [pm(r, "ttft_p99"), pm(r, "e2e_mean")]
            body.append(line)
        md.append(md_table(head, body) + "\n")
        pre = []
        for router in B_ROUTERS:
            line = [router]
            for load in [x for x in show if x in loads]:
                for policy in B_POLICIES:
                    r = one(rows, load=load, policy=policy, router=router)
                    line += [fmt(r["preempted_share"], "pct")]
            pre.append(line)
        if any(r["preempted_share"] > 0 for r in rows):
            md.append("Share of requests preempted:\n")
            md.append(md_table(["router"] + [f"{p} @{x:.1f}" for x in show if x in loads for p in B_POLICIES],
                               pre) + "\n")
        c: dict[str, Any] = {}
        for load in loads:
            for policy in B_POLICIES:
                for other in B_ROUTERS[:-1]:
                    for m in ("ttft_p99", "ttft_mean", "e2e_mean", "preempted_share"):
                        c[f"{policy}: sal/{other} {m} @{load}"] = paired(
                            raw, m, dict(experiment="b", setting=setting, policy=policy, router="sal", load=load),
                            dict(experiment="b", setting=setting, policy=policy, router=other, load=load))
            for router in B_ROUTERS:
                for m in ("ttft_p99", "ttft_mean", "e2e_mean", "preempted_share"):
                    c[f"{router}: larry/fcfs {m} @{load}"] = paired(
                        raw, m, dict(experiment="b", setting=setting, policy="larry", router=router, load=load),
                        dict(experiment="b", setting=setting, policy="fcfs", router=router, load=load))
        comp[setting] = c
        body = []
        for policy in B_POLICIES:
            for load in loads:
                line = [policy, f"{load:.1f}"]
                for other in B_ROUTERS[:-1]:
                    line.append(" / ".join(ratio_cell(c[f"{policy}: sal/{other} {m} @{load}"]).split(" (")[0]
                                           for m in ("ttft_p99", "e2e_mean")))
                sal = one(rows, load=load, policy=policy, router="sal")
                rank = {m: 1 + sum(r[m] < sal[m] for r in select(rows, load=load, policy=policy))
                        for m in ("ttft_p99", "e2e_mean")}
                line.append(f"{rank['ttft_p99']} / {rank['e2e_mean']}")
                body.append(line)
        md.append(f"SAL / other router, {setting}: TTFT p99 / mean e2e (< 1: SAL better; * every replicate agrees); "
                  "SAL's rank of 6:\n")
        md.append(md_table(["policy", "load"] + B_ROUTERS[:-1] + ["SAL rank"], body) + "\n")
        body = []
        for load in loads:
            line = [f"{load:.1f}"]
            for router in B_ROUTERS:
                line.append(" / ".join(ratio_cell(c[f"{router}: larry/fcfs {m} @{load}"]).split(" (")[0]
                                       for m in ("ttft_p99", "e2e_mean")))
            body.append(line)
        md.append(f"LARRY / FCFS behind each router, {setting}: TTFT p99 / mean e2e:\n")
        md.append(md_table(["load"] + B_ROUTERS, body) + "\n")
        metrics = [("ttft_p50", "TTFT p50 (s)"), ("ttft_p99", "TTFT p99 (s)"), ("e2e_mean", "mean e2e latency (s)")]
        if any(r["preempted_share"] > 0 for r in rows):
            metrics.append(("preempted_share", "share of requests preempted"))
        else:
            metrics.append(("e2e_p99", "e2e p99 (s)"))
        plots.sweep_panels(
            rows, metrics, out / f"b_{setting}.png", label=lambda r: f"{r['router']} + {r['policy']}",
            style=lambda r: {"color": f"C{B_ROUTERS.index(r['router'])}",
                             "linestyle": "-" if r["policy"] == "fcfs" else "--"},
            logy=("ttft_p50", "ttft_p99", "e2e_mean", "e2e_p99"),
            title=f"(b) 8 replicas: {SETTINGS[setting].about} (solid fcfs, dashed larry)")
    return md, comp


def report_poisson(agg: list[dict[str, Any]], raw: list[dict[str, Any]],
                   loads: list[float]) -> tuple[list[str], dict[str, Any]]:
    md = ["### Robustness: Poisson resamples of each trace (same request mix, stationary arrivals)\n",
          "One replica, LARRY / FCFS (ratio, range over resamples); eight replicas, SAL's rank of 6 routers "
          "and SAL / best other router, on TTFT p99 and mean e2e:\n"]
    body, comp = [], {}
    for setting in B_SETTINGS:
        for load in loads:
            line = [setting, f"{load:.1f}"]
            for m in ("ttft_mean", "ttft_p99", "e2e_mean"):
                c = paired(raw, m, dict(experiment="poisson1", setting=setting, policy="larry", load=load),
                           dict(experiment="poisson1", setting=setting, policy="fcfs", load=load))
                comp[f"{setting} larry/fcfs {m} @{load}"] = c
                line.append(ratio_cell(c))
            for policy in B_POLICIES:
                rows = select(agg, experiment="poisson8", setting=setting, load=load, policy=policy)
                sal = one(rows, router="sal")
                cells = []
                for m in ("ttft_p99", "e2e_mean"):
                    others = [r for r in rows if r["router"] != "sal"]
                    best = min(others, key=lambda r: r[m])
                    rank = 1 + sum(r[m] < sal[m] for r in others)
                    comp[f"{setting} {policy} sal/best {m} @{load}"] = {"ratio": sal[m] / best[m], "rank": rank,
                                                                         "best": best["router"]}
                    cells.append(f"{rank} ({sal[m] / best[m]:.2f} vs {best['router']})")
                line.append(" / ".join(cells))
            body.append(line)
    md.append(md_table(["setting", "load", "larry/fcfs TTFT mean", "TTFT p99", "e2e mean",
                        "SAL+fcfs: p99 / e2e", "SAL+larry: p99 / e2e"], body) + "\n")
    return md, comp


def report_alpha(agg: list[dict[str, Any]], loads: list[float], out: Path) -> list[str]:
    md = ["### LARRY's alpha (one replica; ratio to FCFS at the same load, < 1 is better)\n"]
    body, plot_rows = [], []
    for setting in SWEEP_SETTINGS:
        for load in loads:
            base = one(agg, experiment="alpha", setting=setting, load=load, policy="fcfs")
            body.append([setting, f"{load:.1f}", "fcfs", fmt(base["ttft_mean"]), fmt(base["ttft_p99"]),
                         fmt(base["e2e_mean"]), fmt(base["preempted_share"], "pct")])
            for alpha in ALPHAS:
                r = one(agg, experiment="alpha", setting=setting, load=load, policy="larry", larry_alpha=alpha)
                ratio = {m: r[m] / base[m] if base[m] > 0 else math.nan for m in ("ttft_mean", "ttft_p99", "e2e_mean")}
                body.append([setting, f"{load:.1f}", f"larry a={alpha:g}", fmt(ratio["ttft_mean"], "x"),
                             fmt(ratio["ttft_p99"], "x"), fmt(ratio["e2e_mean"], "x"),
                             fmt(r["preempted_share"], "pct")])
                plot_rows.append({"setting": setting, "load": load, "larry_alpha": alpha,
                                  **{f"{m}_ratio": v for m, v in ratio.items()}})
    md.append(md_table(["setting", "load", "policy", "TTFT mean", "TTFT p99", "e2e mean", "preempted"], body) + "\n")
    plots.sweep_panels(
        plot_rows, [("ttft_mean_ratio", "TTFT mean / FCFS"), ("ttft_p99_ratio", "TTFT p99 / FCFS"),
                    ("e2e_mean_ratio", "mean e2e / FCFS")],
        out / "alpha.png", x="larry_alpha", xlabel="LARRY alpha (tokens/s)", logx=True,
        logy=("ttft_mean_ratio", "ttft_p99_ratio", "e2e_mean_ratio"),
        label=lambda r: f"{r['setting']} @{r['load']:.1f}",
        hlines={k: 1.0 for k in ("ttft_mean_ratio", "ttft_p99_ratio", "e2e_mean_ratio")},
        ncols=3, title="LARRY's alpha: one replica, ratio to FCFS (1 = FCFS; alpha -> inf is FCFS)")
    return md


def report_beta(agg: list[dict[str, Any]], loads: list[float], out: Path, lab: Lab) -> tuple[list[str], dict[str, Any]]:
    """SAL at each beta against the best of the other routers (from (b), same load and policy)."""
    md = ["### SAL's beta (8 replicas; ratio to the best other router at the same load and engine policy, "
          "< 1: SAL wins)\n"]
    learned = {}
    for name in {SETTINGS[s].trace for s in SWEEP_SETTINGS}:
        tr = lab.trace(name)
        learned[name] = float((tr.prompt_tokens.sum() + tr.output_tokens.sum()) / tr.output_tokens.sum())
    md.append("Learned beta converges to (mean in + mean out) / mean out of the trace: "
              + ", ".join(f"{k} {v:.1f}" for k, v in sorted(learned.items())) + ".\n")
    positions = {None: 0.0, **{b: float(i + 1) for i, b in enumerate(BETAS[1:])}}
    body, plot_rows, comp = [], [], {}
    for setting in SWEEP_SETTINGS:
        for load in loads:
            for policy in B_POLICIES:
                others = [r for r in select(agg, experiment="b", setting=setting, load=load, policy=policy)
                          if r["router"] != "sal"]
                if not others:
                    continue
                best = {m: min(others, key=lambda r: r[m]) for m in ("ttft_p99", "e2e_mean")}
                line = [setting, f"{load:.1f}", policy,
                        f"{fmt(best['ttft_p99']['ttft_p99'])} ({best['ttft_p99']['router']})",
                        f"{fmt(best['e2e_mean']['e2e_mean'])} ({best['e2e_mean']['router']})"]
                for beta in BETAS:
                    r = one(agg, experiment="beta", setting=setting, load=load, policy=policy,
                            sal_beta="learned" if beta is None else beta)
                    ratio = {m: r[m] / best[m][m] for m in ("ttft_p99", "e2e_mean")}
                    line.append(f"{ratio['ttft_p99']:.2f} / {ratio['e2e_mean']:.2f}")
                    plot_rows.append({"setting": setting, "load": load, "policy": policy, "beta_pos": positions[beta],
                                      **{f"{m}_ratio": v for m, v in ratio.items()}})
                    comp[f"{setting} {policy} @{load} beta={beta}"] = ratio
                body.append(line)
    head = ["setting", "load", "policy", "best TTFT p99 s", "best e2e mean s"] + [
        f"b={'learned' if b is None else b}" for b in BETAS]
    md.append("Cells: SAL's TTFT p99 / mean e2e divided by the best other router's.\n")
    md.append(md_table(head, body) + "\n")
    if plot_rows:
        plots.sweep_panels(
            plot_rows, [("ttft_p99_ratio", "SAL TTFT p99 / best other"),
                        ("e2e_mean_ratio", "SAL mean e2e / best other")],
            out / "beta.png", x="beta_pos", xlabel="SAL beta",
            xticklabels={positions[b]: ("learned" if b is None else f"{b:g}") for b in BETAS},
            label=lambda r: f"{r['setting']} {r['policy']} @{r['load']:.1f}",
            style=lambda r: {"linestyle": "-" if r["policy"] == "fcfs" else "--",
                             "color": f"C{SWEEP_SETTINGS.index(r['setting']) * len(loads) + loads.index(r['load'])}"},
            hlines={"ttft_p99_ratio": 1.0, "e2e_mean_ratio": 1.0}, legend_fontsize=6,
            title="SAL's beta: 8 replicas, ratio to the best other router (< 1: SAL wins; solid fcfs, dashed larry)")
    return md, {"learned_beta": learned, "ratios": comp}


# ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one replicate, fewer loads; writes to /tmp unless --out")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default benches/results)")
    ap.add_argument("--replicates", type=int, default=None, help="trace variants per configuration (default 3)")
    ap.add_argument("--only", choices=["tail"], default=None,
                    help="run one experiment (tail: the tail-safe LARRYs) and write its tables to tables_tail.md")
    args = ap.parse_args(argv)

    missing = [str(p) for p in TRACE_FILES.values() if not p.is_file()]
    if missing:
        print("experiments: skipped: the shared traces are absent (" + ", ".join(missing) + "); "
              "set HALFFULL_SHARED_TRACES to the folder holding azure-llm-2023/ and mooncake-fast25/.")
        return 0

    quick = args.quick
    out = args.out or (Path("/tmp/halffull-experiments-quick") if quick else REPO / "benches" / "results")
    out.mkdir(parents=True, exist_ok=True)
    replicates = args.replicates or (1 if quick else 3)
    loads_a = [0.5, 0.8, 1.1] if quick else [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]
    loads_b = [0.8, 1.0] if quick else [0.7, 0.8, 0.9, 1.0, 1.1]
    loads_alpha = [1.0] if quick else [0.8, 1.0]
    loads_beta = [1.0] if quick else [0.9, 1.0]
    loads_poisson = [1.0] if quick else [0.9, 1.0]
    show_a = [0.5, 0.8, 1.1] if quick else [0.7, 0.9, 1.1]
    show_b = [0.8, 1.0]

    loads_t = [0.7, 1.0] if quick else [0.5, 0.7, 0.8, 0.9, 1.0, 1.1]

    t_start = time.perf_counter()
    lab = Lab(replicates)
    print(f"halffull {halffull.__version__}: preset {PRESET}, cap {MAX_OUTPUT_TOKENS} output tokens, "
          f"sjf predictor {SJF_PREDICTOR}, {replicates} replicate(s) per configuration")
    for name in TRACE_FILES:
        tr = lab.trace(name)
        print(f"  {name}: {len(tr):,} requests over {tr.duration:,.0f} s ({tr.rate:.2f}/s), "
              f"prompt mean {tr.prompt_tokens.mean():,.0f}, output mean {tr.output_tokens.mean():,.0f}")
    for s in A_SETTINGS:
        print(f"  capacity {s}: {lab.capacity_per_replica(s):.3g} req/s per replica")

    if args.only == "tail":
        experiment_tail(lab, loads_t)
        md_t, comp_t = report_tail(aggregate(lab.rows), lab.rows, loads_t, out)
        tables = "\n".join(["# The tail-safe LARRYs (generated by benches/experiments.py --only tail)\n",
                            f"Preset {PRESET}; mean over {replicates} replicate(s) (the trace and jittered "
                            "copies, other seeds).\n"] + md_t)
        (out / "tables_tail.md").write_text(tables)
        write_csv(out / "experiments_tail.csv", lab.rows)
        (out / "experiments_tail.json").write_text(json.dumps(json_ready({"tail": comp_t}, digits=4),
                                                              separators=(",", ":")))
        print(tables)
        print(f"{len(lab.rows)} simulations in {time.perf_counter() - t_start:.1f} s; wrote {out}")
        return 0
    experiment_a(lab, loads_a)
    experiment_b(lab, loads_b)
    experiment_alpha(lab, loads_alpha)
    experiment_beta(lab, loads_beta)
    experiment_poisson(lab, loads_poisson)
    experiment_tail(lab, loads_t)
    sat = {s: {p: saturated_rate(lab, s, p) for p in A_POLICIES} for s in A_SETTINGS}

    raw = lab.rows
    agg = aggregate(raw)
    md_a, comp_a = report_a(agg, raw, loads_a, show_a, out, lab)
    md_b, comp_b = report_b(agg, raw, loads_b, show_b, out)
    md_alpha = report_alpha(agg, loads_alpha, out)
    md_beta, comp_beta = report_beta(agg, loads_beta, out, lab)
    md_poisson, comp_poisson = report_poisson(agg, raw, loads_poisson)
    md_t, comp_t = report_tail(agg, raw, loads_t, out)

    sat_md = ["### Saturated throughput per policy (one replica, 2,000 requests of the mix at t=0: "
              "output tokens/s over the makespan, and / FCFS)\n"]
    sat_md.append(md_table(["setting"] + A_POLICIES, [
        [s] + [f"{sat[s][p]['tokens_per_s']:,.0f} ({sat[s][p]['tokens_per_s'] / sat[s]['fcfs']['tokens_per_s']:.2f})"
               for p in A_POLICIES] for s in A_SETTINGS]) + "\n")

    total = time.perf_counter() - t_start
    header = [
        "# Experiment tables (generated by benches/experiments.py)\n",
        f"Preset {PRESET} unless noted; client cap {MAX_OUTPUT_TOKENS} output tokens; sjf sees "
        f"`predictor=\"{SJF_PREDICTOR}\"`; LARRY alpha {DEFAULT_ALPHA:g} tokens/s, SAL beta learned, "
        f"unless swept. Values: mean over {replicates} replicate(s) (the trace, and jittered copies "
        "with other seeds); `±` half the range when it exceeds 2%.\n",
    ]
    tables = "\n".join(header + sat_md + md_a + md_b + md_alpha + md_beta + md_poisson + md_t)
    (out / "tables.md").write_text(tables)
    print()
    print(tables)

    write_csv(out / "experiments.csv", [{k: v for k, v in r.items()} for r in raw])
    write_csv(out / "experiments_summary.csv", agg)
    meta = {
        "preset": PRESET, "max_output_tokens": MAX_OUTPUT_TOKENS, "sjf_predictor": SJF_PREDICTOR,
        "larry_alpha_default": DEFAULT_ALPHA, "replicates": replicates, "quick": quick,
        "settings": {k: {"trace": v.trace, "preset": v.preset, "engine": v.engine, "about": v.about}
                     for k, v in SETTINGS.items()},
        "traces": {k: str(v) for k, v in TRACE_FILES.items()},
        "capacity_per_replica": lab.capacity,
        "saturated_rate": sat,
        "loads": {"a": loads_a, "b": loads_b, "alpha": loads_alpha, "beta": loads_beta, "poisson": loads_poisson,
                  "t": loads_t},
        "runs": len(raw), "simulated_wall_s": lab.sim_wall, "total_wall_s": total,
    }
    (out / "experiments.json").write_text(json.dumps(json_ready({
        "meta": meta,
        "comparisons": {"a": comp_a, "b": comp_b, "beta": comp_beta, "poisson": comp_poisson, "t": comp_t},
    }, digits=4), separators=(",", ":")))
    sizes = {p.name: p.stat().st_size for p in sorted(out.glob("*.png"))}
    print(f"\n{len(raw)} simulations ({lab.sim_wall:.1f} s inside the simulator), {total:.1f} s in all; "
          f"wrote {out}: " + ", ".join(f"{k} {v // 1024} KB" for k, v in sizes.items()))
    big = [k for k, v in sizes.items() if v > 150 * 1024]
    if big:
        print(f"warning: PNGs over 150 KB: {big}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
