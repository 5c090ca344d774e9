"""The ``halffull`` command line (needs the ``cli`` extra: typer, rich, matplotlib).

- ``halffull simulate``: with no arguments, the built-in ``default`` trace on the default
  cluster, comparing the engine policies at one load; a table, and a plot in ``results/``.
  With ``--policy`` one run; ``--trace PATH --replicas 8 --policy larry --router sal
  --model llama-3-8b --gpu h100 --load 0.9`` picks everything.
- ``halffull sweep``: traces x replicas x policies x routers x loads x seeds, checked before
  the first run, on every core (``--workers``) or a Ray cluster (``--ray``), each run saved as
  it finishes (``--resume DIR`` finishes an interrupted sweep); then a table and plots.
- ``halffull report DIR``: tables and plots from a saved sweep.
- ``halffull engine ...``: the torch engine loop (``halffull.engine.cli``, a typer group).
- ``halffull calibrate``: fit the simulator's linear cost model on the engine, check it on a
  held-out trace (the same command as ``halffull engine calibrate``).
- Traces (``--trace``) are named as ``halffull.traces.resolve`` takes them: a file, a
  built-in name or ``builtin:NAME`` (an existing file wins over a built-in name).
- ``halffull presets``: the model/GPU presets and their derived KV capacity.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .engine import cli as engine_cli
from .errors import HalffullError
from .traces import resolve

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])
console = Console(width=max(Console().width, 160))

DEFAULT_LOAD = 1.2
DEFAULT_REPLICAS = 4
DEFAULT_ROUTER = "round_robin"
# SJF needs predictions; the default comparison gives it a rough one (true length times
# lognormal noise, sigma 0.5: typically off by a factor of 1.6), and says so.
DEFAULT_PREDICTOR = "noisy:0.5"
PREDICTOR_HELP = "Output-length predictor seen by sjf and routers: none, oracle, or noisy:SIGMA."

_COLUMNS = [
    ("policy", "policy", "{}"),
    ("router", "router", "{}"),
    ("load", "load", "{:.2f}"),
    ("ttft_mean", "TTFT mean s", "{:.3f}"),
    ("ttft_p50", "TTFT p50 s", "{:.3f}"),
    ("ttft_p99", "TTFT p99 s", "{:.3f}"),
    ("ttft_p999", "TTFT p99.9 s", "{:.3f}"),
    ("ttft_max", "TTFT max s", "{:.3f}"),
    ("starved_share", "starved", "{:.2%}"),
    ("tpot_p99", "TPOT p99 ms", "ms"),
    ("e2e_mean", "e2e mean s", "{:.2f}"),
    ("e2e_p99", "e2e p99 s", "{:.2f}"),
    ("e2e_max", "e2e max s", "{:.2f}"),
    ("throughput_tokens_per_s", "tok/s", "{:,.0f}"),
    ("preemptions_per_request", "preempt", "{:.2f}"),
    ("goodput_share", "SLO met", "{:.1%}"),
    ("num_rejected", "rej", "{}"),
    ("num_truncated", "trunc", "{}"),
]


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if spec == "ms":
        return f"{1000 * value:.1f}"
    return spec.format(value)


def _table(rows: list[dict[str, Any]], title: str) -> Table:
    # Columns that are the same in every row go in the title instead.
    cols = [c for c in _COLUMNS if c[0] not in ("router", "load") or len({r.get(c[0]) for r in rows}) > 1]
    t = Table(title=title)
    for key, head, _ in cols:
        if key in ("policy", "router"):               # names are never cut
            t.add_column(head, justify="left", min_width=max(len(str(r.get(key))) for r in rows), no_wrap=True)
        else:
            t.add_column(head, justify="right")
    for r in rows:
        t.add_row(*[_fmt(r.get(k), spec) for k, _, spec in cols])
    return t


def _fail(e: Exception) -> None:
    console.print(f"[red]error:[/red] {type(e).__name__}: {e}")
    raise typer.Exit(2)


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _loads(text: str) -> list[float]:
    """``0.5:1.2:0.1`` (start:stop:step, stop included) or ``0.5,0.9,1.1``."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            n = int(math.floor((stop - start) / step + 1e-9)) + 1
            return [round(start + i * step, 10) for i in range(n)]
        return [float(x) for x in _split(text)]
    except ValueError:
        raise typer.BadParameter(f"loads must be start:stop:step or a comma list, got {text!r}") from None


