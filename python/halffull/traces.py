"""Request traces: what arrives when, with how many prompt and output tokens.

A ``Trace`` is three aligned numpy arrays sorted by arrival (``arrival_time`` in seconds,
``prompt_tokens``, ``output_tokens``) plus, for Mooncake traces, each request's prefix-block
ids. Traces come from three places:

- ``load(path)`` reads a real trace: Azure LLM inference CSVs, Mooncake JSONL, BurstGPT CSVs,
  or the project's own CSV (``Trace.save``). The format is detected from the file; a bad row
  raises ``TraceError`` naming the file and line.
- ``synthetic(num_requests, rate, ...)`` draws one: Poisson or Gamma arrivals, lengths from a
  small distribution vocabulary or resampled from another trace, seeded.
- ``builtin(name)`` returns one of the small synthetic traces shipped inside the package
  (``builtin_names()`` lists them; ``traces/README.md`` says how they were made).

Zero token counts, per format (a request needs at least one prompt token, and the prefill
step always yields one output token):

============  =============================  ==============================================
format        prompt tokens == 0             output tokens == 0
============  =============================  ==============================================
azure         error                          read as 1, counted in ``Trace.clamped_rows``
mooncake      error                          read as 1, counted in ``Trace.clamped_rows``
burstgpt      read as 1 (``clamped_rows``)   a failed request: row skipped, counted in
                                             ``Trace.skipped_rows``
halffull      error                          error
============  =============================  ==============================================

Negative, fractional, NaN or missing counts are errors in every format.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import InvalidArgumentError, TraceError

FORMATS: tuple[str, ...] = ("halffull", "azure", "mooncake", "burstgpt")
"""Names accepted by ``load(path, format=...)``."""

LENGTH_KINDS: tuple[str, ...] = ("constant", "uniform", "lognormal")
"""Distribution names accepted in a length spec (see ``synthetic``)."""

LengthSpec = Union[int, tuple[Any, ...]]  # 512 | ("constant", n) | ("uniform", lo, hi) | ("lognormal", mean, sigma)

# Lognormal fits, by matching the mean and the median (mean / median = exp(sigma**2 / 2)):
# load (mean tokens) and the typical request (median) come out right, the far tail less so.
AZURE_CONV_PROMPT: tuple[str, float, float] = ("lognormal", 1155, 0.50)
"""Azure conv 2023 prompts: mean 1,155, median 1,020 (fit p99 3,270; real p99 4,142)."""
AZURE_CONV_OUTPUT: tuple[str, float, float] = ("lognormal", 211, 0.99)
"""Azure conv 2023 outputs: mean 211, median 129; the real trace caps outputs at 1,000, so
pass ``max_output_tokens=1000`` for the same cap."""
MOONCAKE_PROMPT: tuple[str, float, float] = ("lognormal", 15325, 0.75)
"""Mooncake FAST'25 synthetic prompts: mean 15,325, median 11,587 (p99 matches too)."""
MOONCAKE_OUTPUT: tuple[str, float, float] = ("lognormal", 149, 1.24)
"""Mooncake FAST'25 synthetic outputs: mean 149, median 69."""

_DATA_DIR = Path(__file__).resolve().parent / "data"


# --------------------------------------------------------------------------------------------
# Trace
# --------------------------------------------------------------------------------------------


