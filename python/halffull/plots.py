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


__all__ = ["policy_bars", "preemptions_vs_load", "sweep_panels", "throughput_vs_load", "ttft_vs_load"]
