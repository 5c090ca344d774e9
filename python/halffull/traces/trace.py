"""The ``Trace`` type: requests sorted by arrival, three aligned arrays, and what can be done
with one (rate, slicing, rate scaling, summary statistics, saving in the project's format).
Construction checks everything; the loaders, the generator and the built-ins all end here."""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._util import as_float, shown
from ..errors import InvalidArgumentError
from ..limits import MAX_TIME


def _token_array(values: Any, field: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise InvalidArgumentError(f"{field} must be 1-D, got shape {array.shape}", field=field)
    if array.size and array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise InvalidArgumentError(f"{field} must hold whole numbers", field=field)
    elif array.size and array.dtype.kind not in "iu":
        raise InvalidArgumentError(f"{field} must hold integers, got dtype {array.dtype}", field=field)
    array = array.astype(np.int64)
    if array.size and array.min() < 1:
        index = int(np.argmin(array))
        raise InvalidArgumentError(
            f"{field}[{index}] = {array[index]}: token counts must be >= 1",
            field=field,
            index=index,
        )
    return array


@dataclass(frozen=True, eq=False, repr=False)
class Trace:
    """Requests sorted by arrival: three aligned arrays, optional prefix-block ids, a name.

    - ``arrival_time``: float64 seconds, non-decreasing. Loaders start real traces at 0.0;
      ``head`` and ``slice_time`` keep the original clock.
    - ``prompt_tokens``, ``output_tokens``: int64, each >= 1.
    - ``hash_ids``: per request, the ids of its prompt's KV blocks (Mooncake: 512 tokens per
      block; equal ids mean equal content), or ``None`` when the source has none.
    - ``name``, ``source``: a label and where it came from (a path or ``"synthetic"``).
    - ``skipped_rows``, ``clamped_rows``: rows of the source file the loader left out on
      purpose (BurstGPT failures) or read with a 0 count raised to 1 (module docstring).

    The arrays are read-only; methods return new traces. Construction checks everything and
    raises ``InvalidArgumentError``; unsorted arrivals are refused (``load`` sorts for you).
    """

    arrival_time: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    hash_ids: list[list[int]] | None = None
    name: str = "trace"
    source: str = "synthetic"
    skipped_rows: int = 0
    clamped_rows: int = 0

    def __post_init__(self) -> None:
        arrival = np.array(self.arrival_time, dtype=np.float64)
        if arrival.ndim != 1:
            raise InvalidArgumentError(f"arrival_time must be 1-D, got shape {arrival.shape}", field="arrival_time")
        if not np.all(np.isfinite(arrival)):
            index = int(np.argmin(np.isfinite(arrival)))
            raise InvalidArgumentError(
                f"arrival_time[{index}] = {arrival[index]} is not finite",
                field="arrival_time",
                index=index,
            )
        if arrival.size > 1 and np.any(np.diff(arrival) < 0):
            index = int(np.argmax(np.diff(arrival) < 0)) + 1
            raise InvalidArgumentError(
                f"arrival_time must be sorted: [{index}] = {arrival[index]} comes before "
                f"[{index - 1}] = {arrival[index - 1]} (sort with np.argsort(kind='stable'))",
                field="arrival_time",
                index=index,
            )
        prompt = _token_array(self.prompt_tokens, "prompt_tokens")
        output = _token_array(self.output_tokens, "output_tokens")
        if not len(arrival) == len(prompt) == len(output):
            raise InvalidArgumentError(
                f"arrays differ in length: arrival_time {len(arrival)}, "
                f"prompt_tokens {len(prompt)}, output_tokens {len(output)}",
                field="arrival_time",
            )
        hash_ids = None
        if self.hash_ids is not None:
            hash_ids = [[int(block) for block in blocks] for blocks in self.hash_ids]
            if len(hash_ids) != len(arrival):
                raise InvalidArgumentError(
                    f"hash_ids has {len(hash_ids)} entries for {len(arrival)} requests",
                    field="hash_ids",
                )
        for array in (arrival, prompt, output):
            array.setflags(write=False)
        object.__setattr__(self, "arrival_time", arrival)
        object.__setattr__(self, "prompt_tokens", prompt)
        object.__setattr__(self, "output_tokens", output)
        object.__setattr__(self, "hash_ids", hash_ids)
        object.__setattr__(self, "name", str(self.name))
        object.__setattr__(self, "source", str(self.source))

    def __len__(self) -> int:
        return len(self.arrival_time)

    def __repr__(self) -> str:
        return (
            f"Trace(name={self.name!r}, requests={len(self)}, duration={self.duration:.1f}s, "
            f"rate={self.rate:.3g}/s, source={self.source!r})"
        )

    @property
    def duration(self) -> float:
        """Seconds from the first arrival to the last (0.0 for fewer than two requests)."""
        if len(self) < 2:
            return 0.0
        return float(self.arrival_time[-1] - self.arrival_time[0])

    @property
    def rate(self) -> float:
        """Arrivals per second, ``(len - 1) / duration`` (one over the mean inter-arrival
        time); NaN for fewer than two requests, inf if they all arrive at once."""
        if len(self) < 2:
            return math.nan
        if self.duration == 0.0:
            return math.inf
        return (len(self) - 1) / self.duration

    def _take(self, window: slice, arrival: np.ndarray | None = None) -> Trace:
        return replace(
            self,
            arrival_time=self.arrival_time[window] if arrival is None else arrival,
            prompt_tokens=self.prompt_tokens[window],
            output_tokens=self.output_tokens[window],
            hash_ids=None if self.hash_ids is None else self.hash_ids[window],
        )

    def scale_rate(self, factor: float) -> Trace:
        """The same requests arriving ``factor`` times as fast (arrivals divided by
        ``factor``): ``scale_rate(2)`` doubles the load. ``factor`` must be finite and > 0."""
        if isinstance(factor, bool) or not isinstance(factor, (int, float, np.integer, np.floating)):
            raise InvalidArgumentError(
                f"factor must be a number, got {type(factor).__name__}", field="factor", value=factor
            )
        f = as_float(factor)
        if not (math.isfinite(f) and f > 0):
            raise InvalidArgumentError(f"factor must be finite and > 0, got {shown(factor)}", field="factor",
                                       value=factor)
        with np.errstate(over="ignore"):
            arrival = self.arrival_time / f
        last = float(arrival.max()) if arrival.size else 0.0
        if not last <= MAX_TIME:
            raise InvalidArgumentError(
                f"scaling the rate by {shown(factor)} puts the last arrival at {last:.3g} s, beyond MAX_TIME "
                f"({MAX_TIME:g} s)", field="factor", value=factor)
        return replace(self, arrival_time=arrival)

    def head(self, n: int) -> Trace:
        """The first ``n`` requests (all of them if the trace is shorter)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise InvalidArgumentError(f"n must be an int >= 0, got {n!r}", field="n", value=n)
        return self._take(slice(0, int(n)))

    def slice_time(self, t0: float, t1: float, *, rebase: bool = False) -> Trace:
        """The requests arriving in ``[t0, t1)``. Arrival times are kept as they are, or with
        ``rebase=True`` shifted by ``-t0`` so the window starts at 0."""
        if not (math.isfinite(t0) and math.isfinite(t1) and t0 <= t1):
            raise InvalidArgumentError(f"need finite t0 <= t1, got t0={t0!r}, t1={t1!r}", field="t0", value=t0)
        lo = int(np.searchsorted(self.arrival_time, t0, side="left"))
        hi = int(np.searchsorted(self.arrival_time, t1, side="left"))
        window = slice(lo, hi)
        arrival = self.arrival_time[window] - float(t0) if rebase else None
        return self._take(window, arrival)

    def summary(self) -> dict[str, Any]:
        """The numbers of the table in ``shared/traces/README.md``: ``requests``, ``span``
        (seconds), ``rate`` (req/s), ``interarrival_cv`` (std / mean of the gaps), and
        ``prompt_`` / ``output_`` ``mean``, ``p50``, ``p99``, ``max`` (numpy's linear
        percentiles), plus ``prefix_block_reuse``: the share of prompt blocks whose id an
        earlier request already had (``None`` without ``hash_ids``). NaN where undefined."""
        gaps = np.diff(self.arrival_time)
        cv = math.nan
        if gaps.size and gaps.mean() > 0:
            cv = float(gaps.std() / gaps.mean())
        out: dict[str, Any] = {
            "requests": len(self),
            "span": self.duration,
            "rate": self.rate,
            "interarrival_cv": cv,
        }
        for label, tokens in (("prompt", self.prompt_tokens), ("output", self.output_tokens)):
            empty = tokens.size == 0
            out[f"{label}_mean"] = math.nan if empty else float(tokens.mean())
            out[f"{label}_p50"] = math.nan if empty else float(np.percentile(tokens, 50))
            out[f"{label}_p99"] = math.nan if empty else float(np.percentile(tokens, 99))
            out[f"{label}_max"] = math.nan if empty else int(tokens.max())
        out["prefix_block_reuse"] = None if self.hash_ids is None else _prefix_reuse(self.hash_ids)
        return out

    def save(self, path: str | Path) -> Path:
        """Write the trace in the project's own CSV format (``traces/README.md``); a ``.gz``
        suffix compresses it. Floats are written exactly, so ``load`` gives back the same
        arrays. Returns the path."""
        path = Path(path)
        columns = ["arrival_time", "prompt_tokens", "output_tokens"]
        if self.hash_ids is not None:
            columns.append("hash_ids")
        lines = [",".join(columns)]
        rows = zip(self.arrival_time.tolist(), self.prompt_tokens.tolist(), self.output_tokens.tolist(), strict=True)
        for i, (arrival, prompt, output) in enumerate(rows):
            line = f"{arrival!r},{prompt},{output}"
            if self.hash_ids is not None:
                line += "," + " ".join(map(str, self.hash_ids[i]))
            lines.append(line)
        text = "\n".join(lines) + "\n"
        if path.suffix == ".gz":
            with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
                f.write(text)
        else:
            path.write_text(text, encoding="utf-8", newline="")
        return path


def _prefix_reuse(hash_ids: list[list[int]]) -> float:
    seen: set[int] = set()
    total = reused = 0
    for blocks in hash_ids:
        total += len(blocks)
        reused += sum(1 for block in blocks if block in seen)
        seen.update(blocks)
    return reused / total if total else math.nan


__all__ = ["Trace"]
