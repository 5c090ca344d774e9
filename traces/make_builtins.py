"""Regenerate the built-in traces shipped in ``python/halffull/data/`` (see README.md here).

    python traces/make_builtins.py                    # write the built-ins
    python traces/make_builtins.py --fit AZURE_CSV    # print the lognormal fits they use

The fits (``AZURE_CONV_PROMPT`` ... in ``halffull.traces``) were made once from the public
Azure and Mooncake traces with ``--fit``; writing the built-ins needs only those constants,
not the public traces, so the output is the same on any machine with the same numpy.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from halffull import traces
from halffull.traces import (
    AZURE_CONV_OUTPUT,
    AZURE_CONV_PROMPT,
    MOONCAKE_OUTPUT,
    MOONCAKE_PROMPT,
    Trace,
    synthetic,
)

DATA_DIR = Path(__file__).resolve().parents[1] / "python" / "halffull" / "data"

BUILTINS = {
    # ~2,000 requests, Azure-conversation-like lengths, Poisson arrivals at 5 req/s.
    "default": dict(
        num_requests=2000, rate=5.0, prompt=AZURE_CONV_PROMPT, output=AZURE_CONV_OUTPUT,
        max_prompt_tokens=16384, max_output_tokens=1000, seed=0,
    ),
    # The same lengths, bursty arrivals: Gamma gaps with CV 3.
    "bursty": dict(
        num_requests=2000, rate=5.0, arrival="gamma", cv=3.0, prompt=AZURE_CONV_PROMPT,
        output=AZURE_CONV_OUTPUT, max_prompt_tokens=16384, max_output_tokens=1000, seed=1,
    ),
    # Long prompts, short outputs (Mooncake FAST'25 synthetic-like), Poisson at 4 req/s.
    "mooncake_like": dict(
        num_requests=1000, rate=4.0, prompt=MOONCAKE_PROMPT, output=MOONCAKE_OUTPUT,
        max_prompt_tokens=131072, max_output_tokens=1024, seed=2,
    ),
}


def make(name: str) -> Trace:
    trace = synthetic(name=name, **BUILTINS[name])  # type: ignore[arg-type]
    # Microsecond arrival times keep the files small and readable.
    return replace(trace, arrival_time=np.round(trace.arrival_time, 6))


def fit(path: str) -> None:
    """Lognormal (mean, sigma) by matching mean and median: mean / median = exp(sigma^2 / 2)."""
    trace = traces.load(path)
    for label, tokens in (("prompt", trace.prompt_tokens), ("output", trace.output_tokens)):
        mean, median = float(tokens.mean()), float(np.median(tokens))
        sigma = math.sqrt(2 * math.log(mean / median)) if mean > median else 0.0
        print(f"{trace.name} {label}: ('lognormal', {mean:.0f}, {sigma:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--fit", metavar="TRACE", help="print lognormal fits of a trace's lengths")
    args = parser.parse_args()
    if args.fit:
        fit(args.fit)
        return
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for name in BUILTINS:
        trace = make(name)
        path = trace.save(DATA_DIR / f"{name}.csv")
        summary = trace.summary()
        print(
            f"{path.name}: {len(trace)} requests, {path.stat().st_size / 1024:.0f} KiB, "
            f"rate {summary['rate']:.2f}/s, CV {summary['interarrival_cv']:.2f}, "
            f"prompt mean {summary['prompt_mean']:.0f} p50 {summary['prompt_p50']:.0f}, "
            f"output mean {summary['output_mean']:.0f} p50 {summary['output_p50']:.0f}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
