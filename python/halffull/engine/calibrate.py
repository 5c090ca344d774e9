"""Fit the simulator's linear step-cost model to step times measured by the engine::

    step_s ≈ c0 + c1 * prefill_tokens + c2 * decode_seqs + c3 * kv_tokens

by non-negative least squares (a cost never gets cheaper with more work). With four
coefficients exact NNLS is cheap: the optimum is the ordinary least-squares fit on some subset
of the columns with all coefficients >= 0, so we try all 16 subsets and keep the best feasible.
Only numpy is needed (this module does not import torch).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Mapping, Sequence, Union

import numpy as np

from ..errors import InvalidArgumentError

FEATURES = ("prefill_tokens", "decode_seqs", "kv_tokens")
COEFFICIENTS = ("c0", "c1", "c2", "c3")

Records = Union[Mapping[str, Any], Sequence[Mapping[str, Any]], Any]


def _columns(step_records: Records, target: str) -> tuple[np.ndarray, np.ndarray]:
    rec = getattr(step_records, "steps", step_records)     # a ServeReport
    if isinstance(rec, Mapping):
        cols = {k: rec[k] for k in (*FEATURES, target) if k in rec}
    else:
        rows = list(rec)
        cols = {k: [r[k] for r in rows] for k in (*FEATURES, target) if rows and k in rows[0]}
    missing = [k for k in (*FEATURES, target) if k not in cols]
    if missing:
        raise InvalidArgumentError(f"step records lack {', '.join(missing)}", field="step_records", value=None)
    x = np.column_stack([np.ones(len(np.asarray(cols[target])))] +
                        [np.asarray(cols[k], dtype=np.float64) for k in FEATURES])
    y = np.asarray(cols[target], dtype=np.float64)
    if len(y) == 0:
        raise InvalidArgumentError("no step records to fit", field="step_records", value=None)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise InvalidArgumentError("step records hold NaN or infinite values", field="step_records", value=None)
    return x, y


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact non-negative least squares for a few columns (all support subsets)."""
    m = a.shape[1]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    an = a / scale
    best, best_res = np.zeros(m), float(np.sum(b * b))
    for k in range(1, m + 1):
        for support in combinations(range(m), k):
            s = list(support)
            coef, *_ = np.linalg.lstsq(an[:, s], b, rcond=None)
            if np.any(coef < 0):
                continue
            res = float(np.sum((an[:, s] @ coef - b) ** 2))
            if res < best_res - 1e-15 * max(1.0, best_res):
                full = np.zeros(m)
                full[s] = coef
                best, best_res = full, res
    return best / scale


def fit_linear_cost_model(step_records: Records, target: str = "step_s") -> dict[str, float]:
    """``{"c0", "c1", "c2", "c3"}`` (seconds; per step, per prefill token, per decode sequence,
    per KV token), all >= 0, fitted to ``target`` (default the whole step's wall time).

    ``step_records``: ``Engine.step_records()``, a ``ServeReport`` (its ``steps``), a mapping of
    columns, or a list of per-step mappings.
    """
    x, y = _columns(step_records, target)
    coef = nnls(x, y)
    return {name: float(v) for name, v in zip(COEFFICIENTS, coef)}


def predict_step_time(coefficients: Mapping[str, float], step_records: Records) -> np.ndarray:
    """The model's step times for the records' features."""
    rec = getattr(step_records, "steps", step_records)
    if isinstance(rec, Mapping):
        feats = [np.asarray(rec[k], dtype=np.float64) for k in FEATURES]
    else:
        rows = list(rec)
        feats = [np.asarray([r[k] for r in rows], dtype=np.float64) for k in FEATURES]
    c = [float(coefficients[k]) for k in COEFFICIENTS]
    return c[0] + c[1] * feats[0] + c[2] * feats[1] + c[3] * feats[2]


def fit_quality(coefficients: Mapping[str, float], step_records: Records, target: str = "step_s") -> dict[str, float]:
    """``r2``, ``rmse_s`` and ``mape`` (mean absolute relative error) of a fit on records."""
    _, y = _columns(step_records, target)
    pred = predict_step_time(coefficients, step_records)
    resid = y - pred
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "r2": 1.0 - float(np.sum(resid ** 2)) / ss_tot if ss_tot > 0 else float("nan"),
        "rmse_s": float(np.sqrt(np.mean(resid ** 2))),
        "mape": float(np.mean(np.abs(resid) / np.maximum(np.abs(y), 1e-12))),
        "num_steps": float(len(y)),
    }
