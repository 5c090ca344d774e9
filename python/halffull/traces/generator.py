"""Synthetic traces: ``synthetic(num_requests, rate, ...)`` draws a seeded one, with Poisson
or Gamma arrivals and lengths from a small distribution vocabulary (``LENGTH_KINDS``) or
resampled from another trace; the lognormal fits of the public traces are named here."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .trace import Trace

LENGTH_KINDS: tuple[str, ...] = ("constant", "uniform", "lognormal")
"""Distribution names accepted in a length spec (see ``synthetic``)."""

LengthSpec = int | tuple[Any, ...]  # 512 | ("constant", n) | ("uniform", lo, hi) | ("lognormal", mean, sigma)

# Lognormal fits, by matching the mean and the median (mean / median = exp(sigma**2 / 2)):
# load (mean tokens) and the typical request (median) come out right, the far tail less so.
AZURE_CONV_PROMPT: tuple[str, float, float] = ("lognormal", 1155, 0.50)
"""Azure conv 2023 prompts: mean 1,155, median 1,020 (fit p99 3,270; real p99 4,142)."""
AZURE_CONV_OUTPUT: tuple[str, float, float] = ("lognormal", 211, 0.99)
"""Azure conv 2023 outputs: mean 211, median 129; the real trace caps outputs at 1,000, so
pass ``max_output_tokens=1000`` for the same cap."""
MOONCAKE_PROMPT: tuple[str, float, float] = ("lognormal", 15325, 0.75)
"""Mooncake FAST'25 synthetic prompts: mean 15,325, median 11,587 (p99 matches too)."""
MOONCAKE_OUTPUT: tuple[str, float, float] = ("lognormal", 149, 1.24)
"""Mooncake FAST'25 synthetic outputs: mean 149, median 69."""

ARRIVALS: tuple[str, ...] = ("poisson", "gamma")
"""Arrival processes accepted by ``synthetic``."""