def _predictor(text: str) -> str | None:
    return None if text.strip().lower() == "none" else text.strip()


def _engine_opts(settings: list[str] | None = None, problems: list[str] | None = None,
                 **opts: float | None) -> dict[str, Any]:
    """The engine settings given on the command line (the others keep their defaults):
    ``--engine key=value`` (repeatable; checked against ``SchedulerConfig``'s fields and
    typed as they are) and the named ``--larry-*`` options. Problems go to ``problems``
    when given, else raise ``BadParameter``."""
    from .sweep import parse_engine_setting

    out = {k: v for k, v in opts.items() if v is not None}
    collect, problems = problems, []
    for text in settings or []:
        try:
            key, value = parse_engine_setting(text)
            out[key] = value
        except HalffullError as e:
            problems += list(getattr(e, "problems", None) or [str(e)])
    if problems and collect is not None:
        collect += problems
    elif problems:
        raise typer.BadParameter("; ".join(problems), param_hint="--engine")
    return out


ENGINE_HELP = ("Engine setting key=value (repeatable), one of SchedulerConfig's fields: num_gpu_blocks, block_size, "
               "num_cpu_blocks, max_num_seqs, max_num_batched_tokens, preemption_mode, watermark, larry_alpha, "
               "larry_load, sjf_aging, semantics, max_model_len, long_prefill_token_threshold, reserve_full_prompt, "
               "enable_prefix_caching, larry_deadline, larry_slack.")