def _token_array(values: Any, field: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise InvalidArgumentError(f"{field} must be 1-D, got shape {array.shape}", field=field)
    if array.size and array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise InvalidArgumentError(f"{field} must hold whole numbers", field=field)
    elif array.size and array.dtype.kind not in "iu":
        raise InvalidArgumentError(
            f"{field} must hold integers, got dtype {array.dtype}", field=field
        )
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
            raise InvalidArgumentError(
                f"arrival_time must be 1-D, got shape {arrival.shape}", field="arrival_time"
            )
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
        if not (math.isfinite(factor) and factor > 0):
            raise InvalidArgumentError(
                f"factor must be finite and > 0, got {factor!r}", field="factor", value=factor
            )
        return replace(self, arrival_time=self.arrival_time / float(factor))

    def head(self, n: int) -> Trace:
        """The first ``n`` requests (all of them if the trace is shorter)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise InvalidArgumentError(f"n must be an int >= 0, got {n!r}", field="n", value=n)
        return self._take(slice(0, int(n)))

    def slice_time(self, t0: float, t1: float, *, rebase: bool = False) -> Trace:
        """The requests arriving in ``[t0, t1)``. Arrival times are kept as they are, or with
        ``rebase=True`` shifted by ``-t0`` so the window starts at 0."""
        if not (math.isfinite(t0) and math.isfinite(t1) and t0 <= t1):
            raise InvalidArgumentError(
                f"need finite t0 <= t1, got t0={t0!r}, t1={t1!r}", field="t0", value=t0
            )
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
        rows = zip(self.arrival_time.tolist(), self.prompt_tokens.tolist(), self.output_tokens.tolist())
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


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

# Header columns (lower-cased, stripped) that identify each CSV format.
_CSV_COLUMNS: dict[str, tuple[str, str, str]] = {
    "azure": ("timestamp", "contexttokens", "generatedtokens"),
    "burstgpt": ("timestamp", "request tokens", "response tokens"),
    "halffull": ("arrival_time", "prompt_tokens", "output_tokens"),
}
_CSV_HEADERS = {
    "azure": "TIMESTAMP,ContextTokens,GeneratedTokens",
    "burstgpt": "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type",
    "halffull": "arrival_time,prompt_tokens,output_tokens[,hash_ids]",
}

# 2023-11-16 18:15:46.6805900 (Azure writes 7 fractional digits; datetime takes only 6),
# optionally with a zone: Z, +00:00, +0000.
_AZURE_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\s*(Z|[+-]\d{2}:?\d{2})?"
)


def _error(path: Path, line: int | None, what: str) -> TraceError:
    where = f"{path}:{line}" if line is not None else f"{path}"
    return TraceError(f"{where}: {what}", path=str(path), line=line)


class _Rows:
    """What a reader collected: raw times (format units), counts, optional block ids."""

    def __init__(self) -> None:
        self.times: list[Any] = []
        self.prompts: list[int] = []
        self.outputs: list[int] = []
        self.hash_ids: list[list[int]] | None = None
        self.skipped = 0
        self.clamped = 0
        self.lines_read = 0


_MAX_TOKENS = 2**40  # beyond any context window; keeps counts far inside int64
_EPOCH_DAY = date(1970, 1, 1).toordinal()


def _parse_count(text: Any, column: str, path: Path, line: int) -> int:
    """A token count >= 0 from a CSV cell or JSON value ("12", "12.0", 12; not 12.5, -1, nan)."""
    value: int | None = None
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif isinstance(text, (str, float)):
        try:
            number = float(text)  # float, not int(): int(12.5) would truncate
        except ValueError:
            number = math.nan
        if math.isfinite(number) and number.is_integer():
            value = int(number)
    if value is None:
        raise _error(path, line, f"{column}: expected a whole token count, got {text!r}")
    if value < 0:
        raise _error(path, line, f"{column}: token count {value} is negative")
    if value >= _MAX_TOKENS:
        raise _error(path, line, f"{column}: token count {value} is unreasonably large")
    return value


def _parse_seconds(text: Any, column: str, path: Path, line: int) -> float:
    if isinstance(text, bool):
        raise _error(path, line, f"{column}: expected a number, got {text!r}")
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise _error(path, line, f"{column}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise _error(path, line, f"{column}: {text!r} is not a finite number")
    return value


def _parse_azure_timestamp(text: str, path: Path, line: int) -> int:
    """Nanoseconds since 1970 (UTC if a zone is given, else naive), exact: 7-digit fractions
    would lose their last digit in a float of seconds since 1970."""
    match = _AZURE_TIMESTAMP.fullmatch(text.strip())
    if match is None:
        raise _error(path, line, f"TIMESTAMP: expected 'YYYY-MM-DD HH:MM:SS.fffffff', got {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7) or "", match.group(8)
    try:
        days = date(year, month, day).toordinal() - _EPOCH_DAY
    except ValueError as exc:
        raise _error(path, line, f"TIMESTAMP: {text!r}: {exc}") from None
    if hour > 23 or minute > 59 or second > 59:
        raise _error(path, line, f"TIMESTAMP: {text!r}: time of day out of range")
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0"))


def _zero_policy(
    fmt: str, prompt: int, output: int, rows: _Rows, path: Path, line: int, prompt_name: str, output_name: str
) -> tuple[int, int] | None:
    """Zero counts as the module docstring's table says; ``None``: skip the row."""
    if fmt == "burstgpt":
        if output == 0:  # BurstGPT marks a failed request with 0 response tokens
            rows.skipped += 1
            return None
        if prompt == 0:
            rows.clamped += 1
            return 1, output
        return prompt, output
    if prompt == 0:
        raise _error(path, line, f"{prompt_name}: 0 prompt tokens")
    if output == 0:
        if fmt == "halffull":
            raise _error(path, line, f"{output_name}: 0 output tokens")
        rows.clamped += 1
        return prompt, 1
    return prompt, output


def _read_csv(path: Path, lines: Iterable[str], fmt: str) -> _Rows:
    reader = csv.reader(lines)
    header: list[str] | None = None
    rows = _Rows()
    for cells in reader:
        if not cells or all(not cell.strip() for cell in cells):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in cells]
            header_line = reader.line_num
            missing = [c for c in _CSV_COLUMNS[fmt] if c not in header]
            if missing:
                raise _error(
                    path,
                    header_line,
                    f"not a {fmt!r} header: missing column(s) {', '.join(missing)} "
                    f"(expected {_CSV_HEADERS[fmt]}, got {','.join(cells)})",
                )
            time_col, prompt_col, output_col = (header.index(c) for c in _CSV_COLUMNS[fmt])
            hash_col = header.index("hash_ids") if fmt == "halffull" and "hash_ids" in header else None
            if hash_col is not None:
                rows.hash_ids = []
            names = [cell.strip() for cell in cells]
            continue
        line = reader.line_num
        for column in (time_col, prompt_col, output_col, hash_col):
            if column is not None and column >= len(cells):
                raise _error(
                    path,
                    line,
                    f"missing column {names[column]!r} "
                    f"(row has {len(cells)} fields, header has {len(header)})",
                )
        time_text = cells[time_col]
        prompt = _parse_count(cells[prompt_col].strip(), names[prompt_col], path, line)
        output = _parse_count(cells[output_col].strip(), names[output_col], path, line)
        if fmt == "azure":
            time: Any = _parse_azure_timestamp(time_text, path, line)
        else:
            time = _parse_seconds(time_text.strip(), names[time_col], path, line)
        counts = _zero_policy(fmt, prompt, output, rows, path, line, names[prompt_col], names[output_col])
        if counts is None:
            continue
        prompt, output = counts
        if hash_col is not None:
            try:
                blocks = [int(block) for block in cells[hash_col].split()]
            except ValueError:
                raise _error(
                    path, line, f"hash_ids: expected space-separated ints, got {cells[hash_col]!r}"
                ) from None
            rows.hash_ids.append(blocks)  # type: ignore[union-attr]
        rows.times.append(time)
        rows.prompts.append(prompt)
        rows.outputs.append(output)
    rows.lines_read = reader.line_num
    return rows


