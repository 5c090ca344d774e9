"""The trace file formats, in one table (``TRACE_FORMATS``): per format, how a file is
recognised, how its rows are read, what a zero token count means and how its timestamps
become seconds. ``load`` (``files.py``), detection and the error listing valid formats all
read this table; adding a format is adding an entry.

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
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ..errors import TraceError
from ..limits import MAX_COUNT


def trace_error(path: Path, line: int | None, what: str) -> TraceError:
    """``TraceError("PATH:LINE: WHAT")`` with ``path`` and ``line`` set."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return TraceError(f"{where}: {what}", path=str(path), line=line)


class Rows:
    """What a reader collected: raw times (format units), counts, optional block ids."""

    def __init__(self) -> None:
        self.times: list[Any] = []
        self.prompts: list[int] = []
        self.outputs: list[int] = []
        self.hash_ids: list[list[int]] | None = None
        self.lines: list[int] = []  # the file line of each row, for errors found later
        self.skipped = 0
        self.clamped = 0
        self.lines_read = 0


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------


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
        raise trace_error(path, line, f"{column}: expected a whole token count, got {_short(text)}")
    if value < 0:
        raise trace_error(path, line, f"{column}: token count {value} is negative")
    if value >= MAX_COUNT:  # beyond any context window; keeps counts far inside int64
        raise trace_error(path, line, f"{column}: token count {value} is unreasonably large")
    return value


def _parse_seconds(text: Any, column: str, path: Path, line: int) -> float:
    if isinstance(text, bool):
        raise trace_error(path, line, f"{column}: expected a number, got {text!r}")
    try:
        value = float(text)
    except OverflowError:  # a JSON integer too large for a float
        raise trace_error(path, line, f"{column}: {_short(text)} is not a finite number") from None
    except (TypeError, ValueError):
        raise trace_error(path, line, f"{column}: expected a number, got {_short(text)}") from None
    if not math.isfinite(value):
        raise trace_error(path, line, f"{column}: {_short(text)} is not a finite number")
    return value


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a cell may hold megabytes)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# 2023-11-16 18:15:46.6805900 (Azure writes 7 fractional digits; datetime takes only 6),
# optionally with a zone: Z, +00:00, +0000.
_AZURE_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\s*(Z|[+-]\d{2}:?\d{2})?"
)
_EPOCH_DAY = date(1970, 1, 1).toordinal()


