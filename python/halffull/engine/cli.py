"""``halffull engine ...``: run the torch engine loop from the command line (typer; the
``engine`` group of the ``halffull`` command).

    halffull engine generate  --preset tiny --num-requests 8 --prompt-len 32 --output-len 32
    halffull engine serve     --trace builtin:default --time-scale 20 --max-requests 200
    halffull engine calibrate                       # = halffull calibrate
    halffull engine calibrate --preset tiny --rounds 3 --out calibration.json

``calibrate`` fits the simulator's linear step-cost model to the engine's measured steps and
checks it on a held-out trace (``halffull.engine.calibrate.calibrate``); with no trace it
uses a synthetic load ramp for the fit and Gamma bursts for the check, at loads relative to
the engine's measured capacity (~45 s for ``mini`` on one CPU thread). Traces are named as
``halffull.traces.resolve`` takes them: a file, a built-in name, or ``builtin:NAME``.

``app`` is the typer group; ``cli_main(argv)`` runs it on ``argv`` (without the leading
``engine``) and returns the exit code. Errors from halffull are printed as one line, exit
code 2.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from types import SimpleNamespace
from typing import Annotated, Any, Literal

import numpy as np
import typer

from .._util import json_ready
from ..errors import HalffullError, InvalidArgumentError
from ..traces import resolve
from .calibrate import DEFAULT_FIT_LOADS, DEFAULT_HOLDOUT_CV, DEFAULT_HOLDOUT_LOAD, DEFAULT_MODEL, DEFAULT_REQUESTS

_DEFAULT_FIT_LOADS = ",".join(f"{x:g}" for x in DEFAULT_FIT_LOADS)

app = typer.Typer(name="engine", add_completion=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Drive a seeded Llama-style model with a halffull scheduler.")

# Options shared by the commands, declared once (a parameter with a default is an option:
# ``num_gpu_blocks: int = 512`` is ``--num-gpu-blocks``; flags name themselves, so no
# ``--no-json`` appears).
Preset = Annotated[str, typer.Option(help="model preset: tiny, mini, small")]
Dtype = Annotated[str, typer.Option(help="float32, bfloat16 or float16")]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:N")]
SchedulerKind = Literal["rust", "reference"]
PreemptionMode = Literal["recompute", "swap"]
Threads = Annotated[int | None, typer.Option(help="torch CPU threads")]
Json = Annotated[bool, typer.Option("--json", help="print JSON instead of text")]
Format = Annotated[str | None, typer.Option(help="trace file format (default: detect)")]
TimeScale = Annotated[float, typer.Option(help="replay speed-up (10 = ten times faster)")]


def _run(command: str, options: dict[str, Any]) -> None:
    """Run ``command`` with the options typer parsed and print its result; a halffull error
    (or torch missing) is one line on stderr and exit code 2."""
    args = SimpleNamespace(command=command, json=options.pop("json_out"), **options)
    try:
        result = _COMMANDS[command](args)
    except HalffullError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        raise typer.Exit(2) from None
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        print("error: the engine needs torch: pip install 'halffull[engine]'", file=sys.stderr)
        raise typer.Exit(2) from None
    _print(args, result)


@app.command(help="generate from random prompts; print tokens/s and the time split")
def generate(
    preset: Preset = "tiny", dtype: Dtype = "float32", device: Device = "cpu", scheduler: SchedulerKind = "rust",
    policy: str = "fcfs", preemption_mode: PreemptionMode = "recompute", num_gpu_blocks: int = 512,
    num_cpu_blocks: int = 0, block_size: int = 16, max_num_seqs: int = 64,
    max_num_batched_tokens: int = 512, threads: Threads = None, seed: int = 0, json_out: Json = False,
    num_requests: int = 8, prompt_len: int = 32, output_len: int = 32,
) -> None:
    _run("generate", locals())


@app.command(help="replay a trace in real time; print TTFT/TPOT/latency")
def serve(
    preset: Preset = "tiny", dtype: Dtype = "float32", device: Device = "cpu", scheduler: SchedulerKind = "rust",
    policy: str = "fcfs", preemption_mode: PreemptionMode = "recompute", num_gpu_blocks: int = 512,
    num_cpu_blocks: int = 0, block_size: int = 16, max_num_seqs: int = 64,
    max_num_batched_tokens: int = 512, threads: Threads = None, seed: int = 0, json_out: Json = False,
    trace: Annotated[str, typer.Option(help="a trace file (azure, mooncake, burstgpt, halffull), a built-in "
                                            "name or builtin:NAME")] = "builtin:default",
    format: Format = None,
    time_scale: TimeScale = 1.0,
    max_requests: int = 100,
    max_prompt_tokens: int | None = None,
    max_output_tokens: int | None = None,
    fit: Annotated[bool, typer.Option("--fit", help="also fit the linear step-cost model to the steps")] = False,
    out: Annotated[str | None, typer.Option(help="write the result as JSON to this file")] = None,
) -> None:
    _run("serve", locals())


@app.command(help="fit the simulator's linear step-cost model on the engine and check it on a held-out trace")
def calibrate(
    preset: Preset = DEFAULT_MODEL, dtype: Dtype = "float32", device: Device = "cpu",
    scheduler: SchedulerKind = "rust", policy: str = "fcfs", preemption_mode: PreemptionMode = "recompute",
    num_gpu_blocks: int = 512, num_cpu_blocks: int = 0, block_size: int = 16,
    max_num_seqs: int = 64, max_num_batched_tokens: int = 512, threads: Threads = 1,
    seed: int = 0, json_out: Json = False,
    fit_trace: Annotated[str | None, typer.Option(
        help="trace to fit on: a file or builtin:NAME (default: a synthetic Poisson load ramp)")] = None,
    holdout_trace: Annotated[str | None, typer.Option(
        help="held-out trace (default: synthetic Gamma CV 2 bursts; with only --fit-trace, the requests "
             "after the fit's)")] = None,
    format: Format = None,
    time_scale: TimeScale = 1.0,
    max_requests: Annotated[int | None, typer.Option(
        help=f"requests per trace (default {DEFAULT_REQUESTS}; with a file, half of it)")] = None,
    rounds: Annotated[int, typer.Option(
        help="replay fit and held-out traces alternately in this many pieces")] = 5,
    capacity: Annotated[float | None, typer.Option(
        help="engine capacity, req/s, for the synthetic traces' loads (default: measure it)")] = None,
    fit_loads: Annotated[str, typer.Option(
        help="loads (x capacity) the synthetic fit trace ramps through")] = _DEFAULT_FIT_LOADS,
    holdout_load: Annotated[float, typer.Option(
        help="load (x capacity) of the synthetic held-out trace")] = DEFAULT_HOLDOUT_LOAD,
    holdout_cv: Annotated[float, typer.Option(
        help="inter-arrival CV of the synthetic held-out trace (Gamma)")] = DEFAULT_HOLDOUT_CV,
    fit_speedups: Annotated[str | None, typer.Option(
        help="per round, replay the fit piece this many times faster than --time-scale, so the fit spans "
             "lighter and heavier load than the held-out replay (default: with --fit-trace, 0.5 to 4, "
             "geometric; else 1)")] = None,
    max_prompt_tokens: Annotated[int | None, typer.Option(help="clip prompts of file traces")] = None,
    max_output_tokens: Annotated[int | None, typer.Option(help="clip outputs of file traces")] = None,
    fit_target: Annotated[Literal["period_s", "step_s"], typer.Option(
        help="fit the step's start-to-start period (default) or Engine.step's own time")] = "period_s",
    out: Annotated[str | None, typer.Option(help="write the report as JSON to this file")] = None,
) -> None:
    _run("calibrate", locals())


def _engine(args: Any) -> Any:
    import torch

    from .engine import Engine
    from .model import ModelConfig

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = ModelConfig.preset(args.preset, dtype=args.dtype, seed=args.seed)
    return Engine(model, _scheduler_config(args), device=args.device, scheduler=args.scheduler)


def _scheduler_config(args: Any) -> Any:
    from ..config import SchedulerConfig

    return SchedulerConfig(
        num_gpu_blocks=args.num_gpu_blocks, block_size=args.block_size, num_cpu_blocks=args.num_cpu_blocks,
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
        policy=args.policy, preemption_mode=args.preemption_mode)


def run_generate(args: Any) -> dict[str, Any]:
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


def run_serve(args: Any, fit: bool = False) -> dict[str, Any]:
    trace = resolve(args.trace, format=args.format)
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
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidArgumentError(f"{name} must be a comma-separated list of numbers, got {text!r}",
                                   field=name, value=text) from None


def run_calibrate(args: Any) -> Any:
    """``calibrate`` with the parsed options; returns the ``CalibrationReport``."""
    from .calibrate import calibrate

    fit = resolve(args.fit_trace, format=args.format) if args.fit_trace else None
    hold = resolve(args.holdout_trace, format=args.format) if args.holdout_trace else None
    sched = _scheduler_config(args)
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


def _print(args: Any, result: Any) -> None:
    """Write the result as JSON to ``--out`` if given, and print it (as JSON with ``--json``)."""
    if args.command == "calibrate":
        payload, text = result.to_dict(), result.format
    else:
        report = result.pop("_report", None)
        payload = json_ready(result)
        text = partial(_text, args.command, result, report)
    if getattr(args, "out", None):
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=2)
    print(json.dumps(payload, indent=2) if args.json else text())


def _text(command: str, result: dict[str, Any], report: Any) -> str:
    t = result["timings"]
    share = f"scheduler {100 * t['scheduler_share']:.2f}% of step time ({t['steps']} steps)"
    if command == "generate":
        return (f"{result['preset']} ({result['parameters'] / 1e6:.1f}M params) on {result['device']}, "
                f"{result['scheduler']} scheduler: {result['output_tokens']} tokens in {result['wall_s']:.2f} s = "
                f"{result['output_tokens_per_s']:.1f} output tok/s; {share}")
    assert report is not None
    lines = [report.format()]
    if "cost_model" in result:
        c, q = result["cost_model"], result["fit"]
        lines.append(f"period_s = {c['c0']:.3e} + {c['c1']:.3e}*prefill_tokens + {c['c2']:.3e}*decode_seqs"
                     f" + {c['c3']:.3e}*kv_tokens   (r2 {q['r2']:.3f}, {int(q['num_steps'])} steps)")
    return "\n".join(lines)


_COMMANDS: dict[str, Callable[[Any], Any]] = {
    "generate": run_generate,
    "serve": lambda args: run_serve(args, fit=args.fit),
    "calibrate": run_calibrate,
}


def cli_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``halffull engine``: runs ``app`` on ``argv`` (default
    ``sys.argv[1:]``) and returns the process exit code (2 for a usage or halffull error)."""
    try:
        app(args=None if argv is None else list(argv), prog_name="halffull engine")
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(cli_main())
