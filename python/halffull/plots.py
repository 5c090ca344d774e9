"""Plots of simulator sweeps (matplotlib, Agg backend: files only, no display).

Each function takes sweep rows (dicts from ``SimResult.summary()``, with ``policy``,
``router`` and ``load`` keys) and writes one PNG, returning its path.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def _series(rows: Iterable[dict[str, Any]], key: str) -> dict[str, tuple[list[float], list[float]]]:
    by: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        x = r.get("load")
        if x is None:
            x = r.get("rate_scale") or 1.0
        label = str(r["policy"]) if r.get("router") is None else f"{r['policy']} / {r['router']}"
        by[label].append((float(x), float(r[key])))
    return {k: ([a for a, _ in sorted(v)], [b for _, b in sorted(v)]) for k, v in by.items()}


def _xlabel(rows: list[dict[str, Any]]) -> str:
    return "load (x measured capacity)" if any(r.get("load") is not None for r in rows) else "rate scale"


def ttft_vs_load(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """TTFT p50 (solid) and p99 (dashed) against load, one colour per policy/router."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    p50, p99 = _series(rows, "ttft_p50"), _series(rows, "ttft_p99")
    for i, (label, (x, y)) in enumerate(sorted(p50.items())):
        color = f"C{i % 10}"
        ax.plot(x, y, "-o", color=color, label=f"{label} p50", markersize=3)
        ax.plot(*p99[label], "--", color=color, label=f"{label} p99")
    ax.set_yscale("log")
    ax.set_xlabel(_xlabel(rows))
    ax.set_ylabel("time to first token (s)")
    ax.set_title(title or "TTFT vs load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _single(rows: list[dict[str, Any]], key: str, ylabel: str, path: str | Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (x, y) in sorted(_series(rows, key).items()):
        ax.plot(x, y, "-o", label=label, markersize=3)
    ax.set_xlabel(_xlabel(rows))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def throughput_vs_load(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Output tokens per second against load."""
    return _single(rows, "throughput_tokens_per_s", "output tokens / s", path, title or "Throughput vs load")


def preemptions_vs_load(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Preemptions per request against load."""
    return _single(rows, "preemptions_per_request", "preemptions per request", path,
                   title or "Preemptions vs load")


def policy_bars(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """TTFT p50 and p99 per policy at one load (what ``halffull simulate`` draws)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = [str(r["policy"]) for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["ttft_p50"] for r in rows], width=0.4, label="TTFT p50")
    ax.bar([x + 0.2 for x in xs], [r["ttft_p99"] for r in rows], width=0.4, label="TTFT p99")
    ax.set_xticks(list(xs), labels)
    ax.set_yscale("log")
    ax.set_ylabel("seconds")
    ax.set_title(title or "TTFT per policy")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p


def sweep_panels(
    rows: list[dict[str, Any]],
    metrics: list[tuple[str, str]],
    path: str | Path,
    *,
    x: str = "load",
    label: Any = None,
    style: Any = None,
    title: str = "",
    xlabel: str | None = None,
    logx: bool = False,
    logy: Iterable[str] = (),
    hlines: dict[str, float] | None = None,
    xticklabels: dict[float, str] | None = None,
    ncols: int = 2,
    dpi: int = 100,
    legend_fontsize: int = 7,
    palette_colors: int | None = 128,
) -> Path:
    """One panel per metric, one line per series, against ``x``; a small PNG for a README.

    - ``rows``: aggregated sweep rows (dicts). A row's series is ``label(row)`` (default: its
      ``policy``, and ``router`` when present); rows with ``f"{key}_lo"`` and
      ``f"{key}_hi"`` get a shaded band between them (e.g. the range over seeds).
    - ``metrics``: ``(key, y label)`` per panel; keys in ``logy`` get a log y axis.
    - ``style(row)``: optional matplotlib keyword arguments for the series (``color``,
      ``linestyle``, ``marker``), read from its first row.
    - ``hlines``: a dotted horizontal reference line per metric key (e.g. 1.0 for ratios).
    - ``xticklabels``: ``{x: text}`` to name the x positions (a categorical axis).
    - ``palette_colors``: store the PNG with a palette of this many colours (small files
      for a repository; ``None``: full colour).
    """
    label = label or (lambda r: str(r["policy"]) if r.get("router") is None else f"{r['policy']} / {r['router']}")
    logy = set(logy)
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        series[str(label(r))].append(r)
    n = len(metrics)
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.3 * nrows), squeeze=False)
    for i, (key, ylabel) in enumerate(metrics):
        ax = axes[i // ncols][i % ncols]
        for j, (name, rs) in enumerate(series.items()):
            rs = sorted(rs, key=lambda r: float(r[x]))
            xs = [float(r[x]) for r in rs]
            ys = [float(r[key]) for r in rs]
            kw: dict[str, Any] = {"color": f"C{j % 10}", "marker": "o", "markersize": 3, "linewidth": 1.3}
            if style is not None:
                kw.update(style(rs[0]) or {})
            (line,) = ax.plot(xs, ys, label=name, **kw)
            if all(f"{key}_lo" in r and f"{key}_hi" in r for r in rs):
                lo = [float(r[f"{key}_lo"]) for r in rs]
                hi = [float(r[f"{key}_hi"]) for r in rs]
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
        if hlines and key in hlines:
            ax.axhline(hlines[key], color="black", linestyle=":", linewidth=1)
        if logx:
            ax.set_xscale("log")
        if xticklabels:
            ax.set_xticks(list(xticklabels), list(xticklabels.values()))
        if key in logy:
            ax.set_yscale("log")
            plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)

            def minor(v: float, _: Any, ax: Any = ax) -> str:
                lo, hi = ax.get_ylim()
                narrow = lo > 0 and hi / lo < 12  # about a decade or less: label every tick
                return f"{v:g}" if narrow or f"{v:.1g}"[0] in "25" else ""

            ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(minor))
        ax.set_xlabel(xlabel or ("load (x measured capacity)" if x == "load" else x))
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=legend_fontsize,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    legend_rows = (len(labels) + 5) // 6
    fig.tight_layout(rect=(0, 0.035 * legend_rows + 0.02, 1, 1))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if palette_colors:
        import io

        from PIL import Image  # matplotlib depends on Pillow

        buf = io.BytesIO()
        fig.savefig(buf, dpi=dpi, format="png")
        plt.close(fig)
        buf.seek(0)
        with Image.open(buf) as im:
            im.convert("RGB").quantize(colors=palette_colors).save(p, format="png", optimize=True)
    else:
        fig.savefig(p, dpi=dpi)
        plt.close(fig)
    return p


# ----------------------------------------------------------------------------------------
# Figures people can read: small multiples with shared axes, a colour and a marker per series
# (the same series keeps both in every panel), the legend outside the data, and titles that
# name the trace, replicas, router and load.
# ----------------------------------------------------------------------------------------

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _palette(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """A fixed colour and marker per name (sorted), so a policy looks the same everywhere."""
    cmap = plt.get_cmap("tab10")
    return {n: {"color": cmap(i % 10), "marker": _MARKERS[i % len(_MARKERS)]}
            for i, n in enumerate(sorted(set(names)))}


def _log_axis(axis: Any) -> None:
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))


def _legend_outside(fig: Any, ax: Any, title: str | None = None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8,
                   title=title, title_fontsize=8)


def _save_wide(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return p


def _ecdf(x: Any) -> tuple[Any, Any]:
    import numpy as np

    v = np.sort(np.asarray(x, dtype=float))
    v = v[np.isfinite(v)]
    # plotting positions (i - 0.5) / n stay inside (0, 1), as a logit axis needs
    return v, (np.arange(1, v.size + 1) - 0.5) / max(v.size, 1)


#: The CDFs' y range on a logit scale: the body (10% .. 90%) and the tail (p99, p99.9, p99.99)
#: each get room.
_CDF_LIMITS = (0.005, 0.9999)


def _cdf_axis(ax: Any, xlabel: str) -> None:
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    ax.set_yscale("logit")
    ax.set_ylim(*_CDF_LIMITS)
    ticks = [0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999]
    ax.set_yticks(ticks, ["1%", "10%", "50%", "90%", "99%", "99.9%", "99.99%"])
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of requests (logit)")
    ax.grid(True, which="major", alpha=0.3)


def simulate_figure(runs: list[tuple[dict[str, Any], dict[str, Any]]], path: str | Path, title: str) -> Path:
    """One ``halffull simulate`` run or policy comparison: the CDF of TTFT and of end-to-end
    latency (log x, so the tail shows), and each policy's TTFT p50 / p99 / p99.9 / max as
    points on a log axis. ``runs``: ``(summary, requests)`` per policy."""
    import numpy as np

    look = _palette(str(s["policy"]) for s, _ in runs)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for s, req in runs:
        name = str(s["policy"])
        done = np.asarray(req["status"]) == "finished"
        for ax, col in ((axes[0], "ttft"), (axes[1], "e2e")):
            x, y = _ecdf(np.asarray(req[col], dtype=float)[done])
            ax.step(x, y, where="post", color=look[name]["color"], label=name, linewidth=1.4)
    _cdf_axis(axes[0], "time to first token (s, log)")
    _cdf_axis(axes[1], "end-to-end latency (s, log)")
    axes[0].set_title("TTFT CDF", fontsize=9)
    axes[1].set_title("end-to-end latency CDF", fontsize=9)
    ax = axes[2]
    stats = [("ttft_p50", "p50"), ("ttft_p99", "p99"), ("ttft_p999", "p99.9"), ("ttft_max", "max")]
    for i, (s, _) in enumerate(runs):
        name = str(s["policy"])
        xs = [s.get(k) for k, _ in stats]
        ax.plot(xs, [i] * len(xs), color=look[name]["color"], linewidth=0.8, alpha=0.6)
        for (_, lab), x, m in zip(stats, xs, ("o", "s", "^", "X"), strict=False):
            ax.plot([x], [i], marker=m, color=look[name]["color"], linestyle="none", markersize=6,
                    label=lab if i == 0 else None, markeredgecolor="black", markeredgewidth=0.4)
    ax.set_yticks(range(len(runs)), [str(s["policy"]) for s, _ in runs])
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    ax.set_xlabel("TTFT (s, log)")
    ax.set_title("TTFT percentiles (markers)", fontsize=9)
    ax.grid(True, which="both", axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, frameon=False)
    _legend_outside(fig, axes[0], "policy")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save_wide(fig, path)


def _x_of(r: dict[str, Any]) -> float:
    x = r.get("load")
    if x is None:
        x = r.get("rate_scale") or 1.0
    return float(x)


def sweep_grid(rows: list[dict[str, Any]], path: str | Path, title: str, *, panel: str = "router",
               line: str = "policy") -> Path:
    """Small multiples of a sweep: one column per ``panel`` value (router), one row per
    metric (TTFT p50, TTFT p99, output tokens/s, and preemptions per request only when
    something preempts), one line per ``line`` value (policy) with its own colour and marker;
    shared x, a shared y per metric, the legend outside."""
    import numpy as np

    rows = [r for r in rows if r.get("status", "ok") == "ok"]
    metrics = [("ttft_p50", "TTFT p50 (s)", True), ("ttft_p99", "TTFT p99 (s)", True),
               ("throughput_tokens_per_s", "output tokens / s", False)]
    if any((r.get("preemptions_per_request") or 0) > 0 for r in rows):
        metrics.append(("preemptions_per_request", "preemptions / request", False))
    if any((r.get("num_truncated") or 0) + (r.get("num_rejected") or 0) > 0 for r in rows):
        metrics.append(("_lost_share", "rejected + truncated share", False))
    panels = sorted({str(r.get(panel)) for r in rows})
    look = _palette(str(r.get(line)) for r in rows)
    fig, axes = plt.subplots(len(metrics), len(panels), figsize=(3.4 * len(panels) + 0.6, 2.4 * len(metrics) + 0.4),
                             squeeze=False, sharex=True, sharey="row")
    for j, pv in enumerate(panels):
        mine = [r for r in rows if str(r.get(panel)) == pv]
        for name in sorted({str(r.get(line)) for r in mine}):
            rs = sorted((r for r in mine if str(r.get(line)) == name), key=_x_of)
            xs = [_x_of(r) for r in rs]
            for i, (key, _, _) in enumerate(metrics):
                if key == "_lost_share":
                    ys = [((r.get("num_truncated") or 0) + (r.get("num_rejected") or 0)) / max(r["num_requests"], 1)
                          for r in rs]
                else:
                    ys = [np.nan if r.get(key) is None else float(r[key]) for r in rs]
                axes[i][j].plot(xs, ys, label=name, linewidth=1.3, markersize=4, **look[name])
        axes[0][j].set_title(f"{panel} {pv}", fontsize=9)
        axes[-1][j].set_xlabel("load (x measured capacity)" if any(r.get("load") is not None for r in rows)
                               else "rate scale")
    for i, (_, ylabel, log) in enumerate(metrics):
        axes[i][0].set_ylabel(ylabel, fontsize=8)
        for ax in axes[i]:
            ax.grid(True, which="both", alpha=0.3)
            if log:
                ax.set_yscale("log")
                _log_axis(ax.yaxis)
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=False):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               fontsize=8, title=line, title_fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save_wide(fig, path)


def sweep_cdf(rows: list[dict[str, Any]], quantiles: Iterable[float], path: str | Path, title: str, *,
              panel: str = "router", line: str = "policy") -> Path:
    """The TTFT CDF (log x) at one load: one panel per ``panel`` value, one line per ``line``
    value, drawn from each row's ``ttft_quantiles`` (the percentiles ``quantiles``)."""
    qs = [min(max(q / 100, _CDF_LIMITS[0]), _CDF_LIMITS[1]) for q in quantiles]
    rows = [r for r in rows if r.get("status", "ok") == "ok" and r.get("ttft_quantiles")]
    panels = sorted({str(r.get(panel)) for r in rows})
    look = _palette(str(r.get(line)) for r in rows)
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(3.6 * max(len(panels), 1) + 0.6, 3.2), squeeze=False,
                             sharex=True, sharey=True)
    for j, pv in enumerate(panels):
        ax = axes[0][j]
        for r in sorted((r for r in rows if str(r.get(panel)) == pv), key=lambda r: str(r.get(line))):
            v = r["ttft_quantiles"]
            if isinstance(v, str):
                import json

                v = json.loads(v)
            name = str(r.get(line))
            ax.step(v, qs[: len(v)], where="post", label=name, color=look[name]["color"], linewidth=1.4)
        _cdf_axis(ax, "time to first token (s, log)")
        ax.set_title(f"{panel} {pv}", fontsize=9)
        if j:
            ax.set_ylabel("")
    _legend_outside(fig, axes[0][0], line)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save_wide(fig, path)


__all__ = ["policy_bars", "preemptions_vs_load", "simulate_figure", "sweep_cdf", "sweep_grid", "sweep_panels",
           "throughput_vs_load", "ttft_vs_load"]
