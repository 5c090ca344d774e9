"""The ``halffull`` command line (needs the ``cli`` extra: typer, rich, matplotlib).

- ``halffull simulate``: with no arguments, the built-in ``default`` trace on the default
  cluster, comparing the engine policies at one load; a table, and a plot in ``results/``.
  With ``--policy`` one run; ``--trace PATH --replicas 8 --policy larry --router sal
  --model llama-3-8b --gpu h100 --load 0.9`` picks everything.
- ``halffull sweep``: policies x routers x loads, with a progress bar; CSV, JSON and plots.
- ``halffull engine ...``: the torch engine loop (``halffull.engine.cli``, a typer group).
- ``halffull calibrate``: fit the simulator's linear cost model on the engine, check it on a
  held-out trace (the same command as ``halffull engine calibrate``).
- Traces (``--trace``) are named as ``halffull.traces.resolve`` takes them: a file, a
  built-in name or ``builtin:NAME`` (an existing file wins over a built-in name).
- ``halffull presets``: the model/GPU presets and their derived KV capacity.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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


def _engine_opts(**opts: float | None) -> dict[str, Any]:
    """The engine settings given on the command line (the others keep their defaults)."""
    return {k: v for k, v in opts.items() if v is not None}


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
    snapshot_interval: float | None = typer.Option(None, help="Push replica snapshots to the router "
                                                   "every this many seconds."),
    predictor: str = typer.Option(DEFAULT_PREDICTOR, help=PREDICTOR_HELP),
    larry_alpha: float | None = typer.Option(None, help="LARRY's alpha (tokens/s)."),
    larry_slack: float | None = typer.Option(None, help="larry_slack's slack (default 0.75)."),
    larry_deadline: float | None = typer.Option(None, help="larry_tail's deadline in seconds (default 30)."),
    sal_beta: float | None = typer.Option(None, help="Fix SAL's beta (default: learned)."),
    out: Path = typer.Option(Path("results"), help="Directory for the plot and JSON."),
    json_out: bool = typer.Option(False, "--json", help="Print the summaries as JSON."),
) -> None:
    """Simulate one run, or compare the engine policies at one load."""
    from . import plots
    from .sim import DEFAULT_POLICIES
    from .sim import simulate as run

    if load is None and rate_scale is None:
        load = DEFAULT_LOAD
    policies = [policy] if policy else list(DEFAULT_POLICIES)
    rows = []
    try:
        tr = resolve(trace)
        for p in policies:
            res = run(tr, replicas=replicas, policy=p, router=router, preset=preset, model=model, gpu=gpu,
                      load=load, rate_scale=rate_scale, seed=seed, snapshot_interval=snapshot_interval,
                      record_steps=False, predictor=_predictor(predictor), sal_beta=sal_beta,
                      **_engine_opts(larry_alpha=larry_alpha, larry_slack=larry_slack,
                                                   larry_deadline=larry_deadline))
            s = res.summary()
            s["wall_time_s"] = res.wall_time_s
            rows.append(s)
    except HalffullError as e:
        _fail(e)
    if json_out:
        print(json.dumps(rows, indent=2, default=str))
        return
    first = rows[0]
    cap = first.get("capacity_requests_per_s")
    where = f"load {load:g} x capacity {cap:.1f} req/s" if cap else f"rate x{rate_scale:g}"
    console.print(_table(rows, f"{tr.name}: {len(tr)} requests, {replicas} x {first['preset']}, "
                               f"router {router}, {where}"))
    console.print(f"[dim]simulated in {sum(r['wall_time_s'] for r in rows):.2f} s wall; "
                  f"SLO: TTFT <= {first['slo_ttft']} s, TPOT <= {first['slo_tpot']} s; starved: TTFT > "
                  f"{first['starvation_threshold_s']:.3g} s (10x the median service time); "
                  f"predictor: {predictor}[/dim]")
    if len(rows) > 1:
        stem = f"simulate_{tr.name}_{router}_{load if load is not None else rate_scale}"
        path = plots.policy_bars(rows, out / f"{stem}.png", title=f"{tr.name}: TTFT per policy ({where})")
        (out / f"{stem}.json").write_text(json.dumps(rows, indent=2, default=str))
        console.print(f"plot: {path}  data: {out / (stem + '.json')}")


@app.command()
def sweep(
    trace: str | None = typer.Option(None, help="Trace file or built-in name."),
    policies: str = typer.Option("fcfs,larry", help="Comma-separated engine policies."),
    routers: str = typer.Option("round_robin,sal", help="Comma-separated routers."),
    loads: str = typer.Option("0.5:1.2:0.1", help="start:stop:step (inclusive) or a comma list."),
    replicas: int = typer.Option(DEFAULT_REPLICAS),
    model: str | None = typer.Option(None),
    gpu: str | None = typer.Option(None),
    preset: str | None = typer.Option(None),
    seed: int = typer.Option(0),
    snapshot_interval: float | None = typer.Option(None),
    predictor: str = typer.Option(DEFAULT_PREDICTOR, help=PREDICTOR_HELP),
    larry_alpha: float | None = typer.Option(None, help="LARRY's alpha (tokens/s)."),
    larry_slack: float | None = typer.Option(None, help="larry_slack's slack (default 0.75)."),
    larry_deadline: float | None = typer.Option(None, help="larry_tail's deadline in seconds (default 30)."),
    sal_beta: float | None = typer.Option(None, help="Fix SAL's beta (default: learned)."),
    out: Path = typer.Option(Path("results"), help="Directory for CSV, JSON and plots."),
) -> None:
    """Sweep policies x routers x loads; write CSV, JSON and plots."""
    from . import plots
    from .sim import simulate as run

    ps, rs, ls = _split(policies), _split(routers), _loads(loads)
    rows: list[dict[str, Any]] = []
    try:
        tr = resolve(trace)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as prog:
            task = prog.add_task("simulating", total=len(ps) * len(rs) * len(ls))
            for p in ps:
                for r in rs:
                    for x in ls:
                        prog.update(task, description=f"{p}/{r} load {x:g}")
                        res = run(tr, replicas=replicas, policy=p, router=r, preset=preset, model=model,
                                  gpu=gpu, load=x, seed=seed, snapshot_interval=snapshot_interval,
                                  record_steps=False, predictor=_predictor(predictor), sal_beta=sal_beta,
                                  **_engine_opts(larry_alpha=larry_alpha, larry_slack=larry_slack,
                                                   larry_deadline=larry_deadline))
                        s = res.summary()
                        s["wall_time_s"] = res.wall_time_s
                        rows.append(s)
                        prog.advance(task)
    except HalffullError as e:
        _fail(e)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"sweep_{tr.name}"
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=2, default=str))
    title = f"{tr.name}, {replicas} x {rows[0]['preset']}"
    paths = [
        plots.ttft_vs_load(rows, out / f"{stem}_ttft.png", title=f"TTFT vs load ({title})"),
        plots.throughput_vs_load(rows, out / f"{stem}_throughput.png", title=f"Throughput vs load ({title})"),
        plots.preemptions_vs_load(rows, out / f"{stem}_preemptions.png", title=f"Preemptions vs load ({title})"),
    ]
    console.print(_table(rows, title))
    console.print(f"wrote {out / (stem + '.csv')}, {out / (stem + '.json')}, " + ", ".join(map(str, paths)))


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
