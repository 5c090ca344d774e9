"""Sweeps: many simulations, checked before the first one runs, run on every core or a Ray
cluster, and saved as each one finishes.

>>> spec = SweepSpec(traces=("default",), policies=("fcfs", "larry"), routers=("round_robin",),
...                  loads=(0.6, 1.0), replicas=(2,))
>>> table = run_sweep(spec.runs(), out="results/", workers=2)    # doctest: +SKIP

- **A run** (``Run``) is one ``halffull.simulate`` call: a trace key, the keyword arguments,
  and tags (extra columns such as ``experiment``); its ``run_id`` is a hash of all three, so
  a resumed sweep knows what it already has. ``SweepSpec.runs()`` builds the grid
  traces x replicas x policies x routers x loads x seeds.
- **Checked first**: ``check_runs`` resolves every trace (files read, rows parsed), builds
  every engine configuration (``SchedulerConfig`` field names and values, ``semantics``,
  ``enable_prefix_caching`` ...), and checks router names, loads, replica counts, seeds,
  predictors, snapshot intervals and SLOs, then raises one ``SweepError`` listing every
  problem (``problems``), before anything runs.
- **Saved as it goes**, in the output folder: ``sweep.json`` (the runs), ``runs.jsonl`` (a
  journal: one line per finished run, written and flushed as it completes, the record a
  resume reads), ``results.parquet`` (with pyarrow) or ``results.csv`` (one row per run, in
  run order, rewritten from the journal as runs finish and at the end), and with
  ``save_requests`` the per-request table of each run under ``requests/``. A run that raises
  is a row with ``status="error"`` and its ``error``; the others go on. Ctrl-C keeps what
  finished. ``resume=True`` runs only the runs without an ``ok`` row (failed ones again).
- **Executors**: ``workers=1`` runs in this process; ``workers=N`` in a pool of N processes
  (default: every core); ``ray="auto"|"local"|ADDRESS`` as Ray tasks (Ray is imported only
  then; ``local`` starts a Ray instance on this machine, and a Ray already initialised is
  used as it is). Simulations are deterministic, so every executor gives the same table row
  for row (only ``wall_time_s`` differs). The pool starts its workers with ``spawn`` (no
  fork of a process that has threads), so a script calling ``run_sweep`` with ``workers > 1``
  needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _core
from . import sim as _sim
from . import traces as _traces
from ._util import json_ready
from .errors import HalffullError, SweepError

#: What a sweep folder holds (``SWEEP_FILE`` names the runs, ``JOURNAL`` the finished ones).
SWEEP_FILE = "sweep.json"
JOURNAL = "runs.jsonl"
FORMAT_VERSION = 1
#: Rewrite the results table at most this often while a sweep runs (the journal is always current).
TABLE_INTERVAL_S = 2.0

#: The percentiles of finished requests' TTFT each row keeps (``ttft_quantiles``), enough to
#: draw its CDF down to the 1-in-10,000 tail without the per-request table.
CDF_QUANTILES: tuple[float, ...] = (0.0, 0.1, 0.5, *range(1, 100), 99.5, 99.9, 99.95, 99.99, 100.0)
_SIM_PARAMS = frozenset(p for p in inspect.signature(_sim.simulate).parameters if p not in ("trace", "engine_config"))
_ENGINE_FIELDS = tuple(_core.SchedulerConfig(num_gpu_blocks=1).to_dict())


def engine_fields() -> tuple[str, ...]:
    """The engine settings a run may set (``SchedulerConfig``'s fields, ``policy`` aside)."""
    return tuple(f for f in _ENGINE_FIELDS if f != "policy")


def parse_engine_setting(text: str) -> tuple[str, Any]:
    """``"num_gpu_blocks=2048"`` -> ``("num_gpu_blocks", 2048)``, the value typed as the
    field is (int, float, bool, str; ``none`` for an optional one). ``SweepError`` naming
    the valid fields or the expected type otherwise."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key:
        raise SweepError(f"--engine takes key=value, got {text!r}", problems=(f"--engine {text!r}: not key=value",))
    defaults = _core.SchedulerConfig(num_gpu_blocks=1).to_dict()
    if key not in defaults or key == "policy":
        msg = f"unknown engine setting {key!r}; valid: {', '.join(engine_fields())}"
        raise SweepError(msg, problems=(msg,))
    default = defaults[key]
    low = value.lower()
    try:
        if isinstance(default, bool) or key in _BOOL_FIELDS:
            if low not in _BOOLS:
                raise ValueError
            return key, _BOOLS[low]
        if low in ("none", "null") and key in _OPTIONAL_FIELDS:
            return key, None
        if isinstance(default, int) or key in _INT_FIELDS:
            return key, int(value)
        if isinstance(default, float) or key in _FLOAT_FIELDS:
            return key, float(value)
        return key, value
    except ValueError:
        kind = ("true/false" if isinstance(default, bool) else
                "an int" if isinstance(default, int) or key in _INT_FIELDS else "a number")
        msg = f"engine setting {key}={value!r}: expected {kind}"
        raise SweepError(msg, problems=(msg,)) from None


_BOOLS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
_BOOL_FIELDS = frozenset({"enable_prefix_caching", "reserve_full_prompt"})
_INT_FIELDS = frozenset({"max_model_len"})
_FLOAT_FIELDS = frozenset({"watermark"})
_OPTIONAL_FIELDS = frozenset({"max_model_len", "watermark"})


# ----------------------------------------------------------------------------------------
# Runs and specs
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One simulation: ``simulate(traces[trace], **params)``, summarised with the SLOs.
    ``tags`` become columns of its row (``experiment``, ``replicate`` ...)."""

    trace: str
    params: Mapping[str, Any]
    tags: Mapping[str, Any] = field(default_factory=dict)
    slo_ttft: float = _sim.DEFAULT_SLO_TTFT
    slo_tpot: float = _sim.DEFAULT_SLO_TPOT
    save_requests: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"trace": self.trace, "params": dict(self.params), "tags": dict(self.tags),
                "slo_ttft": self.slo_ttft, "slo_tpot": self.slo_tpot, "save_requests": self.save_requests}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Run:
        return cls(trace=d["trace"], params=dict(d["params"]), tags=dict(d.get("tags", {})),
                   slo_ttft=d.get("slo_ttft", _sim.DEFAULT_SLO_TTFT), slo_tpot=d.get("slo_tpot", _sim.DEFAULT_SLO_TPOT),
                   save_requests=bool(d.get("save_requests", False)))

    @property
    def run_id(self) -> str:
        d = self.to_dict()
        d.pop("save_requests")
        text = json.dumps(json_ready(d), sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass
class SweepSpec:
    """The grid ``halffull sweep`` runs: traces x replicas x policies x routers x loads x
    seeds, each with the same engine settings, predictor, snapshot interval and SLOs."""

    traces: tuple[str, ...] = ("default",)
    policies: tuple[str, ...] = ("fcfs", "larry")
    routers: tuple[str, ...] = ("round_robin", "sal")
    loads: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2)
    replicas: tuple[int, ...] = (4,)
    seeds: tuple[int, ...] = (0,)
    preset: str | None = None
    model: str | None = None
    gpu: str | None = None
    engine: dict[str, Any] = field(default_factory=dict)
    predictor: str | None = "noisy:0.5"
    snapshot_interval: float | None = None
    sal_beta: float | None = None
    max_output_tokens: int = 2048
    slo_ttft: float = _sim.DEFAULT_SLO_TTFT
    slo_tpot: float = _sim.DEFAULT_SLO_TPOT
    save_requests: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = json_ready(asdict(self))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepSpec:
        known = {f for f in cls.__dataclass_fields__}
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**kw)

    def runs(self) -> list[Run]:
        out = []
        for tr, n, p, r, x, s in itertools.product(self.traces, self.replicas, self.policies, self.routers,
                                                   self.loads, self.seeds):
            params: dict[str, Any] = {
                "replicas": n, "policy": p, "router": r, "load": x, "seed": s,
                "predictor": self.predictor, "snapshot_interval": self.snapshot_interval,
                "sal_beta": self.sal_beta, "max_output_tokens": self.max_output_tokens,
                "record_steps": False, **self.engine,
            }
            for k in ("preset", "model", "gpu"):
                if getattr(self, k) is not None:
                    params[k] = getattr(self, k)
            out.append(Run(trace=tr, params=params, slo_ttft=self.slo_ttft, slo_tpot=self.slo_tpot,
                           save_requests=self.save_requests))
        return out


