"""Reading a trace file: ``load(path)`` opens it (through gzip for ``.gz``), finds its format
in the table of ``formats.py`` (or takes the one given), lets that format read the rows, and
sorts them onto one clock as a ``Trace``."""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import InvalidArgumentError, TraceError
from ..limits import MAX_TIME
from .formats import FORMATS, TRACE_FORMATS, Rows, TraceFormat, detect, trace_error
from .trace import Trace


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
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise InvalidArgumentError(f"path must be a str or a path, got {type(path).__name__}",
                                   field="path", value=path)
    path = Path(path)
    if format is not None and (not isinstance(format, str) or format not in TRACE_FORMATS):
        raise TraceError(
            f"{path}: unknown trace format {format!r}; valid formats: {', '.join(FORMATS)}",
            path=str(path),
            line=None,
            valid=FORMATS,
        )
    if not path.is_file():
        what = "is not a file" if path.exists() else "no such trace file"
        raise trace_error(path, None, what)
    try:
        with _open_text(path) as f:
            head: list[str] = []
            for text in f:
                head.append(text)
                if text.strip():
                    break
            if not head or not head[-1].strip():
                raise trace_error(path, None, "empty file, no requests")
            fmt = TRACE_FORMATS[format] if format is not None else detect(path, head[-1], len(head))
            rows = fmt.read(path, _chain(head, f))
    except UnicodeDecodeError as exc:
        line = _bad_utf8_line(path)
        bad = exc.object[exc.start:exc.end]
        raise trace_error(path, line, f"not UTF-8 text: {exc.reason} (byte {bad!r})") from None
    except (OSError, EOFError, csv.Error) as exc:
        raise trace_error(path, None, f"cannot read trace: {exc}") from exc
    if not rows.times:
        detail = f" ({rows.skipped} failed requests skipped)" if rows.skipped else ""
        raise trace_error(path, rows.lines_read or None, f"no requests in the file{detail}")
    return _finish(path, fmt, rows)


def _open_text(path: Path) -> io.TextIOBase:
    # utf-8-sig drops a byte-order mark (spreadsheet exports); newline="" is what csv wants.
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _bad_utf8_line(path: Path) -> int | None:
    """The number of the first line that is not UTF-8 (text files decode in chunks, so the
    error itself does not say)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError:
                    return number
    except (OSError, EOFError):
        return None
    return None


def _check_times(path: Path, fmt: TraceFormat, rows: Rows, arrival: np.ndarray) -> None:
    """Every arrival finite and in ``[0, MAX_TIME]`` s, or a ``TraceError`` naming the line.

    External formats start at 0.0 at the earliest request, so an arrival out of range means
    the timestamps span more than ``MAX_TIME``: of the earliest and the latest timestamp, the
    one farther from the median is named (a stray ``1e308`` or ``-1e308``)."""
    ok = np.isfinite(arrival) & (arrival >= 0) & (arrival <= MAX_TIME)
    if ok.all():
        return
    if fmt.name == "halffull":  # times as written
        i = int(np.argmin(ok))
        raise trace_error(path, rows.lines[i], f"arrival_time {rows.times[i]!r} is not finite and in [0, 1e12] s")
    with np.errstate(over="ignore", invalid="ignore"):
        raw = np.array(rows.times, dtype=np.float64)
        lo, hi, median = int(np.argmin(raw)), int(np.argmax(raw)), float(np.median(raw))
    culprit, other = (lo, hi) if median - float(raw[lo]) > float(raw[hi]) - median else (hi, lo)
    raise trace_error(
        path,
        rows.lines[culprit],
        f"timestamp {rows.times[culprit]!r} is more than 1e12 s (MAX_TIME) from the timestamp "
        f"{rows.times[other]!r} on line {rows.lines[other]}: a trace may span at most 1e12 s",
    )


def _chain(head: list[str], rest: Iterable[str]) -> Iterator[str]:
    yield from head
    yield from rest


def _trace_name(path: Path) -> str:
    base = Path(path.stem) if path.suffix == ".gz" else path
    return base.stem or path.name


def _finish(path: Path, fmt: TraceFormat, rows: Rows) -> Trace:
    arrival = fmt.seconds(rows.times)
    _check_times(path, fmt, rows, arrival)
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


__all__ = ["load"]