def _read_mooncake(path: Path, lines: Iterable[str]) -> _Rows:
    rows = _Rows()
    hash_line: int | None = None  # the first line that decided whether hash_ids are present
    line = 0
    for line, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _error(path, line, f"not valid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(record, dict):
            raise _error(path, line, f"expected a JSON object, got {type(record).__name__}")
        for key in ("timestamp", "input_length", "output_length"):
            if key not in record:
                raise _error(path, line, f"missing field {key!r}")
        time = _parse_seconds(record["timestamp"], "timestamp", path, line)
        prompt = _parse_count(record["input_length"], "input_length", path, line)
        output = _parse_count(record["output_length"], "output_length", path, line)
        counts = _zero_policy("mooncake", prompt, output, rows, path, line, "input_length", "output_length")
        if counts is None:
            continue
        prompt, output = counts
        has_hashes = "hash_ids" in record
        if hash_line is None:
            hash_line = line
            rows.hash_ids = [] if has_hashes else None
        elif has_hashes != (rows.hash_ids is not None):
            state = "has" if has_hashes else "lacks"
            raise _error(path, line, f"this row {state} hash_ids, unlike line {hash_line}")
        if has_hashes:
            blocks = record["hash_ids"]
            if not isinstance(blocks, list) or any(
                isinstance(b, bool) or not isinstance(b, int) for b in blocks
            ):
                raise _error(path, line, f"hash_ids: expected a list of ints, got {blocks!r}"[:200])
            rows.hash_ids.append(blocks)  # type: ignore[union-attr]
        rows.times.append(time)
        rows.prompts.append(prompt)
        rows.outputs.append(output)
    rows.lines_read = line
    return rows


def _open_text(path: Path) -> io.TextIOBase:
    # utf-8-sig drops a byte-order mark (spreadsheet exports); newline="" is what csv wants.
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _detect(path: Path, first_line: str, first_line_number: int) -> str:
    stem_suffix = Path(path.stem).suffix if path.suffix == ".gz" else path.suffix
    stripped = first_line.strip()
    if stripped.startswith("{") or stem_suffix.lower() in (".jsonl", ".json"):
        return "mooncake"
    header = {cell.strip().lower() for cell in next(csv.reader([stripped]), [])}
    for fmt in ("azure", "burstgpt", "halffull"):
        if set(_CSV_COLUMNS[fmt]) <= header:
            return fmt
    expected = "; ".join(f"{fmt}: {columns}" for fmt, columns in _CSV_HEADERS.items())
    raise _error(
        path,
        first_line_number,
        f"unknown trace format: header {stripped[:120]!r} matches none of ({expected}; "
        f"mooncake: JSON lines); pass format= one of {', '.join(FORMATS)}",
    )


def load(path: str | Path, format: str | None = None) -> Trace:
    """Read a trace file: ``azure``, ``mooncake``, ``burstgpt`` or ``halffull``
    (``FORMATS``), detected from the extension and the first line unless ``format`` is given.
    A ``.gz`` suffix is read through gzip.

    Requests are sorted by arrival (stably: rows with equal times keep the file's order).
    External formats are put on a clock starting at 0.0 at the earliest request (Azure
    timestamps are wall-clock strings; Mooncake's are milliseconds; BurstGPT's seconds); the
    project's own format keeps its times as written. Raises ``TraceError`` (attributes
    ``path``, ``line``) on a missing or empty file, an unknown format, or a malformed row.
    """
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise TraceError(
            f"{path}: unknown trace format {format!r}; valid formats: {', '.join(FORMATS)}",
            path=str(path),
            line=None,
            valid=FORMATS,
        )
    if not path.is_file():
        what = "is not a file" if path.exists() else "no such trace file"
        raise _error(path, None, what)
    try:
        with _open_text(path) as f:
            head: list[str] = []
            for text in f:
                head.append(text)
                if text.strip():
                    break
            if not head or not head[-1].strip():
                raise _error(path, None, "empty file, no requests")
            lines: Iterator[str] = _chain(head, f)
            fmt = format or _detect(path, head[-1], len(head))
            if fmt == "mooncake":
                rows = _read_mooncake(path, lines)
            else:
                rows = _read_csv(path, lines, fmt)
    except (OSError, UnicodeDecodeError, EOFError, csv.Error) as exc:
        raise _error(path, None, f"cannot read trace: {exc}") from exc
    if not rows.times:
        detail = f" ({rows.skipped} failed requests skipped)" if rows.skipped else ""
        raise _error(path, rows.lines_read or None, f"no requests in the file{detail}")
    return _finish(path, fmt, rows)


def _chain(head: list[str], rest: Iterable[str]) -> Iterator[str]:
    yield from head
    yield from rest


def _trace_name(path: Path) -> str:
    base = Path(path.stem) if path.suffix == ".gz" else path
    return base.stem or path.name


def _finish(path: Path, fmt: str, rows: _Rows) -> Trace:
    if fmt == "azure":
        start = min(rows.times)  # exact integer nanoseconds until here
        arrival = np.array([t - start for t in rows.times], dtype=np.float64) / 1e9
    elif fmt == "mooncake":
        times = np.array(rows.times, dtype=np.float64)
        arrival = (times - times.min()) / 1000.0
    elif fmt == "burstgpt":
        times = np.array(rows.times, dtype=np.float64)
        arrival = times - times.min()
    else:
        arrival = np.array(rows.times, dtype=np.float64)
    order = np.argsort(arrival, kind="stable")
    hash_ids = None if rows.hash_ids is None else [rows.hash_ids[i] for i in order]
    return Trace(
        arrival_time=arrival[order],
        prompt_tokens=np.array(rows.prompts, dtype=np.int64)[order],
        output_tokens=np.array(rows.outputs, dtype=np.int64)[order],
        hash_ids=hash_ids,
        name=_trace_name(path),
        source=str(path),
        skipped_rows=rows.skipped,
        clamped_rows=rows.clamped,
    )


# --------------------------------------------------------------------------------------------
# Synthetic traces
# --------------------------------------------------------------------------------------------

ARRIVALS: tuple[str, ...] = ("poisson", "gamma")
"""Arrival processes accepted by ``synthetic``."""


def _bad(argument: str, value: Any, what: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"{argument}: {what}, got {value!r}", field=argument, value=value)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def _draw_lengths(spec: Any, argument: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """Token counts (float, unclipped) from a length spec."""
    if _is_int(spec):
        spec = ("constant", int(spec))
    if not isinstance(spec, tuple) or not spec or spec[0] not in LENGTH_KINDS:
        raise _bad(
            argument,
            spec,
            "expected a Trace, an int, or ('constant', n) | ('uniform', lo, hi) | "
            "('lognormal', mean, sigma)",
        )
    kind, params = spec[0], spec[1:]
    if kind == "constant":
        if len(params) != 1 or not _is_int(params[0]) or params[0] < 1:
            raise _bad(argument, spec, "('constant', n) needs an int n >= 1")
        return np.full(n, float(params[0]))
    if kind == "uniform":
        if len(params) != 2 or not all(_is_int(p) for p in params) or not 1 <= params[0] <= params[1]:
            raise _bad(argument, spec, "('uniform', lo, hi) needs ints 1 <= lo <= hi")
        return rng.integers(int(params[0]), int(params[1]) + 1, size=n).astype(np.float64)
    # lognormal: `mean` in tokens; `sigma` the standard deviation of ln(tokens).
    if len(params) != 2 or not all(_is_number(p) and math.isfinite(p) for p in params):
        raise _bad(argument, spec, "('lognormal', mean, sigma) needs finite numbers")
    mean, sigma = float(params[0]), float(params[1])
    if mean <= 0 or sigma < 0:
        raise _bad(argument, spec, "('lognormal', mean, sigma) needs mean > 0 and sigma >= 0")
    mu = math.log(mean) - sigma * sigma / 2
    return rng.lognormal(mu, sigma, size=n)


def _clip_tokens(values: np.ndarray, maximum: int | None) -> np.ndarray:
    upper = float(maximum) if maximum is not None else 2.0**53
    clipped: np.ndarray = np.clip(np.rint(values), 1.0, upper).astype(np.int64)
    return clipped


def synthetic(
    num_requests: int,
    rate: float,
    *,
    arrival: str = "poisson",
    cv: float = 1.0,
    prompt: LengthSpec | Trace | None = None,
    output: LengthSpec | Trace | None = None,
    max_prompt_tokens: int | None = None,
    max_output_tokens: int | None = None,
    seed: int = 0,
    name: str | None = None,
) -> Trace:
    """A seeded synthetic trace of ``num_requests`` requests arriving at ``rate`` per second.

    Arrivals start at 0.0. ``arrival="poisson"``: exponential gaps (CV 1). ``"gamma"``:
    Gamma gaps with coefficient of variation ``cv`` (shape ``1/cv**2``; ``cv > 1`` is burstier
    than Poisson, ``cv=0`` is evenly spaced).

    Lengths (``prompt``, ``output``), each one of:

    - an int ``n`` or ``("constant", n)``;
    - ``("uniform", lo, hi)``: integers in ``[lo, hi]``;
    - ``("lognormal", mean, sigma)``: ``mean`` in tokens, ``sigma`` the standard deviation of
      ln(tokens) (so the median is ``mean * exp(-sigma**2 / 2)``), rounded;
    - a ``Trace``: resample its counts; when ``prompt`` is a trace and ``output`` is ``None``
      (or the same trace), (prompt, output) pairs are resampled jointly.

    Defaults: ``AZURE_CONV_PROMPT`` and ``AZURE_CONV_OUTPUT``. Counts are clipped to
    ``[1, max_prompt_tokens]`` and ``[1, max_output_tokens]`` (no upper bound if ``None``).

    Arrivals, prompts and outputs draw from three independent streams of
    ``np.random.default_rng`` seeded from ``seed``: the same seed gives the same trace, and
    at another ``rate`` the same requests with arrival times scaled.
    """
    if not _is_int(num_requests) or num_requests < 1:
        raise _bad("num_requests", num_requests, "expected an int >= 1")
    if not _is_number(rate) or not math.isfinite(rate) or rate <= 0:
        raise _bad("rate", rate, "expected a finite number > 0 (requests per second)")
    if arrival not in ARRIVALS:
        raise InvalidArgumentError(
            f"arrival: unknown arrival process {arrival!r}; valid: {', '.join(ARRIVALS)}",
            field="arrival",
            value=arrival,
            valid=ARRIVALS,
        )
    if not _is_number(cv) or not math.isfinite(cv) or cv < 0:
        raise _bad("cv", cv, "expected a finite number >= 0")
    if arrival == "poisson" and cv != 1.0:
        raise _bad("cv", cv, "Poisson arrivals have CV 1; use arrival='gamma' for another CV")
    for argument, maximum in (("max_prompt_tokens", max_prompt_tokens), ("max_output_tokens", max_output_tokens)):
        if maximum is not None and (not _is_int(maximum) or maximum < 1):
            raise _bad(argument, maximum, "expected an int >= 1 or None")
    if not _is_int(seed) or seed < 0:
        raise _bad("seed", seed, "expected an int >= 0")

    n = int(num_requests)
    arrival_rng, prompt_rng, output_rng = (
        np.random.default_rng(child) for child in np.random.SeedSequence(int(seed)).spawn(3)
    )

    # Gaps in units of the mean gap, then scaled: a different rate gives the same trace, faster.
    if arrival == "poisson":
        gaps = arrival_rng.standard_exponential(n - 1)
    elif cv == 0:
        gaps = np.ones(n - 1)
    else:
        shape = 1.0 / (cv * cv)
        gaps = arrival_rng.standard_gamma(shape, n - 1) / shape
    arrival_time = np.concatenate(([0.0], np.cumsum(gaps / float(rate))))

    if prompt is None:
        prompt = AZURE_CONV_PROMPT
    if output is None:
        output = prompt if isinstance(prompt, Trace) else AZURE_CONV_OUTPUT
    if isinstance(prompt, Trace) and prompt is output:
        if len(prompt) == 0:
            raise _bad("prompt", prompt, "cannot resample an empty trace")
        picks = prompt_rng.integers(0, len(prompt), size=n)
        prompt_values = prompt.prompt_tokens[picks].astype(np.float64)
        output_values = prompt.output_tokens[picks].astype(np.float64)
    else:
        prompt_values = _resample_or_draw(prompt, "prompt", prompt_rng, n)
        output_values = _resample_or_draw(output, "output", output_rng, n)

    if name is None:
        name = f"synthetic-{arrival}-{rate:g}rps-seed{seed}"
    return Trace(
        arrival_time=arrival_time,
        prompt_tokens=_clip_tokens(prompt_values, max_prompt_tokens),
        output_tokens=_clip_tokens(output_values, max_output_tokens),
        name=name,
        source="synthetic",
    )


def _resample_or_draw(spec: Any, argument: str, rng: np.random.Generator, n: int) -> np.ndarray:
    if isinstance(spec, Trace):
        if len(spec) == 0:
            raise _bad(argument, spec, "cannot resample an empty trace")
        column = spec.prompt_tokens if argument == "prompt" else spec.output_tokens
        picked: np.ndarray = column[rng.integers(0, len(spec), size=n)].astype(np.float64)
        return picked
    return _draw_lengths(spec, argument, rng, n)


# --------------------------------------------------------------------------------------------
# Built-in traces
# --------------------------------------------------------------------------------------------


def builtin_names() -> list[str]:
    """Names of the traces shipped with the package (``halffull/data/*.csv``), sorted."""
    return sorted(p.name[: -len(".csv")] for p in _DATA_DIR.glob("*.csv"))


def builtin(name: str = "default") -> Trace:
    """A small synthetic trace shipped with the package. ``default``: 2,000 requests,
    Azure-conversation-like lengths, Poisson arrivals at 5 req/s; ``builtin_names()`` lists
    the others and ``traces/README.md`` describes them. Raises ``InvalidArgumentError`` on an
    unknown name."""
    names = builtin_names()
    if name not in names:
        raise InvalidArgumentError(
            f"unknown built-in trace {name!r}; valid: {', '.join(names)}",
            field="name",
            value=name,
            valid=tuple(names),
        )
    path = _DATA_DIR / f"{name}.csv"
    return replace(load(path, format="halffull"), name=name)


__all__ = [
    "ARRIVALS",
    "AZURE_CONV_OUTPUT",
    "AZURE_CONV_PROMPT",
    "FORMATS",
    "LENGTH_KINDS",
    "MOONCAKE_OUTPUT",
    "MOONCAKE_PROMPT",
    "Trace",
    "builtin",
    "builtin_names",
    "load",
    "synthetic",
]