# ----------------------------------------------------------------------------------------
# Checking a sweep before it runs
# ----------------------------------------------------------------------------------------


def load_traces(refs: Iterable[Any], problems: list[str] | None = None) -> dict[str, _traces.Trace]:
    """Resolve each trace reference once (``halffull.traces.resolve``); a ``Trace`` keeps its
    name as key. Failures are appended to ``problems`` (or raised as one ``SweepError``)."""
    own = problems is None
    problems = [] if problems is None else problems
    out: dict[str, _traces.Trace] = {}
    for ref in refs:
        key = ref.name if isinstance(ref, _traces.Trace) else str(ref)
        if key in out:
            continue
        try:
            out[key] = _traces.resolve(ref)
            if len(out[key]) == 0:
                problems.append(f"trace {key!r}: it has no requests")
        except HalffullError as e:
            problems.append(f"trace {key!r}: {e}")
    if own and problems:
        raise SweepError(_problem_text(problems), problems=tuple(problems))
    return out


def check_runs(runs: Sequence[Run], traces: Mapping[str, Any],
               problems: Sequence[str] = ()) -> dict[str, _traces.Trace]:
    """Check every run before any runs; return the resolved traces by key. Raises one
    ``SweepError`` whose message (and ``problems``) lists everything wrong, after the
    ``problems`` already found (e.g. by the command line's parsing)."""
    problems = list(problems)
    if not runs:
        problems.append("the sweep has no runs")
    keys = sorted({r.trace for r in runs})
    missing = [k for k in keys if k not in traces]
    resolved = load_traces([traces[k] for k in keys if k in traces], problems)
    by_key = {k: resolved[_key(traces[k])] for k in keys if k in traces and _key(traces[k]) in resolved}
    problems += [f"trace {k!r}: not given" for k in missing]
    routers = set(_core.router_names())
    seen: set[str] = set()

    def once(msg: str) -> None:
        if msg not in seen:
            seen.add(msg)
            problems.append(msg)

    for run in runs:
        p = dict(run.params)
        for k in sorted(set(p) - _SIM_PARAMS - set(_ENGINE_FIELDS)):
            once(f"unknown setting {k!r}; simulate takes {', '.join(sorted(_SIM_PARAMS))} and the engine's "
                 f"{', '.join(engine_fields())}")
        router = p.get("router", "round_robin")
        if router not in routers:
            once(f"unknown router {router!r}; valid: {', '.join(_core.router_names())}")
        engine = {k: v for k, v in p.items() if k in _ENGINE_FIELDS}
        engine.setdefault("policy", "fcfs")
        try:
            name = _sim.preset_name(p.get("preset"), p.get("model"), p.get("gpu"))
            _sim._setup(name, p.get("cost_model"), engine)
        except HalffullError as e:
            once(str(e))
        for k in ("load", "rate_scale", "snapshot_interval", "sal_beta"):
            v = p.get(k)
            if v is not None and not _positive(v):
                once(f"{k} must be a finite number > 0, got {v!r}")
        if p.get("load") is not None and p.get("rate_scale") is not None:
            once("give load or rate_scale, not both")
        for k, lo in (("replicas", 1), ("seed", 0), ("max_output_tokens", 1), ("capacity_requests", 1)):
            v = p.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo):
                once(f"{k} must be an int >= {lo}, got {v!r}")
        try:
            _sim.predict_output_tokens(np.ones(1, dtype=np.int64), p.get("predictor"))
        except HalffullError as e:
            once(str(e))
        for k in ("slo_ttft", "slo_tpot"):
            if not _positive(getattr(run, k)):
                once(f"{k} must be a finite number > 0, got {getattr(run, k)!r}")
        tr = by_key.get(run.trace)
        if tr is not None and p.get("load") is not None and not (tr.rate > 0):
            once(f"trace {run.trace!r}: load needs arrivals that span time (use rate_scale)")
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        problems.append(f"{len(ids) - len(set(ids))} runs are repeated (same trace, settings and tags)")
    if problems:
        raise SweepError(_problem_text(problems), problems=tuple(problems))
    return by_key