@app.command()
def simulate(
    trace: str | None = typer.Option(None, help="Trace file (Azure/Mooncake/BurstGPT/halffull) or built-in name; "
                                     "default: built-in 'default'."),
    replicas: int = typer.Option(DEFAULT_REPLICAS, help="Number of engine replicas."),
    policy: str | None = typer.Option(None, help="Engine policy; "
                                      "default: compare fcfs,no_preempt,sjf,larry,oracle_srpt."),
    router: str = typer.Option(DEFAULT_ROUTER, help="Router policy."),
    model: str | None = typer.Option(None, help="Model preset, e.g. llama-3-8b."),
    gpu: str | None = typer.Option(None, help="GPU preset, e.g. h100, a100, 4xh100."),
    preset: str | None = typer.Option(None, help="model/gpu preset, e.g. llama-3-8b/h100."),
    load: float | None = typer.Option(None, help="Arrival rate as a multiple of measured capacity "
                                      f"(default {DEFAULT_LOAD} unless --rate-scale)."),
    rate_scale: float | None = typer.Option(None, help="Multiply the trace's own arrival rate instead."),
    seed: int = typer.Option(0),
    engine: list[str] | None = typer.Option(None, "--engine", help=ENGINE_HELP),
    snapshot_interval: float | None = typer.Option(None, help="Push replica snapshots to the router "
                                                   "every this many seconds."),
    predictor: str = typer.Option(DEFAULT_PREDICTOR, help=PREDICTOR_HELP),
    max_output_tokens: int = typer.Option(2048, help="The client's cap on output tokens (no_preempt reserves it)."),
    slo_ttft: float = typer.Option(2.0, help="SLO on time to first token (s) for goodput."),
    slo_tpot: float = typer.Option(0.1, help="SLO on time per output token (s) for goodput."),
    larry_alpha: float | None = typer.Option(None, help="LARRY's alpha (tokens/s)."),
    larry_slack: float | None = typer.Option(None, help="larry_slack's slack (default 0.75)."),
    larry_deadline: float | None = typer.Option(None, help="larry_tail's deadline in seconds (default 30)."),
    sal_beta: float | None = typer.Option(None, help="Fix SAL's beta (default: learned)."),
    out: Path = typer.Option(Path("results"), help="Directory for the JSON summary, per-request tables and plot."),
    json_out: bool = typer.Option(False, "--json", help="Print the summaries as JSON."),
) -> None:
    """Simulate one run, or compare the engine policies at one load; write the summary
    (JSON), each run's per-request table (Parquet or CSV) and a plot to --out."""
    from . import plots
    from ._util import json_ready
    from .sim import DEFAULT_POLICIES
    from .sim import simulate as run
    from .sweep import write_requests

    if load is None and rate_scale is None:
        load = DEFAULT_LOAD
    policies = [policy] if policy else list(DEFAULT_POLICIES)
    settings = _engine_opts(engine, larry_alpha=larry_alpha, larry_slack=larry_slack, larry_deadline=larry_deadline)
    rows, results = [], []
    try:
        tr = resolve(trace)
        for p in policies:
            res = run(tr, replicas=replicas, policy=p, router=router, preset=preset, model=model, gpu=gpu,
                      load=load, rate_scale=rate_scale, seed=seed, snapshot_interval=snapshot_interval,
                      record_steps=False, predictor=_predictor(predictor), sal_beta=sal_beta,
                      max_output_tokens=max_output_tokens, **settings)
            s = res.summary(slo_ttft=slo_ttft, slo_tpot=slo_tpot)
            s["wall_time_s"] = res.wall_time_s
            s["engine"] = res.config["engine"]
            rows.append(s)
            results.append(res)
    except HalffullError as e:
        _fail(e)
    if json_out:
        print(json.dumps(json_ready(rows), indent=2, default=str))
        return
    first = rows[0]
    cap = first.get("capacity_requests_per_s")
    where = f"load {load:g} x capacity {cap:.1f} req/s" if cap else f"rate x{rate_scale:g}"
    given = "".join(f", {k}={v}" for k, v in settings.items())
    title = f"{tr.name}: {len(tr)} requests, {replicas} x {first['preset']}{given}, router {router}, {where}"
    console.print(_table(rows, title))
    console.print(f"[dim]simulated in {sum(r['wall_time_s'] for r in rows):.2f} s wall; "
                  f"SLO: TTFT <= {first['slo_ttft']} s, TPOT <= {first['slo_tpot']} s; starved: TTFT > "
                  f"{first['starvation_threshold_s']:.3g} s (10x the median service time); "
                  f"predictor: {predictor}[/dim]")
    lost = sum(r["num_truncated"] for r in rows)
    if lost:
        console.print(f"[yellow]{lost} request(s) truncated: prompt plus true output exceed the KV cache "
                      "(status 'truncated' in the per-request table, with the reason)[/yellow]")
    stem = f"simulate_{tr.name}_{replicas}r_{router}_{policy or 'policies'}_{load if load is not None else rate_scale}"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(json_ready(rows), indent=2, default=str))
    tables = [write_requests(res.requests, out / f"{stem}_{res.config['policy']}_requests") for res in results]
    pairs = [(s, res.requests) for s, res in zip(rows, results, strict=True)]
    path = plots.simulate_figure(pairs, out / f"{stem}.png", title=title)
    console.print(f"summary: {out / (stem + '.json')}  plot: {path}  per-request: "
                  + ", ".join(str(t) for t in tables))


def _csv_opt(value: str | None, cast: Any) -> tuple[Any, ...] | None:
    if value is None:
        return None
    try:
        return tuple(cast(x) for x in _split(value))
    except ValueError:
        raise typer.BadParameter(f"expected a comma list, got {value!r}") from None


