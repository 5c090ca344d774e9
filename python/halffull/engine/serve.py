"""Replay a trace through a real engine in real time and measure TTFT, TPOT and latency.

A trace is any object with numpy arrays ``arrival_time`` (s), ``prompt_tokens`` and
``output_tokens`` (``halffull.traces.Trace`` or a ``SimpleNamespace``). Request ``i`` is added
once the scaled wall clock reaches its arrival::

    (wall - start) * time_scale >= arrival_time[i] - arrival_time[0]

so ``time_scale=10`` replays ten times faster than recorded. Prompts are random token ids
(seeded); the trace's output length is the request's ``max_output_tokens`` (EOS is disabled,
so every request produces exactly that many tokens, unless the cache caps it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import HalffullError, InvalidArgumentError


class ReplayEngine(Protocol):
    """What ``serve_trace`` uses of an engine; ``halffull.engine.Engine`` has it all. A
    protocol, so that this module need not import the engine module that imports it."""

    model_config: Any  # .vocab_size
    eos_token_id: int | None

    @property
    def num_live(self) -> int: ...
    def has_unfinished_requests(self) -> bool: ...
    def set_eos_token_id(self, eos_token_id: int | None) -> None: ...
    def generate(self, prompts: Any, max_output_tokens: int = ...) -> Any: ...
    def reset_timings(self) -> None: ...
    def now(self) -> float: ...
    def add_request(self, prompt_token_ids: Any, max_output_tokens: int = ..., *,
                    arrival_time: float | None = ...) -> Any: ...
    def step(self) -> Any: ...
    def pop_result(self, request_id: Any) -> Any: ...
    def step_records(self) -> dict[str, np.ndarray]: ...
    def timings(self) -> dict[str, float]: ...


def _percentiles(x: np.ndarray) -> dict[str, float]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"mean": math.nan, "p50": math.nan, "p90": math.nan, "p99": math.nan}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


@dataclass(eq=False)
class ServeReport:
    """Per-request arrays (replay order = arrival order; seconds since the replay started;
    NaN where a request was rejected or produced too few tokens) and per-step records."""

    trace_index: np.ndarray          # row of the trace
    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray        # tokens actually produced
    num_preemptions: np.ndarray
    rejected: np.ndarray             # bool: the engine refused the request (too large, bad row)
    steps: dict[str, np.ndarray]     # Engine.step_records() of the replay (start_s relative)
    timings: dict[str, float]        # Engine.timings() of the replay
    duration_s: float
    time_scale: float
    errors: dict[int, str] = field(default_factory=dict)   # trace row -> why it was rejected

    @property
    def ttft(self) -> np.ndarray:
        """Time to first token, s."""
        return self.first_token_s - self.arrival_s

    @property
    def tpot(self) -> np.ndarray:
        """Time per output token after the first, s (NaN with fewer than two tokens)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (self.finish_s - self.first_token_s) / (self.output_tokens - 1)
        return np.where(self.output_tokens >= 2, out, np.nan)

    @property
    def e2e(self) -> np.ndarray:
        """End-to-end latency, s."""
        return self.finish_s - self.arrival_s

    def __len__(self) -> int:
        return len(self.trace_index)

    def summary(self) -> dict[str, Any]:
        """Means and percentiles of TTFT, TPOT and end-to-end latency, throughput, preemptions."""
        ok = ~self.rejected
        done = int(ok.sum())
        dur = self.duration_s
        return {
            "num_requests": len(self),
            "num_finished": done,
            "num_rejected": int(self.rejected.sum()),
            "duration_s": dur,
            "time_scale": self.time_scale,
            "throughput_rps": done / dur if dur > 0 else math.nan,
            "output_tokens_per_s": float(self.output_tokens[ok].sum()) / dur if dur > 0 else math.nan,
            "ttft_s": _percentiles(self.ttft),
            "tpot_s": _percentiles(self.tpot),
            "e2e_s": _percentiles(self.e2e),
            "preemptions_per_request": float(self.num_preemptions[ok].mean()) if done else math.nan,
            "share_preempted": float((self.num_preemptions[ok] > 0).mean()) if done else math.nan,
            "steps": int(self.timings.get("steps", 0)),
            "scheduler_share": self.timings.get("scheduler_share", math.nan),
        }

    def format(self) -> str:
        """A small plain-text table of ``summary()``."""
        s = self.summary()
        lines = [f"{s['num_finished']}/{s['num_requests']} requests in {s['duration_s']:.2f} s "
                 f"({s['throughput_rps']:.2f} req/s, {s['output_tokens_per_s']:.1f} output tok/s, "
                 f"{s['steps']} steps, scheduler {100 * s['scheduler_share']:.2f}% of step time)",
                 f"{'metric':<8}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}   (ms)"]
        for key in ("ttft_s", "tpot_s", "e2e_s"):
            d = s[key]
            lines.append(f"{key[:-2]:<8}" + "".join(f"{1000 * d[k]:>10.2f}" for k in ("mean", "p50", "p90", "p99")))
        return "\n".join(lines)