def _bad(argument: str, value: Any, what: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"{argument}: {what}, got {value!r}", field=argument, value=value)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def _draw_lengths(spec: Any, argument: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """Token counts (float, unclipped) from a length spec."""
    if _is_int(spec):
        spec = ("constant", int(spec))
    if not isinstance(spec, tuple) or not spec or spec[0] not in LENGTH_KINDS:
        raise _bad(
            argument,
            spec,
            "expected a Trace, an int, or ('constant', n) | ('uniform', lo, hi) | ('lognormal', mean, sigma)",
        )
    kind, params = spec[0], spec[1:]
    if kind == "constant":
        if len(params) != 1 or not _is_int(params[0]) or params[0] < 1:
            raise _bad(argument, spec, "('constant', n) needs an int n >= 1")
        return np.full(n, float(params[0]))
    if kind == "uniform":
        if len(params) != 2 or not all(_is_int(p) for p in params) or not 1 <= params[0] <= params[1]:
            raise _bad(argument, spec, "('uniform', lo, hi) needs ints 1 <= lo <= hi")
        return rng.integers(int(params[0]), int(params[1]) + 1, size=n).astype(np.float64)
    # lognormal: `mean` in tokens; `sigma` the standard deviation of ln(tokens).
    if len(params) != 2 or not all(_is_number(p) and math.isfinite(p) for p in params):
        raise _bad(argument, spec, "('lognormal', mean, sigma) needs finite numbers")
    mean, sigma = float(params[0]), float(params[1])
    if mean <= 0 or sigma < 0:
        raise _bad(argument, spec, "('lognormal', mean, sigma) needs mean > 0 and sigma >= 0")
    mu = math.log(mean) - sigma * sigma / 2
    return rng.lognormal(mu, sigma, size=n)


def _clip_tokens(values: np.ndarray, maximum: int | None) -> np.ndarray:
    upper = float(maximum) if maximum is not None else 2.0**53
    clipped: np.ndarray = np.clip(np.rint(values), 1.0, upper).astype(np.int64)
    return clipped


def synthetic(
    num_requests: int,
    rate: float,
    *,
    arrival: str = "poisson",
    cv: float = 1.0,
    prompt: LengthSpec | Trace | None = None,
    output: LengthSpec | Trace | None = None,
    max_prompt_tokens: int | None = None,
    max_output_tokens: int | None = None,
    seed: int = 0,
    name: str | None = None,
) -> Trace:
    """A seeded synthetic trace of ``num_requests`` requests arriving at ``rate`` per second.

    Arrivals start at 0.0. ``arrival="poisson"``: exponential gaps (CV 1). ``"gamma"``:
    Gamma gaps with coefficient of variation ``cv`` (shape ``1/cv**2``; ``cv > 1`` is burstier
    than Poisson, ``cv=0`` is evenly spaced).

    Lengths (``prompt``, ``output``), each one of:

    - an int ``n`` or ``("constant", n)``;
    - ``("uniform", lo, hi)``: integers in ``[lo, hi]``;
    - ``("lognormal", mean, sigma)``: ``mean`` in tokens, ``sigma`` the standard deviation of
      ln(tokens) (so the median is ``mean * exp(-sigma**2 / 2)``), rounded;
    - a ``Trace``: resample its counts; when ``prompt`` is a trace and ``output`` is ``None``
      (or the same trace), (prompt, output) pairs are resampled jointly.

    Defaults: ``AZURE_CONV_PROMPT`` and ``AZURE_CONV_OUTPUT``. Counts are clipped to
    ``[1, max_prompt_tokens]`` and ``[1, max_output_tokens]`` (no upper bound if ``None``).

    Arrivals, prompts and outputs draw from three independent streams of
    ``np.random.default_rng`` seeded from ``seed``: the same seed gives the same trace, and
    at another ``rate`` the same requests with arrival times scaled.
    """
    if not _is_int(num_requests) or num_requests < 1:
        raise _bad("num_requests", num_requests, "expected an int >= 1")
    if not _is_number(rate) or not math.isfinite(rate) or rate <= 0:
        raise _bad("rate", rate, "expected a finite number > 0 (requests per second)")
    if arrival not in ARRIVALS:
        raise InvalidArgumentError(
            f"arrival: unknown arrival process {arrival!r}; valid: {', '.join(ARRIVALS)}",
            field="arrival",
            value=arrival,
            valid=ARRIVALS,
        )
    if not _is_number(cv) or not math.isfinite(cv) or cv < 0:
        raise _bad("cv", cv, "expected a finite number >= 0")
    if arrival == "poisson" and cv != 1.0:
        raise _bad("cv", cv, "Poisson arrivals have CV 1; use arrival='gamma' for another CV")
    for argument, maximum in (("max_prompt_tokens", max_prompt_tokens), ("max_output_tokens", max_output_tokens)):
        if maximum is not None and (not _is_int(maximum) or maximum < 1):
            raise _bad(argument, maximum, "expected an int >= 1 or None")
    if not _is_int(seed) or seed < 0:
        raise _bad("seed", seed, "expected an int >= 0")

    n = int(num_requests)
    arrival_rng, prompt_rng, output_rng = (
        np.random.default_rng(child) for child in np.random.SeedSequence(int(seed)).spawn(3)
    )

    # Gaps in units of the mean gap, then scaled: a different rate gives the same trace, faster.
    if arrival == "poisson":
        gaps = arrival_rng.standard_exponential(n - 1)
    elif cv == 0:
        gaps = np.ones(n - 1)
    else:
        shape = 1.0 / (cv * cv)
        gaps = arrival_rng.standard_gamma(shape, n - 1) / shape
    arrival_time = np.concatenate(([0.0], np.cumsum(gaps / float(rate))))

    if prompt is None:
        prompt = AZURE_CONV_PROMPT
    if output is None:
        output = prompt if isinstance(prompt, Trace) else AZURE_CONV_OUTPUT
    if isinstance(prompt, Trace) and prompt is output:
        if len(prompt) == 0:
            raise _bad("prompt", prompt, "cannot resample an empty trace")
        picks = prompt_rng.integers(0, len(prompt), size=n)
        prompt_values = prompt.prompt_tokens[picks].astype(np.float64)
        output_values = prompt.output_tokens[picks].astype(np.float64)
    else:
        prompt_values = _resample_or_draw(prompt, "prompt", prompt_rng, n)
        output_values = _resample_or_draw(output, "output", output_rng, n)

    if name is None:
        name = f"synthetic-{arrival}-{rate:g}rps-seed{seed}"
    return Trace(
        arrival_time=arrival_time,
        prompt_tokens=_clip_tokens(prompt_values, max_prompt_tokens),
        output_tokens=_clip_tokens(output_values, max_output_tokens),
        name=name,
        source="synthetic",
    )


def _resample_or_draw(spec: Any, argument: str, rng: np.random.Generator, n: int) -> np.ndarray:
    if isinstance(spec, Trace):
        if len(spec) == 0:
            raise _bad(argument, spec, "cannot resample an empty trace")
        column = spec.prompt_tokens if argument == "prompt" else spec.output_tokens
        picked: np.ndarray = column[rng.integers(0, len(spec), size=n)].astype(np.float64)
        return picked
    return _draw_lengths(spec, argument, rng, n)


__all__ = [
    "ARRIVALS",
    "AZURE_CONV_OUTPUT",
    "AZURE_CONV_PROMPT",
    "LENGTH_KINDS",
    "LengthSpec",
    "MOONCAKE_OUTPUT",
    "MOONCAKE_PROMPT",
    "synthetic",
]