@app.command()
def sweep(
    trace: list[str] | None = typer.Option(None, "--trace", help="Trace file or built-in name (repeatable)."),
    policies: str | None = typer.Option(None, help="Comma-separated engine policies [fcfs,larry]."),
    routers: str | None = typer.Option(None, help="Comma-separated routers [round_robin,sal]."),
    loads: str | None = typer.Option(None, help="start:stop:step (inclusive) or a comma list [0.5:1.2:0.1]."),
    replicas: str | None = typer.Option(None, help=f"Replica counts, comma-separated [{DEFAULT_REPLICAS}]."),
    seeds: str | None = typer.Option(None, help="Seeds, comma-separated [0]."),
    model: str | None = typer.Option(None),
    gpu: str | None = typer.Option(None),
    preset: str | None = typer.Option(None),
    engine: list[str] | None = typer.Option(None, "--engine", help=ENGINE_HELP),
    snapshot_interval: float | None = typer.Option(None, help="Push replica snapshots every this many seconds."),
    predictor: str | None = typer.Option(None, help=PREDICTOR_HELP + f" [{DEFAULT_PREDICTOR}]"),
    max_output_tokens: int | None = typer.Option(None, help="The client's cap on output tokens [2048]."),
    slo_ttft: float | None = typer.Option(None, help="SLO on TTFT (s) [2.0]."),
    slo_tpot: float | None = typer.Option(None, help="SLO on TPOT (s) [0.1]."),
    larry_alpha: float | None = typer.Option(None, help="LARRY's alpha (tokens/s)."),
    larry_slack: float | None = typer.Option(None, help="larry_slack's slack (default 0.75)."),
    larry_deadline: float | None = typer.Option(None, help="larry_tail's deadline in seconds (default 30)."),
    sal_beta: float | None = typer.Option(None, help="Fix SAL's beta (default: learned)."),
    save_requests: bool | None = typer.Option(None, "--save-requests/--no-save-requests",
                                              help="Also save each run's per-request table [no]."),
    workers: int | None = typer.Option(None, help="Processes (default: every core); 1 runs in this process."),
    ray: str | None = typer.Option(None, help="Run on Ray instead: auto (a running cluster), local, or ADDRESS "
                                   "(needs the ray extra)."),
    out: Path | None = typer.Option(None, help="Folder for the results [results/]; must not hold another sweep."),
    resume: Path | None = typer.Option(None, help="Finish the sweep saved in this folder (runs what is missing)."),
) -> None:
    """Sweep traces x replicas x policies x routers x loads x seeds; every run is checked first,
    saved as it finishes, and the table and plots are written at the end."""
    from .sweep import SWEEP_FILE, SweepSpec, build_report, check_runs, run_sweep

    early: list[str] = []

    def parse(name: str, fn: Any, text: str | None) -> Any:
        try:
            return None if text is None else fn(text)
        except typer.BadParameter as e:
            early.append(f"--{name}: {e.message}")
            return None

    given: dict[str, Any] = {
        "traces": tuple(trace) if trace else None, "policies": _csv_opt(policies, str),
        "routers": _csv_opt(routers, str), "loads": parse("loads", lambda t: tuple(_loads(t)), loads),
        "replicas": parse("replicas", lambda t: _csv_opt(t, int), replicas),
        "seeds": parse("seeds", lambda t: _csv_opt(t, int), seeds), "preset": preset, "model": model,
        "gpu": gpu, "snapshot_interval": snapshot_interval,
        "predictor": None if predictor is None else predictor.strip(),
        "max_output_tokens": max_output_tokens, "slo_ttft": slo_ttft, "slo_tpot": slo_tpot, "sal_beta": sal_beta,
        "save_requests": save_requests,
    }
    settings = _engine_opts(engine, early, larry_alpha=larry_alpha, larry_slack=larry_slack,
                            larry_deadline=larry_deadline)
    if settings:
        given["engine"] = settings
    try:
        if resume is not None:
            if out is not None and out != resume:
                raise typer.BadParameter("--resume DIR writes to DIR; drop --out", param_hint="--out")
            doc = json.loads((resume / SWEEP_FILE).read_text()) if (resume / SWEEP_FILE).exists() else {}
            if "spec" not in doc:
                raise typer.BadParameter(f"{resume / SWEEP_FILE} is missing or was not written by halffull sweep",
                                         param_hint="--resume")
            saved = SweepSpec.from_dict(doc["spec"])
            base = saved.to_dict()
            differ = [k for k, v in given.items() if v is not None and SweepSpec.from_dict({**base, k: v}).to_dict()[k]
                      != base[k]]
            if differ:
                raise typer.BadParameter(f"{', '.join(differ)} differ from the sweep saved in {resume}; "
                                         "drop them to resume it as it was", param_hint="--resume")
            spec, folder = saved, resume
        else:
            spec = SweepSpec(**{k: v for k, v in given.items() if v is not None})
            folder = out or Path("results")
        runs = spec.runs()
        traces = check_runs(runs, {r.trace: r.trace for r in runs}, early)    # everything, before any run
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("ETA"), TimeRemainingColumn(), console=console) as prog:
            task = prog.add_task("simulating", total=len(runs))

            def tick(done: int, total: int, row: dict[str, Any]) -> None:
                mark = "" if row["status"] == "ok" else " [red]failed[/red]"
                prog.update(task, completed=done,
                            description=f"{row.get('policy')}/{row.get('router')} load {row.get('load')}{mark}")

            outcome = run_sweep(runs, traces=traces, out=folder, workers=workers, ray=ray, resume=resume is not None,
                                progress=tick, meta={"spec": spec.to_dict()})
    except HalffullError as e:
        _fail(e)
    ok = [r for r in outcome.rows if r["status"] == "ok"]
    if ok:
        console.print(_table(ok, f"sweep: {', '.join(spec.traces)}; {len(ok)} of {outcome.total} runs"))
    for r in outcome.rows:
        if r["status"] != "ok":
            console.print(f"[red]failed[/red] {r.get('policy')}/{r.get('router')} load {r.get('load')}: {r['error']}")
    paths = build_report(folder) if ok else []
    console.print(f"results: {outcome.table}; journal: {folder / 'runs.jsonl'}; report: "
                  + ", ".join(str(p) for p in paths))
    if outcome.interrupted or outcome.missing:
        console.print(f"[yellow]{outcome.missing} of {outcome.total} runs missing "
                      f"({'interrupted' if outcome.interrupted else 'failed'}); finish with: "
                      f"halffull sweep --resume {folder}[/yellow]")
        raise typer.Exit(130 if outcome.interrupted else 1)