def _key(ref: Any) -> str:
    return ref.name if isinstance(ref, _traces.Trace) else str(ref)


def _positive(v: Any) -> bool:
    return (not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))
            and math.isfinite(float(v)) and float(v) > 0)


def _problem_text(problems: Sequence[str]) -> str:
    head = f"the sweep has {len(problems)} problem{'s' if len(problems) != 1 else ''}; nothing ran:"
    return "\n".join([head, *(f"  - {p}" for p in problems)])


# ----------------------------------------------------------------------------------------
# Running one simulation (in a worker)
# ----------------------------------------------------------------------------------------

_WORKER_TRACES: dict[str, _traces.Trace] = {}


def _init_worker(traces: Mapping[str, _traces.Trace]) -> None:
    import signal

    # The parent decides what Ctrl-C does (it stops the pool); a worker just finishes or is ended.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_TRACES.clear()
    _WORKER_TRACES.update(traces)


def _pool_task(index: int, run: Run) -> tuple[int, dict[str, Any], dict[str, np.ndarray] | None]:
    return index, *execute(run, _WORKER_TRACES[run.trace])


def _ray_task(index: int, run: Run, trace: _traces.Trace) -> tuple[int, dict[str, Any], dict[str, np.ndarray] | None]:
    return index, *execute(run, trace)


