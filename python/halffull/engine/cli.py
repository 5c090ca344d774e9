"""``halffull engine ...``: run the torch engine loop from the command line.

    halffull engine generate  --preset tiny --num-requests 8 --prompt-len 32 --output-len 32
    halffull engine serve     --trace builtin:default --time-scale 20 --max-requests 200
    halffull engine calibrate                       # = halffull calibrate
    halffull engine calibrate --preset tiny --rounds 3 --out calibration.json

``calibrate`` fits the simulator's linear step-cost model to the engine's measured steps and
checks it on a held-out trace (``halffull.engine.calibrate.calibrate``); with no trace it
uses a synthetic load ramp for the fit and Gamma bursts for the check, at loads relative to
the engine's measured capacity (~45 s for ``mini`` on one CPU thread).

``cli_main(argv)`` parses ``argv`` (without the leading ``engine``) and returns an exit code;
``halffull.cli`` forwards to it (``halffull engine ...`` and ``halffull calibrate ...``).
Errors from halffull are printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import HalffullError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="halffull engine",
                                description="Drive a seeded Llama-style model with a halffull scheduler.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--preset", default="tiny", help="model preset: tiny, mini, small (default %(default)s)")
        sp.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
        sp.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
        sp.add_argument("--scheduler", default="rust", choices=("rust", "reference"))
        sp.add_argument("--policy", default="fcfs")
        sp.add_argument("--preemption-mode", default="recompute", choices=("recompute", "swap"))
        sp.add_argument("--num-gpu-blocks", type=int, default=512)
        sp.add_argument("--num-cpu-blocks", type=int, default=0)
        sp.add_argument("--block-size", type=int, default=16)
        sp.add_argument("--max-num-seqs", type=int, default=64)
        sp.add_argument("--max-num-batched-tokens", type=int, default=512)
        sp.add_argument("--threads", type=int, default=None, help="torch CPU threads (default %(default)s)")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--json", action="store_true", help="print JSON instead of text")

    g = sub.add_parser("generate", help="generate from random prompts; print tokens/s and the time split")
    common(g)
    g.add_argument("--num-requests", type=int, default=8)
    g.add_argument("--prompt-len", type=int, default=32)
    g.add_argument("--output-len", type=int, default=32)

    s = sub.add_parser("serve", help="replay a trace in real time; print TTFT/TPOT/latency")
    common(s)
    s.add_argument("--trace", default="builtin:default",
                   help="a trace file (azure, mooncake, burstgpt, halffull) or builtin:NAME")
    s.add_argument("--format", default=None, help="trace file format (default: detect)")
    s.add_argument("--time-scale", type=float, default=1.0, help="replay speed-up (10 = ten times faster)")
    s.add_argument("--max-requests", type=int, default=100)
    s.add_argument("--max-prompt-tokens", type=int, default=None)
    s.add_argument("--max-output-tokens", type=int, default=None)
    s.add_argument("--fit", action="store_true", help="also fit the linear step-cost model to the steps")
    s.add_argument("--out", default=None, help="write the result as JSON to this file")

    c = sub.add_parser("calibrate", help="fit the simulator's linear step-cost model on the engine and "
                                         "check it on a held-out trace")
    add_calibrate_arguments(c, common)
    return p


def add_calibrate_arguments(c: argparse.ArgumentParser, common: Any = None) -> None:
    """The options of ``calibrate`` (``halffull calibrate`` and ``halffull engine calibrate``)."""
    from .calibrate import (DEFAULT_FIT_LOADS, DEFAULT_HOLDOUT_CV, DEFAULT_HOLDOUT_LOAD, DEFAULT_MODEL,
                            DEFAULT_REQUESTS)

    if common is not None:
        common(c)
    c.set_defaults(preset=DEFAULT_MODEL, threads=1)
    c.add_argument("--fit-trace", default=None,
                   help="trace to fit on: a file or builtin:NAME (default: a synthetic Poisson load ramp)")
    c.add_argument("--holdout-trace", default=None,
                   help="held-out trace (default: synthetic Gamma CV 2 bursts; with only --fit-trace, "
                        "the requests after the fit's)")
    c.add_argument("--format", default=None, help="trace file format (default: detect)")
    c.add_argument("--time-scale", type=float, default=1.0, help="replay speed-up (10 = ten times faster)")
    c.add_argument("--max-requests", type=int, default=None,
                   help=f"requests per trace (default {DEFAULT_REQUESTS}; with a file, half of it)")
    c.add_argument("--rounds", type=int, default=5,
                   help="replay fit and held-out traces alternately in this many pieces (default 5)")
    c.add_argument("--capacity", type=float, default=None,
                   help="engine capacity, req/s, for the synthetic traces' loads (default: measure it)")
    c.add_argument("--fit-loads", default=",".join(f"{x:g}" for x in DEFAULT_FIT_LOADS),
                   help="loads (x capacity) the synthetic fit trace ramps through")
    c.add_argument("--holdout-load", type=float, default=DEFAULT_HOLDOUT_LOAD,
                   help="load (x capacity) of the synthetic held-out trace")
    c.add_argument("--holdout-cv", type=float, default=DEFAULT_HOLDOUT_CV,
                   help="inter-arrival CV of the synthetic held-out trace (Gamma)")
    c.add_argument("--fit-speedups", default=None,
                   help="per round, replay the fit piece this many times faster than --time-scale, "
                        "so the fit spans lighter and heavier load than the held-out replay (default: "
                        "with --fit-trace, 0.5 to 4, geometric; else 1)")
    c.add_argument("--max-prompt-tokens", type=int, default=None, help="clip prompts of file traces")
    c.add_argument("--max-output-tokens", type=int, default=None, help="clip outputs of file traces")
    c.add_argument("--fit-target", default="period_s", choices=("period_s", "step_s"),
                   help="fit the step's start-to-start period (default) or Engine.step's own time")
    c.add_argument("--out", default=None, help="write the report as JSON to this file")


def _engine(args: argparse.Namespace) -> Any:
    import torch

    from ..config import SchedulerConfig
    from .engine import Engine
    from .model import ModelConfig

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = ModelConfig.preset(args.preset, dtype=args.dtype, seed=args.seed)
    sched = SchedulerConfig(
        num_gpu_blocks=args.num_gpu_blocks, block_size=args.block_size, num_cpu_blocks=args.num_cpu_blocks,
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
        policy=args.policy, preemption_mode=args.preemption_mode)
    return Engine(model, sched, device=args.device, scheduler=args.scheduler)


def _load_trace(spec: str, fmt: Optional[str]) -> Any:
    from pathlib import Path

    from .. import traces

    if spec.startswith("builtin:"):
        return traces.builtin(spec[len("builtin:"):])
    if spec in traces.builtin_names() and not Path(spec).exists():
        return traces.builtin(spec)
    return traces.load(spec, format=fmt)


def _clean(x: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def run_generate(args: argparse.Namespace) -> dict[str, Any]:
    eng = _engine(args)
    rng = np.random.default_rng(args.seed)
    vocab = eng.model_config.vocab_size
    eng.generate([rng.integers(0, vocab, size=4).tolist()], max_output_tokens=2)   # warm-up
    eng.reset_timings()
    prompts = [rng.integers(0, vocab, size=args.prompt_len).tolist() for _ in range(args.num_requests)]
    t0 = time.perf_counter()
    outputs = eng.generate(prompts, max_output_tokens=args.output_len)
    wall = time.perf_counter() - t0
    produced = sum(len(o) for o in outputs)
    return {
        "preset": args.preset, "device": str(eng.device), "scheduler": args.scheduler,
        "parameters": eng.model_config.num_parameters(), "requests": len(prompts),
        "output_tokens": produced, "wall_s": wall, "output_tokens_per_s": produced / wall,
        "tokens_per_s": (produced + args.prompt_len * len(prompts)) / wall,
        "timings": eng.timings(),
    }


def run_serve(args: argparse.Namespace, fit: bool = False) -> dict[str, Any]:
    trace = _load_trace(args.trace, args.format)
    eng = _engine(args)
    report = eng.serve_trace(trace, time_scale=args.time_scale, max_requests=args.max_requests,
                             seed=args.seed, max_prompt_tokens=args.max_prompt_tokens,
                             max_output_tokens=args.max_output_tokens)
    out: dict[str, Any] = {"preset": args.preset, "device": str(eng.device), "scheduler": args.scheduler,
                           "trace": args.trace, "summary": report.summary(), "timings": report.timings}
    if fit:
        from .calibrate import fit_linear_cost_model, fit_quality, with_periods

        steps = with_periods(report.steps)
        coef = fit_linear_cost_model(steps, target="period_s")
        out["cost_model"] = coef
        out["fit"] = fit_quality(coef, steps, target="period_s")
    out["_report"] = report
    return out


def _floats(text: str, name: str) -> list[float]:
    from ..errors import InvalidArgumentError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidArgumentError(f"{name} must be a comma-separated list of numbers, got {text!r}",
                                   field=name, value=text) from None


def run_calibrate(args: argparse.Namespace) -> Any:
    """``calibrate`` with the parsed options; returns the ``CalibrationReport``."""
    from ..config import SchedulerConfig
    from .calibrate import calibrate

    fit = _load_trace(args.fit_trace, args.format) if args.fit_trace else None
    hold = _load_trace(args.holdout_trace, args.format) if args.holdout_trace else None
    sched = SchedulerConfig(
        num_gpu_blocks=args.num_gpu_blocks, block_size=args.block_size, num_cpu_blocks=args.num_cpu_blocks,
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
        policy=args.policy, preemption_mode=args.preemption_mode)
    quiet = args.json

    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    return calibrate(
        args.preset, sched, fit_trace=fit, holdout_trace=hold, time_scale=args.time_scale,
        max_requests=args.max_requests, rounds=args.rounds, seed=args.seed,
        max_prompt_tokens=args.max_prompt_tokens, max_output_tokens=args.max_output_tokens,
        device=args.device, scheduler=args.scheduler, dtype=args.dtype, threads=args.threads,
        capacity=args.capacity, fit_loads=_floats(args.fit_loads, "fit_loads"),
        holdout_load=args.holdout_load, holdout_cv=args.holdout_cv,
        fit_speedups=_floats(args.fit_speedups, "fit_speedups") if args.fit_speedups else None,
        fit_target=args.fit_target, log=log)


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``halffull engine``; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "generate":
            res = run_generate(args)
        elif args.command == "calibrate":
            cal = run_calibrate(args)
            res = {}
        else:
            res = run_serve(args, fit=args.fit)
    except HalffullError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        print("error: the engine needs torch: pip install 'halffull[engine]'", file=sys.stderr)
        return 2
    if args.command == "calibrate":
        payload = cal.to_dict()
        if args.out:
            with open(args.out, "w") as f:
                json.dump(payload, f, indent=2)
        print(json.dumps(payload, indent=2) if args.json else cal.format())
        return 0
    report = res.pop("_report", None)
    payload = _clean(res)
    if getattr(args, "out", None):
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=2)
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    t = res["timings"]
    share = f"scheduler {100 * t['scheduler_share']:.2f}% of step time ({t['steps']} steps)"
    if args.command == "generate":
        print(f"{res['preset']} ({res['parameters'] / 1e6:.1f}M params) on {res['device']}, "
              f"{res['scheduler']} scheduler: {res['output_tokens']} tokens in {res['wall_s']:.2f} s = "
              f"{res['output_tokens_per_s']:.1f} output tok/s; {share}")
    else:
        assert report is not None
        print(report.format())
        if "cost_model" in res:
            c, q = res["cost_model"], res["fit"]
            print(f"period_s = {c['c0']:.3e} + {c['c1']:.3e}*prefill_tokens + {c['c2']:.3e}*decode_seqs"
                  f" + {c['c3']:.3e}*kv_tokens   (r2 {q['r2']:.3f}, {int(q['num_steps'])} steps)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(cli_main())