@app.command()
def report(folder: Path = typer.Argument(..., help="A sweep's output folder."),
           out: Path | None = typer.Option(None, help="Where to write (default: the folder itself).")) -> None:
    """Tables (report.md) and plots from a saved sweep."""
    from .sweep import build_report

    try:
        paths = build_report(folder, out)
    except HalffullError as e:
        _fail(e)
    console.print("wrote " + ", ".join(str(p) for p in paths))


@app.command()
def presets() -> None:
    """List the model/GPU presets with their derived KV capacity."""
    from .sim import presets as all_presets

    t = Table(title="presets (sources: rust/sim/cost.rs)")
    for head in ("preset", "TP", "params", "KV bytes/token", "peak TFLOPS", "HBM TB/s", "GPU blocks (16 tok)"):
        t.add_column(head)
    for p in all_presets():
        t.add_row(p["name"], str(p["tp"]), f"{p['params'] / 1e9:.2f}B", f"{p['kv_bytes_per_token']:,.0f}",
                  f"{p['peak_flops'] / 1e12:,.0f}", f"{p['mem_bw'] / 1e12:.2f}", f"{p['num_gpu_blocks']:,}")
    console.print(t)


app.add_typer(engine_cli.app, name="engine",
              help="The torch engine loop (halffull.engine.cli): generate, serve, calibrate.")
app.command("calibrate", help="Fit the simulator's linear cost model on the engine; check it on a "
                              "held-out trace.")(engine_cli.calibrate)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``halffull`` script."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="halffull")


if __name__ == "__main__":  # pragma: no cover
    main()