def execute(run: Run, trace: _traces.Trace) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    """Run one simulation; its row (``status`` ``ok`` or ``error``) and, when the run asks
    for it, its per-request table. An exception becomes an ``error`` row, not a raise."""
    row = base_row(run)
    row["trace_name"] = trace.name
    try:
        res = _sim.simulate(trace, **dict(run.params))
        summary = res.summary(slo_ttft=run.slo_ttft, slo_tpot=run.slo_tpot)
    except Exception as e:  # noqa: BLE001 - recorded in the row; the sweep goes on
        row.update(status="error", error=f"{type(e).__name__}: {e}")
        return row, None
    row.update({k: v for k, v in summary.items()})
    r = res.requests
    ttft = r["ttft"][r["status"] == "finished"]
    row["ttft_quantiles"] = [float(v) for v in np.percentile(ttft, CDF_QUANTILES)] if ttft.size else []
    row["wall_time_s"] = res.wall_time_s
    return row, (res.requests if run.save_requests else None)


def base_row(run: Run) -> dict[str, Any]:
    """The columns every row has, ``ok`` or not: ids, tags, the run's settings."""
    row: dict[str, Any] = {"run_id": run.run_id, "trace": run.trace, "status": "ok", "error": ""}
    row.update(run.tags)
    row.update({k: v for k, v in run.params.items() if k not in ("record_steps", "cost_model")})
    row.update(slo_ttft=run.slo_ttft, slo_tpot=run.slo_tpot)
    return row


# ----------------------------------------------------------------------------------------
# The output folder
# ----------------------------------------------------------------------------------------


def has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