def _parse_azure_timestamp(text: str, path: Path, line: int) -> int:
    """Nanoseconds since 1970 (UTC if a zone is given, else naive), exact: 7-digit fractions
    would lose their last digit in a float of seconds since 1970."""
    match = _AZURE_TIMESTAMP.fullmatch(text.strip())
    if match is None:
        raise trace_error(path, line, f"TIMESTAMP: expected 'YYYY-MM-DD HH:MM:SS.fffffff', got {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7) or "", match.group(8)
    try:
        days = date(year, month, day).toordinal() - _EPOCH_DAY
    except ValueError as exc:
        raise trace_error(path, line, f"TIMESTAMP: {text!r}: {exc}") from None
    if hour > 23 or minute > 59 or second > 59:
        raise trace_error(path, line, f"TIMESTAMP: {text!r}: time of day out of range")
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0"))


# --------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceFormat:
    """What differs between trace formats. ``zero_prompt`` is ``"error"`` or ``"clamp"``
    (read as 1); ``zero_output`` also may be ``"skip"`` (a failed request: row left out)."""

    name: str
    looks_like: str  # what the file holds, for error messages
    zero_prompt: Literal["error", "clamp"] = "error"
    zero_output: Literal["error", "clamp", "skip"] = "clamp"

    kind: ClassVar[str]  # "csv" or "jsonl": detection picks the kind first (``detect``)

    def matches(self, header: set[str]) -> bool:
        """Whether a file of this kind whose first line has these cells is in this format."""
        raise NotImplementedError

    def read(self, path: Path, lines: Iterable[str]) -> Rows:
        """The rows of the file, validated; raises ``TraceError`` naming path and line."""
        raise NotImplementedError

    def seconds(self, times: list[Any]) -> np.ndarray:
        """The raw times as float64 seconds; external formats start at 0.0."""
        values = np.array(times, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # a span past 1.8e308: inf, refused later
            return values - values.min()

    def counts(
        self, prompt: int, output: int, rows: Rows, path: Path, line: int, names: tuple[str, str]
    ) -> tuple[int, int] | None:
        """Zero counts as the module docstring's table says; ``None``: skip the row."""
        if output == 0 and self.zero_output == "skip":
            rows.skipped += 1
            return None
        if prompt == 0:
            if self.zero_prompt == "error":
                raise trace_error(path, line, f"{names[0]}: 0 prompt tokens")
            rows.clamped += 1
            prompt = 1
        if output == 0:
            if self.zero_output == "error":
                raise trace_error(path, line, f"{names[1]}: 0 output tokens")
            rows.clamped += 1
            output = 1
        return prompt, output


@dataclass(frozen=True)
class CsvFormat(TraceFormat):
    """A CSV file with a header naming (at least) a time, a prompt and an output column
    (``columns``, lower-cased); ``hash_ids``: an optional column of space-separated ids."""

    columns: tuple[str, str, str] = ("", "", "")
    hash_ids: bool = False

    kind: ClassVar[str] = "csv"

    def matches(self, header: set[str]) -> bool:
        return set(self.columns) <= header

    def parse_time(self, text: str, column: str, path: Path, line: int) -> Any:
        return _parse_seconds(text.strip(), column, path, line)

    def read(self, path: Path, lines: Iterable[str]) -> Rows:
        reader = csv.reader(lines)
        try:
            return self._read(path, reader)
        except csv.Error as exc:  # a field over csv.field_size_limit(), a NUL byte ...
            raise trace_error(path, reader.line_num, f"malformed CSV: {exc}") from None

    def _read(self, path: Path, reader: Any) -> Rows:
        header: list[str] | None = None
        rows = Rows()
        for cells in reader:
            if not cells or all(not cell.strip() for cell in cells):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in cells]
                missing = [c for c in self.columns if c not in header]
                if missing:
                    raise trace_error(
                        path,
                        reader.line_num,
                        f"not a {self.name!r} header: missing column(s) {', '.join(missing)} "
                        f"(expected {self.looks_like}, got {','.join(cells)})",
                    )
                time_col, prompt_col, output_col = (header.index(c) for c in self.columns)
                hash_col = header.index("hash_ids") if self.hash_ids and "hash_ids" in header else None
                if hash_col is not None:
                    rows.hash_ids = []
                names = [cell.strip() for cell in cells]
                continue
            line = reader.line_num
            for column in (time_col, prompt_col, output_col, hash_col):
                if column is not None and column >= len(cells):
                    raise trace_error(
                        path,
                        line,
                        f"missing column {names[column]!r} (row has {len(cells)} fields, header has {len(header)})",
                    )
            prompt = _parse_count(cells[prompt_col].strip(), names[prompt_col], path, line)
            output = _parse_count(cells[output_col].strip(), names[output_col], path, line)
            time = self.parse_time(cells[time_col], names[time_col], path, line)
            counts = self.counts(prompt, output, rows, path, line, (names[prompt_col], names[output_col]))
            if counts is None:
                continue
            if hash_col is not None:
                try:
                    blocks = [int(block) for block in cells[hash_col].split()]
                except ValueError:
                    raise trace_error(
                        path, line, f"hash_ids: expected space-separated ints, got {cells[hash_col]!r}"
                    ) from None
                rows.hash_ids.append(blocks)  # type: ignore[union-attr]
            rows.times.append(time)
            rows.lines.append(line)
            rows.prompts.append(counts[0])
            rows.outputs.append(counts[1])
        rows.lines_read = reader.line_num
        return rows


@dataclass(frozen=True)
class AzureFormat(CsvFormat):
    """Azure LLM inference traces: wall-clock timestamps with 7 fractional digits."""

    def parse_time(self, text: str, column: str, path: Path, line: int) -> Any:
        return _parse_azure_timestamp(text, path, line)

    def seconds(self, times: list[Any]) -> np.ndarray:
        start = min(times)  # exact integer nanoseconds until here
        return np.array([t - start for t in times], dtype=np.float64) / 1e9


@dataclass(frozen=True)
class HalffullFormat(CsvFormat):
    """The project's own CSV (``Trace.save``): times kept as written."""

    def seconds(self, times: list[Any]) -> np.ndarray:
        return np.array(times, dtype=np.float64)


@dataclass(frozen=True)
class JsonLinesFormat(TraceFormat):
    """One JSON object per line: ``timestamp`` in milliseconds, ``input_length``,
    ``output_length`` and optionally ``hash_ids`` (Mooncake)."""

    kind: ClassVar[str] = "jsonl"

    def matches(self, header: set[str]) -> bool:
        return True

    def seconds(self, times: list[Any]) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            return super().seconds(times) / 1000.0

    def read(self, path: Path, lines: Iterable[str]) -> Rows:
        rows = Rows()
        hash_line: int | None = None  # the first line that decided whether hash_ids are present
        line = 0
        for line, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise trace_error(path, line, f"not valid JSON: {exc.msg} (column {exc.colno})") from None
            except ValueError as exc:  # an integer of more than sys.get_int_max_str_digits()
                raise trace_error(path, line, f"not valid JSON: {exc}") from None
            except RecursionError:
                raise trace_error(path, line, "not valid JSON: nested too deeply") from None
            if not isinstance(record, dict):
                raise trace_error(path, line, f"expected a JSON object, got {type(record).__name__}")
            for key in ("timestamp", "input_length", "output_length"):
                if key not in record:
                    raise trace_error(path, line, f"missing field {key!r}")
            time = _parse_seconds(record["timestamp"], "timestamp", path, line)
            prompt = _parse_count(record["input_length"], "input_length", path, line)
            output = _parse_count(record["output_length"], "output_length", path, line)
            counts = self.counts(prompt, output, rows, path, line, ("input_length", "output_length"))
            if counts is None:
                continue
            has_hashes = "hash_ids" in record
            if hash_line is None:
                hash_line = line
                rows.hash_ids = [] if has_hashes else None
            elif has_hashes != (rows.hash_ids is not None):
                state = "has" if has_hashes else "lacks"
                raise trace_error(path, line, f"this row {state} hash_ids, unlike line {hash_line}")
            if has_hashes:
                blocks = record["hash_ids"]
                if not isinstance(blocks, list) or any(isinstance(b, bool) or not isinstance(b, int) for b in blocks):
                    raise trace_error(path, line, f"hash_ids: expected a list of ints, got {_short(blocks)}")
                rows.hash_ids.append(blocks)  # type: ignore[union-attr]
            rows.times.append(time)
            rows.lines.append(line)
            rows.prompts.append(counts[0])
            rows.outputs.append(counts[1])
        rows.lines_read = line
        return rows


TRACE_FORMATS: dict[str, TraceFormat] = {
    fmt.name: fmt
    for fmt in (
        HalffullFormat(
            "halffull",
            "arrival_time,prompt_tokens,output_tokens[,hash_ids]",
            zero_output="error",
            columns=("arrival_time", "prompt_tokens", "output_tokens"),
            hash_ids=True,
        ),
        AzureFormat(
            "azure",
            "TIMESTAMP,ContextTokens,GeneratedTokens",
            columns=("timestamp", "contexttokens", "generatedtokens"),
        ),
        JsonLinesFormat("mooncake", "JSON lines"),
        CsvFormat(  # BurstGPT marks a failed request with 0 response tokens
            "burstgpt",
            "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type",
            zero_prompt="clamp",
            zero_output="skip",
            columns=("timestamp", "request tokens", "response tokens"),
        ),
    )
}
"""Every trace format by name: the one table ``load`` and detection read."""

FORMATS: tuple[str, ...] = tuple(TRACE_FORMATS)
"""Names accepted by ``load(path, format=...)``."""


def detect(path: Path, first_line: str, first_line_number: int) -> TraceFormat:
    """The format of a file from its name and first non-blank line: JSON lines if the line
    starts with ``{`` or the name ends in ``.jsonl``/``.json`` (before ``.gz``), else CSV;
    then the first format of that kind in ``TRACE_FORMATS`` whose columns the header has
    (no real header holds the columns of two CSV formats, so their order does not matter)."""
    stem_suffix = Path(path.stem).suffix if path.suffix == ".gz" else path.suffix
    stripped = first_line.strip()
    is_json = stripped.startswith("{") or stem_suffix.lower() in (".jsonl", ".json")
    kind = "jsonl" if is_json else "csv"
    header = set() if is_json else {cell.strip().lower() for cell in next(csv.reader([stripped]), [])}
    for fmt in TRACE_FORMATS.values():
        if fmt.kind == kind and fmt.matches(header):
            return fmt
    expected = "; ".join(f"{fmt.name}: {fmt.looks_like}" for fmt in TRACE_FORMATS.values())
    raise trace_error(
        path,
        first_line_number,
        f"unknown trace format: header {stripped[:120]!r} matches none of ({expected}); "
        f"pass format= one of {', '.join(FORMATS)}",
    )


__all__ = ["FORMATS", "TRACE_FORMATS", "CsvFormat", "JsonLinesFormat", "TraceFormat", "detect"]
