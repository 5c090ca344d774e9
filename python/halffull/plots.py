"""Plots of simulator sweeps (matplotlib, Agg backend: files only, no display).

Each function takes sweep rows (dicts from ``SimResult.summary()``, with ``policy``,
``router`` and ``load`` keys) and writes one PNG, returning its path.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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


__all__ = ["policy_bars", "preemptions_vs_load", "throughput_vs_load", "ttft_vs_load"]