class Store:
    """A sweep's folder: ``sweep.json``, the ``runs.jsonl`` journal, the results table and
    the per-request tables (see the module docstring)."""

    def __init__(self, out: str | Path, runs: Sequence[Run], *, resume: bool = False, overwrite: bool = False,
                 meta: Mapping[str, Any] | None = None) -> None:
        self.dir = Path(out)
        self.runs = list(runs)
        self.index = {r.run_id: i for i, r in enumerate(self.runs)}
        self.rows: dict[str, dict[str, Any]] = {}
        self.parquet = has_pyarrow()
        self._last_table = 0.0
        sweep_file = self.dir / SWEEP_FILE
        if sweep_file.exists() and not (resume or overwrite):
            raise SweepError(f"{self.dir} already holds a sweep; resume it (--resume {self.dir}) or choose "
                             "another output folder", problems=(f"{sweep_file} exists",))
        if resume:
            if not sweep_file.exists():
                raise SweepError(f"nothing to resume: {sweep_file} is missing", problems=(f"{sweep_file} missing",))
            saved = {Run.from_dict(d).run_id for d in json.loads(sweep_file.read_text())["runs"]}
            if saved != set(self.index):
                msg = (f"{self.dir} holds another sweep ({len(saved - set(self.index))} of its runs are not in this "
                       f"one, {len(set(self.index) - saved)} of this one's are not in it)")
                raise SweepError(msg, problems=(msg,))
            self.rows = {k: v for k, v in read_journal(self.dir).items() if k in self.index}
        self.dir.mkdir(parents=True, exist_ok=True)
        if overwrite and not resume:
            for name in (JOURNAL, "results.csv", "results.parquet"):
                (self.dir / name).unlink(missing_ok=True)
        doc = {"format": FORMAT_VERSION, "halffull": _core.__version__, **(meta or {}),
               "runs": [r.to_dict() for r in self.runs]}
        _atomic_write(sweep_file, json.dumps(json_ready(doc), indent=1, default=str))
        self._journal = open(self.dir / JOURNAL, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def done(self) -> set[str]:
        return {k for k, r in self.rows.items() if r.get("status") == "ok"}

    def add(self, row: dict[str, Any], requests: Mapping[str, np.ndarray] | None) -> None:
        """Record one finished run: the per-request table first, then its journal line
        (flushed and synced), then (at most every ``TABLE_INTERVAL_S``) the results table."""
        if requests is not None:
            row["requests_file"] = str(write_requests(requests, self.dir / "requests" / row["run_id"]).name)
        self.rows[row["run_id"]] = row
        self._journal.write(json.dumps(json_ready(row), default=str) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())
        if time.monotonic() - self._last_table > TABLE_INTERVAL_S:
            self.write_table()

    def table(self) -> list[dict[str, Any]]:
        """The rows in run order."""
        return sorted(self.rows.values(), key=lambda r: self.index.get(r["run_id"], len(self.index)))

    def write_table(self) -> Path:
        self._last_table = time.monotonic()
        return write_table(self.table(), self.dir / "results", parquet=self.parquet)

    def close(self) -> Path:
        self._journal.close()
        return self.write_table()


def read_journal(folder: str | Path) -> dict[str, dict[str, Any]]:
    """The journal's rows by ``run_id``, the last line of a run winning; a line cut short
    (the process was killed while writing it) is skipped."""
    path = Path(folder) / JOURNAL
    rows: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "run_id" in row:
            rows[row["run_id"]] = row
    return rows


def load_results(folder: str | Path) -> tuple[list[Run], list[dict[str, Any]]]:
    """A sweep folder's runs (from ``sweep.json``) and its rows in run order (from the journal)."""
    folder = Path(folder)
    sweep_file = folder / SWEEP_FILE
    if not sweep_file.exists():
        raise SweepError(f"{folder} holds no sweep ({SWEEP_FILE} is missing)", problems=(f"{sweep_file} missing",))
    runs = [Run.from_dict(d) for d in json.loads(sweep_file.read_text())["runs"]]
    order = {r.run_id: i for i, r in enumerate(runs)}
    rows = [r for r in read_journal(folder).values() if r["run_id"] in order]
    rows.sort(key=lambda r: order[r["run_id"]])
    return runs, rows


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _column_values(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {}
    for r in rows:
        for k in r:
            cols.setdefault(k, [])
    for k, vals in cols.items():
        vals.extend(json_ready(r.get(k)) if isinstance(r.get(k), (list, tuple, dict)) else r.get(k) for r in rows)
        kinds = {type(v) for v in vals if v is not None}
        if len(kinds) > 1 and not kinds <= {int, float}:    # mixed (e.g. "learned" and 1.5): text
            cols[k] = [None if v is None else str(v) for v in vals]
        elif kinds & {dict, list}:
            cols[k] = [None if v is None else json.dumps(v) for v in vals]
        elif kinds == {int, float}:
            cols[k] = [None if v is None else float(v) for v in vals]
    return cols


def write_table(rows: Sequence[Mapping[str, Any]], stem: Path, *, parquet: bool | None = None) -> Path:
    """``rows`` as ``stem.parquet`` (pyarrow) or ``stem.csv``, written atomically."""
    parquet = has_pyarrow() if parquet is None else parquet
    cols = _column_values(rows)
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = stem.with_name(stem.name + ".parquet")
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(pa.table(cols), tmp)
        os.replace(tmp, path)
        return path
    import csv
    import io

    path = stem.with_name(stem.name + ".csv")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(list(cols))
    for i in range(len(rows)):
        w.writerow(["" if c[i] is None else c[i] for c in cols.values()])
    _atomic_write(path, buf.getvalue())
    return path


def write_requests(requests: Mapping[str, np.ndarray], stem: Path, *, parquet: bool | None = None) -> Path:
    """A run's per-request table (``SimResult.requests``) as ``stem.parquet`` or ``stem.csv``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    parquet = has_pyarrow() if parquet is None else parquet
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = stem.with_name(stem.name + ".parquet")
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(pa.table({k: np.asarray(v).tolist() if v.dtype == object else v
                                 for k, v in requests.items()}), tmp)
        os.replace(tmp, path)
        return path
    cols = {k: np.asarray(v).tolist() for k, v in requests.items()}
    rows = [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]
    return write_table(rows, stem, parquet=False)


def read_requests(path: str | Path) -> dict[str, np.ndarray]:
    """A per-request table written by ``write_requests``, as numpy columns."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(path)
        return {k: t.column(k).to_numpy(zero_copy_only=False) for k in t.column_names}
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, np.ndarray] = {}
    for k in rows[0] if rows else []:
        vals = [r[k] for r in rows]
        try:
            out[k] = np.array([float(v) if v != "" else math.nan for v in vals])
        except ValueError:
            out[k] = np.array(vals, dtype=object)
    return out


# ----------------------------------------------------------------------------------------
# Running a sweep
# ----------------------------------------------------------------------------------------

Progress = Callable[[int, int, dict[str, Any]], None]


@dataclass
class SweepOutcome:
    """What ``run_sweep`` did: the rows in run order, how many ran now, failed, remain."""

    rows: list[dict[str, Any]]
    table: Path | None
    ran: int
    failed: int
    interrupted: bool
    total: int

    @property
    def missing(self) -> int:
        return self.total - sum(r.get("status") == "ok" for r in self.rows)


def run_sweep(
    runs: Sequence[Run],
    *,
    traces: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    workers: int | None = None,
    ray: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    meta: Mapping[str, Any] | None = None,
    problems: Sequence[str] = (),
) -> SweepOutcome:
    """Check ``runs`` (``check_runs``), then run those not yet done, saving each as it
    finishes when ``out`` is given. ``traces`` maps each run's trace key to a ``Trace`` or a
    reference ``resolve`` takes (default: the key itself). ``progress(done, total, row)``
    is called after each run. ``problems`` found before (command-line parsing) are reported
    with those ``check_runs`` finds. Ctrl-C stops the sweep and keeps what finished (the outcome
    says ``interrupted``; ``KeyboardInterrupt`` is not re-raised)."""
    runs = list(runs)
    given = dict(traces or {})
    for r in runs:
        given.setdefault(r.trace, r.trace)
    resolved = check_runs(runs, given, problems)
    store = Store(out, runs, resume=resume, overwrite=overwrite, meta=meta) if out is not None else None
    rows: dict[str, dict[str, Any]] = dict(store.rows) if store else {}
    done = store.done() if store else set()
    todo = [(i, r) for i, r in enumerate(runs) if r.run_id not in done]
    total, count = len(runs), len(done)
    ran = failed = 0
    interrupted = False

    def record(row: dict[str, Any], requests: Mapping[str, np.ndarray] | None) -> None:
        nonlocal count, ran, failed
        if store:
            store.add(row, requests)
        rows[row["run_id"]] = row
        count, ran = count + 1, ran + 1
        failed += row.get("status") != "ok"
        if progress:
            progress(count, total, row)

    try:
        if ray is not None:
            _run_ray(todo, resolved, ray, record)
        else:
            n = workers if workers is not None else (os.cpu_count() or 1)
            if n < 1:
                raise SweepError(f"workers must be >= 1, got {n}", problems=(f"workers={n}",))
            if n == 1 or len(todo) <= 1:
                for _, run in todo:
                    record(*execute(run, resolved[run.trace]))
            else:
                _run_pool(todo, resolved, min(n, len(todo)), record)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        table = store.close() if store else None
    order = {r.run_id: i for i, r in enumerate(runs)}
    ordered = sorted(rows.values(), key=lambda r: order[r["run_id"]])
    return SweepOutcome(rows=ordered, table=table, ran=ran, failed=failed, interrupted=interrupted, total=total)


def _run_pool(todo: list[tuple[int, Run]], traces: dict[str, _traces.Trace], workers: int,
              record: Callable[[dict[str, Any], Any], None]) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    needed = {r.trace: traces[r.trace] for _, r in todo}
    ctx = multiprocessing.get_context("spawn")       # no fork of a process with threads
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(needed,))
    futures = {pool.submit(_pool_task, i, run): run for i, run in todo}
    try:
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in finished:
                try:
                    _, row, requests = f.result()
                except BrokenProcessPool as e:      # a worker died (killed, out of memory)
                    row, requests = base_row(futures[f]), None
                    row.update(status="error", error=f"worker died: {e}")
                record(row, requests)
    except BaseException:
        for f in futures:
            f.cancel()
        for p in list(getattr(pool, "_processes", {}).values()):   # stop the runs under way
            p.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _run_ray(todo: list[tuple[int, Run]], traces: dict[str, _traces.Trace], address: str,
             record: Callable[[dict[str, Any], Any], None]) -> None:
    try:
        import ray
    except ImportError as e:
        raise SweepError("--ray needs Ray: pip install 'halffull[ray]'",
                         problems=("ray is not installed",)) from e
    if not ray.is_initialized():
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    refs = {k: ray.put(traces[k]) for k in {r.trace for _, r in todo}}
    task = ray.remote(num_cpus=1)(_ray_task)
    pending = {task.remote(i, run, refs[run.trace]): run for i, run in todo}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(ready[0])
            try:
                _, row, requests = ray.get(ready[0])
            except Exception as e:  # noqa: BLE001 - a task or worker failure is this run's error
                row, requests = base_row(run), None
                row.update(status="error", error=f"{type(e).__name__}: {e}")
            record(row, requests)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise




# ----------------------------------------------------------------------------------------
# Reports from a saved sweep
# ----------------------------------------------------------------------------------------

REPORT_COLUMNS = [
    ("policy", "policy"), ("router", "router"), ("load", "load"), ("seed", "seed"), ("ttft_p50", "TTFT p50 s"),
    ("ttft_p99", "TTFT p99 s"), ("ttft_p999", "TTFT p99.9 s"), ("ttft_max", "TTFT max s"),
    ("tpot_p99", "TPOT p99 s"), ("e2e_p99", "e2e p99 s"), ("throughput_tokens_per_s", "tok/s"),
    ("preemptions_per_request", "preempt/req"), ("goodput_share", "SLO met"), ("num_rejected", "rejected"),
    ("num_truncated", "truncated"),
]


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _group_key(r: Mapping[str, Any]) -> tuple[str, Any, Any, str]:
    engine = ", ".join(f"{k}={r[k]}" for k in engine_fields() if r.get(k) is not None)
    return (str(r.get("trace_name") or r.get("trace")), r.get("replicas"), r.get("preset"), engine)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_")[:80]


def build_report(folder: str | Path, out: str | Path | None = None) -> list[Path]:
    """Tables (``report.md``) and plots from a saved sweep folder (``load_results``): per
    (trace, replicas, preset, engine settings) a grid of small multiples
    (``plots.sweep_grid``) and the TTFT CDF at the highest load <= 1 (``plots.sweep_cdf``).
    Failed runs are listed with their errors. Returns the files written."""
    from . import plots

    folder = Path(folder)
    out = Path(out) if out is not None else folder
    runs, rows = load_results(folder)
    ok = [r for r in rows if r.get("status") == "ok"]
    bad = [r for r in rows if r.get("status") != "ok"]
    groups: dict[tuple[str, Any, Any, str], list[dict[str, Any]]] = {}
    for r in ok:
        groups.setdefault(_group_key(r), []).append(r)
    lines = [f"# Sweep {folder}", "", f"{len(ok)} of {len(runs)} runs finished, {len(bad)} failed, "
             f"{len(runs) - len(rows)} not run.", ""]
    written: list[Path] = []
    for (trace, replicas, preset, engine), rs in groups.items():
        where = f"{trace}: {replicas} replicas x {preset}" + (f" ({engine})" if engine else "")
        cols = [c for c in REPORT_COLUMNS if any(r.get(c[0]) is not None for r in rs)]
        cols = [c for c in cols if c[0] not in ("seed",) or len({r.get("seed") for r in rs}) > 1]
        lines += [f"## {where}", "", "| " + " | ".join(h for _, h in cols) + " |",
                  "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_cell(r.get(k)) for k, _ in cols) + " |" for r in rs]
        lines.append("")
        stem = _slug(f"report_{trace}_{replicas}r_{preset}_{engine}")
        written.append(plots.sweep_grid(rs, out / f"{stem}.png", title=f"{where}: TTFT, throughput vs load"))
        loads = sorted({float(r["load"]) for r in rs if r.get("load") is not None})
        if loads:
            at = max([x for x in loads if x <= 1.0 + 1e-9] or loads[:1])
            sel = [r for r in rs if r.get("load") is not None and abs(float(r["load"]) - at) < 1e-9
                   and r.get("seed") == min(x.get("seed") or 0 for x in rs)]
            written.append(plots.sweep_cdf(sel, CDF_QUANTILES, out / f"{stem}_ttft_cdf.png",
                                           title=f"{where}: TTFT CDF at load {at:g}"))
    if bad:
        lines += ["## Failed runs", "", "| run | trace | policy | router | load | error |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['run_id']} | {r.get('trace')} | {r.get('policy')} | {r.get('router')} | {r.get('load')} | "
                  f"{str(r.get('error')).replace('|', '/')} |" for r in bad]
    path = out / "report.md"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [path, *written]


__all__ = [
    "CDF_QUANTILES",
    "JOURNAL",
    "SWEEP_FILE",
    "Run",
    "Store",
    "SweepOutcome",
    "SweepSpec",
    "build_report",
    "check_runs",
    "engine_fields",
    "execute",
    "load_results",
    "load_traces",
    "parse_engine_setting",
    "read_journal",
    "read_requests",
    "run_sweep",
    "write_requests",
    "write_table",
]