def _trace_columns(trace: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cols = []
    for name in ("arrival_time", "prompt_tokens", "output_tokens"):
        if not hasattr(trace, name):
            raise InvalidArgumentError(f"trace has no attribute {name!r} (need arrival_time, "
                                       "prompt_tokens, output_tokens arrays)", field=name, value=None)
        cols.append(np.asarray(getattr(trace, name)))
    arrival, prompt, output = cols
    if not (arrival.ndim == prompt.ndim == output.ndim == 1) or not len(arrival) == len(prompt) == len(output):
        raise InvalidArgumentError(
            f"trace columns must be 1-D of one length, got {arrival.shape}, {prompt.shape}, {output.shape}",
            field="trace", value=None)
    arrival = arrival.astype(np.float64)
    if not np.all(np.isfinite(arrival)) or (arrival.size and arrival.min() < 0):
        raise InvalidArgumentError("trace arrival_time must be finite and >= 0", field="arrival_time", value=None)
    for name, col in (("prompt_tokens", prompt), ("output_tokens", output)):
        if col.size and (not np.all(np.isfinite(col.astype(np.float64))) or col.min() < 0):
            raise InvalidArgumentError(f"trace {name} must be finite and >= 0", field=name, value=None)
    return arrival, prompt.astype(np.int64), output.astype(np.int64)


def serve_trace(engine: ReplayEngine, trace: Any, *, time_scale: float = 1.0, max_requests: int | None = None,
                seed: int = 0, max_prompt_tokens: int | None = None,
                max_output_tokens: int | None = None, warmup: bool = True) -> ServeReport:
    """Replay ``trace`` (the ``max_requests`` earliest rows) on an idle ``engine`` in real time.

    ``max_prompt_tokens`` / ``max_output_tokens`` clip the trace's lengths (a small model's
    cache cannot hold production prompts). A request the engine refuses (``RequestTooLargeError``,
    a zero-length prompt) is marked ``rejected`` and the replay goes on. ``warmup`` runs one
    short request first so lazy initialisation does not land on the first measured step.
    """
    if isinstance(time_scale, bool) or not isinstance(time_scale, (int, float)) \
            or not math.isfinite(time_scale) or time_scale <= 0:
        raise InvalidArgumentError(f"time_scale must be a positive finite number, got {time_scale!r}",
                                   field="time_scale", value=time_scale)
    if max_requests is not None and (isinstance(max_requests, bool) or not isinstance(max_requests, int)
                                     or max_requests < 0):
        raise InvalidArgumentError(f"max_requests must be None or an int >= 0, got {max_requests!r}",
                                   field="max_requests", value=max_requests)
    for name, cap in (("max_prompt_tokens", max_prompt_tokens), ("max_output_tokens", max_output_tokens)):
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise InvalidArgumentError(f"{name} must be None or an int >= 1, got {cap!r}", field=name, value=cap)
    if engine.has_unfinished_requests():
        raise InvalidArgumentError(f"serve_trace needs an idle engine; {engine.num_live} requests are live",
                                   field="engine", value=None)
    arrival, prompt, output = _trace_columns(trace)
    order = np.argsort(arrival, kind="stable")
    if max_requests is not None:
        order = order[:max_requests]
    n = len(order)
    arrival, prompt, output = arrival[order], prompt[order], output[order]
    if max_prompt_tokens is not None:
        prompt = np.minimum(prompt, max_prompt_tokens)
    output = np.maximum(output, 1)
    if max_output_tokens is not None:
        output = np.minimum(output, max_output_tokens)
    offsets = (arrival - (arrival[0] if n else 0.0)) / float(time_scale)

    vocab = engine.model_config.vocab_size
    rng = np.random.default_rng(seed)
    bounds = np.concatenate([[0], np.cumsum(prompt)])
    all_tokens = rng.integers(0, vocab, size=int(bounds[-1]), dtype=np.int64)

    saved_eos = engine.eos_token_id
    engine.set_eos_token_id(None)
    try:
        if warmup:
            engine.generate([rng.integers(0, vocab, size=4).tolist()], max_output_tokens=2)
        engine.reset_timings()
        ids: list[Any] = [None] * n
        errors: dict[int, str] = {}
        start = engine.now()
        i = 0
        while i < n or engine.has_unfinished_requests():
            t = engine.now() - start
            while i < n and offsets[i] <= t:
                try:
                    ids[i] = engine.add_request(all_tokens[bounds[i]: bounds[i + 1]], int(output[i]),
                                                arrival_time=start + float(offsets[i]))
                except HalffullError as e:
                    errors[int(order[i])] = f"{type(e).__name__}: {e}"
                i += 1
            if engine.has_unfinished_requests():
                engine.step()
            elif i < n:
                time.sleep(max(0.0, float(offsets[i]) - (engine.now() - start)))
        duration = engine.now() - start
    finally:
        engine.set_eos_token_id(saved_eos)

    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    produced = np.zeros(n, dtype=np.int64)
    preempt = np.zeros(n, dtype=np.int64)
    rejected = np.zeros(n, dtype=bool)
    for j, rid in enumerate(ids):
        if rid is None:
            rejected[j] = True
            continue
        res = engine.pop_result(rid)
        first[j] = res.first_token_time - start
        finish[j] = res.finish_time - start
        produced[j] = len(res.output_token_ids)
        preempt[j] = res.num_preemptions
    steps = engine.step_records()
    steps["start_s"] = steps["start_s"] - start
    return ServeReport(
        trace_index=order.astype(np.int64), arrival_s=offsets, first_token_s=first, finish_s=finish,
        prompt_tokens=prompt, output_tokens=produced, num_preemptions=preempt, rejected=rejected,
        steps=steps, timings=engine.timings(), duration_s=duration, time_scale=float(time_scale),
        errors=errors)
